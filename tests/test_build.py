"""How the parts meet: the library never imports the CLI, sinks are named and pick their records, the
builder feeds every sink's runtime counters, and black levels follow each source's range."""
from __future__ import annotations

import ast
import json
import os
from datetime import datetime, timezone

import numpy as np
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from monitor import config
from monitor.build import score_file
from monitor.config import StreamConfig
from monitor.records import AlertEvent, FrameScore
from monitor.samples import encode, panned_frames
from monitor.sinks import Sinks
from monitor.sinks.otel import OTelSink

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TS = datetime(2026, 11, 23, 12, 0, tzinfo=timezone.utc)


def imported_modules(path: str) -> set[str]:
    tree = ast.parse(open(path, encoding="utf-8").read())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
    return names


def test_nothing_in_the_library_imports_the_command_line():
    offenders = []
    for package in ("monitor", "models", "pipelines"):
        for folder, _, files in os.walk(os.path.join(ROOT, package)):
            if os.path.relpath(folder, ROOT).startswith(os.path.join("monitor", "cli")):
                continue  # the command line itself
            for name in files:
                path = os.path.join(folder, name)
                if name.endswith(".py") and any(m == "monitor.cli" or m.startswith("monitor.cli.")
                                                for m in imported_modules(path)):
                    offenders.append(os.path.relpath(path, ROOT))
    assert offenders == []


def test_two_named_sinks_of_one_type_each_take_their_record_kinds(tmp_path):
    cfg = config.parse({"streams": [{"url": "a.mp4"}],
                        "sinks": {"everything": {"type": "jsonl", "out": str(tmp_path / "all")},
                                  "alerts-only": {"type": "jsonl", "out": str(tmp_path / "alerts"),
                                                  "records": ["alerts"]},
                                  "main": {"type": "kafka", "bootstrap": "k1:9092"},
                                  "dr": {"type": "kafka", "bootstrap": "k2:9092", "records": ["alerts", "events"]}}})
    assert [(s.name, s.type) for s in cfg.sinks] == [("everything", "jsonl"), ("alerts-only", "jsonl"),
                                                     ("main", "kafka"), ("dr", "kafka")]
    assert [s.options.bootstrap for s in cfg.sinks[2:]] == ["k1:9092", "k2:9092"]
    sinks = Sinks.open(cfg.sinks[:2])
    alert = AlertEvent(alert_id="low@cam@0.000", stream_id="cam", rule="low", metric="nr.liqe", state="firing",
                       since_s=0.0, at_s=1.0, value=10.0, threshold=40.0, evidence={})
    sinks.write([FrameScore("cam", 0, 0.0, TS, 64, 48, "sig.luma", 0.5, None), alert])
    sinks.close()
    assert sorted(os.listdir(tmp_path / "all")) == ["alerts.jsonl", "frames.jsonl"]
    assert os.listdir(tmp_path / "alerts") == ["alerts.jsonl"]
    assert json.loads((tmp_path / "alerts" / "alerts.jsonl").read_text())["rule"] == "low"


def test_otel_gets_frames_decoded_and_dropped_and_decode_latency_from_the_pipeline(tmp_path):
    n = 40
    full = encode(str(tmp_path / "full.mp4"), panned_frames(160, 96, n), crf=23,
                  container_options={"movflags": "+faststart"})
    data = open(full, "rb").read()
    (tmp_path / "cut.mp4").write_bytes(data[: int(len(data) * 0.6)])  # frames lost to a truncated file
    reader = InMemoryMetricReader()
    summary = score_file(StreamConfig(str(tmp_path / "cut.mp4"), id="cam"),
                         [OTelSink(exporter=None, readers=(reader,))], device="cpu")
    points = {}
    for rm in reader.get_metrics_data().resource_metrics:
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                points[m.name] = {frozenset(p.attributes.items()): p for p in m.data.data_points}
    cam = frozenset({("stream_id", "cam")})
    assert points["vqmon.frames.decoded"][cam].value == summary.frames_seen
    assert points["vqmon.frames.dropped"][cam].value == summary.decode_errors >= 1
    assert points["vqmon.decode.duration"][cam].count == summary.frames_seen


def test_black_follows_the_range_of_full_range_sources(tmp_path):
    """Luma 30 is black in video levels (black at 16) but not in full range (black at 0): yuvj sources are full range."""
    def black(rgb_level: int, pix_fmt: str) -> float:
        frames = [np.full((48, 64, 3), rgb_level, np.uint8)] * 3
        path = encode(str(tmp_path / f"{pix_fmt}-{rgb_level}.mp4"), frames, crf=None, pix_fmt=pix_fmt)
        s = score_file(StreamConfig(path), device="cpu")
        return next(m.mean for m in s.metrics if m.metric == "sig.black")

    assert black(30, "yuvj420p") == 0.0  # full range: luma 30, above 10 % of 0..255
    assert black(0, "yuvj420p") == 1.0
    assert black(16, "yuv420p") == 1.0  # video levels: the same dark grey (luma 30) is within 10 % above 16
