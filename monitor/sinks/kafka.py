"""Kafka sink: JSON records keyed by stream_id, with a disk spool so a broker outage loses nothing.

Delivery is at-least-once and in order per stream. While the broker is reachable records go
straight to the producer (acks=all, idempotent, unlimited retries within `delivery_timeout`).
When a send fails, or is still unacknowledged `flush_timeout_s` after a flush, the producer is
dropped and every unacknowledged record goes to the spool, followed by all newer records until
the spool has been replayed; so a stream's records reach the broker in the order they were
written. Records on the wire when the broker failed may arrive twice; none is lost.

The monitor is never blocked by an unreachable broker: the sink runs on its own thread (`Sinks`),
connecting is tried at most every `retry_interval_s` and gives up after `connect_timeout_s`;
`flush()` runs every `flush_interval_s` so failures are noticed and the spool is made durable.
When the spool cannot be written either (a full or read-only disk), records wait in memory
(`max_backlog` of them; older ones beyond that are dropped and counted in `lost`) and the spool
is tried again at every flush; `health()` says which of these is happening.
"""
from __future__ import annotations

import logging
import time
from collections import deque

from kafka import KafkaProducer
from kafka.errors import KafkaTimeoutError, RetriableError

from monitor.records import record_kind, to_json
from monitor.sinks import Sink
from monitor.sinks.spool import Spool, read_segment

log = logging.getLogger(__name__)


class KafkaSink(Sink):
    flush_interval_s = 1.0  # the pipeline flushes this often: outages are noticed and the spool replayed

    def __init__(self, bootstrap: str, topic_prefix: str = "vqmon", spool_dir: str = "vqmon-spool",
                 flush_timeout_s: float = 5.0, connect_timeout_s: float = 1.0, retry_interval_s: float = 2.0,
                 max_backlog: int = 100_000, **producer_config):
        self.bootstrap = bootstrap
        self.topic_prefix = topic_prefix
        self.spool = Spool(spool_dir)
        self.flush_timeout_s = flush_timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.retry_interval_s = retry_interval_s
        # kafka-python >= 3 makes the producer idempotent by default (and drops that, with a warning, for
        # brokers older than 0.11); asking for it explicitly would make such brokers unusable.
        self.producer_config = {
            "acks": "all", "retries": float("inf"), "linger_ms": 5,
            "bootstrap_timeout_ms": int(connect_timeout_s * 1000), "max_block_ms": int(connect_timeout_s * 1000),
            "request_timeout_ms": int(flush_timeout_s * 1000), "delivery_timeout_ms": int(flush_timeout_s * 2000),
            **producer_config,
        }
        self.sent = 0  # acknowledged on first try
        self.spooled = 0  # written to the spool
        self.replayed = 0  # acknowledged from the spool
        self.lost = 0  # dropped: neither the broker nor the spool took them and the memory backlog was full
        self.max_backlog = max_backlog
        self._backlog: deque = deque()  # entries the spool could not take yet, oldest first
        self._spool_error: str | None = None
        self._producer: KafkaProducer | None = None
        self._in_flight: deque = deque()  # (future, entry) in send order
        self._next_connect = 0.0
        self._retired: list[KafkaProducer] = []  # dropped producers whose batches are still retrying

    def topic(self, record) -> str:
        return f"{self.topic_prefix}.{record_kind(record)}"

    def write(self, records) -> None:
        entries = [{"topic": self.topic(r), "key": r.stream_id, "value": to_json(r)} for r in records]
        self._collect_acks()
        if not self._ready():
            self._to_spool(entries)
            return
        for i, entry in enumerate(entries):
            try:
                self._in_flight.append((self._send(entry), entry))
            except RetriableError:
                self._fail()
                self._to_spool(entries[i:])
                return

    def flush(self) -> None:
        """Wait (bounded) for acknowledgements; on failure spool the rest. Then replay the spool if the broker is back."""
        if self._in_flight:
            try:
                self._producer.flush(self.flush_timeout_s)
            except KafkaTimeoutError:
                pass  # whatever is unacknowledged now is spooled below
            self._collect_acks()
            if self._in_flight:
                self._fail()
        self._close_retired(timeout_s=0)
        if self._backlog:
            self._to_spool([])
        if self.spool.pending or self._backlog:
            self._ready()
        try:
            self.spool.flush()
        except OSError as e:
            self._spool_error = _reason(e)

    def close(self) -> None:
        self.flush()
        if self._producer is not None:
            self._retired.append(self._producer)
            self._producer = None
        self._close_retired(timeout_s=self.producer_config["delivery_timeout_ms"] / 1000)
        self.lost += len(self._backlog)
        self._backlog.clear()
        self.spool.close()

    def health(self) -> str | None:
        """The same text for as long as the same trouble lasts (counts are in `lost` and the spool)."""
        if self._spool_error:
            return (f"broker {self.bootstrap} unreachable and spool {self.spool.folder} not writable "
                    f"({self._spool_error}): records wait in memory")
        if self._producer is None and self.spool.pending:
            return f"broker {self.bootstrap} unreachable: records go to the spool {self.spool.folder}"
        return None

    def _ready(self) -> bool:
        """True when records may go straight to the broker: connected, and nothing older waits in the spool."""
        if self._producer is None and time.monotonic() >= self._next_connect:
            try:
                self._producer = KafkaProducer(bootstrap_servers=self.bootstrap, **self.producer_config)
            except RetriableError:
                self._next_connect = time.monotonic() + self.retry_interval_s
        if self._producer is not None and self.spool.pending:
            self._replay()
        if self._producer is not None and not self.spool.pending and self._backlog:
            self._send_backlog()
        return self._producer is not None and not self.spool.pending and not self._backlog

    def _send_backlog(self) -> None:
        """The broker is back and the spool empty: what waited in memory goes out, in order."""
        while self._backlog:
            entry = self._backlog[0]
            try:
                self._in_flight.append((self._send(entry), entry))
            except RetriableError:
                self._fail()
                return
            self._backlog.popleft()
        self._spool_error = None

    def _replay(self) -> None:
        """Send the spool oldest segment first; delete each segment once all of it is acknowledged."""
        for path in self.spool.segments():
            entries = read_segment(path)
            try:
                futures = [self._send(e) for e in entries]
                self._producer.flush(self.flush_timeout_s)
            except RetriableError:
                self._fail()
                return
            if not all(f.succeeded() for f in futures):
                self._fail()
                return
            self.spool.remove(path)
            self.replayed += len(entries)
        log.info("Kafka %s is back: spool replayed (%d records so far)", self.bootstrap, self.replayed)

    def _send(self, entry: dict):
        return self._producer.send(entry["topic"], value=entry["value"].encode(), key=entry["key"].encode())

    def _collect_acks(self) -> None:
        """Forget acknowledged records at the head of the in-flight queue; a failed one means the broker is gone."""
        while self._in_flight and self._in_flight[0][0].is_done:
            if self._in_flight[0][0].failed():
                self._fail()
                return
            self._in_flight.popleft()
            self.sent += 1

    def _fail(self) -> None:
        """Drop the producer and move every unacknowledged record, in order, to the spool."""
        self._retired.append(self._producer)
        self._producer = None
        self._next_connect = time.monotonic() + self.retry_interval_s
        unacked = [entry for future, entry in self._in_flight if not future.succeeded()]
        self.sent += len(self._in_flight) - len(unacked)
        self._in_flight.clear()
        self._to_spool(unacked)
        log.warning("Kafka %s unreachable or failing: spooling records to %s", self.bootstrap, self.spool.folder)

    def _close_retired(self, timeout_s: float) -> None:
        """Close dropped producers. kafka-python's close() flushes first and raises while batches still retry, so
        a producer that cannot close yet is kept and closed later, once its batches failed (delivery_timeout_ms).
        Whatever it still delivers was spooled too: a duplicate, never a loss, and never ahead of older records."""
        for producer in list(self._retired):
            try:
                producer.close(timeout=timeout_s)
                self._retired.remove(producer)
            except KafkaTimeoutError:
                pass

    def _to_spool(self, entries: list[dict]) -> None:
        """Spool `entries` after any backlog; when the disk refuses, keep them in memory (bounded) and say so."""
        self._backlog.extend(entries)
        if not self._backlog:
            return
        try:
            self.spool.append(list(self._backlog))
        except OSError as e:
            self._spool_error = _reason(e)
            while len(self._backlog) > self.max_backlog:
                self._backlog.popleft()
                self.lost += 1
            return
        self.spooled += len(self._backlog)
        self._backlog.clear()
        self._spool_error = None


def _reason(e: OSError) -> str:
    return f"{e.strerror or e}" + (f": {e.filename}" if getattr(e, "filename", None) else "")
