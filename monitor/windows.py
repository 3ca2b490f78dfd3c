"""Online window statistics per (stream, metric) on media time.

Tumbling windows are [k·size, (k+1)·size); sliding windows are [k·hop, k·hop + size). A window
closes, and its statistics are emitted, as soon as a frame at or past its end is seen, so the
aggregator holds only the samples of open windows. `coverage` is scored frames over frames
seen in the window: it drops when sampling, a missing reference or decode errors leave gaps;
`corrupt` counts the frames seen in the window that the decoder flagged corrupt.
A late frame (media time before the oldest open window, e.g. a source whose clock jumped
back) cannot change windows already emitted: it is counted in `late` and left out.
"""
from __future__ import annotations

import math
from collections import defaultdict, deque
from dataclasses import dataclass

import numpy as np

from monitor.records import WindowStat


@dataclass(frozen=True)
class WindowSpec:
    size_s: float
    hop_s: float | None = None  # None: tumbling (hop = size)

    @property
    def kind(self) -> str:
        return "tumbling" if self.hop_s is None or self.hop_s == self.size_s else "sliding"

    @property
    def hop(self) -> float:
        return self.hop_s or self.size_s

    def describe(self) -> str:
        return f"{self.size_s:g} s" if self.kind == "tumbling" else f"{self.size_s:g} s every {self.hop:g} s"


def window_stats(values: np.ndarray) -> dict[str, float]:
    """count, mean, min, max, std (population), p5/p10/p50 (linear), harmonic mean (0 if any value is 0, NaN if negative)."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return {k: math.nan for k in ("mean", "min", "max", "std", "p5", "p10", "p50", "harmonic_mean")} | {"count": 0}
    p5, p10, p50 = np.percentile(v, [5, 10, 50])
    if (v < 0).any():
        hmean = math.nan
    elif (v == 0).any():
        hmean = 0.0
    else:
        hmean = v.size / np.sum(1.0 / v)
    return {"count": int(v.size), "mean": float(v.mean()), "min": float(v.min()), "max": float(v.max()),
            "std": float(v.std()), "p5": float(p5), "p10": float(p10), "p50": float(p50), "harmonic_mean": float(hmean)}


class WindowAggregator:
    """Collects (pts, value) per (stream, metric, scale) and emits WindowStats as windows close.

    `scale` is "value" (native units) or "score" (0–100); both are aggregated for metrics that
    have a score so rules and reports can use either.
    """

    def __init__(self, spec: WindowSpec):
        self.spec = spec
        self._samples: dict[tuple[str, str, str], deque[tuple[float, float]]] = defaultdict(deque)
        self._seen: dict[str, deque[float]] = defaultdict(deque)  # pts of every frame seen, per stream
        self._corrupt: dict[str, deque[float]] = defaultdict(deque)  # pts of the corrupt ones
        self._next_start: dict[str, float] = {}  # start of the oldest window not yet emitted, per stream
        self.late: dict[str, int] = defaultdict(int)  # frames that arrived after their windows were emitted

    def observe(self, stream_id: str, pts_s: float, corrupt: bool = False) -> list[WindowStat]:
        """Record that a frame at `pts_s` was seen (scored or not); returns windows it closes."""
        if pts_s < self._next_start.get(stream_id, -math.inf):
            self.late[stream_id] += 1
            return []
        closed = self._close(stream_id, before=pts_s)
        self._seen[stream_id].append(pts_s)
        if corrupt:
            self._corrupt[stream_id].append(pts_s)
        if stream_id not in self._next_start:
            self._next_start[stream_id] = math.floor(pts_s / self.spec.hop) * self.spec.hop
        return closed

    def add(self, stream_id: str, metric: str, scale: str, pts_s: float, value: float) -> None:
        if not math.isnan(value) and pts_s >= self._next_start.get(stream_id, -math.inf):
            self._samples[(stream_id, metric, scale)].append((pts_s, value))

    def flush(self, stream_id: str | None = None) -> list[WindowStat]:
        """Emit every open window (end of stream)."""
        streams = [stream_id] if stream_id else list(self._next_start)
        return [w for s in streams for w in self._close(s, before=math.inf)]

    def _close(self, stream_id: str, before: float) -> list[WindowStat]:
        start = self._next_start.get(stream_id)
        if start is None:
            return []
        out: list[WindowStat] = []
        seen = self._seen[stream_id]
        keys = [k for k in self._samples if k[0] == stream_id]
        size, hop = self.spec.size_s, self.spec.hop
        while start + size <= before:
            if not seen:  # nothing open: jump to the first window that can still receive frames
                if before != math.inf:
                    start = max(start, (math.floor((before - size) / hop) + 1) * hop)
                break
            end = start + size
            if seen[0] >= end:  # a gap in media time: skip the empty windows at once
                start = max(start + hop, (math.floor((seen[0] - size) / hop) + 1) * hop)
                continue
            n_seen = sum(1 for t in seen if start <= t < end)
            corrupt = self._corrupt[stream_id]
            n_corrupt = sum(1 for t in corrupt if start <= t < end)
            for key in keys:
                vals = [v for t, v in self._samples[key] if start <= t < end]
                if vals:
                    out.append(WindowStat.build(stream_id, key[1], key[2], start, end, self.spec.kind,
                                                n_seen, window_stats(np.array(vals)), n_corrupt))
            start += hop
            for q in (seen, corrupt):
                while q and q[0] < start:
                    q.popleft()
            for key in keys:
                q = self._samples[key]
                while q and q[0][0] < start:
                    q.popleft()
        self._next_start[stream_id] = start
        return out
