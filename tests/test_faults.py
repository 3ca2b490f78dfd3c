"""Fault injection with real parts: a spool on a full or read-only file system, a webhook that never answers,
a broker killed mid-run. Scoring goes on, Parquet gets every record, the failing sink says so and counts its losses."""
from __future__ import annotations

import os
import socket
import subprocess
import time

import pytest

from broker import Broker, free_port
from conftest import Collect
from monitor.alerts.rules import LevelRule
from monitor.build import build
from monitor.config import StreamConfig
from monitor.records import StreamEvent, record_kind
from monitor.scoring.scorers import pick_device
from monitor.sinks import Sinks
from monitor.sinks.kafka import KafkaSink
from monitor.sinks.parquet import ParquetSink, read
from monitor.sinks.webhook import WebhookSink
from waiting import wait_for

ALWAYS = (LevelRule(name="any-picture", metric="sig.luma", scale="value", above=-1.0),)  # fires at the first frame
FAST = dict(flush_timeout_s=1.0, connect_timeout_s=0.5, retry_interval_s=0.2)


def score(clip: str, sinks: Sinks, on_frame=None) -> float:
    """Score `clip` into `sinks` (left open); seconds the scoring took."""
    pipe = build(StreamConfig(clip, id="cam", alerts=ALWAYS), sinks, pick_device("cpu"), live=False)
    seen = [0]

    def progress(n):
        seen[0] += n
        if on_frame:
            on_frame(seen[0])

    started = time.monotonic()
    pipe.run(progress)
    return time.monotonic() - started


def parquet_frames(out) -> int:
    return read(str(out), "frames").num_rows


def sink_events(records, name: str) -> list[str]:
    return [r.event for r in records if isinstance(r, StreamEvent) and r.detail.get("sink") == name]


@pytest.fixture
def small_fs(tmp_path):
    """A 64 KiB tmpfs (a disk that fills up), remountable read-only; needs the right to mount."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (not root)")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=True)


@pytest.mark.parametrize("fault", ["full", "read-only"])
def test_spool_that_cannot_be_written_keeps_scoring_and_parquet_going(media, tmp_path, small_fs, fault):
    if fault == "read-only":
        subprocess.run(["mount", "-o", "remount,ro", str(small_fs)], check=True)
    kafka = KafkaSink(f"127.0.0.1:{free_port()}", spool_dir=str(small_fs / "spool"), **FAST)  # no broker there
    everything, out = Collect(), tmp_path / "out"
    sinks = Sinks([kafka, ParquetSink(str(out)), everything])
    score(media["events"], sinks)
    sinks.close()
    frames = [r for r in everything.records if record_kind(r) == "frames"]
    assert parquet_frames(out) == len(frames) > 0  # every record reached Parquet
    assert "sink_error" in sink_events(everything.records, "KafkaSink")
    problem = next(r.detail["error"] for r in everything.records if isinstance(r, StreamEvent)
                   and r.event == "sink_error" and "not writable" in r.detail["error"])
    assert ("No space left" if fault == "full" else "Read-only") in problem
    assert kafka.spooled + kafka.lost == len(everything.records)  # each record spooled or counted as lost
    assert kafka.lost > 0 and (kafka.spooled > 0) == (fault == "full")


@pytest.fixture
def silent_endpoint():
    """An HTTP endpoint that accepts connections (the kernel's backlog) and never answers."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(64)
        yield f"http://user:p%40ss@127.0.0.1:{s.getsockname()[1]}/hook"


def test_a_webhook_that_never_answers_does_not_slow_scoring(media, tmp_path, silent_endpoint, caplog):
    plain = tmp_path / "plain"
    undisturbed = score(media["events"], sinks := Sinks([ParquetSink(str(plain))]))
    sinks.close()
    hook = WebhookSink(silent_endpoint, retries=0, timeout_s=30)
    out, everything = tmp_path / "out", Collect()
    sinks = Sinks([hook, ParquetSink(str(out)), everything])
    disturbed = score(media["events"], sinks)
    assert disturbed < 15  # one synchronous post would have taken 30 s
    assert disturbed < 2 * undisturbed + 2  # generous: the machine is shared
    sinks.close(timeout_s=1)  # the webhook is still waiting: abandoned, and said so
    assert parquet_frames(out) == parquet_frames(plain) == sum(record_kind(r) == "frames" for r in everything.records)
    assert "p@ss" not in caplog.text and "p%40ss" not in caplog.text


def test_broker_killed_mid_run_stalls_nothing_and_its_return_is_reported(media, tmp_path):
    broker = Broker().start()
    try:
        kafka = KafkaSink(broker.bootstrap, spool_dir=str(tmp_path / "spool"), **FAST)
        out, everything = tmp_path / "out", Collect()
        sinks = Sinks([kafka, ParquetSink(str(out)), everything])
        score(media["events"], sinks, on_frame=lambda n: n == 10 and broker.stop())
        wait_for(lambda: "sink_error" in sink_events(everything.records, "KafkaSink"), what="the outage reported")
        broker.start()
        wait_for(lambda: "sink_ok" in sink_events(everything.records, "KafkaSink"), what="the broker's return reported")
        sinks.close()
        assert parquet_frames(out) == sum(record_kind(r) == "frames" for r in everything.records)
        assert kafka.lost == 0 and kafka.spool.pending == 0 and kafka.replayed > 0
        assert os.listdir(tmp_path / "spool") == []
    finally:
        broker.stop()
