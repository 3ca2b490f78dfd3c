"""Keeping up is a feature: a live stream that scoring cannot keep up with says so (`behind`) and samples less.

Unit tests drive the Sampler's rate cap and the KeepUp controller with made-up measurements (no
clock); the end-to-end tests replay real clips in real time through the Watcher with a scorer
slowed down on purpose (the real SignalScorer plus a sleep per frame).
"""
from __future__ import annotations

import json
import threading
import time
import urllib.request

import pytest
import torch

from monitor import config
from monitor.build import score_file
from monitor.config import StreamConfig, parse_sample
from monitor.samples import encode, panned_frames
from monitor.scoring import scorers
from monitor.sinks.jsonl import JsonlSink
from monitor.source.sampling import HEADROOM, MIN_FPS, KeepUp, Sampler
from monitor.views.statuspage import StatusServer
from monitor.watch import Watcher
from waiting import wait_for


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

    every2 = parse_sample("2")
    every2.set_cap(5)
    got = taken(every2, 25, 4)
    assert len(got) == 20 and all(i % 2 == 0 for i in got)  # the configured rule still holds
    assert every2.rate(25) == 5 and every2.configured_rate(25) == 12.5

    fps10 = parse_sample("10fps")
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

    fixed = KeepUp(parse_sample("10fps"), max_lag=2.0, adaptive=False)
    feed = Feed(fixed)
    events = feed.run([2.5, 3.0, 3.5, 4.0, 4.0, 4.0, 4.0, 0.5, 0.5, 0.5, 0.5] + [0.2] * 10, scored_fps=6,
                      capacity_fps=6)
    assert [e[0] for e in events] == ["behind", "caught_up"]
    assert events[0][1]["sample_fps"] == 10.0 and events[0][1]["sampling"] == "≤10 fps"
    assert feed.caps == [None]


class SlowSignals(scorers.SignalScorer):
    """The real signals, `delay` seconds slower per frame: scoring that cannot keep up with 25 fps."""

    delay = 0.1

    def score(self, frames, refs):
        time.sleep(SlowSignals.delay * len(frames))
        return super().score(frames, refs)


@pytest.fixture
def slow_scoring(monkeypatch):
    """SlowSignals wherever a pipeline makes its SignalScorer, with one torch thread.

    One intra-op thread: on a busy 2-core machine torch's thread pool makes a 1-frame batch of
    these small frames tens of milliseconds slower, so the real scorer itself would be a second
    bottleneck that these tests do not mean to create.
    """
    monkeypatch.setattr(scorers, "SignalScorer", SlowSignals)
    monkeypatch.setattr("monitor.build.SignalScorer", SlowSignals)
    monkeypatch.setattr(SlowSignals, "delay", 0.1)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield SlowSignals
    torch.set_num_threads(threads)


class Probe:
    """Samples a watched stream's keep-up state every 0.1 s while it runs."""

    def __init__(self, watcher: Watcher, sid: str):
        self.watcher, self.sid, self.rows = watcher, sid, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        st, q = self.watcher.status[self.sid], self.watcher.pipelines[self.sid]._decoder.queue
        k = st.keepup
        while not self._stop.wait(0.1):
            self.rows.append({"t": time.monotonic(), "state": st.state, "lag": k.lag_s, "behind": k.behind, "cap": k.sampler.cap,
                              "arrival": k.arrival_fps, "queued": q.qsize(), "dropped": k.frames_dropped})

    def stop(self) -> list[dict]:
        self._stop.set()
        self._thread.join()
        return self.rows


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as r:
        return r.read().decode()


def read_jsonl(path) -> list[dict]:
    return [json.loads(line) for line in open(path)] if path.exists() else []


def watch(tmp_path, clip: str, **stream) -> Watcher:
    cfg = config.parse({"streams": [{"id": "cam", "url": clip, "realtime": True, "window": "1s", **stream}],
                        "sinks": {"jsonl": {"out": str(tmp_path / "out")}}, "device": "cpu"})
    watcher = Watcher(cfg)
    watcher.start()
    return watcher


def test_a_live_replay_too_fast_to_score_falls_behind_samples_less_and_catches_up(tmp_path, slow_scoring):
    clip = encode(str(tmp_path / "clip.mp4"), panned_frames(256, 144, 25 * 40), fps=25, crf=30)  # 40 s
    watcher = watch(tmp_path, clip, max_lag="1s")
    server = StatusServer(watcher, "127.0.0.1:0")
    status = watcher.status["cam"]
    probe = Probe(watcher, "cam")
    try:
        wait_for(lambda: status.behind, timeout=20, what="the stream to fall behind")
        behind_line = watcher.status_line()
        snap, page, metrics = (get(server.url + path) for path in ("status.json", "", "metrics"))
        wait_for(lambda: not status.behind, timeout=20, what="the lowered sampling to catch up")
        caught_up_at = time.monotonic()
        slow_cap = status.sampler.cap
        time.sleep(4)  # scoring stays slow: the lowered rate must hold the lag down
        slow_scoring.delay = 0  # the scorer is fast again: the rate goes back up to every frame
        wait_for(lambda: status.sampler.cap is None, timeout=30, what="the sampling to be raised back")
        fast_again_at = time.monotonic()
        time.sleep(2)
    finally:
        rows = probe.stop()
        server.close()
        watcher.stop()
        watcher.join(timeout=30)
        watcher.close()

    assert "BEHIND" in behind_line and "sampling ≤" in behind_line, behind_line
    snap = json.loads(snap)["streams"]["cam"]
    assert snap["behind"] and snap["sample_fps"] < 12 and "lowered from every frame" in snap["sampling"]
    assert snap["lag_s"] > 0 and snap["frames_dropped"] >= 0
    assert "<span class=behind>behind</span>" in page and "lowered from every frame" in page
    assert 'vqmon_stream_behind{stream_id="cam"} 1.0' in metrics and "vqmon_stream_lag_seconds{" in metrics
    assert MIN_FPS <= slow_cap < 10  # at most what ~9 frames/s of scoring sustains
    events = [e for e in read_jsonl(tmp_path / "out" / "events.jsonl") if e["event"] in ("behind", "caught_up")]
    assert [e["event"] for e in events][:2] == ["behind", "caught_up"], events
    behind = events[0]["detail"]
    assert behind["lag_s"] > 1.0 and 20 < behind["arrival_fps"] < 30 and behind["scored_fps"] < 12
    assert behind["sample_fps"] < behind["scored_fps"] and behind["frames_dropped"] >= 0

    lags = [r["lag"] for r in rows if r["lag"] is not None]
    assert max(lags) < 6.0  # bounded by the queue before the first cut, far less after it
    steady = [r for r in rows if caught_up_at + 1 <= r["t"] <= caught_up_at + 4]
    assert steady and max(r["lag"] for r in steady) < 2.0 and not any(r["behind"] for r in steady)
    assert max(r["queued"] for r in rows) <= 32
    # the reader never waited on the scorers: frames kept arriving at the stream's 25 fps throughout
    arrival = [r["arrival"] for r in rows if r["state"] == "up" and r["t"] > rows[0]["t"] + 4]
    assert min(arrival) > 20, arrival
    fast = [r for r in rows if r["t"] >= fast_again_at]
    assert fast and all(r["lag"] < 1.0 for r in fast)
    assert len({r["dropped"] for r in rows if r["t"] >= caught_up_at}) == 1  # no drops once the rate was cut


def test_without_adaptation_a_live_reader_drops_frames_instead_of_waiting(tmp_path, slow_scoring):
    clip = encode(str(tmp_path / "clip.mp4"), panned_frames(256, 144, 25 * 8), fps=25, crf=30)  # 8 s
    watcher = watch(tmp_path, clip, adaptive=False)
    probe = Probe(watcher, "cam")
    try:
        wait_for(lambda: not watcher.running(), timeout=40, what="the replay to end")
    finally:
        rows = probe.stop()
        watcher.stop()
        watcher.join(timeout=30)
        watcher.close()
    keepup = watcher.status["cam"].keepup
    scored = sum(1 for r in read_jsonl(tmp_path / "out" / "frames.jsonl") if r["metric"] == "sig.luma")
    assert keepup.sampler.cap is None and keepup.frames_dropped > 0
    assert scored + keepup.frames_dropped == 200  # every frame sampled: each one scored or counted as dropped
    assert max(r["lag"] for r in rows if r["lag"] is not None) < 32 * 0.1 + 2.0  # the full queue's worth, no more
    assert min(r["arrival"] for r in rows if r["state"] == "up" and r["t"] > rows[0]["t"] + 3) > 20
    events = [e for e in read_jsonl(tmp_path / "out" / "events.jsonl") if e["event"] == "behind"]
    assert len(events) == 1 and events[0]["detail"]["sampling"] == "every frame"


def test_a_file_is_scored_losslessly_however_slow_scoring_is(tmp_path, slow_scoring):
    slow_scoring.delay = 0.05
    clip = encode(str(tmp_path / "clip.mp4"), panned_frames(256, 144, 60), fps=25, crf=30)
    started = time.monotonic()
    summary = score_file(StreamConfig(clip), sinks=[JsonlSink(str(tmp_path / "out"))], device="cpu")
    assert time.monotonic() - started >= 60 * 0.05  # every frame went through the slow scorer
    assert summary.frames_seen == summary.frames_scored == 60
    events = read_jsonl(tmp_path / "out" / "events.jsonl")
    assert not [e for e in events if e["event"] in ("behind", "caught_up")]
