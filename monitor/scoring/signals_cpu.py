"""The signals of monitor.scoring.signals on a CPU: one frame at a time, OpenCV's SIMD kernels on the decoded plane.

The torch versions run batched and fast on CUDA, but on a CPU they cost a u8→float copy and a
dozen float32 passes over every plane: several times the decoder's own cost at 1080p. Here an
8-bit plane stays uint8; sums that need no per-pixel output come from `cv2.norm` of a difference
(no temporary plane); the gradient and SSIM passes run in strips of rows that stay in the CPU
cache; the small per-frame arithmetic is numpy (torch's thread pool costs more than such tiny ops). Deeper planes are scaled once to float32 in 8-bit units, as the torch path does. The
values equal the torch versions' (tests/test_signals.py), and the final formulas are shared
with them (`blockiness_from_steps`, `ssim_from_block_sums`).
"""
from __future__ import annotations

import math

import cv2
import numpy as np

from monitor.scoring import signals

STRIP = 128  # rows per strip for the multi-pass signals (SI, SSIM): a strip's buffers fit in L2


def plane(y: np.ndarray, bit_depth: int) -> np.ndarray:
    """The decoded luma as the kernels take it: uint8 as is, deeper planes as float32 in 8-bit units."""
    if bit_depth == 8:
        return y
    return y.astype(np.float32) * np.float32(255.0 / ((1 << bit_depth) - 1))


# libvmaf's motion filter: a 5-tap Gaussian, applied along rows and columns with mirrored edges
_MOTION_TAPS = np.array([0.054488685, 0.244201342, 0.402619947, 0.244201342, 0.054488685], np.float32)


def motion_blur(y: np.ndarray) -> np.ndarray:
    """A `plane()` blurred as VMAF's motion feature blurs it, float32 in 8-bit units."""
    return cv2.sepFilter2D(y.astype(np.float32, copy=False), cv2.CV_32F, _MOTION_TAPS, _MOTION_TAPS,
                           borderType=cv2.BORDER_REFLECT_101)


def motion_sad(a: np.ndarray, b: np.ndarray) -> float:
    """VMAF's motion between two `motion_blur` planes: their mean absolute difference."""
    return cv2.norm(a, b, cv2.NORM_L1) / a.size


def _mean(y: np.ndarray) -> float:
    return cv2.mean(y)[0]


def compute(y: np.ndarray, prev: np.ndarray | None, full_range: bool) -> dict[str, float]:
    """The NR signals of one frame (`plane()` output) → {metric: value}; freeze/TI are NaN without `prev`."""
    h, w = y.shape
    n = h * w
    mean = _mean(y)
    out = {
        "sig.luma": mean / 255.0,
        "sig.black": np.count_nonzero(y <= signals.black_threshold(full_range)) / n,
        "sig.blockiness": blockiness(y),
        "sig.sharpness": sharpness(y),
        "sig.si": spatial_information(y),
        "sig.freeze": math.nan,
        "sig.ti": math.nan,
    }
    if prev is not None and prev.shape == y.shape:
        out["sig.freeze"] = cv2.norm(y, prev, cv2.NORM_L1) / n / 255.0
        mean_diff = mean - _mean(prev)  # std of Δ = sqrt(E[Δ²] − E[Δ]²), with no Δ plane
        out["sig.ti"] = math.sqrt(max(cv2.norm(y, prev, cv2.NORM_L2SQR) / n - mean_diff * mean_diff, 0.0))
    return out


def blockiness(y: np.ndarray) -> float:
    depth = cv2.CV_32S if y.dtype == np.uint8 else cv2.CV_32F  # exact for 8-bit; 64-bit sums are 10× slower
    cols = cv2.reduce(cv2.absdiff(y[:, 1:], y[:, :-1]), 0, cv2.REDUCE_SUM, dtype=depth).astype(np.float64)
    rows = cv2.reduce(cv2.absdiff(y[1:], y[:-1]), 1, cv2.REDUCE_SUM, dtype=depth).astype(np.float64)
    return float(signals.blockiness_from_steps(cols.reshape(1, -1), rows.reshape(1, -1))[0])


def sharpness(y: np.ndarray) -> float:
    """Energy of the 4-neighbour Laplacian over the valid region (OpenCV's ksize=1 kernel is that Laplacian)."""
    lap = cv2.Laplacian(y, cv2.CV_16S if y.dtype == np.uint8 else cv2.CV_32F, ksize=1)[1:-1, 1:-1]
    return cv2.norm(lap, cv2.NORM_L2SQR) / lap.size if lap.size else math.nan


def spatial_information(y: np.ndarray) -> float:
    """P.910 SI: std of the Sobel magnitude over the valid region, from its sum and sum of squares per strip.

    8-bit planes get both Sobel gradients from one int16 pass (`spatialGradient`); each strip's
    magnitude is taken over whole rows (contiguous) and the two border columns are subtracted.
    The magnitude is √(gx² + gy²) in separate exactly rounded steps, not `cv2.magnitude`, whose
    fused multiply-add in SIMD lanes but not in scalar tails makes results depend on how OpenCV
    splits the work among its threads.
    """
    h, w = y.shape
    if h < 3 or w < 3:
        return math.nan
    total = total_sq = 0.0
    for top in range(0, h - 2, STRIP):
        part = y[top : top + STRIP + 2]
        if y.dtype == np.uint8:
            gx, gy = (g[1:-1] for g in cv2.spatialGradient(part))
        else:
            gx, gy = (cv2.Sobel(part, cv2.CV_32F, dx, 1 - dx, ksize=3)[1:-1] for dx in (1, 0))
        squared = cv2.add(cv2.multiply(gx, gx, dtype=cv2.CV_32F), cv2.multiply(gy, gy, dtype=cv2.CV_32F))
        mag = cv2.sqrt(squared)
        border = np.concatenate([mag[:, 0], mag[:, -1]]).astype(np.float64)
        total += cv2.sumElems(mag)[0] - border.sum()
        total_sq += cv2.sumElems(squared)[0] - np.square(border).sum()  # not `@`: BLAS sums in a thread-dependent order
    n = (h - 2) * (w - 2)
    return math.sqrt(max(total_sq / n - (total / n) ** 2, 0.0))


def psnr_y(d: np.ndarray, r: np.ndarray) -> float:
    mse = cv2.norm(d, r, cv2.NORM_L2SQR) / d.size
    return min(10.0 * math.log10(255.0**2 / mse), signals.PSNR_CAP_DB) if mse else signals.PSNR_CAP_DB


def ssim_y(d: np.ndarray, r: np.ndarray) -> float:
    """FFmpeg's SSIM (see signals.ssim_y) from 4×4 block sums per strip; exact for 8-bit input.

    Sums of d, r, d·r and (d−r)² (so d²+r² = (d−r)² + 2·d·r needs no third product): rows summed
    four at a time, then columns by an area resize at 4:1 (weights of ¼: exact in float32).
    """
    h4, w4 = d.shape[0] // 4 * 4, d.shape[1] // 4 * 4
    sums: list[list[np.ndarray]] = [[], [], [], []]
    for top in range(0, h4, STRIP):
        ds, rs = d[top : min(top + STRIP, h4), :w4], r[top : min(top + STRIP, h4), :w4]
        diff = cv2.absdiff(ds, rs)
        parts = (ds.astype(np.float32), rs.astype(np.float32), cv2.multiply(ds, rs, dtype=cv2.CV_32F),
                 cv2.multiply(diff, diff, dtype=cv2.CV_32F))
        for acc, x in zip(sums, parts):
            rows = cv2.add(cv2.add(x[0::4], x[1::4]), cv2.add(x[2::4], x[3::4]))
            acc.append(cv2.resize(rows, (w4 // 4, rows.shape[0]), interpolation=cv2.INTER_AREA))
    s1, s2, s12, sq = (np.concatenate(a).astype(np.float64)[None] * 4.0 for a in sums)
    return float(signals.ssim_from_block_sums(s1, s2, sq + 2.0 * s12, s12)[0])
