"""Throughput of `vqmon score` against PyAV decode alone, on one 1080p H.264 clip, in one run.

Prints a table of frames/s and each row's ratio to decode-only fps (ratios survive a noisy
machine better than absolute numbers). Usage: python bench/score_throughput.py [--seconds 4]
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time

import av
from rich.console import Console
from rich.table import Table

from monitor.pipeline import score_file
from monitor.samples import encode, panned_frames
from monitor.sampling import Sampler
from monitor.sources import FileSource


def decode_only(path: str) -> int:
    with av.open(path) as c:
        s = c.streams.video[0]
        s.thread_type = "AUTO"
        return sum(1 for _ in c.decode(s))


def decode_luma(path: str) -> int:
    with FileSource(path) as src:
        return sum(f.y.shape[0] > 0 for f in src)


def timed(fn) -> tuple[float, int]:
    t = time.perf_counter()
    n = fn()
    return time.perf_counter() - t, n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--width", type=int, default=1920)
    ap.add_argument("--height", type=int, default=1080)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    fps = 25
    n = int(args.seconds * fps)
    with tempfile.TemporaryDirectory() as d:
        ref = encode(os.path.join(d, "ref.mp4"), panned_frames(args.width, args.height, n), crf=18,
                     options={"preset": "veryfast"})
        dist = encode(os.path.join(d, "dist.mp4"), panned_frames(args.width, args.height, n), crf=32,
                      options={"preset": "veryfast"})
        rows = [
            ("PyAV decode only", lambda: decode_only(dist)),
            ("decode + luma extraction", lambda: decode_luma(dist)),
            ("vqmon score, NR signals", lambda: score_file(dist, device=args.device).frames_seen),
            ("vqmon score, NR + FR (--ref)", lambda: score_file(dist, ref=ref, device=args.device).frames_seen),
            ("vqmon score, NR + FR, --sample 5fps",
             lambda: score_file(dist, ref=ref, sampler=Sampler.parse("5fps"), device=args.device).frames_seen),
        ]
        decode_only(dist)  # warm the page cache and codec init
        results = [(name, *timed(fn)) for name, fn in rows]
    base = results[0][2] / results[0][1]
    table = Table(title=f"{args.width}×{args.height} H.264, {n} frames, {os.cpu_count()} CPU cores, device {args.device}")
    for col in ("path", "frames", "seconds", "frames/s", "× decode-only"):
        table.add_column(col, justify="left" if col == "path" else "right")
    for name, secs, frames in results:
        table.add_row(name, str(frames), f"{secs:.2f}", f"{frames / secs:.1f}", f"{frames / secs / base:.2f}")
    Console(width=120).print(table)


if __name__ == "__main__":
    main()
