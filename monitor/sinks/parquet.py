"""Parquet sink: one dataset per record kind, hive-partitioned by stream_id and date, zstd.

`out_dir` is a folder or an object-store URL (monitor/storage.py). Every file is written under a
dot-prefixed temporary name, fsynced, then renamed into place (in a store: uploaded in one piece), so
a reader (or a crash) never sees a half-written file: readers skip dot-files, and a rename is
atomic on POSIX file systems.
"""
from __future__ import annotations

import time
import uuid
from collections import defaultdict

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from monitor import storage
from monitor.paths import component
from monitor.records import RECORD_TYPES, record_kind, to_table
from monitor.sinks import Sink


class ParquetSink(Sink):
    """Buffers records; writes a file per (kind, stream, date) partition every `rows_per_file` rows, once the
    oldest buffered record is `roll_s` seconds old (live streams: files appear steadily), and on close.

    A write that fails (a full or read-only disk) raises and keeps its records buffered for the next
    try, up to `max_buffered` per kind; older ones beyond that are dropped and counted in `lost`.
    """

    def __init__(self, out_dir: str, rows_per_file: int = 200_000, roll_s: float | None = None,
                 max_buffered: int = 200_000):
        self.out_dir = out_dir
        self.rows_per_file = rows_per_file
        self.roll_s = roll_s
        self.max_buffered = max(max_buffered, rows_per_file)
        self.lost = 0
        self._buf: dict[str, list] = defaultdict(list)
        self._since: dict[str, float] = {}  # kind → monotonic time its oldest buffered record arrived
        self.files_written: list[str] = []

    def write(self, records) -> None:
        now = time.monotonic()
        for r in records:
            kind = record_kind(r)
            self._buf[kind].append(r)
            self._since.setdefault(kind, now)
            if len(self._buf[kind]) >= self.rows_per_file:
                self._flush_kind(kind)
        if self.roll_s is not None:
            for kind, since in list(self._since.items()):
                if now - since >= self.roll_s:
                    self._flush_kind(kind)

    def flush(self) -> None:
        for kind in list(self._buf):
            self._flush_kind(kind)

    def close(self) -> None:
        self.flush()

    def _flush_kind(self, kind: str) -> None:
        records, self._buf[kind] = self._buf[kind], []
        since = self._since.pop(kind, None)
        parts: dict[tuple[str, str], list] = defaultdict(list)
        for r in records:
            parts[(r.stream_id, r.ts.date().isoformat())].append(r)
        schema = RECORD_TYPES[kind].schema
        while parts:
            (stream_id, day), rows = next(iter(parts.items()))
            folder = storage.join(self.out_dir, kind, f"stream_id={component(stream_id)}", f"date={day}")
            try:
                self.files_written.append(write_atomic(to_table(rows, schema), folder))
            except OSError:
                self._keep(kind, [r for rows in parts.values() for r in rows], since)
                raise
            del parts[(stream_id, day)]

    def _keep(self, kind: str, unwritten: list, since: float | None) -> None:
        """Put records a failed write could not store back in front of the buffer (bounded: the oldest go first)."""
        buf = unwritten + self._buf[kind]
        overflow = max(0, len(buf) - self.max_buffered)
        self.lost += overflow
        self._buf[kind] = buf[overflow:]
        self._since[kind] = since if since is not None else time.monotonic()


def write_atomic(table: pa.Table, folder: str) -> str:
    """Write `table` as a new zstd Parquet file in `folder` (a path or URL), never seen half-written."""
    path = storage.join(folder, f"part-{uuid.uuid4().hex}.parquet")
    storage.write_file(path, lambda f: pq.write_table(table, f, compression="zstd"))
    return path


def read(out_dir: str, kind: str) -> pa.Table:
    """All rows of one record kind under `out_dir`, a path or URL (partition columns come from the files themselves)."""
    fs, path = storage.resolve(storage.join(out_dir, kind))
    return ds.dataset(path, filesystem=fs, format="parquet", schema=RECORD_TYPES[kind].schema,
                      partitioning=None).to_table()
