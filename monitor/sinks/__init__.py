"""Where records go: the `Sink` contract, the type → factory table, and `Sinks`, the fan-out a pipeline writes to.

A sink declares what it needs instead of being probed: the record kinds it takes (`kinds`; a
config's `records:` narrows them per instance), how often it is flushed (`flush_interval_s`;
None: only on close), and `runtime`, the counters that records do not carry (frames decoded and
dropped, decode and inference time), which most sinks ignore.

Sinks never block the scoring path: `Sinks` runs each sink on its own thread behind its own
queue, so a webhook that never answers or a broker that hangs a flush delays only that sink.
A sink keeps what it cannot store yet (a buffer, a spool) and counts in `lost` what it could
not keep; `health()` says, in one line, what is wrong while something is. `Sinks` turns a
sink's trouble and its recovery into `sink_error`/`sink_ok` stream events and a log line, and
retries a failing sink (a flush) with a capped backoff.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field

from monitor.records import RECORD_TYPES, StreamEvent, record_kind

log = logging.getLogger(__name__)


@dataclass
class RuntimeStats:
    """What one scored batch cost, for sinks that keep runtime metrics (OTel)."""

    decoded: int = 0  # frames read from the source since the last report
    dropped: int = 0  # sampled frames lost since the last report (a full queue, or corrupt data)
    decode_s: list[float] = field(default_factory=list)  # seconds per decoded frame
    inference_s: dict[str, float] = field(default_factory=dict)  # scorer tag → seconds per scored frame


class Sink:
    """Base of every sink: `write` a batch of records, `flush` what is buffered, `close` at the end.

    `write` and `flush` may raise; what the sink could not keep it counts in `lost`.
    """

    kinds: frozenset[str] = frozenset(RECORD_TYPES)  # record kinds this sink takes
    flush_interval_s: float | None = None  # the sink is flushed this often
    name: str = ""  # the config's name for it (open_sink); the class name otherwise
    lost: int = 0  # records this sink dropped because it could neither deliver nor keep them

    def write(self, records: list) -> None:
        raise NotImplementedError

    def flush(self) -> None:
        """Nothing buffered by default."""

    def close(self) -> None:
        self.flush()

    def runtime(self, stream_id: str, stats: RuntimeStats) -> None:
        """Runtime counters of one stream; ignored unless the sink keeps them."""

    def health(self) -> str | None:
        """None while records flow; else what is wrong, in one line (e.g. a broker outage the spool absorbs)."""
        return None


def _parquet(o):
    from monitor.sinks.parquet import ParquetSink

    return ParquetSink(o.out, rows_per_file=o.rows, roll_s=o.roll)


def _kafka(o):
    from monitor.sinks.kafka import KafkaSink

    return KafkaSink(o.bootstrap, topic_prefix=o.topic_prefix, spool_dir=o.spool)


def _otel(o):
    from monitor.sinks.otel import OTelSink

    return OTelSink(exporter=o.exporter, prometheus=o.prometheus)


def _jsonl(o):
    from monitor.sinks.jsonl import JsonlSink

    return JsonlSink(o.out)


def _webhook(o):
    from monitor.sinks.webhook import WebhookSink

    return WebhookSink(o.url, retries=o.retries)


FACTORIES = {"parquet": _parquet, "kafka": _kafka, "otel": _otel, "jsonl": _jsonl, "webhook": _webhook}


def open_sink(cfg) -> Sink:
    """The sink a `config.SinkConfig` describes (the heavy client libraries load only for the types in use)."""
    sink = FACTORIES[cfg.type](cfg.options)
    sink.name = cfg.name
    if cfg.records is not None:
        sink.kinds = cfg.records
    return sink


MAX_QUEUED = 200_000  # records waiting for one sink; beyond this the oldest are dropped (and counted)
RETRY_S, MAX_RETRY_S = 1.0, 30.0  # a failing sink is flushed again after this backoff, doubling up to the cap


@dataclass
class SinkHealth:
    """One sink as the status page and /metrics show it."""

    name: str
    ok: bool
    problem: str | None
    lost: int  # records it could not keep, plus those dropped from its queue
    queued: int  # records waiting for it


class _Worker(threading.Thread):
    """Runs one sink on its own thread, in the order records were written; its failures stay here."""

    def __init__(self, sink: Sink, on_change):
        super().__init__(daemon=True, name=f"sink-{sink.name}")
        self.sink, self.on_change = sink, on_change
        self.cond = threading.Condition()
        self.items: deque = deque()  # ("write", records) | ("runtime", (stream_id, stats)) | ("flush", Event) | ("close", None)
        self.queued = 0  # records in `items`
        self.dropped = 0  # records dropped from a full queue
        self.problem: str | None = None
        self.failed = False  # the last call raised
        self._backoff = RETRY_S
        self._next_flush = None if sink.flush_interval_s is None else time.monotonic() + sink.flush_interval_s

    def put(self, kind: str, value) -> None:
        with self.cond:
            if kind == "write":
                self.queued += len(value)
                while self.queued > MAX_QUEUED:  # the oldest records go: a sink that far behind is failing anyway
                    i = next(i for i, (k, _) in enumerate(self.items) if k == "write")
                    old = self.items[i][1]
                    del self.items[i]
                    self.queued -= len(old)
                    self.dropped += len(old)
            self.items.append((kind, value))
            self.cond.notify()

    def run(self) -> None:
        while True:
            with self.cond:
                if not self.items:
                    self.cond.wait(None if self._next_flush is None else max(0.0, self._next_flush - time.monotonic()))
                item = self.items.popleft() if self.items else None
                if item is not None and item[0] == "write":
                    self.queued -= len(item[1])
            if item is None:
                if self._next_flush is not None and time.monotonic() >= self._next_flush:
                    self._call(self.sink.flush)
                continue
            kind, value = item
            if kind == "write":
                taken = [r for r in value if record_kind(r) in self.sink.kinds]
                if taken:
                    self._call(self.sink.write, taken)
            elif kind == "runtime":
                self._call(self.sink.runtime, *value)
            elif kind == "flush":
                self._call(self.sink.flush)
                value.set()
            else:
                self._call(self.sink.close)
                return
            if self._next_flush is not None and time.monotonic() >= self._next_flush:
                self._call(self.sink.flush)

    def _call(self, fn, *args) -> None:
        """Call the sink; a raise or an unhealthy sink is a problem, retried by a flush after a growing backoff."""
        try:
            fn(*args)
            raised = None
        except Exception as e:  # noqa: BLE001 - any sink failure is reported, never raised into the pipeline
            raised = f"{type(e).__name__}: {' '.join(str(e).split())}"
        problem = raised or self.sink.health()
        interval = self.sink.flush_interval_s
        if raised:
            self._next_flush = time.monotonic() + self._backoff
            self._backoff = min(MAX_RETRY_S, self._backoff * 2)
        elif fn == self.sink.flush:
            self._next_flush = None if interval is None else time.monotonic() + interval
        if problem is None:
            self._backoff = RETRY_S
        if problem != self.problem:
            was, self.problem = self.problem, problem
            self.on_change(self, was)

    def health(self) -> SinkHealth:
        return SinkHealth(self.sink.name, self.problem is None, self.problem, self.sink.lost + self.dropped,
                          self.queued)


class Sinks:
    """The sinks one or more pipelines share: each record goes to the sinks that take its kind, each on its own thread."""

    def __init__(self, sinks=()):
        self.sinks: list[Sink] = list(sinks)
        for sink in self.sinks:
            sink.name = sink.name or type(sink).__name__
        self._streams: set[str] = set()  # stream ids written so far: a sink's trouble is reported on each
        self._lock = threading.Lock()  # guards _streams and _since (pipeline and sink threads)
        self._workers = [_Worker(s, self._changed) for s in self.sinks]
        self._since: dict[str, float] = {}  # sink name → monotonic time its current problem began
        for w in self._workers:
            w.start()

    @classmethod
    def open(cls, configs) -> "Sinks":
        return cls(open_sink(c) for c in configs)

    def write(self, records) -> None:
        """Queue `records` for every sink; returns at once."""
        records = list(records)
        if not records:
            return
        with self._lock:
            self._streams.update(r.stream_id for r in records)
        for w in self._workers:
            w.put("write", records)

    def runtime(self, stream_id: str, stats: RuntimeStats) -> None:
        for w in self._workers:
            w.put("runtime", (stream_id, stats))

    def flush(self, timeout_s: float = 30.0) -> None:
        """Wait (at most `timeout_s`) until every sink has written and flushed what was queued before."""
        done = [threading.Event() for _ in self._workers]
        for w, d in zip(self._workers, done):
            w.put("flush", d)
        deadline = time.monotonic() + timeout_s
        for d in done:
            d.wait(max(0.0, deadline - time.monotonic()))

    def close(self, timeout_s: float = 60.0) -> None:
        """Write what is queued, close every sink; a sink still busy after `timeout_s` is abandoned (and says so).

        Everything is flushed first, so the events of trouble found while flushing still reach the other sinks.
        """
        deadline = time.monotonic() + timeout_s
        self.flush(timeout_s)
        for w in self._workers:
            w.put("close", None)
        for w in self._workers:
            w.join(max(0.0, deadline - time.monotonic()))
            if w.is_alive():
                log.warning("sink %s: still busy after %g s at close; %d queued record(s) not written",
                            w.sink.name, timeout_s, w.queued)
            elif w.health().lost:
                log.warning("sink %s: %d record(s) lost", w.sink.name, w.health().lost)

    def health(self) -> list[SinkHealth]:
        return [w.health() for w in self._workers]

    def _changed(self, worker: _Worker, was: str | None) -> None:
        """A sink went wrong, changed trouble or recovered: a log line and an event on every stream it serves."""
        name, problem, now = worker.sink.name, worker.problem, time.monotonic()
        with self._lock:
            streams = sorted(self._streams)
            since = self._since.setdefault(name, now) if problem is not None else self._since.pop(name, now)
        if problem is not None:
            log.warning("sink %s: %s", name, problem)
            detail = {"sink": name, "error": problem, "lost": worker.health().lost}
            event = "sink_error"
        else:
            down_s = round(now - since, 3)
            log.warning("sink %s: working again after %.1f s (was: %s)", name, down_s, was)
            detail = {"sink": name, "down_s": down_s, "lost": worker.health().lost}
            event = "sink_ok"
        self.write([StreamEvent(sid, event, detail=detail) for sid in streams])
