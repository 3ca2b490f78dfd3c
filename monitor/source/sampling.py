"""Which decoded frames get scored: every frame, every Nth, or at most X per second of media time.

A live stream that the scorers cannot keep up with gets a temporary rate cap (`Sampler.set_cap`),
chosen and lifted again by `KeepUp` from the lag it measures: scoring fewer frames on time beats
scoring every frame later and later.
"""
from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass


MIN_FPS = 0.5  # adaptive sampling never goes below this rate
HOLD_S = 1.0  # the lag must stay beyond a limit this long before `behind`/`caught_up`
RAISE_EVERY_S = 2.0  # while caught up with a cap, the cap doubles after this much low lag
RATE_SPAN_S = 3.0  # arrival, scored and capacity rates are measured over this much recent time
CUT = 0.5  # behind: sample at this share of the scored rate, so the queued backlog drains fast
HEADROOM = 0.8  # raised back at most to this share of what the scorers sustain


@dataclass
class Sampler:
    every: int = 1  # take every Nth decoded frame
    max_fps: float | None = None  # or: at most this many frames per second of media time

    def __reduce__(self):
        """A sampler travels (to a Ray actor, in a config) as its rule: the schedule and any cap belong to one run."""
        return type(self), (self.every, self.max_fps)

    def __post_init__(self):
        self._next_due: float | None = None
        self._cap: float | None = None
        self._lock = threading.Lock()  # the decoder thread takes while the scoring thread sets the cap

    @property
    def cap(self) -> float | None:
        """The temporary rate cap (fps) in force, or None."""
        return self._cap

    def set_cap(self, fps: float | None) -> None:
        """Sample at most `fps` frames per second of media time on top of the configured rule; None lifts it."""
        with self._lock:
            self._cap = fps

    def take(self, index: int, t: float) -> bool:
        """Decide for the frame at decode position `index` and media time `t` (seconds)."""
        with self._lock:
            if index % self.every:
                return False
            rate = min((r for r in (self.max_fps, self._cap) if r is not None), default=None)
            if rate is None:
                return True
            period = 1.0 / rate
            if self._next_due is None or t >= self._next_due - 1e-9:
                # schedule from the due time, not from t, so the rate does not drift; resync after gaps
                base = t if self._next_due is None or t - self._next_due > period else self._next_due
                self._next_due = base + period
                return True
            return False

    def configured_rate(self, stream_fps: float | None) -> float | None:
        """Frames per second the configured rule samples from a stream of `stream_fps` (None if that is unknown)."""
        return self.max_fps or (stream_fps / self.every if stream_fps else None)

    def rate(self, stream_fps: float | None) -> float | None:
        """Frames per second sampled now, the cap included (None when unknown and uncapped)."""
        return min((r for r in (self.configured_rate(stream_fps), self._cap) if r is not None), default=None)

    def describe(self) -> str:
        base = f"≤{self.max_fps:g} fps" if self.max_fps else ("every frame" if self.every == 1 else f"every {ordinal(self.every)} frame")
        cap = self._cap
        if cap is not None and (self.max_fps is None or cap < self.max_fps):
            return f"≤{cap:.3g} fps (lowered from {base})"
        return base


def ordinal(n: int) -> str:
    """2nd, 3rd, 11th, 21st."""
    suffix = "th" if n % 100 in (11, 12, 13) else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


class KeepUp:
    """Keeps a live stream's scoring up with its arrival, and says when it cannot.

    The pipeline reports each scored batch: the lag of its oldest frame (now − when it was
    received), its frames and the seconds spent scoring them, and the reader's running totals of
    frames arrived and dropped. Lag above `max_lag` for HOLD_S makes the stream `behind`; lag below half of
    it for HOLD_S makes it `caught_up` again (hysteresis, so it does not flap).

    With `adaptive`, falling behind caps the sampler at CUT × the scored rate (never below
    MIN_FPS), so the frames already queued drain quickly. A cut shows in the lag only once those
    queued frames are scored, about the lag at the cut, so the cap is cut again only after that
    and only if the lag has not fallen. Once caught up, every RAISE_EVERY_S of low lag doubles the
    cap, up to HEADROOM × what the scorers sustain: the scored rate while behind (full batches),
    or frames per second spent scoring now if that is more (the scorers got faster). The cap is
    lifted when it reaches the configured sampling. Rates are measured over the last RATE_SPAN_S.
    """

    def __init__(self, sampler: Sampler, max_lag: float = 2.0, adaptive: bool = True):
        self.sampler, self.max_lag, self.adaptive = sampler, max_lag, adaptive
        self.behind = False
        self.lag_s: float | None = None  # of the latest scored batch's oldest frame
        self.arrival_fps: float | None = None
        self.scored_fps: float | None = None
        self.capacity_fps: float | None = None  # scored frames per second spent scoring
        self._sustained_fps: float | None = None  # the scored rate when the cap was last cut
        self.frames_dropped = 0
        self._scored = 0
        self._busy_s = 0.0
        self._history: deque[tuple[float, int, int, float]] = deque()  # (now, arrived, scored, busy_s)
        self._above_since: float | None = None  # lag > max_lag continuously since
        self._below_since: float | None = None  # lag < max_lag / 2 continuously since
        self._behind_at = 0.0
        self._changed_at = 0.0  # last change of the cap
        self._lag_at_change = 0.0

    @property
    def sample_fps(self) -> float | None:
        """The sampling rate in force (frames per second), with the stream's rate taken as measured."""
        return self.sampler.rate(self.arrival_fps)

    def observe(self, now: float, lag_s: float, scored: int, busy_s: float, arrived: int,
                dropped: int = 0) -> list[tuple[str, dict]]:
        """Take one scored batch's measurements (`now` in monotonic seconds); returns stream events (name, detail)."""
        self._scored += scored
        self._busy_s += busy_s
        self._measure(now, arrived)
        self.lag_s, self.frames_dropped = lag_s, dropped
        if lag_s <= self.max_lag:
            self._above_since = None
        elif self._above_since is None:
            self._above_since = now
        if lag_s >= self.max_lag / 2:
            self._below_since = None
        elif self._below_since is None:
            self._below_since = now
        if not self.behind:
            if self._above_since is not None and now - self._above_since >= HOLD_S:
                self.behind, self._behind_at = True, now
                if self.adaptive:
                    self._cut(now, lag_s)
                return [("behind", self._detail())]
            if (self.adaptive and self.sampler.cap is not None and self._below_since is not None
                    and now - max(self._below_since, self._changed_at) >= RAISE_EVERY_S):
                self._raise(now)
            return []
        if self._below_since is not None and now - self._below_since >= HOLD_S:
            self.behind, self._changed_at = False, now  # the first raise waits a full RAISE_EVERY_S
            return [("caught_up", {**self._detail(), "behind_s": round(now - self._behind_at, 2)})]
        if (self.adaptive and now >= self._changed_at + self._lag_at_change + HOLD_S
                and lag_s >= self._lag_at_change and self._cut(now, lag_s)):
            return [("behind", self._detail())]
        return []

    def _measure(self, now: float, arrived: int) -> None:
        h = self._history
        scored, busy_s = self._scored, self._busy_s
        h.append((now, arrived, scored, busy_s))
        while len(h) > 2 and now - h[1][0] >= RATE_SPAN_S:
            h.popleft()
        t0, a0, s0, b0 = h[0]
        if now > t0:
            self.arrival_fps, self.scored_fps = (arrived - a0) / (now - t0), (scored - s0) / (now - t0)
        if busy_s > b0:
            self.capacity_fps = (scored - s0) / (busy_s - b0)

    def _cut(self, now: float, lag_s: float) -> bool:
        """Cap the sampler below what was scored; False when the cap is that low already (MIN_FPS)."""
        self._changed_at, self._lag_at_change = now, lag_s  # the next cut waits for this one to show
        self._sustained_fps = self.scored_fps
        current = [r for r in (self.scored_fps, self.sample_fps) if r]
        cap = max(MIN_FPS, CUT * min(current)) if current else MIN_FPS
        if self.sampler.cap is not None and cap >= self.sampler.cap:
            return False
        self.sampler.set_cap(cap)
        return True

    def _raise(self, now: float) -> None:
        cap = self.sampler.cap
        capacity = max((c for c in (self.capacity_fps, self._sustained_fps) if c), default=None)
        new = 2 * cap if capacity is None else min(2 * cap, HEADROOM * capacity)
        if new <= cap:
            return  # already at what the scorers sustain
        configured = self.sampler.configured_rate(self.arrival_fps)
        self.sampler.set_cap(None if configured is not None and new >= configured else new)
        self._changed_at = now

    def _detail(self) -> dict:
        r = lambda v: None if v is None else round(v, 2)  # noqa: E731
        return {"lag_s": r(self.lag_s), "arrival_fps": r(self.arrival_fps), "scored_fps": r(self.scored_fps),
                "sample_fps": r(self.sample_fps), "sampling": self.sampler.describe(),
                "frames_dropped": self.frames_dropped}
