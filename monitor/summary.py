"""What `vqmon score` prints for one file: per-metric statistics with the worst frame, black/freeze stretches, alerts."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from monitor.alerts.engine import AlertSpan
from monitor.scoring.metrics import better
from monitor.scoring.signals import BLACK_FRAME_RATIO, FREEZE_MAFD, segments
from monitor.source.sources import StreamInfo

BLACK_MIN_S = 0.1  # shortest black run the summary reports
FREEZE_MIN_S = 0.5  # shortest freeze the summary reports (single repeats are normal, e.g. pulldown)


@dataclass
class MetricSummary:
    """One metric over a file: native-unit statistics, the 0–100 score beside them (NaN where the metric has none),
    and the worst frame by native value (None where neither direction is better)."""

    metric: str
    unit: str
    better: str  # "higher", "lower" or "—"
    count: int
    mean: float
    p5: float
    min: float
    max: float
    score_mean: float
    score_p5: float
    worst_index: int | None
    worst_pts_s: float | None
    worst_value: float | None


@dataclass
class Segment:
    kind: str  # "black" | "freeze"
    start_s: float
    end_s: float
    first_frame: int
    last_frame: int


@dataclass
class RunSummary:
    source: str
    stream_id: str
    info: StreamInfo
    sampling: str
    frames_seen: int = 0
    frames_scored: int = 0
    decode_errors: int = 0  # packets lost to damage, and truncation
    last_error: str = ""
    corrupt_frames: int = 0  # frames the decoder flagged corrupt (scored, flagged in their records)
    retimed: int = 0  # frames whose timestamps went backwards or repeated, moved forward
    scorer_errors: int = 0  # VMAF chunks that failed (their frames have no fr.vmaf)
    last_scorer_error: str = ""
    reference: str | None = None
    ref_paired: int = 0
    ref_unpaired: int = 0
    ref_ended_at: int | None = None
    elapsed_s: float = 0.0
    metrics: list[MetricSummary] = field(default_factory=list)
    segments: list[Segment] = field(default_factory=list)
    alerts: list[AlertSpan] = field(default_factory=list)

    @property
    def fps(self) -> float:
        return self.frames_seen / self.elapsed_s if self.elapsed_s else math.nan

    @property
    def damaged(self) -> bool:
        """The input was damaged: `vqmon score` warns and exits 1."""
        return bool(self.decode_errors or self.corrupt_frames or self.retimed)


def summarise(summary: RunSummary, scorers, collected: dict, fps: float) -> None:
    index = np.array(collected.get("_index", []), dtype=np.int64)
    pts = np.array(collected.get("_pts", []), dtype=np.float64)
    summary.frames_scored = len(index)
    infos = {m: i for s in scorers for m, i in s.metrics.items()}
    for m, vals in collected.items():
        if m.startswith("_"):
            continue
        v = np.array(vals, dtype=np.float64)
        ok = ~np.isnan(v)
        if not ok.any():
            continue
        info = infos[m]
        pos = np.flatnonzero(ok)
        worst = None if info.higher_is_better is None else pos[np.argmin(v[ok]) if info.higher_is_better else np.argmax(v[ok])]
        score = info.to_score(torch.from_numpy(v[ok])).numpy() if info.to_score else np.array([math.nan])
        summary.metrics.append(MetricSummary(
            m, info.unit, better(info), int(ok.sum()), float(v[ok].mean()), float(np.percentile(v[ok], 5)),
            float(v[ok].min()), float(v[ok].max()), float(score.mean()), float(np.percentile(score, 5)),
            None if worst is None else int(index[worst]), None if worst is None else float(pts[worst]),
            None if worst is None else float(v[worst])))
    summary.segments = stretches(index, pts, collected.get("sig.black", []), collected.get("sig.freeze", []), fps)


def stretches(index, pts, black, freeze, fps: float) -> list[Segment]:
    """Black runs of at least BLACK_MIN_S and freezes of at least FREEZE_MIN_S, from per-frame sig.black and sig.freeze
    (aligned with `index` and `pts`; NaN where not scored), in time order."""
    period = 1.0 / fps
    found = []
    for kind, flags, min_s in (
        ("black", [x >= BLACK_FRAME_RATIO for x in black], BLACK_MIN_S),
        # a frame equal to its predecessor: the freeze starts at that predecessor
        ("freeze", [x <= FREEZE_MAFD for x in freeze], FREEZE_MIN_S),
    ):
        for a, b in segments(flags):
            if kind == "freeze" and a > 0:
                a -= 1
            start, end = pts[a], pts[b] + period
            if end - start >= min_s - 1e-9:
                found.append(Segment(kind, float(start), float(end), int(index[a]), int(index[b])))
    return sorted(found, key=lambda seg: seg.start_s)
