"""One way to build a pipeline: a typed `StreamConfig` → source, pairer or aligner, scorers, windows, alerts → StreamPipeline.

`vqmon score` and the Ray batch scorer call `score_file`; `vqmon watch` and the Ray StreamMonitor
call `build(..., live=True)` through `monitor.watch.Watcher`. A file is read as fast as it
decodes, paired with its reference at a fixed offset and scored losslessly; a live stream (or a
realtime replay) is read by a LiveSource that reconnects, aligned with its reference
automatically, and kept up with (`KeepUp`).
"""
from __future__ import annotations

import dataclasses
import logging
import math
import os
import threading
import time

import torch

from monitor import __version__, storage
from monitor.alerts.engine import AlertEngine, alert_spans
from monitor.alerts.thumbnails import KEEP, ThumbnailStore
from monitor.config import ModelSpec, StreamConfig
from monitor.errors import InputError
from monitor.pipeline import StreamPipeline
from monitor.records import AlertEvent, to_row
from monitor.scoring import vmaf
from monitor.scoring.scorers import ModelScorer, SignalScorer, pick_device
from monitor.sinks import Sinks
from monitor.source.align import Aligner, ReferencePairer
from monitor.source.sampling import KeepUp
from monitor.source.sources import FileSource, LiveSource, redact
from monitor.summary import RunSummary, summarise

log = logging.getLogger(__name__)


def load_model(spec: ModelSpec, device: torch.device):
    """The model `spec` names, made for inference on `device`; a checkpoint that does not fit is one line."""
    from models import registry
    from models.weights import WeightsError

    try:
        return registry.create(spec.name, spec.variant, weights=spec.weights, device=device, for_inference=True)
    except (WeightsError, FileNotFoundError) as e:
        raise InputError(f"model {spec}: {str(e).strip(chr(39) + chr(34))}") from None


def build(stream: StreamConfig, sinks: Sinks, device: torch.device, *, live: bool, models=None, batch_size: int = 8,
          thumbnails_dir: str | None = None, on_record=None, signal_kernels: str = "auto") -> StreamPipeline:
    """The pipeline of one stream, writing to `sinks`.

    `models`: quality models already loaded (the batch scorer loads them once per actor); None loads
    `stream.models`. `thumbnails_dir`: where alert evidence pictures go (`<dir>/<stream id>/`).
    `signal_kernels`: see SignalScorer ("torch" forces the batched torch signals on a CPU).
    """
    if stream.vmaf:  # a missing libvmaf or model fails here, before any frame is read
        vmaf.check(stream.vmaf)
    pipe = None

    def on_event(event) -> None:  # stream events of the sources go out with the pipeline's records
        if pipe is not None:
            pipe.emit([event])

    if live:
        source = _live(stream, stream.url, stream.id, stream.listen, on_event)
        ref = _live(stream, stream.ref, f"{stream.id}.ref", stream.ref_listen) if stream.ref else None
        keepup = KeepUp(dataclasses.replace(stream.sample), stream.max_lag, stream.adaptive) \
            if not source.is_file or stream.realtime else None
    else:
        source = FileSource(stream.url, stream_id=stream.id, max_pixels=stream.max_pixels)
        ref = FileSource(stream.ref, scale_to=(source.info.width, source.info.height),
                         max_pixels=stream.max_pixels) if stream.ref else None
        keepup = None
    if models is None:
        models = [load_model(m, device) for m in stream.models]
    motion = any(m.uses_ref_motion for m in models)  # the pairer measures the reference's motion for them
    pairer = None
    if ref is not None:
        pairer = Aligner(ref, offset=stream.ref_offset, on_event=on_event, motion=motion) if live \
            else ReferencePairer(ref, stream.ref_offset, motion=motion)
    scorers = [SignalScorer(device, kernels=signal_kernels)] + [ModelScorer(m, device) for m in models]
    _warn_unscored_rules(stream, {m for s in scorers for m in s.metrics} | ({vmaf.METRIC.name} if stream.vmaf else set()))
    thumbnails = alerts = None
    if stream.alerts:
        if thumbnails_dir:
            # a file's fr.vmaf comes a chunk late: hold that many more pictures for the evidence of its alerts
            late = math.ceil(stream.vmaf.chunk_s * (source.info.fps or 25.0)) if stream.vmaf and not live else 0
            thumbnails = ThumbnailStore(thumbnails_dir, stream.id, keep=KEEP + late)
        alerts = AlertEngine(stream.alerts, thumbnail=thumbnails)
    pipe = StreamPipeline(source, sinks=sinks, pairer=pairer, sampler=dataclasses.replace(stream.sample),
                          window=stream.window, scorers=scorers, alerts=alerts, batch_size=batch_size,
                          summarise=not live, on_record=on_record, thumbnails=thumbnails, keepup=keepup,
                          vmaf=stream.vmaf, sources=[s for s in (source, ref) if s is not None])
    pipe.about = _about(stream, source, pipe)
    return pipe


def _about(stream: StreamConfig, source, pipe: StreamPipeline) -> dict:
    """The `started` event's detail: what is scored and how, so a report of the records can say it (a live
    source's codec, size and frame rate follow in its `up` event)."""
    info = source.info
    return {"source": redact(stream.url), "reference": redact(stream.ref) if stream.ref else None,
            "ref_offset": stream.ref_offset, "sampling": pipe.sampler.describe(), "window": stream.window.describe(),
            "models": {m: tag for s in pipe.scorers for m, tag in s.models.items()}
            | ({vmaf.METRIC.name: pipe.vmaf.tag} if pipe.vmaf else {}),
            "vqmon": __version__,
            **({"codec": info.codec, "pix_fmt": info.pix_fmt, "width": info.width, "height": info.height,
                "fps": info.fps, "duration_s": info.duration_s} if info else {})}


def _warn_unscored_rules(stream: StreamConfig, produced: set[str]) -> None:
    """A rule on a metric nothing scores can never fire: say so, with what would score it."""
    from models.table import MODELS

    for rule in stream.alerts:
        if rule.metric in produced and not (rule.metric.startswith("fr.") and not stream.ref):
            continue
        name = rule.metric.partition(".")[2]
        hint = ("it needs a reference (--ref)" if rule.metric.startswith("fr.") and rule.metric in produced
                else f"add --model {name}" if any(n == name for n, _ in MODELS)
                else "add --vmaf" if rule.metric == vmaf.METRIC.name else "no scorer has that metric")
        log.warning("vqmon: warning: %s: alert rule %r watches %s, which is not scored (%s): it cannot fire",
                    stream.id, rule.name, rule.metric, hint)


def _live(stream: StreamConfig, url: str, stream_id: str, listen: bool, on_event=None) -> LiveSource:
    options = {"rtsp_transport": stream.rtsp_transport} if stream.rtsp_transport else None
    return LiveSource(url, stream_id=stream_id, open_timeout_s=stream.open_timeout, read_timeout_s=stream.read_timeout,
                      listen=listen, realtime=stream.realtime, max_reconnects=stream.max_reconnects,
                      on_event=on_event, options=options, max_pixels=stream.max_pixels)


def score_file(stream: StreamConfig, sinks=(), *, device: str | torch.device = "auto", batch_size: int = 8,
               models=None, thumbnails_dir: str | None = None, on_progress=None,
               signal_kernels: str = "auto", time_limit_s: float | None = None) -> RunSummary:
    """Score one file (`stream.url`, against `stream.ref` if set), write the records to `sinks` and close them.

    A file without a single decodable frame is an InputError: an empty table would read as "no problem".
    So is a file still being scored after `time_limit_s` seconds (the run is stopped; the records
    written so far are partial, which the batch job's staging discards).
    """
    dev = device if isinstance(device, torch.device) else pick_device(device)
    out = Sinks(sinks)
    alert_events: list[dict] = []  # for the summary's alerts
    pipe = build(stream, out, dev, live=False, models=models, batch_size=batch_size, thumbnails_dir=thumbnails_dir,
                 signal_kernels=signal_kernels,
                 on_record=lambda r: alert_events.append(to_row(r)) if isinstance(r, AlertEvent) else None)
    source, pairer = pipe.source, pipe.pairer
    summary = RunSummary(stream.url, stream.id, source.info, pipe.sampler.describe(), reference=stream.ref)
    expired = threading.Event()
    timer = threading.Timer(time_limit_s, lambda: (expired.set(), pipe.stop())) if time_limit_s else None
    started = time.perf_counter()
    try:
        if timer:
            timer.start()
        pipe.run(on_progress)
    finally:
        if timer:
            timer.cancel()
        out.close()
        pipe.close()
    summary.elapsed_s = time.perf_counter() - started
    summary.frames_seen = pipe.frames_seen
    if expired.is_set():
        raise InputError(f"{redact(stream.url)}: time limit of {time_limit_s:g} s reached after {pipe.frames_seen} frames")
    if not pipe.frames_seen:
        raise InputError(f"{redact(stream.url)}: no decodable video frame"
                         + (f" ({source.stats.last_error})" if source.stats.last_error else ""))
    summary.decode_errors, summary.last_error = source.stats.decode_errors, source.stats.last_error
    summary.corrupt_frames, summary.retimed = source.stats.corrupt_frames, source.stats.retimed
    summary.scorer_errors, summary.last_scorer_error = pipe.scorer_errors, pipe.last_scorer_error
    if pairer:
        summary.ref_paired, summary.ref_unpaired, summary.ref_ended_at = pairer.paired, pairer.unpaired, pairer.ref_ended_at
    summarise(summary, pipe.scorers + ([pipe.vmaf] if pipe.vmaf else []), pipe.collected, source.info.fps or 25.0)
    summary.alerts = alert_spans(alert_events)
    return summary


def thumbnails_dir(out: str | None) -> str | None:
    """Alert evidence goes next to the records: OUT/thumbnails (none when records go to stdout or a bucket)."""
    return os.path.join(out, "thumbnails") if out and out != "-" and not storage.is_url(out) else None
