"""Frames/s of the lite models on CPU before and after the inference work, step by step, with accuracy, in one run.

Prints the registry table, then for every lite model at 720p and 1080p and batch 1 and 8 (the
monitor's batch) the frames/s of each step below (best of `--rounds` rounds; the steps of one
model, size and batch are timed back to back in every round, so a busy machine slows them
alike) and each step's ratio to the one before. Every step runs in a worker process of its
own: the OpenMP wait policy is read once when torch loads and the heap tuning cannot be undone.

    before    the code of `--before REV` (default: the commit before this work), as the old bench ran
              it: default OpenMP wait policy, glibc's default heap, `score_frames` of the model as built
    passive   this code, OMP_WAIT_POLICY=PASSIVE (what `vqmon` sets), model as built
    heap      + `monitor.scoring.scorers.keep_large_tensors_in_heap` (glibc mallopt)
    fused     + `models.inference.prepare` (BatchNorms folded into convs): what `ModelScorer` runs
    nchw      `fused` on NCHW frames, to show what channels_last is worth (not a step)
    bf16      `fused` under CPU bf16 autocast (not used by the monitor on CPU; see the README)
    compile   `fused` with torch.compile(score_frames) (inductor; not used by default; cold compile time printed)
    1 thread  `fused` with torch.set_num_threads(1)

`--e2e` adds `score_file` (decode + signals + the model, as `vqmon score --model X`) on a 720p
H.264 clip, before against after. Accuracy: the scores of `before` and `fused` on frames of
panned photos encoded at CRF 18/28/38/48 (SRCC against −CRF, new-vs-old SRCC and max |Δ| of the
0–100 score), and with `--corpus DIR` on its VMAF-labelled validation items (SRCC against VMAF).

    python bench/models_throughput.py [--models nemg,mfenet,liqe,gsn] [--sizes 720p,1080p] [--batches 1,8]
        [--rounds 3] [--steps before,passive,heap,fused,nchw,bf16,1thread] [--compile] [--e2e]
        [--corpus DIR [--per-subset N]] [--before REV] [--threads N]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SIZES = {"720p": (720, 1280), "1080p": (1080, 1920)}
CRFS = (18, 28, 38, 48)
PHOTOS = ("astronaut", "coffee", "chelsea")
RANGES = {"nemg": (0.0, 1.0), "mfenet": (0.0, 1.0), "liqe": (1.0, 5.0), "gsn": (0.0, 1.0)}
# step → (code, OMP_WAIT_POLICY, heap tuning, in-process options)
STEPS = {
    "before": ("before", None, False, {}),
    "passive": ("after", "PASSIVE", False, {}),
    "heap": ("after", "PASSIVE", True, {}),
    "fused": ("after", "PASSIVE", True, {"prepare": True}),
    "nchw": ("after", "PASSIVE", True, {"prepare": True, "nchw": True}),
    "bf16": ("after", "PASSIVE", True, {"prepare": True, "bf16": True}),
    "compile": ("after", "PASSIVE", True, {"prepare": True, "compile": True}),
    "1thread": ("after", "PASSIVE", True, {"prepare": True, "threads": 1}),
}
CHAIN = ("before", "passive", "heap", "fused")  # cumulative steps: each ratio is to the previous one


# --- worker: runs inside a process with the code and settings of one step ---------------------------
class Worker:
    def __init__(self, heap: bool, threads: int):
        import torch

        torch.set_num_threads(threads)
        self.torch, self.threads, self.models, self.inputs = torch, threads, {}, {}
        if heap:
            from monitor.scoring.scorers import keep_large_tensors_in_heap

            keep_large_tensors_in_heap()

    def model(self, name: str, opts: dict):
        key = (name, bool(opts.get("prepare")), bool(opts.get("compile")))  # the other options act per call
        if key not in self.models:
            from models import registry
            from models.table import default_weights

            model = registry.create(name, "lite", weights="default" if default_weights(name, "lite") else None)  # speed only
            if hasattr(model, "fold"):
                model.fold()  # the old ModelScorer folded GSN too
            if opts.get("prepare"):
                from models import inference

                model = inference.prepare(model, "cpu", compile=bool(opts.get("compile")))
            self.models[key] = (model, model.score_frames)
        return self.models[key]

    def call(self, name: str, opts: dict, frames, refs):
        torch = self.torch
        model, fn = self.model(name, opts)
        torch.set_num_threads(opts.get("threads", self.threads))
        try:
            with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bool(opts.get("bf16"))):
                return fn(frames, refs if model.info.kind == "FR" else None)["quality"].float()
        finally:
            torch.set_num_threads(self.threads)

    def frames(self, size, batch: int, nchw: bool):
        torch = self.torch
        key = (tuple(size), batch, nchw)
        if key not in self.inputs:
            g = torch.Generator().manual_seed(0)
            x = torch.rand(batch, 3, *size, generator=g)
            r = (x + 0.05 * torch.randn(x.shape, generator=g)).clamp(0, 1)
            fmt = torch.contiguous_format if nchw else torch.channels_last
            self.inputs[key] = (x.contiguous(memory_format=fmt), r.contiguous(memory_format=fmt))
        return self.inputs[key]

    def op_time(self, model: str, size, batch: int, opts: dict) -> dict:
        frames, refs = self.frames(size, batch, bool(opts.get("nchw")))
        start = time.perf_counter()
        self.call(model, opts, frames, refs)  # first call: warm-up (compile, cached label features)
        first = time.perf_counter() - start
        wall, cpu = time.perf_counter(), time.process_time()
        self.call(model, opts, frames, refs)
        return {"wall": time.perf_counter() - wall, "cpu": time.process_time() - cpu, "first": first}

    def op_warm(self, model: str, size, batch: int, opts: dict) -> dict:
        start = time.perf_counter()
        frames, refs = self.frames(size, batch, bool(opts.get("nchw")))
        self.call(model, opts, frames, refs)
        return {"first": time.perf_counter() - start}

    def op_scores(self, model: str, paths: list, opts: dict) -> dict:
        """Native scores of RGB images (dist and, for FR, ref PNG paths), one at a time."""
        import numpy as np
        from PIL import Image

        torch = self.torch

        def load(p):
            with Image.open(p) as im:
                a = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
            return torch.from_numpy(a).permute(2, 0, 1)[None].contiguous(memory_format=torch.channels_last)

        return {"scores": [self.call(model, opts, load(d), load(r)).item() for d, r in paths]}

    def op_e2e(self, model: str, clip: str, ref: str) -> dict:
        from models import registry
        from models.table import default_weights
        from monitor.build import score_file
        from monitor.config import StreamConfig

        weights = "default" if default_weights(model, "lite") else None  # nemg ships none: timed untrained
        m = self.models.setdefault(("e2e", model), registry.create(model, "lite", weights=weights))
        ref = ref if m.info.kind == "FR" else None
        score_file(StreamConfig(clip, ref=ref), models=[m], device="cpu")  # warm-up
        wall, cpu = time.perf_counter(), time.process_time()
        summary = score_file(StreamConfig(clip, ref=ref), models=[m], device="cpu")
        return {"wall": time.perf_counter() - wall, "cpu": time.process_time() - cpu, "frames": summary.frames_seen}


def worker_main(heap: bool, threads: int) -> None:
    worker = Worker(heap, threads)
    for line in sys.stdin:
        cmd = json.loads(line)
        try:
            out = getattr(worker, "op_" + cmd.pop("op"))(**cmd)
        except Exception as e:  # reported in the table; the worker goes on
            out = {"error": f"{type(e).__name__}: {e}"}
        print(json.dumps(out), flush=True)


# --- parent ------------------------------------------------------------------------------------
class Proc:
    def __init__(self, code: Path, policy: str | None, heap: bool, threads: int):
        env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
        if policy:
            env["OMP_WAIT_POLICY"] = policy
        env["PYTHONPATH"] = str(code)
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "--threads", str(threads)] + (["--heap"] if heap else [])
        self.p = subprocess.Popen(cmd, cwd=str(code), env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def ask(self, **cmd) -> dict:
        self.p.stdin.write(json.dumps(cmd) + "\n")
        self.p.stdin.flush()
        return json.loads(self.p.stdout.readline())

    def close(self) -> None:
        self.p.stdin.close()
        self.p.wait()


def checkout(rev: str, into: Path) -> Path | None:
    """The tree of `rev` (git archive) under `into`, or None when git or the revision is not there."""
    try:
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev], check=True, capture_output=True).stdout
    except (OSError, subprocess.CalledProcessError) as e:
        print(f"before: cannot check out {rev}: {e}", file=sys.stderr)
        return None
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def accuracy_items(tmp: Path, corpus: str | None, per_subset: int | None) -> dict[str, tuple[list, list]]:
    """{set name: ([(dist path, ref path)], [label])}: CRF-swept panned photos (label −CRF), and the corpus (VMAF)."""
    import av
    from PIL import Image

    from monitor.samples import encode, panned_frames

    paths, labels = [], []
    for photo in PHOTOS:
        ref = tmp / f"{photo}.png"
        frames = list(panned_frames(640, 360, 8, photo=photo))
        Image.fromarray(frames[-1]).save(ref)
        for crf in CRFS:
            clip = encode(str(tmp / f"{photo}-{crf}.mp4"), frames, crf=crf)
            with av.open(clip) as c:
                last = list(c.decode(video=0))[-1].to_ndarray(format="rgb24")
            dist = tmp / f"{photo}-{crf}.png"
            Image.fromarray(last).save(dist)
            paths.append((str(dist), str(ref)))
            labels.append(-crf)
    sets = {"CRF sweep": (paths, labels)}
    if corpus:
        from pipelines.train import evaluate

        items = evaluate.read_corpus(corpus, "val", per_subset)
        sets[f"corpus {Path(corpus).name}"] = ([(str(i.path), str(i.ref_path)) for i in items], [i.mos for i in items])
    return sets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="nemg,mfenet,liqe,gsn")
    parser.add_argument("--sizes", default="720p,1080p")
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", default="before,passive,heap,fused,nchw,bf16,1thread")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile (minutes of cold compiles)")
    parser.add_argument("--e2e", action="store_true", help="also time score_file on a 720p clip, before and after")
    parser.add_argument("--corpus", help="a `vqmon corpus` folder: accuracy on its VMAF-labelled val items")
    parser.add_argument("--per-subset", type=int, help="corpus: at most N items per subset")
    parser.add_argument("--before", default="fbbb9fc", help="git revision of the `before` code (default: before this work)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--heap", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker_main(args.heap, args.threads)

    import numpy as np
    from scipy.stats import spearmanr

    sys.path.insert(0, str(ROOT))
    from models import registry

    names, sizes, batches = args.models.split(","), args.sizes.split(","), [int(b) for b in args.batches.split(",")]
    steps = [s for s in args.steps.split(",") + (["compile"] if args.compile else []) if s in STEPS]
    print(f"{'model':8} {'variant':7} {'kind':4} {'params M':>9} {'GMACs/224':>10} {'GMACs/1080p':>12}  protocol")
    for row in registry.list():
        if row["name"] in names and row["variant"] == "lite" and "error" not in row:
            print(f"{row['name']:8} {row['variant']:7} {row['kind']:4} {row['params_m']:9.2f} {row['gmacs_224']:10.2f} "
                  f"{row['gmacs_1080p']:12.1f}  {row['protocol']}")

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        before_code = checkout(args.before, Path(tempfile.mkdtemp(dir=tmp))) if "before" in steps else None
        if before_code is None:
            steps = [s for s in steps if s != "before"]
        procs: dict[tuple, Proc] = {}
        for s in steps:
            code, policy, heap, _ = STEPS[s]
            key = (code, policy, heap)
            if key not in procs:
                procs[key] = Proc(before_code if code == "before" else ROOT, policy, heap, args.threads)
        proc = {s: procs[STEPS[s][:3]] for s in steps}
        opts = {s: STEPS[s][3] for s in steps}

        # --- throughput --------------------------------------------------------------------------
        cases = [(n, z, b) for n in names for z in sizes for b in batches]
        best: dict[tuple, list[float]] = {}  # (case, step) → [wall, cpu]
        first: dict[tuple, float] = {}
        for case in cases:  # warm-ups (and cold compiles) outside the timed rounds
            for s in steps:
                out = proc[s].ask(op="warm", model=case[0], size=SIZES[case[1]], batch=case[2], opts=opts[s])
                first[case, s] = out.get("first", float("nan"))
        for _ in range(args.rounds):
            for case in cases:
                for s in steps:
                    out = proc[s].ask(op="time", model=case[0], size=SIZES[case[1]], batch=case[2], opts=opts[s])
                    if "error" in out:
                        best[case, s] = [float("nan")] * 2
                        print(f"{case} {s}: {out['error']}", file=sys.stderr)
                        continue
                    old = best.get((case, s), [float("inf")] * 2)
                    best[case, s] = [min(old[0], out["wall"]), min(old[1], out["cpu"])]

        print(f"\nframes/s on CPU, {args.threads} threads, best of {args.rounds} interleaved rounds (wall clock); "
              f"ratios are to the step before ({' → '.join(s for s in CHAIN if s in steps)}); "
              "extras are relative to `fused`")
        head = f"{'model':7} {'size':5} {'batch':>5} " + " ".join(f"{s:>8}" for s in steps)
        head += "   " + " ".join(f"{'×' + s:>8}" for s in steps if s != "before") + f" {'after/before':>12}"
        print(head)
        for case in cases:
            fps = {s: case[2] / best[case, s][0] for s in steps}
            row = f"{case[0]:7} {case[1]:5} {case[2]:5d} " + " ".join(f"{fps[s]:8.2f}" for s in steps) + "   "
            ratios = []
            for s in steps:
                if s == "before":
                    continue
                base = CHAIN[CHAIN.index(s) - 1] if s in CHAIN else "fused"
                ratios.append(f"{fps[s] / fps[base]:8.2f}" if base in fps else f"{'':8}")
            row += " ".join(ratios)
            row += f" {fps['fused'] / fps['before']:12.2f}" if {"fused", "before"} <= fps.keys() else ""
            print(row)
        print("\nsame cases, CPU seconds per frame (sum over threads; what a busy machine cannot hide)")
        print(f"{'model':7} {'size':5} {'batch':>5} " + " ".join(f"{s:>8}" for s in steps))
        for case in cases:
            print(f"{case[0]:7} {case[1]:5} {case[2]:5d} " + " ".join(f"{best[case, s][1] / case[2]:8.3f}" for s in steps))
        if "compile" in steps:
            print("\ncold torch.compile (first call, seconds): "
                  + ", ".join(f"{c[0]} {c[1]} b{c[2]} {first[c, 'compile']:.0f}" for c in cases))

        # --- end to end -----------------------------------------------------------------------------
        if args.e2e and "before" in steps:
            from monitor.samples import encode, panned_frames

            clip = encode(str(tmp / "dist.mp4"), panned_frames(1280, 720, 48), crf=28)
            ref = encode(str(tmp / "ref.mp4"), panned_frames(1280, 720, 48), crf=None)
            print("\nscore_file (decode + signals + model; FR models with the lossless reference), 720p H.264, 48 frames, "
                  f"best of {args.rounds}")
            print(f"{'model':7} {'before fps':>10} {'after fps':>10} {'ratio':>6}")
            e2e = {}
            for _ in range(args.rounds):
                for n in names:
                    for s in ("before", "fused"):
                        out = proc[s].ask(op="e2e", model=n, clip=clip, ref=ref)
                        if "error" not in out:
                            e2e[n, s] = max(e2e.get((n, s), 0.0), out["frames"] / out["wall"])
            for n in names:
                b, a = e2e.get((n, "before"), float("nan")), e2e.get((n, "fused"), float("nan"))
                print(f"{n:7} {b:10.2f} {a:10.2f} {a / b:6.2f}")

        # --- accuracy ------------------------------------------------------------------------------
        old = next((s for s in ("before", "passive", "heap") if s in steps), None)
        acc_steps = [s for s in (old, "fused", "bf16") if s in steps]
        if old and "fused" in acc_steps:
            print(f"\naccuracy: `{old}` against `fused` (what the monitor runs){' and `bf16`' if 'bf16' in acc_steps else ''}; "
                  "Δ on the 0–100 score")
            print(f"{'model':7} {'items':24} {'n':>4} {'SRCC ' + old:>12} " + " ".join(
                f"{'SRCC ' + s:>11} {'vs old':>9} {'max|Δ|':>7}" for s in acc_steps if s != old))
            for set_name, (paths, labels) in accuracy_items(tmp, args.corpus, args.per_subset).items():
                for n in names:
                    lo, hi = RANGES[n]
                    scores = {s: np.array(proc[s].ask(op="scores", model=n, paths=paths, opts=opts[s])["scores"])
                              for s in acc_steps}
                    to100 = {s: np.clip(100 * (v - lo) / (hi - lo), 0, 100) for s, v in scores.items()}
                    row = f"{n:7} {set_name:24} {len(paths):4d} {spearmanr(scores[old], labels)[0]:12.4f} "
                    row += " ".join(f"{spearmanr(scores[s], labels)[0]:11.4f} {spearmanr(scores[s], scores[old])[0]:9.5f} "
                                    f"{np.abs(to100[s] - to100[old]).max():7.3f}" for s in acc_steps if s != old)
                    print(row, flush=True)
        for p in procs.values():
            p.close()


if __name__ == "__main__":
    main()
