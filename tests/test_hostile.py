"""Hostile and damaged input: a fuzz corpus made here (no traceback ever, the documented exit code and message per
class), corrupt frames scored and flagged, stream ids that try to leave the output folder, one-line usage errors."""
from __future__ import annotations

import os
import random
import subprocess
import sys

import numpy as np
import pytest

from monitor.alerts.rules import LevelRule
from monitor.build import score_file, thumbnails_dir
from monitor.config import StreamConfig
from monitor.records import FrameScore
from monitor.samples import encode, panned_frames
from monitor.sinks.jsonl import JsonlSink
from monitor.sinks.parquet import ParquetSink, read
from monitor.views.report import write_report

ALWAYS = (LevelRule(name="any-picture", metric="sig.luma", scale="value", above=-1.0),)


def cli(*args, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "monitor.cli", *args], capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, "PYTHONPATH": os.environ.get("PYTHONPATH", "") + os.pathsep + os.getcwd()})


def one_line_error(p: subprocess.CompletedProcess, *words: str) -> None:
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 2 and len(lines) == 1 and lines[0].startswith("vqmon: error: "), p.stderr[-2000:]
    for w in words:
        assert w in lines[0], lines[0]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict[str, list[str]]:
    """≥ 40 damaged files by class: each class has its documented outcome (see test_fuzz_corpus)."""
    d = tmp_path_factory.mktemp("fuzz")
    rng = random.Random(13)
    frames = list(panned_frames(160, 96, 30))
    good = {
        "mp4": encode(str(d / "good.mp4"), frames, crf=28, container_options={"movflags": "+faststart"}),
        "mkv": encode(str(d / "good.mkv"), frames, crf=28),
        "webm": encode(str(d / "good.webm"), frames, codec="libvpx-vp9", crf=40),
        "fmp4": encode(str(d / "good.f.mp4"), frames, crf=28, container_options={"movflags": "frag_keyframe+empty_moov"}),
        "ts": encode(str(d / "good.ts"), frames, crf=28),
    }
    out: dict[str, list[str]] = {"damaged": [], "unreadable": []}

    def put(kind: str, name: str, data: bytes) -> None:
        path = d / name
        path.write_bytes(data)
        out[kind].append(str(path))

    for ext, path in good.items():
        data = open(path, "rb").read()
        for frac in (0.5, 0.7, 0.9):  # truncations after the header
            put("damaged", f"cut{int(frac * 100)}.{ext}", data[: int(len(data) * frac)])
        for k in range(3):  # bit flips in the payload
            buf = bytearray(data)
            for _ in range(40):
                i = rng.randrange(len(buf) // 3, len(buf))
                buf[i] ^= 1 << rng.randrange(8)
            put("damaged", f"flip{k}.{ext}", bytes(buf))
        put("damaged", f"garbage-tail.{ext}", data + os.urandom(4000))  # concatenated garbage
        if ext != "ts":  # MPEG-TS has no header to zero: its demuxer resyncs on the next packet
            put("unreadable", f"zero-head.{ext}", bytes(64) + data[64:])  # zeroed header
        put("unreadable", f"tiny.{ext}", data[:40])  # cut inside the header
    plain = open(encode(str(d / "plain.mp4"), frames, crf=28), "rb").read()  # moov at the end
    put("unreadable", "no-moov.mp4", plain[: len(plain) // 2])
    put("unreadable", "garbage.mp4", os.urandom(20000))
    put("unreadable", "empty.mkv", b"")
    ts = open(good["ts"], "rb").read()
    packets = [ts[i:i + 188] for i in range(0, len(ts), 188)]
    put("damaged", "lost-packets.ts", b"".join(p for i, p in enumerate(packets) if i % 10 != 5))  # 1 in 10 lost
    put("unreadable", "huge.y4m", b"YUV4MPEG2 W100000 H100000 F25:1 Ip C420jpeg\nFRAME\n" + bytes(1000))
    put("unreadable", "oversized.y4m", b"YUV4MPEG2 W8192 H8192 F25:1 Ip C420jpeg\n" + b"FRAME\n" + bytes(64))
    (d / "restarted-clock.ts").write_bytes(ts + ts)  # two recordings back to back: the clock jumps back
    out["retimed"] = [str(d / "restarted-clock.ts")]
    return out


def run(capsys, *args) -> subprocess.CompletedProcess:
    """`vqmon ARGS` in this process (no interpreter start per file): any exception but a usage error escapes."""
    from monitor.cli import main

    code = main(list(args))
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, out, err)


def test_fuzz_corpus_never_tracebacks_and_each_class_has_its_exit_code(corpus, capsys):
    assert sum(len(v) for v in corpus.values()) >= 40
    outcomes = {}
    for kind, paths in corpus.items():
        for path in paths:
            p = run(capsys, "score", path, "-q", "--device", "cpu")
            outcomes[os.path.basename(path)] = (kind, p.returncode, p.stderr.strip()[-300:])
            if kind == "unreadable":  # cannot be opened, or not a single frame decodes
                one_line_error(p, os.path.basename(path))
            else:  # scored as far as it decodes, the damage said on stderr, exit 1 (a clean file exits 0)
                assert p.returncode in (0, 1) and "frames:" in p.stdout, outcomes[os.path.basename(path)]
                assert (p.returncode == 1) == ("warning" in p.stderr), outcomes[os.path.basename(path)]
    cut = {name: o for name, o in outcomes.items() if name.startswith("cut50.") and name != "cut50.ts"}  # TS: no index
    assert all(code == 1 and "truncated" in text for _, code, text in cut.values()), "\n".join(map(str, cut.items()))
    p = cli("score", corpus["unreadable"][0], "-q")  # and through the real entry point
    assert "Traceback" not in p.stderr and p.returncode == 2


def test_backwards_or_zero_timestamps_are_retimed_and_reported(corpus):
    s = score_file(StreamConfig(corpus["retimed"][0]), device="cpu")
    assert s.frames_seen == 60 and s.retimed >= 1 and s.damaged
    worst = [m.worst_pts_s for m in s.metrics if m.worst_pts_s is not None]  # metrics with a better direction
    assert worst and min(worst) >= 0
    p = cli("score", corpus["retimed"][0], "-q", "--device", "cpu")
    assert p.returncode == 1 and "re-timed" in p.stderr


def test_lost_ts_packets_leave_corrupt_frames_scored_and_flagged(corpus, tmp_path):
    path = next(p for p in corpus["damaged"] if p.endswith("lost-packets.ts"))
    clean = score_file(StreamConfig(path.replace("lost-packets.ts", "good.ts")))
    s = score_file(StreamConfig(path, id="ts"), [ParquetSink(str(tmp_path))])
    assert s.frames_scored >= clean.frames_scored * 0.8  # what the viewer sees is scored, not skipped
    frames = read(str(tmp_path), "frames").to_pylist()
    flagged = {r["frame_index"] for r in frames if r["corrupt"]}
    assert len(flagged) == s.corrupt_frames > 0
    windows = read(str(tmp_path), "windows").to_pylist()
    per_window = {(w["window_start_s"]): w["corrupt"] for w in windows if w["metric"] == "sig.luma" and w["scale"] == "value"}
    assert sum(per_window.values()) == s.corrupt_frames


def test_old_parquet_without_corrupt_columns_still_reads(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    old = FrameScore.schema.remove(FrameScore.schema.get_field_index("corrupt"))
    folder = tmp_path / "frames" / "stream_id=cam" / "date=2026-01-01"
    folder.mkdir(parents=True)
    pq.write_table(pa.table({n: [None] if n not in ("stream_id", "metric") else ["cam" if n == "stream_id" else "m"]
                             for n in old.names}, schema=old), folder / "part-old.parquet")
    rows = read(str(tmp_path), "frames").to_pylist()
    assert rows[0]["stream_id"] == "cam" and rows[0]["corrupt"] is None


def test_oversized_frames_are_refused_and_the_limit_can_be_raised(tmp_path):
    clip = encode(str(tmp_path / "wide.mp4"), list(panned_frames(640, 360, 3)), crf=28)
    one_line_error(cli("score", clip, "-q", "--max-pixels", "100000"), "640×360", "--max-pixels")
    assert cli("score", clip, "-q", "--device", "cpu", "--max-pixels", "230400").returncode == 0


@pytest.mark.parametrize("stream_id", ["../../escape", "/abs/escape", "..", ".hidden"])
def test_stream_ids_never_leave_the_output_folder(media, tmp_path, stream_id):
    out = tmp_path / "deep" / "out"
    s = score_file(StreamConfig(media["events"], id=stream_id, alerts=ALWAYS),
                   [ParquetSink(str(out)), JsonlSink(str(out / "jsonl"))], thumbnails_dir=thumbnails_dir(str(out)),
                   device="cpu")
    assert s.frames_scored > 0
    report = write_report(str(out), str(out / "report.html"))
    written = [os.path.join(d, n) for d, _, names in os.walk(tmp_path) for n in names]
    assert written and all(p.startswith(str(out) + os.sep) for p in written), written
    assert not os.path.exists("/abs") and not (tmp_path / "escape").exists()
    thumbs = [p for p in written if p.endswith(".jpg")]
    assert thumbs and all(os.path.dirname(p) != str(out / "thumbnails") for p in thumbs)
    assert "data:image/jpeg;base64" in open(report).read()  # the report finds them where they were written


def test_usage_errors_are_one_line_exit_2(media, tmp_path):
    clip = media["events"]
    one_line_error(cli("score", clip, "--device", "gpu7"), "--device", "gpu7")
    import torch

    if not torch.cuda.is_available():
        one_line_error(cli("score", clip, "--device", "cuda"), "--device cuda", "no such CUDA device")
    (tmp_path / "file").write_text("x")
    one_line_error(cli("score", clip, "--out", str(tmp_path / "file")), "--out", "not a folder")
    one_line_error(cli("score", clip, "--out", "/proc/vqmon-out"), "--out", "cannot write")
    one_line_error(cli("report", str(tmp_path), "--out", "/proc/x/report.html"), "--out", "no such folder")
    one_line_error(cli("report", str(tmp_path), "--out", str(tmp_path)), "--out", "is a folder")
    one_line_error(cli("score", clip, "--model", "gsn"), "gsn/lite", "full-reference", "--ref")


def test_rtmp_stream_key_and_url_tokens_reach_no_output(tmp_path, caplog):
    """A listener whose URL holds a stream key and a token: nothing written, served or logged contains them."""
    import json
    import logging
    import urllib.request

    from broker import Broker, free_port
    from monitor import config
    from monitor.views.statuspage import StatusServer
    from monitor.watch import Watcher
    from rtmp import Push
    from test_watch import kafka_messages

    key, token = "sk-live-8f3a9c", "tok-77e1"
    clip = encode(str(tmp_path / "clip.mp4"), panned_frames(160, 96, 50), fps=25, crf=30)
    url = f"rtmp://127.0.0.1:{free_port()}/live/{key}?token={token}"
    broker = Broker().start()
    out = tmp_path / "out"
    cfg = config.parse({"device": "cpu", "streams": [{"url": url, "listen": True, "sample": "10fps", "window": "1s",
                                                      "alerts": [{"name": "any", "kind": "level", "metric": "sig.luma",
                                                                  "scale": "value", "above": -1}]}],
                        "sinks": {"parquet": {"out": str(out), "roll": "1s"}, "jsonl": {"out": str(out / "jsonl")},
                                  "kafka": {"bootstrap": broker.bootstrap, "spool": str(tmp_path / "spool")}}})
    caplog.set_level(logging.DEBUG)
    watcher = Watcher(cfg)
    page = StatusServer(watcher, "0")
    try:
        watcher.start()
        with Push(clip, url) as push:
            push.wait(timeout_s=30)
        served = ""
        for path in ("", "status.json", "metrics"):
            served += urllib.request.urlopen(page.url + path, timeout=5).read().decode()
    finally:
        watcher.stop()
        watcher.join(timeout=30)
        watcher.close()
        page.close()
    try:
        messages = [m.key + m.value for topic in ("vqmon.frames", "vqmon.events")
                    for m in kafka_messages(broker.bootstrap, topic)]
    finally:
        broker.stop()
    assert messages and read(str(out), "frames").num_rows > 0
    paths = [os.path.join(d, n) for d, _, names in os.walk(tmp_path) for n in names if d != str(tmp_path)]
    assert any(p.endswith(".jpg") for p in paths)  # thumbnails were written, in folders named by the stream id
    everything = [served, caplog.text, watcher.status_line(), *paths, *(m.decode() for m in messages)]
    everything += [open(p, "rb").read().decode("latin-1") for p in paths if not p.endswith((".jpg", ".parquet"))]
    everything += [json.dumps(read(str(out), kind).to_pylist(), default=str) for kind in ("frames", "events", "alerts")]
    for secret in (key, token):
        assert not [text[:200] for text in everything if secret in text]
