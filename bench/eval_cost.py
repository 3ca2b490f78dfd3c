"""Print what evaluation costs: `correlations` (1000 bootstrap resamples) by item count, NIQE by image size.

The bootstrap's KRCC runs one scipy `kendalltau` per resample and dominates; SRCC, PLCC and
RMSE are vectorised over resamples. NIQE is timed on scikit-image's astronaut, resized. Usage:
    python bench/eval_cost.py [--items 100,1000,5000] [--boot 1000]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image
from rich.console import Console
from rich.table import Table
from skimage import data

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pipelines.train import niqe  # noqa: E402
from pipelines.train.metrics import correlations  # noqa: E402

SIZES = {"481×321 (BSDS)": (481, 321), "1280×720": (1280, 720), "1920×1080": (1920, 1080)}


def seconds(fn, repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--items", default="100,1000,5000")
    p.add_argument("--boot", type=int, default=1000)
    args = p.parse_args()
    console = Console()
    rng = np.random.default_rng(0)
    t = Table("items", f"correlations, {args.boot} resamples (s)", "without CIs (s)", title="metrics")
    for n in map(int, args.items.split(",")):
        x = rng.uniform(0, 1, n)
        mos = x + rng.normal(0, 0.2, n)
        t.add_row(str(n), f"{seconds(lambda: correlations(x, mos, n_boot=args.boot), 1):.2f}",
                  f"{seconds(lambda: correlations(x, mos, n_boot=0)):.3f}")
    console.print(t)
    model = niqe.NIQEModel.load()
    photo = Image.fromarray(data.astronaut())
    t = Table("image", "NIQE score (ms)", title="NIQE")
    for label, size in SIZES.items():
        gray = niqe.rgb_to_gray(np.asarray(photo.resize(size, Image.BICUBIC), dtype=np.float64) / 255.0)
        t.add_row(label, f"{1000 * seconds(lambda: model.score(gray)):.0f}")
    console.print(t)


if __name__ == "__main__":
    main()
