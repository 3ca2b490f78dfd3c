"""VAN backbone and MFENet: sizes vs the brief, official checkpoint layout, shapes, frozen DAN, training signal."""
import argparse

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode
from torchvision.models import resnet50

from models import mfenet
from models.backbones.van import VAN_SIZES, load_van_checkpoint, van_b0, van_b1, van_b2
from models.crops import centred_grid
from models.weights import WeightsError
from pipelines.train.losses import mfenet_loss


def bn_keys(prefix: str, c: int) -> dict:
    return {
        f"{prefix}.weight": torch.rand(c), f"{prefix}.bias": torch.rand(c),
        f"{prefix}.running_mean": torch.rand(c), f"{prefix}.running_var": torch.rand(c) + 0.5,
        f"{prefix}.num_batches_tracked": torch.tensor(7),
    }


def official_van_state_dict(size: str, num_classes: int = 1000) -> dict:
    """A state dict written from the official key layout and the paper's shapes (not from our module)."""
    dims, depths, ratios = VAN_SIZES[size]
    sd = {}
    for i, (dim, depth, ratio) in enumerate(zip(dims, depths, ratios), start=1):
        cin, k = (3, 7) if i == 1 else (dims[i - 2], 3)
        sd[f"patch_embed{i}.proj.weight"] = torch.randn(dim, cin, k, k)
        sd[f"patch_embed{i}.proj.bias"] = torch.randn(dim)
        sd.update(bn_keys(f"patch_embed{i}.norm", dim))
        hidden = dim * ratio
        for j in range(depth):
            b = f"block{i}.{j}"
            sd.update(bn_keys(f"{b}.norm1", dim))
            sd.update(bn_keys(f"{b}.norm2", dim))
            for name, shape in {
                "attn.proj_1": (dim, dim, 1, 1),
                "attn.spatial_gating_unit.conv0": (dim, 1, 5, 5),
                "attn.spatial_gating_unit.conv_spatial": (dim, 1, 7, 7),
                "attn.spatial_gating_unit.conv1": (dim, dim, 1, 1),
                "attn.proj_2": (dim, dim, 1, 1),
                "mlp.fc1": (hidden, dim, 1, 1),
                "mlp.dwconv.dwconv": (hidden, 1, 3, 3),
                "mlp.fc2": (dim, hidden, 1, 1),
            }.items():
                sd[f"{b}.{name}.weight"] = torch.randn(shape)
                sd[f"{b}.{name}.bias"] = torch.randn(shape[0])
            sd[f"{b}.layer_scale_1"] = torch.rand(dim)
            sd[f"{b}.layer_scale_2"] = torch.rand(dim)
        sd[f"norm{i}.weight"] = torch.rand(dim)
        sd[f"norm{i}.bias"] = torch.rand(dim)
    sd["head.weight"] = torch.randn(num_classes, dims[-1])
    sd["head.bias"] = torch.randn(num_classes)
    return sd


def test_van_b2_size_matches_brief():
    with torch.device("meta"):
        model = van_b2().eval()
        x = torch.empty(1, 3, 224, 224)
    params = sum(p.numel() for p in model.parameters())
    assert abs(params / 1e6 - 26.07) < 0.01  # brief §4.3, no head
    with FlopCounterMode(display=False) as counter:
        model(x)
    gmacs = counter.get_total_flops() / 2e9
    assert abs(gmacs - 4.99) / 4.99 < 0.05


def test_van_official_layout_loads_strictly(tmp_path):
    sd = official_van_state_dict("b0")
    path = tmp_path / "van_tiny_754.pth.tar"
    torch.save({"state_dict": sd, "epoch": 300, "args": argparse.Namespace(model="van_b0")}, path)

    headless = van_b0()
    load_van_checkpoint(headless, path)
    own = headless.state_dict()
    assert all(torch.equal(own[k], v) for k, v in sd.items() if not k.startswith("head."))

    classifier = van_b0(num_classes=1000)
    load_van_checkpoint(classifier, path)
    assert torch.equal(classifier.head.weight, sd["head.weight"])
    assert classifier.classify(torch.rand(1, 3, 64, 64)).shape == (1, 1000)

    with pytest.raises(WeightsError, match="missing.*patch_embed1.proj.weight"):
        partial = {k: v for k, v in sd.items() if not k.startswith("patch_embed1.")}
        torch.save({"state_dict": partial}, tmp_path / "partial.pth")
        load_van_checkpoint(van_b0(), tmp_path / "partial.pth")
    with pytest.raises(WeightsError, match="mismatched"):
        load_van_checkpoint(van_b1(), path)


def test_van_taps_shapes():
    taps = van_b0()(torch.rand(2, 3, 64, 64))
    assert [tuple(t.shape) for t in taps] == [(2, 32, 16, 16), (2, 64, 8, 8), (2, 160, 4, 4), (2, 256, 2, 2)]


@pytest.fixture(scope="module", params=["lite", "paper"])
def model(request):
    torch.manual_seed(0)
    return mfenet.build(request.param)


def test_forward_backward_and_frozen_dan(model):
    model.train()
    assert not model.dan.training  # frozen DAN stays in eval mode: its BN statistics never move
    bn_before = {k: v.clone() for k, v in model.dan.state_dict().items() if "running" in k}
    out = model(torch.randn(2, 3, 64, 64))
    assert out.shape == (2,)
    out.sum().backward()
    assert all(p.grad is None for p in model.dan.parameters())
    for part in (model.qen, model.hfen, model.aff, model.ffm, model.head):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in part.parameters())
    assert all(torch.equal(v, model.dan.state_dict()[k]) for k, v in bn_before.items())
    model.zero_grad(set_to_none=True)


def test_frame_protocol_grid():
    assert mfenet.build("lite").crops_per_frame == 10
    tops, lefts = centred_grid(1080, 1920, 10)
    assert (len(tops), len(lefts)) == (2, 5)
    assert len({(t, l) for t in tops for l in lefts}) == 10
    assert all(0 <= t <= 1080 - 224 for t in tops) and all(0 <= l <= 1920 - 224 for l in lefts)
    assert [len(a) for a in centred_grid(512, 512, 10)] == [3, 3]
    assert centred_grid(224, 224, 10) == ([0], [0])


def test_score_frames_small_frames_lite():
    model = mfenet.build("lite").eval()
    model.crops_per_frame = 2  # keeps the CPU test light; the default grid is tested above
    frames = torch.rand(2, 3, 120, 200)  # short side below 224: upscaled first, to 224×373
    crops, per_frame = model.crops(frames)
    assert crops.shape == (2 * per_frame, 3, 224, 224) and per_frame == 2
    assert not torch.equal(crops[0], crops[1])  # distinct positions
    with torch.no_grad():
        scores = model.score_frames(frames)["quality"]
        single = model.score_frames(frames[1:])["quality"]
    assert scores.shape == (2,) and torch.isfinite(scores).all()
    assert torch.allclose(scores[1], single[0], atol=1e-5)  # batching across frames changes nothing
    assert not model.trained and model.info.native_range == (0.0, 1.0)


def test_loss_decreases_on_tiny_batch():
    """It learns two labelled images: judged over the last steps, not one step, since the path there
    (BatchNorm on a batch of two, AdamW) differs with the CPU's arithmetic (AMD vs Intel)."""
    torch.manual_seed(0)
    model = mfenet.build("lite").train()
    x = torch.randn(2, 3, 64, 64)
    mos = torch.tensor([0.2, 0.8])
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    losses = []
    for _ in range(20):
        loss = mfenet_loss(model(x), mos, rank_weight=0.5)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-5:]) / 5 < 0.5 * losses[0], losses
    with torch.no_grad():
        pred = model(x).flatten()
    assert pred[0] < pred[1]  # the order of the labels is learnt


def test_rank_term_prefers_correct_order():
    mos = torch.tensor([0.4, 0.6])
    ordered, tied = torch.tensor([0.3, 0.7]), torch.tensor([0.5, 0.5])
    assert mfenet_loss(ordered, mos) == pytest.approx(mfenet_loss(tied, mos).item())
    assert mfenet_loss(ordered, mos, rank_weight=1.0) < mfenet_loss(tied, mos, rank_weight=1.0)


def test_paper_backbones_from_directory(tmp_path):
    torch.save({"state_dict": official_van_state_dict("b2")}, tmp_path / mfenet.VAN_FILE)
    tv = {k: v for k, v in resnet50().state_dict().items() if not k.startswith("fc.")}
    names = {v: k for k, v in mfenet.CONTRIQUE_TO_TORCHVISION.items()}
    contrique = {f"encoder.{names[k.split('.', 1)[0]]}.{k.split('.', 1)[1]}": v for k, v in tv.items()}
    contrique["projector.0.weight"] = torch.randn(8, 2048)
    torch.save(contrique, tmp_path / mfenet.CONTRIQUE_FILE)

    model = mfenet.build("paper", backbone_weights=str(tmp_path))
    assert torch.equal(model.dan.layer3[2].conv2.weight, tv["layer3.2.conv2.weight"])
    assert torch.equal(model.dan_std.flatten(), torch.ones(3))  # CONTRIQUE: plain [0, 1] input
    assert "van_base_828" in model.info.backbone and "CONTRIQUE" in model.info.backbone

    (tmp_path / mfenet.CONTRIQUE_FILE).unlink()
    torch.save(tv, tmp_path / "resnet50-0676ba61.pth")
    model = mfenet.build("paper", backbone_weights=str(tmp_path))
    assert torch.allclose(model.dan_std.flatten(), torch.tensor([0.229, 0.224, 0.225]))


def test_channels_last_matches_contiguous_lite():
    """The CUDA path runs channels_last; bf16/fp16 autocast is checked on the GPU (CPU bf16 is too slow here)."""
    model = mfenet.build("lite").eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        plain = model(x)
        fast = model.to(memory_format=torch.channels_last)(x.contiguous(memory_format=torch.channels_last))
    assert torch.allclose(plain, fast, atol=1e-4)
