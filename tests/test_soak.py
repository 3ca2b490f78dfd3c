"""Soak, time-compressed: a 10-minute stream (15,000 frames at 25 fps) through the live pipeline keeps memory flat."""
from __future__ import annotations

import resource

import pytest

from monitor.build import build
from monitor.config import StreamConfig, parse_rules
from monitor.samples import encode, panned_frames
from monitor.scoring.scorers import pick_device
from monitor.sinks import Sink, Sinks
from monitor.windows import WindowSpec

FRAMES = 15_000  # 10 minutes at 25 fps


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


class CountingSink(Sink):
    def __init__(self):
        self.records = 0
        self.rss: list[tuple[int, float]] = []

    def write(self, records):
        self.records += len(records)
        if self.records // 20_000 > len(self.rss):
            self.rss.append((self.records, rss_mb()))


@pytest.mark.slow
def test_ten_minutes_of_stream_keep_memory_flat(tmp_path):
    clip = encode(str(tmp_path / "long.mp4"), panned_frames(64, 48, FRAMES, step=1), fps=25, crf=30,
                  options={"preset": "ultrafast"})
    sink = CountingSink()
    rules = parse_rules([{"name": "low", "kind": "level", "metric": "sig.blockiness", "below": 1.0, "for": "1s",
                          "recover_above": 5, "recover_for": "1s"},
                         {"name": "frozen", "kind": "freeze", "for": "2s"}])
    stream = StreamConfig(clip, window=WindowSpec(10.0, 2.0), alerts=rules)
    pipe = build(stream, Sinks([sink]), pick_device("cpu"), live=True, batch_size=32)
    pipe.run()
    assert pipe.frames_seen == FRAMES
    assert len(sink.rss) >= 5
    warm = sink.rss[len(sink.rss) // 5][1]  # after the first fifth: imports, allocator pools and caches are warm
    end = sink.rss[-1][1]
    print(f"\nRSS over the soak (records, MB): {[(n, round(m, 1)) for n, m in sink.rss[::max(1, len(sink.rss) // 8)]]}")
    assert end - warm < 25, sink.rss
