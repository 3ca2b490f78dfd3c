"""Print the model registry table and CPU frames/s of every (model, variant) on 720p and 1080p frames.

Untrained instances (`weights=None`) are timed: the cost does not depend on the weights. GSN is
folded (its inference graph). Each model first runs one uncounted 224 crop (warm-up), then
`--frames` frames per size are timed one at a time under `torch.inference_mode()`. Usage:
    python bench/models_throughput.py [--frames 1] [--models nemg,gsn] [--variants lite,paper] [--threads N]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from models import registry  # noqa: E402

SIZES = {"720p": (720, 1280), "1080p": (1080, 1920)}


def warm_up(model) -> None:
    crop = torch.rand(1, 3, 224, 224)
    with torch.inference_mode():
        model(crop, crop) if model.info.kind == "FR" else model(crop)


def frames_per_second(model, size: tuple[int, int], n: int) -> float:
    frame = torch.rand(1, 3, *size)
    ref = torch.rand(1, 3, *size) if model.info.kind == "FR" else None
    with torch.inference_mode():
        start = time.perf_counter()
        for _ in range(n):
            model.score_frames(frame, ref)
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=1)
    parser.add_argument("--models", default=",".join(registry.MODULES))
    parser.add_argument("--variants", default=",".join(registry.VARIANTS))
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    names, variants = args.models.split(","), args.variants.split(",")

    print(f"{'model':8} {'variant':7} {'kind':4} {'range':>11} {'hib':3} {'params M':>9} {'GMACs/224':>10} "
          f"{'GMACs/1080p':>12} {'trained':7}  protocol")
    for row in registry.list():
        if row["name"] not in names or row["variant"] not in variants:
            continue
        if "error" in row:
            print(f"{row['name']:8} {row['variant']:7} unavailable: {row['error']}")
            continue
        lo, hi = row["native_range"]
        print(f"{row['name']:8} {row['variant']:7} {row['kind']:4} {f'[{lo:g},{hi:g}]':>11} "
              f"{'y' if row['higher_is_better'] else 'n':3} {row['params_m']:9.2f} {row['gmacs_224']:10.2f} "
              f"{row['gmacs_1080p']:12.1f} {str(row['trained']):7}  {row['protocol']}")

    print(f"\nCPU frames/s ({args.threads} threads, {args.frames} timed frames after a one-crop warm-up)")
    for name in names:
        for variant in variants:
            try:
                model = registry.create(name, variant, weights=None)
            except Exception as e:  # report and go on to the next model
                print(f"{name:8} {variant:7} unavailable: {type(e).__name__}: {e}")
                continue
            if hasattr(model, "fold"):
                model.fold()
            warm_up(model)
            rates = "  ".join(f"{label} {frames_per_second(model, size, args.frames):7.3f}" for label, size in SIZES.items())
            print(f"{name:8} {variant:7} {rates}", flush=True)


if __name__ == "__main__":
    main()
