"""One stream, end to end in one process: Source → Sampler → (pairer) → Scorers → Windows → Alerts → Sinks.

`monitor.build` assembles a StreamPipeline from a typed StreamConfig; this module runs it.

Decoding (and luma extraction) runs in a background thread feeding a bounded queue, so the
decoder and the scorers overlap; frames are scored in batches so the torch work is vectorised.
A live source must keep up instead: its reader never waits on the queue (a blocked reader
stalls the network socket), and a `KeepUp` measures the lag and adapts the sampling.
VMAF (monitor/scoring/vmaf.py) is the one metric whose values come back later, a chunk at a time: it has
its own in-order path (records, its own windows, alerts) on the thread that collects them.
"""
from __future__ import annotations

import math
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass

import numpy as np
import torch

from monitor.records import FrameScore, StreamEvent, utcnow
from monitor.scoring.vmaf import ChunkedVmaf, VmafOptions
from monitor.sinks import RuntimeStats, Sinks
from monitor.source.frames import Frame
from monitor.source.sampling import KeepUp, Sampler
from monitor.windows import WindowAggregator, WindowSpec

@dataclass
class _Item:
    frame: Frame
    t: float  # media time used for windows (pts, or index / fps when the container has none)
    sampled: bool
    ref: Frame | None = None
    alignment: dict | None = None  # automatic alignment: offset and confidence, copied into FR records


_END = object()


class _FrameQueue(queue.Queue):
    """The bounded decoder→scorer queue, which a live reader makes room in instead of waiting."""

    def make_room(self) -> bool:
        """Whether a put would not block now; when full, the oldest unsampled frame (needed only for coverage) goes."""
        with self.mutex:
            if self._qsize() < self.maxsize:
                return True
            for i, item in enumerate(self.queue):
                if isinstance(item, _Item) and not item.sampled:
                    del self.queue[i]
                    return True
            return False

    def thin(self, fps: float) -> None:
        """Sample the queued frames again at `fps`: those closer than 1/fps to the last one kept are left unscored."""
        with self.mutex:
            last = -math.inf
            for item in self.queue:
                if isinstance(item, _Item) and item.sampled:
                    if item.t - last < 1.0 / fps - 1e-9:
                        item.sampled, item.ref, item.alignment = False, None, None
                    else:
                        last = item.t


class _Decoder(threading.Thread):
    """Decodes, samples, pairs and extracts luma ahead of the scorers.

    With `live`, a full queue never blocks the reader: an unsampled frame queued is dropped to
    make room, else the new frame is; sampled frames lost that way are counted in `dropped`.
    """

    def __init__(self, source, sampler: Sampler, pairer, need_rgb: bool, depth: int = 32, live: bool = False):
        super().__init__(daemon=True, name=f"decode-{source.stream_id}")
        self.source, self.sampler, self.pairer, self.need_rgb = source, sampler, pairer, need_rgb
        self.queue = _FrameQueue(maxsize=depth)
        self.live = live
        self.arrived = 0  # frames read from the source
        self.dropped = 0  # sampled frames dropped because the queue was full (live only)
        self.decode_s: deque[float] = deque()  # reading-thread CPU seconds per frame, until the scorers report them
        self._stop_flag = threading.Event()
        self._period = 1.0 / ((source.info.fps if source.info else None) or 25.0)  # 25 fps for a live source not yet connected

    def run(self) -> None:
        try:
            frames = iter(self.source)
            while True:
                started = time.thread_time()  # CPU time: a live source's wait for the network is not decoding
                frame = next(frames, None)
                if frame is None or self._stop_flag.is_set():
                    break
                self.decode_s.append(time.thread_time() - started)
                self.arrived += 1
                t = frame.pts_s if frame.pts_s is not None else frame.index * self._period
                item = _Item(frame, t, self.sampler.take(frame.index, t))
                if self.live and not self.queue.make_room():  # before pairing and conversion: nothing spent on it
                    self.dropped += item.sampled
                    continue
                if item.sampled:
                    match = self.pairer.match(frame) if self.pairer is not None else None
                    if match is not None:
                        item.ref, item.alignment = match.reference, match.alignment
                    for f in (frame, item.ref):  # convert here, off the scoring thread
                        if f is not None:
                            f.y  # noqa: B018
                            if self.need_rgb:
                                f.rgb()
                self.queue.put(item)
            self.queue.put(_END)
        except BaseException as e:  # surfaced in the consumer
            self.queue.put(e)

    def request_stop(self) -> None:
        self._stop_flag.set()

    def stop(self) -> None:
        """Stop and join: drains the queue so a producer blocked on a full queue can see the flag."""
        self._stop_flag.set()
        while self.is_alive():  # unblock a producer waiting on a full queue
            try:
                self.queue.get(timeout=0.1)
            except queue.Empty:
                pass

    def items(self):
        while (item := self.queue.get()) is not _END:
            if self._stop_flag.is_set() and not isinstance(item, BaseException):
                continue  # stopping: drop what is queued, keep draining until the producer ends
            if isinstance(item, BaseException):
                raise item
            yield item


class StreamPipeline:
    """One stream's pipeline; `run()` consumes the source until it ends or `stop()` is called.

    Works for files and live sources alike: frames are scored in batches of `batch_size`, but a
    partial batch is scored as soon as the decoder has nothing more queued, so live latency stays
    at about one frame. Records, closed windows, alert events and stream events go to `sinks`
    (a `Sinks`, which several pipelines may share), and so do the runtime counters of each batch.
    `sources`: the source and any reference source, which `stop()` stops and `close()` closes.
    With `summarise=False` (live) no per-frame history is kept, so memory stays flat.
    `keepup` (live sources; None for files, which are scored losslessly) makes the reader drop
    frames rather than wait, gets each scored batch's lag and emits `behind`/`caught_up` events;
    it steers its own Sampler, which the pipeline then uses instead of `sampler`.
    `vmaf`: VmafOptions to score fr.vmaf on frames with a reference (results arrive a chunk later,
    emitted with their windows and alerts from the collector thread; a failed chunk is a
    `scorer_error` stream event and counted in `scorer_errors`).
    """

    def __init__(self, source, *, sinks: Sinks, pairer=None, sampler: Sampler | None = None,
                 window: WindowSpec = WindowSpec(2.0), scorers=(), alerts=None, batch_size: int = 8,
                 summarise: bool = True, on_record=None, thumbnails=None, keepup: KeepUp | None = None,
                 vmaf: VmafOptions | None = None, sources=()):
        self.source, self.pairer = source, pairer
        self.sources = list(sources) or [source]
        self.sampler = keepup.sampler if keepup else (sampler or Sampler())
        self.keepup = keepup
        self.windows = WindowAggregator(window)
        self.sinks, self.scorers, self.alerts = sinks, list(scorers), alerts
        self.batch_size, self.summarise = batch_size, summarise
        self.on_record = on_record  # called with every record written (status displays, metrics)
        self.thumbnails = thumbnails  # ThumbnailStore holding recent frames for alert evidence
        self.collected: dict[str, list] = {}  # metric → [values], plus "_index"/"_pts" per scored frame
        self.frames_seen = 0
        self._decoder = _Decoder(source, self.sampler, pairer, need_rgb=any(s.needs_rgb for s in self.scorers),
                                 live=keepup is not None)
        self.vmaf = ChunkedVmaf(vmaf, self._vmaf_chunk, self._vmaf_failed) if vmaf else None
        self._vmaf_windows = WindowAggregator(window)
        self._vmaf_values: dict[int, float] = {}  # frame index → fr.vmaf, for the summary
        self.scorer_errors, self.last_scorer_error = 0, ""
        self._lost_reported = 0  # frames dropped or corrupt, as last reported to the sinks
        self.about: dict | None = None  # detail of the `started` event run() emits first (monitor/build.py)

    def emit(self, records) -> None:
        """Write records to the sinks (thread-safe); stream events from sources come in here too."""
        records = list(records)
        self.sinks.write(records)
        if self.on_record:
            for r in records:
                self.on_record(r)

    def run(self, on_progress=None) -> None:
        if self.about is not None:
            self.emit([StreamEvent(self.source.stream_id, "started", detail=self.about)])
        self._decoder.start()
        try:
            batch: list[_Item] = []  # sampled and unsampled frames, in order
            for item in self._decoder.items():
                self.frames_seen += 1
                if batch and item.sampled and (item.frame.width, item.frame.height) != _size(batch):
                    self._process(batch)  # resolution change: new batch
                    batch = []
                batch.append(item)
                n_sampled = sum(i.sampled for i in batch)
                if n_sampled >= self.batch_size or (n_sampled and self._decoder.queue.empty()):
                    self._process(batch)
                    batch = []
                if on_progress:
                    on_progress(1)
            self._process(batch)
            closed = self.windows.flush()
            self.emit(closed)
            if self.alerts:
                self.emit(self._alerts_for_windows(closed))
            if self.vmaf:
                self.vmaf.finish()
                closed = self._vmaf_windows.flush()
                self.emit(closed + (self._alerts_for_windows(closed) if self.alerts else []))
                if self.summarise:
                    self.collected["fr.vmaf"] = [self._vmaf_values.get(i, math.nan)
                                                 for i in self.collected.get("_index", [])]
            if self.alerts:
                self.emit(self.alerts.flush())
        finally:
            self._decoder.stop()
            if self.vmaf:
                self.vmaf.close()

    def stop(self) -> None:
        """Ask the run to end (from another thread or a signal handler): the sources stop, buffers flush."""
        for source in self.sources:
            source.stop()
        self._decoder.request_stop()

    def close(self) -> None:
        """Release the sources (files, sockets) once the run is over."""
        for source in self.sources:
            source.close()

    def _alerts_for_windows(self, closed) -> list:
        return [e for w in closed for e in self.alerts.observe_window(w)]

    def _vmaf_chunk(self, entries) -> None:
        """A chunk of fr.vmaf results, in frame order (collector thread): records, their windows and alerts."""
        records, closed = [], []
        for stream_id, t, rec in entries:
            closed += self._vmaf_windows.observe(stream_id, t)
            if rec is None:
                continue
            records.append(rec)
            self._vmaf_windows.add(stream_id, rec.metric, "value", t, rec.value)
            self._vmaf_windows.add(stream_id, rec.metric, "score", t, rec.score)
            if self.alerts:
                records += self.alerts.observe_frame(rec, t=t)
            if self.summarise:
                self._vmaf_values[rec.frame_index] = rec.value
        if self.alerts:
            records += self._alerts_for_windows(closed)
        self.emit(records + closed)

    def _vmaf_failed(self, stream_id: str, error: str, frames: int) -> None:
        self.scorer_errors += 1
        self.last_scorer_error = error
        self.emit([StreamEvent(stream_id, "scorer_error", detail={"metric": "fr.vmaf", "frames": frames,
                                                                  "error": error})])

    def _process(self, batch: list[_Item]) -> None:
        """Score the sampled frames of `batch`, then replay it in order into windows, alerts and sinks."""
        if not batch:
            return
        started = time.monotonic()
        if self.vmaf:  # first, so libvmaf works while the other scorers do
            for i in batch:
                self.vmaf.push(i.frame, i.t, i.ref, i.sampled, i.alignment)
        sampled = [i for i in batch if i.sampled]
        values: dict[str, np.ndarray] = {}
        extras: dict[str, list] = {}
        infos, tags = {}, {}
        timings: dict[str, float] = {}  # scorer name → seconds per sampled frame
        if sampled:
            for scorer in self.scorers:
                t0 = time.perf_counter()
                v, e = scorer.score([i.frame for i in sampled], [i.ref for i in sampled])
                timings[scorer.tag] = (time.perf_counter() - t0) / len(sampled)
                values.update(v)
                extras.update(e)
                infos.update(scorer.metrics)
                tags.update(scorer.models)
        scores = {m: infos[m].to_score(torch.from_numpy(v.astype(np.float64))).numpy() if infos[m].to_score else None
                  for m, v in values.items()}
        records, closed = [], []
        k = 0
        for item in batch:
            closed += self.windows.observe(item.frame.stream_id, item.t, item.frame.corrupt)
            if not item.sampled:
                continue
            f = item.frame
            if self.thumbnails is not None:
                self.thumbnails.add(f)
            if self.summarise:
                self.collected.setdefault("_index", []).append(f.index)
                self.collected.setdefault("_pts", []).append(item.t)
            for m, v in values.items():
                val = float(v[k])
                sc = float(scores[m][k]) if scores[m] is not None else None
                if self.summarise:
                    self.collected.setdefault(m, []).append(val)
                if math.isnan(val):
                    continue
                extra = extras[m][k] if m in extras else {}
                if item.alignment and infos[m].kind == "FR":
                    extra = {**extra, **item.alignment}
                rec = FrameScore(f.stream_id, f.index, f.pts_s, f.ingest_ts, f.width, f.height, m, val, sc,
                                 tags.get(m), extra, f.corrupt)
                records.append(rec)
                self.windows.add(f.stream_id, m, "value", item.t, val)
                if sc is not None:
                    self.windows.add(f.stream_id, m, "score", item.t, sc)
                if self.alerts:
                    records += self.alerts.observe_frame(rec, t=item.t)
            k += 1
        if self.alerts:
            records += self._alerts_for_windows(closed)
        self.emit(records + closed)
        self._report_runtime(batch[0].frame.stream_id, len(batch), timings)
        if sampled and self.keepup is not None:
            self._keep_up(sampled[0].frame, len(sampled), time.monotonic() - started)

    def _keep_up(self, oldest: Frame, scored: int, busy_s: float) -> None:
        """Report a scored batch's lag (that of its oldest frame) to the KeepUp, and emit the events it decides."""
        lag = (utcnow() - oldest.ingest_ts).total_seconds()
        d, cap = self._decoder, self.sampler.cap
        events = self.keepup.observe(time.monotonic(), lag, scored, busy_s, arrived=d.arrived, dropped=d.dropped)
        if self.sampler.cap is not None and (cap is None or self.sampler.cap < cap):
            d.queue.thin(self.sampler.cap)  # the queued frames were sampled at a rate the scorers could not sustain
        self.emit([StreamEvent(oldest.stream_id, name, detail=detail) for name, detail in events])

    def _report_runtime(self, stream_id: str, decoded: int, timings: dict[str, float]) -> None:
        """The batch's runtime counters to the sinks: frames decoded and dropped, decode and per-scorer time."""
        d = self._decoder
        decode_s = [d.decode_s.popleft() for _ in range(len(d.decode_s))]
        lost = d.dropped + self.source.stats.decode_errors
        stats = RuntimeStats(decoded, lost - self._lost_reported, decode_s, timings)
        self._lost_reported = lost
        self.sinks.runtime(stream_id, stats)


def _size(batch: list[_Item]) -> tuple[int, int]:
    f = next(i.frame for i in batch if i.sampled) if any(i.sampled for i in batch) else batch[0].frame
    return f.width, f.height
