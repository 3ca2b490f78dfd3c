"""Scorers turn a batch of sampled frames (and paired references) into per-frame metric values on a device.

A scorer has `tag` (its name in runtime metrics), `metrics` (name → MetricInfo), `models` (metric →
model tag for records; empty for signals), `needs_rgb`, and `score(frames, refs) -> (values, extras)`: values maps each metric to
a numpy array of len(frames) (NaN where undefined, e.g. FR without a reference), extras maps a
metric to one dict per frame for the record's `extras`.
"""
from __future__ import annotations

import ctypes
import sys

import numpy as np
import torch

from models import inference
from monitor.errors import InputError
from monitor.scoring import metrics, signals, signals_cpu
from monitor.source.frames import Frame


def keep_large_tensors_in_heap() -> None:
    """Make glibc serve big CPU tensors from its heap instead of fresh mmaps.

    Every torch op allocates its output; glibc maps allocations above its mmap threshold anew
    and unmaps them on free, so each op on a 1080p batch page-faults its whole output. Raising
    the thresholds lets the memory be reused: the signals run about 3× faster on CPU.
    """
    if sys.platform != "linux":
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (e.g. musl): nothing to tune
        return
    m_trim_threshold, m_mmap_threshold = -1, -3
    libc.mallopt(m_mmap_threshold, 512 << 20)
    libc.mallopt(m_trim_threshold, 1 << 30)


def pick_device(name: str = "auto") -> torch.device:
    """The torch device `name` says (auto: CUDA when there is one); a device this machine lacks is an InputError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise InputError(f"--device {name}: expected auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise InputError(f"--device {name}: no such CUDA device (this machine has {torch.cuda.device_count()})")
    if device.type not in ("cpu", "cuda"):
        raise InputError(f"--device {name}: expected auto, cpu, cuda or cuda:N")
    return device


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
    """The cheap signals; FR ones only for frames that have a paired reference.

    On CUDA the torch versions (monitor.scoring.signals) run on the whole batch; on a CPU the OpenCV
    versions (monitor.scoring.signals_cpu) run frame by frame on the decoded planes, several times faster.
    `kernels="torch"` forces the torch versions on a CPU too (benchmarks compare the two).
    Black levels follow each frame's range: full-range (yuvj, JPEG) sources have black at 0, not 16.
    """

    tag = "signals"
    metrics = signals.METRICS
    models: dict[str, str] = {}
    needs_rgb = False

    def __init__(self, device: torch.device, kernels: str = "auto"):
        if kernels not in ("auto", "torch"):
            raise ValueError(f"kernels must be 'auto' or 'torch', got {kernels!r}")
        if device.type == "cpu":
            keep_large_tensors_in_heap()
        self.device = device
        self.opencv = device.type == "cpu" and kernels == "auto"
        self._prev = None  # the previous sampled frame's luma (tensor on the device, or CPU plane)

    def score(self, frames: list[Frame], refs: list[Frame | None]) -> tuple[dict[str, np.ndarray], dict]:
        if self.opencv:
            return self._score_cpu(frames, refs), {}
        return self._score_batched(frames, refs), {}

    def _score_cpu(self, frames: list[Frame], refs: list[Frame | None]) -> dict[str, np.ndarray]:
        rows = []
        for f, ref in zip(frames, refs):
            y = signals_cpu.plane(f.y, f.bit_depth)
            row = signals_cpu.compute(y, self._prev, f.full_range)
            if ref is not None:
                r = signals_cpu.plane(ref.y, ref.bit_depth)
                row["fr.psnr_y"], row["fr.ssim_y"] = signals_cpu.psnr_y(y, r), signals_cpu.ssim_y(y, r)
            rows.append(row)
            self._prev = y
        names = list(rows[0]) + (["fr.psnr_y", "fr.ssim_y"] if any(r is not None for r in refs) else [])
        return {m: np.array([row.get(m, np.nan) for row in rows], dtype=np.float64) for m in names}

    @torch.inference_mode()
    def _score_batched(self, frames: list[Frame], refs: list[Frame | None]) -> dict[str, np.ndarray]:
        y = luma_batch(frames, self.device)
        prev = self._prev if isinstance(self._prev, torch.Tensor) and self._prev.shape == y.shape[1:] else None
        ranges = [f.full_range for f in frames]
        out = {k: v.cpu().numpy() for k, v in signals.compute(y, prev, ranges[0]).items()}
        if len(set(ranges)) > 1:  # the range changed within the batch (rare): black levels frame by frame
            out["sig.black"] = np.array([float(signals.black_ratio(y[i:i + 1], r)) for i, r in enumerate(ranges)])
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


def rgb_batch(frames: list[Frame], device: torch.device) -> torch.Tensor:
    """N×3×H×W float RGB in [0, 1] on `device`, channels_last (the layout convolutions run fastest in)."""
    x = torch.from_numpy(np.stack([f.rgb() for f in frames]))
    if device.type == "cuda":
        x = x.pin_memory().to(device, non_blocking=True)
    return x.permute(0, 3, 1, 2).float().div_(255.0).contiguous(memory_format=torch.channels_last)


class ModelScorer:
    """A quality model from `models.registry` as a scorer of metric `nr.<name>` or `fr.<name>`.

    Give it a model made for inference (`registry.create(..., for_inference=True)`): folded and fused.

    On CUDA it runs under bf16 autocast (fp16 where bf16 is unsupported); on CPU in fp32 (bf16 with
    VQMON_CPU_BF16=1 where the CPU has bf16 instructions: `models.inference.autocast_dtype`). Records
    carry `model` = name/variant@sha256-prefix, or @untrained for a model created with weights=None.
    An FR model gets each reference's `motion` (0 where the pairer did not measure it: see `uses_ref_motion`).
    """

    needs_rgb = True

    def __init__(self, model, device: torch.device):
        if device.type == "cpu":
            keep_large_tensors_in_heap()
        self.model = model.to(device)
        self.device = device
        info = model.info
        self.fr = info.kind == "FR"
        self.metric = f"{'fr' if self.fr else 'nr'}.{info.name}"
        self.tag = f"{info.name}/{info.variant}@{model.weights_sha256[:12] if model.trained else 'untrained'}"
        self.metrics = {self.metric: metrics.model_metric(info.name, info.variant, model.normalise)}
        self.models = {self.metric: self.tag}
        self._labels = model.extra_labels
        self._dtype = inference.autocast_dtype(device)

    @torch.inference_mode()
    def score(self, frames: list[Frame], refs: list[Frame | None]) -> tuple[dict[str, np.ndarray], dict[str, list]]:
        idx = [i for i, r in enumerate(refs) if r is not None] if self.fr else list(range(len(frames)))
        values = np.full(len(frames), np.nan)
        extras: list[dict] = [{} for _ in frames]
        if idx:
            x = rgb_batch([frames[i] for i in idx], self.device)
            with torch.autocast(self.device.type, dtype=self._dtype, enabled=self._dtype is not None):
                if self.fr:
                    r = rgb_batch([refs[i] for i in idx], self.device)
                    out = self.model.score_frames(x, r, torch.tensor([refs[i].motion or 0.0 for i in idx]))
                else:
                    out = self.model.score_frames(x)
            values[idx] = out.pop("quality").float().cpu().numpy()
            for key, t in out.items():  # per-frame distributions, e.g. LIQE's scene and distortion
                probs = t.double().cpu().numpy().round(4)
                names = self._labels.get(key)
                for j, i in enumerate(idx):
                    extras[i][key] = dict(zip(names, probs[j].tolist())) if names else probs[j].tolist()
        return {self.metric: values}, {self.metric: extras}
