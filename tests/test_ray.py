"""Ray live and batch paths with a real local Ray (2 CPUs): supervisor restarts, resumable batch on Ray Data into a
local folder, same records as score (tests/test_batch.py: buckets, a killed actor, --local)."""
from __future__ import annotations

import json
import os
import shutil
import time

import pytest
import ray

from waiting import wait_for
from conftest import InterruptAfter
from monitor import archive, config
from monitor.cli import main
from monitor.samples import encode, panned_frames
from monitor.sinks.parquet import read
from pipelines import batch, live

pytestmark = pytest.mark.slow  # Ray clusters: the inner loop (pytest -m "not slow") skips them

W, H = 320, 192


@pytest.fixture(scope="module", autouse=True)
def ray_local():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="WARNING")
    yield
    ray.shutdown()


def test_three_live_monitors_and_a_restart_after_a_crash(tmp_path):
    clips = {sid: encode(str(tmp_path / f"{sid}.mp4"), panned_frames(W, H, 60), fps=15, crf=23 + 5 * i)
             for i, sid in enumerate(("a", "b", "c"))}  # 4 s each, played in real time
    out = str(tmp_path / "out")
    cfg = config.parse({
        "device": "cpu",
        "defaults": {"realtime": True, "window": "1s"},
        "streams": [{"id": sid, "url": path} for sid, path in clips.items()],
        "sinks": {"parquet": {"out": out, "roll": "0.5s"}},
        "ray": {"num_cpus": 0.5, "num_gpus": 0, "backoff": "0.2s"},
    })
    sup, changes = live.start(cfg)
    assert changes is None
    try:
        def frames_of(sid):
            rows = {r["stream"]: r for r in ray.get(sup.status.remote())}
            return rows[sid]["frames"] if rows[sid]["state"] == "up" else 0

        wait_for(lambda: frames_of("b") >= 5, 60, "stream b to score frames")
        [monitor] = ray.get(sup.monitor.remote("b"))
        ray.kill(monitor, no_restart=True)
        crashed_at = time.time()
        rows = wait_for(lambda: (lambda rs: rs if all(r["state"] == "ended" for r in rs) else None)(
            ray.get(sup.status.remote())), 60, "every stream to end")
    finally:
        ray.get(sup.shutdown.remote())
        ray.kill(sup)
    assert {r["stream"]: r["restarts"] for r in rows} == {"a": 0, "b": 1, "c": 0}

    luma = [r for r in read(out, "frames").to_pylist() if r["metric"] == "sig.luma"]
    for sid in ("a", "b", "c"):
        indices = [r["frame_index"] for r in luma if r["stream_id"] == sid]
        assert set(indices) == set(range(60)), sid  # every frame scored, the crashed stream included
        if sid != "b":
            assert len(indices) == 60  # monitors do not disturb each other
    restarted = [r for r in luma if r["stream_id"] == "b" and r["ingest_ts"].timestamp() > crashed_at]
    assert len(restarted) == 60  # the new monitor replayed the file from its start, to the end
    windows = read(out, "windows").to_pylist()
    assert {w["stream_id"] for w in windows} == {"a", "b", "c"}
    events = read(out, "events").to_pylist()
    restart = [e for e in events if e["event"] == "restart"]
    assert [e["stream_id"] for e in restart] == ["b"]
    assert json.loads(restart[0]["detail"])["attempt"] == 1
    assert {e["stream_id"] for e in events if e["event"] == "up"} == {"a", "b", "c"}


def test_supervisor_reload_adds_and_removes_streams(tmp_path, capsys):
    clip = encode(str(tmp_path / "x.mp4"), panned_frames(W, H, 60), fps=15, crf=28)

    def cfg(*ids):
        return config.parse({"device": "cpu", "defaults": {"realtime": True},
                             "streams": [{"id": i, "url": clip} for i in ids],
                             "ray": {"num_cpus": 0.5}})

    sup, _ = live.start(cfg("x", "y"))
    try:
        _, changes = live.start(cfg("y", "z"))  # a second start hands the config to the running supervisor
        assert changes == {"started": ["z"], "stopped": ["x"], "restarted": []}
        assert [r["stream"] for r in ray.get(sup.status.remote())] == ["y", "z"]
        assert main(["status"]) == 0  # the CLI finds the named supervisor and prints its table
        table = capsys.readouterr().out
        assert "restarts" in table
        assert [line.split("│")[0].strip() for line in table.splitlines() if "│" in line] == ["y", "z"]
    finally:
        ray.get(sup.shutdown.remote())
        ray.kill(sup)


@pytest.fixture
def folder(tmp_path):
    """Six 40-frame files, one of them not media at all."""
    d = tmp_path / "in"
    d.mkdir()
    for i in range(5):
        encode(str(d / f"clip{i}.mp4"), panned_frames(W, H, 40), fps=25, crf=20 + 5 * i)
    (d / "broken.mp4").write_bytes(os.urandom(4000))
    return str(d)


def test_batch_lists_the_corrupt_file_resumes_after_an_interrupt_without_duplicates(folder, tmp_path):
    out = str(tmp_path / "out")
    interrupt = InterruptAfter(3)
    with pytest.raises(KeyboardInterrupt):
        batch.run_batch(archive.plan(folder, out), archive.BatchOptions(device="cpu"), actors=2,
                        on_done=interrupt)
    first = interrupt.entries
    rerun = batch.run_batch(archive.plan(folder, out), archive.BatchOptions(device="cpu"), actors=2)

    assert rerun.skipped == 3
    assert not {e["path"] for e in first} & {e["path"] for e in rerun.scored + rerun.failed}
    ledger = [json.loads(line) for line in open(os.path.join(out, archive.LEDGER))]
    assert len(ledger) == 6
    failed = [e for e in ledger if "error" in e]
    assert len(failed) == 1 and failed[0]["path"].endswith("broken.mp4") and "broken.mp4" in failed[0]["error"]

    summaries = read_summaries(out)
    assert sorted(s["stream_id"] for s in summaries) == [f"clip{i}" for i in range(5)]
    assert all(s["frames_seen"] == 40 for s in summaries)
    frames = read(out, "frames").to_pylist()
    keys = [(r["stream_id"], r["frame_index"], r["metric"]) for r in frames]
    assert len(keys) == len(set(keys))  # no duplicate rows, though files were cut off mid-way
    assert {(k[0], k[1]) for k in keys} == {(f"clip{i}", n) for i in range(5) for n in range(40)}
    assert not os.path.exists(os.path.join(out, ".staging")) or not os.listdir(os.path.join(out, ".staging"))


def read_summaries(out: str) -> list[dict]:
    import pyarrow.dataset as ds

    return ds.dataset(os.path.join(out, "summaries"), format="parquet", schema=archive.SUMMARY_SCHEMA,
                      partitioning=None).to_table().to_pylist()


def test_batch_records_equal_vqmon_score_with_a_reference_by_naming_rule(media, tmp_path):
    videos, refs = tmp_path / "videos", tmp_path / "refs"
    videos.mkdir()
    refs.mkdir()
    shutil.copy(media[28], videos / "clip.mp4")
    shutil.copy(media["ref"], refs / "clip.mp4")
    plain, ray_out = str(tmp_path / "plain"), str(tmp_path / "ray")
    assert main(["score", str(videos / "clip.mp4"), "--ref", str(refs / "clip.mp4"), "--window", "1s",
                 "--out", plain, "--device", "cpu", "-q"]) == 0
    result = batch.run_batch(archive.plan(str(videos), ray_out, ref_rule="../refs/{rel}{ext}"),
                             archive.BatchOptions(window=config.parse_window("1s"), device="cpu"))
    assert [e["ref"] for e in result.scored] == [str(refs / "clip.mp4")]

    for kind, run_specific in (("frames", "ingest_ts"), ("windows", "emitted_ts")):
        a, b = (sorted(json.dumps({k: v for k, v in r.items() if k != run_specific}, sort_keys=True, default=str)
                       for r in read(d, kind).to_pylist()) for d in (plain, ray_out))
        assert a == b and len(a) > 0, kind
    assert any(r["metric"] == "fr.psnr_y" for r in read(ray_out, "frames").to_pylist())
    [summary] = read_summaries(ray_out)
    assert summary["ref_paired"] == 40 and "fr.psnr_y" in json.loads(summary["metrics"])
