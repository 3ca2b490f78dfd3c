"""`vqmon watch` end to end with real parts: FFmpeg pushes RTMP twice, the monitor listens, scores live,
reports down/up between the pushes, and publishes to Parquet, a real Kafka broker (tansu) and OTel."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime

import numpy as np
import pytest
from kafka import KafkaConsumer, TopicPartition

from broker import Broker, free_port
from rtmp import Push
from monitor.samples import encode, panned_frames
from monitor.sinks.parquet import read


@pytest.fixture
def broker():
    b = Broker().start()
    yield b
    b.stop()


def push(clip: str, url: str) -> None:
    """Push the whole clip, retrying while the listener is between accept slices (tests/rtmp.py)."""
    with Push(clip, url) as publisher:
        assert publisher.wait(timeout_s=60) == 0


def kafka_messages(bootstrap: str, topic: str):
    c = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        parts = c.partitions_for_topic(topic) or set()
        c.assign([TopicPartition(topic, p) for p in sorted(parts)])
        c.seek_to_beginning()
        out, idle = [], 0
        while idle < 3:
            batch = [m for ms in c.poll(timeout_ms=300).values() for m in ms]
            idle = idle + 1 if not batch else 0
            out += batch
        return out
    finally:
        c.close()


@pytest.mark.slow
def test_watch_rtmp_push_with_kafka_parquet_otel(tmp_path, broker):
    clip = encode(str(tmp_path / "clip.mp4"), panned_frames(320, 180, 75), fps=25, crf=30)  # 3 s
    port = free_port()
    url = f"rtmp://127.0.0.1:{port}/live/cam"
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "monitor.cli", "watch", url, "--listen", "--id", "cam", "--sample", "10fps",
         "--window", "1s", "--out", str(out), "--kafka", broker.bootstrap, "--spool", str(tmp_path / "spool"),
         "--otel", "console", "--prometheus", f"127.0.0.1:{free_port()}", "--device", "cpu"],
        stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    status: list[str] = []
    reader = threading.Thread(target=lambda: status.extend(proc.stderr), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 60
        while not any("cam:" in line for line in status) and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(1.0)  # the listener is up once the pipeline thread runs
        push(clip, url)
        time.sleep(3.0)  # the end of the push is noticed; the source listens again
        push(clip, url)
        time.sleep(2.0)
    finally:
        proc.send_signal(signal.SIGINT)
        stdout, _ = proc.communicate(timeout=60)
        reader.join(timeout=5)
    assert proc.returncode == 0, "".join(status)[-3000:]

    frames = read(str(out), "frames").to_pylist()
    luma = sorted(r["frame_index"] for r in frames if r["metric"] == "sig.luma")
    assert 40 <= len(luma) <= 64, len(luma)  # two 3-s pushes sampled at 10 fps
    assert len(set(luma)) == len(luma)
    events = [r["event"] for r in sorted(read(str(out), "events").to_pylist(), key=lambda r: r["at"])]
    assert events.count("up") >= 2 and "down" in events[events.index("up"):], events
    assert read(str(out), "windows").num_rows > 0

    msgs = kafka_messages(broker.bootstrap, "vqmon.frames")
    assert {m.key for m in msgs} == {b"cam"}
    delivered = {(v["frame_index"], v["metric"]) for v in (json.loads(m.value) for m in msgs)}
    assert delivered == {(r["frame_index"], r["metric"]) for r in frames}  # records in = records out
    lat = np.array([m.timestamp / 1000 - datetime.fromisoformat(json.loads(m.value)["ingest_ts"]).timestamp()
                    for m in msgs])
    print(f"\ndecode → Kafka record latency: p50 {np.percentile(lat, 50) * 1000:.0f} ms, "
          f"p99 {np.percentile(lat, 99) * 1000:.0f} ms over {len(lat)} records")
    assert "vqmon.frame.score" in stdout  # the console OTel exporter printed the metrics on shutdown
    spool = tmp_path / "spool"  # made only when the broker is unreachable: here, never, or left empty
    assert not spool.exists() or all(os.path.getsize(spool / f) == 0 for f in os.listdir(spool))


def test_watch_aligns_a_reference_automatically(tmp_path):
    """A distorted file that starts 7 frames into its reference: FR records carry the found offset and confidence."""
    from monitor.cli import main

    frames = list(panned_frames(256, 144, 60))
    ref = encode(str(tmp_path / "ref.mp4"), frames, crf=None)
    dist = encode(str(tmp_path / "dist.mp4"), frames[7:], crf=28)
    assert main(["watch", dist, "--ref", ref, "--jsonl", str(tmp_path / "j"), "-q", "--device", "cpu"]) == 0
    rows = [json.loads(line) for line in open(tmp_path / "j" / "frames.jsonl")]
    psnr = [r for r in rows if r["metric"] == "fr.psnr_y"]
    assert len(psnr) >= 40
    assert {r["extras"]["align_offset"] for r in psnr} == {7}
    assert min(r["extras"]["align_confidence"] for r in psnr) >= 0.5
    assert min(r["value"] for r in psnr) > 30  # aligned pairs: the CRF-28 quality, not a mismatch
    events = [json.loads(line)["event"] for line in open(tmp_path / "j" / "events.jsonl")]
    assert "alignment_gained" in events
