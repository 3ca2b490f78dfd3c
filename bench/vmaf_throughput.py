"""fr.vmaf in vqmon against FFmpeg's own libvmaf run: throughput, agreement, chunk boundaries and live latency, in one run.

    python bench/vmaf_throughput.py [--clip VIDEO] [--frames 100] [--rounds 2] [--live-seconds 10]

1. fps of `vqmon score --ref` without and with `--vmaf` at 720p and 1080p, beside FFmpeg's own
   `libvmaf=n_threads=2` on the same pair (it decodes the files itself); interleaved rounds,
   best of `--rounds`. The same runs give the agreement: max |Δ| per frame, vqmon vs FFmpeg.
2. Chunk boundaries (720p, chunks of `--chunk` seconds): how far chunked values are from one
   whole run with the one-frame overlap vqmon uses, and without it (disjoint libvmaf runs: the
   first frame of a chunk has no predecessor, so its motion term is 0, and the last frame's
   motion2 is not capped by its successor's motion).
3. Live latency: a 720p file replayed at its frame rate (LiveSource realtime, 2 s chunks as
   `vqmon watch`): seconds from a frame's arrival to its fr.vmaf record.

Content: a panned photo, or `--clip` (e.g. ../shared/data/pristine/video/cockatoo.mp4) as in
score_throughput.py; distorted = x264 CRF 23, reference = CRF 12, veryfast.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import imageio_ffmpeg
import numpy as np
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from monitor.build import score_file  # noqa: E402
from monitor.config import StreamConfig  # noqa: E402
from monitor.pipeline import StreamPipeline  # noqa: E402
from monitor.records import FrameScore  # noqa: E402
from monitor.samples import encode  # noqa: E402
from monitor.scoring.scorers import SignalScorer, pick_device  # noqa: E402
from monitor.scoring.vmaf import FILE_CHUNK_S, LIVE_CHUNK_S, VmafOptions, VmafProcess  # noqa: E402
from monitor.sinks import Sinks  # noqa: E402
from monitor.source.align import ReferencePairer  # noqa: E402
from monitor.source.sources import FileSource, LiveSource  # noqa: E402
from score_throughput import SIZES, clip_frames  # noqa: E402

console = Console(width=160)
VQMON, FFMPEG = "vqmon score --ref --vmaf", "FFmpeg libvmaf, 2 threads (decodes itself)"


class Collect:
    def __init__(self):
        self.records = []

    def write(self, records):
        self.records += [r for r in records if isinstance(r, FrameScore) and r.metric == "fr.vmaf"]

    def close(self):
        pass


def vqmon_values(dist: str, ref: str, vmaf: bool = True, chunk_s: float = FILE_CHUNK_S) -> tuple[np.ndarray, float]:
    """Per-frame fr.vmaf of `vqmon score --ref [--vmaf]` and its fps (wall clock of the whole call, as for FFmpeg)."""
    sink = Collect()
    start = time.perf_counter()
    s = score_file(StreamConfig(dist, ref=ref, vmaf=VmafOptions(chunk_s=chunk_s) if vmaf else None), device="cpu", sinks=[sink])
    fps = s.frames_seen / (time.perf_counter() - start)
    return np.array([r.value for r in sorted(sink.records, key=lambda r: r.frame_index)]), fps


def ffmpeg_values(dist: str, ref: str) -> tuple[np.ndarray, float]:
    """Per-frame VMAF of FFmpeg's own run and its fps."""
    start = time.perf_counter()
    p = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-nostdin", "-i", dist, "-i", ref, "-lavfi",
                        "[0:v][1:v]libvmaf=n_threads=2:log_fmt=json:log_path=/dev/stdout", "-f", "null", "-"],
                       check=True, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    values = np.array([f["metrics"]["vmaf"] for f in json.loads(p.stdout)["frames"]])
    return values, len(values) / seconds


def disjoint_chunks(dist: str, ref: str, chunk: int) -> np.ndarray:
    """VMAF with libvmaf run on disjoint chunks of `chunk` frames (no overlap): what the overlap avoids."""
    out, proc = [], None
    with FileSource(dist) as d, FileSource(ref) as r:
        for k, (f, g) in enumerate(zip(d, r)):
            if k % chunk == 0:
                if proc:
                    proc.close()
                    out.append(proc.result())
                proc = VmafProcess(VmafOptions(), f.width, f.height, "yuv420p")
            proc.feed(f.yuv420(), g.yuv420())
        proc.close()
        out.append(proc.result())
    return np.concatenate(out)


def live_latency(dist: str, ref: str) -> np.ndarray:
    """Seconds from each frame's arrival (ingest_ts) to its fr.vmaf record, replaying `dist` at its frame rate."""
    lat = []

    def seen(r) -> None:
        if isinstance(r, FrameScore) and r.metric == "fr.vmaf":
            lat.append(time.time() - r.ingest_ts.timestamp())

    with LiveSource(dist, realtime=True) as src, FileSource(ref) as ref_src:
        pipe = StreamPipeline(src, sinks=Sinks(), pairer=ReferencePairer(ref_src),
                              scorers=[SignalScorer(pick_device("cpu"))], summarise=False, on_record=seen,
                              vmaf=VmafOptions(chunk_s=LIVE_CHUNK_S))
        pipe.run()
    return np.array(lat)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clip", help="natural video to take the content from (default: a panned photo)")
    ap.add_argument("--frames", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=2, help="interleaved rounds; each row's best round is shown")
    ap.add_argument("--chunk", type=float, default=0.4, help="chunk length for the boundary measurement (s)")
    ap.add_argument("--live-seconds", type=int, default=10)
    args = ap.parse_args()
    content = Path(args.clip).name if args.clip else "panned photo"
    with tempfile.TemporaryDirectory() as d:
        clips = {}
        for size, (w, h) in SIZES.items():
            opts = {"preset": "veryfast"}
            clips[size] = {"dist": encode(os.path.join(d, f"{size}.mp4"), clip_frames(args.clip, w, h, args.frames),
                                          crf=23, options=opts),
                           "ref": encode(os.path.join(d, f"{size}-ref.mp4"), clip_frames(args.clip, w, h, args.frames),
                                         crf=12, options=opts)}
        rows = {
            "vqmon score --ref": lambda c: vqmon_values(c["dist"], c["ref"], vmaf=False),
            VQMON: lambda c: vqmon_values(c["dist"], c["ref"]),
            FFMPEG: lambda c: ffmpeg_values(c["dist"], c["ref"]),
        }
        best: dict[tuple[str, str], float] = {}
        values: dict[tuple[str, str], np.ndarray] = {}
        for _ in range(args.rounds):
            for label, fn in rows.items():
                for size, c in clips.items():
                    v, fps = fn(c)
                    best[label, size] = max(best.get((label, size), 0.0), fps)
                    values[label, size] = v
        table = Table(title=f"{content}, x264 CRF 23 vs CRF 12, {args.frames} frames, {os.cpu_count()} CPU cores, "
                            f"best of {args.rounds} interleaved rounds")
        table.add_column("path")
        for size in SIZES:
            table.add_column(f"{size} fps", justify="right")
        for label in rows:
            table.add_row(label, *(f"{best[label, s]:.1f}" for s in SIZES))
        table.add_row("max |Δ| per frame, vqmon vs FFmpeg",
                      *(f"{np.abs(values[VQMON, s] - values[FFMPEG, s]).max():.2g}" for s in SIZES))
        console.print(table)

        c = clips["720p"]
        whole = values[FFMPEG, "720p"]
        overlap, _ = vqmon_values(c["dist"], c["ref"], chunk_s=args.chunk)
        chunk = round(args.chunk * 25)
        disjoint = disjoint_chunks(c["dist"], c["ref"], chunk)
        pos = np.arange(len(whole)) % chunk
        first, last = (pos == 0) & (np.arange(len(whole)) > 0), (pos == chunk - 1) & (np.arange(len(whole)) < len(whole) - 1)
        table = Table(title=f"chunk boundaries: 720p, chunks of {chunk} frames ({args.chunk:g} s), "
                            f"{int(first.sum())} boundaries; |Δ| against one whole FFmpeg run")
        for col in ("chunks", "frames", "mean |Δ|", "max |Δ|"):
            table.add_column(col, justify="left" if col in ("chunks", "frames") else "right")
        for label, v in (("overlap by one frame (vqmon)", overlap), ("disjoint (no overlap)", disjoint)):
            for where, sel in (("first of a chunk", first), ("last of a chunk", last), ("all others", ~(first | last))):
                delta = np.abs(v[sel] - whole[sel])
                table.add_row(label, where, f"{delta.mean():.3g}", f"{delta.max():.3g}")
        console.print(table)

        n = args.live_seconds * 25
        live = {"dist": encode(os.path.join(d, "live.mp4"), clip_frames(args.clip, 1280, 720, n), crf=23,
                               options={"preset": "veryfast"}),
                "ref": encode(os.path.join(d, "live-ref.mp4"), clip_frames(args.clip, 1280, 720, n), crf=12,
                              options={"preset": "veryfast"})}
        lat = live_latency(live["dist"], live["ref"])
        console.print(f"live latency, 720p25 replayed in real time, {LIVE_CHUNK_S:g} s chunks, {len(lat)} fr.vmaf "
                      f"records: frame arrival → record p50 {np.percentile(lat, 50):.2f} s, "
                      f"p95 {np.percentile(lat, 95):.2f} s, max {lat.max():.2f} s, min {lat.min():.2f} s")


if __name__ == "__main__":
    main()
