"""Throughput of `vqmon batch`: local folder vs S3 server, Ray Data vs the previous actor pool vs plain `score_file`.

One run scores the same clips every way, with the same options, into Parquet:
- plain `score_file` in a loop (what `vqmon score` runs per file), and `vqmon batch --local`;
- `vqmon batch` on Ray Data (2 actors), and the hand-made actor pool it replaced (2 actors; kept
  here only, from `git show main:pipelines/batch.py`, around the same per-file scoring and ledger);
- each from a local folder into a local folder, and from a bucket into a bucket of a real
  S3-compatible server on loopback (moto, tests/s3.py): decoding reads the objects through a
  seekable remote file object, no local copy;
- decode only (PyAV, no scoring): local file vs the remote file object (with vqmon's 1 MiB reads and
  PyAV's default 32 KiB ones) vs a presigned URL read by FFmpeg's HTTP client.
Ray rows include starting the actors (process spawn, imports; a row of two one-frame files
measures that alone); Ray itself is started before the clock. Rounds interleave the rows; each
row keeps its fastest round.
With --model NAME (repeatable) every path also runs that quality model, as `vqmon batch --model` would.
Usage: python bench/batch_throughput.py [--files 6] [--seconds 8] [--width 640 --height 360] [--repeat 3] [--model liqe]
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
import uuid

import av
import ray
from rich.console import Console
from rich.table import Table

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))
from s3 import s3_server  # noqa: E402

from monitor import archive, storage  # noqa: E402
from monitor.build import load_model, score_file  # noqa: E402
from monitor.config import parse_models  # noqa: E402
from monitor.samples import encode, panned_frames  # noqa: E402
from monitor.sinks.parquet import ParquetSink  # noqa: E402
from monitor.source.sources import REMOTE_READ  # noqa: E402
from pipelines.batch import run_batch  # noqa: E402

BUCKET_IN, BUCKET_OUT = "bench-archive", "bench-results"


def plain(paths: list[str], out: str, opts: archive.BatchOptions, models: list) -> int:
    return sum(score_file(opts.stream(archive.Job(p, os.path.splitext(os.path.basename(p))[0])),
                          [ParquetSink(out)], device="cpu", models=models).frames_seen for p in paths)


def frames_of(result: archive.BatchResult) -> int:
    assert not result.failed, result.failed
    return sum(e["frames"] for e in result.scored)


@ray.remote
class PoolScorer:
    """A member of the actor pool `vqmon batch` ran before Ray Data: models load once, files come one at a time."""

    def __init__(self, out: str, opts: archive.BatchOptions):
        self.out, self.opts = out, opts
        self.models = [load_model(spec, "cpu") for spec in opts.models]

    def score(self, job: archive.Job) -> dict:
        return archive.score_job(job, self.out, self.opts, self.models, "cpu")


def previous_pool(p: archive.Plan, opts: archive.BatchOptions, actors: int) -> archive.BatchResult:
    """The previous scheduling: ray.wait on one file per actor, the next file to whichever actor is free."""
    def score_all(todo):
        pool = [PoolScorer.options(num_cpus=1).remote(p.out, opts) for _ in range(min(actors, len(todo)))]
        pending, inflight = list(reversed(todo)), {}

        def submit(actor) -> None:
            if pending:
                inflight[actor.score.remote(pending.pop())] = actor

        for actor in pool:
            submit(actor)
        try:
            while inflight:
                [ref], _ = ray.wait(list(inflight), num_returns=1)
                actor = inflight.pop(ref)
                yield ray.get(ref)
                submit(actor)
        finally:
            for actor in pool:
                ray.kill(actor)

    return archive.run(p, score_all)


def decode(target, **kw) -> int:
    n = 0
    with av.open(target, metadata_errors="ignore", **kw) as c:
        c.streams.video[0].thread_type = "AUTO"
        for _ in c.decode(video=0):
            n += 1
    return n


def decode_remote(urls: list[str], buffer_size: int) -> int:
    total = 0
    for url in urls:
        with storage.open_input(url) as f:
            total += decode(f, buffer_size=buffer_size)
    return total


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=6)
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--height", type=int, default=360)
    ap.add_argument("--repeat", type=int, default=3, help="rounds over all rows; each row keeps its fastest")
    ap.add_argument("--model", action="append", default=[], help="a quality model every path also runs (repeatable)")
    args = ap.parse_args()
    opts = archive.BatchOptions(device="cpu", models=parse_models(args.model))
    models = [load_model(spec, "cpu") for spec in opts.models]
    n = int(args.seconds * 25)
    with tempfile.TemporaryDirectory() as d, s3_server(BUCKET_IN, BUCKET_OUT) as s3:
        folder = os.path.join(d, "in")
        paths = [encode(os.path.join(folder, f"clip{i:02d}.mp4"), panned_frames(args.width, args.height, n),
                        crf=20 + i % 4 * 6, options={"preset": "veryfast"}) for i in range(args.files)]
        for p in paths:
            s3.upload_file(p, BUCKET_IN, f"in/{os.path.basename(p)}")
        tiny = os.path.join(d, "tiny")  # the fixed cost of a Ray run: actors start, import torch and vqmon
        for i in range(2):
            encode(os.path.join(tiny, f"one{i}.mp4"), panned_frames(args.width, args.height, 1))
        urls = [f"s3://{BUCKET_IN}/in/{os.path.basename(p)}" for p in paths]
        presigned = [s3.generate_presigned_url("get_object", Params={"Bucket": BUCKET_IN, "Key": u.split("/", 3)[3]},
                                               ExpiresIn=3600) for u in urls]
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False, logging_level="ERROR")
        ray.data.DataContext.get_current().enable_progress_bars = False
        logging.getLogger("ray.data").setLevel(logging.WARNING)  # no line per dataset run

        def local_out() -> str:
            return os.path.join(d, "out", uuid.uuid4().hex)  # a fresh OUT per try: else the ledger skips every file

        def s3_out() -> str:
            return f"s3://{BUCKET_OUT}/{uuid.uuid4().hex}"

        src = {"local": folder, "S3": f"s3://{BUCKET_IN}/in"}
        out = {"local": local_out, "S3": s3_out}
        n_files = args.files
        rows = [("decode only", "local", n_files, lambda: sum(decode(p) for p in paths)),
                ("decode only, remote file object (1 MiB reads)", "S3", n_files,
                 lambda: decode_remote(urls, REMOTE_READ)),
                ("decode only, remote file object (32 KiB reads)", "S3", n_files, lambda: decode_remote(urls, 32768)),
                ("decode only, presigned URL (FFmpeg HTTP)", "S3", n_files, lambda: sum(decode(u) for u in presigned))]
        for where in ("local", "S3"):
            rows += [
                ("plain score_file, in a loop", where, n_files,
                 lambda w=where: plain(paths if w == "local" else urls, out[w](), opts, models)),
                ("vqmon batch --local", where, n_files,
                 lambda w=where: frames_of(archive.run_local(archive.plan(src[w], out[w]()), opts))),
                ("vqmon batch, Ray Data, 2 actors", where, n_files,
                 lambda w=where: frames_of(run_batch(archive.plan(src[w], out[w]()), opts, actors=2, progress=False))),
                ("previous actor pool, 2 actors", where, n_files,
                 lambda w=where: frames_of(previous_pool(archive.plan(src[w], out[w]()), opts, 2))),
            ]
        rows.append(("vqmon batch, Ray Data, 2 actors: start-up (2 one-frame files)", "local", 2,
                     lambda: frames_of(run_batch(archive.plan(tiny, local_out()), opts, actors=2, progress=False))))
        plain(paths[:1], local_out(), opts, models)  # page cache, torch and codec init
        best: dict[tuple[str, str], tuple[int, float]] = {}
        for _ in range(args.repeat):
            for name, where, _, fn in rows:
                t = time.perf_counter()
                frames = fn()
                secs = time.perf_counter() - t
                if (name, where) not in best or secs < best[name, where][1]:
                    best[name, where] = (frames, secs)
        ray.shutdown()
    base = best["plain score_file, in a loop", "local"][1]
    table = Table(title=f"best of {args.repeat}: {args.files} files × {n} frames, {args.width}×{args.height} H.264, "
                        f"NR signals{''.join(f' + {m}' for m in args.model)}, {os.cpu_count()} CPU cores, CPU")
    for col in ("path", "files from → to", "frames", "seconds", "frames/s", "files/min", "time × plain local"):
        table.add_column(col, justify="left" if col in ("path", "files from → to") else "right")
    for name, where, files, _ in rows:
        frames, secs = best[name, where]
        table.add_row(name, where if name.startswith("decode") else f"{where} → {where}", str(frames), f"{secs:.2f}",
                      f"{frames / secs:.1f}", f"{files / secs * 60:.1f}", f"{secs / base:.2f}")
    Console(width=160).print(table)


if __name__ == "__main__":
    main()
