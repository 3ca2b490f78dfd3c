"""Throughput of `vqmon score` against PyAV decode alone and FFmpeg's own filters, at 720p and 1080p, in one run.

Every row is measured in interleaved rounds (best of `--rounds`) on the same clips, and shown as
frames/s and as a ratio to decode-only fps of that size: ratios survive a noisy machine better
than absolute numbers. "before" rows run the batched torch signals on the CPU (what `vqmon
score` ran until the OpenCV kernels; still the CUDA path), "after" rows what it runs now.

    python bench/score_throughput.py [--clip VIDEO] [--frames 100] [--rounds 2] [--no-models] [--only TEXT]

Without --clip the content is a panned photo (scikit-image); `--clip` takes natural video (e.g.
../shared/data/pristine/video/cockatoo.mp4), re-encoded with x264 CRF 23 at 720p and scaled to 1080p.
The reference of the FR rows is the same content at CRF 12.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as `vqmon` sets it before torch loads (monitor/cli.py)

import av
import imageio_ffmpeg
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from models import registry  # noqa: E402
from models.table import default_weights  # noqa: E402
from monitor.build import score_file  # noqa: E402
from monitor.config import StreamConfig  # noqa: E402
from monitor.config import parse_sample  # noqa: E402
from monitor.samples import encode, panned_frames  # noqa: E402
from monitor.source.align import ReferencePairer  # noqa: E402
from monitor.source.sources import FileSource  # noqa: E402

SIZES = {"720p": (1280, 720), "1080p": (1920, 1080)}
MODEL_SIZES = ("720p",)  # the lite models are timed at 720p (the target size), on --model-frames frames
NR_FILTERS = "signalstats,blackdetect=d=0.1,freezedetect,blockdetect,blurdetect"


def clip_frames(path: str | None, width: int, height: int, count: int):
    """RGB frames of `path` scaled to width×height (bicubic), or the panned photo."""
    if path is None:
        yield from panned_frames(width, height, count)
        return
    with av.open(path) as c:
        for i, f in enumerate(c.decode(video=0)):
            if i >= count:
                break
            yield f.reformat(width=width, height=height, format="rgb24", interpolation="BICUBIC").to_ndarray()


def decode(*paths: str) -> int:
    """Decode the files side by side, as the monitor does with a reference; frames of the first."""
    containers = [av.open(p) for p in paths]
    try:
        for c in containers:
            c.streams.video[0].thread_type = "AUTO"
        return sum(1 for _ in zip(*(c.decode(video=0) for c in containers)))
    finally:
        for c in containers:
            c.close()


def pair(dist_path: str, ref_path: str, motion: bool) -> int:
    """Decode both, pair every frame with its reference and read the pair's luma, measuring the reference's
    motion (GSN-lite's input) or not; frames paired."""
    dist = FileSource(dist_path)
    pairer = ReferencePairer(FileSource(ref_path, scale_to=(dist.info.width, dist.info.height)), motion=motion)
    try:
        return sum(1 for f in dist if (m := pairer.match(f)) is not None and f.y.size and m.reference.y.size)
    finally:
        dist.close()
        pairer.ref.close()


def ffmpeg(args: list[str], frames: int) -> int:
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-nostdin", *args, "-f", "null", "-"],
                   check=True, capture_output=True)
    return frames


def rows_for(clips: dict[str, dict[str, str]], frames: int, model_frames: int, models: bool) -> dict:
    """label → {size: callable returning the number of frames it processed}."""
    rows = {
        "PyAV decode only (threads AUTO)": {s: (lambda c=c: decode(c["dist"])) for s, c in clips.items()},
        "PyAV decode, video + reference": {s: (lambda c=c: decode(c["dist"], c["ref"])) for s, c in clips.items()},
    }
    for motion in (False, True):
        rows[f"pairing, video + reference{' + reference motion (GSN-lite)' if motion else ''}"] = {
            s: (lambda c=c, m=motion: pair(c["dist"], c["ref"], m)) for s, c in clips.items()}
    for when, kernels in (("before", "torch"), ("after", "auto")):
        rows[f"vqmon score, NR signals ({when})"] = {
            s: (lambda c=c, k=kernels: score_file(StreamConfig(c["dist"]), device="cpu", signal_kernels=k).frames_seen)
            for s, c in clips.items()}
        rows[f"vqmon score, NR + FR signals, --ref ({when})"] = {
            s: (lambda c=c, k=kernels: score_file(StreamConfig(c["dist"], ref=c["ref"]), device="cpu", signal_kernels=k).frames_seen)
            for s, c in clips.items()}
    rows["vqmon score, NR + FR, --sample 5fps (after)"] = {
        s: (lambda c=c: score_file(StreamConfig(c["dist"], ref=c["ref"], sample=parse_sample("5fps")), device="cpu").frames_seen)
        for s, c in clips.items()}
    rows[f"FFmpeg {NR_FILTERS.replace('=d=0.1', '')}"] = {
        s: (lambda c=c: ffmpeg(["-i", c["dist"], "-vf", NR_FILTERS], frames)) for s, c in clips.items()}
    rows["FFmpeg psnr+ssim (two inputs)"] = {
        s: (lambda c=c: ffmpeg(["-i", c["dist"], "-i", c["ref"], "-lavfi", "[0:v][1:v]psnr;[0:v][1:v]ssim"], frames))
        for s, c in clips.items()}
    rows["FFmpeg libvmaf, 2 threads"] = {
        s: (lambda c=c: ffmpeg(["-i", c["dist"], "-i", c["ref"], "-lavfi", "[0:v][1:v]libvmaf=n_threads=2"], frames))
        for s, c in clips.items()}
    if models:
        for name in registry.MODULES:
            model = registry.create(name, weights="default" if default_weights(name, "lite") else None)  # speed only
            fr = model.info.kind == "FR"
            rows[f"vqmon score --model {name}{' --ref' if fr else ''} (with the signals; {model_frames} frames)"] = {
                s: (lambda c=c, m=model, fr=fr: score_file(StreamConfig(c["short"], ref=c["ref"] if fr else None), device="cpu", models=[m]).frames_seen)
                for s, c in clips.items() if s in MODEL_SIZES}
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clip", help="natural video to take the content from (default: a panned photo)")
    ap.add_argument("--frames", type=int, default=100)
    ap.add_argument("--model-frames", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=2, help="interleaved rounds; each row's best round is shown")
    ap.add_argument("--no-models", dest="models", action="store_false")
    ap.add_argument("--only", action="append", default=[], metavar="TEXT",
                    help="run only the rows whose label contains TEXT (repeatable; decode-only always runs)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        clips = {}
        for size, (w, h) in SIZES.items():
            opts = {"preset": "veryfast"}
            clips[size] = {
                "dist": encode(os.path.join(d, f"{size}.mp4"), clip_frames(args.clip, w, h, args.frames), crf=23, options=opts),
                "ref": encode(os.path.join(d, f"{size}-ref.mp4"), clip_frames(args.clip, w, h, args.frames), crf=12, options=opts),
                "short": encode(os.path.join(d, f"{size}-short.mp4"), clip_frames(args.clip, w, h, args.model_frames),
                                crf=23, options=opts),
            }
        rows = rows_for(clips, args.frames, args.model_frames, args.models)
        if args.only:
            rows = {k: v for k, v in rows.items() if k.startswith("PyAV decode only") or any(t in k for t in args.only)}
        best: dict[tuple[str, str], float] = {}
        for _ in range(args.rounds):
            for label, per_size in rows.items():
                for size, fn in per_size.items():
                    start = time.perf_counter()
                    n = fn()
                    fps = n / (time.perf_counter() - start)
                    best[label, size] = max(best.get((label, size), 0.0), fps)
    base = {s: best["PyAV decode only (threads AUTO)", s] for s in SIZES}
    content = Path(args.clip).name if args.clip else "panned photo"
    table = Table(title=f"{content}, x264 CRF 23, {args.frames} frames, {os.cpu_count()} CPU cores, "
                        f"best of {args.rounds} interleaved rounds")
    table.add_column("path")
    for size in SIZES:
        table.add_column(f"{size} fps", justify="right")
        table.add_column("× decode", justify="right")
    for label in rows:
        cells = []
        for size in SIZES:
            fps = best.get((label, size))
            cells += [f"{fps:.1f}", f"{fps / base[size]:.2f}"] if fps else ["", ""]
        table.add_row(label, *cells)
    Console(width=160).print(table)


if __name__ == "__main__":
    main()
