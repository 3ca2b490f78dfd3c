"""The GPU table for a short lease: decode, signals, every model at 1080p (batch 1/8/32, bf16), memory, streams per GPU.

Everything is measured in one run on one machine and printed as Markdown (pasted into
bench/README.md). Rows that cannot run (no NVDEC, a model that fails) say why and the rest go on.
Run through `bench/gpu.sh`, which installs what is missing and runs tests/test_cuda.py first.
On a CPU (`--device cpu --quick`) the same code runs at small sizes: that is how it is checked
without a GPU.

    python bench/gpu_throughput.py [--device cuda] [--seconds 1.0] [--quick]
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from models import registry  # noqa: E402
from monitor.build import score_file  # noqa: E402
from monitor.config import StreamConfig  # noqa: E402
from monitor.config import parse_sample  # noqa: E402
from monitor.samples import encode, panned_frames  # noqa: E402
from monitor.scoring import signals  # noqa: E402
from monitor.source.sources import FileSource  # noqa: E402

LIVE_MODELS = ("liqe",)  # the NR model a live stream runs by default in these estimates


def table(title: str, header: list[str], rows: list[list]) -> None:
    print(f"\n### {title}\n")
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for _ in header) + "|")
    for r in rows:
        print("| " + " | ".join(str(c) for c in r) + " |")
    sys.stdout.flush()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def rate(fn, items_per_call: int, seconds: float, device: torch.device) -> float:
    """Items/s of `fn` after one warm-up call, repeated until `seconds` have passed (at least twice)."""
    fn()
    sync(device)
    n, start = 0, time.perf_counter()
    while n < 2 or time.perf_counter() - start < seconds:
        fn()
        n += 1
    sync(device)
    return n * items_per_call / (time.perf_counter() - start)


def fmt(x: float) -> str:
    if not math.isfinite(x):
        return "—"
    return f"{x:,.0f}" if x >= 100 else f"{x:.1f}" if x >= 10 else f"{x:.2f}"


# --- decode ---------------------------------------------------------------------------------------
def decode_count(path: str, threads: int | None = None, hwaccel=None) -> int:
    with av.open(path, hwaccel=hwaccel) as c:
        s = c.streams.video[0]
        s.thread_type = "AUTO"
        if threads:
            s.thread_count = threads
        return sum(1 for _ in c.decode(s))


def decode_rows(clip: str) -> list[list]:
    rows = []

    def timed(label: str, fn) -> None:
        try:
            start = time.perf_counter()
            n = fn()
            secs = time.perf_counter() - start
            rows.append([label, n, fmt(n / secs)])
        except Exception as e:  # a path this machine lacks (e.g. NVDEC) is a row, not a failure
            rows.append([label, "—", f"unavailable: {type(e).__name__}: {str(e)[:80]}"])

    decode_count(clip)  # page cache, codec init
    timed(f"PyAV CPU decode, {os.cpu_count()} threads (AUTO)", lambda: decode_count(clip))
    timed("PyAV CPU decode, 1 thread", lambda: decode_count(clip, threads=1))
    timed("PyAV CPU decode + luma extraction (FileSource)", lambda: sum(1 for f in FileSource(clip) if f.y.size))
    from av.codec.hwaccel import HWAccel, hwdevices_available

    if "cuda" in hwdevices_available():
        timed("PyAV NVDEC (hwaccel cuda), frames downloaded",
              lambda: decode_count(clip, hwaccel=HWAccel("cuda", allow_software_fallback=False)))
        timed("PyAV NVDEC (hwaccel cuda), frames stay on the GPU",
              lambda: decode_count(clip, hwaccel=HWAccel("cuda", allow_software_fallback=False, is_hw_owned=True)))
    else:
        rows.append(["PyAV NVDEC", "—", "unavailable: this PyAV build has no cuda hwaccel"])
    return rows


# --- signals --------------------------------------------------------------------------------------
def signal_rows(device: torch.device, size: tuple[int, int], seconds: float, batches: tuple[int, ...]) -> list[list]:
    rows = []
    for b in batches:
        g = torch.Generator().manual_seed(0)
        y = (torch.rand(b, *size, generator=g) * 255).round().to(device)
        r = (y + 3).clamp(0, 255)
        prev = y[0].clone()
        nr = rate(lambda: signals.compute(y, prev, False), b, seconds, device)
        fr = rate(lambda: (signals.psnr_y(y, r), signals.ssim_y(y, r)), b, seconds, device)
        both = 1 / (1 / nr + 1 / fr)
        rows.append([f"{size[1]}×{size[0]} luma, batch {b}", fmt(nr), fmt(fr), fmt(both)])
    return rows


# --- models ---------------------------------------------------------------------------------------
def model_rows(device: torch.device, size: tuple[int, int], seconds: float, batches: tuple[int, ...],
               variants: tuple[str, ...]) -> tuple[list[list], dict]:
    """Table rows, and {(name, variant, batch): frames/s}."""
    rows, measured = [], {}
    cuda = device.type == "cuda"
    for name in registry.MODULES:
        for variant in variants:
            try:
                model = registry.create(name, variant, weights=None, device=device)
                if hasattr(model, "fold"):
                    model.fold()
            except Exception as e:
                rows.append([name, variant, *["—"] * len(batches), f"unavailable: {type(e).__name__}: {str(e)[:80]}"])
                continue
            cells, peaks = [], []
            for b in batches:
                try:
                    x = torch.rand(b, 3, *size, device=device).contiguous(memory_format=torch.channels_last)
                    ref = x.flip(-1).contiguous(memory_format=torch.channels_last) if model.info.kind == "FR" else None
                    if cuda:
                        torch.cuda.reset_peak_memory_stats(device)
                        base = torch.cuda.memory_allocated(device)

                    def step():
                        with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
                            return model.score_frames(x, ref)["quality"]

                    measured[(name, variant, b)] = rate(step, b, seconds, device)
                    cells.append(fmt(measured[(name, variant, b)]))
                    if cuda:
                        peaks.append(f"{(torch.cuda.max_memory_allocated(device) - base) / 2**20:,.0f}")
                    del x, ref
                except Exception as e:
                    cells.append(f"failed: {type(e).__name__}")
                    print(f"{name}/{variant} batch {b}: {type(e).__name__}: {e}", file=sys.stderr)
                if cuda:
                    torch.cuda.empty_cache()
            rows.append([name, variant, *cells, " / ".join(peaks) if peaks else "—"])
            del model
    return rows, measured


# --- end to end -----------------------------------------------------------------------------------
def end_to_end_rows(clip: str, ref: str, device: str) -> list[list]:
    """Each case run twice: the first run pays model preparation and first-call kernel loading, the second shows the steady rate."""
    lite = {n: registry.create(n, "lite") for n in registry.MODULES}
    cases = [
        ("signals (NR)", {}, []),
        ("signals NR + FR (--ref)", {"ref": ref}, []),
        ("signals + liqe-lite", {}, ["liqe"]),
        ("signals NR + FR + all four lite models (--ref)", {"ref": ref}, list(registry.MODULES)),
        ("signals + liqe-lite, --sample 5fps", {"sample": "5fps"}, ["liqe"]),
    ]
    rows = []
    for label, kwargs, models in cases:
        try:
            rates = []
            for _ in range(2):
                stream = StreamConfig(clip, ref=kwargs.get("ref"), sample=parse_sample(kwargs.get("sample", "all")))
                start = time.perf_counter()
                s = score_file(stream, device=device, models=[lite[m] for m in models])
                rates.append(s.frames_seen / (time.perf_counter() - start))
            rows.append([label, s.frames_seen, s.frames_scored, fmt(rates[0]), fmt(rates[1])])
        except Exception as e:
            rows.append([label, "—", "—", f"failed: {type(e).__name__}: {str(e)[:80]}", ""])
    return rows


def stage_rows(clip: str, device: torch.device, batch: int = 8) -> list[list]:
    """Where one stream's time goes: each stage of the signals + LIQE-lite path timed alone, ms per frame."""
    from monitor.scoring.scorers import ModelScorer, SignalScorer

    with FileSource(clip) as src:
        start = time.perf_counter()
        frames = list(src)
        decode_ms = (time.perf_counter() - start) * 1000 / len(frames)
    start = time.perf_counter()
    for f in frames:
        f.y  # noqa: B018
    luma_ms = (time.perf_counter() - start) * 1000 / len(frames)
    start = time.perf_counter()
    for f in frames:
        f.rgb()
    rgb_ms = (time.perf_counter() - start) * 1000 / len(frames)
    batches = [frames[i : i + batch] for i in range(0, len(frames) - batch + 1, batch)]
    rows = [[f"decode (PyAV, threads AUTO), {len(frames)} frames", f"{decode_ms:.2f}"],
            ["luma plane extraction (Frame.y)", f"{luma_ms:.2f}"],
            ["RGB conversion (Frame.rgb, swscale, one thread)", f"{rgb_ms:.2f}"]]
    for label, scorer in (("SignalScorer.score", SignalScorer(device)),
                          ("ModelScorer(liqe-lite).score", ModelScorer(registry.create("liqe"), device))):
        for b in batches[:2]:  # warm-up
            scorer.score(b, [None] * len(b))
        sync(device)
        start = time.perf_counter()
        for b in batches:
            scorer.score(b, [None] * len(b))
        sync(device)
        ms = (time.perf_counter() - start) * 1000 / (len(batches) * batch)
        rows.append([f"{label}, batches of {batch} (host→device copy included)", f"{ms:.2f}"])
    return rows


STREAM_PROBE = """
import json, sys, torch
from models import registry
from monitor.build import score_file
from monitor.config import StreamConfig
from monitor.config import parse_sample
torch.cuda.init(); torch.zeros(1, device="cuda")
free0, total = torch.cuda.mem_get_info()
models = [registry.create(n) for n in sys.argv[2].split(",") if n]
score_file(StreamConfig(sys.argv[1], sample=parse_sample(sys.argv[3])), device="cuda", models=models, batch_size=8)
free1, _ = torch.cuda.mem_get_info()
print(json.dumps({"context_mib": (total - free0) / 2**20, "process_mib": (total - free1) / 2**20,
                  "reserved_mib": torch.cuda.max_memory_reserved() / 2**20, "total_mib": total / 2**20}))
"""


def stream_memory(clip: str, models: tuple[str, ...], sample: str) -> dict:
    """GPU memory of one monitor process (CUDA context + weights + cache), measured in a fresh process."""
    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", STREAM_PROBE, clip, ",".join(models), sample], env=env,
                         capture_output=True, text=True, timeout=180)
    if out.returncode:
        raise RuntimeError(out.stderr.strip().splitlines()[-1] if out.stderr.strip() else f"exit {out.returncode}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--seconds", type=float, default=1.0, help="timed seconds per model/batch cell")
    ap.add_argument("--frames", type=int, default=200, help="frames of the 1080p test clip (25 fps)")
    ap.add_argument("--quick", action="store_true", help="small sizes and batches (a CPU check of this script)")
    args = ap.parse_args()
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    if cuda:
        torch.backends.cudnn.benchmark = True  # fixed frame sizes: let cuDNN pick its fastest kernels
    size = (360, 640) if args.quick else (1080, 1920)
    batches = (1, 2) if args.quick else (1, 8, 32)
    variants = ("lite",) if args.quick else registry.VARIANTS
    frames = min(args.frames, 30) if args.quick else args.frames
    where = torch.cuda.get_device_name(device) if cuda else f"CPU, {torch.get_num_threads()} threads"
    print(f"## GPU throughput: {where}\n")
    print(f"torch {torch.__version__} (CUDA {torch.version.cuda}), PyAV {av.__version__}, {os.cpu_count()} CPU cores, "
          f"{size[1]}×{size[0]}, {time.strftime('%Y-%m-%d')}")

    with tempfile.TemporaryDirectory() as d:
        clip = encode(os.path.join(d, "dist.mp4"), panned_frames(size[1], size[0], frames), crf=28,
                      options={"preset": "veryfast"})
        ref = encode(os.path.join(d, "ref.mp4"), panned_frames(size[1], size[0], frames), crf=12,
                     options={"preset": "veryfast"})
        dec = decode_rows(clip)
        table(f"Decode, {size[1]}×{size[0]} H.264 CRF 28, {frames} frames", ["path", "frames", "frames/s"], dec)

        sig = signal_rows(device, size, args.seconds, batches)
        table(f"Signals on {device.type} (luma already on the device)",
              ["input", "NR signals fps", "FR psnr+ssim fps", "NR+FR fps"], sig)

        mrows, fps = model_rows(device, size, args.seconds, batches, variants)
        table(f"Models, scored frames/s at {size[1]}×{size[0]} ({'bf16 autocast, ' if cuda else ''}channels_last, "
              "frames already on the device, untrained weights: cost does not depend on them)",
              ["model", "variant", *[f"batch {b}" for b in batches], "peak MiB per batch" if cuda else "—"], mrows)

        torch.backends.cudnn.benchmark = False  # as the monitor runs: live batches vary in size
        e2e = end_to_end_rows(clip, ref, args.device)
        table(f"End to end `score_file` on {device.type}, one stream, {size[1]}×{size[0]} (decode on CPU)",
              ["scorers", "frames decoded", "frames scored", "decoded frames/s, first run", "second run"], e2e)
        table(f"Where one stream's time goes, {size[1]}×{size[0]}, each stage alone",
              ["stage", "ms per frame"], stage_rows(clip, device))

        if cuda:
            srows = []
            decode_fps = next((float(r[2].replace(",", "")) for r in dec if r[0].startswith("PyAV CPU decode,")
                               and r[2][0].isdigit()), math.nan)
            per_frame = 1 / rate(lambda: signals.compute(torch.zeros(1, *size, device=device), None, False), 1,
                                 args.seconds, device)
            per_frame += sum(1 / fps[(m, "lite", 1)] for m in LIVE_MODELS if (m, "lite", 1) in fps)
            total = torch.cuda.mem_get_info(device)[1] / 2**20
            for sample in ("1fps", "5fps"):
                try:
                    mem = stream_memory(clip, LIVE_MODELS, sample)
                    per_stream = mem["process_mib"]  # a stream is its own process (Ray actor): its context counts
                except Exception as e:
                    mem, per_stream = {"error": str(e)}, math.nan
                rate_hz = float(sample[:-3])
                gpu_bound = 1 / (rate_hz * per_frame)
                mem_bound = total / per_stream if per_stream == per_stream else math.nan
                cpu_bound = decode_fps / 25.0  # every frame of a 25 fps stream is decoded, sampled or not
                srows.append([sample, f"{per_stream:,.0f}" if per_stream == per_stream else mem.get("error", "—")[:60],
                              fmt(gpu_bound), fmt(mem_bound), fmt(cpu_bound),
                              fmt(min(gpu_bound, mem_bound, cpu_bound))])
            table("Streams per GPU, 1080p25 live streams, signals + " + "+".join(LIVE_MODELS) + "-lite "
                  "(derived from the rows above: batch-1 GPU time per sampled frame, one process per stream, "
                  f"CPU decode of every frame on {os.cpu_count()} cores)",
                  ["sampling", "GPU MiB per stream process", "GPU-bound streams", "memory-bound streams",
                   "CPU-decode-bound streams", "streams per GPU"], srows)
        paper = [v for (name, variant, _), v in fps.items() if (name, variant) == ("liqe", "paper")]
        if paper:
            print(f"\nPaper LIQE protocol (15 crops of 224 from the frame resized to a 768 short side), best batch: "
                  f"{fmt(max(paper))} frames/s (target to report against: ≥ 1000 on one H100/H200-class GPU)")


if __name__ == "__main__":
    main()
