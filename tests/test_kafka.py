"""Kafka sink against a real broker (tansu): topics, keys and JSON schema; a broker outage mid-run and a
broker that is not there at start lose no record and keep each stream's order; the spool ends empty."""
from __future__ import annotations

import json
import os
import time
from datetime import datetime, timezone

import pytest

from monitor.records import FrameScore, WindowStat, to_json
from monitor.sinks.kafka import KafkaSink
from monitor.sinks.spool import Spool, read_segment
from broker import Broker

STREAMS = ("cam/1", "cam 2")
FAST = dict(flush_timeout_s=1.0, connect_timeout_s=0.5, retry_interval_s=0.2)


@pytest.fixture
def broker():
    b = Broker().start()
    yield b
    b.stop()


def frames(start, stop):
    """Frame scores of both streams, interleaved, with frame_index as the per-stream sequence number."""
    ts = datetime(2026, 11, 23, 12, 0, tzinfo=timezone.utc)
    return [FrameScore(s, i, i / 25, ts, 1280, 720, "sig.black", 0.01 * i, 99.0, extras={"n": i})
            for i in range(start, stop) for s in STREAMS]


def first_seen_order(delivered):
    """Per stream, frame indexes in order of first delivery (at-least-once: later repeats are duplicates)."""
    order: dict[str, list[int]] = {}
    for key, value in delivered:
        seq = order.setdefault(key, [])
        if value["frame_index"] not in seq:
            seq.append(value["frame_index"])
    return order


def test_records_arrive_on_their_topics_with_key_and_schema(broker, tmp_path):
    recs = frames(0, 5)
    win = WindowStat.build("cam/1", "sig.black", "value", 0.0, 2.0, "tumbling", 50,
                           {"count": 40, "mean": 1.0, "min": 0.5, "max": 2.0, "std": 0.1, "p5": 0.6,
                            "p10": 0.7, "p50": 1.0, "harmonic_mean": 0.9})
    sink = KafkaSink(broker.bootstrap, topic_prefix="vq", spool_dir=str(tmp_path / "spool"), **FAST)
    sink.write(recs + [win])
    sink.close()
    assert (sink.sent, sink.spooled, sink.replayed) == (11, 0, 0)

    got_frames = broker.read("vq.frames", 10)
    assert sorted((k, json.dumps(v, sort_keys=True)) for k, v in got_frames) == \
        sorted((r.stream_id, json.dumps(json.loads(to_json(r)), sort_keys=True)) for r in recs)
    key, value = got_frames[0]
    assert set(value) == set(FrameScore.schema.names) and value["schema_version"] == 1
    assert value["ingest_ts"] == "2026-11-23T12:00:00Z" and value["extras"] == {"n": value["frame_index"]}
    [(key, value)] = broker.read("vq.windows", 1)
    assert key == "cam/1" and set(value) == set(WindowStat.schema.names) and value["p10"] == 0.7
    assert broker.read("vq.frames", 11, timeout_s=0.5) == got_frames  # nothing crossed topics, nothing doubled


def test_broker_outage_mid_run_loses_nothing(broker, tmp_path):
    spool_dir = tmp_path / "spool"
    sink = KafkaSink(broker.bootstrap, spool_dir=str(spool_dir), **FAST)
    sink.write(frames(0, 20))
    sink.flush()
    assert sink.sent == 40 and sink.spool.pending == 0
    before = broker.read("vqmon.frames", 40)  # memory storage: what the first broker holds dies with it

    broker.stop()
    sink.write(frames(20, 30))  # accepted by the producer, never acknowledged
    t0 = time.monotonic()
    sink.flush()
    assert time.monotonic() - t0 < 3
    assert sink.spooled == 20 and sink.spool.pending == 20
    t0 = time.monotonic()
    sink.write(frames(30, 40))  # broker still down: straight to the spool
    sink.flush()
    assert time.monotonic() - t0 < 2
    assert sink.spool.pending == 40 and sink.spooled == 40
    assert sum(len(read_segment(p)) for p in Spool(str(spool_dir)).segments()) == 40  # durable on disk

    broker.start()
    time.sleep(FAST["retry_interval_s"])
    sink.write(frames(40, 50))  # replays the spool first, then sends these
    sink.close()
    assert sink.replayed == 40 and sink.sent == 60 and sink.spool.pending == 0
    assert os.listdir(spool_dir) == []

    after = broker.read("vqmon.frames", 60)
    assert first_seen_order(before + after) == {s: list(range(50)) for s in STREAMS}


def test_no_broker_at_start_spools_then_delivers_after_a_restart_of_the_monitor(tmp_path):
    broker = Broker()
    spool_dir = str(tmp_path / "spool")
    sink = KafkaSink(broker.bootstrap, spool_dir=spool_dir, **FAST)
    t0 = time.monotonic()
    for i in range(0, 30, 10):
        sink.write(frames(i, i + 10))
    sink.close()  # the monitor stops while the broker was never reachable
    assert time.monotonic() - t0 < 3
    assert (sink.sent, sink.spooled, sink.replayed) == (0, 60, 0)

    broker.start()
    try:
        sink = KafkaSink(broker.bootstrap, spool_dir=spool_dir, **FAST)
        assert sink.spool.pending == 60  # picked up from disk
        sink.write(frames(30, 35))
        sink.close()
        assert (sink.sent, sink.spooled, sink.replayed) == (10, 0, 60)
        assert os.listdir(spool_dir) == []
        assert first_seen_order(broker.read("vqmon.frames", 70)) == {s: list(range(35)) for s in STREAMS}
    finally:
        broker.stop()


def test_spool_skips_a_torn_last_line_and_keeps_append_order(tmp_path):
    spool = Spool(str(tmp_path), segment_bytes=64)
    spool.append([{"topic": "t", "key": "k", "value": str(i)} for i in range(3)])
    spool.append([{"topic": "t", "key": "k", "value": "3"}])  # first segment is full: a new one
    spool.close()
    paths = Spool(str(tmp_path)).segments()
    assert len(paths) == 2
    with open(paths[-1], "a", encoding="utf-8") as f:
        f.write('{"topic":"t","key":"k","val')  # a crash mid-append
    reopened = Spool(str(tmp_path))
    assert reopened.pending == 4
    assert [e["value"] for p in reopened.segments() for e in read_segment(p)] == ["0", "1", "2", "3"]
