"""Print the model registry table and frames/s of every (model, variant) on 720p and 1080p frames.

Untrained instances (`weights=None`) are timed: the cost does not depend on the weights. GSN is
folded (its inference graph). Each model first runs one uncounted batch (warm-up), then
`--frames` batches of `--batch` frames per size are timed under `torch.inference_mode()`; on
CUDA with bf16 autocast and channels_last frames, as the monitor runs them. Usage:
    python bench/models_throughput.py [--device cpu|cuda] [--frames 1] [--batch 1] [--models nemg,gsn]
                                      [--variants lite,paper] [--threads N]
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


def frames_per_second(model, size: tuple[int, int], n: int, batch: int, device: torch.device) -> float:
    frame = torch.rand(batch, 3, *size, device=device).contiguous(memory_format=torch.channels_last)
    ref = frame.clone() if model.info.kind == "FR" else None
    cuda = device.type == "cuda"
    with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
        model.score_frames(frame, ref)  # warm-up: kernels, cached label features
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(n):
            model.score_frames(frame, ref)
        if cuda:
            torch.cuda.synchronize()
    return n * batch / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=1)
    parser.add_argument("--models", default=",".join(registry.MODULES))
    parser.add_argument("--variants", default=",".join(registry.VARIANTS))
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=1)
    args = parser.parse_args()
    device = torch.device(args.device)
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

    where = f"{torch.cuda.get_device_name(device)}, bf16 autocast" if device.type == "cuda" else f"CPU, {args.threads} threads"
    print(f"\nframes/s on {where}: {args.frames} timed batches of {args.batch} after one warm-up batch")
    for name in names:
        for variant in variants:
            try:
                model = registry.create(name, variant, weights=None, device=device)
            except Exception as e:  # report and go on to the next model
                print(f"{name:8} {variant:7} unavailable: {type(e).__name__}: {e}")
                continue
            if hasattr(model, "fold"):
                model.fold()
            rates = "  ".join(f"{label} {frames_per_second(model, size, args.frames, args.batch, device):8.3f}"
                              for label, size in SIZES.items())
            print(f"{name:8} {variant:7} {rates}", flush=True)


if __name__ == "__main__":
    main()
