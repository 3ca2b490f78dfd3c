"""Parquet sink: round trip keeps schema and rows, partitions by stream/date; a killed writer leaves no partial file."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from datetime import datetime, timezone

import pyarrow.dataset as ds
import pyarrow.parquet as pq

from monitor.records import FrameScore, WindowStat
from monitor.sinks import parquet


def frame_records(n, stream, day):
    ts = datetime(2026, 11, day, 12, 0, tzinfo=timezone.utc)
    return [FrameScore(stream, i, i / 25, ts, 1920, 1080, "fr.psnr_y", 30.0 + i, 33.3 + i,
                       extras={"offset": i % 3}) for i in range(n)]


def test_round_trip_keeps_schema_and_every_row(tmp_path):
    recs = frame_records(10, "cam/1", 22) + frame_records(7, "cam 2", 23)
    win = WindowStat.build("cam/1", "fr.psnr_y", "value", 0.0, 2.0, "tumbling", 50,
                           {"count": 40, "mean": 1.0, "min": 0.5, "max": 2.0, "std": 0.1, "p5": 0.6,
                            "p10": 0.7, "p50": 1.0, "harmonic_mean": 0.9})
    sink = parquet.ParquetSink(str(tmp_path), rows_per_file=4)
    sink.write(recs + [win])
    sink.close()
    parts = sorted(os.path.relpath(os.path.dirname(f), tmp_path) for f in sink.files_written)
    assert "frames/stream_id=cam%2F1/date=2026-11-22" in parts and "frames/stream_id=cam%202/date=2026-11-23" in parts
    frames = parquet.read(str(tmp_path), "frames")
    assert frames.schema == FrameScore.schema
    assert frames.num_rows == 17
    got = sorted(frames.to_pylist(), key=lambda r: (r["stream_id"], r["frame_index"]))
    want = sorted(recs, key=lambda r: (r.stream_id, r.frame_index))
    for g, w in zip(got, want):
        assert (g["stream_id"], g["frame_index"], g["value"], g["score"], g["ingest_ts"]) == \
               (w.stream_id, w.frame_index, w.value, w.score, w.ingest_ts)
        assert g["extras"] == f'{{"offset":{w.extras["offset"]}}}'
    windows = parquet.read(str(tmp_path), "windows")
    assert windows.schema == WindowStat.schema and windows.to_pylist()[0]["coverage"] == 0.8
    # hive partitions are readable by any Arrow/Spark/DuckDB reader as columns
    hive = ds.dataset(str(tmp_path / "frames"), partitioning="hive").to_table(columns=["date"])
    assert sorted(set(hive.column("date").to_pylist())) == ["2026-11-22", "2026-11-23"]


def test_killed_writer_leaves_no_partial_file(tmp_path):
    child = textwrap.dedent(f"""
        import sys, pyarrow as pa, numpy as np
        from monitor.sinks.parquet import write_atomic
        big = pa.table({{"x": np.random.default_rng(0).random(6_000_000)}})
        write_atomic(pa.table({{"x": [1.0]}}), {str(tmp_path)!r})   # one complete file first
        print("writing", flush=True)
        write_atomic(big, {str(tmp_path)!r})
        print("done", flush=True)
    """)
    p = subprocess.Popen([sys.executable, "-c", child], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "writing"
    deadline = time.time() + 20
    while not any(n.endswith(".tmp") for n in os.listdir(tmp_path)) and time.time() < deadline:
        time.sleep(0.005)
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    names = os.listdir(tmp_path)
    visible = [n for n in names if not n.startswith(".")]
    assert any(n.endswith(".tmp") for n in names), "the writer was not caught mid-write"
    assert len(visible) == 1  # only the complete file
    assert pq.read_table(tmp_path / visible[0]).num_rows == 1
    assert ds.dataset(str(tmp_path), format="parquet").to_table().num_rows == 1
