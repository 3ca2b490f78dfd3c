"""Scorers turn a batch of sampled frames (and paired references) into per-frame metric values on a device.

A scorer has `metrics` (name → MetricInfo-like object with `to_score`) and
`score(frames, refs) -> {metric: numpy array of len(frames)}`, NaN where a value is undefined.
"""
from __future__ import annotations

import numpy as np
import torch

from monitor import signals
from monitor.frames import Frame


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def luma_batch(frames: list[Frame], device: torch.device) -> torch.Tensor:
    """Stack the frames' luma planes into one N×H×W float tensor (8-bit units) on `device`."""
    depth = frames[0].bit_depth
    y = torch.from_numpy(np.stack([f.y for f in frames]))
    if y.dtype == torch.uint16:
        y = y.to(torch.int32)
    if device.type == "cuda":
        y = y.pin_memory().to(device, non_blocking=True)
    return signals.to_float_luma(y, depth)


class SignalScorer:
    """The cheap signals of monitor.signals; FR ones only for frames that have a paired reference."""

    metrics = signals.METRICS

    def __init__(self, device: torch.device, full_range: bool = False):
        self.device = device
        self.full_range = full_range
        self._prev: torch.Tensor | None = None

    @torch.inference_mode()
    def score(self, frames: list[Frame], refs: list[Frame | None]) -> dict[str, np.ndarray]:
        y = luma_batch(frames, self.device)
        prev = self._prev if self._prev is not None and self._prev.shape == y.shape[1:] else None
        out = {k: v.cpu().numpy() for k, v in signals.compute(y, prev, self.full_range).items()}
        self._prev = y[-1]
        paired = [i for i, r in enumerate(refs) if r is not None]
        if paired:
            d = y[paired]
            r = luma_batch([refs[i] for i in paired], self.device)
            for name, fn in (("fr.psnr_y", signals.psnr_y), ("fr.ssim_y", signals.ssim_y)):
                col = np.full(len(frames), np.nan)
                col[paired] = fn(d, r).cpu().numpy()
                out[name] = col
        return out
