"""`vqmon batch` from a bucket to a bucket: a real S3-compatible server (moto, loopback), real Ray Data, real encodes.

Bucket prefix in, Parquet out in another bucket; the rows equal `vqmon score`'s on the same files;
an interrupted run resumed without duplicates; an actor killed mid-file retried; the credentials in
no output or log. Without Ray: `--local`, `--dry-run` over 10,000 inputs, the time limit, bad URLs.
"""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time

import pytest

from conftest import InterruptAfter
from monitor import archive
from monitor.cli import main
from monitor.samples import encode, panned_frames
from monitor.sinks.parquet import read
from s3 import ACCESS_KEY, SECRET_KEY, objects, s3_server

W, H, N = 320, 192, 40
ARCHIVE, RESULTS = "vqmon-archive", "vqmon-results"
SOURCE = f"s3://{ARCHIVE}/shows"
CLIPS = [f"clip{i}" for i in range(5)]


# bytes that are not media: fixed, because os.urandom now and then probes as a subtitle stream, and the file then
# fails as "no video stream" instead of "FFmpeg cannot open it" (CI saw it once)
NOT_MEDIA = bytes((i * 7919 + (i >> 3) * 104729) % 251 for i in range(4000))


def clips(folder) -> list[str]:
    """Five 40-frame clips at CRF 20..40, and broken.mp4, which is not media at all."""
    paths = [encode(str(folder / f"{c}.mp4"), panned_frames(W, H, N), fps=25, crf=20 + 5 * i)
             for i, c in enumerate(CLIPS)]
    (folder / "broken.mp4").write_bytes(NOT_MEDIA)
    return paths + [str(folder / "broken.mp4")]


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """The server, with the six files uploaded under s3://vqmon-archive/shows/ (one of them in a sub-prefix)."""
    folder = tmp_path_factory.mktemp("clips")
    with s3_server(ARCHIVE, RESULTS) as client:
        for path in clips(folder):
            name = os.path.basename(path)
            client.upload_file(path, ARCHIVE, f"shows/{'s2/' if name == 'clip4.mp4' else ''}{name}")
        yield client


@pytest.fixture(scope="module")
def ray_data(s3, tmp_path_factory):
    """Ray on 2 CPUs, started after the credentials and the test hook's marker path are in the environment."""
    import ray

    from pipelines import batch

    marker = str(tmp_path_factory.mktemp("hook") / "exit-once")
    os.environ[batch.EXIT_ONCE] = marker
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="WARNING")
    yield marker
    ray.shutdown()
    del os.environ[batch.EXIT_ONCE]


def cpus_free_within(seconds: float) -> float:
    """Ray's free CPUs once both are free, or after `seconds` (actors give theirs back as they exit)."""
    import ray

    deadline = time.monotonic() + seconds
    while ray.available_resources().get("CPU", 0) < 2 and time.monotonic() < deadline:
        time.sleep(0.5)
    return ray.available_resources().get("CPU", 0)


def rows(out: str, kind: str) -> list[str]:
    """The rows of one record kind, less the column that only says when they were written, in a stable order."""
    run_specific = {"frames": "ingest_ts", "windows": "emitted_ts"}[kind]
    return sorted(json.dumps({k: v for k, v in r.items() if k != run_specific}, sort_keys=True, default=str)
                  for r in read(out, kind).to_pylist())


def keys(out: str) -> list[tuple]:
    return [(r["stream_id"], r["frame_index"], r["metric"]) for r in read(out, "frames").to_pylist()]


def summaries(out: str) -> list[dict]:
    import pyarrow.dataset as ds

    from monitor import storage

    fs, path = storage.resolve(f"{out}/summaries")
    return ds.dataset(path, filesystem=fs, format="parquet", schema=archive.SUMMARY_SCHEMA,
                      partitioning=None).to_table().to_pylist()


@pytest.mark.slow
def test_bucket_to_bucket_equals_score_resumes_without_duplicates_and_keeps_credentials_out(s3, ray_data, tmp_path,
                                                                                             capsys):
    import ray

    from pipelines import batch

    out = f"s3://{RESULTS}/run"
    interrupt = InterruptAfter(3)
    with pytest.raises(KeyboardInterrupt):
        batch.run_batch(archive.plan(SOURCE, out), archive.BatchOptions(device="cpu"), actors=2,
                        on_done=interrupt)
    first = interrupt.entries
    saved = [json.loads(line) for line in s3.get_object(Bucket=RESULTS, Key="run/_ledger.jsonl")["Body"].iter_lines()]
    assert sorted(e["path"] for e in saved) == sorted(e["path"] for e in first)  # the interrupt saved the ledger

    assert main(["batch", SOURCE, "--out", out, "--actors", "2", "--device", "cpu", "--dry-run"]) == 0
    listed = [line.split()[0] for line in capsys.readouterr().out.splitlines() if "(raylet)" not in line]
    assert sorted(listed) == sorted(["score"] * 3 + ["failed" if "error" in e else "done" for e in first])

    assert main(["batch", SOURCE, "--out", out, "--actors", "2", "--device", "cpu", "-q"]) == 1  # broken.mp4 failed
    rerun = capsys.readouterr()
    broken_first = any("error" in e for e in first)
    assert f"{3 - (not broken_first)} file(s) scored" in rerun.err and "3 already done" in rerun.err
    assert f"{SOURCE}/broken.mp4: FFmpeg cannot open it" in rerun.err

    ledger = {e["path"]: e for e in (json.loads(line) for line in
                                     s3.get_object(Bucket=RESULTS, Key="run/_ledger.jsonl")["Body"].iter_lines())}
    assert len(ledger) == 6 and [p for p, e in ledger.items() if "error" in e] == [f"{SOURCE}/broken.mp4"]
    assert sorted(s["stream_id"] for s in summaries(out)) == ["clip0", "clip1", "clip2", "clip3", "s2/clip4"]
    k = keys(out)
    assert len(k) == len(set(k))  # no duplicate rows, though the first run was cut off mid-way
    assert {(s, i) for s, i, _ in k} == {(s, i) for s in ("clip0", "clip1", "clip2", "clip3", "s2/clip4")
                                         for i in range(N)}
    assert not [key for key in objects(s3, RESULTS, "run/.staging/") if not key.endswith("/")]  # folder markers only

    # the same records as `vqmon score` on each file, read from the bucket and written to the bucket
    plain = f"s3://{RESULTS}/plain"
    for name in ("clip0", "clip1", "clip2", "clip3", "s2/clip4"):
        assert main(["score", f"{SOURCE}/{name}.mp4", "--out", plain, "--device", "cpu", "-q"]) == 0
    assert main(["score", f"{SOURCE}/missing.mp4", "--device", "cpu"]) == 2
    assert f"vqmon: error: {SOURCE}/missing.mp4: no such object" in capsys.readouterr().err
    for kind in ("frames", "windows"):  # score names the sub-prefix's file by its name alone
        by_plain = sorted(r.replace('"stream_id": "clip4"', '"stream_id": "s2/clip4"') for r in rows(plain, kind))
        assert by_plain == rows(out, kind) and by_plain, kind

    report = tmp_path / "report.html"
    assert main(["report", out, "--out", str(report)]) == 0
    assert all(f"data-stream='{s}'" in report.read_text() for s in ("clip0", "s2/clip4"))

    # the credentials: in no output, record, ledger or log
    printed = capsys.readouterr()
    stored = b"".join(objects(s3, RESULTS).values())
    session = ray._private.worker._global_node.get_session_dir_path()
    logs = b"".join(open(os.path.join(d, f), "rb").read() for d, _, names in os.walk(os.path.join(session, "logs"))
                    for f in names)
    assert len(logs) > 1000 and len(stored) > 10_000
    for secret in (ACCESS_KEY, SECRET_KEY):
        for text in (rerun.out, rerun.err, printed.out, printed.err, report.read_text()):
            assert secret not in text
        assert secret.encode() not in stored and secret.encode() not in logs


@pytest.mark.slow
def test_an_actor_killed_mid_file_is_tried_again_and_a_file_that_kills_every_try_is_listed(s3, ray_data, caplog):
    from pipelines import batch

    # pytest keeps a test's log records, and Ray Data logs the crash with its traceback, whose frames hold the pool's
    # actors: kept to the end of the test, those would hold their CPUs (a user's log handlers let go of records)
    caplog.set_level(logging.CRITICAL, logger="ray.data")

    out = f"s3://{RESULTS}/crash"
    target = f"{SOURCE}/clip2.mp4"
    with open(ray_data, "w") as f:
        f.write(target)
    no_retry = archive.BatchOptions(device="cpu", retries=0)
    result = batch.run_batch(archive.plan(SOURCE, out), no_retry, actors=2)
    assert not os.path.exists(ray_data)  # the hook fired: an actor died at clip2's 10th frame
    died = [e for e in result.failed if e["path"] == target]
    assert len(died) == 1 and "its scoring process died 1 times" in died[0]["error"]
    assert sorted(e["stream_id"] for e in result.scored) == ["clip0", "clip1", "clip3", "s2/clip4"]
    assert cpus_free_within(60) == 2  # the crashed pool let its actors go: the next job's actors get the CPUs

    with open(ray_data, "w") as f:
        f.write(target)
    again = batch.run_batch(archive.plan(SOURCE, out, retry_failed=True), archive.BatchOptions(device="cpu"),
                            actors=2)
    assert not os.path.exists(ray_data)  # killed once more, then scored by a restarted actor
    assert [e["path"] for e in again.scored] == [target] and again.skipped == 4
    k = keys(out)
    assert len(k) == len(set(k)) and {i for s, i, _ in k if s == "clip2"} == set(range(N))


def test_local_mode_scores_without_ray_as_score_does_and_resumes(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(2):
        encode(str(folder / f"c{i}.mp4"), panned_frames(W, H, N), fps=25, crf=25 + 10 * i)
    (folder / "broken.mp4").write_bytes(NOT_MEDIA)
    out, plain = str(tmp_path / "out"), str(tmp_path / "plain")
    run = ("import sys; from monitor.cli import main; rc = main(sys.argv[1:]); "
           "assert 'ray' not in sys.modules, 'Ray was imported'; sys.exit(rc)")
    cmd = [sys.executable, "-c", run, "batch", str(folder), "--out", out, "--local", "--device", "cpu", "-q"]
    env = {**os.environ, "PYTHONPATH": os.path.dirname(os.path.dirname(os.path.abspath(__file__)))}
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 1, p.stderr  # the broken file is listed, the others scored
    assert "2 file(s) scored" in p.stderr and f"{folder / 'broken.mp4'}: FFmpeg cannot open it" in p.stderr
    for i in range(2):
        assert main(["score", str(folder / f"c{i}.mp4"), "--out", plain, "--device", "cpu", "-q"]) == 0
    for kind in ("frames", "windows"):
        assert rows(out, kind) == rows(plain, kind) and rows(out, kind), kind

    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 1 and "0 file(s) scored" in p.stderr and "3 already done (1 of them failed" in p.stderr
    assert len(keys(out)) == len(set(keys(out)))


def test_time_limit_fails_the_long_file_and_keeps_none_of_its_rows(tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    encode(str(folder / "short.mp4"), panned_frames(W, H, 10), fps=25)
    encode(str(folder / "long.mp4"), panned_frames(160, 96, 1500), fps=25, crf=35, options={"preset": "ultrafast"})
    out = str(tmp_path / "out")
    assert main(["batch", str(folder), "--out", out, "--local", "--time-limit", "200ms", "--device", "cpu", "-q"]) == 1
    err = capsys.readouterr().err
    assert f"{folder / 'long.mp4'}: time limit of 0.2 s reached after" in err and "1 file(s) scored" in err
    assert {s for s, _, _ in keys(out)} == {"short"}


def test_dry_run_lists_ten_thousand_inputs_from_the_listing_alone(tmp_path, capsys):
    folder = tmp_path / "archive"
    for i in range(100):
        (folder / f"day{i:03d}").mkdir(parents=True)
        for j in range(100):
            (folder / f"day{i:03d}" / f"{j:03d}.mp4").touch()  # empty: opening any of them would fail
    out = tmp_path / "out"
    assert main(["batch", str(folder), "--out", str(out), "--dry-run"]) == 0
    lines = capsys.readouterr()
    listed = lines.out.splitlines()
    assert len(listed) == 10_000 and listed[0] == f"score  {folder}/day000/000.mp4  as day000/000"
    assert "10000 file(s) to score, 0 already done; nothing written" in lines.err
    assert not out.exists()


@pytest.mark.parametrize("url, message", [
    ("s3://AKIAXX:hunter2secret@bucket/x", "credentials in the URL are refused"),
    ("ftp://host/archive", "unsupported storage (ftp://)"),
    ("az://container/archive", "set AZURE_STORAGE_ACCOUNT_NAME"),
])
def test_bad_storage_urls_are_one_line_errors_without_secrets(url, message, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("AZURE_STORAGE_ACCOUNT_NAME", raising=False)
    for argv in (["batch", url, "--out", str(tmp_path), "--dry-run"], ["score", f"{url}/a.mp4"],
                 ["report", url]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1 and "hunter2secret" not in err, (argv, err)
