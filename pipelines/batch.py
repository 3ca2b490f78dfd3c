"""Archive scoring on Ray (`vqmon batch DIR|MANIFEST --out OUT`): a pool of `FileScorer` actors runs `score_file`.

Each actor loads its models once (on its GPU when it was given one) and scores file after file.
Output is the same Parquet layout as `vqmon score --out` (frames/, windows/, … partitioned by
stream_id and date) plus `summaries/` (one row per file, SUMMARY_SCHEMA).

Resuming: each file is scored into `OUT/.staging/<uuid>/`, then its `stream_id=` folders are
swapped into OUT (an existing folder, left by an interrupted earlier try, is removed first), and
only then does the driver append the file to `OUT/_ledger.jsonl` with its fingerprint (size and
mtime). A rerun skips files in the ledger with an unchanged fingerprint; a file interrupted
mid-way is simply scored again and its folders replaced, so no row is ever duplicated.
Failed files are recorded too (with their error) and skipped on rerun unless `retry_failed`; a
skipped failure is still a failure of the job (`BatchResult.failed_before`) until a run scores it.
"""
from __future__ import annotations

import csv
import json
import os
import shutil
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone

import pyarrow as pa
import ray

from monitor.config import ModelSpec, StreamConfig
from monitor.errors import InputError
from monitor.paths import component
from monitor.scoring.vmaf import VmafOptions
from monitor.source.sampling import Sampler
from monitor.source.sources import MAX_PIXELS
from monitor.windows import WindowSpec

VIDEO_EXTS = {".mp4", ".m4v", ".mov", ".mkv", ".webm", ".ts", ".m2ts", ".mts", ".avi", ".flv", ".mxf", ".y4m",
              ".h264", ".264", ".h265", ".hevc"}
KINDS = ("frames", "windows", "alerts", "events", "summaries")
LEDGER = "_ledger.jsonl"

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
    path: str
    stream_id: str
    ref: str | None = None


@dataclass(frozen=True)
class BatchOptions:
    """The `vqmon score` options every file is scored with."""

    sample: Sampler = field(default_factory=Sampler)
    window: WindowSpec = WindowSpec(2.0)
    models: tuple[ModelSpec, ...] = ()
    device: str = "auto"
    batch_size: int = 8
    ref_offset: int = 0
    vmaf: VmafOptions | None = None  # fr.vmaf for files with a reference
    max_pixels: int = MAX_PIXELS  # larger frames: the file fails with a clear error

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
    """Files of a directory (recursively, by video extension) or of a CSV manifest (`video[,ref][,stream_id]`).

    `ref_rule` pairs each video with a reference by name: a template with {dir} (the video's folder),
    {stem}, {ext} and {rel} (path below the input folder, no extension), relative to the input
    folder, e.g. `../refs/{rel}{ext}` or `{dir}/{stem}.ref{ext}`. Files named as references are not scored.
    """
    if os.path.isdir(source):
        root = os.path.abspath(source)  # absolute paths: actors do not share the driver's working directory
        paths = sorted(os.path.join(d, n) for d, _, names in os.walk(root) for n in names
                       if os.path.splitext(n)[1].lower() in VIDEO_EXTS and not n.startswith("."))
        rows = [{"video": p} for p in paths]
    elif os.path.isfile(source):
        root = os.path.dirname(os.path.abspath(source))
        rows = _manifest(source)
    else:
        raise InputError(f"{source}: no such file or directory")
    jobs = []
    for row in rows:
        path = os.path.normpath(os.path.join(root, row["video"]))
        rel = os.path.splitext(os.path.relpath(path, root))[0].replace(os.sep, "/")
        ref = row.get("ref") or None
        if ref:
            ref = os.path.normpath(os.path.join(root, ref))
        elif ref_rule:
            stem, ext = os.path.splitext(os.path.basename(path))
            ref = os.path.normpath(os.path.join(root, ref_rule.format(dir=os.path.dirname(path), stem=stem, ext=ext,
                                                                       rel=rel)))
        jobs.append(Job(path, row.get("stream_id") or rel, ref))
    refs = {j.ref for j in jobs if j.ref}
    jobs = [j for j in jobs if j.path not in refs]
    seen: dict[str, str] = {}
    for j in jobs:
        if j.stream_id in seen:
            raise InputError(f"{source}: {j.path} and {seen[j.stream_id]} would share stream id {j.stream_id!r}")
        seen[j.stream_id] = j.path
    if not jobs:
        raise InputError(f"{source}: no video files to score")
    return jobs


def _manifest(path: str) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if not rows or "video" not in rows[0]:
        raise InputError(f"{path}: expected a CSV manifest with a header naming at least a 'video' column "
                         "(optional: ref, stream_id)")
    return rows


def fingerprint(path: str) -> str:
    st = os.stat(path)
    return f"{st.st_size}:{st.st_mtime_ns}"


# -- the ledger ---------------------------------------------------------------------------------
class Ledger:
    """Finished files, one JSON line each, appended by the driver only (the last entry for a path wins)."""

    def __init__(self, out: str):
        self.path = os.path.join(out, LEDGER)
        self.entries: dict[str, dict] = {}
        if os.path.exists(self.path):
            with open(self.path, encoding="utf-8") as f:
                for line in f:
                    if line.strip():
                        e = json.loads(line)
                        self.entries[e["path"]] = e

    def finished(self, job: Job, retry_failed: bool) -> bool:
        e = self.entries.get(job.path)
        if not e or (retry_failed and e.get("error")) or not os.path.exists(job.path):
            return False
        return e["fingerprint"] == fingerprint(job.path)

    def record(self, entry: dict) -> None:
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(entry) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.entries[entry["path"]] = entry


# -- scoring one file ---------------------------------------------------------------------------
def score_into(job: Job, out: str, opts: BatchOptions, models, device: str) -> dict:
    """Score `job` with `score_file` into a staging folder, then swap its stream folders into `out`."""
    from monitor.build import score_file
    from monitor.sinks.parquet import ParquetSink, write_atomic

    stage = os.path.join(out, ".staging", uuid.uuid4().hex)
    part = f"stream_id={component(job.stream_id)}"
    try:
        s = score_file(opts.stream(job), [ParquetSink(stage)], device=device, batch_size=opts.batch_size,
                       models=models)
        write_atomic(pa.Table.from_pylist([_summary_row(s)], schema=SUMMARY_SCHEMA),
                     os.path.join(stage, "summaries", part))
        for kind in KINDS:
            src, dst = os.path.join(stage, kind, part), os.path.join(out, kind, part)
            if os.path.exists(dst):
                shutil.rmtree(dst)  # rows of an interrupted earlier try
            if os.path.exists(src):
                os.makedirs(os.path.dirname(dst), exist_ok=True)
                os.replace(src, dst)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return {"frames": s.frames_seen, "decode_errors": s.decode_errors, "elapsed_s": round(s.elapsed_s, 3)}


def _summary_row(s) -> dict:
    return {"stream_id": s.stream_id, "source": s.source, "reference": s.reference, "codec": s.info.codec,
            "width": s.info.width, "height": s.info.height, "fps": s.info.fps, "sampling": s.sampling,
            "frames_seen": s.frames_seen, "frames_scored": s.frames_scored, "decode_errors": s.decode_errors,
            "last_error": s.last_error or None, "ref_paired": s.ref_paired, "ref_unpaired": s.ref_unpaired,
            "elapsed_s": s.elapsed_s,
            "metrics": json.dumps({m.metric: {k: v for k, v in asdict(m).items() if k != "metric"} for m in s.metrics}),
            "segments": json.dumps([asdict(g) for g in s.segments]), "finished_ts": datetime.now(timezone.utc)}


@ray.remote
class FileScorer:
    """One pool member: models load once here, then every file it is handed is scored with them."""

    def __init__(self, out: str, opts: BatchOptions):
        from monitor.build import load_model
        from monitor.scoring.scorers import pick_device

        self.out, self.opts = out, opts
        self.device = pick_device(opts.device if opts.device != "auto" else ("cuda" if ray.get_gpu_ids() else "cpu"))
        self.models = [load_model(spec, self.device) for spec in opts.models]

    def score(self, job: Job) -> dict:
        """Ledger fields for `job`: counts, or the error (a bad file never takes the actor down)."""
        try:
            return score_into(job, self.out, self.opts, self.models, self.device)
        except Exception as e:  # any failure is the file's, reported with its path
            text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            return {"error": text if job.path in text else f"{job.path}: {text}"}


# -- the job ------------------------------------------------------------------------------------
def run_batch(source: str, out: str, opts: BatchOptions = BatchOptions(), ref_rule: str | None = None,
              actors: int | None = None, gpus_per_actor: float | None = None, retry_failed: bool = False,
              on_start=None, on_done=None) -> BatchResult:
    """Score every unfinished file of `source` on a pool of actors (Ray must be initialised).

    Defaults: one actor per GPU of the cluster, each holding a whole GPU; one CPU actor without GPUs.
    `on_start(n_todo)` and `on_done(entry)` drive a progress display.
    """
    jobs = list_jobs(source, ref_rule)
    out = os.path.abspath(out)  # actors do not share the driver's working directory
    os.makedirs(out, exist_ok=True)
    shutil.rmtree(os.path.join(out, ".staging"), ignore_errors=True)  # left by an interrupted run
    ledger = Ledger(out)
    todo = [j for j in jobs if not ledger.finished(j, retry_failed)]
    result = BatchResult(skipped=len(jobs) - len(todo),
                         failed_before=[ledger.entries[j.path] for j in jobs
                                        if j not in todo and "error" in ledger.entries[j.path]])
    if on_start:
        on_start(len(todo))
    gpus = ray.cluster_resources().get("GPU", 0)
    if gpus_per_actor is None:
        gpus_per_actor = 1 if gpus >= 1 else 0
    n = max(1, min(actors or int(gpus) or 1, len(todo)))

    def new_actor():
        return FileScorer.options(num_gpus=gpus_per_actor, num_cpus=1).remote(out, opts)

    pool = [new_actor() for _ in range(n)] if todo else []
    pending = list(reversed(todo))
    inflight: dict = {}  # ObjectRef → (actor, job)

    def submit(actor) -> None:
        if pending:
            job = pending.pop()
            inflight[actor.score.remote(job)] = (actor, job)

    try:
        for actor in pool:
            submit(actor)
        while inflight:
            [ref], _ = ray.wait(list(inflight), num_returns=1)
            actor, job = inflight.pop(ref)
            try:
                outcome = ray.get(ref)
            except ray.exceptions.RayError as e:  # the actor died (or its model failed to load): next one
                outcome = {"error": f"{job.path}: scorer failed: {str(e).strip().splitlines()[0]}"}
                pool.remove(actor)
                ray.kill(actor)
                actor = new_actor()
                pool.append(actor)
            entry = {"path": job.path, "fingerprint": fingerprint(job.path) if os.path.exists(job.path) else None,
                     "stream_id": job.stream_id, "ref": job.ref, **outcome,
                     "finished": datetime.now(timezone.utc).isoformat()}
            ledger.record(entry)
            (result.failed if "error" in entry else result.scored).append(entry)
            if on_done:
                on_done(entry)
            submit(actor)
    finally:
        for actor in pool:  # an interrupt leaves nothing running that could write into OUT later
            ray.kill(actor)
    return result
