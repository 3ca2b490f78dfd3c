"""`vqmon watch`: one StreamPipeline per configured stream, each in its own thread, sharing the sinks.

Stream events (up/down/reconnect, alignment, behind/caught_up) and alert events are records like the others.
Live streams and realtime replays keep up (monitor/sampling.py KeepUp): their reader never waits
on the scorers, and the sampling is lowered while scoring lags; a file read as fast as it
decodes waits for the scorers instead and is scored losslessly.
`stop()` (SIGINT/SIGTERM in the CLI) ends every source, drains the pipelines, flushes windows
and open alerts, and closes the sinks, so nothing scored is lost.
"""
from __future__ import annotations

import os
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime

from monitor.config import StreamConfig, WatchConfig
from monitor.errors import InputError
from monitor.records import AlertEvent, FrameScore, StreamEvent, WindowStat, utcnow
from monitor.sampling import KeepUp, Sampler


HISTORY = 60  # window means kept per metric for the status page's sparklines


@dataclass
class StreamStatus:
    """What the status line shows for one stream; updated from the records the pipeline writes."""

    state: str = "starting"
    frames: int = 0
    started: float = field(default_factory=time.monotonic)
    last_window: dict[str, float] = field(default_factory=dict)  # metric → latest window mean (score scale)
    history: dict[str, deque] = field(default_factory=dict)  # metric → recent window means, for sparklines
    firing: set[str] = field(default_factory=set)
    restarts: int = 0
    last_ingest: datetime | None = None  # when the newest scored frame was received
    sampler: Sampler | None = None  # the pipeline's: the sampling in force
    keepup: KeepUp | None = None  # the pipeline's, for a live stream: behind, rates, frames dropped

    def lag_s(self) -> float | None:
        """Seconds between receiving the newest scored frame and now: grows when scoring falls behind or the feed stalls."""
        return (utcnow() - self.last_ingest).total_seconds() if self.last_ingest else None

    def fps(self) -> float:
        return self.frames / max(time.monotonic() - self.started, 1e-9)

    @property
    def behind(self) -> bool:
        return bool(self.keepup and self.keepup.behind)

    @property
    def frames_dropped(self) -> int:
        return self.keepup.frames_dropped if self.keepup else 0

    @property
    def sampling(self) -> str:
        return self.sampler.describe() if self.sampler else ""

    @property
    def sample_fps(self) -> float | None:
        """Frames per second sampled now (a live stream's; None where the stream's rate is not measured)."""
        return self.keepup.sample_fps if self.keepup else None

    def observe(self, r) -> None:
        if isinstance(r, FrameScore) and r.metric == "sig.luma":
            self.frames += 1
            self.last_ingest = r.ingest_ts
        elif isinstance(r, WindowStat) and r.scale == "score":
            self.last_window[r.metric] = r.mean
            self.history.setdefault(r.metric, deque(maxlen=HISTORY)).append(r.mean)
        elif isinstance(r, StreamEvent) and r.event in ("up", "down"):
            self.state = r.event
        elif isinstance(r, AlertEvent):
            (self.firing.add if r.state == "firing" else self.firing.discard)(r.rule)


def build_sinks(cfg: WatchConfig) -> list:
    sinks = []
    for name, opts in cfg.sinks.items():
        if name == "parquet":
            from monitor.cli import parse_duration
            from monitor.sinks.parquet import ParquetSink

            sinks.append(ParquetSink(opts.get("out", "vqmon-out"), rows_per_file=int(opts.get("rows", 200_000)),
                                     roll_s=parse_duration(str(opts.get("roll", "60s")))))
        elif name == "kafka":
            from monitor.sinks.kafka import KafkaSink

            sinks.append(KafkaSink(opts["bootstrap"], topic_prefix=opts.get("topic_prefix", "vqmon"),
                                   spool_dir=opts.get("spool", "vqmon-spool")))
        elif name == "otel":
            from monitor.sinks.otel import OTelSink

            sinks.append(OTelSink(exporter=opts.get("exporter", "console"), prometheus=opts.get("prometheus")))
        elif name == "jsonl":
            from monitor.sinks.jsonl import JsonlSink

            sinks.append(JsonlSink(opts.get("out", "-")))
        elif name == "webhook":
            from monitor.alerts import WebhookNotifier

            sinks.append(WebhookNotifier(opts["url"], retries=int(opts.get("retries", 3))))
    return sinks


class Watcher:
    def __init__(self, cfg: WatchConfig):
        from monitor.alerts import AlertEngine, parse_rules
        from monitor.cli import load_model, parse_window
        from monitor.pipeline import StreamPipeline
        from monitor.scoring import ModelScorer, SignalScorer, pick_device
        from monitor.vmaf import LIVE_CHUNK_S, VmafOptions, check

        self.cfg = cfg
        self.device = pick_device(cfg.device)
        self.sinks = build_sinks(cfg)
        self.lock = threading.Lock()
        self.status: dict[str, StreamStatus] = {}
        self.pipelines = {}
        self._closers = []
        vmaf_checked = set()
        for sc in cfg.streams:
            vmaf = VmafOptions(sc.vmaf_model, sc.vmaf_threads, LIVE_CHUNK_S) if sc.vmaf else None
            if vmaf and vmaf not in vmaf_checked:  # a missing libvmaf or model fails here, before any stream starts
                check(vmaf)
                vmaf_checked.add(vmaf)
            status = self.status[sc.id] = StreamStatus()
            scorers = [SignalScorer(self.device)] + [ModelScorer(load_model(m, cfg.device), self.device)
                                                      for m in sc.models]
            thumbs = self._thumbnails(sc) if sc.alerts else None
            alerts = AlertEngine(parse_rules(sc.alerts), thumbnail=thumbs) if sc.alerts else None
            pipe_box: list = []
            source = self._source(sc, lambda ev, box=pipe_box: box[0].emit([ev]) if box else None)
            pairer = self._aligner(sc, source, lambda ev, box=pipe_box: box[0].emit([ev]) if box else None)
            sampler = Sampler.parse(sc.sample)
            keepup = KeepUp(sampler, sc.max_lag, sc.adaptive) if not source.is_file or sc.realtime else None
            pipe = StreamPipeline(source, pairer=pairer, sampler=sampler, window=parse_window(sc.window),
                                  sinks=self.sinks, scorers=scorers, alerts=alerts, summarise=False,
                                  sink_lock=self.lock, on_record=status.observe, thumbnails=thumbs, keepup=keepup,
                                  vmaf=vmaf)
            status.sampler, status.keepup = sampler, keepup
            pipe_box.append(pipe)
            self.pipelines[sc.id] = pipe
        self._threads: list[threading.Thread] = []

    def _thumbnails(self, sc: StreamConfig):
        """Alert evidence pictures go next to the records: <parquet or jsonl folder>/thumbnails/<stream>/."""
        from monitor.thumbnails import ThumbnailStore

        out = (self.cfg.sinks.get("parquet") or {}).get("out") or (self.cfg.sinks.get("jsonl") or {}).get("out")
        return ThumbnailStore(os.path.join(out, "thumbnails"), sc.id) if out and out != "-" else None

    def _source(self, sc: StreamConfig, on_event):
        from monitor.sources import LiveSource

        options = {"rtsp_transport": sc.rtsp_transport} if sc.rtsp_transport else None
        src = LiveSource(sc.url, stream_id=sc.id, open_timeout_s=sc.open_timeout, read_timeout_s=sc.read_timeout,
                         listen=sc.listen, realtime=sc.realtime, max_reconnects=sc.max_reconnects,
                         on_event=on_event, options=options)
        self._closers.append(src)
        return src

    def _aligner(self, sc: StreamConfig, source, on_event):
        if not sc.ref:
            return None
        from monitor.align import Aligner
        from monitor.sources import LiveSource

        ref = LiveSource(sc.ref, stream_id=f"{sc.id}.ref", listen=sc.ref_listen, realtime=sc.realtime,
                         open_timeout_s=sc.open_timeout, read_timeout_s=sc.read_timeout,
                         max_reconnects=sc.max_reconnects)
        self._closers.append(ref)
        return Aligner(ref, on_event=on_event)

    def start(self) -> None:
        for sid, pipe in self.pipelines.items():
            t = threading.Thread(target=self._run, args=(sid, pipe), name=f"stream-{sid}", daemon=True)
            t.start()
            self._threads.append(t)

    def _run(self, sid: str, pipe) -> None:
        try:
            pipe.run()
        except InputError as e:
            pipe.emit([StreamEvent(sid, "down", detail={"error": str(e)})])
        finally:
            self.status[sid].state = "stopped"

    def running(self) -> bool:
        return any(t.is_alive() for t in self._threads)

    def stop(self) -> None:
        for pipe in self.pipelines.values():
            pipe.stop()
        for c in self._closers:
            getattr(c, "stop", lambda: None)()

    def join(self, timeout: float | None = None) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        for t in self._threads:
            t.join(None if deadline is None else max(0.0, deadline - time.monotonic()))

    def close(self) -> None:
        with self.lock:
            for sink in self.sinks:
                sink.close()

    def status_line(self) -> str:
        parts = []
        for sid, st in self.status.items():
            scores = " ".join(f"{m}={v:.0f}" for m, v in sorted(st.last_window.items())
                              if m.startswith(("nr.", "fr.")))
            alerts = f" ALERTS: {','.join(sorted(st.firing))}" if st.firing else ""
            parts.append(f"{sid}: {st.state} {st.frames} fr {st.fps():.1f} fps{_keeping_up(st)} {scores}{alerts}".rstrip())
        return " | ".join(parts)


def _keeping_up(st: StreamStatus) -> str:
    """' lag 0.4s' while up, plus BEHIND, the lowered sampling and frames dropped when there are any."""
    lag = st.lag_s()
    text = f" lag {lag:.1f}s" if lag is not None and st.state == "up" else ""
    if st.behind:
        text += " BEHIND"
    if st.sampler and st.sampler.cap is not None:
        text += f" sampling {st.sampling}"
    if st.frames_dropped:
        text += f" dropped {st.frames_dropped}"
    return text
