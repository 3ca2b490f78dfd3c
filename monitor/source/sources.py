"""PyAV sources: decode the video of a file (FileSource) or a live stream (LiveSource) and yield Frames.

Damage inside a file is survivable and never hidden: a packet that fails to demux or decode is
counted in `stats` (its frames are lost), a frame the decoder flags corrupt (concealed damage)
is delivered, flagged `corrupt`, because the viewer sees it; a file that ends before its header
says is counted as truncated; timestamps that do not advance are re-timed and counted. Only a
file that cannot be opened at all, has no video stream, or has frames larger than `max_pixels`
is an error (InputError, one line naming the file).

Live streams end, stall and come back: LiveSource turns that into StreamEvents and reconnects.
URLs carry secrets (user:password, tokens in the query, RTMP stream keys), so every URL that
leaves this module (errors, events, default stream ids) goes through `monitor.redaction.redact` first.
"""
from __future__ import annotations

import errno
import os
import threading
import time
from dataclasses import dataclass
from fractions import Fraction
from typing import Callable, Iterator
from urllib.parse import urlsplit

import av
from pyarrow.fs import FileType

from monitor import storage
from monitor.errors import InputError
from monitor.records import StreamEvent
from monitor.redaction import redact
from monitor.source.frames import Frame
from monitor.source.relay import RELAYED, Relay


REMOTE_READ = 1 << 20  # bytes per read of a file in an object store (one ranged GET each; PyAV's 32 KiB is slow there)
MAX_PIXELS = 7680 * 4320  # 8K UHD: larger frames are refused unless the limit is raised (memory: ~50 B a pixel queued)


@dataclass
class SourceStats:
    frames_decoded: int = 0
    decode_errors: int = 0  # packets that failed to demux/decode or were flagged corrupt, and truncation
    last_error: str = ""
    corrupt_frames: int = 0  # frames the decoder flagged corrupt, delivered flagged
    retimed: int = 0  # frames whose pts did not advance, moved one frame interval after the previous one
    reconnects: int = 0  # reconnect attempts (live sources)


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
    """Decodes the first video stream of `path`, a local file or an object-store URL (monitor/storage.py).
    `scale_to=(w, h)` resizes frames on extraction (references)."""

    def __init__(self, path: str, stream_id: str | None = None, scale_to: tuple[int, int] | None = None,
                 max_pixels: int = MAX_PIXELS):
        self.path = str(path)
        self.stream_id = stream_id or os.path.splitext(os.path.basename(self.path))[0]
        self.scale_to = scale_to
        self.stats = SourceStats()
        self._stopped = False
        self._clock = _Clock()
        self._container, self._stream = self._open()
        self.info = _describe(self._container, self._stream)
        try:
            _check_size(self.info, max_pixels, redact(self.path))
        except InputError:
            self.close()
            raise

    def _open(self):
        name = redact(self.path)
        target, self._file = self.path, None
        if storage.is_url(self.path):  # read through a seekable remote file object: ranged reads, no local copy
            kind = storage.info(self.path).type
            if kind == FileType.Directory:
                raise InputError(f"{name}: is a folder (prefix), not a media file")
            if kind != FileType.File:
                raise InputError(f"{name}: no such object")
            target = self._file = storage.open_input(self.path)
        elif not os.path.exists(self.path):
            raise InputError(f"{self.path}: no such file")
        elif os.path.isdir(self.path):
            raise InputError(f"{self.path}: is a directory, not a media file")
        try:
            container = av.open(target, metadata_errors="ignore", buffer_size=REMOTE_READ)  # the size: file objects only
        except av.error.FFmpegError as e:
            self._close_file()
            reason = "a header FFmpeg rejects, e.g. an impossible frame size" if e.errno == errno.EBUSY else _reason(e)
            raise InputError(f"{name}: FFmpeg cannot open it ({reason}): not media, or truncated before its index") from None
        if not container.streams.video:
            kinds = sorted({s.type for s in container.streams}) or ["no streams"]
            container.close()
            self._close_file()
            raise InputError(f"{name}: no video stream (has {', '.join(kinds)})")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"  # frame + slice threading: the decoder is the cost floor
        return container, stream

    def _close_file(self) -> None:
        if self._file is not None:
            self._file.close()

    def __iter__(self) -> Iterator[Frame]:
        """Every decoded frame in presentation order; damaged packets are counted and skipped, corrupt frames flagged."""
        index = 0
        last_pts = None
        for packet in self._packets():
            for av_frame in _decoded(self._stream, packet, self._count_error):
                self.stats.frames_decoded += 1
                self.stats.corrupt_frames += av_frame.is_corrupt
                pts = _seconds(av_frame.pts, av_frame.time_base or self._stream.time_base)
                last_pts = pts if pts is not None else last_pts
                t = self._clock(pts, self.info.fps)
                self.stats.retimed = self._clock.retimed
                yield Frame(self.stream_id, index, t, av_frame, scale_to=self.scale_to, corrupt=av_frame.is_corrupt)
                index += 1
        if not self._stopped:
            self._check_complete(last_pts)

    def _check_complete(self, last_pts: float | None) -> None:
        """Count a file that ends before its header says it does (a truncated download or recording)."""
        declared = self._stream.frames  # exact for MP4/MOV; 0 when the container does not say
        if declared and self.stats.frames_decoded < declared:
            self._count_error(f"stream ended after {self.stats.frames_decoded} of {declared} frames (truncated file?)")
            return
        end = _declared_end(self._container, self._stream)
        period = 1 / (self.info.fps or 25.0)
        if end is not None and last_pts is not None:
            missing = end - (last_pts + period)
            if missing > max(0.25, 3 * period, 0.05 * end):
                self._count_error(f"stream ended at {last_pts + period:.2f} s of {end:.2f} s declared (truncated file?)")

    def _packets(self):
        demux = self._container.demux(self._stream)
        while not self._stopped:
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

    def stop(self) -> None:
        """End the iteration at the next packet (thread-safe)."""
        self._stopped = True

    def close(self) -> None:
        self._container.close()
        self._close_file()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


LISTEN_SLICE_S = 1  # an RTMP listener waits this long per accept, so stop() is noticed while nobody publishes


class LiveSource:
    """Frames from a live stream (rtmp(s), rtsp, srt, udp MPEG-TS, HLS) or a file, surviving outages.

    Iterating yields Frames until `stop()` (callable from any thread), the end of a file, or
    giving up. A connection that ends (EOF; a pushed RTMP stream ends with EIO), fails, or
    delivers nothing for `read_timeout_s` makes the stream go down; with `reconnect` it is
    reopened after a capped exponential backoff (`backoff_initial_s` doubling up to
    `backoff_max_s`). `max_reconnects` caps consecutive attempts without a frame (the count
    restarts whenever frames flow); then, or when the first open fails without `reconnect`, the
    iteration ends with an InputError naming the redacted URL. With `listen` (rtmp:// only) the
    source is the server a publisher pushes to, and listens again at once when a push ends or a
    connection fails before delivering a frame (a port scan, a health probe, a bad publisher):
    only a port it cannot listen on backs off.
    `realtime` paces frames at their pts (file replays and demos). stop() takes effect between
    frames and during waits at once; an open or read in progress runs on to its timeout.

    Frame.index counts on across reconnects. Frame.pts_s is the stream's time plus an offset,
    re-chosen whenever a frame would not come after the previous one (a new connection, a
    publisher restarting its clock, a timestamp wrap) so that the frame lands one frame interval
    (1/fps; the last pts step when the stream declares no rate) after the previous one: pts_s
    never goes back, and an outage is not a hole in media time (the events say when it was).

    Events go to `on_event` on the iterating thread: `up` at the first frame of a connection,
    `down` once per outage (also when the very first open fails), `reconnect` per attempt with
    its delay, `decode_error` with the count since the last report (at most one a second while
    errors continue, and one when the connection ends).
    """

    def __init__(self, url: str, stream_id: str | None = None, open_timeout_s: float = 10.0,
                 read_timeout_s: float = 5.0, reconnect: bool = True, backoff_initial_s: float = 0.5,
                 backoff_max_s: float = 30.0, max_reconnects: int | None = None, listen: bool = False,
                 realtime: bool = False, on_event: Callable[[StreamEvent], None] | None = None,
                 options: dict[str, str] | None = None, max_pixels: int = MAX_PIXELS):
        self.url = str(url)
        self.safe_url = redact(self.url)
        scheme = urlsplit(self.url).scheme.lower() if "://" in self.url else "file"
        if listen and scheme not in ("rtmp", *RELAYED):
            raise ValueError(f"{self.safe_url}: listen mode receives RTMP and SRT pushes (rtmp://HOST:PORT/APP/KEY, "
                             "srt://HOST:PORT)")
        self._scheme = scheme
        self.is_file = scheme == "file"
        if not stream_id:
            from monitor.config import default_id

            stream_id = default_id(self.url)
        self.stream_id = stream_id
        self.open_timeout_s, self.read_timeout_s, self.max_pixels = open_timeout_s, read_timeout_s, max_pixels
        self.reconnect = reconnect and not self.is_file
        self.backoff_initial_s, self.backoff_max_s, self.max_reconnects = backoff_initial_s, backoff_max_s, max_reconnects
        self.listen, self.realtime, self.on_event = listen, realtime, on_event
        # Probe a live stream for 1 s, not FFmpeg's 5 s (FLV reads all 5): each reconnect would be 5 s blind.
        self.options = {} if self.is_file else {"analyzeduration": "1000000"}
        if scheme in ("rtsp", "rtsps"):  # over TCP: loss on the monitor's own link would look like damaged pictures
            self.options["rtsp_transport"] = "tcp"
        if listen and scheme == "rtmp":
            self.options.update(listen="1", timeout=str(LISTEN_SLICE_S))
        self.options.update(options or {})
        # PyAV's open timeout covers the whole open: in listen mode the accept slice plus handshake and probing.
        self._timeouts = (open_timeout_s + (LISTEN_SLICE_S if listen else 0), read_timeout_s)
        self._relay: Relay | None = None  # srt:// and rist:// are read through FFmpeg (monitor/source/relay.py)
        self.stats = SourceStats()
        self.info: StreamInfo | None = None  # of the current (or last) connection
        self._stop = threading.Event()
        self._index = 0
        self._clock = _Clock()
        self._up: bool | None = None  # None until the first connection succeeds or fails
        self._down_since: float | None = None
        self._errors_reported = 0
        self._errors_reported_at = float("-inf")

    def stop(self) -> None:
        """End the iteration soon (thread-safe): at the next frame, or at once while waiting to reconnect or listening."""
        self._stop.set()

    close = stop

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

    def __iter__(self) -> Iterator[Frame]:
        attempt = 0  # reconnect attempts in the current outage
        while not self._stop.is_set():
            try:
                container = self._open()
            except av.error.FFmpegError as e:
                if self.listen and isinstance(e, av.error.TimeoutError):
                    continue  # nobody published during this accept slice: listen again
                if isinstance(e, av.error.ProtocolNotFoundError):  # retrying cannot help
                    raise InputError(f"{self.safe_url}: this FFmpeg build cannot read {self._scheme}:// URLs") from None
                delivered, reason = 0, (f"not open within {self.open_timeout_s:g} s" if isinstance(e, av.error.ExitError)
                                        else self._relay_reason() or _reason(e))
                self._close_relay()
                cannot_listen = getattr(e, "errno", None) in (errno.EADDRINUSE, errno.EADDRNOTAVAIL, errno.EACCES)
            else:
                cannot_listen = False
                try:
                    delivered, reason = yield from self._session(container)
                    reason = self._relay_reason() or reason
                finally:
                    container.close()
                    self._close_relay()
            if self._stop.is_set():
                self._go_down("stopped")
                return
            self._go_down(reason)
            if self.listen and not delivered and not cannot_listen:
                continue  # the port reopens at once for the real publisher
            if not self.reconnect:
                if delivered:
                    return
                raise InputError(f"{self.safe_url}: {reason}")
            if delivered and self.listen:
                attempt = 0
                continue
            attempt = 1 if delivered else attempt + 1
            if self.max_reconnects is not None and attempt > self.max_reconnects:
                raise InputError(f"{self.safe_url}: {reason} (gave up after {self.max_reconnects} reconnect attempts)")
            delay = min(self.backoff_max_s, self.backoff_initial_s * 2 ** (attempt - 1))
            self.stats.reconnects += 1
            self._emit("reconnect", attempt=attempt, delay_s=delay, reason=reason)
            self._stop.wait(delay)

    def _open(self):
        if self._scheme not in RELAYED:
            return av.open(self.url, options=self.options, timeout=self._timeouts, metadata_errors="ignore")
        self._relay = Relay(self.url, self.listen, self.open_timeout_s, self.read_timeout_s, self._stop)
        return av.open(self._relay, format="mpegts", options={"analyzeduration": "1000000"}, metadata_errors="ignore")

    def _relay_reason(self) -> str | None:
        """Why a relayed connection ended (a stall, FFmpeg's error), which the pipe alone cannot tell PyAV."""
        return self._relay.reason() if self._relay else None

    def _close_relay(self) -> None:
        if self._relay:
            self._relay.close()
            self._relay = None

    def _session(self, container):
        """Frames of one connection; returns (frames delivered, why it ended)."""
        if not container.streams.video:
            return 0, "no video stream"
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        self.info = _describe(container, stream)
        _check_size(self.info, self.max_pixels, self.safe_url)
        delivered, reason, pace = 0, "end of stream", None
        packets = container.demux(stream)
        while True:
            asked = time.monotonic()
            try:
                packet = next(packets)
            except StopIteration:  # PyAV has already sent the flush packets
                break
            except av.error.FFmpegError as e:
                # Protocols report the read timeout differently (RTMP says EIO, like a clean end): go by the clock.
                stalled = time.monotonic() - asked >= self.read_timeout_s
                reason = f"no data for {self.read_timeout_s:g} s" if stalled else _reason(e)
                packet = None  # drain the decoder's delayed frames
            for av_frame in _decoded(stream, packet, self._count_error):
                frame = self._frame(av_frame, stream.time_base)
                if not delivered:
                    self._go_up()
                delivered += 1
                if self.realtime and frame.pts_s is not None:
                    if pace is None:
                        pace = time.monotonic() - frame.pts_s
                    self._stop.wait(max(0.0, pace + frame.pts_s - time.monotonic()))
                if self._stop.is_set():
                    return delivered, "stopped"
                yield frame
                if self._stop.is_set():
                    return delivered, "stopped"
            if packet is None:
                break
        self._report_errors(final=True)
        return delivered, reason

    def _frame(self, av_frame: av.VideoFrame, stream_time_base: Fraction) -> Frame:
        pts = _seconds(av_frame.pts, av_frame.time_base or stream_time_base)  # frames drained by decode(None) carry no time base
        self.stats.frames_decoded += 1
        self.stats.corrupt_frames += av_frame.is_corrupt
        frame = Frame(self.stream_id, self._index, self._clock(pts, self.info.fps), av_frame, corrupt=av_frame.is_corrupt)
        self._index += 1
        return frame

    def _go_up(self) -> None:
        detail = {"codec": self.info.codec, "width": self.info.width, "height": self.info.height, "fps": self.info.fps}
        if self._down_since is not None:
            detail["down_s"] = round(time.monotonic() - self._down_since, 3)
        self._up, self._down_since = True, None
        self._emit("up", **detail)

    def _go_down(self, reason: str) -> None:
        if self._up is not False:
            self._up, self._down_since = False, time.monotonic()
            self._emit("down", reason=reason)

    def _count_error(self, err) -> None:
        self.stats.decode_errors += 1
        self.stats.last_error = _reason(err) if isinstance(err, Exception) else str(err)
        self._report_errors()

    def _report_errors(self, final: bool = False) -> None:
        new = self.stats.decode_errors - self._errors_reported
        if new and (final or time.monotonic() - self._errors_reported_at >= 1.0):
            self._emit("decode_error", count=new, total=self.stats.decode_errors, error=self.stats.last_error)
            self._errors_reported, self._errors_reported_at = self.stats.decode_errors, time.monotonic()

    def _emit(self, event: str, **detail) -> None:
        if self.on_event is not None:
            self.on_event(StreamEvent(self.stream_id, event, detail={"url": self.safe_url, **detail}))


def _describe(container, stream) -> StreamInfo:
    cc = stream.codec_context
    rate = stream.average_rate or stream.guessed_rate
    fps = float(rate) if rate else None
    duration = None
    if stream.duration is not None and stream.time_base is not None:
        duration = float(stream.duration * stream.time_base)
    elif container.duration:
        duration = container.duration / av.time_base
    frames = stream.frames or (round(duration * fps) if duration and fps else None)
    return StreamInfo(cc.name, cc.pix_fmt or "?", cc.width, cc.height, fps, duration, frames)


def _decoded(stream, packet, count_error) -> list[av.VideoFrame]:
    """The frames `packet` decodes to (None drains the decoder), corrupt ones included; damaged packets are counted."""
    if packet is not None and packet.is_corrupt:
        count_error("demuxer flagged a corrupt packet")
    try:
        return stream.decode(packet)
    except av.error.FFmpegError as e:
        count_error(e)
        return []


class _Clock:
    """Presentation times that always advance: a pts not after the previous one moves, with every later one, to one
    frame interval (1/fps; else the last step; else 1/25 s) after the previous frame. `retimed` counts the moves."""

    def __init__(self):
        self.offset, self.last, self.step, self.retimed = 0.0, None, None, 0

    def __call__(self, pts: float | None, fps: float | None) -> float | None:
        if pts is None:
            return None
        pts += self.offset
        if self.last is not None:
            if pts > self.last:
                self.step = pts - self.last
            else:
                step = 1 / fps if fps else (self.step or 1 / 25)
                self.offset += self.last + step - pts
                pts = self.last + step
                self.retimed += 1
        self.last = pts
        return pts


def _check_size(info: StreamInfo, max_pixels: int, name: str) -> None:
    if info.width * info.height > max_pixels:
        raise InputError(f"{name}: {info.width}×{info.height} frames exceed the limit of {max_pixels} pixels "
                         f"(--max-pixels / max_pixels raises it; each queued frame takes ~50 bytes a pixel)")


def _declared_end(container, stream) -> float | None:
    """Where the header says the video ends, in seconds of pts; None when it does not say."""
    if stream.duration is not None and stream.time_base is not None:
        start = float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0
        return start + float(stream.duration * stream.time_base)
    if container.duration:
        start = container.start_time / av.time_base if container.start_time is not None else 0.0
        return start + container.duration / av.time_base
    return None


def _seconds(pts: int | None, time_base: Fraction | None) -> float | None:
    if pts is None or time_base is None:
        return None
    return float(pts * time_base)


def _reason(err: Exception) -> str:
    """FFmpeg's message without the file name PyAV appends (callers name the file themselves)."""
    return getattr(err, "strerror", None) or str(err)
