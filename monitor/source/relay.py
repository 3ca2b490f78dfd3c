"""SRT and RIST through the static FFmpeg of imageio-ffmpeg: PyAV's wheel speaks neither, that binary speaks both.

`ffmpeg -i srt://… -map 0:v -c copy -f mpegts pipe:1` remuxes the stream's video packets into
MPEG-TS on a pipe (no re-encode: a few % of one core), and PyAV demuxes and decodes the pipe as
it would the URL. The pipe is read with a deadline, so a stalled sender looks like any stalled
stream to LiveSource (down, reconnect), and a stop request ends a wait at once.
"""
from __future__ import annotations

import io
import os
import select
import subprocess
import threading
import time
from urllib.parse import urlsplit

import imageio_ffmpeg

RELAYED = ("srt", "rist")  # schemes PyAV's FFmpeg lacks and the static FFmpeg has
POLL_S = 0.2  # how often a wait looks at the stop flag


def listener_url(url: str) -> str:
    """`url` in listener mode (the encoder calls us), unless it already names a mode."""
    if urlsplit(url).scheme.lower() == "srt" and "mode=" not in url:
        return url + ("&" if "?" in url else "?") + "mode=listener"
    return url


class Relay(io.RawIOBase):
    """A readable MPEG-TS byte stream of one connection, produced by an FFmpeg process; close() ends the process.

    Before the first byte a caller waits `open_timeout_s` and a listener waits until stopped (for
    an encoder to connect); after it, a read that waits `read_timeout_s` ends the stream.
    """

    def __init__(self, url: str, listen: bool, open_timeout_s: float, read_timeout_s: float, stop: threading.Event):
        super().__init__()
        self.open_timeout_s, self.read_timeout_s, self.listen, self._stop = open_timeout_s, read_timeout_s, listen, stop
        self._proc = subprocess.Popen(
            [imageio_ffmpeg.get_ffmpeg_exe(), "-nostdin", "-v", "error", "-i", listener_url(url) if listen else url,
             "-map", "0:v", "-c", "copy", "-f", "mpegts", "pipe:1"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self._fd = self._proc.stdout.fileno()
        self._started = False
        self.stalled_s: float | None = None  # set when a read gave up waiting

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        wait = self.read_timeout_s if self._started else (None if self.listen else self.open_timeout_s)
        deadline = None if wait is None else time.monotonic() + wait
        while not self._stop.is_set():
            left = POLL_S if deadline is None else min(POLL_S, deadline - time.monotonic())
            if left <= 0:
                self.stalled_s = wait
                return 0
            if select.select([self._fd], [], [], left)[0]:
                data = os.read(self._fd, len(buffer))
                buffer[:len(data)] = data
                self._started = self._started or bool(data)
                return len(data)
        return 0

    def reason(self) -> str | None:
        """Why the byte stream ended, when it was not a plain end of stream: a stall or FFmpeg's own error."""
        if self.stalled_s is not None:
            return f"no data for {self.stalled_s:g} s" if self._started else f"not open within {self.stalled_s:g} s"
        try:
            self._proc.wait(timeout=1.0)  # the pipe ended: FFmpeg is exiting
        except subprocess.TimeoutExpired:
            return None
        if self._proc.returncode:
            lines = self._proc.stderr.read().decode(errors="replace").strip().splitlines()
            return lines[-1] if lines else f"ffmpeg exited with {self._proc.returncode}"
        return None

    def close(self) -> None:
        if self._proc.poll() is None:
            self._proc.kill()
        self._proc.wait()
        self._proc.stdout.close()
        self._proc.stderr.close()
        super().close()
