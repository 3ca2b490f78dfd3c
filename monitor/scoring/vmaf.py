"""VMAF (`fr.vmaf`) from libvmaf in the FFmpeg binary of imageio-ffmpeg, on vqmon's own decoded and paired frames.

PyAV's FFmpeg has no libvmaf, the static binary of `imageio-ffmpeg` has (with the built-in
models). vqmon decodes, pairs, scales and samples as for every other metric, then streams the
pairs as raw YUV 4:2:0 (yuv420p, or yuv420p10le above 8 bits) into `ffmpeg -lavfi libvmaf`
through two pipes: the distorted frames on stdin, the references on an extra descriptor
(`pipe:N`). Each pipe has its own writer thread, so FFmpeg waiting on one input never stalls the
other. Per-frame values are read back from libvmaf's JSON log.

libvmaf reports only when its run ends, and the motion feature of frame i uses frames i−1 and
i+1 (motion2 = min of the motion to the previous frame and of the next frame's). So a stream is
scored in chunks of consecutive pairs (`chunk_s` of media time), each one libvmaf process fed as
the frames arrive (memory stays bounded), overlapping its neighbours by one frame on each side:
a chunk is first fed the previous chunk's last pair, and its own last pair waits for the next
pair, which is fed to it as a look-ahead before it closes. Results of the two overlap frames are
dropped, so every value equals one run over the whole sequence (tests/test_vmaf.py). A chunk
also closes without a look-ahead at a size change, when no pair arrived for `chunk_s` (a lost
or ended reference) and at the end of the stream. libvmaf sees the sequence of *paired sampled*
frames: with `--sample`, motion is measured between consecutive sampled frames.

`ChunkedVmaf` delivers, in frame order and on its own thread, one list per chunk of
(stream_id, media time, FrameScore or None) for every frame pushed (None: unsampled or no
reference, so windows can count what they saw); the pipeline turns them into windows and alerts.
"""
from __future__ import annotations

import hashlib
import json
import os
import queue
import re
import shutil
import subprocess
import tempfile
import threading
from dataclasses import dataclass
from typing import Callable, Iterable

import av
import numpy as np
import torch

from monitor.errors import InputError
from monitor.records import FrameScore
from monitor.scoring.signals import MetricInfo
from monitor.source.frames import Frame, yuv420_bytes

BUILT_IN = ("vmaf_v0.6.1", "vmaf_v0.6.1neg", "vmaf_4k_v0.6.1")  # the usual ones; any libvmaf built-in name works
LIVE_CHUNK_S = 2.0  # watch: results arrive about this long (plus libvmaf's time) after their frame
FILE_CHUNK_S = 10.0  # score/batch: 2 overlap frames and a process start per 10 s cost < 1 %

METRIC = MetricInfo("fr.vmaf", "FR", "VMAF", (0.0, 100.0), True,
                    "VMAF (libvmaf) vs reference; score = value clamped to 0–100",
                    to_score=lambda v: torch.clamp(v, 0.0, 100.0))
_VERSION_NAME = re.compile(r"[A-Za-z0-9_.\-]+")


@dataclass(frozen=True)
class VmafOptions:
    """`model`: a libvmaf built-in version name (BUILT_IN) or a model JSON file; `threads`: libvmaf's n_threads."""

    model: str = BUILT_IN[0]
    threads: int = 2
    chunk_s: float = LIVE_CHUNK_S

    @property
    def exe(self) -> str:
        """imageio-ffmpeg's binary (its IMAGEIO_FFMPEG_EXE variable names another one)."""
        import imageio_ffmpeg

        return imageio_ffmpeg.get_ffmpeg_exe()

    @property
    def is_file(self) -> bool:
        """A path (has a separator, ends in .json, or names an existing file) rather than a built-in version name."""
        return "/" in self.model or os.sep in self.model or self.model.endswith(".json") or os.path.isfile(self.model)

    @property
    def tag(self) -> str:
        """The records' `model`: vmaf/<version>, or vmaf/<file stem>@<sha256 prefix> for a model file."""
        if not self.is_file:
            return f"vmaf/{self.model}"
        with open(self.model, "rb") as f:
            digest = hashlib.sha256(f.read()).hexdigest()
        return f"vmaf/{os.path.splitext(os.path.basename(self.model))[0]}@{digest[:12]}"

    def model_arg(self, workdir: str) -> str:
        """libvmaf's `model` option; a model file is copied into the process's working folder, so no path needs
        FFmpeg's filter-graph escaping."""
        if not self.is_file:
            return f"version={self.model}"
        shutil.copyfile(self.model, os.path.join(workdir, "model.json"))
        return "path=model.json"


class VmafError(RuntimeError):
    """A libvmaf run failed (the message ends with FFmpeg's last error line)."""


def check(opts: VmafOptions) -> None:
    """Fail before scoring, in one line naming the binary or model, if the binary lacks libvmaf or the model is unknown."""
    where = f"VMAF model {opts.model!r}"
    if opts.threads < 1:
        raise InputError(f"VMAF threads {opts.threads}: must be at least 1")
    if opts.is_file:
        if not os.path.isfile(opts.model):
            raise InputError(f"{where}: no such model file")
    elif not _VERSION_NAME.fullmatch(opts.model):
        raise InputError(f"{where}: not a libvmaf model name (e.g. {', '.join(BUILT_IN)}) nor a .json file path")
    try:
        p = VmafProcess(opts, 64, 64, "yuv420p")
    except OSError as e:
        raise InputError(f"{opts.exe}: cannot run FFmpeg: {e.strerror or e}") from None
    blank = bytes(64 * 64 * 3 // 2)
    p.feed(blank, blank)
    p.close()
    try:
        p.result()
    except VmafError as e:
        text = str(e)
        if "No such filter" in text or "Filter not found" in text:
            raise InputError(f"{opts.exe}: this FFmpeg has no libvmaf filter (use imageio-ffmpeg's binary, "
                             "or one built with --enable-libvmaf)") from None
        if "could not load libvmaf model" in text or "could not read model" in text:
            why = "not a libvmaf model file" if opts.is_file else f"no such built-in model; e.g. {', '.join(BUILT_IN)}"
            raise InputError(f"{where}: libvmaf in {opts.exe} cannot load it ({why})") from None
        raise InputError(f"{where}: libvmaf test run failed: {text}") from None


class _Writer(threading.Thread):
    """Writes queued frames into one input pipe. After a write fails (FFmpeg gone) it keeps taking frames and drops
    them, so whoever feeds it never blocks on a dead process."""

    def __init__(self, pipe, depth: int):
        super().__init__(daemon=True, name="vmaf-pipe")
        self.pipe, self.queue, self.error = pipe, queue.Queue(maxsize=depth), None
        self.start()

    def run(self) -> None:
        while (data := self.queue.get()) is not None:
            if self.error is None:
                try:
                    self.pipe.write(data)
                except OSError as e:
                    self.error = e
        try:
            self.pipe.close()
        except OSError:
            pass


class VmafProcess:
    """One libvmaf run over pairs of raw frames of one size and format, fed while it runs: feed(), close(), result()."""

    def __init__(self, opts: VmafOptions, width: int, height: int, pix_fmt: str, depth: int = 4):
        self.dir = tempfile.mkdtemp(prefix="vqmon-vmaf-")
        self.frames = 0
        try:
            model = opts.model_arg(self.dir)
            raw = ["-f", "rawvideo", "-pix_fmt", pix_fmt, "-video_size", f"{width}x{height}", "-framerate", "25"]
            r, w = os.pipe()
            cmd = [opts.exe, "-hide_banner", "-loglevel", "error", *raw, "-i", "pipe:0", *raw, "-i", f"pipe:{r}",
                   "-lavfi", f"[0:v][1:v]libvmaf=model={model}:n_threads={opts.threads}"
                             ":log_fmt=json:log_path=log.json", "-f", "null", "-"]
            try:
                with open(os.path.join(self.dir, "stderr.txt"), "wb") as err:
                    self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=err,
                                                 pass_fds=(r,), cwd=self.dir)
            except OSError:
                os.close(w)
                raise
            finally:
                os.close(r)
        except BaseException:
            shutil.rmtree(self.dir, ignore_errors=True)
            raise
        self._writers = (_Writer(self.proc.stdin, depth), _Writer(os.fdopen(w, "wb"), depth))

    def feed(self, dist: bytes, ref: bytes) -> None:
        """Queue one pair (blocks while both pipes are `depth` frames behind: libvmaf sets the pace)."""
        self._writers[0].queue.put(dist)
        self._writers[1].queue.put(ref)
        self.frames += 1

    def close(self) -> None:
        """No more pairs: the pipes close once their queues are written."""
        for w in self._writers:
            w.queue.put(None)

    def result(self) -> np.ndarray:
        """Wait for the run (close() first) and return one VMAF value per pair fed; VmafError if it failed."""
        try:
            for w in self._writers:
                w.join()
            code = self.proc.wait()
            with open(os.path.join(self.dir, "stderr.txt"), encoding="utf-8", errors="replace") as f:
                lines = [ln.strip() for ln in f if ln.strip()]
            if code:
                raise VmafError(f"libvmaf exited with {code}: {' | '.join(lines[-3:]) or 'no message'}")
            try:
                with open(os.path.join(self.dir, "log.json"), encoding="utf-8") as f:
                    frames = json.load(f)["frames"]
                values = np.array([fr["metrics"]["vmaf"] for fr in frames], dtype=np.float64)
            except (OSError, ValueError, KeyError) as e:
                raise VmafError(f"libvmaf wrote no readable log ({e})") from None
            if len(values) != self.frames:
                raise VmafError(f"libvmaf scored {len(values)} of {self.frames} frames")
            return values
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

    def kill(self) -> None:
        """Stop the run from another thread; its writers drop what they are still fed until close(), result() raises."""
        self.proc.kill()

    def abort(self) -> None:
        """Stop the run and clean up (the feeding thread, on an error of its own)."""
        self.kill()
        self.close()
        try:
            self.result()
        except VmafError:
            pass


def still_scores(pairs: Iterable[tuple[np.ndarray, np.ndarray]], opts: VmafOptions = VmafOptions()) -> np.ndarray:
    """VMAF of still pictures: (distorted, reference) H×W×3 uint8 RGB pairs, all of one size, in one libvmaf run.

    Each pair is fed twice and the repeat's value kept: its motion term (against an identical
    picture) is 0, as for a still, whatever picture came before.
    """
    proc = None
    try:
        for dist, ref in pairs:
            planes = [yuv420_bytes(av.VideoFrame.from_ndarray(np.ascontiguousarray(x), format="rgb24"))
                      for x in (dist, ref)]
            if proc is None:
                proc = VmafProcess(opts, dist.shape[1], dist.shape[0], "yuv420p")
            proc.feed(*planes)
            proc.feed(*planes)
        if proc is None:
            return np.empty(0)
        proc.close()
        return proc.result()[1::2]
    except BaseException:
        if proc is not None:
            proc.abort()
        raise


@dataclass
class _Pending:
    """A frame pushed into a chunk: the record it becomes (value filled in later), None for a frame without a pair."""

    stream_id: str
    t: float
    record: FrameScore | None = None


class _Chunk:
    def __init__(self, t: float):
        self.entries: list[_Pending] = []
        self.t0 = t
        self.last_pair_t = t
        self.key = None  # (width, height, pix_fmt) of its pairs
        self.proc: VmafProcess | None = None
        self.lookback = False  # position 0 repeats the previous chunk's last pair (result dropped)
        self.lookahead = False  # the last position is the next chunk's first pair (result dropped)


def _pix_fmt(frame: Frame) -> str:
    return "yuv420p10le" if frame.bit_depth > 8 else "yuv420p"


class ChunkedVmaf:
    """fr.vmaf on a stream of (frame, reference) pairs, in overlapping libvmaf chunks (module docstring).

    `push()` every decoded frame in order (ref None when it has no reference or is not sampled);
    `on_chunk(entries)` is called on the collector thread, in order, with (stream_id, t, FrameScore
    or None) for every pushed frame; `on_error(stream_id, message, frames)` when a chunk fails (its
    frames then come as None). `finish()` closes the open chunk and returns once everything is
    delivered; `close()` aborts. At most `max_running` libvmaf processes run at once (a new chunk
    waits for a slot: backpressure, as full pipes are).
    """

    metrics = {METRIC.name: METRIC}

    def __init__(self, opts: VmafOptions, on_chunk: Callable[[list[tuple[str, float, FrameScore | None]]], None],
                 on_error: Callable[[str, str, int], None], max_running: int = 2):
        self.opts, self.on_chunk, self.on_error = opts, on_chunk, on_error
        self.tag = opts.tag
        self._open: _Chunk | None = None
        self._prev: tuple[tuple, bytes, bytes] | None = None  # the last pair fed: (key, dist, ref)
        self._slots = threading.Semaphore(max_running)
        self._closed: queue.Queue = queue.Queue()  # chunks in order, then None
        self._running: list[VmafProcess] = []
        self._aborted = False
        self._failure: BaseException | None = None  # raised in the collector (e.g. by a sink): re-raised here
        self._collector = threading.Thread(target=self._collect, daemon=True, name="vmaf-collect")  # from the 1st chunk

    def push(self, frame: Frame, t: float, ref: Frame | None, sampled: bool, extras: dict | None = None) -> None:
        """One decoded frame at media time `t`; `ref` its reference when it is sampled and paired."""
        if self._failure is not None:
            raise self._failure
        c = self._open
        if ref is None:
            if c is not None and (c.proc is None and t - c.t0 >= self.opts.chunk_s
                                  or c.proc is not None and sampled and t - c.last_pair_t >= self.opts.chunk_s):
                self._close()  # no pair for a while (reference lost or ended): release what waits
            self._chunk(t).entries.append(_Pending(frame.stream_id, t))
            return
        key = (frame.width, frame.height, _pix_fmt(frame))
        dist, refb = frame.yuv420(key[2]), ref.yuv420(key[2])
        if c is not None and c.proc is not None:
            if c.key != key:
                self._close()
                self._prev = None  # no look-back across a size change
            elif t - c.t0 >= self.opts.chunk_s:
                c.proc.feed(dist, refb)
                c.lookahead = True
                self._close()
        c = self._chunk(t)
        if c.proc is None:
            self._slots.acquire()
            c.key, c.t0 = key, t
            c.proc = VmafProcess(self.opts, *key)
            self._running.append(c.proc)
            if self._prev is not None and self._prev[0] == key:
                c.proc.feed(self._prev[1], self._prev[2])
                c.lookback = True
        c.proc.feed(dist, refb)
        c.last_pair_t = t
        record = FrameScore(frame.stream_id, frame.index, frame.pts_s, frame.ingest_ts, frame.width, frame.height,
                            METRIC.name, float("nan"), None, self.tag, dict(extras or {}), frame.corrupt)
        c.entries.append(_Pending(frame.stream_id, t, record))
        self._prev = (key, dist, refb)

    def _chunk(self, t: float) -> _Chunk:
        if self._open is None:
            self._open = _Chunk(t)
        return self._open

    def _close(self) -> None:
        c, self._open = self._open, None
        if c is not None:
            if c.proc is not None:
                c.proc.close()
            self._closed.put(c)
            if self._collector.ident is None:  # not started yet
                self._collector.start()

    def _end(self) -> None:
        self._close()
        if self._collector.is_alive():
            self._closed.put(None)
            self._collector.join()

    def finish(self) -> None:
        """End of stream: close the open chunk and wait until every result has been delivered."""
        self._end()
        if self._failure is not None:
            raise self._failure

    def close(self) -> None:
        """Abort (an error or interrupt upstream): kill running processes, deliver nothing more. Idempotent."""
        self._aborted = True
        for p in list(self._running):
            p.kill()
        self._end()

    def _collect(self) -> None:
        while (c := self._closed.get()) is not None:
            try:
                self._deliver(c)
            except BaseException as e:  # the pipeline's callback failed: stop scoring, re-raise on the pipeline thread
                if self._failure is None:
                    self._failure = e
                self._aborted = True
                for p in list(self._running):
                    p.kill()

    def _deliver(self, c: _Chunk) -> None:
        paired = [e for e in c.entries if e.record is not None]
        if c.proc is not None:
            try:
                values = c.proc.result()
                values = values[int(c.lookback): len(values) - int(c.lookahead)]
                scores = METRIC.to_score(torch.from_numpy(values)).numpy()
                for e, v, sc in zip(paired, values, scores):
                    e.record.value, e.record.score = float(v), float(sc)
            except VmafError as err:
                for e in paired:
                    e.record = None
                if not self._aborted:
                    self.on_error(c.entries[0].stream_id, str(err), len(paired))
            finally:
                self._running.remove(c.proc)
                self._slots.release()
        if not self._aborted:
            self.on_chunk([(e.stream_id, e.t, e.record) for e in c.entries])
