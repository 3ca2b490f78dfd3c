"""Create quality models by name and describe them (`vqmon models`).

`create` builds a model through its module's `build(variant, backbone_weights)` and then
loads *quality* weights: the shipped default from the manifest, a local file, or none
(`weights=None`: explicitly untrained, `weights_sha256` stays None). Model modules are
imported lazily, so a broken or absent one only affects its own entries.

`list()` adds to each `ModelInfo` the parameter count and the GMACs of one 224 crop and of one
1080p frame under the model's own frame protocol. They are counted with
`torch.utils.flop_counter.FlopCounterMode` (MACs = FLOPs / 2; convolutions, matmuls and
attention, not element-wise ops) on the meta device, so nothing is computed, and cached per
process, after one uncounted warm-up call (one-off work such as LIQE's text features is not
charged to every crop). The model is folded first (GSN's CDC): the count is its inference graph.
"""
from __future__ import annotations

import builtins
import importlib
from functools import lru_cache

import torch
from torch.utils.flop_counter import FlopCounterMode

from models.base import QualityModel
from models.table import MODELS, VARIANTS, default_weights, no_default_weights
from models.weights import WeightsError, load

MODULES = {name: row.module for (name, _), row in MODELS.items()}  # name → module, in table order


def _module(name: str):
    if name not in MODULES:
        raise KeyError(f"unknown model {name!r}; known: {', '.join(MODULES)}")
    return importlib.import_module(MODULES[name])


def create(
    name: str,
    variant: str = "lite",
    weights: str | None = "default",
    device: str | torch.device = "cpu",
    backbone_weights: str | None = None,
    for_inference: bool = False,
) -> QualityModel:
    """A model in eval mode on `device`; with `for_inference`, rewritten for fast scoring (`models.inference.prepare`:
    GSN's CDC folded, BatchNorms fused; the scores equal the plain model's to float rounding; not for training).

    weights: "default" = the manifest's shipped file for (name, variant), an error if none ships;
    a path = that file (safetensors or torch, strict); None = untrained.
    backbone_weights: local file for a paper variant's backbone (ignored by lite variants, which
    always start from the packaged ImageNet Lite0).
    """
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    model = _module(name).build(variant=variant, backbone_weights=backbone_weights)
    if weights == "default":
        entry = default_weights(name, variant)
        if entry is None:
            raise WeightsError(
                f"{no_default_weights(name, variant)}: pass weights=<path to a checkpoint>, "
                f"or weights=None for an explicitly untrained model"
            )
        load(model, entry["file"], expected_sha256=entry["sha256"])
    elif weights is not None:
        load(model, weights)
    if for_inference:
        from models.inference import prepare

        return prepare(model, device)
    return model.to(device).eval()


def _gmacs(fn) -> float:
    with FlopCounterMode(display=False) as counter:
        fn()
    return round(counter.get_total_flops() / 2e9, 3)


@lru_cache(maxsize=None)
def describe(name: str, variant: str) -> dict:
    """Metadata of one (model, variant): ModelInfo fields, params, GMACs, weights source, trained."""
    model = _module(name).build(variant=variant, backbone_weights=None).eval()
    params = sum(p.numel() for p in model.parameters())
    model = model.fold().to("meta")
    fr = model.info.kind == "FR"
    crop = torch.empty(1, 3, 224, 224, device="meta")
    frame = torch.empty(1, 3, 1080, 1920, device="meta")
    with torch.no_grad():
        model(crop, crop) if fr else model(crop)  # uncounted warm-up: one-off work (cached text features) is no per-crop cost
        gmacs_224 = _gmacs(lambda: model(crop, crop) if fr else model(crop))
        gmacs_1080p = _gmacs(lambda: model.score_frames(frame, frame if fr else None))
    entry = default_weights(name, variant)
    return {
        **model.info.as_dict(),
        "params_m": round(params / 1e6, 3),
        "gmacs_224": gmacs_224,
        "gmacs_1080p": gmacs_1080p,
        "weights_source": entry["file"] if entry else "none shipped (train, or pass weights=PATH)",
        "trained": entry is not None,
    }


def list() -> builtins.list[dict]:  # noqa: A001 - the registry's public name
    """One metadata dict per (model, variant); a model whose module fails gets {"name", "variant", "error"}."""
    rows = []
    for name in MODULES:
        for variant in VARIANTS:
            try:
                rows.append(describe(name, variant))
            except Exception as e:  # one broken model must not hide the others
                rows.append({"name": name, "variant": variant, "error": f"{type(e).__name__}: {e}"})
    return rows
