"""GSN: CDC definition and exact folding, shapes and gradients, the MSE + batch-KL loss."""
import copy

import pytest
import torch
from torch import nn

from models.gsn import CDConv2d, build
from pipelines.train.losses import gsn_loss as training_loss


@pytest.fixture(scope="module")
def models():
    return {"lite": build("lite"), "paper": build("paper")}


def test_cdc_is_a_central_difference():
    conv = nn.Conv2d(3, 4, 3, padding=1)
    cdc = CDConv2d(conv, theta=1.0)
    flat = torch.full((1, 3, 8, 8), 0.37)
    out = cdc(flat)[..., 1:-1, 1:-1]  # interior: all neighbours equal the centre, so the difference vanishes
    assert torch.allclose(out, conv.bias.view(1, 4, 1, 1).expand_as(out), atol=1e-6)
    x = torch.randn(1, 3, 8, 8)
    assert torch.allclose(CDConv2d(conv, theta=0.0)(x), conv(x))


@pytest.mark.parametrize("variant", ["lite", "paper"])
def test_folded_and_unfolded_agree(models, variant):
    model = copy.deepcopy(models[variant]).eval()  # float32: CPU depthwise convs in float64 take minutes
    n_cdc = sum(isinstance(m, CDConv2d) for m in model.modules())
    assert n_cdc == (7 if variant == "paper" else 4)
    x, ref = torch.randn(2, 2, 3, 64, 64)
    with torch.no_grad():
        before = model(x, ref)
        keys = list(model.state_dict())
        after = model.fold()(x, ref)
    assert not any(isinstance(m, CDConv2d) for m in model.modules())
    assert list(model.state_dict()) == keys
    assert torch.allclose(before, after, atol=1e-5, rtol=0)


@pytest.mark.parametrize("variant", ["lite", "paper"])
def test_forward_backward_shapes(models, variant):
    model = models[variant].train()
    x, ref = torch.randn(2, 2, 3, 64, 64)
    pred = model(x, ref)
    assert pred.shape == (2,)
    training_loss(pred, torch.tensor([0.3, 0.7])).backward()
    cdc = next(m for m in model.modules() if isinstance(m, CDConv2d))
    for p in (cdc.weight, model.attention[0].conv.weight, model.head[2].weight):
        assert p.grad is not None and p.grad.abs().sum() > 0
    model.zero_grad()


def test_identical_pair_has_zero_difference_feature(models):
    model = models["lite"].eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        levels = model.lite0(torch.cat([x, x]))
    assert all(torch.equal(f[0], f[1]) for f in levels)


def test_batch_kl_term():
    mos = torch.tensor([0.1, 0.4, 0.5, 0.9])
    assert training_loss(mos, mos).item() == pytest.approx(0.0, abs=1e-6)
    # the KL term is invariant to affine rescaling of the predictions; the ranking matters
    affine = training_loss(2 * mos + 1, mos) - torch.nn.functional.mse_loss(2 * mos + 1, mos)
    assert affine.item() == pytest.approx(0.0, abs=1e-5)
    assert training_loss(mos.flip(0), mos).item() > training_loss(mos, mos).item() + 0.1


def test_loss_decreases_on_tiny_batch():
    torch.manual_seed(0)
    model = build("lite").train()
    ref = torch.randn(4, 3, 64, 64)  # normalised crops
    x = ref + torch.tensor([0.1, 1.0, 0.5, 0.3]).view(4, 1, 1, 1) * torch.randn_like(ref)
    mos = torch.tensor([0.9, 0.1, 0.5, 0.7])
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    losses = []
    for _ in range(3):
        loss = training_loss(model(x, ref), mos)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0], losses


def test_score_frames_needs_refs_and_is_deterministic(models):
    model = models["lite"].eval()
    frames, refs = torch.rand(2, 1, 3, 240, 320)
    with pytest.raises(ValueError, match="full-reference"):
        model.score_frames(frames)
    with torch.inference_mode():
        a = model.score_frames(frames, refs)["quality"]
        b = model.score_frames(frames, refs)["quality"]
    assert a.shape == (1,) and torch.equal(a, b)


def test_autocast_channels_last(models):
    model = models["lite"].eval()
    x, ref = (t.contiguous(memory_format=torch.channels_last) for t in torch.randn(2, 2, 3, 96, 96))
    with torch.inference_mode():
        fp32 = model(x, ref)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            bf16 = model(x, ref)
    assert bf16.shape == (2,) and torch.isfinite(bf16).all()
    # random heads sum many cancelling terms, so bf16's ~3 digits show as an absolute error of a few 1e-3
    assert torch.allclose(fp32, bf16.float(), atol=0.03, rtol=0)


def test_pixel_fidelity_features_see_what_the_trunk_pools_away():
    """Identical crops read SSIM 1, GMSD 0 and the PSNR cap at every scale; mild noise lowers all three."""
    from models.gsn import FIDELITY_SCALES, fidelity

    ref = torch.rand(2, 3, 96, 96)
    same = fidelity(ref, ref)
    assert torch.allclose(same[:, :-1].view(2, len(FIDELITY_SCALES), 3), torch.tensor([1.0, 0.0, 2.0]).expand(2, 3, 3), atol=1e-4)
    noise = 0.05 * torch.randn(ref.shape, generator=torch.Generator().manual_seed(0))  # ~40 dB even at scale 1/4
    noisy = fidelity((ref + noise).clamp(0, 1), ref)[:, :-1].view(2, len(FIDELITY_SCALES), 3)
    assert (noisy[..., 0] < 1).all() and (noisy[..., 1] > 0).all() and (noisy[..., 2] < 1).all()


def test_the_last_fidelity_feature_is_the_reference_motion_capped():
    """No motion given means a still (0); VMAF motion reads /10 up to MOTION_CAP, so a cut or a whip pan that
    VMAF's own term has long stopped rewarding does not push the score further."""
    from models.gsn import MOTION_CAP, fidelity

    ref = torch.rand(3, 3, 64, 64)
    assert fidelity(ref, ref)[:, -1].tolist() == [0.0, 0.0, 0.0]
    moved = fidelity(ref, ref, torch.tensor([4.0, MOTION_CAP, 80.0]))[:, -1]
    assert moved.tolist() == pytest.approx([0.4, MOTION_CAP / 10, MOTION_CAP / 10])


def test_weights_without_the_motion_input_ignore_it():
    """gsn-lite v5–v8 files (nine fidelity features, no motion) load with a zero head weight on the motion
    input: the reference's motion changes nothing, as in the model they were trained in."""
    from models.gsn import GSN

    older = GSN("lite").eval()
    state = older.state_dict()
    state["head.0.weight"] = state["head.0.weight"][:, :-1]
    model = GSN("lite").eval()
    model.load_state_dict(model.adapt_state_dict(state))
    frames, refs = torch.rand(2, 2, 3, 256, 256)
    with torch.no_grad():
        still, moving = (model.score_frames(frames, refs, m)["quality"] for m in (None, torch.tensor([12.0, 3.0])))
        told = older.score_frames(frames, refs, torch.tensor([12.0, 3.0]))["quality"]
    assert torch.equal(still, moving) and not torch.allclose(told, moving)


def test_gmsd_of_the_fidelity_branch_is_piqs():
    """GSN-lite's fast GMSD (Prewitt by shifted slices, on the branch's halved luma) is piq's GMSD, odd sizes
    (zero-padded before halving) included."""
    import piq
    from models.gsn import _gmsd, _halve
    from skimage import data

    ref = torch.from_numpy(data.camera()[:333, :250]).float()[None, None]  # 8-bit units, odd height
    x = (ref + 12 * torch.randn(ref.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 255)
    ours = _gmsd(_halve(x), _halve(ref))
    torch.testing.assert_close(ours, piq.gmsd(x / 255, ref / 255, reduction="none"), rtol=1e-4, atol=1e-6)
    assert ours.item() > 0.05 and _gmsd(_halve(ref), _halve(ref)).item() < 1e-6


def test_weights_without_the_fidelity_branch_score_as_before():
    """gsn-lite v1–v3 files load into the model with the branch: zero head weights on its inputs, so the
    scores are those of the model they were trained in."""
    from models import registry
    from models.gsn import FIDELITY_FEATURES
    from models.table import WEIGHTS_DIR

    model = registry.create("gsn", weights=str(WEIGHTS_DIR / "v1" / "gsn-lite.safetensors"))
    x, ref = torch.rand(2, 3, 3, 224, 224)
    with torch.no_grad():
        with_branch = model(model.crops(x)[0], model.crops(ref)[0])
        model.pixel_fidelity = False
        model.head[0].weight.data = model.head[0].weight.data[:, :-FIDELITY_FEATURES]
        without = model(model.crops(x)[0], model.crops(ref)[0])
    torch.testing.assert_close(with_branch, without, rtol=1e-5, atol=1e-6)


def test_damage_between_the_crops_lowers_the_score():
    """The lite fidelity features are read over the whole frame: noise in a band that none of the nine crops
    covers (x 240–510 of a 1280×720 frame) still lowers the shipped model's score."""
    from models import registry
    from skimage import data, transform

    model = registry.create("gsn")
    ref = torch.from_numpy(transform.resize(data.astronaut(), (720, 1280), anti_aliasing=True)).permute(2, 0, 1)[None].float()
    damaged = ref.clone()
    damaged[..., 240:510] = (damaged[..., 240:510] + 0.1 * torch.randn(1, 3, 720, 270, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    assert torch.equal(model.crops(damaged)[0], model.crops(ref)[0])
    with torch.no_grad():
        same, worse = (model.normalise(model.score_frames(d, ref)["quality"]).item() for d in (ref, damaged))
    assert worse < same - 5


def test_without_distorted_features_trains_on_the_difference_only(models):
    """gsn-lite's recipe zeroes the fusion weights on F_d (the distorted crop's own look) and they stay zero
    through AdamW steps with weight decay, while the weights on Δ' learn; the shipped default has them at zero."""
    from models import registry

    model = copy.deepcopy(models["lite"]).without_distorted_features()
    before = [p.weight.detach().clone() for p in model.project]
    optimizer = torch.optim.AdamW(model.project.parameters(), lr=1e-2, weight_decay=1e-2)
    x, ref = torch.rand(2, 4, 3, 96, 96)
    for _ in range(2):
        optimizer.zero_grad()
        training_loss(model(x, ref), torch.tensor([0.2, 0.4, 0.6, 0.8])).backward()
        optimizer.step()
    for project, old in zip(model.project, before):
        c = project.in_features // 2
        assert project.weight[:, :c].abs().max() == 0 and not torch.equal(project.weight[:, c:], old[:, c:])
    shipped = registry.create("gsn")
    assert all(p.weight[:, : p.in_features // 2].abs().max() == 0 for p in shipped.project)
