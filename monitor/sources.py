"""PyAV sources: open a file (anything FFmpeg reads), decode its video with frame threading, yield Frames.

Damage inside a file is survivable: a packet that fails to demux or decode, or a frame the
decoder flags corrupt, is counted in `stats` and skipped. Only a file that cannot be opened at
all, or has no video stream, is an error (InputError, one line naming the file).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from fractions import Fraction
from typing import Iterator

import av

from monitor.errors import InputError
from monitor.frames import Frame


@dataclass
class SourceStats:
    frames_decoded: int = 0
    decode_errors: int = 0  # packets that failed to demux/decode plus frames flagged corrupt
    last_error: str = ""


@dataclass(frozen=True)
class StreamInfo:
    codec: str
    pix_fmt: str
    width: int
    height: int
    fps: float | None
    duration_s: float | None
    frames_estimate: int | None  # container's frame count, or duration × fps; None when unknown


class FileSource:
    """Decodes the first video stream of `path`. `scale_to=(w, h)` resizes frames on extraction (references)."""

    def __init__(self, path: str, stream_id: str | None = None, scale_to: tuple[int, int] | None = None):
        self.path = str(path)
        self.stream_id = stream_id or os.path.splitext(os.path.basename(self.path))[0]
        self.scale_to = scale_to
        self.stats = SourceStats()
        self._container, self._stream = self._open()
        self.info = self._describe()

    def _open(self):
        if not os.path.exists(self.path):
            raise InputError(f"{self.path}: no such file")
        if os.path.isdir(self.path):
            raise InputError(f"{self.path}: is a directory, not a media file")
        try:
            container = av.open(self.path, metadata_errors="ignore")
        except av.error.FFmpegError as e:
            raise InputError(f"{self.path}: FFmpeg cannot open it ({_reason(e)}): not media, or truncated before its index") from None
        if not container.streams.video:
            kinds = sorted({s.type for s in container.streams}) or ["no streams"]
            container.close()
            raise InputError(f"{self.path}: no video stream (has {', '.join(kinds)})")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"  # frame + slice threading: the decoder is the cost floor
        return container, stream

    def _describe(self) -> StreamInfo:
        s, cc = self._stream, self._stream.codec_context
        rate = s.average_rate or s.guessed_rate
        fps = float(rate) if rate else None
        duration = None
        if s.duration is not None and s.time_base is not None:
            duration = float(s.duration * s.time_base)
        elif self._container.duration:
            duration = self._container.duration / av.time_base
        frames = s.frames or (round(duration * fps) if duration and fps else None)
        return StreamInfo(cc.name, cc.pix_fmt or "?", cc.width, cc.height, fps, duration, frames)

    def __iter__(self) -> Iterator[Frame]:
        """Every decoded frame in presentation order; damaged packets/frames are counted and skipped."""
        index = 0
        for packet in self._packets():
            if packet is not None and packet.is_corrupt:
                self._count_error("demuxer flagged a corrupt packet")
            try:
                decoded = self._stream.decode(packet)
            except av.error.FFmpegError as e:
                self._count_error(e)
                continue
            for av_frame in decoded:
                if av_frame.is_corrupt:
                    self._count_error("decoder flagged a corrupt frame")
                    continue
                self.stats.frames_decoded += 1
                yield Frame(self.stream_id, index, _seconds(av_frame.pts, av_frame.time_base), av_frame,
                            scale_to=self.scale_to)
                index += 1
        declared = self._stream.frames  # exact for MP4/MOV; 0 when the container does not say
        if declared and self.stats.frames_decoded < declared:
            self._count_error(f"stream ended after {self.stats.frames_decoded} of {declared} frames (truncated file?)")

    def _packets(self):
        demux = self._container.demux(self._stream)
        while True:
            try:
                packet = next(demux)
            except StopIteration:
                return
            except av.error.FFmpegError as e:  # truncated/corrupt container: keep what decoded so far
                self._count_error(e)
                yield None  # drain the decoder's delayed frames
                return
            yield packet

    def _count_error(self, err) -> None:
        self.stats.decode_errors += 1
        self.stats.last_error = _reason(err) if isinstance(err, Exception) else str(err)

    def close(self) -> None:
        self._container.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _seconds(pts: int | None, time_base: Fraction | None) -> float | None:
    if pts is None or time_base is None:
        return None
    return float(pts * time_base)


def _reason(err: Exception) -> str:
    """FFmpeg's message without the file name PyAV appends (callers name the file themselves)."""
    return getattr(err, "strerror", None) or str(err)
