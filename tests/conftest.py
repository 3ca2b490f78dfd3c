"""Test media is made here, with real encoders: a panned natural photo (scikit-image) through x264."""
from __future__ import annotations

import re
import subprocess

import numpy as np
import pytest

from monitor.samples import Segment, apply_segments, encode, panned_frames
from monitor.sinks import Sink

W, H, FPS, N = 320, 192, 25, 40
FREEZE = (8, 22)  # frames 8..21 repeat frame 7 (0.56 s: above the 0.5 s reporting floor)
BLACK = (28, 34)


class Collect(Sink):
    """A sink that keeps the records it is given, for tests that look at them."""

    def __init__(self):
        self.records = []

    def write(self, records):
        self.records += list(records)



class InterruptAfter:
    """A batch run's `on_done` that keeps the entries and interrupts (as Ctrl-C would) after the n-th."""

    def __init__(self, n: int):
        self.n, self.entries = n, []

    def __call__(self, entry: dict) -> None:
        self.entries.append(entry)
        if len(self.entries) == self.n:
            raise KeyboardInterrupt

@pytest.fixture(scope="session")
def media(tmp_path_factory):
    """Lossless reference, x264 encodes at CRF 18/28/38/48, and a CRF-23 clip with a freeze and a black stretch."""
    d = tmp_path_factory.mktemp("media")
    out = {"ref": encode(str(d / "ref.mp4"), panned_frames(W, H, N), fps=FPS, crf=None)}
    for crf in (18, 28, 38, 48):
        out[crf] = encode(str(d / f"crf{crf}.mp4"), panned_frames(W, H, N), fps=FPS, crf=crf)
    segs = [Segment(*FREEZE, "freeze"), Segment(*BLACK, "black")]
    out["events"] = encode(str(d / "events.mp4"), apply_segments(panned_frames(W, H, N), segs), fps=FPS, crf=23)
    out["dir"] = d
    return out


def ffmpeg_fr(dist: str, ref: str, ref_filter: str = "null") -> tuple[np.ndarray, np.ndarray]:
    """Per-frame PSNR-Y and SSIM-Y from FFmpeg's psnr and ssim filters (imageio-ffmpeg's static binary)."""
    import imageio_ffmpeg

    exe = imageio_ffmpeg.get_ffmpeg_exe()
    graph = (f"[0:v]null[d];[1:v]{ref_filter}[r];[d]split[d1][d2];[r]split[r1][r2];"
             "[d1][r1]psnr=stats_file=-[o1];[d2][r2]ssim=stats_file=-[o2]")
    p = subprocess.run([exe, "-v", "error", "-i", dist, "-i", ref, "-filter_complex", graph,
                        "-map", "[o1]", "-f", "null", "-", "-map", "[o2]", "-f", "null", "-"],
                       check=True, capture_output=True, text=True)
    psnr = [float(m) for m in re.findall(r"psnr_y:(\S+)", p.stdout)]
    ssim = [float(m) for m in re.findall(r"\bY:(\S+)", p.stdout)]
    return np.array(psnr), np.array(ssim)


def libvmaf_motion2(path: str) -> list[float]:
    """VMAF's motion2 of each frame of a clip, from libvmaf itself (the clip against itself)."""
    import json
    import tempfile

    import imageio_ffmpeg

    with tempfile.TemporaryDirectory() as tmp:
        log = f"{tmp}/vmaf.json"
        subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-i", path, "-i", path,
                        "-lavfi", f"libvmaf=log_fmt=json:log_path={log}", "-f", "null", "-"], check=True)
        with open(log) as f:
            return [fr["metrics"]["integer_motion2"] for fr in json.load(f)["frames"]]
