"""Inference-only rewrites of a quality model: the same scores up to float rounding, in less time.

`prepare(model, device)` is what the monitor (`monitor.scoring.scorers.ModelScorer`) and `vqmon eval`
run before scoring. It changes the model in place, so the result is for inference only: do not
train it or save its state dict afterwards (keys of folded BatchNorms are gone).

* `fold()`: GSN's central-difference convs become plain convs (exact).
* `fuse_conv_bn`: every BatchNorm whose input is a conv's output and nothing else is folded
  into that conv's weights and bias (`torch.nn.utils.fusion.fuse_conv_bn_eval`); a timm
  `BatchNormAct2d` keeps its activation. Which conv feeds which BatchNorm is read from a
  `torch.fx` trace, not guessed from module order (in MFENet's octave block a BatchNorm follows
  a *sum* of two convs and must stay).
* optionally `compiled(score_frames)`: torch.compile with a clean fall-back to eager.

`autocast_dtype(device)` is the precision the monitor scores in (float32 on CPU unless asked).
"""
from __future__ import annotations

import functools
import logging
import os
from collections import Counter

import torch
from torch import fx, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

log = logging.getLogger(__name__)


class _BatchNormLeafTracer(fx.Tracer):
    """Keeps BatchNorm subclasses (timm's BatchNormAct2d) as single call_module nodes."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, nn.BatchNorm2d) or super().is_leaf_module(m, qualname)


def _after_fold(bn: nn.BatchNorm2d) -> nn.Module:
    """What is left of a BatchNorm once its affine map lives in the conv: timm's drop + activation, or nothing."""
    tail = [m for m in (getattr(bn, "drop", None), getattr(bn, "act", None)) if m is not None]
    return nn.Sequential(*tail) if tail else nn.Identity()


def fuse_conv_bn(module: nn.Module) -> int:
    """Fold eval-mode BatchNorms into the convs that feed them, in place; returns how many were folded.

    Traces the largest submodules that `torch.fx` can trace (a model whose forward branches on
    shapes is traced child by child).
    """
    try:
        graph = _BatchNormLeafTracer().trace(module)
    except Exception:  # not traceable as a whole (shape-dependent Python): try its children
        return sum(fuse_conv_bn(child) for child in module.children())
    subs = dict(module.named_modules())
    calls = Counter(n.target for n in graph.nodes if n.op == "call_module")
    folded = 0
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(subs[node.target], nn.BatchNorm2d) or not node.args:
            continue
        src = node.args[0]
        if not (isinstance(src, fx.Node) and src.op == "call_module" and type(subs[src.target]) is nn.Conv2d
                and len(src.users) == 1 and calls[src.target] == calls[node.target] == 1):
            continue
        bn = subs[node.target]
        if bn.training or not bn.track_running_stats or bn.running_mean is None:
            continue
        module.set_submodule(src.target, fuse_conv_bn_eval(subs[src.target], bn))
        module.set_submodule(node.target, _after_fold(bn))
        folded += 1
    return folded


def cpu_has_bf16() -> bool:
    """Whether this CPU has bf16 dot-product instructions (AVX512-BF16 or AMX); elsewhere bf16 is emulated, slower than fp32."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:  # not Linux: no way to tell cheaply, so no bf16
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """The reduced precision a model scores in on `device`; None is float32.

    CUDA: bf16 (fp16 where bf16 is unsupported). CPU: float32, unless VQMON_CPU_BF16=1 on a CPU with
    bf16 instructions: 1.1–1.5× the frames/s, SRCC against VMAF within 0.0004 of float32, but single
    scores up to 2.5 points (of 100) away from float32's, and so from another machine's.
    """
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and os.environ.get("VQMON_CPU_BF16") == "1" and cpu_has_bf16():
        return torch.bfloat16
    return None


def compiled(fn):
    """`torch.compile(fn)` that falls back to `fn` for good if compiling or running the compiled code fails.

    A missing C++ compiler, an unsupported op or an out-of-memory compile then costs one warning,
    not the stream; an error `fn` raises on its own is raised again by the eager call.
    """
    state = {"fn": torch.compile(fn, options={"freezing": True})}  # weights as constants: folded, prepacked

    @functools.wraps(fn)
    def call(*args, **kwargs):
        if state["fn"] is not fn:
            try:
                return state["fn"](*args, **kwargs)
            except Exception as e:  # noqa: BLE001 - any failure of the compiled path means: run eagerly
                log.warning("torch.compile of %s failed, running it eagerly: %s: %s",
                            getattr(fn, "__qualname__", fn), type(e).__name__, str(e).splitlines()[0] if str(e) else "")
                state["fn"] = fn
        return fn(*args, **kwargs)

    return call


def prepare(model, device: torch.device | str = "cpu", compile: bool | None = None):
    """`model` rewritten in place for fast inference on `device` (see the module docstring), in eval mode.

    compile: also wrap `score_frames` in `compiled` (inductor); None reads VQMON_COMPILE=1 from the
    environment. Off by default: on 2 CPU cores the first batch of each new shape waits 20–80 s
    for the compiler, for 1.1–1.3× afterwards (bench/models_throughput.py --compile).
    """
    model = model.fold().to(device).eval()
    fuse_conv_bn(model)
    if compile is None:
        compile = os.environ.get("VQMON_COMPILE") == "1"
    if compile:
        model.score_frames = compiled(model.score_frames)
    return model
