"""What a metric's numbers mean, for every view (summary, report, status line and page, /metrics).

Each metric has a native value in its own unit (PSNR in dB, LIQE 1..5, …) and, where one is
meaningful, a 0–100 score. Views show both side by side with the direction that is better, and
explain the score once, in the words of `SCORE_MEANING`.
"""
from __future__ import annotations

import math

from models.table import MODELS
from monitor.scoring import signals, vmaf
from monitor.scoring.signals import MetricInfo

SCORE_MEANING = ("score: 0–100 for every metric, higher is better (100 = no visible damage); read it like a "
                 "mean opinion score: 80+ excellent, 60–80 good, 40–60 fair, 20–40 poor, under 20 bad")
GRADES = ((80.0, "excellent"), (60.0, "good"), (40.0, "fair"), (20.0, "poor"), (-math.inf, "bad"))


def grade(score: float) -> str:
    """The word for a 0–100 score (`SCORE_MEANING`)."""
    return next(word for floor, word in GRADES if score >= floor)


def model_metric(name: str, variant: str, normalise=None) -> MetricInfo:
    """The metric a quality model scores (`nr.<name>` or `fr.<name>`), from its row of the model table."""
    row = MODELS[name, variant]
    lo, hi = row.native_range
    return MetricInfo(f"{row.kind.lower()}.{name}", row.kind, f"{lo:g}..{hi:g}", row.native_range,
                      row.higher_is_better, f"{name} ({variant}): {row.protocol}; score: {lo:g}→0, {hi:g}→100",
                      to_score=normalise or signals.linear_score(*((lo, hi) if row.higher_is_better else (hi, lo))))


def metric_info(metric: str) -> MetricInfo | None:
    """A metric's facts by its name in the records; None for a name vqmon does not produce."""
    if metric in signals.METRICS:
        return signals.METRICS[metric]
    if metric == vmaf.METRIC.name:
        return vmaf.METRIC
    kind, _, name = metric.partition(".")
    row = MODELS.get((name, "lite"))
    return model_metric(name, "lite") if row and row.kind.lower() == kind else None


def better(info: MetricInfo | None) -> str:
    """'higher', 'lower', or '—' where neither direction is better (mean luma, SI, TI)."""
    if info is None or info.higher_is_better is None:
        return "—"
    return "higher" if info.higher_is_better else "lower"


def unit(info: MetricInfo | None) -> str:
    return (info.unit or "—") if info else "?"


def with_unit(value: float, info: MetricInfo | None) -> str:
    """A native value as people write it: '6.08 dB', '0.218', '3.76 (1..5)'."""
    if value is None or math.isnan(value):
        return "—"
    text = f"{value:.4g}" if abs(value) < 1e4 else f"{value:.3e}"
    if info is None or not info.unit:
        return text
    return f"{text} ({info.unit})" if ".." in info.unit else f"{text} {info.unit}"
