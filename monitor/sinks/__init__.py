"""Where records go: the `Sink` contract, the type → factory table, and `Sinks`, the fan-out a pipeline writes to.

A sink declares what it needs instead of being probed: the record kinds it takes (`kinds`; a
config's `records:` narrows them per instance), how often the pipeline flushes it
(`flush_interval_s`; None: only on close), and `runtime`, the counters that records do not
carry (frames decoded and dropped, decode and inference time), which most sinks ignore.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from monitor.records import RECORD_TYPES, record_kind


@dataclass
class RuntimeStats:
    """What one scored batch cost, for sinks that keep runtime metrics (OTel)."""

    decoded: int = 0  # frames read from the source since the last report
    dropped: int = 0  # sampled frames lost since the last report (a full queue, or corrupt data)
    decode_s: list[float] = field(default_factory=list)  # seconds per decoded frame
    inference_s: dict[str, float] = field(default_factory=dict)  # scorer tag → seconds per scored frame


class Sink:
    """Base of every sink: `write` a batch of records, `flush` what is buffered, `close` at the end."""

    kinds: frozenset[str] = frozenset(RECORD_TYPES)  # record kinds this sink takes
    flush_interval_s: float | None = None  # the pipeline flushes the sink this often

    def write(self, records: list) -> None:
        raise NotImplementedError

    def flush(self) -> None:
        """Nothing buffered by default."""

    def close(self) -> None:
        self.flush()

    def runtime(self, stream_id: str, stats: RuntimeStats) -> None:
        """Runtime counters of one stream; ignored unless the sink keeps them."""


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
    if cfg.records is not None:
        sink.kinds = cfg.records
    return sink


class Sinks:
    """The sinks one or more pipelines share: each record goes to the sinks that take its kind, under one lock."""

    def __init__(self, sinks=()):
        self.sinks: list[Sink] = list(sinks)
        self.lock = threading.Lock()
        self._flushed: dict[int, float] = {}  # id(sink) → monotonic time of its last periodic flush

    @classmethod
    def open(cls, configs) -> "Sinks":
        return cls(open_sink(c) for c in configs)

    def write(self, records) -> None:
        records = list(records)
        if not records:
            return
        with self.lock:
            now = time.monotonic()
            for sink in self.sinks:
                taken = [r for r in records if record_kind(r) in sink.kinds]
                if taken:
                    sink.write(taken)
                if sink.flush_interval_s is not None and now - self._flushed.setdefault(id(sink), now) >= sink.flush_interval_s:
                    self._flushed[id(sink)] = now
                    sink.flush()

    def runtime(self, stream_id: str, stats: RuntimeStats) -> None:
        with self.lock:
            for sink in self.sinks:
                sink.runtime(stream_id, stats)

    def flush(self) -> None:
        with self.lock:
            for sink in self.sinks:
                sink.flush()

    def close(self) -> None:
        with self.lock:
            for sink in self.sinks:
                sink.close()
