"""Scoring an archive (`vqmon batch`): what to score, one file scored into OUT, and the resumable job around them.

Inputs are a folder or bucket prefix (every video below it) or a CSV manifest (`video[,ref][,stream_id]`),
local or in an object store (monitor/storage.py). They are listed once, from the listing alone
(names, sizes, modification times: no file is opened), and paired with references. Each file is
then scored by `score_job`: here, one after the other (`run_local`, `vqmon batch --local`), or by a
pool of actors on Ray Data (pipelines/batch.py). Both write the same OUT: the Parquet datasets of
`vqmon score` (frames/, windows/, … partitioned by stream_id and date), `summaries/` (one row per
file, SUMMARY_SCHEMA) and `_ledger.jsonl`.

Resuming works the same on a local folder and in a bucket: a file is scored into
`OUT/.staging/<uuid>/`, then each of its `stream_id=` partitions replaces the one in OUT (emptied
first: rows of an interrupted earlier try never stay beside the new ones), and only then is the
file recorded in the ledger with its fingerprint (size and modification time). A store has no
append, so the ledger is one JSON-lines object that the driver alone rewrites whole, at most every
SAVE_EVERY_S seconds and when the job ends or is interrupted. A rerun skips files in the ledger with
an unchanged fingerprint; a file whose entry never got saved is scored again and its partitions
replaced, so no row is ever duplicated. Failed files are recorded with their error and skipped on
rerun unless `retry_failed`; a skipped failure is still a failure of the job (`failed_before`).
"""
from __future__ import annotations

import csv
import io
import json
import logging
import os
import posixpath
import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone

import pyarrow as pa
from pyarrow.fs import FileType

from monitor import storage
from monitor.config import ModelSpec, StreamConfig
from monitor.errors import InputError
from monitor.paths import component
from monitor.redaction import redact
from monitor.scoring.vmaf import VmafOptions
from monitor.source.sampling import Sampler
from monitor.source.sources import MAX_PIXELS
from monitor.windows import WindowSpec

log = logging.getLogger(__name__)

VIDEO_EXTS = {".mp4", ".m4v", ".mov", ".mkv", ".webm", ".ts", ".m2ts", ".mts", ".avi", ".flv", ".mxf", ".y4m",
              ".h264", ".264", ".h265", ".hevc"}
KINDS = ("frames", "windows", "alerts", "events", "summaries")
LEDGER = "_ledger.jsonl"
STAGING = ".staging"
SAVE_EVERY_S = 5.0

SUMMARY_SCHEMA = pa.schema([
    ("stream_id", pa.string()), ("source", pa.string()), ("reference", pa.string()), ("codec", pa.string()),
    ("width", pa.int32()), ("height", pa.int32()), ("fps", pa.float64()), ("sampling", pa.string()),
    ("frames_seen", pa.int64()), ("frames_scored", pa.int64()), ("decode_errors", pa.int64()),
    ("last_error", pa.string()), ("ref_paired", pa.int64()), ("ref_unpaired", pa.int64()),
    ("elapsed_s", pa.float64()),
    ("metrics", pa.string()),  # JSON: metric → {unit, count, mean, p5, min, max, worst_index, worst_pts_s}
    ("segments", pa.string()),  # JSON: black/freeze stretches
    ("finished_ts", pa.timestamp("us", tz="UTC")),
])


@dataclass(frozen=True)
class Job:
    path: str  # absolute path or URL
    stream_id: str
    ref: str | None = None
    fingerprint: str | None = None  # size:mtime from the listing; None: not found there


@dataclass(frozen=True)
class BatchOptions:
    """The `vqmon score` options every file is scored with, and how hard to try."""

    sample: Sampler = field(default_factory=Sampler)
    window: WindowSpec = WindowSpec(2.0)
    models: tuple[ModelSpec, ...] = ()
    device: str = "auto"
    batch_size: int = 8
    ref_offset: int = 0
    vmaf: VmafOptions | None = None  # fr.vmaf for files with a reference
    max_pixels: int = MAX_PIXELS  # larger frames: the file fails with a clear error
    time_limit_s: float | None = None  # a file still scoring after this fails (not retried)
    retries: int = 2  # further tries of a file whose scoring failed for a reason other than the file itself

    def stream(self, job: Job) -> StreamConfig:
        """The StreamConfig of one file."""
        return StreamConfig(job.path, id=job.stream_id, ref=job.ref, ref_offset=self.ref_offset, sample=self.sample,
                            window=self.window, models=self.models, vmaf=self.vmaf if job.ref else None,
                            max_pixels=self.max_pixels)


@dataclass
class BatchResult:
    scored: list[dict] = field(default_factory=list)  # ledger entries of files finished in this run
    failed: list[dict] = field(default_factory=list)  # ledger entries with "error"
    skipped: int = 0  # already in the ledger
    failed_before: list[dict] = field(default_factory=list)  # ledger entries of earlier failures, not retried


# -- what to score ------------------------------------------------------------------------------
def list_jobs(source: str, ref_rule: str | None = None) -> list[Job]:
    """Files below a folder or bucket prefix (by video extension) or of a CSV manifest (`video[,ref][,stream_id]`).

    `ref_rule` pairs each video with a reference by name: a template with {dir} (the video's folder),
    {stem}, {ext} and {rel} (path below the input folder, no extension), relative to the input
    folder, e.g. `../refs/{rel}{ext}` or `{dir}/{stem}.ref{ext}`. Files named as references are not scored.
    Manifest paths are relative to the manifest's folder, or absolute, or URLs.
    """
    kind = storage.info(source).type
    if kind == FileType.Directory:
        root = storage.absolute(source)
        listed = {p: fp for p, fp in storage.files(root)
                  if os.path.splitext(p)[1].lower() in VIDEO_EXTS and not _base(p).startswith(".")}
        rows = [{"video": p} for p in sorted(listed)]
    elif kind == FileType.File:
        root = storage.parent(storage.absolute(source))
        rows, listed = _manifest(source), {}
    else:
        raise InputError(f"{redact(source)}: no such file, folder or prefix")
    jobs = []
    for row in rows:
        path = storage.join(root, row["video"])
        rel = posixpath.splitext(_rel(path, root))[0]
        ref = row.get("ref") or None
        if ref:
            ref = storage.join(root, ref)
        elif ref_rule:
            stem, ext = os.path.splitext(_base(path))
            ref = storage.join(root, ref_rule.format(dir=storage.parent(path), stem=stem, ext=ext, rel=rel))
        jobs.append(Job(path, row.get("stream_id") or rel, ref, listed.get(path)))
    refs = {j.ref for j in jobs if j.ref}
    jobs = [j for j in jobs if j.path not in refs]
    seen: dict[str, str] = {}
    for j in jobs:
        if j.stream_id in seen:
            raise InputError(f"{redact(source)}: {redact(j.path)} and {redact(seen[j.stream_id])} would share "
                             f"stream id {j.stream_id!r}")
        seen[j.stream_id] = j.path
    if not jobs:
        raise InputError(f"{redact(source)}: no video files to score")
    if kind == FileType.File:  # a manifest names files: ask for their sizes and times (one call per store)
        found = storage.fingerprints([j.path for j in jobs])
        jobs = [Job(j.path, j.stream_id, j.ref, fp) for j, fp in zip(jobs, found)]
    return jobs


def _base(path: str) -> str:
    return posixpath.basename(path) if storage.is_url(path) else os.path.basename(path)


def _rel(path: str, root: str) -> str:
    """`path` below `root` with / separators (the default stream id); a path in another store keeps its whole name."""
    if storage.is_url(path) and storage.is_url(root):
        return posixpath.relpath("/" + path.split("://", 1)[1], "/" + root.split("://", 1)[1])
    if storage.is_url(path) or storage.is_url(root):
        return path.split("://", 1)[-1]
    return os.path.relpath(path, root).replace(os.sep, "/")


def _manifest(path: str) -> list[dict]:
    rows = list(csv.DictReader(io.StringIO((storage.read_bytes(path) or b"").decode("utf-8-sig"))))
    if not rows or "video" not in rows[0]:
        raise InputError(f"{redact(path)}: expected a CSV manifest with a header naming at least a 'video' column "
                         "(optional: ref, stream_id)")
    return rows


# -- the ledger ---------------------------------------------------------------------------------
class Ledger:
    """Finished and failed files by path (the last entry for a path wins), kept by the job's driver only."""

    def __init__(self, out: str):
        self.path = storage.join(out, LEDGER)
        self.entries: dict[str, dict] = {}
        for line in (storage.read_bytes(self.path) or b"").decode("utf-8").splitlines():
            if line.strip():
                e = json.loads(line)
                self.entries[e["path"]] = e
        self._unsaved, self._saved_at = False, time.monotonic()

    def finished(self, job: Job, retry_failed: bool) -> bool:
        e = self.entries.get(job.path)
        if not e or (retry_failed and "error" in e) or job.fingerprint is None:
            return False
        return e["fingerprint"] == job.fingerprint

    def record(self, entry: dict) -> None:
        self.entries[entry["path"]] = entry
        self._unsaved = True
        if time.monotonic() - self._saved_at >= SAVE_EVERY_S:
            self.save()

    def save(self) -> None:
        """Rewrite the ledger whole (a store has no append; the write is atomic either way)."""
        if self._unsaved:
            text = "".join(json.dumps(e) + "\n" for e in self.entries.values()).encode("utf-8")
            storage.write_file(self.path, lambda f: f.write(text))
            self._unsaved, self._saved_at = False, time.monotonic()


@dataclass
class Plan:
    """What a run of `vqmon batch` will do: the files to score and those the ledger says are done."""

    out: str
    todo: list[Job]
    done: list[Job]  # in the ledger, unchanged: skipped
    failed_before: list[dict]  # ledger entries of done files that failed (not retried)
    ledger: Ledger


def plan(source: str, out: str, ref_rule: str | None = None, retry_failed: bool = False) -> Plan:
    """List `source`, read the ledger in `out` and split the files into to do and done; writes nothing."""
    jobs = list_jobs(source, ref_rule)
    out = storage.absolute(out)
    ledger = Ledger(out)
    finished = [ledger.finished(j, retry_failed) for j in jobs]
    done = [j for j, f in zip(jobs, finished) if f]
    todo = [j for j, f in zip(jobs, finished) if not f]
    return Plan(out, todo, done, [ledger.entries[j.path] for j in done if "error" in ledger.entries[j.path]], ledger)


# -- scoring one file ---------------------------------------------------------------------------
def score_job(job: Job, out: str, opts: BatchOptions, models, device, on_progress=None) -> dict:
    """The ledger entry of `job` scored into `out`: its counts, or its error (a bad file never raises).

    A failure that is the file's own (an InputError: not media, no frame, over the time limit) is final;
    any other (a store's error, a full disk) is tried again, `opts.retries` more times.
    """
    for attempt in range(opts.retries + 1):
        try:
            return entry(job, **_score_into(job, out, opts, models, device, on_progress))
        except Exception as e:  # noqa: BLE001 - a file's failure is listed, never raised
            error = _one_line(job, e)
            if isinstance(e, InputError) and not isinstance(e, storage.StoreError):
                break
            log.warning("vqmon batch: %s (try %d of %d)", error, attempt + 1, opts.retries + 1)
    return entry(job, error=error)


def entry(job: Job, **outcome) -> dict:
    """A ledger line: the file, its fingerprint from the listing, and what came of it."""
    return {"path": job.path, "fingerprint": job.fingerprint, "stream_id": job.stream_id, "ref": job.ref, **outcome,
            "finished": datetime.now(timezone.utc).isoformat()}


def _one_line(job: Job, e: Exception) -> str:
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    name = redact(job.path)
    return redact(text) if name in text else f"{name}: {redact(text)}"


def _score_into(job: Job, out: str, opts: BatchOptions, models, device, on_progress) -> dict:
    """Score `job` with `score_file` into a staging folder, then swap its stream partitions into `out`."""
    from monitor.build import score_file
    from monitor.sinks.parquet import ParquetSink, write_atomic

    stage = storage.join(out, STAGING, uuid.uuid4().hex)
    part = f"stream_id={component(job.stream_id)}"
    try:
        s = score_file(opts.stream(job), [ParquetSink(stage)], device=device, batch_size=opts.batch_size,
                       models=models, on_progress=on_progress, time_limit_s=opts.time_limit_s)
        write_atomic(pa.Table.from_pylist([_summary_row(s)], schema=SUMMARY_SCHEMA),
                     storage.join(stage, "summaries", part))
        for kind in KINDS:  # rows of an interrupted earlier try go, this try's come in
            storage.replace_tree(storage.join(stage, kind, part), storage.join(out, kind, part))
    finally:
        storage.delete_tree(stage)
    return {"frames": s.frames_seen, "decode_errors": s.decode_errors, "elapsed_s": round(s.elapsed_s, 3)}


def _summary_row(s) -> dict:
    return {"stream_id": s.stream_id, "source": s.source, "reference": s.reference, "codec": s.info.codec,
            "width": s.info.width, "height": s.info.height, "fps": s.info.fps, "sampling": s.sampling,
            "frames_seen": s.frames_seen, "frames_scored": s.frames_scored, "decode_errors": s.decode_errors,
            "last_error": s.last_error or None, "ref_paired": s.ref_paired, "ref_unpaired": s.ref_unpaired,
            "elapsed_s": s.elapsed_s,
            "metrics": json.dumps({m.metric: {k: v for k, v in asdict(m).items() if k != "metric"} for m in s.metrics}),
            "segments": json.dumps([asdict(g) for g in s.segments]), "finished_ts": datetime.now(timezone.utc)}


# -- the job ------------------------------------------------------------------------------------
def run(p: Plan, score_all, on_done=None) -> BatchResult:
    """Record, as they come, the ledger entries `score_all(p.todo)` yields (one per file, any order).

    `on_done(entry)` drives a progress display; an exception from it (an interrupt) ends the job
    with the ledger saved.
    """
    storage.delete_tree(storage.join(p.out, STAGING))  # left by an interrupted run
    result = BatchResult(skipped=len(p.done), failed_before=p.failed_before)
    entries = score_all(p.todo)
    try:
        for e in entries:
            p.ledger.record(e)
            (result.failed if "error" in e else result.scored).append(e)
            if on_done:
                on_done(e)
    finally:
        entries.close()  # an interrupt stops the scorers before the ledger is saved
        p.ledger.save()
    return result


def run_local(p: Plan, opts: BatchOptions = BatchOptions(), on_done=None, on_progress=None) -> BatchResult:
    """`vqmon batch --local`: every file in this process, one after the other, models loaded once; no Ray."""
    from monitor.build import load_model
    from monitor.scoring.scorers import pick_device

    def score_all(todo):
        if not todo:
            return
        device = pick_device(opts.device)
        models = [load_model(spec, device) for spec in opts.models]
        for job in todo:
            yield score_job(job, p.out, opts, models, device, on_progress)

    return run(p, score_all, on_done)
