"""Pairing of distorted frames with reference frames (files: fixed offset; live drift tracking comes later).

Policy: frames pair by presentation time measured from each stream's first frame, so differing
container start times do not matter; when either stream lacks timestamps they pair by decode
index. `offset` shifts the reference by whole frames (distorted frame i ↔ reference frame
i + offset). A reference of another size is scaled to the distorted frame's size (swscale
bicubic): quality is judged at the resolution the viewer receives.
"""
from __future__ import annotations

from typing import Iterator

from monitor.frames import Frame
from monitor.sources import FileSource


class ReferencePairer:
    def __init__(self, ref: FileSource, offset: int = 0):
        self.ref = ref
        self.offset = offset
        fps = ref.info.fps or 25.0
        self._period = 1.0 / fps
        self._frames: Iterator[Frame] = iter(ref)
        self._current: Frame | None = None
        self._t0_ref: float | None = None
        self._t0_dist: float | None = None
        self._mode: str | None = None  # "pts" or "index", fixed by the first pair
        self.paired = 0
        self.unpaired = 0
        self.ref_ended_at: int | None = None  # reference frames decoded when it ran out, if it did

    def match(self, frame: Frame) -> Frame | None:
        """The reference frame for `frame` (scaled to its size), or None when there is none."""
        if self._mode is None:
            first = self._advance()
            self._mode = "pts" if first is not None and first.pts_s is not None and frame.pts_s is not None else "index"
            if first is not None and self._mode == "pts":
                self._t0_ref, self._t0_dist = first.pts_s, frame.pts_s
        if self._mode == "pts":
            if frame.pts_s is None:
                self.unpaired += 1
                return None
            target = frame.pts_s - self._t0_dist + self.offset * self._period
            key, tol = (lambda f: f.pts_s - self._t0_ref), self._period / 2
        else:
            target, key, tol = frame.index + self.offset, (lambda f: f.index), 0
        while self._current is not None and (self._current.pts_s is None and self._mode == "pts"
                                              or key(self._current) < target - tol):
            self._advance()
        cur = self._current
        if cur is None or abs(key(cur) - target) > tol:
            self.unpaired += 1
            return None
        self.paired += 1
        return cur.scaled(frame.width, frame.height)

    def _advance(self) -> Frame | None:
        self._current = next(self._frames, None)
        if self._current is None and self.ref_ended_at is None:
            self.ref_ended_at = self.ref.stats.frames_decoded
        return self._current
