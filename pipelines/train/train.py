"""Training loops for the four quality models on a corpus (pipelines/train/corpus.py): `vqmon train MODEL`.

One loop serves every model; a `Recipe` says what differs: which parameters train, the label
scale, the batch and learning rate, and how a batch becomes a loss (each model's own
loss, in pipelines/train/losses.py). Lite recipes are built for a CPU: the ImageNet Lite0 trunk is cached up to its
stride-16 tap (pipelines/train/features.py); its last stages (blocks 5–6) and the heads train end
to end on top of that cache, and the shipped file holds only those tensors (the frozen rest comes
from the PyPI package). GSN-lite also trains its central-difference blocks 1–2, the part of its
trunk the brief makes gradient-aware, so its trunk runs on the cached 224 crops of both pictures
each step (about 0.7 s a step of 32 pairs on 2 CPU cores). Rank-trained recipes add a
within-source rank loss, which also lets the items VMAF cannot judge (exposure, colour, chroma
noise, sharpening) teach by their level.
Paper recipes train everything, at the brief's learning rates, and want a GPU.

Inputs: random 224 crops (the same position in distorted and reference image) with a random
horizontal flip, drawn from the corpus's VMAF-labelled training items. Fixed seeds: batch k is a
function of (seed, k) only, so a resumed run continues the same sequence. A checkpoint
(trainable tensors, optimizer, step) is written atomically every `checkpoint_every` steps and
at the end; rerunning the command resumes from it.
"""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from models import registry
from models.base import QualityModel
from models.weights import save
from monitor.errors import InputError
from monitor.scoring.scorers import keep_large_tensors_in_heap
from pipelines.train import corpus as corpus_mod
from pipelines.train import evaluate, features, losses
from pipelines.train.metrics import correlations

CROP = 224


@dataclass(frozen=True)
class Recipe:
    trainable: tuple[str, ...]  # parameter-name prefixes that train; None of them = everything trains
    lr: float
    batch: int
    steps: int
    weight_decay: float = 1e-4
    backbone_lr_scale: float = 0.1  # lr factor of trainable tensors inside the pretrained backbone
    pretrained: tuple[str, ...] = ()  # prefixes of the modules the model builds from pretrained weights
    rank_weight: float = 0.0  # weight of the within-source rank loss; > 0 also trains on rank-only items
    tuned: tuple[str, ...] = ()  # trunk attributes whose last stages (blocks 5–6) fine-tune from the cached taps


# Lite: the heads on a frozen ImageNet Lite0 (trained from the feature cache). Paper: everything, backbone at
# a tenth (brief §2, §4, §5), on pixels.
RECIPES: dict[tuple[str, str], Recipe] = {
    ("nemg", "lite"): Recipe(("res_out.", "predict_net.", "regression."), 1e-4, 8, 400, 1e-4, pretrained=("lite0.",)),
    ("gsn", "lite"): Recipe(("attention.", "project.", "head.", "lite0.blocks.1.", "lite0.blocks.2.", "lite0.blocks.5.",
                             "lite0.blocks.6."), 1e-3, 32, 6000, 1e-2, pretrained=("lite0.",), rank_weight=1.0),
    # MFENet's pixel branch reads noise as detail: at rank_weight 1 or 2 it scored σ 8 noise above the clean picture
    # (tests/test_train.py's noise ladder); 4 teaches the order, and 1600 steps win back the VMAF fit.
    ("mfenet", "lite"): Recipe(("hfen.", "aff.", "ffm.", "head.", "qen.blocks.5.", "qen.blocks.6."), 1e-3, 16, 1600,
                               1e-2, pretrained=("qen.", "dan."), rank_weight=4.0, tuned=("qen",)),
    ("liqe", "lite"): Recipe(("project.", "quality_embed", "scene_embed", "distortion_embed", "mix.", "logit_scale",
                              "trunk.blocks.5.", "trunk.blocks.6."), 1e-3, 32, 4000, 1e-2, pretrained=("trunk.",),
                             rank_weight=1.0, tuned=("trunk",)),
    ("nemg", "paper"): Recipe((), 2e-4, 40, 20000, weight_decay=1e-3, pretrained=("resnet.",)),
    ("gsn", "paper"): Recipe((), 1e-4, 32, 20000, pretrained=("resnet.",)),
    ("mfenet", "paper"): Recipe(("qen.", "hfen.", "aff.", "ffm.", "head."), 1e-4, 32, 20000, pretrained=("qen.", "dan.")),
    ("liqe", "paper"): Recipe(("clip.",), 5e-6, 48, 16000, weight_decay=1e-3),
}



def label_scale(model: QualityModel, vmaf: torch.Tensor) -> torch.Tensor:
    """VMAF (0–100) → the model's native scale: [0, 1] for NEMG/MFENet/GSN, levels 1–5 for LIQE."""
    lo, hi = model.info.native_range
    return lo + (hi - lo) * vmaf / 100.0


# --- data --------------------------------------------------------------------------------------
class CropSampler:
    """Random co-located 224 crops of (distorted, reference) training items; batch k depends on (seed, k) only."""

    def __init__(self, root: Path, rows: list[dict], seed: int) -> None:
        if not rows:
            raise InputError(f"{root}: the corpus has no VMAF-labelled training items")
        self.root, self.rows, self.seed = root, rows, seed

    def batch(self, step: int, size: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng([self.seed, step])
        dist, ref, vmaf, coarse = [], [], [], []
        for i in rng.choice(len(self.rows), size=size, replace=False):
            row = self.rows[int(i)]
            d, r = corpus_mod.read_rgb(self.root / row["path"]), corpus_mod.read_rgb(self.root / row["ref_path"])
            h, w = d.shape[:2]
            if min(h, w) < CROP:
                raise InputError(f"{self.root / row['path']}: {w}x{h} is smaller than the {CROP} training crop")
            top, left = int(rng.integers(h - CROP + 1)), int(rng.integers(w - CROP + 1))
            flip = bool(rng.integers(2))
            for img, out in ((d, dist), (r, ref)):
                c = img[top:top + CROP, left:left + CROP]
                out.append(c[:, ::-1] if flip else c)
            vmaf.append(row["vmaf"])
            coarse.append(losses.DISTORTION_INDEX.get(row["coarse"], -1))
        as_tensor = lambda xs: torch.from_numpy(np.ascontiguousarray(np.stack(xs))).permute(0, 3, 1, 2).float() / 255  # noqa: E731
        return {"dist": as_tensor(dist), "ref": as_tensor(ref), "vmaf": torch.tensor(vmaf, dtype=torch.float32),
                "coarse": torch.tensor(coarse)}


# --- per-model losses ----------------------------------------------------------------------------
def _normalised(model: QualityModel, x: torch.Tensor) -> torch.Tensor:
    mean = getattr(model, "mean", None)
    if mean is None:
        mean, std = model.input_mean, model.input_std
    else:
        std = model.std
    return (x - mean) / std


def start_nemg(model: QualityModel) -> None:
    """Start NEMG's 1×1 regression near the label mean with a small slope.

    From Kaiming init the score starts near 1.2 on labels averaging 0.5; the quickest way down is
    to push the ReLU sensitivity map below zero everywhere, after which it never recovers (a
    constant score). Starting at the mean leaves the maps alive to learn.
    """
    with torch.no_grad():
        model.regression[0].weight.mul_(0.1)
        model.regression[0].bias.fill_(0.5)


RANK_TEMPERATURE = 0.05  # a 5-point (of 100) score gap makes a pair's order ~73 % sure
PER_SOURCE = 4  # items of one source in a rank-trained batch, so the batch holds rank pairs


def unit_score(model: QualityModel, pred: torch.Tensor) -> torch.Tensor:
    """The model's native prediction on 0–1, higher better (the scale of label_scale inverted)."""
    lo, hi = model.info.native_range
    return (pred.float() - lo) / (hi - lo)


def within_source_rank_loss(score: torch.Tensor, b: dict[str, torch.Tensor]) -> torch.Tensor:
    """Logistic loss on the pairs of one source whose order is known without a teacher (RankIQA's idea):
    the pristine item beats every distorted one, a weaker level of an ordered distortion beats a
    stronger one, and two VMAF-labelled items 10+ points apart keep VMAF's order."""
    same = b["group"][:, None] == b["group"][None, :]
    lvl, fam, vm = b["level"], b["family"], b["vmaf"]
    pristine_first = (lvl[:, None] == 0) & (lvl[None, :] > 0)
    level_order = (fam[:, None] == fam[None, :]) & b["ordered"][:, None] & (lvl[:, None] > 0) & (lvl[:, None] < lvl[None, :])
    vmaf_order = (vm[:, None] - vm[None, :]) > 10  # NaN compares False: rank-only items take no part
    better = same & (pristine_first | level_order | vmaf_order)
    if not better.any():
        return score.sum() * 0
    i, j = better.nonzero(as_tuple=True)
    return F.softplus(-(score[i] - score[j]) / RANK_TEMPERATURE).mean() * RANK_TEMPERATURE


def loss_nemg(model, b):
    out = model.forward_train(_normalised(model, b["dist"]), _normalised(model, b["ref"]))
    return losses.nemg_loss(out, label_scale(model, b["vmaf"])), out["score"]


def _labelled(b: dict[str, torch.Tensor]) -> torch.Tensor | None:
    """Mask of the VMAF-labelled items of a batch; None when fewer than two (the teacher terms need pairs)."""
    m = b["vmaf"].isfinite()
    return m if int(m.sum()) >= 2 else None


def loss_gsn(model, b):
    pred = model(_normalised(model, b["dist"]), _normalised(model, b["ref"]), b.get("frame_fidelity"))
    m = _labelled(b)
    return (pred.sum() * 0 if m is None else losses.gsn_loss(pred[m], label_scale(model, b["vmaf"][m]))), pred


def loss_mfenet(model, b):
    pred = model(_normalised(model, b["dist"]))
    m = _labelled(b)
    if m is None:
        return pred.sum() * 0, pred
    return losses.mfenet_loss(pred[m], label_scale(model, b["vmaf"][m]), rank_weight=1.0), pred


def loss_liqe(model, b):
    """LIQE's ranking + distortion-type fidelity losses, plus an L1 on the expected level.

    The ranking loss alone fixes order, not scale; the L1 term ties the expected level to the
    teacher so the 0–100 score is calibrated (our addition, for monitoring). Pristine items have
    no distortion class and are left out of that term; rank-only items (no VMAF) feed only the
    distortion term and the within-source rank loss.
    """
    out = model.predict(_normalised(model, b["dist"]), 1)
    m = _labelled(b)
    total = out["quality"].sum() * 0
    if m is not None:
        target = label_scale(model, b["vmaf"][m])
        total = losses.liqe_loss({"quality": out["quality"][m]}, target)[0] + F.l1_loss(out["quality"][m], target)
    distorted = b["coarse"] >= 0
    if "distortion" in out and distorted.any():
        total = total + losses.distortion_fidelity_loss(out["distortion"][distorted], b["coarse"][distorted])
    return total, out["quality"]


LOSSES: dict[str, Callable] = {"nemg": loss_nemg, "gsn": loss_gsn, "mfenet": loss_mfenet, "liqe": loss_liqe}
# Trunk attributes replayed from cached taps. Not GSN's: its CDC blocks 1–2 train, so it runs on the cached pixels.
TRUNKS = {"nemg": ("lite0",), "mfenet": ("qen", "dan"), "liqe": ("trunk",)}
_TAPS = tuple(f"tap{t}" for t in features.TAPS)


GRAD_CLIP = 1.0  # NEMG's 1000×/50×/150× loss weights otherwise kill its ReLU error maps in a few steps
AUG_CROP = 160  # training sub-crop of a cached 224 crop; its offsets are multiples of the trunk's largest stride
AUG_OFFSETS = (0, 32, 64)


def _sub_crop(t: torch.Tensor, top: int, left: int, flip: bool) -> torch.Tensor:
    """The AUG_CROP window at (top, left) in pixels of a cached crop or of one of its tap maps (any stride)."""
    stride = CROP // t.shape[-1]
    size = AUG_CROP // stride
    t = t[..., top // stride: top // stride + size, left // stride: left // stride + size]
    return t.flip(-1) if flip else t


def cached_batch(name: str, cache: features.FeatureCache, idx: np.ndarray,
                 rng: np.random.Generator) -> tuple[dict, list[torch.Tensor]]:
    """A batch from the feature cache: pixel inputs where the model reads pixels beside its trunk, and the trunk taps
    (none for GSN, whose trunk trains and runs on the pixels).

    Augmentation without recomputing the trunk: one AUG_CROP window (offsets on the 32 px grid, so
    every tap map has the window on its own grid) and a horizontal flip, applied alike to the pixels
    and every tap. Convolutional features of a sub-crop are close to the sub-window of the crop's
    features (they differ near the borders), and every head pools over space, so the heads see 18
    views of each cached crop instead of one.
    """
    top, left = (int(v) for v in rng.choice(AUG_OFFSETS, size=2))
    flip = bool(rng.integers(2))
    if name == "nemg":  # Hf and the error-map target read pixels; the trunk gives tap 1 and the OS16 tap 4
        names = ("pixels", "ref_pixels", "tap1", "tap4_os16")
    elif name == "mfenet":  # the high-frequency branch reads pixels; QEN and DAN are the same frozen Lite0
        names = ("pixels", *_TAPS)
    elif name == "gsn":  # its CDC blocks train, so the siamese trunk runs on both crops; the fidelity branch
        names = ("pixels", "ref_pixels")  # reads its frame's cached statistics
    else:
        names = _TAPS
    b = cache.batch(idx, names + (("frame_fidelity",) if name == "gsn" else ()))
    b.update({k: _sub_crop(b[k], top, left, flip) for k in names})
    dummy = torch.zeros(len(idx), 3, 1, 1)
    if name == "nemg":
        return {**b, "dist": b["pixels"], "ref": b["ref_pixels"]}, [b["tap1"], b["tap4_os16"]]
    if name == "mfenet":
        return {**b, "dist": b["pixels"]}, [b[t] for t in _TAPS]
    if name == "gsn":
        return {**b, "dist": b["pixels"], "ref": b["ref_pixels"]}, []
    return {**b, "dist": dummy}, [b[t] for t in _TAPS]


def batch_indices(cache: features.FeatureCache, recipe: Recipe, size: int, rng: np.random.Generator) -> np.ndarray:
    """Rank-trained recipes: PER_SOURCE items from each of size/PER_SOURCE sources, most of them the levels of one
    of the source's ordered distortions (a ladder) and the rest drawn at random, so every source in the batch
    brings level pairs. Drawn all at random, four of a source's ~40 items seldom share a distortion, and the
    orders only rank teaches (noise is not detail; a darker room is worse) got few pairs. Otherwise:
    VMAF-labelled items drawn at random."""
    if not recipe.rank_weight:
        return rng.choice(cache.labelled, size=size, replace=False)
    per = min(PER_SOURCE, size)
    picks = []
    for g in rng.choice(len(cache.by_group), size=min(size // per, len(cache.by_group)), replace=False):
        ladders = cache.ladders[g]
        ladder = ladders[rng.integers(len(ladders))] if ladders else np.empty(0, int)
        ladder = rng.choice(ladder, size=min(per - 1, len(ladder)), replace=False)
        rest = np.setdiff1d(cache.by_group[g], ladder)
        picks += [ladder, rng.choice(rest, size=min(per - len(ladder), len(rest)), replace=False)]
    return np.concatenate(picks)


# --- validation ------------------------------------------------------------------------------
def validation_items(root: Path, limit: int) -> list:
    """Up to `limit` VMAF-labelled validation items, evenly spread over the corpus order (all subsets)."""
    if limit <= 0:
        return []
    items = evaluate.read_corpus(root, "val")
    keep = np.linspace(0, len(items) - 1, min(limit, len(items))).round().astype(int)
    return [items[i] for i in dict.fromkeys(keep.tolist())]


# --- the loop ------------------------------------------------------------------------------------
def set_trainable(model: QualityModel, recipe: Recipe) -> list[str]:
    """Freeze everything outside the recipe's prefixes; frozen modules stay in eval mode (BN statistics fixed)."""
    names = []
    for name, p in model.named_parameters():
        train = not recipe.trainable or name.startswith(recipe.trainable)
        p.requires_grad_(train)
        if train:
            names.append(name)
    return names


def train_mode(model: QualityModel, recipe: Recipe) -> None:
    """Train mode for the trainable parts only: a frozen trunk keeps its ImageNet BatchNorm statistics."""
    model.train()
    if recipe.trainable:
        for name, module in model.named_modules():
            if name and not any(name.startswith(t.rstrip(".")) or t.startswith(name + ".") for t in recipe.trainable):
                module.eval()
    for name, module in model.named_modules():  # BatchNorm inside a fine-tuned backbone stage keeps ImageNet statistics too
        if name.startswith(recipe.pretrained) and isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.eval()


def _save_checkpoint(path: Path, model, optimizer, step: int, steps: int, trainable: list[str]) -> None:
    """Trainable parameters and all buffers (BatchNorm statistics of the heads), optimizer, step and planned steps."""
    params, keep = set(dict(model.named_parameters())), set(trainable)
    state = {"step": step, "steps": steps, "optimizer": optimizer.state_dict(),
             "model": {k: v for k, v in model.state_dict().items() if k in keep or k not in params}}
    tmp = path.with_name("." + path.name)
    torch.save(state, tmp)
    os.replace(tmp, path)


def train(name: str, data: str | Path, out: str | Path, variant: str = "lite", steps: int | None = None,
          batch: int | None = None, lr: float | None = None, seed: int = 0, device: str = "cpu",
          checkpoint_every: int = 100, val_every: int | None = None, val_items: int = 120,
          minutes: float | None = None, progress: Callable | None = None) -> dict:
    """Train (or resume) one model; writes `out/checkpoint.pt`, `out/{name}-{variant}.safetensors` and `out/training.json`.

    `minutes`: a wall-clock budget. After 5 timed steps the step count is cut to what fits, and the
    cosine schedule is laid over that count, so a budgeted run still anneals to the end.
    """
    recipe = RECIPES[(name, variant)]
    requested_steps = steps
    steps, batch, lr = steps or recipe.steps, batch or recipe.batch, lr or recipe.lr
    val_every = val_every or max(steps // 2, 1)
    root, out = Path(data), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows = corpus_mod.load(root).to_pylist()
    train_rows = [r for r in rows if r["split"] == "train" and (r["vmaf"] is not None or r["teacher"] == "level")]
    val_rows = validation_items(root, val_items)
    keep_large_tensors_in_heap()
    torch.manual_seed(seed)
    model = registry.create(name, variant, weights=None, device=device)
    trainable = set_trainable(model, recipe)
    if name == "nemg":
        start_nemg(model)
    if (name, variant) == ("gsn", "lite"):
        model.without_distorted_features()
    backbone = [p for n, p in model.named_parameters() if p.requires_grad and n.startswith(recipe.pretrained)]
    heads = [p for n, p in model.named_parameters() if p.requires_grad and not n.startswith(recipe.pretrained)]
    optimizer = torch.optim.AdamW([{"params": heads, "lr": lr}, {"params": backbone, "lr": lr * recipe.backbone_lr_scale}],
                                  weight_decay=recipe.weight_decay)
    warmup = max(1, min(50, steps // 10))

    def schedule(s: int) -> float:
        """Linear warm-up (a first full-lr Adam step on fresh heads can throw the outputs far off), then cosine to 0."""
        return (s + 1) / warmup if s < warmup else 0.5 * (1 + math.cos(math.pi * (s - warmup) / max(1, steps - warmup)))

    ckpt, start, history = out / "checkpoint.pt", 0, []
    if ckpt.is_file():
        state = torch.load(ckpt, map_location=device, weights_only=True)
        model.load_state_dict(state["model"], strict=False)
        optimizer.load_state_dict(state["optimizer"])
        start, steps = state["step"], requested_steps or state["steps"]  # a resumed run may be given more steps
        minutes = None  # the budget was spent deciding `steps` in the first run
        history = json.loads((out / "history.json").read_text()) if (out / "history.json").is_file() else []

    def teaches_value(r: dict) -> bool:
        """Whether an item's VMAF is a label for this model. Against a lossy master (pan clips) VMAF is a true
        full-reference label, but no absolute quality: no-reference models learn only its order in the source."""
        return r["vmaf"] is not None and (model.info.kind == "FR" or r["teacher"] != corpus_mod.RELATIVE)

    cached = variant == "lite"  # frozen trunk: heads train on cached taps
    if cached:
        cache = features.build(root, train_rows, seed, frame_fidelity=name == "gsn")
        cache.rank_only({r["item"] for r in train_rows if r["vmaf"] is not None and not teaches_value(r)})
    else:
        sampler = CropSampler(root, [r for r in train_rows if teaches_value(r)], seed)
    loss_fn = LOSSES[name]
    t0 = time.monotonic()
    step = start
    while step < steps:
        if minutes is not None and step == start + 5:
            per_step = (time.monotonic() - t0) / 5
            steps = min(steps, start + 5 + int((minutes * 60 - (time.monotonic() - t0)) / per_step))
        for group, base in zip(optimizer.param_groups, (lr, lr * recipe.backbone_lr_scale)):
            group["lr"] = base * schedule(step)
        train_mode(model, recipe)
        if cached:
            rng = np.random.default_rng([seed, step])
            b, taps = cached_batch(name, cache, batch_indices(cache, recipe, batch, rng), rng)
            b = {k: v.to(device) for k, v in b.items()}
            with features.replay(model, TRUNKS.get(name, ()), [t.to(device) for t in taps], recipe.tuned):
                loss, pred = loss_fn(model, b)  # GSN: no trunk replayed, it runs on the pixels
            if recipe.rank_weight:
                loss = loss + recipe.rank_weight * within_source_rank_loss(unit_score(model, pred), b)
        else:
            b = {k: v.to(device) for k, v in sampler.batch(step, batch).items()}
            loss, _ = loss_fn(model, b)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], GRAD_CLIP)
        optimizer.step()
        record = {"step": step + 1, "steps": steps, "loss": round(loss.item(), 5)}
        if val_rows and ((step + 1) % val_every == 0 or step + 1 == steps):
            pred = evaluate.predict(model, val_rows, device)
            record["val_srcc"] = round(correlations(pred, [it.mos for it in val_rows], n_boot=0)["srcc"], 4)
        history.append(record)
        if progress:
            progress(record)
        if (step + 1) % checkpoint_every == 0 or step + 1 == steps:
            _save_checkpoint(ckpt, model, optimizer, step + 1, steps, trainable)
            (out / "history.json").write_text(json.dumps(history))
        step += 1
    info = {"model": name, "variant": variant, "steps": steps, "batch": batch, "lr": lr, "seed": seed,
            "training_data": f"{'+'.join(sorted({r['subset'] for r in train_rows}))} (corpus split train): "
                             f"{sum(map(teaches_value, train_rows))} VMAF-labelled and "
                             f"{sum(not teaches_value(r) for r in train_rows)} rank-only items of "
                             f"{len({r['source'] for r in train_rows})} pristine sources, seed {seed}",
            "teacher": "VMAF vmaf_v0.6.1 (libvmaf, FFmpeg of imageio-ffmpeg)",
            "val_srcc": next((h["val_srcc"] for h in reversed(history) if "val_srcc" in h), None),
            "val_items": len(val_rows), "seconds_this_run": round(time.monotonic() - t0, 1)}
    weights = out / f"{name}-{variant}.safetensors"
    frozen = [k for k in model.state_dict() if k.startswith(recipe.pretrained) and not k.startswith(recipe.trainable or ("",))]
    info["sha256"] = save(model, weights, name=name, variant=variant, training=info,
                          omit=frozen, pretrained_prefixes=recipe.pretrained, dtype=torch.float16)
    (out / "training.json").write_text(json.dumps(info, indent=2))
    return info
