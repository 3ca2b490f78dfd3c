"""Synthetic test and demo clips: a natural photo panned across the frame, encoded with real codecs.

Used by `vqmon sample`, the tests and the benchmarks, so that nothing needs media from outside
the installed packages (the photos ship with scikit-image).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterable, Iterator

import av
import numpy as np


def _photo(name: str) -> np.ndarray:
    import skimage.data

    return getattr(skimage.data, name)()


def panned_frames(width: int, height: int, count: int, photo: str = "astronaut", step: int = 3) -> Iterator[np.ndarray]:
    """`count` RGB frames (H×W×3 uint8): a window sliding diagonally over the photo, bouncing at the edges."""
    img = _photo(photo)
    scale = 1.3 * max(width / img.shape[1], height / img.shape[0])
    big_w, big_h = int(img.shape[1] * scale) // 2 * 2, int(img.shape[0] * scale) // 2 * 2
    big = av.VideoFrame.from_ndarray(img, format="rgb24").reformat(width=big_w, height=big_h, interpolation="BICUBIC")
    big = big.to_ndarray(format="rgb24")
    span_x, span_y = big_w - width, big_h - height
    for i in range(count):
        x = _bounce(i * step, span_x)
        y = _bounce(i * step * span_y // max(span_x, 1), span_y)
        yield np.ascontiguousarray(big[y : y + height, x : x + width])


MOSAIC_PHOTOS = ("astronaut", "coffee", "rocket", "stereo_motorcycle", "hubble_deep_field", "retina",
                 "immunohistochemistry", "camera", "grass", "gravel", "brick", "moon")


def native_1080p() -> np.ndarray:
    """A 1920×1080 RGB picture as sharp per pixel as a native 1080p frame: the 12 largest scikit-image photos,
    each area-downscaled (never upscaled) and centre-cropped into a 480×360 tile of a 4×3 mosaic.

    Why: no photo in the installed packages has 1080p pixels, and an upscaled one is soft at 1080p,
    so it cannot show whether a score depends on the resolution (tests/test_calibration.py).
    """
    tile_h, tile_w = 360, 480
    out = np.empty((3 * tile_h, 4 * tile_w, 3), np.uint8)
    for k, name in enumerate(MOSAIC_PHOTOS):
        img = _photo(name)
        img = img[0] if name == "stereo_motorcycle" else img  # (left, right, disparity)
        img = img[200:1211, 200:1211] if name == "retina" else img  # the fundus, without the black surround
        img = np.repeat(img[..., None], 3, axis=2) if img.ndim == 2 else img[..., :3]
        scale = max(tile_h / img.shape[0], tile_w / img.shape[1])
        h, w = round(img.shape[0] * scale), round(img.shape[1] * scale)
        small = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24").reformat(
            width=w, height=h, interpolation="AREA").to_ndarray(format="rgb24")
        top, left = (h - tile_h) // 2, (w - tile_w) // 2
        r, c = divmod(k, 4)
        out[r * tile_h:(r + 1) * tile_h, c * tile_w:(c + 1) * tile_w] = small[top:top + tile_h, left:left + tile_w]
    return out


def resolution_rungs(sizes: Iterable[tuple[int, int]], crfs: Iterable[int]) -> dict[int, tuple[np.ndarray, list[np.ndarray]]]:
    """The same picture at several resolutions, each pristine and through x264 at each CRF (decoded RGB):
    height → (pristine, encodes). Each size is an area downscale of `native_1080p`, so every rung
    is sharp per pixel, as a ladder's rungs are before they are encoded."""
    import tempfile

    big = av.VideoFrame.from_ndarray(native_1080p(), format="rgb24")
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for w, h in sizes:
            pristine = big.reformat(width=w, height=h, interpolation="AREA").to_ndarray(format="rgb24")
            encodes = []
            for crf in crfs:
                with av.open(encode(os.path.join(tmp, f"{h}p-{crf}.mp4"), [pristine], crf=crf)) as c:
                    encodes.append(next(c.decode(video=0)).to_ndarray(format="rgb24"))
            out[h] = (pristine, encodes)
    return out


def _bounce(t: int, span: int) -> int:
    if span <= 0:
        return 0
    t %= 2 * span
    return t if t <= span else 2 * span - t


def encode(path: str, frames: Iterable[np.ndarray], fps: int = 25, codec: str = "libx264", crf: float | None = 23,
           pix_fmt: str = "yuv420p", options: dict | None = None, container_options: dict | None = None) -> str:
    """Encode RGB frames to `path` (container from the extension). crf=None with libx264 means lossless (qp 0)."""
    opts = dict(options or {})
    if codec in ("libx264", "libx265", "libvpx-vp9", "libsvtav1"):
        if crf is None:
            opts.setdefault("qp" if codec != "libvpx-vp9" else "lossless", "0" if codec != "libvpx-vp9" else "1")
        else:
            opts.setdefault("crf", str(crf))
    if codec == "libx265":
        opts.setdefault("x265-params", "log-level=error")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with av.open(path, mode="w", options=container_options or {}) as out:
        stream = out.add_stream(codec, rate=fps, options=opts)
        stream.pix_fmt = pix_fmt
        first = True
        for rgb in frames:
            if first:
                stream.height, stream.width = rgb.shape[:2]
                first = False
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


@dataclass(frozen=True)
class Segment:
    """A frame range [start, stop) and what happens to it."""

    start: int
    stop: int
    kind: str  # "freeze" (repeat the frame before start), "black", or "soft" (4× down-up scaling)


def apply_segments(frames: Iterable[np.ndarray], segments: list[Segment]) -> Iterator[np.ndarray]:
    last = None
    for i, rgb in enumerate(frames):
        seg = next((s for s in segments if s.start <= i < s.stop), None)
        if seg is None:
            last = rgb
        elif seg.kind == "freeze":
            rgb = last if last is not None else rgb
        elif seg.kind == "black":
            rgb = np.zeros_like(rgb)
        elif seg.kind == "soft":
            h, w = rgb.shape[:2]
            small = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(width=w // 4, height=h // 4)
            rgb = small.reformat(width=w, height=h, interpolation="BILINEAR").to_ndarray(format="rgb24")
        else:
            raise ValueError(f"unknown segment kind {seg.kind!r}")
        yield rgb


def make_sample(out_dir: str, width: int = 640, height: int = 360, fps: int = 25, seconds: int = 8) -> dict[str, str]:
    """The demo pair: a lossless reference and a CRF-28 distorted copy with a soft, a frozen and a black stretch."""
    n = fps * seconds
    segments = [Segment(2 * fps, 3 * fps, "soft"), Segment(4 * fps, 5 * fps, "freeze"), Segment(6 * fps, 6 * fps + fps // 2, "black")]
    ref = encode(os.path.join(out_dir, "reference.mp4"), panned_frames(width, height, n), fps=fps, crf=None)
    dist = encode(os.path.join(out_dir, "distorted.mp4"), apply_segments(panned_frames(width, height, n), segments),
                  fps=fps, crf=28)
    return {"reference": ref, "distorted": dist}
