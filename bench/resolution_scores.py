"""The 0–100 score of every shipped model (and any weights file given) for one picture at 1080p, 720p and 360p.

The picture is `monitor.samples.native_1080p` (sharp per pixel at 1080p), area-downscaled to
each rung and encoded with x264 at CRF 18/28/38/48 (`resolution_rungs`); VMAF is computed at
each rung's own size against its own pristine. Prints, per model and rung, the scores of
pristine and each CRF, and per quality level the spread across the rungs: the number
tests/test_calibration.py bounds.

    python bench/resolution_scores.py [--extra gsn:PATH ...]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from models import registry  # noqa: E402
from models.weights import manifest_entries  # noqa: E402
from monitor.samples import resolution_rungs  # noqa: E402
from monitor.scoring.vmaf import still_scores  # noqa: E402

SIZES = ((1920, 1080), (1280, 720), (640, 360))
CRFS = (18, 28, 38, 48)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--extra", nargs="*", default=[], help="NAME:PATH weights to score beside the shipped ones")
    args = ap.parse_args()
    rungs = resolution_rungs(SIZES, CRFS)
    rows = {"vmaf": {h: [100.0, *map(float, still_scores((x, p) for x in enc))] for h, (p, enc) in rungs.items()}}
    models = [(f"{e['name']}-{e['variant']} {e['version']}", e["name"], "default") for e in manifest_entries()]
    models += [(spec, *spec.split(":", 1)) for spec in args.extra]
    for label, name, weights in models:
        model = registry.create(name, "lite", weights=weights, for_inference=True)
        rows[label] = {}
        for h, (p, enc) in rungs.items():
            frames = torch.from_numpy(np.stack([p, *enc])).permute(0, 3, 1, 2).float() / 255
            refs = frames[:1].expand_as(frames) if model.info.kind == "FR" else None
            with torch.no_grad():
                rows[label][h] = model.normalise(model.score_frames(frames, refs)["quality"]).tolist()
    table = Table(title="0–100 score: pristine / CRF 18 / 28 / 38 / 48 (x264), one picture at three sizes")
    for col in ("model", *(f"{h}p" for h in rungs), "spread per level", "max"):
        table.add_column(col)
    for label, per in rows.items():
        spread = np.ptp(np.array(list(per.values())), axis=0)
        table.add_row(label, *(" / ".join(f"{v:.0f}" for v in per[h]) for h in rungs),
                      " / ".join(f"{v:.1f}" for v in spread), f"{spread.max():.1f}")
    Console(width=200).print(table)


if __name__ == "__main__":
    main()
