"""Live sources with real parts: FFmpeg pushes RTMP to a listening LiveSource, outages, backoff, redaction, pacing."""
from __future__ import annotations

import functools
import socket
import subprocess
import threading
import time
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import imageio_ffmpeg
import numpy as np
import pytest

from broker import free_port
from waiting import wait_for
from monitor.errors import InputError
from monitor.records import to_json
from monitor.samples import encode, panned_frames
from monitor.redaction import redact
from monitor.source.sources import LiveSource
from rtmp import Push

FPS, N = 25, 75  # a 3 s clip: long enough to stall a push after its first frames came through


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return encode(str(tmp_path_factory.mktemp("live") / "clip.mp4"), panned_frames(320, 180, N), fps=FPS, crf=30)


class Consumer(threading.Thread):
    """Iterates a source on its own thread, as a live pipeline does; keeps what it saw."""

    def __init__(self, source: LiveSource):
        super().__init__(daemon=True)
        self.source, self.frames, self.error = source, [], None

    def run(self):
        try:
            for f in self.source:
                self.frames.append(f)
        except Exception as e:  # noqa: BLE001 - handed to the test
            self.error = e


class QuietFiles(SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep request lines out of the test output
        pass


def listening(url: str) -> tuple[LiveSource, Consumer, list]:
    """A LiveSource listening at `url`, consumed on a thread: the source, the consumer and the events it emits."""
    events = []
    source = LiveSource(url, listen=True, read_timeout_s=1, on_event=events.append)
    consumer = Consumer(source)
    consumer.start()
    return source, consumer, events


def kinds(events) -> list[str]:
    return [e.event for e in events]


def stall_then_stop(push: Push, source: LiveSource, consumer: Consumer, events: list, frames_before: int) -> None:
    """A second push stalls with its connection open: the source goes down after its read timeout (1 s), then
    stops promptly while listening for the next sender."""
    wait_for(lambda: len(consumer.frames) >= frames_before + 10, 10, "frames of the second push")
    push.pause()
    wait_for(lambda: kinds(events) == ["up", "down", "up", "down"], 5, "the stall to be noticed")
    assert events[-1].detail["reason"] == "no data for 1 s"
    started = time.monotonic()
    source.stop()
    consumer.join(timeout=3)
    assert not consumer.is_alive() and time.monotonic() - started < 2


@pytest.mark.slow
def test_listen_receives_pushes_across_outages_and_stops_promptly(clip):
    url = f"rtmp://127.0.0.1:{free_port()}/live/x"
    source, consumer, events = listening(url)
    try:
        with Push(clip, url) as push:  # a whole clip, ended by the publisher (EIO on our side)
            assert push.wait(timeout_s=15) == 0
        wait_for(lambda: kinds(events) == ["up", "down"], 5, "the end of the first push")
        assert len(consumer.frames) == N  # the decoder's delayed frames are drained, none lost

        with Push(clip, url) as push:  # a publisher that stalls with its connection open
            stall_then_stop(push, source, consumer, events, frames_before=N)
        assert events[2].detail["down_s"] > 0 and events[2].detail["width"] == 320
    finally:
        source.stop()
        consumer.join(timeout=5)
    assert consumer.error is None
    frames = consumer.frames
    assert [f.index for f in frames] == list(range(len(frames)))
    pts = np.array([f.pts_s for f in frames])
    assert (np.diff(pts) > 0).all()
    # the second push restarts its clock: it continues one frame interval after the first push's last frame
    assert pts[N] == pytest.approx(pts[N - 1] + 1 / FPS)
    assert np.diff(pts[:N]) == pytest.approx(1 / FPS)


@pytest.mark.parametrize("scheme", ["rtmp", "rtsp"])
def test_unreachable_stream_backs_off_then_gives_up_without_leaking_secrets(scheme):
    url = f"{scheme}://alice:s3cret@127.0.0.1:{free_port()}/live/x?token=t0ps3cret&app=1"
    events = []
    source = LiveSource(url, max_reconnects=3, backoff_initial_s=0.05, backoff_max_s=0.15, on_event=events.append)
    started = time.monotonic()
    with pytest.raises(InputError) as err:
        list(source)
    assert time.monotonic() - started >= 0.05 + 0.1 + 0.15
    assert kinds(events) == ["down", "reconnect", "reconnect", "reconnect"]
    assert [e.detail["delay_s"] for e in events[1:]] == pytest.approx([0.05, 0.1, 0.15])  # doubling, capped
    assert [e.detail["attempt"] for e in events[1:]] == [1, 2, 3] and source.stats.reconnects == 3
    message = str(err.value)
    assert message.startswith(f"{scheme}://***@127.0.0.1:") and "token=***&app=1" in message
    assert "refused" in message and "gave up after 3 reconnect attempts" in message
    published = message + source.stream_id + "".join(to_json(e) for e in events)
    for secret in ("alice", "s3cret", "t0ps3cret"):
        assert secret not in published


def test_listener_reopens_at_once_after_probes_and_backs_off_only_when_it_cannot_listen(clip):
    port = free_port()
    url = f"rtmp://127.0.0.1:{port}/live/x"
    source, consumer, events = listening(url)
    try:
        for _ in range(6):  # port scans and health checks: connect, send junk, hang up
            wait_for(lambda: _probe(port), 5, "the listener")
        with Push(clip, url):  # the push is accepted, and (below) with no backoff: the listener listened again at once
            wait_for(lambda: len(consumer.frames) >= 10, 15, "frames of the push after the probes")
        assert source.stats.reconnects == 0 and "reconnect" not in kinds(events)
    finally:
        source.stop()
        consumer.join(timeout=5)

    with socket.socket() as taken:  # a port another process holds: that is a real failure, with backoff
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = LiveSource(f"rtmp://127.0.0.1:{taken.getsockname()[1]}/live/x", listen=True, max_reconnects=1,
                          backoff_initial_s=0.05, on_event=events.append)
        with pytest.raises(InputError, match="Address already in use"):
            list(busy)
        assert busy.stats.reconnects == 1


def _probe(port: int) -> bool:
    """Connect, send junk and hang up; False while nothing listens (the listener is between accepts for a moment)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as probe:
            probe.sendall(b"GET / HTTP/1.0\r\n\r\n")
        return True
    except OSError:
        return False


def test_stop_interrupts_the_backoff_wait():
    events = []
    source = LiveSource(f"rtmp://127.0.0.1:{free_port()}/live/x", backoff_initial_s=30, on_event=events.append)
    consumer = Consumer(source)
    consumer.start()
    wait_for(lambda: "reconnect" in kinds(events), 5, "the first reconnect")
    started = time.monotonic()
    source.stop()
    consumer.join(timeout=2)
    assert not consumer.is_alive() and time.monotonic() - started < 1
    assert consumer.error is None and kinds(events) == ["down", "reconnect"]


def test_an_unsupported_protocol_fails_at_once():
    with pytest.raises(InputError, match=r"nosuch://\*\*\*@host/x: this FFmpeg build cannot read nosuch://"):
        list(LiveSource("nosuch://me:pw@host/x"))


def test_realtime_file_plays_at_about_real_speed(tmp_path):
    path = encode(str(tmp_path / "second.mp4"), panned_frames(160, 96, FPS), fps=FPS, crf=30)
    events = []
    source = LiveSource(path, realtime=True, on_event=events.append)
    seen = [(f.pts_s, time.monotonic()) for f in source]
    assert len(seen) == FPS and source.stream_id == "second"
    media, wall = seen[-1][0] - seen[0][0], seen[-1][1] - seen[0][1]
    assert media == pytest.approx((FPS - 1) / FPS)
    assert media - 0.02 < wall < media + 0.3
    assert kinds(events) == ["up", "down"] and events[1].detail["reason"] == "end of stream"


def test_damaged_stream_reports_decode_errors_and_keeps_going(tmp_path):
    path = encode(str(tmp_path / "clip.ts"), panned_frames(320, 180, 50), fps=FPS, crf=30)
    data = bytearray(open(path, "rb").read())
    noise = np.random.default_rng(0).integers(0, 256, 2000, dtype=np.uint8).tobytes()
    for quarter in (1, 2, 3):
        at = len(data) * quarter // 4 // 188 * 188 + 4  # inside a TS packet, past its header
        data[at:at + len(noise)] = noise
    (tmp_path / "damaged.ts").write_bytes(bytes(data))
    events = []
    source = LiveSource(str(tmp_path / "damaged.ts"), on_event=events.append)
    frames = list(source)
    assert 25 < len(frames) < 50 and source.stats.decode_errors > 0
    reports = [e.detail for e in events if e.event == "decode_error"]
    assert sum(r["count"] for r in reports) == reports[-1]["total"] == source.stats.decode_errors
    assert kinds(events)[0] == "up" and kinds(events)[-1] == "down"


@pytest.mark.parametrize("url, expected", [
    ("rtmp://user:pa55@live.example.com:1935/app/stream", "rtmp://***@live.example.com:1935/app/***"),
    ("rtsp://admin@10.0.0.5/h264", "rtsp://***@10.0.0.5/h264"),
    ("srt://host:9000?streamid=cam1&passphrase=longsecret", "srt://host:9000?streamid=cam1&passphrase=***"),
    ("https://cdn/x.m3u8?X-Amz-Signature=ab&api_key=k&Auth=z&v=2", "https://cdn/x.m3u8?X-Amz-Signature=***&api_key=***&Auth=***&v=2"),
    ("udp://@:1234?fifo_size=100", "udp://@:1234?fifo_size=100"),
    ("/videos/cam:1@night.mp4", "/videos/cam:1@night.mp4"),
])
def test_redact(url, expected):
    assert redact(url) == expected


def test_hls_over_http(clip, tmp_path):
    """An HLS playlist served over loopback HTTP, as a CDN would: every frame, then the end of the stream."""
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-i", clip, "-c", "copy", "-f", "hls",
                    "-hls_time", "1", "-hls_list_size", "0", str(tmp_path / "index.m3u8")], check=True, timeout=30)
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietFiles, directory=str(tmp_path)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        events = []
        url = f"http://127.0.0.1:{server.server_port}/index.m3u8?auth=abc"
        frames = list(LiveSource(url, reconnect=False, on_event=events.append))
    finally:
        server.shutdown()
        server.server_close()
    assert len(frames) == N and (np.diff([f.pts_s for f in frames]) > 0).all()
    assert kinds(events) == ["up", "down"] and frames[0].stream_id == "index"
    assert all("abc" not in str(e.detail) for e in events)


def udp_port_taken(port: int) -> bool:
    """Whether something (an SRT listener) holds the UDP port: binding it ourselves fails then."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory):
    """10 s: SRT delivers the first frame after probing about a second of the stream, so a stall needs a longer clip."""
    return encode(str(tmp_path_factory.mktemp("live") / "long.mp4"), panned_frames(320, 180, 10 * FPS), fps=FPS, crf=30)


def test_srt_listener_receives_pushes_and_notices_a_stall(clip, long_clip):
    """`listen` on srt://: FFmpeg relays what an encoder (FFmpeg calling us) pushes; same events as RTMP."""
    port = free_port()
    url = f"srt://127.0.0.1:{port}"
    source, consumer, events = listening(url)
    try:
        wait_for(lambda: udp_port_taken(port), 5, "the SRT listener")
        with Push(clip, url + "?mode=caller", fmt="mpegts") as push:
            assert push.wait(timeout_s=15) == 0
        wait_for(lambda: kinds(events) == ["up", "down"], 5, "the end of the first push")
        first = len(consumer.frames)
        assert first >= N - 5  # SRT drops what is still within its 120 ms latency when the caller hangs up
        assert events[0].detail["codec"] == "h264" and events[0].detail["width"] == 320

        wait_for(lambda: udp_port_taken(port), 5, "the SRT listener, again")
        with Push(long_clip, url + "?mode=caller", fmt="mpegts") as push:  # a sender that stalls
            stall_then_stop(push, source, consumer, events, frames_before=first)
    finally:
        source.stop()
        consumer.join(timeout=5)
    assert consumer.error is None
    assert [f.index for f in consumer.frames] == list(range(len(consumer.frames)))
    assert (np.diff([f.pts_s for f in consumer.frames]) > 0).all()


def test_srt_caller_pulls_reconnects_and_gives_up(clip):
    """Caller mode (the default): pull from an SRT listener (FFmpeg serving the clip), then back off and give up."""
    port = free_port()
    server = subprocess.Popen([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-re", "-i", clip, "-c", "copy", "-f",
                               "mpegts", f"srt://127.0.0.1:{port}?mode=listener&passphrase=secretsecret"],
                              stdin=subprocess.DEVNULL)
    wait_for(lambda: udp_port_taken(port), 5, "FFmpeg's SRT listener")
    events = []
    source = LiveSource(f"srt://127.0.0.1:{port}?passphrase=secretsecret", read_timeout_s=1, open_timeout_s=3,
                        backoff_initial_s=0.1, max_reconnects=1, on_event=events.append)
    try:
        consumer = Consumer(source)
        consumer.start()
        consumer.join(timeout=30)
    finally:
        server.kill()
        server.wait()
    assert not consumer.is_alive() and len(consumer.frames) >= N - 5
    assert kinds(events)[:3] == ["up", "down", "reconnect"]
    message = str(consumer.error)
    assert "gave up after 1 reconnect attempts" in message and "secretsecret" not in message
    assert all("secretsecret" not in to_json(e) for e in events)


def test_vqmon_watch_srt_listen_end_to_end(clip, tmp_path):
    """`vqmon watch srt://… --listen`: FFmpeg pushes SRT, the records land in Parquet with up/down events."""
    import sys

    import pyarrow.parquet as pq

    port = free_port()
    out = tmp_path / "out"
    watch = subprocess.Popen([sys.executable, "-m", "monitor.cli", "watch", f"srt://127.0.0.1:{port}", "--listen",
                              "--id", "cam", "--out", str(out), "--duration", "15", "-q"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: udp_port_taken(port), 30, "vqmon's SRT listener")
        with Push(clip, f"srt://127.0.0.1:{port}?mode=caller", fmt="mpegts") as push:
            assert push.wait(timeout_s=15) == 0
        watch.send_signal(2)  # SIGINT: flush and exit 0
        assert watch.wait(timeout=30) == 0, watch.stderr.read()
    finally:
        watch.kill()
    frames = pq.read_table(out / "frames", partitioning=None)
    events = pq.read_table(out / "events", partitioning=None).to_pydict()["event"]
    # a live stream on a busy machine: KeepUp may leave frames of the burst after probing unscored
    assert len(set(frames["frame_index"].to_pylist())) >= 10
    assert events[:3] == ["started", "up", "down"]
