"""Evaluate quality models against labels: SRCC, KRCC, PLCC, RMSE with bootstrap CIs, next to classic baselines.

Labels come from a CSV (`path,mos` for NR, `dist,ref,mos` for FR; paths relative to the CSV's
folder; optional `subset` and `source` columns, and for FR `ref_motion`, the reference's VMAF motion
at a video frame, 0 for stills) or from a distortion corpus
(`DIR/corpus.parquet`, rows of one split whose teacher is VMAF, mos = vmaf). Images are read
with PIL as RGB in [0, 1] and scored with `model.score_frames` in batches of equal size.

Baselines sit in the same table: PSNR-Y, SSIM-Y (`monitor.scoring.signals`, or the corpus's own
columns) and VMAF (libvmaf through `monitor.scoring.vmaf`, each pair as a still; on a corpus its own
`vmaf` column, the teacher of the labels) when an FR model is evaluated; NIQE with the
project's pristine MVG (`models/weights/niqe_pristine.npz`) and the variance of the Laplacian of the
luma (the one-line sharpness measure) when an NR model is. Scores where lower is better (NIQE)
are negated so that every correlation reads "higher = agrees".

`evaluate_models` is the entry for training loops (validation SRCC: `n_boot=0, baselines=False`);
`vqmon eval` prints the table and writes it as CSV or Markdown.
"""
from __future__ import annotations

import csv
import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image
from scipy import ndimage

from monitor.errors import InputError
from monitor.scoring import signals
from pipelines.train import niqe
from pipelines.train.metrics import correlations, within_group_srcc

CORPUS_COLUMNS = ("item", "split", "subset", "source", "path", "ref_path", "vmaf", "psnr_y", "ssim_y", "teacher",
                  "ref_motion")
NEGATED_MARK = " (−)"


@dataclass(frozen=True)
class Item:
    """One labelled image (and its reference for FR); `where` names its origin in error messages."""

    path: Path
    mos: float
    where: str
    ref_path: Path | None = None
    subset: str = ""
    source: str = ""
    psnr_y: float | None = None
    ssim_y: float | None = None
    vmaf: float | None = None
    ref_motion: float = 0.0  # the reference's VMAF motion at this frame (0: a still)


def _existing(base: Path, rel: str | None, where: str) -> Path:
    if not rel:
        raise InputError(f"{where}: empty path")
    p = base / rel
    if not p.is_file():
        raise InputError(f"{where}: image not found: {p}")
    return p


def read_csv(path: str | Path) -> list[Item]:
    """Items of a label CSV; a bad row or a missing file is an InputError naming the file and line."""
    path = Path(path)
    try:
        f = open(path, newline="", encoding="utf-8")
    except OSError as e:
        raise InputError(f"{path}: cannot read: {e.strerror}") from None
    with f:
        reader = csv.DictReader(f)
        cols = set(reader.fieldnames or ())
        if {"dist", "ref", "mos"} <= cols:
            fr = True
        elif {"path", "mos"} <= cols:
            fr = False
        else:
            raise InputError(f"{path}: expected a header path,mos (NR) or dist,ref,mos (FR), "
                             f"got {','.join(reader.fieldnames or ()) or 'nothing'}")
        items = []
        for row in reader:
            where = f"{path}:{reader.line_num}"
            try:
                mos = float(row["mos"])
            except (TypeError, ValueError):
                raise InputError(f"{where}: mos {row['mos']!r} is not a number") from None
            if not math.isfinite(mos):
                raise InputError(f"{where}: mos {row['mos']!r} is not finite")
            dist = _existing(path.parent, row["dist" if fr else "path"], where)
            ref = _existing(path.parent, row["ref"], where) if fr else None
            try:
                motion = float(row.get("ref_motion") or 0.0)
            except ValueError:
                raise InputError(f"{where}: ref_motion {row['ref_motion']!r} is not a number") from None
            items.append(Item(dist, mos, where, ref, subset=row.get("subset") or path.parent.name,
                              source=row.get("source") or str(ref or dist), ref_motion=motion))
    if len(items) < 3:
        raise InputError(f"{path}: {len(items)} labelled row(s); correlations need at least 3")
    return items


def read_corpus(directory: str | Path, split: str = "val", per_subset: int | None = None) -> list[Item]:
    """Items of a corpus split whose teacher is VMAF (mos = vmaf), with the corpus's PSNR-Y/SSIM-Y.

    `per_subset`: keep at most that many items of each subset, evenly spaced in corpus order
    (deterministic), to bound the cost of slow models.
    """
    import pyarrow.parquet as pq

    directory = Path(directory)
    table_path = directory / "corpus.parquet"
    try:
        table = pq.read_table(table_path)
    except (OSError, ValueError) as e:
        raise InputError(f"{table_path}: cannot read the corpus table: {e}") from None
    missing = [c for c in CORPUS_COLUMNS if c not in table.column_names]
    if missing:
        raise InputError(f"{table_path}: missing column(s) {', '.join(missing)}")
    items = []
    for row in table.select(list(CORPUS_COLUMNS)).to_pylist():
        if row["split"] != split or row["teacher"] != "vmaf":
            continue
        where = f"{table_path} item {row['item']}"
        if row["vmaf"] is None or not math.isfinite(row["vmaf"]):
            raise InputError(f"{where}: teacher is vmaf but vmaf is {row['vmaf']}")
        items.append(Item(_existing(directory, row["path"], where), float(row["vmaf"]), where,
                          _existing(directory, row["ref_path"], where), row["subset"], row["source"],
                          row["psnr_y"], row["ssim_y"], row["vmaf"], row["ref_motion"]))
    if per_subset:
        kept = []
        for subset in dict.fromkeys(it.subset for it in items):
            part = [it for it in items if it.subset == subset]
            picks = np.linspace(0, len(part) - 1, min(per_subset, len(part))).round().astype(int)
            kept += [part[i] for i in dict.fromkeys(picks.tolist())]
        items = kept
    if len(items) < 3:
        raise InputError(f"{table_path}: {len(items)} VMAF-labelled row(s) in split {split!r}; need at least 3")
    return items


def _rgb8(path: Path, where: str) -> np.ndarray:
    """H×W×3 uint8 RGB."""
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except OSError as e:
        raise InputError(f"{where}: cannot read image {path}: {e}") from None


def _rgb(path: Path, where: str) -> np.ndarray:
    """H×W×3 float32 RGB in [0, 1]."""
    return _rgb8(path, where).astype(np.float32) / 255.0


def _size(path: Path, where: str) -> tuple[int, int]:
    try:
        with Image.open(path) as im:
            return im.size
    except OSError as e:
        raise InputError(f"{where}: cannot read image {path}: {e}") from None


def _tensor(arrays: list[np.ndarray], device: torch.device) -> torch.Tensor:
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).to(device)


def predict(model, items: list[Item], device: torch.device | str = "cpu", batch_size: int = 16,
            on_progress: Callable[[int], None] | None = None) -> np.ndarray:
    """Native scores of `model` for the items (FR models get the reference), batched by image size."""
    fr = model.info.kind == "FR"
    if fr and any(it.ref_path is None for it in items):
        raise InputError(f"{model.info.name} is a full-reference model: the labels need a reference per image "
                         f"(CSV header dist,ref,mos, or a corpus)")
    device = torch.device(device)
    by_size = defaultdict(list)
    for k, it in enumerate(items):  # sizes from the headers: a mismatched pair fails before any scoring
        size = _size(it.path, it.where)
        ref_size = _size(it.ref_path, it.where) if fr else size
        if ref_size != size:
            raise InputError(f"{it.where}: reference {it.ref_path} is {ref_size[0]}×{ref_size[1]}, "
                             f"the image {size[0]}×{size[1]}")
        by_size[size].append(k)
    out = np.empty(len(items))
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for idx in by_size.values():
                for start in range(0, len(idx), batch_size):
                    chunk = idx[start:start + batch_size]
                    x = [_rgb(items[k].path, items[k].where) for k in chunk]
                    if fr:
                        refs = _tensor([_rgb(items[k].ref_path, items[k].where) for k in chunk], device)
                        motion = torch.tensor([items[k].ref_motion for k in chunk])
                        q = model.score_frames(_tensor(x, device), refs, motion)["quality"]
                    else:
                        q = model.score_frames(_tensor(x, device))["quality"]
                    out[chunk] = q.float().cpu().numpy()
                    if on_progress:
                        on_progress(len(chunk))
    finally:
        model.train(was_training)
    return out


def fr_baselines(items: list[Item]) -> tuple[np.ndarray, np.ndarray]:
    """PSNR-Y and SSIM-Y per item: the corpus's values where present, else `monitor.scoring.signals` on BT.601 luma."""
    psnr, ssim = np.empty(len(items)), np.empty(len(items))
    for k, it in enumerate(items):
        if it.psnr_y is not None and it.ssim_y is not None:
            psnr[k], ssim[k] = it.psnr_y, it.ssim_y
            continue
        d, r = (torch.from_numpy(niqe.rgb_to_gray(_rgb(p, it.where)) * 255.0)[None] for p in (it.path, it.ref_path))
        if d.shape != r.shape:
            raise InputError(f"{it.where}: reference {it.ref_path} and image {it.path} differ in size")
        psnr[k], ssim[k] = float(signals.psnr_y(d, r)), float(signals.ssim_y(d, r))
    return psnr, ssim


def vmaf_scores(items: list[Item]) -> np.ndarray:
    """VMAF (vmaf_v0.6.1) per item: the corpus's value where present, else libvmaf on the pair as a still
    (`monitor.scoring.vmaf.still_scores`, one run per image size)."""
    from monitor.scoring import vmaf

    out = np.empty(len(items))
    by_size = defaultdict(list)
    for k, it in enumerate(items):
        if it.vmaf is not None:
            out[k] = it.vmaf
        else:
            by_size[_size(it.path, it.where)].append(k)
    if by_size:
        vmaf.check(vmaf.VmafOptions())
    for (w, h), idx in by_size.items():
        for k in idx:
            if _size(items[k].ref_path, items[k].where) != (w, h):
                raise InputError(f"{items[k].where}: reference {items[k].ref_path} and image {items[k].path} "
                                 "differ in size")
        out[idx] = vmaf.still_scores((_rgb8(items[k].path, items[k].where), _rgb8(items[k].ref_path, items[k].where))
                                     for k in idx)
    return out


def niqe_scores(items: list[Item], model: niqe.NIQEModel | None = None) -> np.ndarray:
    """NIQE (lower is better) of each item's image, with the shipped pristine MVG by default; NaN for a
    picture without a textured patch (a black or flat frame: NIQE is undefined there), which leaves the
    item out of NIQE's rows (their n says so) instead of failing the table."""
    model = model or niqe.NIQEModel.load()
    out = np.empty(len(items))
    for k, it in enumerate(items):
        try:
            out[k] = model.score(niqe.rgb_to_gray(_rgb(it.path, it.where).astype(np.float64)))
        except ValueError as e:
            raise InputError(f"{it.where}: {it.path}: {e}") from None
    return out


def laplacian_variance_scores(items: list[Item]) -> np.ndarray:
    """Variance of the 4-neighbour Laplacian of the 8-bit luma: the blur yardstick engineers already use."""
    out = np.empty(len(items))
    for k, it in enumerate(items):
        gray = niqe.rgb_to_gray(_rgb8(it.path, it.where).astype(np.float64))
        out[k] = ndimage.laplace(gray).var()
    return out


def model_label(model) -> str:
    """name/variant@sha256-prefix, or @untrained: the tag the monitor's records use."""
    return f"{model.info.name}/{model.info.variant}@{model.weights_sha256[:12] if model.trained else 'untrained'}"


def _rows(method: str, kind: str, scores: np.ndarray, negated: bool, items: list[Item], n_boot: int,
          seed: int) -> list[dict]:
    """One result per subset (when there are several) and one pooled over all items with the same kind of
    label: human MOS and VMAF are different scales, so "all" never mixes them ("all MOS" and "all VMAF" then)."""
    subsets = np.array([it.subset for it in items])
    mos = np.array([it.mos for it in items])
    sources = np.array([it.source for it in items])
    labels = np.array(["VMAF" if it.vmaf is not None else "MOS" for it in items])
    names = sorted(set(subsets))
    pools = {"all": np.ones(len(items), bool)}
    if len(set(labels)) > 1:
        pools = {f"all {label}": labels == label for label in ("MOS", "VMAF")
                 if len(set(subsets[labels == label])) > 1}
    rows = []
    for subset in (names if len(names) > 1 else []) + list(pools):
        sel = (pools[subset] if subset in pools else subsets == subset) & np.isfinite(scores)  # NaN: undefined there
        row = {"method": method, "kind": kind, "negated": negated, "subset": subset, "n": int(sel.sum())}
        if sel.sum() >= 3:
            row.update(correlations(scores[sel], mos[sel], n_boot=n_boot, seed=seed))
        row["within_source_srcc"] = within_group_srcc(scores[sel], mos[sel], sources[sel])
        rows.append(row)
    return rows


def evaluate_models(models: dict, items: list[Item], *, device: torch.device | str = "cpu", batch_size: int = 16,
                    n_boot: int = 1000, seed: int = 0, baselines: bool = True,
                    on_progress: Callable[[int], None] | None = None) -> list[dict]:
    """Result rows (method, kind, negated, subset, n, fit, srcc, srcc_lo, srcc_hi, krcc…, plcc…, rmse…,
    within_source_srcc) for each {label: QualityModel} and, with `baselines`, PSNR-Y/SSIM-Y/VMAF (if an FR
    model is among them) and NIQE + variance of the Laplacian (if an NR model is). Models are scored in eval mode and put back
    in the mode they were in. FR methods are scored on the items that have a reference (a set of
    NR labels, such as human-rated photos, can sit beside a corpus in one table)."""
    methods = []
    with_ref = [it for it in items if it.ref_path is not None]
    for label, model in models.items():
        negated = not model.info.higher_is_better
        part = with_ref if model.info.kind == "FR" else items
        if not part:
            raise InputError(f"{model.info.name} is a full-reference model: the labels need a reference per image "
                             f"(CSV header dist,ref,mos, or a corpus)")
        p = predict(model, part, device, batch_size, on_progress)
        methods.append((label, model.info.kind, -p if negated else p, negated, part))
    kinds = {m.info.kind for m in models.values()}
    if baselines and "FR" in kinds and with_ref:
        psnr, ssim = fr_baselines(with_ref)
        methods += [("PSNR-Y", "FR", psnr, False, with_ref), ("SSIM-Y", "FR", ssim, False, with_ref),
                    ("VMAF", "FR", vmaf_scores(with_ref), False, with_ref)]
    if baselines and "NR" in kinds:
        methods += [("NIQE", "NR", -niqe_scores(items), True, items),
                    ("var-Laplacian", "NR", laplacian_variance_scores(items), False, items)]
    return [row for m in methods for row in _rows(*m, n_boot, seed)]


HEADER = ("method", "subset", "n", "SRCC [95% CI]", "KRCC [95% CI]", "PLCC [95% CI]", "RMSE [95% CI]",
          "within-source SRCC")


def _cell(row: dict, key: str, fmt: str) -> str:
    v = row.get(key, math.nan)
    if math.isnan(v):
        return "—"
    lo, hi = row.get(f"{key}_lo", math.nan), row.get(f"{key}_hi", math.nan)
    text = format(v, fmt) if math.isnan(lo) else f"{v:{fmt}} [{lo:{fmt}}, {hi:{fmt}}]"
    return text + (" lin" if key in ("plcc", "rmse") and row.get("fit") == "linear" else "")


def table_cells(results: list[dict]) -> tuple[list[list[str]], list[str]]:
    """Formatted rows under HEADER, and the footnotes that explain them."""
    cells = [[r["method"] + (NEGATED_MARK if r["negated"] else ""), r["subset"], str(r["n"]),
              _cell(r, "srcc", ".3f"), _cell(r, "krcc", ".3f"), _cell(r, "plcc", ".3f"), _cell(r, "rmse", ".4g"),
              _cell(r, "within_source_srcc", ".3f")] for r in results]
    notes = ["PLCC and RMSE after a 4-parameter logistic fit of score → MOS (\"lin\": the fit failed, linear "
             "instead), which absorbs the direction of the scale: a model ranking backwards has SRCC < 0 but PLCC > 0. "
             "CIs: 95 % percentile bootstrap over items, mapping fitted once."]
    if any(r["method"] == "VMAF" for r in results):
        notes.append("VMAF: libvmaf vmaf_v0.6.1 on each pair as a still (motion term 0); on a corpus, the corpus's "
                     "own VMAF, which made the labels, so it agrees perfectly by construction: the ceiling.")
    if any(r["negated"] for r in results):
        notes.append(f"{NEGATED_MARK.strip()}: lower is better; scores negated so that the correlations read "
                     "positively.")
    return cells, notes


def markdown(results: list[dict]) -> str:
    """The table as GitHub Markdown, footnotes below."""
    cells, notes = table_cells(results)
    align = ["---" if h in ("method", "subset") else "---:" for h in HEADER]
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in cells]
    return "\n".join(lines + [""] + notes) + "\n"


def write_table(results: list[dict], path: str | Path) -> None:
    """`.md`: the formatted table; `.csv`: one row per result with every raw number."""
    path = Path(path)
    if path.suffix == ".md":
        path.write_text(markdown(results), encoding="utf-8")
    elif path.suffix == ".csv":
        keys = list(dict.fromkeys(k for r in results for k in r))
        with open(path, "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=keys)
            w.writeheader()
            w.writerows(results)
    else:
        raise InputError(f"--out {path}: expected a .csv or .md file")
