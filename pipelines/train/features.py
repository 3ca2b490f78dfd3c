"""Frozen-trunk feature cache: the lite models train their heads on Lite0 features computed once.

Why: the lite recipes keep the ImageNet Lite0 trunk frozen, so its output for a given crop never
changes. Computing it once per crop, instead of once per crop per epoch, makes CPU training of
the heads practical (the trunk is most of the cost for LIQE, GSN and MFENet). During training
`replay` puts a `TrunkReplay` in the trunk's place; it returns the cached taps of the batch.
Validation and the shipped model use the real trunk.

Crops: `crops_per_source` 224 positions per pristine source, drawn from the seed; every item of a
source is cut at the same positions, so one reference crop (and its taps) serves all of them.
Arrays (fp16 features, uint8 pixels) are memory-mapped `.npy` files under `CORPUS/cache/`.
"""
from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from models.backbones.lite0 import IMAGENET_MEAN, IMAGENET_STD, lite0_features
from pipelines.train.corpus import read_rgb, stable_rng
from pipelines.train.losses import DISTORTION_INDEX

CROP = 224
TAPS = (1, 2, 3, 4)  # Lite0 taps at strides 4/8/16/32 (GSN, MFENet, LIQE)
# Distortions whose levels are not ordered: each camera_chain level draws its own set of faults.
UNORDERED = ("camera_chain",)


def positions(source: str, h: int, w: int, count: int, seed: int) -> list[tuple[int, int]]:
    rng = stable_rng(seed, "crop", source)
    return [(int(rng.integers(h - CROP + 1)), int(rng.integers(w - CROP + 1))) for _ in range(count)]


class FeatureCache:
    """Memory-mapped crops and trunk taps of the training items (see the module docstring)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.meta = json.loads((root / "meta.json").read_text())
        self.arrays = {p.stem: np.load(p, mmap_mode="r") for p in root.glob("*.npy")}

        self.vmaf = np.array([np.nan if v is None else v for v in self.meta["vmaf"]], dtype=np.float32)
        self.ref_index = np.asarray(self.meta["ref_index"])
        families = sorted(set(self.meta["distortion"]))
        self.family = np.array([families.index(d) for d in self.meta["distortion"]])
        self.ordered = np.array([d not in UNORDERED for d in self.meta["distortion"]])
        self.level = np.asarray(self.meta["level"])
        self.labelled = np.flatnonzero(np.isfinite(self.vmaf))
        self.by_group = [np.flatnonzero(self.ref_index == g) for g in range(int(self.ref_index.max()) + 1)]

    def __len__(self) -> int:
        return len(self.vmaf)

    def batch(self, idx: np.ndarray, names: tuple[str, ...]) -> dict[str, torch.Tensor]:
        idx = np.sort(idx)  # sorted reads are kinder to the page cache
        ref_idx = self.ref_index[idx]
        out = {"vmaf": torch.from_numpy(self.vmaf[idx]), "coarse": torch.tensor(np.asarray(self.meta["coarse"])[idx]),
               "group": torch.from_numpy(ref_idx), "family": torch.from_numpy(self.family[idx]),
               "ordered": torch.from_numpy(self.ordered[idx]), "level": torch.from_numpy(self.level[idx])}
        for name in names:  # "pixels", "tap1".."tap4", "tap4_os16", and "ref_" + those of the reference crops
            a = torch.from_numpy(np.ascontiguousarray(self.arrays[name][ref_idx if name.startswith("ref_") else idx]))
            out[name] = a.permute(0, 3, 1, 2).float() / 255 if a.dtype == torch.uint8 else a.float()
        return out


def _trunks() -> dict[str, tuple[nn.Module, tuple[str, ...], bool]]:
    """Frozen trunks whose taps are cached: name → (module, array names, also for reference crops).

    GSN's trunk is Lite0 with central-difference convs in blocks 1–2 (folded: exact, cheaper), so
    its taps differ from plain Lite0's and are cached apart; NEMG's tap 4 is Lite0 at output stride 16.
    """
    from models import gsn

    siamese = gsn.build("lite").fold()
    return {
        "lite0": (lite0_features(out_indices=TAPS).eval(), tuple(f"tap{t}" for t in TAPS), True),
        "lite0_os16": (lite0_features(out_indices=(4,), output_stride=16).eval(), ("tap4_os16",), False),
        "gsn": (siamese.lite0.eval(), tuple(f"gsn_tap{t}" for t in TAPS), True),
    }


@torch.no_grad()
def build(corpus_root: Path, rows: list[dict], seed: int = 0, crops_per_source: int = 1, batch: int = 32,
          progress=None) -> FeatureCache:
    """Compute the cache for `rows` (training items: VMAF-labelled and rank-only) in corpus_root/cache, or the
    arrays it still lacks."""
    out = corpus_root / "cache"
    trunks = _trunks()
    wanted = {"pixels", "ref_pixels"} | {p + a for _, names, ref in trunks.values() for a in names
                                         for p in ("", "ref_") if p == "" or ref}
    if (out / "meta.json").is_file() and all((out / f"{k}.npy").is_file() for k in wanted):
        return FeatureCache(out)
    out.mkdir(exist_ok=True)

    sources = sorted({r["source"] for r in rows})
    first = {r["source"]: r for r in reversed(rows)}
    crops = []  # (row, top, left, ref slot)
    ref_slots: list[tuple[str, int, int]] = []
    for s in sources:
        h, w = first[s]["height"], first[s]["width"]
        for top, left in positions(s, h, w, crops_per_source, seed):
            ref_slots.append((s, top, left))
    slot_of = {key: i for i, key in enumerate(ref_slots)}
    for r in rows:
        for top, left in positions(r["source"], r["height"], r["width"], crops_per_source, seed):
            crops.append((r, top, left, slot_of[(r["source"], top, left)]))
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)

    def write(prefix: str, items: list, reader) -> None:
        """The arrays of one crop set (distorted or reference) that are not on disk yet."""
        todo = {n: (m, names) for n, (m, names, ref) in trunks.items() if (prefix == "" or ref)
                and not all((out / f"{prefix}{a}.npy").is_file() for a in names)}
        have_pixels = (out / f"{prefix}pixels.npy").is_file()
        if not todo and have_pixels:
            return
        cached_pixels = np.load(out / f"{prefix}pixels.npy", mmap_mode="r") if have_pixels else None
        arrays = None
        for start in range(0, len(items), batch):
            part = range(start, min(start + batch, len(items)))
            pixels = cached_pixels[start:part.stop] if have_pixels else np.stack([reader(items[i]) for i in part])
            x = (torch.from_numpy(np.ascontiguousarray(pixels)).permute(0, 3, 1, 2).float() / 255 - mean) / std
            feats = {} if have_pixels else {f"{prefix}pixels": pixels}
            for module, names in todo.values():
                feats.update({f"{prefix}{a}": f.half().numpy() for a, f in zip(names, module(x))})
            if arrays is None:
                arrays = {k: np.lib.format.open_memmap(out / f".{k}.npy", "w+", v.dtype, (len(items), *v.shape[1:]))
                          for k, v in feats.items()}
            for k, v in feats.items():
                arrays[k][start:start + len(v)] = v
            if progress:
                progress(len(part))
        for k, a in arrays.items():
            a.flush()
            os.replace(out / f".{k}.npy", out / f"{k}.npy")

    cut = lambda img, top, left: img[top:top + CROP, left:left + CROP]  # noqa: E731
    write("ref_", ref_slots, lambda s: cut(read_rgb(corpus_root / first[s[0]]["ref_path"]), s[1], s[2]))
    write("", crops, lambda c: cut(read_rgb(corpus_root / c[0]["path"]), c[1], c[2]))
    meta = {"seed": seed, "crops_per_source": crops_per_source, "ref_index": [c[3] for c in crops],
            "vmaf": [c[0]["vmaf"] for c in crops], "coarse": [DISTORTION_INDEX.get(c[0]["coarse"], -1) for c in crops],
            "items": [c[0]["item"] for c in crops], "distortion": [c[0]["distortion"] for c in crops],
            "level": [c[0]["level"] for c in crops]}
    (out / ".meta.json").write_text(json.dumps(meta))
    os.replace(out / ".meta.json", out / "meta.json")
    return FeatureCache(out)


class TrunkReplay(nn.Module):
    """Stands in for a frozen trunk during training: returns the taps set for the current batch.

    With `tail` (the trunk's own last stages, blocks 5–6 of Lite0) the last tap is recomputed from
    the cached stride-16 tap, so those stages fine-tune end to end while the rest stays cached.
    """

    def __init__(self, taps: list[torch.Tensor], tail: nn.Module | None = None) -> None:
        super().__init__()
        self.taps, self.tail = taps, tail

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        if self.tail is None:
            return self.taps
        return [*self.taps[:-1], self.tail(self.taps[-2])]


@contextlib.contextmanager
def replay(model: nn.Module, attrs: tuple[str, ...], taps: list[torch.Tensor], tuned: tuple[str, ...] = ()):
    """Swap the model's trunk attribute(s) for a replay of `taps`; the real trunk comes back afterwards.
    Trunks named in `tuned` recompute their last tap through their own blocks 5–6 (see TrunkReplay)."""
    saved = {a: getattr(model, a) for a in attrs}
    try:
        for a in attrs:
            setattr(model, a, TrunkReplay(taps, saved[a].blocks[5:] if a in tuned else None))
        yield
    finally:
        for a, m in saved.items():
            setattr(model, a, m)
