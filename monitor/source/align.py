"""Pairing of distorted frames with reference frames: a fixed offset for files, or an automatic aligner.

ReferencePairer (files, offset known): frames pair by presentation time measured from each
stream's first frame, so differing container start times do not matter; when either stream
lacks timestamps they pair by decode index. `offset` shifts the reference by whole frames
(distorted frame i ↔ reference frame i + offset).

Aligner (file or live reference, offset unknown and drifting): finds the offset by comparing
cheap luma fingerprints over a short run of frames, keeps checking the pairing frame by frame,
and re-locks when frames are dropped, repeated or added; while unsure it pairs nothing, so only
no-reference metrics are scored (a misaligned pair would read as bad quality).

Both scale a reference of another size to the distorted frame's size (swscale bicubic): quality
is judged at the resolution the viewer receives. With `motion=True` both also measure the
reference's VMAF motion at each paired frame (ReferenceMotion), which GSN-lite reads.
"""
from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from monitor.records import StreamEvent
from monitor.scoring import signals_cpu
from monitor.scoring.signals import to_float_luma
from monitor.source.frames import Frame
from monitor.source.sources import FileSource


@dataclass(frozen=True)
class Match:
    """What both pairers return for a distorted frame: its reference, and for the aligner how it was found."""

    reference: Frame  # scaled to the distorted frame's size
    offset: int  # reference index − distorted index
    confidence: float | None = None  # the aligner's: 0–1, how clearly the offset beat the runner-up when it locked

    @property
    def alignment(self) -> dict | None:
        """What FR records of an automatically aligned pair carry in `extras`; None for a fixed pairing."""
        if self.confidence is None:
            return None
        return {"align_offset": self.offset, "align_confidence": round(self.confidence, 4)}


class ReferenceMotion:
    """VMAF's motion feature of a reference frame (libvmaf `motion2`): the mean absolute difference of its
    blurred luma from the previous frame's, or from the next frame's when that is smaller (a cut then
    does not count as motion); 0 for the first frame, which has no previous one. Measured at the
    reference's decoded size, as VMAF measured it when GSN-lite learned from it.

    Why: VMAF forgives more loss on moving content, so a model that learned VMAF from frame pairs
    alone cannot tell a pan from a still; given this it can. Blurred planes of the last few frames
    are kept, so consecutive paired frames blur each reference frame once.
    """

    KEEP = 4

    def __init__(self):
        self._blurred: OrderedDict[int, np.ndarray] = OrderedDict()  # reference index → blurred luma

    def __call__(self, prev: Frame | None, cur: Frame, nxt: Frame | None) -> float:
        if prev is None:
            return 0.0
        here = self._blur(cur)
        motion = signals_cpu.motion_sad(self._blur(prev), here)
        if nxt is not None:
            motion = min(motion, signals_cpu.motion_sad(here, self._blur(nxt)))
        return motion

    def _blur(self, frame: Frame) -> np.ndarray:
        if frame.index not in self._blurred:
            self._blurred[frame.index] = signals_cpu.motion_blur(signals_cpu.plane(*frame.decoded_y))
            while len(self._blurred) > self.KEEP:
                self._blurred.popitem(last=False)
        return self._blurred[frame.index]


def _with_neighbours(frames: Iterator[Frame]) -> Iterator[tuple[Frame | None, Frame, Frame | None]]:
    """(previous, frame, next) for each frame: the next is decoded one frame early."""
    prev, cur = None, next(frames, None)
    while cur is not None:
        nxt = next(frames, None)
        yield prev, cur, nxt
        prev, cur = cur, nxt


class ReferencePairer:
    def __init__(self, ref: FileSource, offset: int = 0, motion: bool = False):
        self.ref = ref
        self.offset = offset
        fps = ref.info.fps or 25.0
        self._period = 1.0 / fps
        self._frames = _with_neighbours(iter(ref))
        self._neighbours: tuple[Frame | None, Frame | None] = (None, None)  # the current frame's previous and next
        self._current: Frame | None = None
        self._motion = ReferenceMotion() if motion else None
        self._t0_ref: float | None = None
        self._t0_dist: float | None = None
        self._mode: str | None = None  # "pts" or "index", fixed by the first pair
        self.paired = 0
        self.unpaired = 0
        self.ref_ended_at: int | None = None  # reference frames decoded when it ran out, if it did

    def match(self, frame: Frame) -> Match | None:
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
        reference = cur.scaled(frame.width, frame.height)
        if self._motion is not None:
            reference.motion = self._motion(self._neighbours[0], cur, self._neighbours[1])
        return Match(reference, self.offset)

    def _advance(self) -> Frame | None:
        prev, self._current, nxt = next(self._frames, (None, None, None))
        self._neighbours = (prev, nxt)
        if self._current is None and self.ref_ended_at is None:
            self.ref_ended_at = self.ref.stats.frames_decoded
        return self._current


FINGERPRINT_SIZE = (64, 36)  # width, height: small enough that codec noise averages out
FLAT_STD = 2.0  # 8-bit units: a flatter frame (black, a slate) keeps a near-zero fingerprint instead of amplified noise
MIN_FRAMES = 3  # never lock on fewer distorted frames than this
DRIFT_RATIO = 0.5  # a pairing is off when another offset fits at least twice as well ...
DRIFT_MARGIN = 0.005  # ... and better by this much distance (so codec noise on still content is no drift)
MATCH_DISTANCE = 0.25  # fingerprint distance (1 − correlation) above which a pairing means nothing
CONFIDENCE_EPS = 0.005  # keeps the best/runner-up ratio meaningful when the best pairing is exact


def fingerprint(frame: Frame) -> np.ndarray:
    """Luma area-averaged to 64×36, mean/std-normalised: blind to codec noise, scaling, level and contrast shifts."""
    y = to_float_luma(torch.from_numpy(frame.y.astype(np.float32)), frame.bit_depth)
    small = F.adaptive_avg_pool2d(y[None, None], FINGERPRINT_SIZE[::-1]).ravel().numpy()
    small -= small.mean()
    return small / max(float(small.std()), FLAT_STD)


def _distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise fingerprint distances, mean squared difference / 2 (= 1 − correlation for unit-std prints)."""
    sq = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * (a @ b.T)
    return np.maximum(sq, 0.0) / (2.0 * a.shape[1])


class Aligner:
    """Finds and follows the offset between a distorted stream and its reference (a file or a live stream).

    Offsets are in frames (reference index − distorted index), so both streams must have the
    same frame rate; distorted frames may be sampled (indices with gaps). The first search looks
    at offsets within ±`search` of `offset`, later ones within ±`search` of the last lock.

    Locking: over the last `window` distorted frames (at least MIN_FRAMES), every candidate
    offset gets the mean fingerprint distance of its pairs; the best locks when its confidence
    (1 − best/runner-up, scaled down as the best distance nears MATCH_DISTANCE) reaches
    `min_confidence` and every frame of the run fits it. Still or repeated content fits many
    offsets about equally well, so it never locks.

    Tracking: each frame is compared with its pair and with the neighbouring offsets. If another
    offset fits clearly better, frames were dropped, repeated or added: the pair is withheld,
    `alignment_lost` is emitted and a new search runs from this frame on. If the pair got worse
    but nothing fits better (blur, blocking, a black frame), that is the picture, and it stays
    paired so FR metrics show it.

    Reference frames are read ahead up to `search` frames past the current pair and kept back to
    `search` frames before the oldest frame of the run, so memory is flat however long the stream
    runs: about 2·search + window decoded frames with their luma (window × the sampling step when
    distorted frames are sampled). A live reference must therefore run at least `search` frames
    ahead of the distorted stream, or `match` waits for it.
    """

    def __init__(self, reference_frames: Iterable[Frame], search: int = 50, window: int = 8, offset: int = 0,
                 min_confidence: float = 0.5, on_event: Callable[[StreamEvent], None] | None = None,
                 motion: bool = False):
        if search < 1 or window < MIN_FRAMES:
            raise ValueError(f"search must be ≥ 1 and window ≥ {MIN_FRAMES} (got {search}, {window})")
        self.search, self.min_confidence, self.on_event = search, min_confidence, on_event
        self.offset = offset  # the locked offset, or the centre of the next search while lost
        self.confidence = 0.0
        self.state = "lost"  # "aligned" | "lost"
        self.paired = 0
        self.unpaired = 0
        self.ref_ended_at: int | None = None  # reference frames read when it ran out, if it did
        self._refs: Iterator[Frame] = iter(reference_frames)
        self._buffer: OrderedDict[int, tuple[Frame, np.ndarray]] = OrderedDict()  # reference index → frame, fingerprint (ascending)
        self._next_ref = 0  # reference indices below this have been read
        self._run: deque[tuple[int, np.ndarray]] = deque(maxlen=window)  # distorted (index, fingerprint) since lost
        self._motion = ReferenceMotion() if motion else None

    @property
    def buffered(self) -> int:
        """Reference frames held (bounded: see the class docstring)."""
        return len(self._buffer)

    def match(self, frame: Frame) -> Match | None:
        """The reference pair for `frame`, or None while alignment is lost (or the reference has no such frame)."""
        fp = fingerprint(frame)
        if self.state == "aligned":
            m = self._track(frame, fp)
        else:
            m = self._search(frame, fp)
        if m is None:
            self.unpaired += 1
        else:
            self.paired += 1
        return m

    def _track(self, frame: Frame, fp: np.ndarray) -> Match | None:
        _, table = self._table([frame.index], fp[None], frame.index)
        at = self.search  # column of the current offset
        if np.isnan(table[0, at]) or not _fits(table[0], at):
            reason = "no reference frame" if np.isnan(table[0, at]) else "drift"
            self._lose(frame, reason)
            self._run.append((frame.index, fp))
            return None
        return self._pair(frame)

    def _search(self, frame: Frame, fp: np.ndarray) -> Match | None:
        self._run.append((frame.index, fp))
        if len(self._run) < MIN_FRAMES:
            return None
        indices = [i for i, _ in self._run]
        offsets, table = self._table(indices, np.stack([p for _, p in self._run]), indices[0])
        for first in range(len(indices) - MIN_FRAMES + 1):  # the whole run first, then without its oldest frames
            found = self._best_offset(table[first:])
            if found is not None:
                col, self.confidence = found
                self.offset, self.state = int(offsets[col]), "aligned"
                self._run.clear()
                self._emit(frame, "alignment_gained")
                return self._pair(frame)
        return None

    def _best_offset(self, table: np.ndarray) -> tuple[int, float] | None:
        """The column of the offset that a run of frames (rows) fits clearly best, and its confidence; None if none does.

        Costs are means over the frames that have a reference at each offset; an offset needs
        MIN_FRAMES of them, the newest frame among them (a reference's start or end leaves some
        frames without one). Frames older than a change of timing (a freeze that just ended) do
        not fit the new offset; the caller then retries without them.
        """
        has_ref = ~np.isnan(table)
        counts = has_ref.sum(axis=0)
        cost = np.where(has_ref, table, 0.0).sum(axis=0) / np.maximum(counts, 1)
        cost[(counts < MIN_FRAMES) | ~has_ref[-1]] = np.nan
        if np.isnan(cost).all():
            return None
        best = int(np.nanargmin(cost))
        rest = np.delete(cost, best)
        runner_up = float(np.nanmin(rest)) if not np.isnan(rest).all() else float("nan")
        confidence = _confidence(float(cost[best]), runner_up)
        if confidence < self.min_confidence or not all(_fits(row, best) for row in table):
            return None
        return best, confidence

    def _pair(self, frame: Frame) -> Match:
        at = frame.index + self.offset
        ref = self._buffer[at][0]
        reference = ref.scaled(frame.width, frame.height)
        if self._motion is not None:
            prev, nxt = (self._buffer.get(at + d, (None,))[0] for d in (-1, 1))
            reference.motion = self._motion(prev, ref, nxt)
        return Match(reference, self.offset, self.confidence)

    def _lose(self, frame: Frame, reason: str) -> None:
        self.state = "lost"
        self._emit(frame, "alignment_lost", reason=reason)
        self.confidence = 0.0

    def _emit(self, frame: Frame, event: str, **detail) -> None:
        if self.on_event is not None:
            self.on_event(StreamEvent(frame.stream_id, event, detail={
                "offset": self.offset, "confidence": round(self.confidence, 4), "frame_index": frame.index,
                "pts_s": frame.pts_s, **detail}))

    def _table(self, indices: list[int], prints: np.ndarray, oldest: int) -> tuple[np.ndarray, np.ndarray]:
        """Candidate offsets (±search around self.offset) and each distorted frame's distance at each (NaN: no reference)."""
        offsets = np.arange(self.offset - self.search, self.offset + self.search + 1)
        lo, hi = oldest + offsets[0], indices[-1] + offsets[-1]
        self._read_reference(up_to=hi, keep_from=lo)
        refs = np.full((hi - lo + 1, prints.shape[1]), np.nan, dtype=np.float32)
        for i in range(lo, hi + 1):
            if i in self._buffer:
                refs[i - lo] = self._buffer[i][1]
        dist = _distances(prints, refs)
        cols = np.asarray(indices)[:, None] + offsets[None, :] - lo
        return offsets, dist[np.arange(len(indices))[:, None], cols]

    def _read_reference(self, up_to: int, keep_from: int) -> None:
        while self._buffer and next(iter(self._buffer)) < keep_from:
            self._buffer.popitem(last=False)
        while self._next_ref <= up_to and self.ref_ended_at is None:
            ref = next(self._refs, None)
            if ref is None:
                self.ref_ended_at = self._next_ref
                break
            self._next_ref = ref.index + 1
            if ref.index >= keep_from:
                self._buffer[ref.index] = (ref, fingerprint(ref))


def _fits(row: np.ndarray, at: int) -> bool:
    """Whether offset column `at` is as good as any other for this frame (no other fits clearly better).

    A frame with no reference at `at` (NaN) says nothing against it.
    """
    others = np.delete(row, at)
    if np.isnan(others).all():
        return True
    alt = float(np.nanmin(others))
    return not (alt < row[at] * DRIFT_RATIO and row[at] - alt > DRIFT_MARGIN)


def _confidence(best: float, runner_up: float) -> float:
    if np.isnan(runner_up):
        return 0.0  # a single candidate: nothing to compare it with
    margin = 1.0 - (best + CONFIDENCE_EPS) / (runner_up + CONFIDENCE_EPS)
    return float(np.clip(margin * (1.0 - best / MATCH_DISTANCE), 0.0, 1.0))
