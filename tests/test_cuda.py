"""The CUDA path: the same numbers as on CPU for signals, and every model under bf16 autocast + channels_last.

Skipped where no GPU is present (CI has none); run on a GPU machine with `pytest tests/test_cuda.py`.
"""
from __future__ import annotations

import pytest
import torch

from models import registry
from monitor.build import score_file
from monitor.config import StreamConfig
from monitor.samples import encode, panned_frames
from monitor.scoring import signals

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
CUDA = torch.device("cuda")


def test_signals_on_cuda_equal_cpu():
    g = torch.Generator().manual_seed(0)
    y = (torch.rand(4, 270, 480, generator=g) * 255).round()
    r = (y + torch.randn(y.shape, generator=g) * 4).clamp(0, 255).round()
    cpu = signals.compute(y, None, False)
    gpu = signals.compute(y.to(CUDA), None, False)
    for k in cpu:
        assert torch.allclose(cpu[k], gpu[k].cpu(), rtol=1e-4, atol=1e-4, equal_nan=True), k
    assert torch.allclose(signals.psnr_y(y, r), signals.psnr_y(y.to(CUDA), r.to(CUDA)).cpu(), atol=1e-3)
    assert torch.allclose(signals.ssim_y(y, r), signals.ssim_y(y.to(CUDA), r.to(CUDA)).cpu(), atol=1e-6)


@pytest.mark.parametrize("name", ["nemg", "mfenet", "liqe", "gsn"])
@pytest.mark.parametrize("variant", ["lite", "paper"])
def test_model_bf16_channels_last_on_cuda_matches_fp32(name, variant):
    torch.manual_seed(0)
    model = registry.create(name, variant, weights=None, device=CUDA)
    frames = torch.rand(2, 3, 360, 640, device=CUDA).contiguous(memory_format=torch.channels_last)
    refs = (frames * 0.9).contiguous(memory_format=torch.channels_last) if model.info.kind == "FR" else None
    with torch.inference_mode():
        ref32 = model.score_frames(frames, refs)["quality"].float()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            low = model.score_frames(frames, refs)["quality"].float()
    assert low.shape == (2,) and torch.isfinite(low).all()
    span = max(ref32.abs().max().item(), 1e-3)
    assert (low - ref32).abs().max().item() < 0.05 * span, (ref32, low)


def test_score_file_with_a_model_on_cuda(tmp_path):
    clip = encode(str(tmp_path / "c.mp4"), panned_frames(640, 360, 16), crf=35)
    ref = encode(str(tmp_path / "r.mp4"), panned_frames(640, 360, 16), crf=None)
    models = [registry.create("liqe", "lite", weights=None), registry.create("gsn", "lite", weights=None)]
    gpu = score_file(StreamConfig(clip, ref=ref), device="cuda", models=models)
    cpu = score_file(StreamConfig(clip, ref=ref), device="cpu")
    means = lambda s: {m.metric: m.mean for m in s.metrics}  # noqa: E731
    g, c = means(gpu), means(cpu)
    assert {"nr.liqe", "fr.gsn"} <= set(g)
    for k in c:
        assert g[k] == pytest.approx(c[k], rel=1e-3, abs=1e-3), k
