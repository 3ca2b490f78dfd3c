"""Cheap per-frame signals on the luma plane, vectorised in torch so a batch runs on CPU or CUDA alike.

All pixel math is in 8-bit units (a 10-bit plane is scaled by 255/1023), so thresholds and
PSNR/SSIM mean the same thing at every bit depth. FR signals need the paired reference luma at
the same size; difference signals (freeze, TI) compare with the previous *sampled* frame.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

PSNR_CAP_DB = 100.0  # identical frames: FFmpeg prints "inf"; a finite cap keeps window stats usable
BLACK_PIXEL_TH = 0.10  # as FFmpeg blackdetect: a pixel is black below 10% of the luma range above black
BLACK_FRAME_RATIO = 0.98  # ... and a frame is black when 98% of its pixels are
FREEZE_MAFD = 0.001  # as FFmpeg freezedetect (-60 dB): mean |Δ| under 0.1% of full scale is a repeat


@dataclass(frozen=True)
class MetricInfo:
    name: str
    kind: str  # "FR" or "NR"
    unit: str
    range: tuple[float, float]  # native value range (inf where unbounded)
    higher_is_better: bool | None  # None: neither direction is better (mean luma, SI, TI)
    description: str
    to_score: Callable[[torch.Tensor], torch.Tensor] | None = None  # native → 0–100; None: no meaningful score


def linear_score(lo: float, hi: float) -> Callable[[torch.Tensor], torch.Tensor]:
    return lambda v: ((v - lo) / (hi - lo) * 100.0).clamp(0.0, 100.0)


def _flag(bad: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[torch.Tensor], torch.Tensor]:
    return lambda v: torch.where(bad(v), 0.0, 100.0).to(v.dtype)


METRICS: dict[str, MetricInfo] = {m.name: m for m in [
    MetricInfo("fr.psnr_y", "FR", "dB", (0.0, PSNR_CAP_DB), True, "PSNR of luma vs reference (peak 255, capped at 100 dB); score: 20 dB→0, 50 dB→100",
               linear_score(20.0, 50.0)),
    MetricInfo("fr.ssim_y", "FR", "", (-1.0, 1.0), True, "SSIM of luma, FFmpeg/x264 definition (8×8 windows, stride 4); score: 0.5→0, 1→100",
               linear_score(0.5, 1.0)),
    MetricInfo("sig.luma", "NR", "fraction", (0.0, 1.0), None, "mean luma as a fraction of full scale"),
    MetricInfo("sig.black", "NR", "fraction", (0.0, 1.0), False, "share of black pixels (blackdetect threshold); score 0 when ≥ 98%",
               _flag(lambda v: v >= BLACK_FRAME_RATIO)),
    MetricInfo("sig.freeze", "NR", "fraction", (0.0, 1.0), True, "mean |Δluma| vs previous sampled frame (MAFD); score 0 when ≤ 0.001",
               _flag(lambda v: v <= FREEZE_MAFD)),
    MetricInfo("sig.blockiness", "NR", "ratio", (0.0, math.inf), False, "mean |Δ| across 8×8 block edges / inside blocks; score: 1→100, 2→0",
               linear_score(2.0, 1.0)),
    MetricInfo("sig.sharpness", "NR", "8-bit²", (0.0, math.inf), True, "Laplacian energy of luma (low = blurred)"),
    MetricInfo("sig.si", "NR", "8-bit", (0.0, math.inf), None, "ITU-T P.910 spatial information (std of Sobel magnitude)"),
    MetricInfo("sig.ti", "NR", "8-bit", (0.0, math.inf), None, "ITU-T P.910 temporal information (std of Δluma vs previous sampled frame)"),
]}

def to_float_luma(y: torch.Tensor, bit_depth: int) -> torch.Tensor:
    """Integer luma (any depth) → float32 in 8-bit units."""
    y = y.float()
    return y if bit_depth == 8 else y * (255.0 / ((1 << bit_depth) - 1))


def psnr_y(d: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    mse = (d - r).square().mean(dim=(1, 2))
    return (10.0 * torch.log10(255.0**2 / mse)).clamp(max=PSNR_CAP_DB)


def ssim_y(d: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """SSIM as FFmpeg's `ssim` filter computes it: unweighted 8×8 windows on a 4-pixel grid, its constants.

    Like FFmpeg, sums 4×4 blocks first and adds 2×2 neighbouring blocks into windows.
    """
    n, h, w = d.shape
    h4, w4 = h // 4, w // 4

    def block_sums(x: torch.Tensor) -> torch.Tensor:
        return (F.avg_pool2d(x[:, None, : h4 * 4, : w4 * 4], 4)[:, 0] * 16).double()

    return ssim_from_block_sums(block_sums(d), block_sums(r), block_sums(d * d + r * r), block_sums(d * r)).to(d.dtype)


def ssim_from_block_sums(s1, s2, ss, s12):
    """Mean SSIM per frame from N×(H/4)×(W/4) float64 sums over 4×4 blocks of d, r, d²+r² and d·r.

    Float64 keeps the variance terms (differences of ~1e9 numbers) exact. Takes torch tensors or
    numpy arrays alike (the CPU path passes numpy: tiny torch ops there cost more than the math).
    """

    def windows(s):
        return s[:, :-1, :-1] + s[:, 1:, :-1] + s[:, :-1, 1:] + s[:, 1:, 1:]

    s1, s2, ss, s12 = windows(s1), windows(s2), windows(ss), windows(s12)
    px = 64.0
    c1 = round(0.01**2 * 255**2 * px)
    c2 = round(0.03**2 * 255**2 * px * (px - 1))
    var = ss * px - s1 * s1 - s2 * s2
    cov = s12 * px - s1 * s2
    ssim = (2 * s1 * s2 + c1) * (2 * cov + c2) / ((s1 * s1 + s2 * s2 + c1) * (var + c2))
    return ssim.sum((1, 2)) / (ssim.shape[1] * ssim.shape[2])


def black_threshold(full_range: bool) -> float:
    """Luma (8-bit units) at or below which a pixel is black: 10 % of the nominal range above black level."""
    black, white = (0.0, 255.0) if full_range else (16.0, 235.0)
    return black + BLACK_PIXEL_TH * (white - black)


def black_ratio(y: torch.Tensor, full_range: bool) -> torch.Tensor:
    return (y <= black_threshold(full_range)).flatten(1).count_nonzero(dim=1) / (y.shape[1] * y.shape[2])


def blockiness(y: torch.Tensor) -> torch.Tensor:
    """Mean luma step across the 8×8 coding-block grid relative to steps inside blocks (≈1 when no blocking).

    Assumes the block grid starts at the top-left pixel (true for decoded, uncropped video).
    """
    cols = (y[:, :, 1:] - y[:, :, :-1]).abs_().sum(dim=1)  # N × (W-1): step between column x and x+1
    rows = (y[:, 1:, :] - y[:, :-1, :]).abs_().sum(dim=2)  # N × (H-1)
    return blockiness_from_steps(cols, rows)


def blockiness_from_steps(cols, rows):
    """Blockiness from per-frame sums of |Δ| between neighbouring columns (N×(W-1)) and rows (N×(H-1)).

    Takes torch tensors or numpy arrays alike.
    """
    w, h = cols.shape[1] + 1, rows.shape[1] + 1
    edge = cols[:, 7::8].sum(1) + rows[:, 7::8].sum(1)
    inner = cols.sum(1) + rows.sum(1) - edge
    n_edge = cols[:, 7::8].shape[1] * h + rows[:, 7::8].shape[1] * w
    n_inner = (w - 1) * h + (h - 1) * w - n_edge
    eps = 0.05  # 8-bit units: keeps flat frames (black, slates) near 1 instead of 0/0
    return (edge / n_edge + eps) / (inner / n_inner + eps)


def sharpness(y: torch.Tensor) -> torch.Tensor:
    """Energy of the 4-neighbour Laplacian (valid region), by shifted slices: cheaper than a 1-channel conv."""
    lap = torch.add(y[:, :-2, 1:-1] + y[:, 2:, 1:-1], y[:, 1:-1, 1:-1], alpha=-4)
    lap += y[:, 1:-1, :-2]
    lap += y[:, 1:-1, 2:]
    return lap.square_().mean(dim=(1, 2))


def spatial_information(y: torch.Tensor) -> torch.Tensor:
    """P.910 SI: std of the Sobel gradient magnitude over the valid region (separable Sobel by slices)."""
    dx = y[:, :, 2:] - y[:, :, :-2]  # horizontal central difference, then [1,2,1] down the rows
    gx = torch.add(dx[:, :-2] + dx[:, 2:], dx[:, 1:-1], alpha=2)
    del dx
    sy = torch.add(y[:, :, :-2] + y[:, :, 2:], y[:, :, 1:-1], alpha=2)  # [1,2,1] along the row, then vertical difference
    gy = sy[:, 2:] - sy[:, :-2]
    del sy
    return torch.hypot(gx, gy).flatten(1).std(dim=1, correction=0)


def compute(y: torch.Tensor, prev: torch.Tensor | None, full_range: bool) -> dict[str, torch.Tensor]:
    """The NR signals for a batch of N luma frames (float, 8-bit units, N×H×W) → {metric: N values}.

    `prev` is the frame sampled just before y[0] (None at stream start: freeze/TI are NaN there).
    FR signals (psnr_y, ssim_y) are separate: only frames with a reference get them.
    """
    out = {
        "sig.luma": y.mean(dim=(1, 2)) / 255.0,
        "sig.black": black_ratio(y, full_range),
        "sig.blockiness": blockiness(y),
        "sig.sharpness": sharpness(y),
        "sig.si": spatial_information(y),
    }
    before = torch.cat([prev[None] if prev is not None else torch.full_like(y[:1], float("nan")), y[:-1]])
    diff = (y - before).flatten(1)
    out["sig.freeze"] = diff.abs().mean(dim=1) / 255.0
    out["sig.ti"] = diff.std(dim=1, correction=0)
    return out


def segments(flags: list[bool], min_frames: int = 1) -> list[tuple[int, int]]:
    """Runs of consecutive True flags as (first, last) positions, at least `min_frames` long."""
    runs, start = [], None
    for i, f in enumerate(flags + [False]):
        if f and start is None:
            start = i
        elif not f and start is not None:
            if i - start >= min_frames:
                runs.append((start, i - 1))
            start = None
    return runs
