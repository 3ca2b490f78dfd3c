"""Append-only disk spool for records a broker has not acknowledged yet.

Entries are JSON lines (`topic`, `key`, `value`) in numbered segment files. New entries always go
to the newest segment; replay reads the oldest segments first and deletes a segment only after the
broker acknowledged all of it, so a crash at any point loses nothing (it may resend a segment).
Segments left by an earlier process are picked up on start, so the spool also survives restarts.
A failed append (a full or read-only disk) raises OSError and leaves no partial line behind.
"""
from __future__ import annotations

import json
import os

SUFFIX = ".spool.jsonl"


class Spool:
    def __init__(self, folder: str, segment_bytes: int = 8 << 20):
        self.folder = folder
        self.segment_bytes = segment_bytes
        self._counts = {path: len(read_segment(path)) for path in self._segment_paths()}
        self._file = None
        self._path: str | None = None

    @property
    def pending(self) -> int:
        """Entries on disk not yet acknowledged."""
        return sum(self._counts.values())

    def append(self, entries: list[dict]) -> None:
        if not entries:
            return
        if self._file is None or self._file.tell() >= self.segment_bytes:
            self._open_segment()
        start = self._file.tell()
        try:
            self._file.write("".join(json.dumps(e, separators=(",", ":"), ensure_ascii=False) + "\n" for e in entries))
            self._file.flush()  # a full disk fails here, not later in a flush that cannot tell which entries
        except OSError:
            self._abandon_segment(start)
            raise
        self._counts[self._path] += len(entries)

    def flush(self) -> None:
        """Make appended entries durable (fsync)."""
        if self._file is not None:
            self._file.flush()
            os.fsync(self._file.fileno())

    def _abandon_segment(self, size: int) -> None:
        """After a failed append: cut the segment back to its last whole entry and close it (the next append opens a new one)."""
        f, self._file = self._file, None
        try:
            f.truncate(size)  # drops what the buffer still holds too
        except OSError:
            pass  # a torn last line is skipped on read
        try:
            f.close()
        except OSError:
            pass
        if not self._counts.get(self._path):
            self._remove_quietly(self._path)

    def _remove_quietly(self, path: str) -> None:
        try:
            os.unlink(path)
        except OSError:
            pass
        self._counts.pop(path, None)

    def segments(self) -> list[str]:
        """Segments in append order, oldest first; the open one is sealed so replay never reads a growing file."""
        self.seal()
        return self._segment_paths()

    def seal(self) -> None:
        if self._file is not None:
            self.flush()
            self._file.close()
            self._file = None

    def remove(self, path: str) -> None:
        """Delete a segment whose entries the broker acknowledged."""
        os.unlink(path)
        del self._counts[path]
        _fsync_dir(self.folder)

    def close(self) -> None:
        self.seal()

    def _open_segment(self) -> None:
        self.seal()
        os.makedirs(self.folder, exist_ok=True)
        paths = self._segment_paths()
        number = int(os.path.basename(paths[-1])[: -len(SUFFIX)]) + 1 if paths else 0
        self._path = os.path.join(self.folder, f"{number:016d}{SUFFIX}")
        self._file = open(self._path, "a", encoding="utf-8")
        self._counts[self._path] = 0
        _fsync_dir(self.folder)

    def _segment_paths(self) -> list[str]:
        if not os.path.isdir(self.folder):
            return []
        return sorted(os.path.join(self.folder, n) for n in os.listdir(self.folder) if n.endswith(SUFFIX))


def read_segment(path: str) -> list[dict]:
    """Entries of one segment; a torn line (a crash or a full disk mid-append) is skipped."""
    with open(path, encoding="utf-8", errors="replace") as f:
        lines = f.read().split("\n")
    entries = []
    for line in lines:
        try:
            entries.append(json.loads(line))
        except ValueError:
            pass  # torn or empty
    return entries


def _fsync_dir(folder: str) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
