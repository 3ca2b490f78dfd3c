"""The `vqmon` command line: subcommands and their flags (the commands themselves are in `commands`)."""
from __future__ import annotations

import argparse
import os

from monitor import __version__
from monitor.cli import commands

SAMPLE_HELP = "which frames to score: all (default), N (every Nth decoded frame) or Xfps (at most X per second)"
WINDOW_HELP = "window size (default 2s), or size/hop for sliding windows (e.g. 10s/1s), on media time"
DEVICE_HELP = "cpu, cuda, cuda:N or auto (default: cuda when there is one)"
MODEL_HELP = ("also score with a quality model (repeatable): e.g. liqe, gsn/lite:ckpt.safetensors, nemg:untrained; "
              "see `vqmon models`")


def _vmaf_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--vmaf", action="store_true", help="also score fr.vmaf (libvmaf in imageio-ffmpeg's FFmpeg) "
                                                      "on frames with a reference")
    p.add_argument("--vmaf-model", metavar="NAME|FILE", help="libvmaf model: vmaf_v0.6.1 (default), vmaf_v0.6.1neg, "
                                                            "vmaf_4k_v0.6.1, or a model .json file")
    p.add_argument("--vmaf-threads", type=int, metavar="N", help="libvmaf threads (default 2)")
    p.add_argument("--max-pixels", type=int, metavar="N", help="refuse frames larger than N pixels (width × height; "
                                                              "default 7680×4320): each queued frame costs memory")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vqmon", description="Video quality monitor")
    p.add_argument("--version", action="version", version=f"vqmon {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("score", help="score a video file frame by frame and window by window")
    s.add_argument("video", help="video file (any container/codec FFmpeg reads), local or s3://, gs://, az://")
    s.add_argument("--ref", help="reference file for full-reference metrics (paired by pts, scaled to the video's size)")
    s.add_argument("--ref-offset", type=int, default=0, metavar="N",
                   help="reference frame i+N pairs with video frame i (default 0)")
    s.add_argument("--sample", default="all", help=SAMPLE_HELP)
    s.add_argument("--window", default="2s", help=WINDOW_HELP)
    s.add_argument("--out", help="output folder or bucket prefix for records ('-' = stdout with --format jsonl)")
    s.add_argument("--format", choices=("parquet", "jsonl"), default="parquet",
                   help="records as Parquet datasets or JSON lines (default parquet)")
    s.add_argument("--device", default="auto", help=DEVICE_HELP)
    s.add_argument("--batch", type=int, default=8, help="frames per scoring batch (default 8)")
    s.add_argument("--model", action="append", default=[], metavar="NAME[/VARIANT][:WEIGHTS]", help=MODEL_HELP)
    _vmaf_flags(s)
    s.add_argument("--alerts", metavar="FILE", help="YAML/JSON list of alert rules; events go with the records")
    s.add_argument("--report", action="store_true", help="also write OUT/report.html (see `vqmon report`)")
    s.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    s.set_defaults(func=commands.cmd_score)

    r = sub.add_parser("report", help="one self-contained HTML report over the Parquet output of score or watch")
    r.add_argument("results", help="the --out folder (or bucket prefix) of vqmon score, watch or batch")
    r.add_argument("--out", default="report.html", help="HTML file to write (default report.html)")
    r.add_argument("--alerts", metavar="FILE", help="alert rules, for the time-below-threshold columns")
    r.set_defaults(func=commands.cmd_report)

    w = sub.add_parser("watch", help="monitor live streams (or files in real time): score, window, alert, publish")
    w.add_argument("url", nargs="?", help="rtmp://, rtsp://, srt://, udp://, http(s)://….m3u8 or a file")
    w.add_argument("--config", help="YAML/JSON file of streams and sinks (see monitor/config.py)")
    w.add_argument("--id", help="stream id (default: from the URL)")
    w.add_argument("--listen", action="store_true", help="listen for a push (RTMP/SRT) instead of pulling")
    w.add_argument("--realtime", action="store_true", help="play a file at its frame rate")
    w.add_argument("--ref", help="reference stream or file, aligned automatically, for FR metrics")
    w.add_argument("--sample", default="all", help=SAMPLE_HELP + " (lowered while behind, see --max-lag)")
    w.add_argument("--window", default="2s", help=WINDOW_HELP)
    w.add_argument("--model", action="append", default=[], metavar="NAME[/VARIANT][:WEIGHTS]", help=MODEL_HELP)
    _vmaf_flags(w)
    w.add_argument("--alerts", metavar="FILE", help="YAML/JSON list of alert rules")
    w.add_argument("--out", help="Parquet output folder (files roll every 60 s)")
    w.add_argument("--kafka", metavar="HOST:PORT", help="publish records to Kafka")
    w.add_argument("--topic-prefix", default="vqmon", help="Kafka topics PREFIX.frames, .windows, .alerts, .events "
                                                          "(default vqmon)")
    w.add_argument("--spool", default="vqmon-spool", help="where records wait while Kafka is unreachable (default vqmon-spool)")
    w.add_argument("--otel", choices=("console", "otlp"), help="OpenTelemetry metrics exporter")
    w.add_argument("--prometheus", metavar="HOST:PORT", help="serve the metrics at http://HOST:PORT/metrics")
    w.add_argument("--jsonl", metavar="FILE_OR_DASH", help="also write JSON lines (folder, or - for stdout)")
    w.add_argument("--http", metavar="[HOST:]PORT", help="serve a status page, /status.json, /metrics and /healthz "
                                                     "(host 127.0.0.1 unless given)")
    w.add_argument("--device", default="auto", help=DEVICE_HELP)
    w.add_argument("--max-reconnects", type=int, help="give up after N failed reconnects (default: never)")
    w.add_argument("--max-lag", metavar="DURATION", help="a live stream whose frames wait longer than this to be "
                                                       "scored is behind (default 2s)")
    w.add_argument("--no-adaptive", action="store_true", help="keep the --sample rate while behind (default: lower "
                                                              "it to what scoring sustains, raise it back later)")
    w.add_argument("--duration", type=float, help="stop after this many seconds (demos, tests)")
    w.add_argument("-q", "--quiet", action="store_true", help="no status line")
    w.set_defaults(func=commands.cmd_watch)

    lv = sub.add_parser("live", help="run a watch config's streams as monitors on a Ray cluster (again = reload)")
    lv.add_argument("--config", help="YAML/JSON watch config (see monitor/config.py, section ray:)")
    lv.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS, else a local Ray)")
    lv.add_argument("--detach", action="store_true", help="leave the supervisor running on the cluster and return")
    lv.add_argument("--stop", action="store_true", help="stop the running supervisor and its monitors")
    lv.add_argument("-q", "--quiet", action="store_true", help="no status table")
    lv.set_defaults(func=commands.cmd_live)

    st = sub.add_parser("status", help="per-stream state of the monitors on a Ray cluster")
    st.add_argument("--address", default="auto", help="Ray cluster address (default: auto)")
    st.set_defaults(func=commands.cmd_status)

    b = sub.add_parser("batch", help="score a folder, bucket prefix or CSV manifest of files on Ray Data (resumable)")
    b.add_argument("source", help="folder or bucket prefix of videos (recursive; s3://, gs://, az://), or a CSV "
                                  "manifest with columns video[,ref][,stream_id]")
    b.add_argument("--out", required=True, help="output folder or bucket prefix: Parquet records, summaries/, "
                                                "_ledger.jsonl")
    b.add_argument("--ref-rule", metavar="TEMPLATE",
                   help="reference per video by name, e.g. '../refs/{rel}{ext}' ({dir} {stem} {ext} {rel})")
    b.add_argument("--dry-run", action="store_true", help="list what would be scored and what is already done; "
                                                          "write nothing")
    b.add_argument("--local", action="store_true", help="score in this process, one file after another, without "
                                                        "Ray (same output)")
    b.add_argument("--time-limit", metavar="DURATION", help="a file still being scored after this long fails, "
                                                            "e.g. 30m (default: no limit)")
    b.add_argument("--retries", type=int, default=2, help="further tries of a file whose scoring failed other than "
                                                          "by its own fault: a store error, a crashed actor (default 2)")
    b.add_argument("--retry-failed", action="store_true", help="score files that failed in an earlier run again")
    b.add_argument("--actors", type=int, help="scoring actors (default: one per GPU, else 1)")
    b.add_argument("--gpus-per-actor", type=float, help="GPU share per actor (default: 1 with GPUs, else 0)")
    b.add_argument("--cpus-per-actor", type=float, help="CPUs per actor (default 1)")
    b.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS, else a local Ray)")
    for flag, default in (("--sample", "all"), ("--window", "2s"), ("--device", "auto")):
        b.add_argument(flag, default=default, help=f"as for `vqmon score` (default {default})")
    b.add_argument("--batch", type=int, default=8, help="frames per scoring batch (default 8)")
    b.add_argument("--model", action="append", default=[], metavar="NAME[/VARIANT][:WEIGHTS]", help=MODEL_HELP)
    _vmaf_flags(b)
    b.add_argument("-q", "--quiet", action="store_true", help="no progress display")
    b.set_defaults(func=commands.cmd_batch)

    e = sub.add_parser("eval", help="correlate quality models (and baselines) with labels: SRCC, KRCC, PLCC, RMSE")
    e.add_argument("model", nargs="+", metavar="MODEL", help="NAME[/VARIANT][:WEIGHTS] as for score --model")
    e.add_argument("--csv", action="append", default=[],
                   help="labels: path,mos (NR) or dist,ref,mos (FR); paths relative to the CSV (repeatable)")
    e.add_argument("--corpus", metavar="DIR", action="append", default=[],
                   help="distortion corpus (DIR/corpus.parquet), VMAF teacher labels (repeatable; with --csv: one table)")
    e.add_argument("--split", choices=("train", "val"), default="val", help="corpus split (default val)")
    e.add_argument("--per-subset", type=int, metavar="N", help="corpus: at most N items per subset, evenly spaced")
    e.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    e.add_argument("--batch", type=int, default=16, help="images per batch (default 16)")
    e.add_argument("--boot", type=int, default=1000, help="bootstrap resamples for the CIs (0: none; default 1000)")
    e.add_argument("--no-baselines", action="store_true", help="leave out PSNR-Y/SSIM-Y/VMAF (FR) and NIQE/variance of the Laplacian (NR)")
    e.add_argument("--out", help="also write the table: .csv (raw numbers) or .md (Markdown)")
    e.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    e.set_defaults(func=commands.cmd_eval)

    md = sub.add_parser("models", help="list the quality models: kind, range, params, GMACs, weights")
    md.add_argument("--cost", action="store_true", help="also build every model to count its parameters and "
                                                         "GMACs (takes seconds per model)")
    md.set_defaults(func=commands.cmd_models)

    m = sub.add_parser("sample", help="write a demo reference/distorted clip pair (panned photo, x264)")
    m.add_argument("out_dir", help="folder for reference.mp4 and distorted.mp4")
    m.add_argument("--width", type=int, default=640, help="frame width (default 640)")
    m.add_argument("--height", type=int, default=360, help="frame height (default 360)")
    m.add_argument("--seconds", type=int, default=8, help="clip length at 25 fps (default 8)")
    m.set_defaults(func=commands.cmd_sample)

    c = sub.add_parser("corpus", help="build a synthetic distortion corpus with VMAF labels from pristine content")
    c.add_argument("pristine", help="folder of pristine images/videos, in subfolders named by --train/--val")
    c.add_argument("--out", required=True, help="corpus folder: items, corpus.parquet (a rerun resumes)")
    c.add_argument("--seed", type=int, default=0, help="draws of distortions and levels (default 0)")
    c.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1),
                   help="encoding/labelling processes (default: 2, or 1 on a 1-core machine)")
    c.add_argument("--train", nargs="*", metavar="SUBFOLDER",
                   help="subfolders to train on (default: bsds500/train bsds500/val urban100 sunhays80; "
                        "none: `--train` alone, e.g. to build only held-out video)")
    c.add_argument("--val", nargs="+", metavar="SUBFOLDER",
                   help="subfolders held out for validation (default: bsds500/test kodak24 video)")
    c.set_defaults(func=commands.cmd_corpus)

    t = sub.add_parser("train", help="train a quality model on a corpus (resumes from OUT/checkpoint.pt)")
    t.add_argument("model", help="nemg, mfenet, liqe or gsn, optionally /lite (default) or /paper (wants a GPU)")
    t.add_argument("--data", required=True, help="corpus folder (vqmon corpus)")
    t.add_argument("--out", required=True, help="run folder: checkpoint.pt, NAME-VARIANT.safetensors")
    t.add_argument("--steps", type=int, help="optimizer steps (default: the recipe's)")
    t.add_argument("--minutes", type=float, help="wall-clock budget: fit the step count to it")
    t.add_argument("--batch", type=int, help="items per step (default: the recipe's)")
    t.add_argument("--lr", type=float, help="peak learning rate (default: the recipe's)")
    t.add_argument("--seed", type=int, default=0,
                   help="initialisation, training crops and batch order (default 0); lite recipes build a "
                        "feature cache per seed (17 GB on the full corpus)")
    t.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    t.add_argument("--checkpoint-every", type=int, default=100, help="steps between checkpoints (default 100)")
    t.add_argument("--val-items", type=int, default=120,
                   help="validation items scored for the SRCC shown (default 120)")
    t.set_defaults(func=commands.cmd_train)
    return p
