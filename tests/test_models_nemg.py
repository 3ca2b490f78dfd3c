"""NEMG: official layout and cost of the paper variant, shapes, gradients, the loss, the frame protocol."""
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from models.crops import grid_crops
from models.nemg import NEMG, build
from pipelines.train.losses import nemg_loss as training_loss


@pytest.fixture(scope="module")
def paper():
    return build("paper")


@pytest.fixture(scope="module")
def lite():
    return build("lite")


def test_paper_layout_and_cost(paper):
    sd = paper.state_dict()
    assert len(sd) == 363
    assert {"predict_net.mse_conv1.conv.weight", "predict_net.h5.conv.bias", "regression.0.weight",
            "downsample_filter.filter.bias", "predict_net.upsample_filter.filter.weight"} <= sd.keys()
    assert sum(p.numel() for p in paper.parameters()) == pytest.approx(27.18e6, rel=0.002)
    meta = NEMG("paper").to("meta").eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        meta(torch.empty(1, 3, 224, 224, device="meta"))
    assert counter.get_total_flops() / 2e9 == pytest.approx(13.49, rel=0.05)


@pytest.mark.parametrize("variant", ["paper", "lite"])
def test_forward_backward_shapes(variant, request):
    model = request.getfixturevalue(variant).train()
    x, ref = torch.randn(2, 3, 128, 128), torch.randn(2, 3, 128, 128)  # normalised crops
    out = model.forward_train(x, ref)
    assert out["score"].shape == (2,)
    assert out["m_mse"].shape == out["m_ssim"].shape == out["e4"].shape == (2, 1, 32, 32)
    assert out["sensitivity"].shape == (2, 2, 16, 16)
    training_loss(out, torch.rand(2)).backward()
    trunk = model.resnet.conv1 if variant == "paper" else model.lite0.conv_stem
    for p in (trunk.weight, model.predict_net.mse_conv1.conv.weight, model.regression[0].weight):
        assert p.grad is not None and p.grad.abs().sum() > 0
    assert model.downsample_filter.filter.weight.grad is None  # fixed filters are buffers
    model.zero_grad()


def test_loss_decreases_on_tiny_batch():
    torch.manual_seed(0)  # seeded head init: some inits start with dead ReLU maps that learn slowly
    model = build("lite").eval()  # BatchNorm on running statistics: a batch of 2 has none worth using
    d = torch.rand(2, 3, 96, 96)
    r = (d + 0.1 * torch.randn_like(d)).clamp(0, 1)
    x, ref = ((t - model.mean) / model.std for t in (d, r))
    mos = torch.tensor([0.2, 0.8])
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    losses = []
    for _ in range(3):
        loss = training_loss(model.forward_train(x, ref), mos)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0], losses


def test_error_map_target_is_fidelity(lite):
    x, y = torch.randn(2, 1, 3, 64, 64)
    same = lite.error_map_target(x, x)[..., 2:-2, 2:-2]  # D zero-pads, which dims the outer rings
    assert torch.allclose(same, torch.ones_like(same), atol=1e-5)
    assert lite.error_map_target(x, y).mean() < 0.6


def test_frame_protocol_is_a_deterministic_corner_to_corner_grid():
    frame = torch.rand(1, 3, 300, 500)
    crops = grid_crops(frame, 224, 3, 3)
    assert crops.shape == (9, 3, 224, 224)
    assert torch.equal(crops[0], frame[0, :, :224, :224]) and torch.equal(crops[8], frame[0, :, -224:, -224:])
    assert torch.equal(crops[4], frame[0, :, 38:262, 138:362])
    assert len({c.sum().item() for c in crops}) == 9
    assert torch.equal(grid_crops(frame, 224, 3, 3), crops)


def test_whole_frame_of_any_size_and_autocast_channels_last():
    torch.manual_seed(0)
    model = build("lite").eval()
    model.grid = None
    frames = torch.rand(2, 3, 100, 130).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        fp32 = model.score_frames(frames)["quality"]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            bf16 = model.score_frames(frames)["quality"]
    assert fp32.shape == bf16.shape == (2,)
    assert torch.isfinite(bf16).all()
    assert torch.allclose(fp32, bf16.float(), atol=0.01, rtol=0.03)  # bf16 keeps ~3 digits through random heads


def test_reconstruction_flags():
    model = NEMG("lite", replicate_init_bug=True, gray_on_normalised=True)
    binomial = model.downsample_filter.filter.weight
    assert not torch.allclose(model.predict_net.downsample_filter.filter.weight, binomial)
    assert binomial.sum().item() == pytest.approx(1.0)
    x = torch.rand(1, 3, 64, 64)
    # gray of the normalised tensor: differences scaled by ~1/0.226, so the fidelity map drops further
    assert model.error_map_target(x, x + 0.01).mean() < build("lite").error_map_target(x, x + 0.01).mean()
