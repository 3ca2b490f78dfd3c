"""fr.vmaf: libvmaf (imageio-ffmpeg's FFmpeg) on vqmon's own decoded pairs, equal to FFmpeg's own libvmaf run on the
same files; chunked (live) values equal one whole run; alerts, errors, watch and the config key."""
from __future__ import annotations

import json
import os
import re
import subprocess

import av
import imageio_ffmpeg
import numpy as np
import pytest

from conftest import Collect
from monitor import config
from monitor.build import score_file
from monitor.cli import main
from monitor.config import StreamConfig
from monitor.config import parse_sample
from monitor.errors import InputError
from monitor.records import FrameScore, WindowStat
from monitor.samples import Segment, apply_segments, encode, panned_frames
from monitor.scoring.vmaf import ChunkedVmaf, VmafOptions
from monitor.source.sources import FileSource

W, H, N = 320, 192, 40
AGREE = 0.01  # VMAF points: the brief's bound for vqmon vs FFmpeg on the same files (measured: 0.0)


def ffmpeg_vmaf(dist: str, ref: str, ref_filter: str = "null", both_filter: str = "null") -> np.ndarray:
    """Per-frame VMAF of FFmpeg's own libvmaf run on the files (vmaf_v0.6.1, 2 threads)."""
    p = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-i", dist, "-i", ref, "-lavfi",
                        f"[0:v]{both_filter}[d];[1:v]{ref_filter},{both_filter}[r];"
                        "[d][r]libvmaf=n_threads=2:log_fmt=json:log_path=/dev/stdout", "-f", "null", "-"],
                       check=True, capture_output=True, text=True)
    return np.array([f["metrics"]["vmaf"] for f in json.loads(p.stdout)["frames"]])


def vqmon_vmaf(dist: str, ref: str, **kwargs) -> tuple[np.ndarray, list]:
    sink = Collect()
    kwargs.setdefault("vmaf", VmafOptions(chunk_s=60.0))
    score_file(StreamConfig(dist, ref=ref, **kwargs), sinks=[sink], device="cpu")
    rows = [r for r in sink.records if isinstance(r, FrameScore) and r.metric == "fr.vmaf"]
    return np.array([r.value for r in sorted(rows, key=lambda r: r.frame_index)]), sink.records


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    d = tmp_path_factory.mktemp("vmaf")
    big = list(panned_frames(3 * W // 2, 3 * H // 2, N))
    small = [av.VideoFrame.from_ndarray(f, format="rgb24").reformat(width=W, height=H, interpolation="BICUBIC")
             .to_ndarray(format="rgb24") for f in big]
    return {
        "ref": encode(str(d / "ref.mp4"), panned_frames(W, H, N), crf=None),
        "dist": encode(str(d / "dist.mp4"), panned_frames(W, H, N), crf=38),
        "ref10": encode(str(d / "ref10.mp4"), panned_frames(W, H, N), crf=None, pix_fmt="yuv420p10le"),
        "dist10": encode(str(d / "dist10.mp4"), panned_frames(W, H, N), crf=38, pix_fmt="yuv420p10le"),
        "ref_big": encode(str(d / "ref_big.mp4"), big, crf=None),  # 480×288: vqmon scales it to 320×192
        "dist_small": encode(str(d / "dist_small.mp4"), small, crf=38),
    }


def test_8bit_values_equal_ffmpeg_libvmaf_on_the_same_files(clips):
    ours, records = vqmon_vmaf(clips["dist"], clips["ref"])
    theirs = ffmpeg_vmaf(clips["dist"], clips["ref"])
    assert len(ours) == len(theirs) == N
    assert np.abs(ours - theirs).max() <= AGREE
    rows = [r for r in records if isinstance(r, FrameScore) and r.metric == "fr.vmaf"]
    assert all(r.model == "vmaf/vmaf_v0.6.1" and r.score == min(max(r.value, 0), 100) for r in rows)
    windows = [w for w in records if isinstance(w, WindowStat) and w.metric == "fr.vmaf"]
    assert {w.scale for w in windows} == {"value", "score"} and all(w.coverage == 1.0 for w in windows)
    assert sum(w.count for w in windows if w.scale == "value") == N


def test_10bit_values_equal_ffmpeg_libvmaf(clips):
    with av.open(clips["dist10"]) as c:
        assert c.streams.video[0].codec_context.pix_fmt == "yuv420p10le"
    ours, _ = vqmon_vmaf(clips["dist10"], clips["ref10"])
    theirs = ffmpeg_vmaf(clips["dist10"], clips["ref10"])
    assert len(ours) == N and np.abs(ours - theirs).max() <= AGREE


def test_reference_of_another_size_is_scaled_like_ffmpeg_scale_bicubic(clips):
    ours, _ = vqmon_vmaf(clips["dist_small"], clips["ref_big"])
    theirs = ffmpeg_vmaf(clips["dist_small"], clips["ref_big"], ref_filter=f"scale={W}:{H}:flags=bicubic")
    assert len(ours) == N and np.abs(ours - theirs).max() <= AGREE


@pytest.mark.parametrize("chunk_s", [0.2, 0.04])  # 5 frames, and 1 frame per libvmaf run
def test_chunked_values_equal_one_whole_run(clips, chunk_s):
    whole, _ = vqmon_vmaf(clips["dist"], clips["ref"])
    chunked, records = vqmon_vmaf(clips["dist"], clips["ref"], vmaf=VmafOptions(chunk_s=chunk_s))
    assert len(chunked) == N and np.abs(chunked - whole).max() <= 1e-6
    windows = [(w.window_start_s, w.scale, w.count) for w in records if isinstance(w, WindowStat) and w.metric == "fr.vmaf"]
    assert windows == [(0.0, "value", N), (0.0, "score", N)]


def test_sampled_frames_are_one_sequence_for_the_motion_term(clips):
    ours, _ = vqmon_vmaf(clips["dist"], clips["ref"], sample=parse_sample("2"), vmaf=VmafOptions(chunk_s=0.2))
    theirs = ffmpeg_vmaf(clips["dist"], clips["ref"], both_filter=r"select=not(mod(n\,2))")
    assert len(ours) == N // 2 and np.abs(ours - theirs).max() <= AGREE


def test_a_libvmaf_run_that_dies_costs_its_chunk_only(clips):
    delivered, errors = [], []
    v = ChunkedVmaf(VmafOptions(chunk_s=0.2), delivered.extend, lambda *e: errors.append(e))
    for k, (f, r) in enumerate(zip(FileSource(clips["dist"]), FileSource(clips["ref"]))):
        v.push(f, f.pts_s, r, True)
        if k == 2:
            v._open.proc.kill()  # the first chunk's FFmpeg dies mid-run
    v.finish()
    assert len(errors) == 1 and errors[0][0] == "dist" and errors[0][2] == 5 and "libvmaf exited" in errors[0][1]
    values = [rec.value if rec else None for _, _, rec in delivered]
    assert len(values) == N and values[:5] == [None] * 5
    whole, _ = vqmon_vmaf(clips["dist"], clips["ref"])
    assert np.abs(np.array(values[5:]) - whole[5:]).max() <= 1e-6


def test_level_alert_on_fr_vmaf_fires_on_a_soft_stretch_with_its_picture(tmp_path, capsys):
    frames = list(panned_frames(W, H, 60))
    ref = encode(str(tmp_path / "ref.mp4"), frames, crf=None)
    dist = encode(str(tmp_path / "soft.mp4"), apply_segments(frames, [Segment(20, 40, "soft")]), crf=23)
    (tmp_path / "rules.json").write_text(json.dumps([
        {"name": "vmaf-low", "kind": "level", "metric": "fr.vmaf", "below": 60, "for": "0.2s", "recover_above": 70},
        {"name": "vmaf-window", "kind": "level", "metric": "fr.vmaf", "stat": "mean", "below": 60},
    ]))
    out = tmp_path / "out"
    assert main(["score", dist, "--ref", ref, "--vmaf", "--alerts", str(tmp_path / "rules.json"), "--window", "0.4s",
                 "--out", str(out), "--format", "jsonl", "-q"]) == 0
    assert "fr.vmaf" in capsys.readouterr().out  # in the summary table
    alerts = [json.loads(x) for x in (out / "alerts.jsonl").read_text().splitlines()]
    events = [(a["rule"], a["state"], round(a["since_s"], 2), round(a["at_s"], 2)) for a in alerts]
    assert ("vmaf-low", "pending", 0.8, 0.8) in events  # frame 20, the first soft one
    assert ("vmaf-low", "firing", 0.8, 1.0) in events
    assert ("vmaf-low", "resolved", 0.8, 1.6) in events  # frame 40, sharp again
    window_firing = [e for e in events if e[0] == "vmaf-window" and e[1] == "firing"]
    assert window_firing and 0.8 <= window_firing[0][3] <= 1.2
    firing = next(a for a in alerts if a["rule"] == "vmaf-low" and a["state"] == "firing")
    assert 20 <= firing["evidence"]["frame_index"] < 40 and os.path.isfile(firing["evidence"]["thumbnail"])


def test_unknown_model_and_missing_reference_are_one_line_errors(clips, capsys, tmp_path):
    for args, words in (
        (["--vmaf", "--vmaf-model", "vmaf_v9"], ["VMAF model 'vmaf_v9'", "no such built-in model", "ffmpeg"]),
        (["--vmaf", "--vmaf-model", str(tmp_path / "none.json")], ["none.json", "no such model file"]),
        (["--vmaf-threads", "4"], ["--vmaf-threads needs --vmaf"]),
    ):
        assert main(["score", clips["dist"], "--ref", clips["ref"], "-q", *args]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and all(w in err for w in words), err
    assert main(["score", clips["dist"], "--vmaf", "-q"]) == 2
    assert "--vmaf needs --ref" in capsys.readouterr().err


def test_a_model_file_gives_the_built_in_values(clips, tmp_path):
    """libvmaf's built-in models are JSON inside the binary: the one of vmaf_v0.6.1, as a file, scores the same."""
    blob = open(imageio_ffmpeg.get_ffmpeg_exe(), "rb").read()
    whole, _ = vqmon_vmaf(clips["dist"], clips["ref"])
    wanted = ["VMAF_integer_feature_adm2_score", "VMAF_integer_feature_motion2_score"] + [
        f"VMAF_integer_feature_vif_scale{i}_score" for i in range(4)]
    tried = []
    for m in re.finditer(rb'"model_dict"', blob):
        text = blob[blob.rfind(b"\0", 0, m.start()) + 1: blob.find(b"\0", m.start())]
        model = json.loads(text)["model_dict"]
        if model.get("feature_names") != wanted or "feature_opts_dicts" in model:
            continue
        path = tmp_path / f"model{len(tried)}.json"
        path.write_bytes(text)
        values, records = vqmon_vmaf(clips["dist"], clips["ref"], vmaf=VmafOptions(str(path), chunk_s=60.0))
        tried.append(np.abs(values - whole).max())
        if tried[-1] <= 1e-6:
            tag = next(r.model for r in records if isinstance(r, FrameScore) and r.metric == "fr.vmaf")
            assert re.fullmatch(rf"vmaf/{path.stem}@[0-9a-f]{{12}}", tag)
            return
    pytest.fail(f"no embedded model file reproduced vmaf_v0.6.1 (max |Δ| of each: {tried})")


def test_config_key_and_watch_score_fr_vmaf_on_aligned_frames(clips, tmp_path):
    from monitor.watch import Watcher

    with pytest.raises(InputError, match="'vmaf' needs a 'ref'"):
        config.parse({"streams": [{"url": clips["dist"], "vmaf": True}]})
    with pytest.raises(InputError, match="'vmaf_threads' must be a whole number"):
        config.parse({"streams": [{"url": clips["dist"], "ref": clips["ref"], "vmaf": True, "vmaf_threads": "2"}]})
    cfg = config.parse({"streams": [{"id": "cam", "url": clips["dist"], "ref": clips["ref"], "vmaf": True,
                                     "window": "0.4s"}],
                        "sinks": {"jsonl": {"out": str(tmp_path / "out")}}, "device": "cpu"})
    watcher = Watcher(cfg)
    watcher.start()
    watcher.join(timeout=120)
    watcher.close()
    lines = [json.loads(x) for x in (tmp_path / "out" / "frames.jsonl").read_text().splitlines()]
    rows = [r for r in lines if r["metric"] == "fr.vmaf"]
    assert len(rows) > N // 2 and all(r["model"] == "vmaf/vmaf_v0.6.1" and r["extras"]["align_offset"] == 0
                                      for r in rows)
    whole, _ = vqmon_vmaf(clips["dist"], clips["ref"])
    paired = [r["frame_index"] for r in rows]
    got = np.array([r["value"] for r in rows])
    # the aligner pairs from its lock on, so the first paired frame has no predecessor in libvmaf's sequence
    assert np.abs(got[1:] - whole[paired[1:]]).max() <= 1e-6
    windows = [json.loads(x) for x in (tmp_path / "out" / "windows.jsonl").read_text().splitlines()]
    assert any(w["metric"] == "fr.vmaf" for w in windows)



def test_batch_passes_the_option_through(clips, tmp_path):
    """What each `vqmon batch` actor runs per file (monitor/archive.score_job), without Ray."""
    import pyarrow.dataset as ds

    from monitor.archive import BatchOptions, Job, score_job

    out = tmp_path / "batch"
    entry = score_job(Job(clips["dist"], "dist", clips["ref"]), str(out), BatchOptions(vmaf=VmafOptions(chunk_s=10.0)),
                      [], "cpu")
    assert "error" not in entry and entry["frames"] == N
    frames = ds.dataset(str(out / "frames"), format="parquet", partitioning="hive").to_table()
    rows = frames.filter(ds.field("metric") == "fr.vmaf").sort_by("frame_index")
    whole, _ = vqmon_vmaf(clips["dist"], clips["ref"])
    assert rows.num_rows == N and np.abs(rows["value"].to_numpy() - whole).max() <= 1e-6
