"""`vqmon` command line. Exit codes: 0 ok, 1 some batch files failed (listed), 2 bad usage or input (one line on
stderr), 130 interrupted. Ray is imported only inside the Ray commands (live, status, batch)."""
from __future__ import annotations

import argparse
import math
import os
import re
import sys
import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from monitor.errors import InputError

# Before torch loads OpenMP (it reads this once): threads that finish a parallel region sleep instead of
# spinning. With the decoder, the signals and other processes on the same few cores, spinning threads
# take the cores from the ones with work left, and every region waits for a descheduled thread: on a
# busy 2-core machine a model ran up to 20× slower (bench/models_throughput.py measures it).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

err = Console(stderr=True, soft_wrap=True)


def _console(stderr: bool) -> Console:
    """Summary console: a pipe or log file gets a wide table instead of rich's 80-column default."""
    c = Console(stderr=stderr)
    return c if c.is_terminal else Console(stderr=stderr, width=160)


def parse_duration(text: str) -> float:
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|min)?\s*", text)
    if not m:
        raise InputError(f"{text!r}: expected a duration like 2s, 500ms or 1m")
    scale = {"ms": 0.001, "s": 1.0, None: 1.0, "m": 60.0, "min": 60.0}[m[2]]
    value = float(m[1]) * scale
    if value <= 0:
        raise InputError(f"{text!r}: a duration must be positive")
    return value


def parse_window(text: str):
    """'2s' → tumbling 2 s; '10s/1s' → sliding 10 s windows every 1 s."""
    from monitor.windows import WindowSpec

    size, _, hop = text.partition("/")
    spec = WindowSpec(parse_duration(size), parse_duration(hop) if hop else None)
    if spec.hop > spec.size_s:
        raise InputError(f"--window {text}: the hop must not exceed the window size")
    return spec


def _sinks(out: str | None, fmt: str):
    if out is None:
        return []
    if fmt == "jsonl":
        from monitor.sinks.jsonl import JsonlSink

        return [JsonlSink(out)]
    if out == "-":
        raise InputError("--out -: stdout takes --format jsonl only")
    from monitor.sinks.parquet import ParquetSink

    return [ParquetSink(out)]


def load_model(spec: str, device: str):
    """`name[/variant][:weights]`: weights = a checkpoint path, 'untrained', or omitted for the shipped default."""
    from models import registry
    from models.weights import WeightsError
    from monitor.scoring import pick_device

    head, _, weights = spec.partition(":")
    name, _, variant = head.partition("/")
    variant = variant or "lite"
    w = {"": "default", "untrained": None}.get(weights, weights)
    try:
        return registry.create(name, variant, weights=w, device=pick_device(device))
    except (KeyError, ValueError, WeightsError, FileNotFoundError) as e:
        msg = str(e).strip("'\"")
        if w == "default" and isinstance(e, WeightsError):
            msg += f" (on the command line: --model {head}:PATH or --model {head}:untrained)"
        raise InputError(f"--model {spec}: {msg}") from None


def vmaf_options(args, chunk_s: float):
    """VmafOptions from --vmaf/--vmaf-model/--vmaf-threads, checked against the FFmpeg binary (None without --vmaf)."""
    from monitor import vmaf

    _vmaf_flags_need_vmaf(args)
    if not args.vmaf:
        return None
    opts = vmaf.VmafOptions(args.vmaf_model or vmaf.BUILT_IN[0], args.vmaf_threads or 2, chunk_s)
    vmaf.check(opts)
    return opts


def _vmaf_flags_need_vmaf(args) -> None:
    for flag, v in (("--vmaf-model", args.vmaf_model), ("--vmaf-threads", args.vmaf_threads)):
        if v is not None and not args.vmaf:
            raise InputError(f"{flag} needs --vmaf")


def _vmaf_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--vmaf", action="store_true", help="also score fr.vmaf (libvmaf in imageio-ffmpeg's FFmpeg) "
                                                      "on frames with a reference")
    p.add_argument("--vmaf-model", metavar="NAME|FILE", help="libvmaf model: vmaf_v0.6.1 (default), vmaf_v0.6.1neg, "
                                                            "vmaf_4k_v0.6.1, or a model .json file")
    p.add_argument("--vmaf-threads", type=int, metavar="N", help="libvmaf threads (default 2)")


def cmd_score(args) -> int:
    from monitor.pipeline import score_file
    from monitor.sampling import Sampler
    from monitor.sources import FileSource
    from monitor.vmaf import FILE_CHUNK_S

    if args.report and (not args.out or args.out == "-" or args.format != "parquet"):
        raise InputError("--report needs --out DIR with Parquet output (the report is written next to it)")
    if args.vmaf and not args.ref:
        raise InputError("--vmaf needs --ref (VMAF compares with a reference)")
    sampler = Sampler.parse(args.sample)
    window = parse_window(args.window)
    vmaf = vmaf_options(args, FILE_CHUNK_S)
    with FileSource(args.video) as probe:  # a bad file fails here, before any model loads; sizes the bar
        stream_id, frames_estimate, fps = probe.stream_id, probe.info.frames_estimate, probe.info.fps or 25.0
    models = [load_model(spec, args.device) for spec in args.model]
    alerts = thumbnails = None
    if args.alerts:
        from monitor import config
        from monitor.alerts import AlertEngine, parse_rules
        from monitor.thumbnails import KEEP, ThumbnailStore

        if args.out and args.out != "-":
            # fr.vmaf comes a chunk late: hold that many more pictures for the evidence of its alerts
            keep = KEEP + (math.ceil(vmaf.chunk_s * fps) if vmaf else 0)
            thumbnails = ThumbnailStore(os.path.join(args.out, "thumbnails"), stream_id, keep=keep)
        alerts = AlertEngine(parse_rules(config.load_rules(args.alerts)), thumbnail=thumbnails)
    sinks = _sinks(args.out, args.format)
    show = _console(stderr=args.out == "-")
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeRemainingColumn(),
                  console=err, transient=True, disable=args.quiet) as progress:
        task = progress.add_task(os.path.basename(args.video), total=frames_estimate)

        def advance(n: int) -> None:
            progress.advance(task, n)

        summary = score_file(args.video, ref=args.ref, ref_offset=args.ref_offset, sampler=sampler, window=window,
                             sinks=sinks, device=args.device, batch_size=args.batch, models=models,
                             alerts=alerts, thumbnails=thumbnails, on_progress=advance, vmaf=vmaf)
    print_summary(summary, show, args.out)
    if args.report:
        from monitor.report import write_report, write_worst_thumbnails

        write_worst_thumbnails(args.out, args.video, stream_id)
        show.print(f"report: {write_report(args.out, os.path.join(args.out, 'report.html'), alerts and alerts.rules)}")
    return 0


def cmd_report(args) -> int:
    from monitor.report import write_report

    rules = None
    if args.alerts:
        from monitor import config
        from monitor.alerts import parse_rules

        rules = parse_rules(config.load_rules(args.alerts))
    if not os.path.isdir(args.results):
        raise InputError(f"{args.results}: no such results folder")
    print(write_report(args.results, args.out, rules))
    return 0


def print_summary(s, console: Console, out: str | None) -> None:
    i = s.info
    console.print(f"[bold]{s.source}[/]  {i.codec} {i.width}×{i.height} {i.pix_fmt}"
                  f"{f' {i.fps:.3g} fps' if i.fps else ''}  · sampled {s.sampling}")
    console.print(f"frames: {s.frames_seen} decoded, {s.frames_scored} scored in {s.elapsed_s:.1f} s "
                  f"({s.fps:.1f} fps)")
    table = Table(show_edge=False, header_style="bold")
    for col in ("metric", "unit", "frames", "mean", "p5", "min", "max", "worst frame"):
        table.add_column(col, justify="left" if col in ("metric", "unit", "worst frame") else "right")
    for m in s.metrics:
        table.add_row(m.metric, m.unit, str(m.count), _num(m.mean), _num(m.p5), _num(m.min), _num(m.max),
                      f"#{m.worst_index} @ {m.worst_pts_s:.3f}s")
    console.print(table)
    for seg in s.segments:
        console.print(f"[yellow]{seg.kind}[/]: {seg.start_s:.3f}–{seg.end_s:.3f} s (frames {seg.first_frame}–{seg.last_frame})")
    if s.reference:
        line = f"reference {s.reference}: {s.ref_paired} frames paired"
        if s.ref_unpaired:
            line += f", {s.ref_unpaired} without a reference"
            if s.ref_ended_at is not None:
                line += f" (the reference ended after {s.ref_ended_at} frames)"
        console.print(line, soft_wrap=True)  # paths make it long; a log reader greps it whole
    console.file.flush()
    if s.decode_errors:
        err.print(f"[red]warning[/]: {s.source}: {s.decode_errors} decode error(s) skipped; last: {s.last_error}")
    if s.scorer_errors:
        err.print(f"[red]warning[/]: {s.source}: {s.scorer_errors} VMAF chunk(s) failed, their frames have no "
                  f"fr.vmaf; last: {s.last_scorer_error}", highlight=False, markup=False)
    if out and out != "-":
        console.print(f"records written to {out}")


def _num(v: float) -> str:
    if math.isnan(v):
        return "—"
    return f"{v:.4g}" if abs(v) < 1e4 else f"{v:.3e}"


def cmd_models(args) -> int:
    from models import registry

    table = Table(show_edge=False, header_style="bold")
    for col in ("model", "kind", "native range", "better", "params (M)", "GMACs/224", "GMACs/1080p", "trained",
                "weights licence"):
        table.add_column(col, justify="right" if col.startswith(("params", "GMACs")) else "left")
    protocols = []
    for row in registry.list():
        label = f"{row['name']}/{row['variant']}"
        if "error" in row:
            table.add_row(label, "[red]unavailable[/]", row["error"])
            continue
        lo, hi = row["native_range"]
        table.add_row(label, row["kind"], f"{lo:g}..{hi:g}", "higher" if row["higher_is_better"] else "lower",
                      f"{row['params_m']:.2f}", f"{row['gmacs_224']:.2f}", f"{row['gmacs_1080p']:.1f}",
                      "yes" if row["trained"] else "no", row["weights_licence"])
        protocols.append(f"{label}: {row['protocol']}")
    console = _console(stderr=False)
    console.print(table)
    console.print("\n[bold]frame protocols[/]")
    for line in protocols:
        console.print(f"  {line}", highlight=False)
    return 0


def cmd_eval(args) -> int:
    from monitor.scoring import pick_device
    from pipelines.train import evaluate

    if args.out and not args.out.endswith((".csv", ".md")):
        raise InputError(f"--out {args.out}: expected a .csv or .md file")
    if not args.csv and not args.corpus:
        raise InputError("eval: give the labels with --csv FILE or --corpus DIR (or several)")
    sets = [(c, evaluate.read_csv(c)) for c in args.csv]
    sets += [(f"{d} (split {args.split}, VMAF teacher)", evaluate.read_corpus(d, args.split, args.per_subset))
             for d in args.corpus]
    items = [it for _, part in sets for it in part]
    from models import inference
    from monitor.scoring import keep_large_tensors_in_heap

    device = pick_device(args.device)
    if device.type == "cpu":
        keep_large_tensors_in_heap()
    models = {}
    for spec in args.model:
        model = inference.prepare(load_model(spec, args.device), device)  # the inference graph `score` runs
        models[evaluate.model_label(model)] = model
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=err, transient=True, disable=args.quiet) as progress:
        task = progress.add_task("scoring", total=len(items) * len(models))
        results = evaluate.evaluate_models(models, items, device=device, batch_size=args.batch,
                                           n_boot=args.boot, baselines=not args.no_baselines,
                                           on_progress=lambda n: progress.advance(task, n))
    cells, notes = evaluate.table_cells(results)
    table = Table(show_edge=False, header_style="bold")
    for col in evaluate.HEADER:
        table.add_column(col, justify="left" if col in ("method", "subset") else "right")
    for row in cells:
        table.add_row(*row)
    console = _console(stderr=False)
    for name, part in sets:
        console.print(f"[bold]{name}[/]: {len(part)} labelled images")
    console.print(table)
    for note in notes:
        console.print(note, highlight=False)
    if args.out:
        evaluate.write_table(results, args.out)
        console.print(f"table written to {args.out}")
    return 0


def watch_config(args):
    """The config file, or one stream from the command line (flags override the file's defaults for that stream)."""
    from monitor import config

    if args.config:
        if args.url:
            raise InputError("watch: give a URL or --config FILE, not both")
        cfg = config.load(args.config)
        cfg.http = args.http or cfg.http
        return cfg
    if not args.url:
        raise InputError("watch: give a stream URL or --config FILE")
    _vmaf_flags_need_vmaf(args)
    stream = {"url": args.url, "listen": args.listen, "realtime": args.realtime, "sample": args.sample,
              "window": args.window, "models": args.model}
    if args.id:
        stream["id"] = args.id
    if args.ref:
        stream["ref"] = args.ref
    if args.vmaf:
        stream["vmaf"] = True
    if args.vmaf_model is not None:
        stream["vmaf_model"] = args.vmaf_model
    if args.vmaf_threads is not None:
        stream["vmaf_threads"] = args.vmaf_threads
    if args.max_reconnects is not None:
        stream["max_reconnects"] = args.max_reconnects
    if args.max_lag is not None:
        stream["max_lag"] = args.max_lag
    if args.no_adaptive:
        stream["adaptive"] = False
    if args.alerts:
        stream["alerts"] = config.load_rules(args.alerts)
    sinks = {}
    if args.out:
        sinks["parquet"] = {"out": args.out}
    if args.kafka:
        sinks["kafka"] = {"bootstrap": args.kafka, "topic_prefix": args.topic_prefix, "spool": args.spool}
    if args.otel or args.prometheus:
        sinks["otel"] = {"exporter": args.otel, "prometheus": args.prometheus}
    if args.jsonl:
        sinks["jsonl"] = {"out": args.jsonl}
    return config.parse({"streams": [stream], "sinks": sinks, "device": args.device, "http": args.http},
                        source="command line")


def cmd_watch(args) -> int:
    import signal
    import threading

    from monitor.statuspage import StatusServer
    from monitor.watch import Watcher

    cfg = watch_config(args)
    watcher = Watcher(cfg)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        http = cfg.http and StatusServer(watcher, cfg.http)  # a taken port fails here, before any stream starts
    except InputError:
        watcher.close()
        raise
    if http:
        err.print(f"status page: {http.url}", highlight=False, markup=False)
    watcher.start()
    started = time.monotonic()
    try:
        while watcher.running() and not stop.is_set():
            if args.duration and time.monotonic() - started >= args.duration:
                break
            stop.wait(1.0)
            if not args.quiet:
                err.print(watcher.status_line(), highlight=False, markup=False)
    finally:
        watcher.stop()
        watcher.join(timeout=30)
        watcher.close()
        if http:
            http.close()
    err.print(f"vqmon watch: stopped; {watcher.status_line()}", highlight=False, markup=False)
    return 0


def _ray_init(address: str | None) -> None:
    """Connect to the cluster at `address` ('auto', ray://…), the one `ray job submit` names, or start Ray locally."""
    import ray

    ray.init(address=address, logging_level="WARNING", log_to_driver=False, ignore_reinit_error=True)


def cmd_live(args) -> int:
    """Streams of a watch config as StreamMonitor actors under a Supervisor (pipelines/live.py); reload = run again."""
    from monitor import config

    if not (args.config or args.stop):
        raise InputError("live: give --config FILE (or --stop)")
    cfg = config.load(args.config) if args.config else None
    _ray_init(args.address)
    import ray

    from pipelines import live

    if args.stop:
        sup = live.supervisor()
        ray.get(sup.shutdown.remote())
        ray.kill(sup)
        err.print("vqmon live: supervisor stopped; every monitor flushed its sinks")
        return 0
    sup, changes = live.start(cfg, detached=args.detach)
    err.print(f"vqmon live: {'reloaded: ' + str(changes) if changes else f'supervising {len(cfg.streams)} stream(s)'}")
    if args.detach or changes:
        return 0
    try:
        while True:
            rows = ray.get(sup.status.remote())
            if not args.quiet:
                _console(stderr=True).print(status_table(rows))
            if rows and all(r["state"] == "ended" for r in rows):
                break
            time.sleep(5.0)
    finally:
        ray.get(sup.shutdown.remote())
    return 0


def status_table(rows: list[dict]) -> Table:
    table = Table(show_edge=False, header_style="bold")
    for col in ("stream", "state", "frames", "fps", "lag", "last window (worst)", "alerts firing", "restarts"):
        table.add_column(col, justify="right" if col in ("frames", "fps", "lag", "restarts") else "left")
    for r in rows:
        worst = f"{r['worst_window'][0]}={r['worst_window'][1]:.0f}" if r["worst_window"] else "—"
        table.add_row(r["stream"], r["state"], str(r["frames"]), "—" if r["fps"] is None else f"{r['fps']:.1f}",
                      "—" if r["lag_s"] is None else f"{r['lag_s']:.1f}s", worst, ", ".join(r["firing"]) or "—",
                      str(r["restarts"]))
    return table


def cmd_status(args) -> int:
    import ray

    _ray_init(args.address)
    from pipelines import live

    _console(stderr=False).print(status_table(ray.get(live.supervisor().status.remote())))
    return 0


def cmd_batch(args) -> int:
    """Score a folder or manifest of files on a Ray actor pool (pipelines/batch.py); a rerun resumes."""
    from monitor.vmaf import FILE_CHUNK_S
    from pipelines.batch import BatchOptions, list_jobs, run_batch

    list_jobs(args.source, args.ref_rule)  # bad input fails here, before Ray starts
    vmaf = vmaf_options(args, FILE_CHUNK_S)
    _ray_init(args.address)
    opts = BatchOptions(sample=args.sample, window=args.window, models=tuple(args.model), device=args.device,
                        batch_size=args.batch, vmaf=vmaf)
    frames, started = [0], time.monotonic()
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=err, transient=True, disable=args.quiet) as progress:
        task = progress.add_task("files", total=None)

        def done(entry: dict) -> None:
            frames[0] += entry.get("frames", 0)
            rate = frames[0] / max(time.monotonic() - started, 1e-9)
            progress.update(task, advance=1, description=f"files · {rate:.0f} frames/s")

        result = run_batch(args.source, args.out, opts, ref_rule=args.ref_rule, actors=args.actors,
                           gpus_per_actor=args.gpus_per_actor, retry_failed=args.retry_failed,
                           on_start=lambda n: progress.update(task, total=n), on_done=done)
    elapsed = time.monotonic() - started
    err.print(f"vqmon batch: {len(result.scored)} file(s) scored ({frames[0]} frames, {elapsed:.1f} s), "
              f"{len(result.failed)} failed, {result.skipped} already done; records in {args.out}",
              highlight=False)
    for e in result.failed:
        err.print(f"failed: {e['error']}", highlight=False, markup=False)
    return 1 if result.failed else 0


def cmd_sample(args) -> int:
    from monitor.samples import make_sample

    paths = make_sample(args.out_dir, width=args.width, height=args.height, seconds=args.seconds)
    for kind, path in paths.items():
        print(f"{kind}: {path}")
    return 0


def cmd_corpus(args) -> int:
    from pipelines.train import corpus

    path = corpus.build(args.pristine, args.out, seed=args.seed, workers=args.workers,
                        train=tuple(args.train or corpus.DEFAULT_TRAIN), val=tuple(args.val or corpus.DEFAULT_VAL))
    rows = corpus.load(args.out).to_pylist()
    for split in ("train", "val"):
        part = [r for r in rows if r["split"] == split]
        print(f"{split}: {len(part)} items from {len({r['source'] for r in part})} sources "
              f"({sum(r['teacher'] == 'vmaf' for r in part)} VMAF-labelled)")
    print(f"corpus: {path}")
    return 0


def cmd_train(args) -> int:
    from pipelines.train.train import RECIPES, train

    name, _, variant = args.model.partition("/")
    variant = variant or "lite"
    if (name, variant) not in RECIPES:
        raise InputError(f"{args.model}: no training recipe; known: {', '.join(f'{n}/{v}' for n, v in RECIPES)}")
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  TextColumn("{task.fields[status]}"), console=err) as progress:
        task = progress.add_task(f"train {name}/{variant}", total=None, status="")

        def show(record: dict) -> None:
            status = f"loss {record['loss']:.4f}" + (f"  val SRCC {record['val_srcc']:.3f}" if "val_srcc" in record else "")
            progress.update(task, completed=record["step"], total=record["steps"], status=status)

        info = train(name, args.data, args.out, variant=variant, steps=args.steps, batch=args.batch, lr=args.lr,
                     seed=args.seed, device=args.device, checkpoint_every=args.checkpoint_every,
                     val_items=args.val_items, minutes=args.minutes, progress=show)
    print(f"{args.out}/{name}-{variant}.safetensors  sha256 {info['sha256']}  steps {info['steps']}  "
          f"val SRCC {info['val_srcc']}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vqmon", description="Video quality monitor")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("score", help="score a video file frame by frame and window by window")
    s.add_argument("video", help="video file (any container/codec FFmpeg reads)")
    s.add_argument("--ref", help="reference file for full-reference metrics (paired by pts, scaled to the video's size)")
    s.add_argument("--ref-offset", type=int, default=0, metavar="N",
                   help="reference frame i+N pairs with video frame i (default 0)")
    s.add_argument("--sample", default="all", help="'all', N (every Nth frame) or Xfps (rate cap); default all")
    s.add_argument("--window", default="2s", help="window size, or size/hop for sliding windows (e.g. 10s/1s)")
    s.add_argument("--out", help="output folder for records ('-' = stdout with --format jsonl)")
    s.add_argument("--format", choices=("parquet", "jsonl"), default="parquet")
    s.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    s.add_argument("--batch", type=int, default=8, help="frames per scoring batch (default 8)")
    s.add_argument("--model", action="append", default=[], metavar="NAME[/VARIANT][:WEIGHTS]",
                   help="also score with a quality model (repeatable): e.g. liqe, gsn/lite:ckpt.safetensors, "
                        "nemg:untrained; see `vqmon models`")
    _vmaf_flags(s)
    s.add_argument("--alerts", metavar="FILE", help="YAML/JSON list of alert rules; events go with the records")
    s.add_argument("--report", action="store_true", help="also write OUT/report.html (see `vqmon report`)")
    s.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    s.set_defaults(func=cmd_score)

    r = sub.add_parser("report", help="one self-contained HTML report over the Parquet output of score or watch")
    r.add_argument("results", help="the --out folder of vqmon score or watch")
    r.add_argument("--out", default="report.html", help="HTML file to write (default report.html)")
    r.add_argument("--alerts", metavar="FILE", help="alert rules, for the time-below-threshold columns")
    r.set_defaults(func=cmd_report)

    w = sub.add_parser("watch", help="monitor live streams (or files in real time): score, window, alert, publish")
    w.add_argument("url", nargs="?", help="rtmp://, rtsp://, srt://, udp://, http(s)://….m3u8 or a file")
    w.add_argument("--config", help="YAML/JSON file of streams and sinks (see monitor/config.py)")
    w.add_argument("--id", help="stream id (default: from the URL)")
    w.add_argument("--listen", action="store_true", help="listen for a push (RTMP/SRT) instead of pulling")
    w.add_argument("--realtime", action="store_true", help="play a file at its frame rate")
    w.add_argument("--ref", help="reference stream or file, aligned automatically, for FR metrics")
    w.add_argument("--sample", default="all")
    w.add_argument("--window", default="2s")
    w.add_argument("--model", action="append", default=[], metavar="NAME[/VARIANT][:WEIGHTS]")
    _vmaf_flags(w)
    w.add_argument("--alerts", metavar="FILE", help="YAML/JSON list of alert rules")
    w.add_argument("--out", help="Parquet output folder (files roll every 60 s)")
    w.add_argument("--kafka", metavar="HOST:PORT", help="publish records to Kafka")
    w.add_argument("--topic-prefix", default="vqmon")
    w.add_argument("--spool", default="vqmon-spool", help="where records wait while Kafka is unreachable")
    w.add_argument("--otel", choices=("console", "otlp"), help="OpenTelemetry metrics exporter")
    w.add_argument("--prometheus", metavar="HOST:PORT", help="serve the metrics at http://HOST:PORT/metrics")
    w.add_argument("--jsonl", metavar="FILE_OR_DASH", help="also write JSON lines (folder, or - for stdout)")
    w.add_argument("--http", metavar="[HOST:]PORT", help="serve a status page, /status.json, /metrics and /healthz "
                                                     "(host 127.0.0.1 unless given)")
    w.add_argument("--device", default="auto")
    w.add_argument("--max-reconnects", type=int, help="give up after N failed reconnects (default: never)")
    w.add_argument("--max-lag", metavar="DURATION", help="a live stream whose frames wait longer than this to be "
                                                       "scored is behind (default 2s)")
    w.add_argument("--no-adaptive", action="store_true", help="keep the --sample rate while behind (default: lower "
                                                              "it to what scoring sustains, raise it back later)")
    w.add_argument("--duration", type=float, help="stop after this many seconds (demos, tests)")
    w.add_argument("-q", "--quiet", action="store_true", help="no status line")
    w.set_defaults(func=cmd_watch)

    lv = sub.add_parser("live", help="run a watch config's streams as monitors on a Ray cluster (again = reload)")
    lv.add_argument("--config", help="YAML/JSON watch config (see monitor/config.py, section ray:)")
    lv.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS, else a local Ray)")
    lv.add_argument("--detach", action="store_true", help="leave the supervisor running on the cluster and return")
    lv.add_argument("--stop", action="store_true", help="stop the running supervisor and its monitors")
    lv.add_argument("-q", "--quiet", action="store_true", help="no status table")
    lv.set_defaults(func=cmd_live)

    st = sub.add_parser("status", help="per-stream state of the monitors on a Ray cluster")
    st.add_argument("--address", default="auto", help="Ray cluster address (default: auto)")
    st.set_defaults(func=cmd_status)

    b = sub.add_parser("batch", help="score a folder or CSV manifest of files on a Ray actor pool (resumable)")
    b.add_argument("source", help="folder of videos (recursive) or CSV manifest with columns video[,ref][,stream_id]")
    b.add_argument("--out", required=True, help="output folder: Parquet records, summaries/, _ledger.jsonl")
    b.add_argument("--ref-rule", metavar="TEMPLATE",
                   help="reference per video by name, e.g. '../refs/{rel}{ext}' ({dir} {stem} {ext} {rel})")
    b.add_argument("--actors", type=int, help="scoring actors (default: one per GPU, else 1)")
    b.add_argument("--gpus-per-actor", type=float, help="GPU share per actor (default: 1 with GPUs, else 0)")
    b.add_argument("--retry-failed", action="store_true", help="score files that failed in an earlier run again")
    b.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS, else a local Ray)")
    for flag, default in (("--sample", "all"), ("--window", "2s"), ("--device", "auto")):
        b.add_argument(flag, default=default, help=f"as for `vqmon score` (default {default})")
    b.add_argument("--batch", type=int, default=8, help="frames per scoring batch (default 8)")
    b.add_argument("--model", action="append", default=[], metavar="NAME[/VARIANT][:WEIGHTS]")
    _vmaf_flags(b)
    b.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    b.set_defaults(func=cmd_batch)

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
    e.set_defaults(func=cmd_eval)

    md = sub.add_parser("models", help="list the quality models: kind, range, params, GMACs, weights")
    md.set_defaults(func=cmd_models)

    m = sub.add_parser("sample", help="write a demo reference/distorted clip pair (panned photo, x264)")
    m.add_argument("out_dir")
    m.add_argument("--width", type=int, default=640)
    m.add_argument("--height", type=int, default=360)
    m.add_argument("--seconds", type=int, default=8)
    m.set_defaults(func=cmd_sample)

    c = sub.add_parser("corpus", help="build a synthetic distortion corpus with VMAF labels from pristine content")
    c.add_argument("pristine", help="folder of pristine images/videos, in subfolders named by --train/--val")
    c.add_argument("--out", required=True)
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    c.add_argument("--train", nargs="+", metavar="SUBFOLDER",
                   help="subfolders to train on (default: bsds500/train bsds500/val urban100 sunhays80)")
    c.add_argument("--val", nargs="+", metavar="SUBFOLDER",
                   help="subfolders held out for validation (default: bsds500/test kodak24 video)")
    c.set_defaults(func=cmd_corpus)

    t = sub.add_parser("train", help="train a quality model on a corpus (resumes from OUT/checkpoint.pt)")
    t.add_argument("model", help="nemg, mfenet, liqe or gsn, optionally /lite (default) or /paper (wants a GPU)")
    t.add_argument("--data", required=True, help="corpus folder (vqmon corpus)")
    t.add_argument("--out", required=True)
    t.add_argument("--steps", type=int, help="optimizer steps (default: the recipe's)")
    t.add_argument("--minutes", type=float, help="wall-clock budget: fit the step count to it")
    t.add_argument("--batch", type=int)
    t.add_argument("--lr", type=float)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--device", default="cpu")
    t.add_argument("--checkpoint-every", type=int, default=100)
    t.add_argument("--val-items", type=int, default=120, help="validation items scored for the SRCC shown")
    t.set_defaults(func=cmd_train)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except InputError as e:
        err.print(f"vqmon: error: {e}", highlight=False, markup=False)  # one line, never wrapped
        return 2
    except KeyboardInterrupt:
        err.print("vqmon: interrupted", highlight=False)
        return 130


if __name__ == "__main__":
    sys.exit(main())
