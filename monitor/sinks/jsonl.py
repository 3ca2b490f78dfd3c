"""JSON Lines sink: one file per record kind in a folder, or every record on stdout tagged with its kind."""
from __future__ import annotations

import os
import sys

from monitor.records import record_kind, to_json
from monitor.sinks import Sink


class JsonlSink(Sink):
    flush_interval_s = 1.0  # live runs: lines reach the file/pipe within a second

    def __init__(self, out: str):
        self.out = out
        self._files: dict[str, object] = {}
        if out != "-":
            os.makedirs(out, exist_ok=True)

    def write(self, records) -> None:
        for i, r in enumerate(records):
            kind = record_kind(r)
            line = to_json(r)
            try:
                if self.out == "-":
                    sys.stdout.write(f'{{"record":"{kind}",{line[1:]}\n')
                else:
                    if kind not in self._files:
                        self._files[kind] = open(os.path.join(self.out, f"{kind}.jsonl"), "a", encoding="utf-8")
                    self._files[kind].write(line + "\n")
            except OSError:
                self.lost += len(records) - i  # a full disk or a closed pipe: these lines are gone
                raise

    def flush(self) -> None:
        for f in self._files.values():
            f.flush()
        sys.stdout.flush()

    def close(self) -> None:
        self.flush()
        for f in self._files.values():
            f.close()
        self._files.clear()
