"""Inference rewrites (models.inference): folded BatchNorms give the scores of the unfolded model, only where the
dataflow allows it; the crops and NEMG's head stay channels_last; the monitor's scorer runs the prepared model."""
import copy

import numpy as np
import pytest
import torch
from torch import nn

from models import registry
from models.inference import fuse_conv_bn, prepare
from models.table import WEIGHTS_DIR, default_weights
from monitor.samples import encode, panned_frames
from monitor.scoring.scorers import ModelScorer, rgb_batch
from monitor.source.frames import Frame
from monitor.source.sources import FileSource

# BatchNorms that cannot fold, per lite model: MFENet's octave blocks normalise a sum of two convs.
UNFOLDABLE = {"nemg": 0, "mfenet": 4, "liqe": 0, "gsn": 0}


def _bns(model: nn.Module) -> int:
    return sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())


@pytest.mark.parametrize("name", ["nemg", "mfenet", "liqe", "gsn"])
def test_prepared_model_scores_like_the_original(name):
    torch.manual_seed(0)
    trained = {} if default_weights(name, "lite") else {"weights": str(WEIGHTS_DIR / "v1" / f"{name}-lite.safetensors")}
    model = registry.create(name, "lite", **trained)  # trained BatchNorm statistics: folding them is the point
    if hasattr(model, "fold"):
        model.fold()
    fast = prepare(copy.deepcopy(model))
    assert _bns(fast) == UNFOLDABLE[name] < _bns(model)
    frames = torch.rand(2, 3, 240, 320).contiguous(memory_format=torch.channels_last)
    refs = (frames * 0.9).contiguous(memory_format=torch.channels_last) if model.info.kind == "FR" else None
    with torch.inference_mode():
        before = model.score_frames(frames, refs)
        after = fast.score_frames(frames, refs)
    for key in before:  # folding changes float rounding only
        torch.testing.assert_close(after[key], before[key], rtol=1e-3, atol=1e-4)


class _Net(nn.Module):
    """conv→BN (folds), conv+conv→BN (a sum: stays), a conv read twice →BN (stays), BatchNormAct-like tail kept."""

    def __init__(self):
        super().__init__()
        self.a, self.bn_a = nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4)
        self.b, self.c, self.bn_bc = nn.Conv2d(4, 4, 1), nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4)
        self.d, self.bn_d = nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4)

    def forward(self, x):
        x = torch.relu(self.bn_a(self.a(x)))
        x = self.bn_bc(self.b(x) + self.c(x))
        y = self.d(x)
        return self.bn_d(y) + y


def test_only_bns_fed_by_one_conv_alone_are_folded():
    torch.manual_seed(0)
    net = _Net()
    for bn in (net.bn_a, net.bn_bc, net.bn_d):  # non-trivial statistics
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
        bn.weight.data.uniform_(0.5, 2)
    net.eval()
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        before = net(x)
        assert fuse_conv_bn(net) == 1
        after = net(x)
    assert isinstance(net.bn_a, nn.Identity) and isinstance(net.bn_bc, nn.BatchNorm2d) and isinstance(net.bn_d, nn.BatchNorm2d)
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-5)


def test_training_mode_bns_are_left_alone():
    net = _Net().train()
    assert fuse_conv_bn(net) == 0 and isinstance(net.bn_a, nn.BatchNorm2d)


@pytest.mark.parametrize("name", ["nemg", "gsn", "liqe"])
def test_channels_last_reaches_every_feature_map(name):
    """NCHW crops, NEMG's 1-channel high-frequency map in a concat, or LIQE's NCHW resize (faster on CPU)
    must not turn a network NCHW (slower)."""
    model = prepare(registry.create(name, "lite", weights=None))
    nchw = []
    for mod in model.modules():
        if isinstance(mod, nn.Conv2d):
            mod.register_forward_hook(lambda m, i, o: nchw.append(m) if o.shape[1] > 1 and o.shape[-1] > 1
                                      and not o.is_contiguous(memory_format=torch.channels_last) else None)
    frames = torch.rand(1, 3, 800, 1000).contiguous(memory_format=torch.channels_last)  # LIQE resizes it
    with torch.inference_mode():
        model.score_frames(frames, frames if model.info.kind == "FR" else None)
        crops, _ = model.crops(frames)
        assert crops.is_contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(crops, model.crops(frames.contiguous())[0], rtol=0, atol=0)  # layout changes no value
    assert nchw == []


def test_a_model_created_for_inference_scores_as_the_plain_one(tmp_path):
    clip = encode(str(tmp_path / "c.mp4"), panned_frames(320, 240, 4), crf=35)
    with FileSource(clip) as src:
        frames: list[Frame] = list(src)
    plain = registry.create("liqe", "lite")
    scorer = ModelScorer(registry.create("liqe", "lite", for_inference=True), torch.device("cpu"))
    assert _bns(scorer.model) == 0
    values, extras = scorer.score(frames, [None] * len(frames))
    with torch.inference_mode():
        expected = plain.score_frames(rgb_batch(frames, torch.device("cpu")))
    np.testing.assert_allclose(values["nr.liqe"], expected["quality"].numpy(), rtol=1e-4)
    assert set(extras["nr.liqe"][0]) == {"scene", "distortion"}


def test_compiled_falls_back_to_eager_once(monkeypatch, caplog):
    def broken_compile(fn, **options):
        def run(*args, **kwargs):
            raise RuntimeError("InductorError: no C++ compiler")
        return run

    monkeypatch.setattr(torch, "compile", broken_compile)
    model = prepare(registry.create("liqe", "lite", weights=None), compile=True)
    frames = torch.rand(1, 3, 224, 320)
    with torch.inference_mode():
        first = model.score_frames(frames)["quality"]
        again = model.score_frames(frames)["quality"]
        plain = type(model).score_frames(model, frames)["quality"]
    assert torch.equal(first, plain) and torch.equal(again, plain)
    assert len([r for r in caplog.records if "torch.compile" in r.message]) == 1
    with pytest.raises(ValueError, match="full-reference"):  # the model's own errors still surface
        prepare(registry.create("gsn", "lite", weights=None), compile=True).score_frames(frames)


def test_compile_is_off_unless_asked(monkeypatch):
    monkeypatch.delenv("VQMON_COMPILE", raising=False)
    assert "score_frames" not in vars(prepare(registry.create("liqe", "lite", weights=None)))
    monkeypatch.setenv("VQMON_COMPILE", "1")
    monkeypatch.setattr(torch, "compile", lambda fn, **options: fn)
    assert "score_frames" in vars(prepare(registry.create("liqe", "lite", weights=None)))


def test_cpu_scores_in_float32_unless_bf16_is_asked_for_and_native(monkeypatch):
    from models import inference

    cpu = torch.device("cpu")
    monkeypatch.delenv("VQMON_CPU_BF16", raising=False)
    monkeypatch.setattr(inference, "cpu_has_bf16", lambda: True)
    assert inference.autocast_dtype(cpu) is None
    monkeypatch.setenv("VQMON_CPU_BF16", "1")
    assert inference.autocast_dtype(cpu) is torch.bfloat16
    assert ModelScorer(registry.create("liqe", "lite", weights=None), cpu)._dtype is torch.bfloat16
    monkeypatch.setattr(inference, "cpu_has_bf16", lambda: False)  # emulated bf16 would be slower than fp32
    assert inference.autocast_dtype(cpu) is None
