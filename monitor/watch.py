"""`vqmon watch`: one StreamPipeline per configured stream (`monitor.build`), each in its own thread, sharing the sinks.

Stream events (up/down/reconnect, alignment, behind/caught_up) and alert events are records like the others.
Live streams and realtime replays keep up (monitor/source/sampling.py KeepUp): their reader never waits
on the scorers, and the sampling is lowered while scoring lags; a file read as fast as it
decodes waits for the scorers instead and is scored losslessly.
`stop()` (SIGINT/SIGTERM in the CLI) ends every source, drains the pipelines, flushes windows
and open alerts, and closes the sinks, so nothing scored is lost.
"""
from __future__ import annotations

import math
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime

from monitor import build
from monitor.config import WatchConfig
from monitor.errors import InputError
from monitor.malloc import share_malloc_arena
from monitor.pipeline import StreamPipeline
from monitor.records import AlertEvent, FrameScore, StreamEvent, WindowStat, utcnow
from monitor.scoring.metrics import metric_info, with_unit
from monitor.scoring.scorers import pick_device
from monitor.sinks import Sinks
from monitor.source.sampling import KeepUp, Sampler


HISTORY = 60  # window means kept per metric for the status page's sparklines


@dataclass
class StreamStatus:
    """What the status line shows for one stream; updated from the records the pipeline writes."""

    state: str = "starting"
    frames: int = 0
    started: float = field(default_factory=time.monotonic)
    last_window: dict[str, float] = field(default_factory=dict)  # metric → latest window mean (score scale)
    last_value: dict[str, float] = field(default_factory=dict)  # metric → latest window mean (native units)
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
        elif isinstance(r, WindowStat):
            self.last_value[r.metric] = r.mean
        elif isinstance(r, StreamEvent) and r.event in ("up", "down"):
            self.state = r.event
        elif isinstance(r, AlertEvent):
            (self.firing.add if r.state == "firing" else self.firing.discard)(r.rule)


def thumbnails_dir(cfg: WatchConfig) -> str | None:
    """Alert evidence pictures go next to the records: the first Parquet or JSONL folder's thumbnails/."""
    for sink in cfg.sinks:
        if sink.type in ("parquet", "jsonl"):
            return build.thumbnails_dir(sink.options.out)
    return None


class Watcher:
    def __init__(self, cfg: WatchConfig):
        self.cfg = cfg
        self.device = pick_device(cfg.device)
        self.sinks = Sinks.open(cfg.sinks)
        self.status: dict[str, StreamStatus] = {}
        self.pipelines: dict[str, StreamPipeline] = {}
        for sc in cfg.streams:
            status = self.status[sc.id] = StreamStatus()
            pipe = build.build(sc, self.sinks, self.device, live=True, thumbnails_dir=thumbnails_dir(cfg),
                               on_record=status.observe)
            status.sampler, status.keepup = pipe.sampler, pipe.keepup
            self.pipelines[sc.id] = pipe
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        share_malloc_arena()  # the stream threads score at main-thread speed
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

    def join(self, timeout: float | None = None) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        for t in self._threads:
            t.join(None if deadline is None else max(0.0, deadline - time.monotonic()))

    def close(self) -> None:
        self.sinks.close()
        for pipe in self.pipelines.values():
            pipe.close()

    def status_line(self) -> str:
        parts = []
        for sid, st in self.status.items():
            scores = " ".join(f"{m} {with_unit(st.last_value.get(m, math.nan), metric_info(m))} ({v:.0f})"
                              for m, v in sorted(st.last_window.items()) if m.startswith(("nr.", "fr.")))
            alerts = f" ALERTS: {','.join(sorted(st.firing))}" if st.firing else ""
            parts.append(f"{sid}: {st.state} {st.frames} fr {st.fps():.1f} fps{_keeping_up(st)} {scores}{alerts}".rstrip())
        parts += [f"sink {h.name}: {h.problem}" + (f" ({h.lost} lost)" if h.lost else "")
                  for h in self.sinks.health() if not h.ok]
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
