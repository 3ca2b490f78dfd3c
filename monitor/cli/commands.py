"""The `vqmon` commands: each turns parsed flags into config objects (`monitor.config`), runs them, prints the outcome.

Each command imports what it needs (config imports torch), so `vqmon models` and `--help` answer at once.
"""
from __future__ import annotations

import logging
import math
import os
import tempfile
import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from monitor.errors import InputError
from monitor.redaction import redact

err = Console(stderr=True, soft_wrap=True)


def _console(stderr: bool) -> Console:
    """Summary console: a pipe or log file gets a wide table instead of rich's 80-column default."""
    c = Console(stderr=stderr)
    return c if c.is_terminal else Console(stderr=stderr, width=160)


def _progress(*extra, transient: bool = False, disable: bool = False):
    """A progress bar on a terminal; elsewhere (a log, CI, a pipe) a plain line every PROGRESS_EVERY_S seconds."""
    if not err.is_terminal:
        return ProgressLines(disable)
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                    *extra, console=err, transient=transient, disable=disable)


PROGRESS_EVERY_S = 10.0


class ProgressLines:
    """The part of rich's Progress the commands use, printing `description: done/total (pct) status` lines."""

    def __init__(self, disable: bool):
        self.disable = disable
        self.tasks: dict[int, dict] = {}

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        for task in self.tasks:
            self._print(task)

    def add_task(self, description: str, total=None, **fields) -> int:
        self.tasks[len(self.tasks)] = {"description": description, "total": total, "completed": 0,
                                       "started": time.monotonic(), "printed": time.monotonic(), **fields}
        return len(self.tasks) - 1

    def advance(self, task: int, n: float = 1) -> None:
        self.update(task, advance=n)

    def update(self, task: int, advance: float = 0, **fields) -> None:
        t = self.tasks[task]
        t["completed"] = fields.pop("completed", t["completed"]) + advance
        t.update(fields)
        if time.monotonic() - t["printed"] >= PROGRESS_EVERY_S:
            self._print(task)

    def _print(self, task: int) -> None:
        t = self.tasks[task]
        t["printed"] = time.monotonic()
        if self.disable:
            return
        done, total = t["completed"], t["total"]
        line = f"{t['description']}: {done:g}" + (f"/{total:g} ({100 * done / total:.0f} %)" if total else "")
        line += f" after {time.monotonic() - t['started']:.0f} s"
        err.print(f"{line} {t.get('status', '')}".rstrip(), highlight=False, markup=False)


def _flag(flag: str, parse, value):
    """A flag's value through the config grammar; a mistake names the flag."""
    try:
        return parse(value)
    except InputError as e:
        raise InputError(f"{flag}: {e}") from None


def writable_file(flag: str, path: str) -> None:
    """`path` can be written as a file (its folder exists and takes files), before any work is done."""
    if os.path.isdir(path):
        raise InputError(f"{flag} {path}: is a folder; give a file name")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise InputError(f"{flag} {path}: no such folder {folder}")
    try:
        tempfile.TemporaryFile(dir=folder).close()
    except OSError as e:
        raise InputError(f"{flag} {path}: cannot write there ({e.strerror or e})") from None


def _scoring(args, vmaf_chunk_s: float) -> dict:
    """What score, watch and batch compute, from the flags they share: sampling, windows, models, VMAF."""
    from monitor import config
    for flag, value in (("--vmaf-model", args.vmaf_model), ("--vmaf-threads", args.vmaf_threads)):
        if value is not None and not args.vmaf:
            raise InputError(f"{flag} needs --vmaf")
    if args.max_pixels is not None and args.max_pixels < 1:
        raise InputError(f"--max-pixels {args.max_pixels}: must be at least 1")
    return {"sample": _flag("--sample", config.parse_sample, args.sample),
            "window": _flag("--window", config.parse_window, args.window),
            "models": tuple(_flag("--model", config.parse_model, m) for m in args.model),
            "vmaf": config.parse_vmaf(args.vmaf, args.vmaf_model, args.vmaf_threads, vmaf_chunk_s, "command line"),
            **({} if args.max_pixels is None else {"max_pixels": args.max_pixels})}


def cmd_score(args) -> int:
    from monitor import config, storage
    from monitor.build import score_file, thumbnails_dir
    from monitor.scoring.scorers import pick_device
    from monitor.scoring.vmaf import FILE_CHUNK_S
    from monitor.sinks import open_sink
    from monitor.source.sources import FileSource

    if args.report and (not args.out or args.out == "-" or args.format != "parquet"):
        raise InputError("--report needs --out DIR with Parquet output (the report is written next to it)")
    if args.out and storage.is_url(args.out) and (args.report or args.format != "parquet"):
        raise InputError(f"--out {args.out}: a bucket takes Parquet records only; for the report run "
                         f"`vqmon report {args.out} --out report.html`")
    if args.vmaf and not args.ref:
        raise InputError("--vmaf needs --ref (VMAF compares with a reference)")
    if args.out == "-" and args.format != "jsonl":
        raise InputError("--out -: stdout takes --format jsonl only")
    stream = config.StreamConfig(args.video, ref=args.ref, ref_offset=args.ref_offset,
                                 alerts=config.load_rules(args.alerts) if args.alerts else (),
                                 **_scoring(args, FILE_CHUNK_S))
    sinks = config.parse_sinks({args.format: {"out": args.out, "roll": None} if args.format == "parquet"
                                else {"out": args.out}} if args.out else {}, "command line")
    device = pick_device(_flag("--device", config.parse_device, args.device))
    with FileSource(args.video, max_pixels=stream.max_pixels) as probe:  # a bad file fails here, before any model loads
        frames_estimate = probe.info.frames_estimate
    if args.out and args.out != "-":
        storage.writable("--out", args.out)
    show = _console(stderr=args.out == "-")
    with _progress(transient=True, disable=args.quiet) as progress:
        task = progress.add_task(os.path.basename(args.video), total=frames_estimate)
        summary = score_file(stream, [open_sink(s) for s in sinks], device=device, batch_size=args.batch,
                             thumbnails_dir=thumbnails_dir(args.out), on_progress=lambda n: progress.advance(task, n))
    print_summary(summary, show, args.out)
    if args.report:
        from monitor.views.report import write_report, write_worst_thumbnails

        write_worst_thumbnails(args.out, args.video, stream.id, args.ref, args.ref_offset)
        show.print(f"report: {write_report(args.out, os.path.join(args.out, 'report.html'), stream.alerts or None)}")
    return 1 if summary.damaged else 0


def cmd_report(args) -> int:
    from pyarrow.fs import FileType

    from monitor import config, storage
    from monitor.views.report import write_report

    rules = config.load_rules(args.alerts) if args.alerts else None
    if storage.info(args.results).type != FileType.Directory:
        raise InputError(f"{redact(args.results)}: no such results folder")
    writable_file("--out", args.out)
    print(write_report(args.results, args.out, rules))
    return 0


def print_summary(s, console: Console, out: str | None) -> None:
    from monitor.scoring.metrics import SCORE_MEANING

    i = s.info
    console.print(f"[bold]{s.source}[/]  {i.codec} {i.width}×{i.height} {i.pix_fmt}"
                  f"{f' {i.fps:.3g} fps' if i.fps else ''}  · sampled {s.sampling}")
    console.print(f"frames: {s.frames_seen} decoded, {s.frames_scored} scored in {s.elapsed_s:.1f} s "
                  f"({s.fps:.1f} decoded frames/s)")
    console.print(summary_table(s.metrics, wide=console.width >= WIDE))
    console.print(f"values in each metric's unit; {SCORE_MEANING} (mean shown)", highlight=False, style="dim")
    for seg in s.segments:
        console.print(f"[yellow]{seg.kind}[/]: {seg.start_s:.3f}–{seg.end_s:.3f} s (frames {seg.first_frame}–{seg.last_frame})")
    for a in s.alerts:
        until = "end" if a.until is None else f"{a.until:.3f}"
        worst = f", worst frame #{a.worst['frame_index']} @ {a.worst['pts_s']:.3f}s" if a.worst.get("frame_index") is not None else ""
        console.print(f"[red]alert[/] {a.rule} ({a.metric}, threshold {a.threshold:g}): {a.since:.3f}–{until} s{worst}",
                      highlight=False)
    if s.reference:
        line = f"reference {s.reference}: {s.ref_paired} frames paired"
        if s.ref_unpaired:
            line += f", {s.ref_unpaired} without a reference"
            if s.ref_ended_at is not None:
                line += f" (the reference ended after {s.ref_ended_at} frames)"
        console.print(line, soft_wrap=True)  # paths make it long; a log reader greps it whole
    console.file.flush()
    if s.decode_errors:
        err.print(f"[red]warning[/]: {s.source}: {s.decode_errors} decode error(s), frames lost; last: {s.last_error}")
    if s.corrupt_frames:
        err.print(f"[red]warning[/]: {s.source}: {s.corrupt_frames} frame(s) flagged corrupt by the decoder "
                  "(scored as shown, `corrupt` in their records)")
    if s.retimed:
        err.print(f"[red]warning[/]: {s.source}: {s.retimed} frame(s) with backwards or repeated timestamps, "
                  "re-timed one frame interval after the previous")
    if s.scorer_errors:
        err.print(f"[red]warning[/]: {s.source}: {s.scorer_errors} VMAF chunk(s) failed, their frames have no "
                  f"fr.vmaf; last: {s.last_scorer_error}", highlight=False, markup=False)
    if out and out != "-":
        console.print(f"records written to {out}")


WIDE = 120  # narrower consoles (a terminal of 80 columns) get the summary table without frames, max and worst pts


def summary_table(metrics, wide: bool) -> Table:
    """Per metric: native statistics in its unit, which way is better, the mean 0–100 score and the worst frame.

    Metric names are never cut (`sig.blockiness` and `sig.black` must stay apart); a narrow console
    drops columns instead of squeezing every cell."""
    table = Table(show_edge=False, header_style="bold") if wide else Table(box=None, header_style="bold", padding=(0, 1))
    cols = ("metric", "unit", "better", "frames", "mean", "p5", "min", "max", "score", "worst frame")
    cols = cols if wide else tuple(c for c in cols if c not in ("frames", "max"))
    for col in cols:
        table.add_column(col if wide or col != "worst frame" else "worst", no_wrap=True,
                         justify="left" if col in ("metric", "unit", "better", "worst frame") else "right")
    for m in metrics:
        worst = "—" if m.worst_index is None else f"#{m.worst_index}" + (f" @ {m.worst_pts_s:.3f}s" if wide else "")
        cells = {"metric": m.metric, "unit": m.unit or "—", "better": m.better, "frames": str(m.count),
                 "mean": _num(m.mean), "p5": _num(m.p5), "min": _num(m.min), "max": _num(m.max),
                 "score": "—" if math.isnan(m.score_mean) else f"{m.score_mean:.0f}", "worst frame": worst}
        table.add_row(*(cells[c] for c in cols))
    return table


def _num(v: float) -> str:
    if math.isnan(v):
        return "—"
    return f"{v:.4g}" if abs(v) < 1e4 else f"{v:.3e}"


def cmd_models(args) -> int:
    """The model table (models/table.py), read without building a model; `--cost` builds each to count params and GMACs."""
    from models.table import MODELS, default_weights

    cost = {}
    if args.cost:
        from models import registry

        cost = {(r["name"], r["variant"]): r for r in registry.list()}
    table = Table(show_edge=False, header_style="bold")
    cols = ("model", "kind", "native range", "better", "trained") + (("params (M)", "GMACs/224", "GMACs/1080p")
                                                                     if args.cost else ())
    for col in cols:
        table.add_column(col, no_wrap=True, justify="right" if col.startswith(("params", "GMACs")) else "left")
    notes = []
    for (name, variant), row in MODELS.items():
        label = f"{name}/{variant}"
        lo, hi = row.native_range
        cells = [label, row.kind, f"{lo:g}..{hi:g}", "higher" if row.higher_is_better else "lower",
                 "yes" if default_weights(name, variant) else "no"]
        c = cost.get((name, variant), {})
        if args.cost:
            cells += ["[red]unavailable[/]", c["error"], ""] if "error" in c else \
                [f"{c['params_m']:.2f}", f"{c['gmacs_224']:.2f}", f"{c['gmacs_1080p']:.1f}"]
        table.add_row(*cells)
        notes.append(f"[bold]{label}[/]: {row.protocol}\n    weights licence: {row.weights_licence}")
    console = _console(stderr=False)
    console.print(table)
    if not args.cost:
        console.print("parameters and GMACs: vqmon models --cost (builds every model)",
                      style="dim", highlight=False)
    console.print("\n[bold]frame protocols and licences[/]")
    for line in notes:
        console.print(f"  {line}", highlight=False)
    return 0


def cmd_eval(args) -> int:
    from monitor import config
    from monitor.build import load_model
    from monitor.scoring.scorers import keep_large_tensors_in_heap, pick_device
    from pipelines.train import evaluate

    if args.out and not args.out.endswith((".csv", ".md")):
        raise InputError(f"--out {args.out}: expected a .csv or .md file")
    specs = [_flag("model", config.parse_model, m) for m in args.model]
    if not args.csv and not args.corpus:
        raise InputError("eval: give the labels with --csv FILE or --corpus DIR (or several)")
    sets = [(c, evaluate.read_csv(c)) for c in args.csv]
    sets += [(f"{d} (split {args.split}, VMAF teacher)", evaluate.read_corpus(d, args.split, args.per_subset))
             for d in args.corpus]
    items = [it for _, part in sets for it in part]
    device = pick_device(_flag("--device", config.parse_device, args.device))
    if device.type == "cpu":
        keep_large_tensors_in_heap()
    models = {}
    for spec in specs:
        model = load_model(spec, device)  # the inference graph `score` runs
        models[evaluate.model_label(model)] = model
    with _progress(transient=True, disable=args.quiet) as progress:
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


def watch_config(args) -> config.WatchConfig:
    """The config file, or one stream from the command line (built from the same config objects)."""
    from monitor import config
    import dataclasses

    from monitor.scoring.vmaf import LIVE_CHUNK_S

    if args.config:
        if args.url:
            raise InputError("watch: give a URL or --config FILE, not both")
        cfg = config.load(args.config)
        return dataclasses.replace(cfg, http=args.http or cfg.http)
    if not args.url:
        raise InputError("watch: give a stream URL or --config FILE")
    if args.vmaf and not args.ref:
        raise InputError("--vmaf needs --ref (VMAF compares with a reference)")
    stream = config.StreamConfig(
        args.url, id=args.id or "", listen=args.listen, realtime=args.realtime, ref=args.ref,
        alerts=config.load_rules(args.alerts) if args.alerts else (), max_reconnects=args.max_reconnects,
        adaptive=not args.no_adaptive, **_scoring(args, LIVE_CHUNK_S),
        **({} if args.max_lag is None else {"max_lag": _flag("--max-lag", config.parse_duration, args.max_lag)}))
    sinks = {}
    if args.out:
        sinks["parquet"] = {"out": args.out}
    if args.kafka:
        sinks["kafka"] = {"bootstrap": args.kafka, "topic_prefix": args.topic_prefix, "spool": args.spool}
    if args.otel or args.prometheus:
        sinks["otel"] = {"exporter": args.otel, "prometheus": args.prometheus}
    if args.jsonl:
        sinks["jsonl"] = {"out": args.jsonl}
    return config.WatchConfig((stream,), config.parse_sinks(sinks, "command line"),
                              _flag("--device", config.parse_device, args.device), args.http)


def cmd_watch(args) -> int:
    import signal
    import threading

    from monitor.views.statuspage import StatusServer
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
    if not args.quiet:
        from monitor.scoring.metrics import SCORE_MEANING

        err.print(f"status lines: latest window mean per metric in its unit, then its ({SCORE_MEANING})",
                  highlight=False, markup=False)
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
    lost = [h for h in watcher.sinks.health() if h.lost]
    for h in lost:
        err.print(f"warning: sink {h.name} lost {h.lost} record(s)", highlight=False, markup=False)
    return 1 if lost else 0


def _ray_init(address: str | None) -> None:
    """Connect to the cluster at `address` ('auto', ray://…), the one `ray job submit` names, or start Ray locally."""
    import ray

    try:
        ray.init(address=address, logging_level="WARNING", log_to_driver=False, ignore_reinit_error=True)
    except (ConnectionError, RuntimeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise InputError(f"no Ray cluster at {address or 'RAY_ADDRESS'}: {first} "
                         "(start one with `ray start --head`, or give --address)") from None


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
    """Score a folder, bucket prefix or manifest of files on Ray Data (pipelines/batch.py), or in this process
    (--local, monitor/archive.py); a rerun resumes."""
    from monitor import archive, config, storage
    from monitor.scoring.vmaf import FILE_CHUNK_S

    if args.local:
        for flag, value in (("--actors", args.actors), ("--gpus-per-actor", args.gpus_per_actor),
                            ("--cpus-per-actor", args.cpus_per_actor), ("--address", args.address)):
            if value is not None:
                raise InputError(f"{flag}: places Ray actors, not with --local")
    for flag, value, ok, want in (("--retries", args.retries, lambda v: v >= 0, "0 or more"),
                                  ("--actors", args.actors, lambda v: v >= 1, "at least 1"),
                                  ("--gpus-per-actor", args.gpus_per_actor, lambda v: v >= 0, "0 or more"),
                                  ("--cpus-per-actor", args.cpus_per_actor, lambda v: v > 0, "more than 0")):
        if value is not None and not ok(value):
            raise InputError(f"{flag} {value:g}: must be {want}")
    time_limit = _flag("--time-limit", config.parse_duration, args.time_limit) if args.time_limit else None
    opts = archive.BatchOptions(device=_flag("--device", config.parse_device, args.device), batch_size=args.batch,
                                retries=args.retries, time_limit_s=time_limit, **_scoring(args, FILE_CHUNK_S))
    plan = archive.plan(args.source, args.out, args.ref_rule, args.retry_failed)  # bad input fails here, before Ray
    if args.dry_run:
        print_plan(plan)
        return 0
    storage.writable("--out", args.out)
    frames, started = [0], time.monotonic()
    if args.local:
        with _progress(transient=True, disable=args.quiet) as progress:
            task = progress.add_task("files", total=len(plan.todo))

            def done(entry: dict) -> None:
                frames[0] += entry.get("frames", 0)
                rate = frames[0] / max(time.monotonic() - started, 1e-9)
                progress.update(task, advance=1, description=f"files · {rate:.0f} frames/s")

            result = archive.run_local(plan, opts, on_done=done)
    else:  # Ray Data shows the progress
        _ray_init(args.address)
        from pipelines.batch import run_batch

        if args.quiet:
            logging.getLogger("ray.data").setLevel(logging.WARNING)  # nor a line per dataset run

        def count(entry: dict) -> None:
            frames[0] += entry.get("frames", 0)

        result = run_batch(plan, opts, actors=args.actors, gpus_per_actor=args.gpus_per_actor,
                           cpus_per_actor=args.cpus_per_actor or 1, progress=not args.quiet, on_done=count)
    elapsed = time.monotonic() - started
    err.print(f"vqmon batch: {len(result.scored)} file(s) scored ({frames[0]} frames, {elapsed:.1f} s, "
              f"{frames[0] / max(elapsed, 1e-9):.0f} frames/s), {len(result.failed)} failed, "
              f"{result.skipped} already done"
              f"{f' ({len(result.failed_before)} of them failed, not retried)' if result.failed_before else ''}; "
              f"records in {args.out}", highlight=False, markup=False)
    for e in result.failed:
        err.print(f"failed: {e['error']}", highlight=False, markup=False)
    for e in result.failed_before:
        err.print(f"failed earlier (--retry-failed to try again): {e['error']}", highlight=False, markup=False)
    return 1 if result.failed or result.failed_before else 0


def print_plan(p) -> None:
    """`vqmon batch --dry-run`: a line per file on stdout (score / done / failed), the counts on stderr."""
    for j in p.todo:
        print(f"score  {redact(j.path)}  as {j.stream_id}" + (f"  ref {redact(j.ref)}" if j.ref else ""))
    for j in p.done:
        e = p.ledger.entries[j.path]
        print(f"failed {e['error']}" if "error" in e else f"done   {redact(j.path)}")
    failed = f" ({len(p.failed_before)} of them failed; --retry-failed scores them again)" if p.failed_before else ""
    err.print(f"vqmon batch --dry-run: {len(p.todo)} file(s) to score, {len(p.done)} already done{failed}; "
              "nothing written", highlight=False, markup=False)


def cmd_sample(args) -> int:
    from monitor.samples import make_sample

    paths = make_sample(args.out_dir, width=args.width, height=args.height, seconds=args.seconds)
    for kind, path in paths.items():
        print(f"{kind}: {path}")
    return 0


def cmd_corpus(args) -> int:
    from pipelines.train import corpus

    with _progress() as progress:
        path = corpus.build(args.pristine, args.out, seed=args.seed, workers=args.workers,
                            train=corpus.DEFAULT_TRAIN if args.train is None else tuple(args.train),
                            val=tuple(args.val or corpus.DEFAULT_VAL), progress=progress)
    rows = corpus.load(args.out).to_pylist()
    for split in ("train", "val"):
        part = [r for r in rows if r["split"] == split]
        print(f"{split}: {len(part)} items from {len({r['source'] for r in part})} sources "
              f"({sum(r['teacher'] == 'vmaf' for r in part)} VMAF-labelled)")
    print(f"corpus: {path}")
    return 0


def cmd_train(args) -> int:
    from models.table import MODELS
    from pipelines.train.train import train

    name, _, variant = args.model.partition("/")
    variant = variant or "lite"
    row = MODELS.get((name, variant))
    if row is None or row.recipe is None:
        raise InputError(f"{args.model}: no training recipe; known: "
                         f"{', '.join(row.recipe for row in MODELS.values() if row.recipe)}")
    with _progress(TextColumn("{task.fields[status]}")) as progress:
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
