"""One decoded video frame as the monitor sees it: the luma plane always, RGB only when asked for."""
from __future__ import annotations

from datetime import datetime, timezone
from functools import cached_property

import av
import numpy as np

# Planar formats whose plane 0 *is* luma at the frame size: take it as is, no swscale pass.
_PACKED_OR_SHIFTED = ("yuyv", "uyvy", "yvyu", "p010", "p016", "p210", "p216", "p410", "p416", "y210", "xv")


def _has_planar_luma(fmt: av.VideoFormat) -> bool:
    name = fmt.name
    return (
        not fmt.is_rgb
        and name.startswith(("yuv", "yuvj", "gray", "nv12", "nv21", "nv16", "nv24"))
        and not name.startswith(_PACKED_OR_SHIFTED)
        and not name.endswith("be")
        and fmt.components[0].plane == 0
    )


def luma_plane(frame: av.VideoFrame) -> tuple[np.ndarray, int]:
    """Y plane of `frame` as an H×W uint8/uint16 array plus its bit depth.

    Planar YUV/gray frames are read straight from plane 0 (one memcpy); anything else (RGB,
    packed YUV, big-endian) goes through one swscale conversion to gray.
    """
    fmt = frame.format
    depth = fmt.components[0].bits
    if not _has_planar_luma(fmt):
        target = "gray" if depth <= 8 else "gray16le"
        frame = frame.reformat(format=target)
        fmt, depth = frame.format, (8 if depth <= 8 else 16)
    plane = frame.planes[0]
    dtype = np.uint8 if depth <= 8 else np.dtype("<u2")
    row = plane.line_size // np.dtype(dtype).itemsize
    buf = np.frombuffer(plane, dtype=dtype, count=row * plane.height).reshape(plane.height, row)
    return np.ascontiguousarray(buf[:, : plane.width]), depth


class Frame:
    """A decoded frame: identity and timing now, pixels on first use.

    The luma plane is extracted (and, for a reference, scaled) only when a signal or model
    reads it, so frames the sampler or the pairing skips cost no conversion.
    """

    def __init__(self, stream_id: str, index: int, pts_s: float | None, av_frame: av.VideoFrame,
                 ingest_ts: datetime | None = None, scale_to: tuple[int, int] | None = None, corrupt: bool = False):
        self.stream_id = stream_id
        self.index = index  # position among the stream's decoded frames, from 0
        self.pts_s = pts_s  # presentation time in seconds; None when the container gives none
        self.corrupt = corrupt  # the decoder flagged it corrupt: concealed damage, scored as the viewer sees it
        self.ingest_ts = ingest_ts or datetime.now(timezone.utc)
        self._av = av_frame
        self._scale_to = scale_to if scale_to and scale_to != (av_frame.width, av_frame.height) else None
        self.width, self.height = self._scale_to or (av_frame.width, av_frame.height)
        # Full-range (JPEG) levels use 0..max; video levels put black at 16 (8-bit scale).
        self.full_range = av_frame.format.name.startswith("yuvj") or av_frame.color_range == 2 or av_frame.format.is_rgb
        self.motion: float | None = None  # a paired reference's VMAF motion here, when a model reads it (align.py)

    def scaled(self, width: int, height: int) -> "Frame":
        """The same picture, to be extracted at width×height (a reference matched to a distorted frame)."""
        if (width, height) == (self.width, self.height):
            return self
        return Frame(self.stream_id, self.index, self.pts_s, self._av, self.ingest_ts, scale_to=(width, height),
                     corrupt=self.corrupt)

    def _picture(self) -> av.VideoFrame:
        return self._scaled if self._scale_to is not None else self._av

    @cached_property
    def _scaled(self) -> av.VideoFrame:
        """The reference scaled once, however many conversions (luma, RGB, YUV for libvmaf) read it."""
        w, h = self._scale_to
        return self._av.reformat(width=w, height=h, interpolation="BICUBIC")

    @cached_property
    def _luma(self) -> tuple[np.ndarray, int]:
        return luma_plane(self._picture())

    @property
    def y(self) -> np.ndarray:
        """H×W luma, uint8 or uint16 (native bit depth)."""
        return self._luma[0]

    @property
    def bit_depth(self) -> int:
        return self._luma[1]

    @cached_property
    def decoded_y(self) -> tuple[np.ndarray, int]:
        """Luma and bit depth at the decoded size, before any scaling (a reference's motion is measured there)."""
        return self._luma if self._scale_to is None else luma_plane(self._av)

    @cached_property
    def _rgb(self) -> np.ndarray:
        return self._picture().to_ndarray(format="rgb24")

    def rgb(self) -> np.ndarray:
        """H×W×3 uint8 RGB, converted once and only when a model needs it."""
        return self._rgb

    def yuv420(self, pix_fmt: str = "yuv420p") -> bytes:
        """The picture as raw planar 4:2:0 (`yuv420p` or `yuv420p10le`), rows unpadded: what FFmpeg's rawvideo reads."""
        return yuv420_bytes(self._picture(), pix_fmt)


def yuv420_bytes(frame: av.VideoFrame, pix_fmt: str = "yuv420p") -> bytes:
    """Y, U and V planes of `frame` in `pix_fmt` (converted by swscale only when it is in another format)."""
    if frame.format.name != pix_fmt:
        frame = frame.reformat(format=pix_fmt)
    size = 2 if pix_fmt.endswith(("le", "be")) else 1
    out = []
    for plane in frame.planes:
        rows = np.frombuffer(plane, dtype=np.uint8, count=plane.line_size * plane.height)
        out.append(rows.reshape(plane.height, plane.line_size)[:, : plane.width * size].tobytes())
    return b"".join(out)
