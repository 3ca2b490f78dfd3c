"""How well predicted quality agrees with subjective (or teacher) scores: the standard IQA/VQA set.

SRCC and KRCC are rank correlations and need no fitting. PLCC and RMSE are taken after mapping
the predictions onto the MOS scale with the VQEG 4-parameter logistic
``f(x) = (b1 - b2) / (1 + exp(-(x - b3) / |b4|)) + b2``, so a model is not punished for a
monotone but non-linear scale; when the fit does not converge a straight line is used instead
(the returned ``fit`` says which).

Confidence intervals are 95 % percentile bootstraps over items (pairs resampled together).
For speed the logistic is fitted once, on the full set, and that mapping is reused inside every
resample: the PLCC/RMSE intervals therefore hold the mapping fixed and are slightly narrower
than refitting per resample would give.
"""
from __future__ import annotations

import math
import warnings

import numpy as np
from scipy import optimize, special, stats

STATS = ("srcc", "krcc", "plcc", "rmse")


def logistic4(x, b1, b2, b3, b4):
    """VQEG 4-parameter logistic: b1/b2 are the upper/lower asymptotes, b3 the centre, |b4| the slope scale."""
    return (b1 - b2) * special.expit((x - b3) / np.abs(b4)) + b2  # expit: no overflow far from the centre


def fit_mapping(pred: np.ndarray, mos: np.ndarray):
    """(f, kind): the pred → mos mapping for PLCC/RMSE, kind "logistic", or "linear" when the fit fails
    or there are no more items than the logistic has parameters."""
    spread = float(np.std(pred)) or 1.0
    lo, hi = float(np.min(mos)), float(np.max(mos))
    if stats.spearmanr(pred, mos).statistic < 0:  # a decreasing relation starts from swapped asymptotes
        lo, hi = hi, lo
    if len(pred) > 4:  # more points than the logistic's parameters
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optimize.OptimizeWarning)
                warnings.simplefilter("ignore", RuntimeWarning)  # exp overflow while exploring steep slopes
                params, _ = optimize.curve_fit(logistic4, pred, mos, p0=[hi, lo, float(np.mean(pred)), spread],
                                               maxfev=10000)
            if np.all(np.isfinite(params)) and np.all(np.isfinite(logistic4(pred, *params))):
                return (lambda x: logistic4(x, *params)), "logistic"
        except RuntimeError:  # no convergence within maxfev
            pass
    slope, intercept = np.polyfit(pred, mos, 1)
    return (lambda x: slope * x + intercept), "linear"


def _rowwise_pearson(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a - a.mean(axis=-1, keepdims=True)
    b = b - b.mean(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (a * b).sum(axis=-1) / np.sqrt((a * a).sum(axis=-1) * (b * b).sum(axis=-1))


def _stats(pred: np.ndarray, mos: np.ndarray, mapped: np.ndarray) -> dict[str, np.ndarray]:
    """SRCC, KRCC, PLCC and RMSE of each row of B×n arrays (one row per resample)."""
    srcc = _rowwise_pearson(stats.rankdata(pred, axis=-1), stats.rankdata(mos, axis=-1))
    krcc = np.array([stats.kendalltau(p, m).statistic for p, m in zip(pred, mos)])
    plcc = _rowwise_pearson(mapped, mos)
    rmse = np.sqrt(np.mean((mapped - mos) ** 2, axis=-1))
    return {"srcc": srcc, "krcc": krcc, "plcc": plcc, "rmse": rmse}


def correlations(pred, mos, n_boot: int = 1000, seed: int = 0) -> dict:
    """{n, fit, srcc, srcc_lo, srcc_hi, krcc…, plcc…, rmse…}; the CIs are NaN when n_boot is 0,
    everything is NaN (fit "none") when pred or mos is constant."""
    pred = np.asarray(pred, dtype=np.float64)
    mos = np.asarray(mos, dtype=np.float64)
    if pred.shape != mos.shape or pred.ndim != 1:
        raise ValueError(f"pred and mos must be 1-d and of equal length, got {pred.shape} and {mos.shape}")
    if len(pred) < 3:
        raise ValueError(f"correlations need at least 3 items, got {len(pred)}")
    if np.ptp(pred) == 0 or np.ptp(mos) == 0:  # nothing to correlate: say so with NaNs, not warnings
        return {"n": len(pred), "fit": "none", **{f"{s}{e}": math.nan for s in STATS for e in ("", "_lo", "_hi")}}
    mapping, kind = fit_mapping(pred, mos)
    mapped = mapping(pred)
    full = _stats(pred[None], mos[None], mapped[None])
    out: dict = {"n": len(pred), "fit": kind}
    if n_boot:
        idx = np.random.default_rng(seed).integers(0, len(pred), size=(n_boot, len(pred)))
        with warnings.catch_warnings():  # a resample of tied values has no correlation: NaN, left out below
            warnings.simplefilter("ignore", RuntimeWarning)
            warnings.simplefilter("ignore", stats.ConstantInputWarning)
            boot = _stats(pred[idx], mos[idx], mapped[idx])
    for name in STATS:
        out[name] = float(full[name][0])
        lo, hi = np.nanpercentile(boot[name], [2.5, 97.5]) if n_boot else (np.nan, np.nan)
        out[f"{name}_lo"], out[f"{name}_hi"] = float(lo), float(hi)
    return out


def within_group_srcc(pred, mos, groups) -> float:
    """Mean SRCC over groups (e.g. source images) with ≥ 3 items and varying MOS: ranking quality within one content.

    A group where the predictions are all equal counts as 0 (no ranking); NaN when no group qualifies.
    """
    pred, mos, groups = np.asarray(pred, dtype=np.float64), np.asarray(mos, dtype=np.float64), np.asarray(groups)
    values = []
    for g in np.unique(groups):
        sel = groups == g
        if sel.sum() >= 3 and np.ptp(mos[sel]) > 0:
            values.append(stats.spearmanr(pred[sel], mos[sel]).statistic if np.ptp(pred[sel]) > 0 else 0.0)
    return float(np.mean(values)) if values else float("nan")
