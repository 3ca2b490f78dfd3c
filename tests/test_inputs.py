"""Bad and unusual input: clear one-line errors (exit 2), damaged files scored as far as they decode, pairing rules."""
from __future__ import annotations

import json
import subprocess
import sys

import av
import numpy as np
import pytest

from conftest import N
from monitor.build import score_file
from monitor.cli import main
from monitor.config import StreamConfig
from monitor.config import parse_sample
from monitor.errors import InputError
from monitor.samples import encode, panned_frames
from monitor.sinks.jsonl import JsonlSink
from monitor.source.sources import FileSource


def cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "monitor.cli", *args], capture_output=True, text=True)


def one_line_error(p: subprocess.CompletedProcess, *words: str) -> None:
    assert p.returncode == 2, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vqmon: error: "), p.stderr
    for w in words:
        assert w in lines[0]


def test_missing_file(tmp_path):
    one_line_error(cli("score", str(tmp_path / "nope.mp4")), "nope.mp4", "no such file")


def test_text_file_renamed_mp4(tmp_path):
    f = tmp_path / "notes.mp4"
    f.write_text("this is not a video\n" * 50)
    one_line_error(cli("score", str(f)), "notes.mp4", "cannot open")


def test_audio_only_file(tmp_path):
    path = str(tmp_path / "tone.m4a")
    with av.open(path, "w") as out:
        s = out.add_stream("aac", rate=16000)
        for i in range(8):
            fr = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            fr.sample_rate, fr.pts = 16000, i * 1024
            out.mux(s.encode(fr))
        out.mux(s.encode(None))
    one_line_error(cli("score", path), "tone.m4a", "no video stream", "audio")


def test_truncated_mp4_scores_what_decodes_and_counts_errors(tmp_path):
    full = encode(str(tmp_path / "full.mp4"), panned_frames(320, 192, N), crf=23,
                  container_options={"movflags": "+faststart"})
    data = open(full, "rb").read()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: int(len(data) * 0.6)])
    s = score_file(StreamConfig(str(cut)))
    assert 0 < s.frames_scored < N
    assert s.decode_errors >= 1 and "truncated" in s.last_error
    p = cli("score", str(cut), "-q")
    assert p.returncode == 1 and "decode error" in p.stderr and "cut.mp4" in p.stderr  # damaged: warned, exit 1


def test_truncated_mp4_without_index_is_a_clear_error(tmp_path):
    full = encode(str(tmp_path / "plain.mp4"), panned_frames(320, 192, 10), crf=23)  # moov at the end
    data = open(full, "rb").read()
    (tmp_path / "cut.mp4").write_bytes(data[: len(data) // 2])
    one_line_error(cli("score", str(tmp_path / "cut.mp4")), "cut.mp4", "truncated")


def test_bad_usage_exits_2(media):
    one_line_error(cli("score", media["ref"], "--sample", "often"), "--sample")
    one_line_error(cli("score", media["ref"], "--window", "soon"), "soon")
    assert cli("score").returncode == 2  # argparse usage error


def test_eight_ten_bit_and_rgb_inputs(tmp_path):
    frames = list(panned_frames(160, 96, 6))
    clips = {
        "yuv8": encode(str(tmp_path / "a.mp4"), frames, crf=None),
        "yuv10": encode(str(tmp_path / "b.mp4"), frames, crf=None, pix_fmt="yuv420p10le"),
        "rgb": encode(str(tmp_path / "c.mov"), frames, codec="png", crf=None, pix_fmt="rgb24"),
    }
    got = {}
    for name, path in clips.items():
        f = next(iter(FileSource(path)))
        got[name] = f
    assert got["yuv8"].bit_depth == 8 and got["yuv8"].y.dtype == np.uint8
    assert got["yuv10"].bit_depth == 10 and got["yuv10"].y.dtype == np.uint16 and got["yuv10"].y.max() <= 1023
    assert got["rgb"].full_range and got["rgb"].y.shape == (96, 160)
    # the same picture gives the same luma at every depth and through the RGB path (video vs full levels)
    y8 = got["yuv8"].y.astype(float)
    assert np.abs(got["yuv10"].y / 1023 * 255 - y8).mean() < 0.6
    assert np.abs((got["rgb"].y.astype(float) * 219 / 255 + 16) - y8).mean() < 1.5
    assert got["yuv8"].rgb().shape == (96, 160, 3)


def test_sampling_every_nth_and_fps_cap(media):
    assert score_file(StreamConfig(media[28], sample=parse_sample("3"))).frames_scored == len(range(0, N, 3))
    capped = score_file(StreamConfig(media[28], sample=parse_sample("5fps")))  # 25 fps clip, 1.6 s
    assert capped.frames_seen == N and capped.frames_scored == 8


def test_reference_offset_pairs_by_pts(tmp_path):
    frames = list(panned_frames(160, 96, 30))
    ref = encode(str(tmp_path / "ref.mp4"), frames, crf=None)
    late = encode(str(tmp_path / "late.mp4"), frames[7:], crf=None)  # distorted starts 7 frames in
    aligned = score_file(StreamConfig(late, ref=ref, ref_offset=7))
    misaligned = score_file(StreamConfig(late, ref=ref))
    psnr = lambda s: next(m for m in s.metrics if m.metric == "fr.psnr_y")  # noqa: E731
    assert psnr(aligned).min == 100.0  # lossless copies: identical once aligned
    assert psnr(misaligned).mean < 30


def test_pairs_by_index_when_the_stream_has_no_timestamps(tmp_path):
    frames = list(panned_frames(160, 96, 12))
    raw = encode(str(tmp_path / "raw.h264"), frames, crf=None)  # elementary stream: no pts
    assert next(iter(FileSource(raw))).pts_s is None
    s = score_file(StreamConfig(raw, ref=encode(str(tmp_path / "ref.mp4"), frames, crf=None)))
    assert s.ref_paired == 12
    assert next(m for m in s.metrics if m.metric == "fr.psnr_y").min == 100.0


def test_reference_shorter_or_longer_than_the_video(tmp_path):
    frames = list(panned_frames(160, 96, 20))
    video = encode(str(tmp_path / "v.mp4"), frames, crf=30)
    short = score_file(StreamConfig(video, ref=encode(str(tmp_path / "short.mp4"), frames[:12], crf=None)))
    assert (short.ref_paired, short.ref_unpaired, short.ref_ended_at) == (12, 8, 12)
    long = score_file(StreamConfig(video, ref=encode(str(tmp_path / "long.mp4"), frames + frames[:5], crf=None)))
    assert (long.ref_paired, long.ref_unpaired) == (20, 0)
    p = cli("score", video, "--ref", str(tmp_path / "short.mp4"), "-q")
    assert p.returncode == 0 and "8 without a reference" in p.stdout and "ended after 12 frames" in p.stdout


def test_jsonl_to_stdout_and_parquet_output(media, tmp_path):
    p = cli("score", media[38], "--ref", media["ref"], "--format", "jsonl", "--out", "-", "-q", "--window", "1s")
    assert p.returncode == 0
    rows = [json.loads(line) for line in p.stdout.splitlines()]
    frames = [r for r in rows if r["record"] == "frames"]
    windows = [r for r in rows if r["record"] == "windows"]
    assert len({r["frame_index"] for r in frames}) == N
    assert {r["metric"] for r in frames} >= {"fr.psnr_y", "fr.ssim_y", "sig.blockiness", "sig.black"}
    assert {(w["window_start_s"], w["scale"]) for w in windows if w["metric"] == "fr.psnr_y"} == {
        (0.0, "value"), (1.0, "value"), (0.0, "score"), (1.0, "score")}
    assert main(["score", media[38], "--out", str(tmp_path / "pq"), "-q"]) == 0
    from monitor.sinks.parquet import read

    assert len(set(read(str(tmp_path / "pq"), "frames").column("frame_index").to_pylist())) == N


def test_input_error_names_the_file():
    with pytest.raises(InputError, match="missing.mkv: no such file"):
        FileSource("missing.mkv")


def test_score_with_alert_rules_reports_freeze_and_black(media, tmp_path):
    from conftest import BLACK, FPS, FREEZE

    rules = tmp_path / "rules.yaml"
    rules.write_text("- {name: frozen, kind: freeze, for: 0.4s}\n- {name: dark, kind: black, for: 0.1s}\n")
    assert main(["score", media["events"], "--alerts", str(rules), "--format", "jsonl", "--out", str(tmp_path / "o"),
                 "-q"]) == 0
    events = [json.loads(line) for line in open(tmp_path / "o" / "alerts.jsonl")]
    firing = {e["rule"]: e for e in events if e["state"] == "firing"}
    assert set(firing) == {"frozen", "dark"}
    assert firing["frozen"]["since_s"] == pytest.approx((FREEZE[0] - 1) / FPS)
    assert firing["dark"]["since_s"] == pytest.approx(BLACK[0] / FPS)
    resolved = {e["rule"] for e in events if e["state"] == "resolved"}
    assert resolved == {"frozen", "dark"}
    from PIL import Image

    with Image.open(firing["dark"]["evidence"]["thumbnail"]) as im:  # the worst frame of the black stretch, as a small JPEG
        assert im.format == "JPEG" and im.width == 256 and max(im.convert("L").getextrema()) < 40
