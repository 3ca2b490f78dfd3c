"""Keeping up is a feature: a live stream that scoring cannot keep up with says so (`behind`) and samples less.

Unit tests drive the Sampler's rate cap and the KeepUp controller with made-up measurements (no
clock).
"""
from __future__ import annotations

from monitor.sampling import HEADROOM, MIN_FPS, KeepUp, Sampler


def taken(sampler: Sampler, fps: float, seconds: float, start: int = 0) -> list[int]:
    n = round(fps * seconds)
    return [i for i in range(start, start + n) if sampler.take(i, i / fps)]


def test_cap_lowers_every_sampling_rule_and_lifts():
    s = Sampler()
    assert len(taken(s, 25, 4)) == 100
    s.set_cap(5)
    assert len(taken(s, 25, 4, start=100)) == 20
    assert s.describe() == "≤5 fps (lowered from every frame)" and s.rate(25) == 5
    s.set_cap(None)
    assert len(taken(s, 25, 4, start=200)) == 100 and s.describe() == "every frame" and s.rate(25) == 25

    every2 = Sampler.parse("2")
    every2.set_cap(5)
    got = taken(every2, 25, 4)
    assert len(got) == 20 and all(i % 2 == 0 for i in got)  # the configured rule still holds
    assert every2.rate(25) == 5 and every2.configured_rate(25) == 12.5

    fps10 = Sampler.parse("10fps")
    fps10.set_cap(20)  # a cap above the configured rate changes nothing
    assert len(taken(fps10, 25, 4)) == 40 and fps10.describe() == "≤10 fps" and fps10.rate(None) == 10
    fps10.set_cap(4)
    assert len(taken(fps10, 25, 4, start=100)) == 16 and fps10.rate(None) == 4


class Feed:
    """Measurements as the pipeline reports them: one scored batch every `dt` seconds of a 25 fps stream."""

    def __init__(self, keepup: KeepUp, dt: float = 0.5, arrival_fps: float = 25.0):
        self.k, self.dt, self.arrival_fps = keepup, dt, arrival_fps
        self.t, self.caps = 0.0, []

    def batch(self, lag: float, scored_fps: float, capacity_fps: float) -> list[tuple[str, dict]]:
        self.t += self.dt
        scored = scored_fps * self.dt
        events = self.k.observe(self.t, lag, scored, scored / capacity_fps, arrived=self.t * self.arrival_fps)
        if not self.caps or self.caps[-1] != self.k.sampler.cap:
            self.caps.append(self.k.sampler.cap)
        return events

    def run(self, lags, scored_fps: float, capacity_fps: float) -> list[tuple[str, dict]]:
        return [e for lag in lags for e in self.batch(lag, scored_fps, capacity_fps)]


def test_behind_cuts_the_rate_then_caught_up_raises_it_back_step_by_step():
    k = KeepUp(Sampler(), max_lag=2.0)
    feed = Feed(k)
    # 25 fps arrive, 10 fps get scored: the lag grows; above 2 s for a second makes the stream behind
    assert feed.run([0.5, 1.0, 1.5, 2.2, 2.6], scored_fps=10, capacity_fps=10) == []
    (name, detail), = feed.batch(3.0, scored_fps=10, capacity_fps=10)
    assert name == "behind" and k.behind
    assert detail == {"lag_s": 3.0, "arrival_fps": 25.0, "scored_fps": 10.0, "sample_fps": 5.0,
                      "sampling": "≤5 fps (lowered from every frame)", "frames_dropped": 0}
    # the backlog drains: no second cut while the lag falls, caught up once it stays under 1 s for a second
    assert feed.run([3.2, 2.5, 1.5, 0.8, 0.5], scored_fps=5, capacity_fps=10) == []
    (name, detail), = feed.batch(0.4, scored_fps=5, capacity_fps=10)
    assert name == "caught_up" and not k.behind and detail["behind_s"] == 3.0 and detail["sample_fps"] == 5.0
    # low lag: the cap doubles every 2 s, but not past 80 % of what the scorers sustain (10 fps)
    assert feed.run([0.3] * 12, scored_fps=5, capacity_fps=10) == []
    assert feed.caps == [None, 5.0, HEADROOM * 10]
    # the scorers got faster (less time per frame): raised again, then lifted at the configured 25 fps
    assert feed.run([0.2] * 16, scored_fps=8, capacity_fps=100) == []
    raised = feed.caps[2:-1]
    assert len(raised) >= 2 and all(a < b <= 2 * a for a, b in zip(raised, raised[1:]))  # step by step
    assert feed.caps[-1] is None and k.sample_fps == 25.0


def test_a_cut_that_does_not_help_is_cut_again_down_to_the_floor():
    k = KeepUp(Sampler(), max_lag=1.0)
    feed = Feed(k, dt=1.0)
    events = feed.run([1.5, 2.0, 2.5], scored_fps=2, capacity_fps=2)
    assert [e[0] for e in events] == ["behind"] and k.sampler.cap == 1.0
    # the lag keeps growing: once the cut had time to show (the lag at the cut + 1 s), cut again, and again
    events = feed.run([3.0 + i for i in range(20)], scored_fps=2, capacity_fps=2)
    assert [e[0] for e in events] == ["behind"] and feed.caps == [None, 1.0, MIN_FPS]  # then nothing lower to say


def test_a_short_spike_is_not_behind_and_without_adaptation_only_the_events_come():
    k = KeepUp(Sampler(), max_lag=2.0)
    feed = Feed(k)
    assert feed.run([0.2, 3.0, 3.0, 0.2, 0.2], scored_fps=25, capacity_fps=50) == []  # 0.5 s above: a spike

    fixed = KeepUp(Sampler.parse("10fps"), max_lag=2.0, adaptive=False)
    feed = Feed(fixed)
    events = feed.run([2.5, 3.0, 3.5, 4.0, 4.0, 4.0, 4.0, 0.5, 0.5, 0.5, 0.5] + [0.2] * 10, scored_fps=6,
                      capacity_fps=6)
    assert [e[0] for e in events] == ["behind", "caught_up"]
    assert events[0][1]["sample_fps"] == 10.0 and events[0][1]["sampling"] == "≤10 fps"
    assert feed.caps == [None]

