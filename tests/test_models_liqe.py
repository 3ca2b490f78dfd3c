"""LIQE: prompts, frame protocols, official checkpoint layouts, cost, shapes, gradients, losses."""
import open_clip
import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from models.crops import unfold_positions
from models.liqe import DISTORTIONS, FINE_TO_COARSE_DISTORTION, SCENES, adaptive_resize, build, joint_prompts, quality_prompts
from models.weights import WeightsError, load
from pipelines.train.losses import DynamicWeightAverage, distortion_fidelity_loss, fidelity_rank_loss, scene_fidelity_loss, liqe_loss as training_loss

# The brief's worked 1080p example (MODELS.md §3.6): top-left corners (y, x) on the 1365×768 resize.
PAPER_1080P_CORNERS = [(0, 0), (0, 912), (48, 672), (96, 432), (144, 192), (144, 1104), (192, 864), (240, 624),
                       (288, 384), (336, 144), (336, 1056), (384, 816), (432, 576), (480, 336), (528, 96)]


@pytest.fixture(scope="module")
def paper():
    """The paper model with the 5 quality-only prompts: its text tower is cheap to run on CPU."""
    return build("paper", labels="quality")


@pytest.fixture(scope="module")
def lite():
    return build("lite")


def test_prompts_are_byte_exact():
    prompts = joint_prompts()
    assert len(prompts) == len(set(prompts)) == 495
    assert prompts[0] == "a photo of a animal with jpeg2000 compression artifacts, which is of bad quality"
    q, c, d = 3, SCENES.index("still_life"), DISTORTIONS.index("noise")
    assert prompts[q * 99 + c * 11 + d] == "a photo of a still_life with noise artifacts, which is of good quality"
    assert quality_prompts()[4] == "a photo with perfect quality"
    assert len(FINE_TO_COARSE_DISTORTION) == 33 and set(FINE_TO_COARSE_DISTORTION.values()) == set(DISTORTIONS)


def test_paper_protocol_at_1080p(paper):
    frame = torch.rand(1, 3, 1080, 1920)
    resized = adaptive_resize(frame, 768)
    assert resized.shape[-2:] == (768, 1365)
    positions = paper.crop_positions(768, 1365)
    assert positions == PAPER_1080P_CORNERS and len(set(positions)) == 15
    x, p = paper.crops(frame)
    assert p == 15 and x.shape == (15, 3, 224, 224)
    y0, x0 = positions[5]
    expected = (resized[0, :, y0 : y0 + 224, x0 : x0 + 224] - paper.mean[0]) / paper.std[0]
    torch.testing.assert_close(x[5], expected)
    assert len(unfold_positions(720, 1280, 48)) == 253  # 720p: not resized, stride 48
    assert paper.crops(torch.rand(1, 3, 100, 150))[0].shape[-2:] == (224, 224)  # small frames are upscaled


def test_lite_protocol_covers_the_frame(lite):
    positions = lite.crop_positions(768, 1365)
    assert positions == [(0, 0), (0, 570), (0, 1141), (544, 0), (544, 570), (544, 1141)]
    assert len(lite.crop_positions(1365, 768)) == 6  # portrait: 3 rows × 2 columns
    assert lite.crop_positions(224, 224) == [(0, 0)]
    _, n = lite.crops(torch.rand(1, 3, 1080, 1920))  # native pixels: a 1080p frame is not resized (its compression
    assert n == 6 and lite.crop_positions(1080, 1920)[-1] == (856, 1696)  # damage would shrink with it)


def test_joint_prompts_tokenize_offline():
    tokens = open_clip.get_tokenizer("ViT-B-32-quickgelu")(joint_prompts())  # BPE vocab ships in the wheel
    assert tokens.shape == (495, 77) and len(set(map(tuple, tokens.tolist()))) == 495
    assert tokens.argmax(dim=-1).max() == 23  # longest prompt + EOT: the text tower runs 24 tokens, not 77
    assert open_clip.decode(tokens[0]).startswith("<start_of_text>a photo of a animal with jpeg 2 0 0 0 compression")


def test_tokenizer_and_truncated_text_tower_match_open_clip(paper):
    tokens = paper.prompt_tokens
    assert tokens[:, 0].eq(49406).all() and tokens.argmax(dim=-1).max() == tokens.shape[1] - 1  # SOT … EOT
    with torch.no_grad():
        full = torch.zeros(len(tokens), 77, dtype=tokens.dtype)
        full[:, : tokens.shape[1]] = tokens
        x = paper.token_embedding(full) + paper.positional_embedding
        causal = torch.full((77, 77), float("-inf")).triu(1)
        x = paper.ln_final(paper.transformer(x, attn_mask=causal))
        reference = F.normalize(x[torch.arange(len(full)), full.argmax(dim=-1)] @ paper.text_projection, dim=-1)
        torch.testing.assert_close(paper.encode_labels(), reference, atol=1e-5, rtol=1e-5)


def test_paper_image_tower_flops(paper):
    with torch.enable_grad(), FlopCounterMode(display=False) as counter:  # grad mode: no fused-MHA fast path
        paper.image_features(torch.rand(1, 3, 224, 224))
    assert counter.get_total_flops() / 2e9 == pytest.approx(4.36, rel=0.05)
    assert sum(p.numel() for p in paper.parameters()) == pytest.approx(151.28e6, rel=1e-3)


def test_official_layouts_load_strictly(paper, tmp_path):
    official = {k: v.detach().clone() for k, v in paper.state_dict().items()}
    assert len(official) == 302 and "visual.transformer.resblocks.11.mlp.c_proj.weight" in official
    official["text_projection"] += 0.01
    official = {k: v.half() if v.ndim > 1 else v for k, v in official.items()}  # the official file is mixed precision
    official["input_resolution"] = torch.tensor(224)  # OpenAI config entry, dropped on load
    torch.save(official, tmp_path / "LIQE.pt")
    with torch.no_grad():
        before = paper.label_features()
        paper.load_checkpoint(tmp_path / "LIQE.pt")
        assert paper.label_cache is None  # weights changed: text features recomputed
        assert not torch.allclose(paper.label_features(), before)
    assert paper.visual.proj.dtype == torch.float32
    torch.testing.assert_close(paper.text_projection.detach(), official["text_projection"].float())

    pyiqa = {"params": {f"clip_model.{k}": v for k, v in official.items() if k != "input_resolution"}}
    torch.save(pyiqa, tmp_path / "liqe_mix.pt")
    paper.load_checkpoint(tmp_path / "liqe_mix.pt")
    assert not paper.trained  # a starting point for training, not quality weights
    digest = load(paper, tmp_path / "liqe_mix.pt")  # the registry's path for weights=PATH: marks it trained
    assert paper.trained and paper.weights_sha256 == digest

    torch.save({"visual.proj": official["visual.proj"]}, tmp_path / "partial.pt")
    with pytest.raises(WeightsError, match=r"301 missing: .*ln_final\.bias"):
        paper.load_checkpoint(tmp_path / "partial.pt")


def test_paper_forward_backward(paper):
    paper.train()
    x, p = paper.crops(torch.rand(1, 3, 224, 256))  # two positions at stride 32
    assert p == 2 and x.shape == (2, 3, 224, 224)
    out = paper.predict(x, 1)
    assert out.keys() == {"quality"} and out["quality"].shape == (2,)
    assert ((out["quality"] >= 1) & (out["quality"] <= 5)).all()
    fidelity_rank_loss(out["quality"], torch.tensor([0.2, 0.7])).backward()
    assert paper.visual.conv1.weight.grad.abs().sum() > 0
    assert paper.token_embedding.weight.grad.abs().sum() > 0  # the text tower is fine-tuned too
    assert paper.logit_scale.grad is None and float(paper.logit_factor()) == pytest.approx(100.0)
    paper.zero_grad(set_to_none=True)
    paper.eval()


def test_lite_forward_backward_and_extras(lite):
    frames = torch.rand(1, 3, 224, 480)
    x, p = lite.crops(frames)
    assert p == 3 and x.shape == (3, 3, 224, 224)  # 224 high: one row of 3 crops
    with torch.no_grad():
        out = lite.score_frames(frames)
    assert out["quality"].shape == (1,) and out["scene"].shape == (1, 9) and out["distortion"].shape == (1, 11)
    assert 1 <= out["quality"] <= 5
    torch.testing.assert_close(out["scene"].sum(dim=1), torch.ones(1))
    assert lite.label_cache is not None and lite.label_cache.shape == (495, 256)

    lite.train()
    out = lite.predict(torch.randn(4, 3, 96, 96), 2)  # the CNN takes any crop size; small ones keep this fast
    assert out["quality"].shape == (2,)
    assert lite.label_cache is None  # a grad-enabled call drops the cache
    loss, terms = training_loss(out, torch.tensor([1.0, 2.0]), scenes=torch.tensor([[1.0] + [0] * 8] * 2),
                                distortions=torch.tensor([2, 3]))
    loss.backward()
    assert terms.keys() == {"quality", "scene", "distortion"}
    assert lite.quality_embed.grad.abs().sum() > 0 and lite.trunk.blocks[0][0].conv_dw.weight.grad.abs().sum() > 0
    lite.zero_grad(set_to_none=True)
    lite.eval()


def test_lite_under_bf16_autocast_channels_last(lite):
    x = torch.randn(2, 3, 64, 64).contiguous(memory_format=torch.channels_last)  # CPU bf16 convs are slow: tiny crops
    with torch.no_grad():
        reference = lite.predict(x, 1)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = lite.predict(x, 1)
    assert all(v.dtype == torch.float32 for v in out.values())
    torch.testing.assert_close(out["quality"], reference["quality"], atol=0.05, rtol=0)


def test_losses_decrease_on_a_tiny_batch():
    torch.manual_seed(0)
    model = build("lite").train()
    x, p = model.training_crops(torch.rand(4, 3, 240, 300), per_image=1, generator=torch.Generator().manual_seed(0))
    assert x.shape == (4, 3, 224, 224)
    x = F.interpolate(x, size=64)  # small crops keep the steps cheap on CPU
    mos, groups = torch.tensor([1.0, 3.0, 2.0, 4.0]), torch.tensor([0, 0, 1, 1])
    scenes = F.one_hot(torch.tensor([0, 3, 6, 8]), 9).float()
    distortions = torch.tensor([1, 3, 2, 10])
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(6):
        loss, _ = training_loss(model.predict(x, p), mos, groups, scenes, distortions)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_loss_values():
    q = torch.tensor([1.0, 5.0, 1.5, 4.5])
    right = torch.tensor([0.1, 0.9, 0.2, 0.8])
    # ordered right within each group, wrong across groups: cross-group pairs are not compared
    assert fidelity_rank_loss(q, torch.tensor([0.1, 0.9, 0.0, 1.0]), torch.tensor([0, 0, 1, 1])) < 0.01
    assert fidelity_rank_loss(q, -right) > 0.7
    assert fidelity_rank_loss(torch.ones(3), torch.tensor([1.0, 1.0, 1.0])) == pytest.approx(0, abs=1e-3)  # ties
    onehot = F.one_hot(torch.tensor([4]), 11).float()
    assert distortion_fidelity_loss(onehot, torch.tensor([4])) == pytest.approx(0, abs=2e-3)
    assert distortion_fidelity_loss(torch.full((1, 11), 1 / 11), torch.tensor([4])) == pytest.approx(1 - 11**-0.5, abs=2e-3)
    multi = torch.tensor([[1.0, 0, 1, 0, 0, 0, 0, 0, 0]])
    assert scene_fidelity_loss(multi, multi) == pytest.approx(0, abs=1e-3)
    assert scene_fidelity_loss(1 - multi, multi) == pytest.approx(1, abs=1e-3)


def test_dynamic_weight_average():
    dwa = DynamicWeightAverage()
    assert dwa.weights() == [1.0, 1.0, 1.0]
    dwa.end_epoch([1.0, 1.0, 1.0])
    assert dwa.weights() == [1.0, 1.0, 1.0]
    dwa.end_epoch([0.5, 1.0, 1.2])  # the task whose loss fell fastest gets the least weight
    w = dwa.weights()
    assert sum(w) == pytest.approx(3.0) and w[0] < w[1] < w[2]
