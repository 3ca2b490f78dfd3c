"""`vqmon batch` on Ray Data: the files of a plan (monitor/archive.py) become a Dataset scored by `ScoreFiles` actors.

Each file is a one-row block, mapped by a pool of `ScoreFiles` actors (`map_batches` with a class):
models load once per actor, on its GPU when it was given one; Ray Data schedules, back-pressures
and shows progress; each file's ledger entry streams back to the driver, which records it
(`archive.run`). The records themselves go to OUT through the project's Parquet sink from the actor,
staged and swapped in per file (monitor/archive.py), so they keep `vqmon score`'s schema and layout.

A file whose actor dies (a crash in a decoder, out of memory, a lost node) is tried again on a
restarted actor, `opts.retries` more times; after that it is listed as failed and the job goes on
(DataContext.max_errored_blocks = -1: a lost block does not end the dataset).
"""
from __future__ import annotations

import gc
import json
import os
import warnings
from dataclasses import asdict

import pyarrow as pa
import ray
from ray.util.annotations import RayDeprecationWarning

from monitor import archive
from monitor.archive import BatchOptions, BatchResult, Plan
from monitor.malloc import MALLOC_ENV
from monitor.redaction import redact

# Test hook: a file holding a video's path; the actor scoring that video deletes the file and exits at
# its EXIT_AT_FRAME-th frame (a crash mid-file), so only the first try dies. Unset in real runs.
EXIT_ONCE = "VQMON_TEST_EXIT_ONCE"
EXIT_AT_FRAME = 10


class ScoreFiles:
    """One pool member: models load once here, then every file it is handed is scored with them."""

    def __init__(self, out: str, opts: BatchOptions):
        from monitor.build import load_model
        from monitor.scoring.scorers import pick_device

        self.out, self.opts = out, opts
        self.device = pick_device(opts.device if opts.device != "auto" else ("cuda" if ray.get_gpu_ids() else "cpu"))
        self.models = [load_model(spec, self.device) for spec in opts.models]

    def __call__(self, batch: pa.Table) -> dict:
        entries = []
        for row in batch.to_pylist():
            job = archive.Job(**row)
            entries.append(archive.score_job(job, self.out, self.opts, self.models, self.device, _exit_once(job.path)))
        return {"entry": [json.dumps(e) for e in entries]}


def _exit_once(path: str):
    """The test hook's progress callback when EXIT_ONCE names `path`; else None."""
    marker = os.environ.get(EXIT_ONCE)
    if not marker:
        return None
    try:
        with open(marker, encoding="utf-8") as f:
            if f.read().strip() != path:
                return None
    except FileNotFoundError:  # no crash asked for, or it happened already
        return None
    frames = [0]

    def exit_mid_file(n: int) -> None:
        frames[0] += n
        if frames[0] >= EXIT_AT_FRAME:
            try:
                os.remove(marker)  # one remover wins: the retry scores the file
            except FileNotFoundError:
                return
            os._exit(1)

    return exit_mid_file


def run_batch(p: Plan, opts: BatchOptions = BatchOptions(), actors: int | None = None,
              gpus_per_actor: float | None = None, cpus_per_actor: float = 1, progress: bool = True,
              on_done=None) -> BatchResult:
    """Score the plan's files on a pool of actors (Ray must be initialised); `on_done(entry)` per file.

    Defaults: one actor per GPU of the cluster, each holding a whole GPU; one CPU actor without GPUs.
    """
    gpus = ray.cluster_resources().get("GPU", 0)
    if gpus_per_actor is None:
        gpus_per_actor = 1 if gpus >= 1 else 0

    def score_all(todo: list[archive.Job]):
        if not todo:
            return
        ds = ray.data.from_items([asdict(j) for j in todo], override_num_blocks=len(todo))  # a block per file
        ds.context.max_errored_blocks = -1
        ds.context.enable_progress_bars = progress
        size = max(1, min(actors or int(gpus) or 1, len(todo)))
        with warnings.catch_warnings():  # Ray 2.60 has no named parameter for task retries: ray_remote_args it is
            warnings.simplefilter("ignore", RayDeprecationWarning)
            ds = ds.map_batches(ScoreFiles, fn_constructor_kwargs={"out": p.out, "opts": opts}, batch_size=1,
                                batch_format="pyarrow", num_cpus=cpus_per_actor, num_gpus=gpus_per_actor,
                                compute=ray.data.ActorPoolStrategy(size=size, max_tasks_in_flight_per_actor=1),
                                max_task_retries=opts.retries, runtime_env={"env_vars": MALLOC_ENV})
        returned = set()
        try:
            for row in ds.iter_rows():
                e = json.loads(row["entry"])
                returned.add(e["path"])
                yield e
        finally:  # Ray Data lets its actors go by dropping references; a crashed task's traceback holds one in a
            del ds  # cycle, and until the driver's next garbage collection (minutes, on a busy machine) the pool
            gc.collect()  # keeps its CPUs and GPUs: the next job's actors would wait for them
        for job in todo:  # blocks Ray Data gave up on: the file's actor died on every try
            if job.path not in returned:
                yield archive.entry(job, error=f"{redact(job.path)}: its scoring process died {opts.retries + 1} times "
                                               "(a crash in the decoder, or out of memory?)")

    return archive.run(p, score_all, on_done)
