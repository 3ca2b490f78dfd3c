"""Signals on real x264 encodes: ordering with CRF, agreement with FFmpeg, freeze/black at the right frames."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import BLACK, FPS, FREEZE, N, ffmpeg_fr
from monitor.build import score_file
from monitor.config import StreamConfig
from monitor.samples import encode, panned_frames
from monitor.scoring import signals
from monitor.sinks.jsonl import JsonlSink


def per_frame(out_dir, metric):
    import json

    rows = [json.loads(line) for line in open(out_dir / "frames.jsonl")]
    rows = [r for r in rows if r["metric"] == metric]
    return np.array([r["value"] for r in sorted(rows, key=lambda r: r["frame_index"])])


@pytest.fixture(scope="module")
def crf_runs(media):
    return {crf: score_file(StreamConfig(media[crf], ref=media["ref"])) for crf in (18, 28, 38, 48)}


def mean_of(summary, metric):
    return next(m.mean for m in summary.metrics if m.metric == metric)


@pytest.mark.parametrize("metric,direction", [
    ("fr.psnr_y", -1), ("fr.ssim_y", -1), ("sig.blockiness", +1), ("sig.sharpness", -1),
])
def test_scores_order_with_crf(crf_runs, metric, direction):
    means = [mean_of(crf_runs[c], metric) for c in (18, 28, 38, 48)]
    steps = np.diff(means) * direction
    assert (steps > 0).all(), f"{metric} does not order with CRF: {means}"


def test_psnr_ssim_agree_with_ffmpeg_per_frame(media, tmp_path):
    score_file(StreamConfig(media[38], ref=media["ref"]), sinks=[JsonlSink(str(tmp_path))])
    ours_psnr, ours_ssim = per_frame(tmp_path, "fr.psnr_y"), per_frame(tmp_path, "fr.ssim_y")
    ff_psnr, ff_ssim = ffmpeg_fr(media[38], media["ref"])
    assert len(ours_psnr) == len(ff_psnr) == N
    assert np.abs(ours_psnr - ff_psnr).max() < 0.05
    assert np.abs(ours_ssim - ff_ssim).max() < 0.002


def test_ten_bit_agrees_with_ffmpeg(media, tmp_path):
    d = media["dir"]
    dist = encode(str(d / "ten.mp4"), panned_frames(320, 192, 12), crf=34, pix_fmt="yuv420p10le")
    ref = encode(str(d / "ten_ref.mp4"), panned_frames(320, 192, 12), crf=None, pix_fmt="yuv420p10le")
    score_file(StreamConfig(dist, ref=ref), sinks=[JsonlSink(str(tmp_path))])
    ff_psnr, ff_ssim = ffmpeg_fr(dist, ref)
    assert np.abs(per_frame(tmp_path, "fr.psnr_y") - ff_psnr).max() < 0.05
    assert np.abs(per_frame(tmp_path, "fr.ssim_y") - ff_ssim).max() < 0.002


def test_reference_of_another_size_is_scaled_to_the_distorted_size(media, tmp_path):
    """Policy: the reference is scaled (swscale bicubic) to the distorted size; FFmpeg's scale filter agrees."""
    d = media["dir"]
    dist = encode(str(d / "small.mp4"), panned_frames(320, 192, 12), crf=30)
    big_ref = encode(str(d / "ref_big.mp4"), panned_frames(640, 384, 12), crf=None)
    s = score_file(StreamConfig(dist, ref=big_ref), sinks=[JsonlSink(str(tmp_path))])
    assert s.ref_paired == 12
    ff_psnr, ff_ssim = ffmpeg_fr(dist, big_ref, ref_filter="scale=320:192:flags=bicubic")
    assert np.abs(per_frame(tmp_path, "fr.psnr_y") - ff_psnr).max() < 0.05
    assert np.abs(per_frame(tmp_path, "fr.ssim_y") - ff_ssim).max() < 0.002


def test_freeze_and_black_found_at_the_right_frames(media):
    s = score_file(StreamConfig(media["events"]))
    found = {(seg.kind, seg.first_frame, seg.last_frame) for seg in s.segments}
    # a freeze shows frame FREEZE[0]-1 from its own time until the stretch ends
    assert ("freeze", FREEZE[0] - 1, FREEZE[1] - 1) in found
    assert ("black", BLACK[0], BLACK[1] - 1) in found
    assert len(found) == 2, found
    black = next(x for x in s.segments if x.kind == "black")
    assert black.start_s == pytest.approx(BLACK[0] / FPS) and black.end_s == pytest.approx(BLACK[1] / FPS)


def test_signals_run_batched_on_torch_and_handle_flat_frames():
    flat = torch.full((2, 64, 96), 16.0)
    out = signals.compute(flat, None, full_range=False)
    assert torch.allclose(out["sig.black"], torch.ones(2))
    assert torch.allclose(out["sig.blockiness"], torch.ones(2))
    assert torch.isnan(out["sig.freeze"][0]) and out["sig.freeze"][1] == 0
    assert signals.psnr_y(flat, flat)[0] == signals.PSNR_CAP_DB
    noisy = flat + torch.randn_like(flat) * 5
    assert 0 < signals.ssim_y(noisy, flat)[0] < 1


def test_every_signal_stays_in_its_declared_range(crf_runs):
    for run in crf_runs.values():
        for m in run.metrics:
            lo, hi = signals.METRICS[m.metric].range
            assert lo <= m.min <= m.max <= hi, m


def _planes(depth: int):
    """Natural frames (the panned photo, odd size so no dimension is a multiple of 4 or 8), noise and flat frames."""
    import av

    top = (1 << depth) - 1
    fmt = "yuv420p" if depth == 8 else "yuv420p10le"
    natural = [av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format=fmt).planes[0]
               for rgb in panned_frames(318, 190, 3)]
    natural = [np.frombuffer(p, np.uint8 if depth == 8 else np.uint16).reshape(p.height, -1)[:, :317].copy()
               for p in natural]
    rng = np.random.default_rng(0)
    dtype = np.uint8 if depth == 8 else np.uint16
    noise = rng.integers(0, top + 1, natural[0].shape).astype(dtype)
    flat = np.full(natural[0].shape, 16 << (depth - 8), dtype)
    return natural + [noise, flat, flat.copy()]


@pytest.mark.parametrize("depth", [8, 10])
def test_cpu_signals_equal_the_torch_signals(depth):
    """The OpenCV path the CPU scorer runs and the torch path CUDA runs give the same numbers."""
    from monitor.scoring import signals_cpu

    planes = _planes(depth)
    y = signals.to_float_luma(torch.from_numpy(np.stack(planes).astype(np.int32)), depth)
    for full_range in (False, True):
        ref = signals.compute(y, None, full_range)
        prev = None
        for i, p in enumerate(planes):
            got = signals_cpu.compute(signals_cpu.plane(p, depth), prev, full_range)
            prev = signals_cpu.plane(p, depth)
            for metric, want in ref.items():
                w = float(want[i])
                if np.isnan(w):
                    assert np.isnan(got[metric]), (metric, i)
                else:
                    assert got[metric] == pytest.approx(w, rel=1e-4, abs=1e-6), (metric, i, depth)
    d = [signals_cpu.plane(p, depth) for p in planes]
    for a, b in [(0, 1), (1, 2), (3, 0), (4, 5), (4, 4)]:  # natural pairs, noise vs natural, flat = flat, identical
        want_psnr = float(signals.psnr_y(y[a : a + 1], y[b : b + 1])[0])
        want_ssim = float(signals.ssim_y(y[a : a + 1].double(), y[b : b + 1].double())[0])
        assert signals_cpu.psnr_y(d[a], d[b]) == pytest.approx(want_psnr, abs=1e-3), (a, b)
        tol = 1e-6 if depth == 8 else 2e-5  # 8-bit block sums are exact in float32; scaled 10-bit ones round
        assert signals_cpu.ssim_y(d[a], d[b]) == pytest.approx(want_ssim, abs=tol), (a, b)

