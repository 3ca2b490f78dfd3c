"""An RTMP or SRT publisher for tests: FFmpeg (imageio-ffmpeg's binary) pushes a clip in real time, like an encoder in the field."""
from __future__ import annotations

import signal
import subprocess
import time

import imageio_ffmpeg


class Push:
    """`ffmpeg -re -i CLIP -c copy -f FORMAT URL`, started on demand and always ended by `stop()` (use as a context
    manager). FORMAT: flv for rtmp://, mpegts for srt://."""

    def __init__(self, clip: str, url: str, fmt: str = "flv"):
        self.clip, self.url, self.fmt = clip, url, fmt
        self._proc: subprocess.Popen | None = None

    def start(self, within_s: float = 5.0) -> "Push":
        """Start publishing; retry while the listener is between accept slices (connection refused for a moment, longer
        on a busy machine), as an encoder in the field retries."""
        deadline = time.monotonic() + within_s
        while True:
            self._proc = subprocess.Popen(
                [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-re", "-i", self.clip, "-c", "copy", "-f", self.fmt, self.url],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            try:
                err = self._proc.communicate(timeout=0.3)[1]
            except subprocess.TimeoutExpired:
                return self  # connected and pushing
            if self._proc.returncode == 0 or not ("refused" in err or "Input/output error" in err):  # SRT says EIO
                raise RuntimeError(f"ffmpeg push exited with {self._proc.returncode}: {err.strip()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"no listener accepted the push within {within_s:.0f} s")
            time.sleep(0.1)

    def wait(self, timeout_s: float) -> int:
        """Exit status once the clip has been pushed to its end."""
        return self._proc.wait(timeout=timeout_s)

    def pause(self) -> None:
        """Freeze the publisher: its connection stays open but no data flows (a stalled encoder)."""
        self._proc.send_signal(signal.SIGSTOP)

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()

    def __enter__(self) -> "Push":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
