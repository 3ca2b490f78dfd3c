"""The live status page of `vqmon watch --http`: two streams replayed in real time, read by a browser and a scraper."""
from __future__ import annotations

import json
import re
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

import browser
from waiting import wait_for
from monitor import config
from monitor.samples import encode, panned_frames
from monitor.views.statuspage import StatusServer, parse_address
from monitor.watch import Watcher


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_status_page_follows_two_live_streams(tmp_path):
    clips = [encode(str(tmp_path / f"cam{i}.mp4"), panned_frames(320, 192, 60, step=2 + i), fps=5) for i in (1, 2)]
    cfg = config.parse({"streams": [{"id": f"cam{i}", "url": c, "realtime": True, "window": "0.5s"}
                                    for i, c in zip((1, 2), clips)], "device": "cpu"})
    watcher = Watcher(cfg)
    watcher.start()
    server = StatusServer(watcher, "127.0.0.1:0")
    try:
        def both_scored():
            s = json.loads(get(server.url + "status.json")[1])["streams"]
            return s if all(s[c]["frames"] > 0 and s[c]["windows"] for c in ("cam1", "cam2")) else None

        first = wait_for(both_scored, what="both streams to have scored windows")
        assert get(server.url + "healthz") == (200, "ok\n")

        dom = browser.dump_dom(server.url)  # the page as a browser shows it
        rows = re.findall(r'<tr class="stream" data-stream="([^"]+)">(.*?)</tr>', dom, re.S)
        assert [sid for sid, _ in rows] == ["cam1", "cam2"]
        assert all("up" in row and "sig.blockiness" in row for _, row in rows)
        assert '<meta http-equiv="refresh"' in dom

        later = wait_for(lambda: (s := both_scored()) and all(
            s[c]["frames"] > first[c]["frames"] + 3
            and len(s[c]["windows"]["sig.blockiness"]["recent"]) > len(first[c]["windows"]["sig.blockiness"]["recent"])
            for c in ("cam1", "cam2")) and s, what="the scores to move on")
        assert later["cam1"]["state"] == "up" and later["cam1"]["url"] == clips[0]
        dom = browser.dump_dom(server.url)
        assert dom.count('class="spark"') >= 2  # sparklines of recent window means

        status, text = get(server.url + "metrics")
        assert status == 200
        families = {f.name: f for f in text_string_to_metric_families(text)}
        frames = {s.labels["stream_id"]: s.value for s in families["vqmon_stream_frames"].samples
                  if s.name == "vqmon_stream_frames_total"}
        assert set(frames) == {"cam1", "cam2"} and all(v > 0 for v in frames.values())
        up = {s.labels["stream_id"]: s.value for s in families["vqmon_stream_up"].samples}
        assert up == {"cam1": 1.0, "cam2": 1.0}
        scores = [s for s in families["vqmon_window_score_mean"].samples if s.labels["metric"] == "sig.blockiness"]
        assert len(scores) == 2 and all(0 <= s.value <= 100 for s in scores)
        assert get(server.url + "nope")[0] == 404

        wait_for(lambda: not watcher.running(), timeout=30, what="the replays to end")
        assert get(server.url + "healthz")[0] == 503
    finally:
        watcher.stop()
        watcher.join(timeout=30)
        watcher.close()
        server.close()


def test_status_page_hides_credentials_and_binds_loopback(tmp_path):
    cfg = config.parse({"streams": [{"id": "cam", "url": "rtmp://user:hunter2@127.0.0.1:1/live/cam?token=abc"}],
                        "http": 8080})
    assert cfg.http == "8080" and parse_address(cfg.http) == ("127.0.0.1", 8080)
    watcher = Watcher(cfg)  # never started: the page shows what is configured
    server = StatusServer(watcher, "0")
    try:
        assert server.url.startswith("http://127.0.0.1:")
        body = get(server.url)[1] + get(server.url + "status.json")[1]
        assert "hunter2" not in body and "abc" not in body and "***@127.0.0.1:1/live/***?token=***" in body
    finally:
        server.close()
        watcher.close()


def test_bad_http_address_is_a_one_line_error():
    from monitor.errors import InputError

    with pytest.raises(InputError, match="--http nope: expected"):
        parse_address("nope")
