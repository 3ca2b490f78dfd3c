"""Frozen-trunk feature cache: the lite models train their heads on Lite0 features computed once.

Why: the lite recipes keep the ImageNet Lite0 trunk frozen, so its output for a given crop never
changes. Computing it once per crop, instead of once per crop per epoch, makes CPU training of
the heads practical (the trunk is most of the cost for LIQE, GSN and MFENet). During training
`replay` puts a `TrunkReplay` in the trunk's place; it returns the cached taps of the batch.
Validation and the shipped model use the real trunk.

Crops: `crops_per_source` 224 positions per pristine source, drawn from the seed; every item of a
source is cut at the same positions, so one reference crop (and its taps) serves all of them.
Arrays (fp16 features, uint8 pixels) are memory-mapped `.npy` files under `CORPUS/cache/`.
Items added to a corpus later (its rows are appended, as pan clips are) go into a new part,
`cache/partN/`, with only their own crops: earlier parts are never recomputed.
Per item, not per crop: `frame_fidelity`, GSN-lite's fidelity features of the whole image against
its reference and the reference's motion (GSN reads them per frame). A part that lacks them, or has
another set of them (built before GSN-lite read motion), gets them (again); its crops and taps are kept.
"""
from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from torch import nn

from models.backbones.lite0 import IMAGENET_MEAN, IMAGENET_STD, lite0_features
from monitor.errors import InputError
from pipelines.train.corpus import read_rgb, stable_rng
from pipelines.train.losses import DISTORTION_INDEX

CROP = 224
TAPS = (1, 2, 3, 4)  # Lite0 taps at strides 4/8/16/32 (GSN, MFENet, LIQE)
# Distortions whose levels are not ordered per item: each camera_chain level draws its own set of faults; each
# packet_loss level loses its own datagrams, so a frame hit at a weaker level can be spared at a stronger one.
UNORDERED = ("camera_chain", "packet_loss")


def positions(source: str, h: int, w: int, count: int, seed: int) -> list[tuple[int, int]]:
    rng = stable_rng(seed, "crop", source)
    return [(int(rng.integers(h - CROP + 1)), int(rng.integers(w - CROP + 1))) for _ in range(count)]


def part_dirs(root: Path) -> list[Path]:
    """The cache's complete parts in order: root itself, then part1, part2, … (a part is complete once its
    meta.json is written, which happens last)."""
    parts = [root] + sorted(root.glob("part*"), key=lambda p: int(p.name[4:]))
    return [p for p in parts if (p / "meta.json").is_file()]


def ladders(by_group: list[np.ndarray], family: np.ndarray, level: np.ndarray, ordered: np.ndarray,
            labelled: np.ndarray) -> list[list[np.ndarray]]:
    """Per source, the distorted items of each distortion that rank among themselves (two or more): the levels of
    an ordered distortion, or the VMAF-labelled items of an unordered one, which VMAF orders (packet loss: each
    level loses other datagrams). Without the second kind, packet loss never came as a ladder, and rank batches
    held half as much of it as random ones (1.5 % of items vs 2.7 %; now 5.6 %). Unordered items without VMAF
    (camera_chain) have no pairs."""
    out = []
    for g in by_group:
        rankable = g[(level[g] > 0) & (ordered[g] | labelled[g])]
        out.append([rankable[family[rankable] == f] for f in np.unique(family[rankable])
                    if (family[rankable] == f).sum() > 1])
    return out


class FeatureCache:
    """Memory-mapped crops and trunk taps of the training items, over all parts (see the module docstring)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        parts = part_dirs(root)
        metas = [json.loads((p / "meta.json").read_text()) for p in parts]
        self.meta = {k: [v for m in metas for v in m[k]] for k in ("ref_index", "vmaf", "coarse", "items",
                                                                   "distortion", "level", "slots")}
        self.arrays: dict[str, list[tuple[int, np.ndarray]]] = {}  # name → (first row, array) per part
        crops = slots = 0
        for part, m in zip(parts, metas):
            for a in part.glob("*.npy"):
                self.arrays.setdefault(a.stem, []).append((slots if a.stem.startswith("ref_") else crops,
                                                           np.load(a, mmap_mode="r")))
            crops, slots = crops + len(m["items"]), slots + len(m["slots"])

        self.vmaf = np.array([np.nan if v is None else v for v in self.meta["vmaf"]], dtype=np.float32)
        self.ref_index = np.asarray(self.meta["ref_index"])
        families = sorted(set(self.meta["distortion"]))
        self.family = np.array([families.index(d) for d in self.meta["distortion"]])
        self.ordered = np.array([d not in UNORDERED for d in self.meta["distortion"]])
        self.level = np.asarray(self.meta["level"])
        self.by_group = [np.flatnonzero(self.ref_index == g) for g in range(int(self.ref_index.max()) + 1)]
        self._index_labels()

    def _index_labels(self) -> None:
        labelled = np.isfinite(self.vmaf)
        self.labelled = np.flatnonzero(labelled)
        self.ladders = ladders(self.by_group, self.family, self.level, self.ordered, labelled)

    def __len__(self) -> int:
        return len(self.vmaf)

    def rank_only(self, items: set[str]) -> None:
        """Drop the VMAF labels of these items: they still rank within their source, but teach no value."""
        self.vmaf[[i in items for i in self.meta["items"]]] = np.nan
        self._index_labels()

    def _take(self, name: str, rows: np.ndarray) -> np.ndarray:
        """Rows of one array, gathered across the parts that hold them."""
        out = None
        for first, a in self.arrays[name]:
            sel = (rows >= first) & (rows < first + len(a))
            if sel.any():
                if out is None:
                    out = np.empty((len(rows), *a.shape[1:]), a.dtype)
                out[sel] = a[rows[sel] - first]
        return out

    def batch(self, idx: np.ndarray, names: tuple[str, ...]) -> dict[str, torch.Tensor]:
        idx = np.sort(idx)  # sorted reads are kinder to the page cache
        ref_idx = self.ref_index[idx]
        out = {"vmaf": torch.from_numpy(self.vmaf[idx]), "coarse": torch.tensor(np.asarray(self.meta["coarse"])[idx]),
               "group": torch.from_numpy(ref_idx), "family": torch.from_numpy(self.family[idx]),
               "ordered": torch.from_numpy(self.ordered[idx]), "level": torch.from_numpy(self.level[idx])}
        for name in names:  # "pixels", "tap1".."tap4", "tap4_os16", and "ref_" + those of the reference crops
            a = torch.from_numpy(self._take(name, ref_idx if name.startswith("ref_") else idx))
            out[name] = a.permute(0, 3, 1, 2).float() / 255 if a.dtype == torch.uint8 else a.float()
        return out


def _trunks() -> dict[str, tuple[nn.Module, tuple[str, ...], bool]]:
    """Frozen trunks whose taps are cached: name → (module, array names, also for reference crops).

    NEMG's tap 4 is Lite0 at output stride 16. GSN's trunk has none here: its central-difference
    blocks 1–2 train, so it runs on the cached pixel crops (pipelines/train/train.py).
    """
    return {
        "lite0": (lite0_features(out_indices=TAPS).eval(), tuple(f"tap{t}" for t in TAPS), True),
        "lite0_os16": (lite0_features(out_indices=(4,), output_stride=16).eval(), ("tap4_os16",), False),
    }


@torch.no_grad()
def _check_room(out: Path, trunks: dict, crops: int, refs: int) -> None:
    """Fail before the first write, not part way: a 30,000-item corpus takes 17 GB, and a disk that fills under
    memory-mapped arrays kills the process (and, on a quota, the user's shell) with no clear message."""
    x = torch.zeros(1, 3, CROP, CROP)
    taps = {name: sum(f.numel() * 2 for f in module(x)) for name, (module, _, _) in trunks.items()}  # fp16
    need = (crops * (CROP * CROP * 3 + sum(taps.values()))
            + refs * (CROP * CROP * 3 + sum(taps[name] for name, (_, _, ref) in trunks.items() if ref)))
    free = shutil.disk_usage(out.parent).free
    if need > free:
        raise InputError(f"{out}: the feature cache of {crops} crops needs {need / 1e9:.2f} GB, the disk has "
                         f"{free / 1e9:.2f} GB free")


@torch.no_grad()
def build(corpus_root: Path, rows: list[dict], seed: int = 0, crops_per_source: int = 1, batch: int = 32,
          progress=None, frame_fidelity: bool = True) -> FeatureCache:
    """The cache for `rows` (training items: VMAF-labelled and rank-only) in corpus_root/cache, or cache-seedN for
    seed N ≠ 0 (its crops sit elsewhere; a run with another seed must not throw away the default cache, 12 min
    on a 30,000-item corpus). Rows appended since the last build get a new part; a cache that does not match
    the rows it starts with (another corpus or trunk set) is rebuilt. `frame_fidelity`: also the per-item
    fidelity features, which only GSN reads (whole-image reads of every item: on 30,000 items, longer than
    the crops' trunk pass)."""
    out = corpus_root / ("cache" if seed == 0 else f"cache-seed{seed}")
    trunks = _trunks()
    wanted = {"pixels", "ref_pixels"} | {p + a for _, names, ref in trunks.values() for a in names
                                         for p in ("", "ref_") if p == "" or ref}
    first = {}
    crops = []  # (row, top, left, reference slot (source, top, left))
    for r in rows:
        first.setdefault(r["source"], r)
        for top, left in positions(r["source"], r["height"], r["width"], crops_per_source, seed):
            crops.append((r, top, left, (r["source"], top, left)))

    parts = part_dirs(out)
    metas = [json.loads((p / "meta.json").read_text()) for p in parts]
    done = [i for m in metas for i in m["items"]]
    if parts and (any(m["seed"] != seed or m["crops_per_source"] != crops_per_source or "slots" not in m for m in metas)
                  or any(not all((p / f"{k}.npy").is_file() for k in wanted if m["slots"] or not k.startswith("ref_"))
                         for p, m in zip(parts, metas))
                  or [c[0]["item"] for c in crops[:len(done)]] != done):
        shutil.rmtree(out)
        parts, metas, done = [], [], []
    if parts and len(done) == len(crops):
        if frame_fidelity:
            _add_frame_fidelity(corpus_root, rows, parts)
        return FeatureCache(out)
    slot_of = {tuple(s): i for i, s in enumerate(s for m in metas for s in m["slots"])}
    new, slots = crops[len(done):], []  # this part's crops, and the reference slots it adds
    for c in new:
        if c[3] not in slot_of:
            slot_of[c[3]] = len(slot_of)
            slots.append(c[3])
    part = out / f"part{len(parts)}" if parts else out
    if part.exists() and part != out:
        shutil.rmtree(part)  # an interrupted part: started again
    _check_room(out, trunks, len(new), len(slots))
    part.mkdir(parents=True, exist_ok=True)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)

    def write(prefix: str, items: list, reader) -> None:
        """The arrays of one crop set of this part (distorted or reference)."""
        use = [(m, names) for m, names, ref in trunks.values() if prefix == "" or ref]
        arrays = None
        for start in range(0, len(items), batch):
            part_range = range(start, min(start + batch, len(items)))
            pixels = np.stack([reader(items[i]) for i in part_range])
            x = (torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255 - mean) / std
            feats = {f"{prefix}pixels": pixels}
            for module, names in use:
                feats.update({f"{prefix}{a}": f.half().numpy() for a, f in zip(names, module(x))})
            if arrays is None:
                arrays = {k: np.lib.format.open_memmap(part / f".{k}.npy", "w+", v.dtype, (len(items), *v.shape[1:]))
                          for k, v in feats.items()}
            for k, v in feats.items():
                arrays[k][start:start + len(v)] = v
            if progress:
                progress(len(part_range))
        for k, a in (arrays or {}).items():
            a.flush()
            os.replace(part / f".{k}.npy", part / f"{k}.npy")

    cut = lambda img, top, left: img[top:top + CROP, left:left + CROP]  # noqa: E731
    write("ref_", slots, lambda s: cut(read_rgb(corpus_root / first[s[0]]["ref_path"]), s[1], s[2]))
    write("", new, lambda c: cut(read_rgb(corpus_root / c[0]["path"]), c[1], c[2]))
    meta = {"seed": seed, "crops_per_source": crops_per_source, "slots": slots,
            "ref_index": [slot_of[c[3]] for c in new], "vmaf": [c[0]["vmaf"] for c in new],
            "coarse": [DISTORTION_INDEX.get(c[0]["coarse"], -1) for c in new], "items": [c[0]["item"] for c in new],
            "distortion": [c[0]["distortion"] for c in new], "level": [c[0]["level"] for c in new]}
    (part / ".meta.json").write_text(json.dumps(meta))
    os.replace(part / ".meta.json", part / "meta.json")
    if frame_fidelity:
        _add_frame_fidelity(corpus_root, rows, part_dirs(out))
    return FeatureCache(out)


def _add_frame_fidelity(corpus_root: Path, rows: list[dict], parts: list[Path]) -> None:
    """Write `frame_fidelity.npy` (items × gsn.FIDELITY_FEATURES, float32) into the parts that lack it or hold
    another number of features. One thread per core, a source's items each (one read of their reference): the
    work is PNG decoding and whole-image statistics, both of which run outside the GIL (16 min on one core for
    the 30,000-item corpus)."""
    from models import gsn

    row_of = {r["item"]: r for r in rows}
    to_tensor = lambda path: torch.from_numpy(read_rgb(corpus_root / path)).permute(2, 0, 1)[None].float() / 255  # noqa: E731
    for part in parts:
        done = part / "frame_fidelity.npy"
        if done.is_file() and np.load(done, mmap_mode="r").shape[1:] == (gsn.FIDELITY_FEATURES,):
            continue
        items = [row_of[i] for i in json.loads((part / "meta.json").read_text())["items"]]
        out = np.lib.format.open_memmap(part / ".frame_fidelity.npy", "w+", np.float32, (len(items), gsn.FIDELITY_FEATURES))
        # consecutive items of one reference (a source's items are consecutive)
        runs = [list(run) for _, run in itertools.groupby(range(len(items)), key=lambda k: items[k]["ref_path"])]

        def score(run: list[int]) -> None:
            ref = to_tensor(items[run[0]]["ref_path"])
            for k in run:
                out[k] = gsn.fidelity(to_tensor(items[k]["path"]), ref, torch.tensor([items[k]["ref_motion"]]))[0].numpy()

        with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
            list(pool.map(score, runs))  # list(): a worker's error is raised here
        out.flush()
        os.replace(part / ".frame_fidelity.npy", part / "frame_fidelity.npy")


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
    """Swap the model's trunk attribute(s) for a replay of `taps` (none: it runs as it is); the real trunk comes back afterwards.
    Trunks named in `tuned` recompute their last tap through their own blocks 5–6 (see TrunkReplay)."""
    saved = {a: getattr(model, a) for a in attrs}
    try:
        for a in attrs:
            setattr(model, a, TrunkReplay(taps, saved[a].blocks[5:] if a in tuned else None))
        yield
    finally:
        for a, m in saved.items():
            setattr(model, a, m)
