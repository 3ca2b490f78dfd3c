"""Alert engine on synthetic score series at 25 fps: exact pending/firing/resolved times, hysteresis against
flapping, EWMA drop and CUSUM detection, freeze/black segments, rule validation, record round trips, webhook retries."""
from __future__ import annotations

import base64
import json
import socket
import threading
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from monitor.alerts.engine import AlertEngine
from monitor.alerts.rules import BlackRule, CusumRule, DropRule, FreezeRule, LevelRule
from monitor.config import parse_rules
from monitor.errors import InputError
from monitor.records import AlertEvent, FrameScore, StreamEvent, to_json
from monitor.sinks import parquet
from monitor.sinks.jsonl import JsonlSink
from monitor.sinks.webhook import WebhookSink
from monitor.windows import WindowAggregator, WindowSpec

FPS = 25
TS = datetime(2026, 11, 22, 12, 0, tzinfo=timezone.utc)


def series(*segments: tuple[float, float]) -> np.ndarray:
    """Per-frame values from (seconds, value) segments."""
    return np.concatenate([np.full(round(s * FPS), v, dtype=np.float64) for s, v in segments])


def frame_scores(values, metric="nr.liqe", stream="cam1", scale="score"):
    for i, v in enumerate(values):
        v = float(v)
        yield FrameScore(stream, i, i / FPS, TS, 64, 36, metric, v if scale == "value" else v / 10,
                         v if scale == "score" else None)


def run(rules, values, metric="nr.liqe", scale="score", **kw):
    engine = AlertEngine(rules, **kw)
    events = [e for s in frame_scores(values, metric, scale=scale) for e in engine.observe_frame(s)]
    return events, engine


def timeline(events):
    return [(e.state, round(e.at_s, 6)) for e in events]


def test_clean_drop_pending_firing_resolved_at_exact_times():
    values = series((10, 80), (4, 30), (6, 80))
    values[300] = 20  # the worst frame, inside the degraded stretch
    written = []

    def thumbnail(index, pts):
        written.append(index)
        return f"/thumbs/{index}.jpg"

    rule = LevelRule(name="low", metric="nr.liqe", below=40, for_s=1.0, recover_above=45, recover_for_s=0.4)
    events, _ = run([rule], values, thumbnail=thumbnail)
    assert timeline(events) == [("pending", 10.0), ("firing", 11.0), ("resolved", 14.4)]
    assert {e.since_s for e in events} == {10.0} and len({e.alert_id for e in events}) == 1
    assert [e.threshold for e in events] == [40, 40, 45]
    assert [e.value for e in events] == [30, 30, 80]
    assert [e.evidence["frame_index"] for e in events] == [250, 250, 300]
    assert events[-1].evidence == {"frame_index": 300, "pts_s": 12.0, "value": 20.0, "thumbnail": "/thumbs/300.jpg"}
    assert written == [250, 300]  # each worst frame's thumbnail is written once


def test_level_rule_on_window_p10_takes_evidence_from_frames():
    values = series((10, 80), (4, 30), (6, 80))
    values[300] = 20
    rule = LevelRule(name="low-p10", metric="nr.liqe", stat="p10", below=40, for_s=1.0, recover_above=45)
    engine, agg = AlertEngine([rule]), WindowAggregator(WindowSpec(1.0))
    events = []
    for s in frame_scores(values):
        windows = agg.observe(s.stream_id, s.pts_s)  # the pipeline's order: close windows, then add the frame
        agg.add(s.stream_id, s.metric, "score", s.pts_s, s.score)
        events += engine.observe_frame(s) + [e for w in windows for e in engine.observe_window(w)]
    events += [e for w in agg.flush() for e in engine.observe_window(w)]
    # bad windows [10,11)..[13,14) are judged at their ends; [14,15) recovers
    assert timeline(events) == [("pending", 11.0), ("firing", 12.0), ("resolved", 15.0)]
    assert events[-1].evidence["frame_index"] == 300 and events[-1].evidence["pts_s"] == 12.0


def test_hysteresis_keeps_a_flap_to_one_firing():
    flap = [(0.4, 38), (0.6, 42)] * 10  # 10 s crossing the threshold twice a second
    values = series((5, 80), *flap, (5, 80))
    with_band = LevelRule(name="low", metric="nr.liqe", below=40, for_s=0.2, recover_above=45, recover_for_s=1.0)
    events, _ = run([with_band], values)
    assert timeline(events) == [("pending", 5.0), ("firing", 5.2), ("resolved", 16.0)]
    no_band = LevelRule(name="low", metric="nr.liqe", below=40, for_s=0.2)
    events, _ = run([no_band], values)
    assert sum(e.state == "firing" for e in events) == 10  # what the band prevents


def test_pending_that_clears_emits_nothing_more():
    values = series((2, 80), (0.4, 30), (2, 80))
    events, _ = run([LevelRule(name="low", metric="nr.liqe", below=40, for_s=1.0)], values)
    assert timeline(events) == [("pending", 2.0)]


def noisy(rng, values, sd=1.0):
    return values + rng.normal(0, sd, values.size)


def test_ewma_drop_baseline_does_not_learn_the_degraded_period():
    rng = np.random.default_rng(0)
    values = noisy(rng, series((60, 80), (20, 62), (10, 80)))
    rule = DropRule(name="drop", metric="nr.liqe", points=15, half_life_s=10, for_s=2, recover_for_s=1)
    events, _ = run([rule], values)
    assert timeline(events) == [("pending", 60.0), ("firing", 62.0), ("resolved", 81.0)]
    # a baseline that kept learning would have sunk to ~63 after 20 s at 62 and cleared the alert early
    assert all(abs(e.evidence["baseline"] - 80) < 1 for e in events)
    assert events[-1].evidence["value"] < 62 - 2  # worst frame of the noisy dip


def test_cusum_catches_a_slow_decline_that_a_drop_rule_misses():
    rng = np.random.default_rng(1)
    decline = 80 - 0.25 * np.arange(40 * FPS) / FPS  # 80 → 70 over 40 s
    values = noisy(rng, np.concatenate([series((60, 80)), decline, series((10, 70), (10, 80))]))
    cusum = CusumRule(name="cusum", metric="nr.liqe", k=0.5, h=50, half_life_s=60)
    drop = DropRule(name="drop", metric="nr.liqe", points=15, half_life_s=60, for_s=1)
    events, _ = run([cusum, drop], values)
    assert {e.rule for e in events} == {"cusum"}
    (firing, resolved) = events  # for = 0: straight to firing, no pending event
    assert firing.state == "firing" and 60 < firing.at_s < 75 and 58 < firing.since_s < firing.at_s
    assert firing.value > 50 and firing.threshold == 50
    # recovery is the mirror test: about h / (80 − (baseline − k)) frames of evidence after the score is back at 110 s
    assert resolved.state == "resolved" and 114 < resolved.at_s < 118 and resolved.value > 50
    assert resolved.evidence["pts_s"] > 95  # the worst frame is near the bottom of the decline
    # the same noise without the decline never accumulates to h
    flat, _ = run([cusum], noisy(np.random.default_rng(1), series((120, 80))))
    assert flat == []


def test_freeze_and_black_segments_have_the_right_start_and_end():
    mafd = series((12, 0.02))
    mafd[100:150] = 0.0  # frames 100..149 repeat frame 99 (3.96 s): frozen 3.96–6.00 s
    black = series((12, 0.05))
    black[200:231] = 1.0  # 8.00–9.24 s
    black[275:285] = 0.99  # a 0.4 s blip: pending only
    rules = [FreezeRule(name="freeze", for_s=1.0), BlackRule(name="black", for_s=1.0)]
    engine = AlertEngine(rules)
    events = []
    for f, b in zip(frame_scores(mafd, "sig.freeze", scale="value"), frame_scores(black, "sig.black", scale="value")):
        events += engine.observe_frame(f) + engine.observe_frame(b)
    got = [(e.rule, e.state, round(e.since_s, 6), round(e.at_s, 6)) for e in events]
    assert got == [("freeze", "pending", 3.96, 4.0), ("freeze", "firing", 3.96, 4.96), ("freeze", "resolved", 3.96, 6.0),
                   ("black", "pending", 8.0, 8.0), ("black", "firing", 8.0, 9.0), ("black", "resolved", 8.0, 9.24),
                   ("black", "pending", 11.0, 11.0)]
    assert events[1].metric == "sig.freeze" and events[1].threshold == pytest.approx(0.001)
    assert events[4].evidence["frame_index"] == 200 and events[4].value == 1.0


def test_flush_reports_open_alerts_in_their_state():
    values = series((2, 80), (3, 30))
    rules = [LevelRule(name="low", metric="nr.liqe", below=40, for_s=1.0),
             LevelRule(name="very-low", metric="nr.liqe", below=40, for_s=10.0)]
    events, engine = run(rules, values)
    assert [(e.rule, e.state) for e in events] == [("low", "pending"), ("very-low", "pending"), ("low", "firing")]
    last = [(e.rule, e.state, e.at_s) for e in engine.flush()]
    assert last == [("low", "firing", 4.96), ("very-low", "pending", 4.96)]
    assert engine.flush() == []


def test_streams_are_tracked_apart():
    rule = LevelRule(name="low", metric="nr.liqe", below=40, for_s=0.2)
    engine = AlertEngine([rule])
    bad = list(frame_scores(series((1, 30)), stream="a"))
    good = list(frame_scores(series((1, 80)), stream="b"))
    events = [e for pair in zip(bad, good) for s in pair for e in engine.observe_frame(s)]
    assert [(e.stream_id, e.state) for e in events] == [("a", "pending"), ("a", "firing")]


def test_rules_parse_from_config():
    rules = parse_rules([
        {"name": "low", "kind": "level", "metric": "nr.liqe", "stat": "p10", "below": 40, "for": "10s",
         "recover_above": 45, "recover_for": "500ms"},
        {"name": "drop", "kind": "drop", "metric": "nr.liqe", "points": 15, "span": "5m"},
        {"name": "frozen", "kind": "freeze", "for": 2},
        {"name": "black", "kind": "black", "for": "1s", "threshold": 0.95},
    ])
    assert rules[0] == LevelRule(name="low", metric="nr.liqe", stat="p10", below=40, for_s=10, recover_above=45,
                                 recover_for_s=0.5)
    assert rules[1].span_s == 300 and rules[1].recover_within == 7.5 and rules[1].warmup == pytest.approx(103.97, abs=0.01)
    assert rules[2] == FreezeRule(name="frozen", for_s=2.0) and rules[3].threshold == 0.95


@pytest.mark.parametrize("config, message", [
    ({"kind": "level"}, "alert rule #1: field 'name' is required"),
    ({"name": "x", "kind": "spike"}, "alert rule 'x': field 'kind' must be one of level, drop, cusum, freeze, black"),
    ({"name": "x", "kind": "level", "metric": "m", "below": 40, "fr": 3}, "alert rule 'x': unknown field 'fr'"),
    ({"name": "x", "kind": "level", "below": 40}, "alert rule 'x': field 'metric' is required"),
    ({"name": "x", "kind": "level", "metric": "m"}, "alert rule 'x': field 'below' or 'above' is required"),
    ({"name": "x", "kind": "level", "metric": "m", "below": 40, "above": 60}, "field 'below' or 'above' is required"),
    ({"name": "x", "kind": "level", "metric": "m", "below": 40, "recover_above": 35},
     "alert rule 'x': field 'recover_above' must be ≥ below (40.0) for hysteresis"),
    ({"name": "x", "kind": "level", "metric": "m", "above": 4, "recover_above": 5}, "field 'recover_above' does not go"),
    ({"name": "x", "kind": "level", "metric": "m", "below": "forty"}, "alert rule 'x': field 'below' must be a number"),
    ({"name": "x", "kind": "level", "metric": "m", "below": 40, "for": "-2s"}, "field 'for': '-2s': expected a duration"),
    ({"name": "x", "kind": "level", "metric": "m", "below": 40, "for": "ten"}, "field 'for': 'ten': expected a duration"),
    ({"name": "x", "kind": "level", "metric": "m", "below": 40, "stat": "p99"}, "alert rule 'x': field 'stat' must be"),
    ({"name": "x", "kind": "drop", "metric": "m", "points": 15}, "alert rule 'x': field 'half_life' or 'span' is required"),
    ({"name": "x", "kind": "drop", "metric": "m", "points": -1, "span": 60}, "alert rule 'x': field 'points' must be > 0"),
    ({"name": "x", "kind": "cusum", "metric": "m", "k": 0.5, "span": 60}, "alert rule 'x': field 'h' is required"),
    ({"name": "x", "kind": "cusum", "metric": "m", "k": 0.5, "h": 0, "span": 60}, "field 'h' must be > 0"),
    ({"name": "x", "kind": "freeze"}, "alert rule 'x': field 'for' is required for kind freeze"),
    ({"name": "x", "kind": "black", "for": 1, "threshold": 1.5}, "alert rule 'x': field 'threshold' must be a fraction"),
])
def test_bad_rules_fail_with_one_line_naming_rule_and_field(config, message):
    with pytest.raises(InputError) as e:
        parse_rules([config])
    assert message in str(e.value) and "\n" not in str(e.value)


def test_duplicate_rule_names_are_rejected():
    rule = {"name": "black", "kind": "black", "for": 1}
    with pytest.raises(InputError, match="alert rule 'black': field 'name' is used by another rule"):
        parse_rules([rule, rule])


def test_records_round_trip_through_json_and_parquet(tmp_path):
    values = series((2, 80), (2, 30), (2, 80))
    events, _ = run([LevelRule(name="low", metric="nr.liqe", below=40, for_s=1.0)], values,
                    thumbnail=lambda i, p: f"/thumbs/{i}.jpg")
    assert len(events) == 3
    stream_events = [StreamEvent("cam1", "up", TS), StreamEvent("cam1", "decode_error", TS, {"error": "bad NAL"})]
    row = json.loads(to_json(events[-1]))
    assert row["evidence"] == events[-1].evidence and row["state"] == "resolved" and row["schema_version"] == 1
    assert json.loads(to_json(stream_events[1])) == {"stream_id": "cam1", "event": "decode_error",
                                                    "at": "2026-11-22T12:00:00Z", "detail": {"error": "bad NAL"},
                                                    "schema_version": 1}
    sink = parquet.ParquetSink(str(tmp_path))
    sink.write(events + stream_events)
    sink.close()
    alerts = parquet.read(str(tmp_path), "alerts")
    assert alerts.schema == AlertEvent.schema
    for got, want in zip(alerts.to_pylist(), events):
        assert json.loads(got.pop("evidence")) == want.evidence
        assert got == {k: getattr(want, k) for k in got}
    stream = parquet.read(str(tmp_path), "events")
    assert stream.schema == StreamEvent.schema
    assert [(r["event"], json.loads(r["detail"])) for r in stream.to_pylist()] == [("up", {}),
                                                                                  ("decode_error", {"error": "bad NAL"})]
    jsonl = JsonlSink(str(tmp_path / "jsonl"))
    jsonl.write(events + stream_events)
    jsonl.close()
    assert (tmp_path / "jsonl" / "alerts.jsonl").read_text().splitlines() == [to_json(e) for e in events]
    with pytest.raises(ValueError, match="unknown stream event 'exploded'"):
        StreamEvent("cam1", "exploded")


@pytest.fixture
def webhook_server():
    """An HTTP endpoint on a free loopback port that answers with the next status of `replies` (then 200); it keeps
    the bodies and the Authorization headers it received."""
    received, replies, authorizations = [], [], []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            received.append((self.headers["Content-Type"], self.rfile.read(int(self.headers["Content-Length"]))))
            authorizations.append(self.headers["Authorization"])
            self.send_response(replies.pop(0) if replies else 200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook", received, replies, authorizations
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def alert(state="firing"):
    return AlertEvent("low@cam1@10.000", "cam1", "low", "nr.liqe", state, 10.0, 11.0, 30.0, 40.0,
                      {"frame_index": 250, "pts_s": 10.0, "value": 30.0, "thumbnail": None})


def test_webhook_retries_after_a_failed_attempt(webhook_server):
    url, received, replies, _ = webhook_server
    replies.append(503)
    event = alert()
    assert WebhookSink(url, retries=3, backoff_s=0.01).post(event)
    assert received == [("application/json", to_json(event).encode())] * 2


def test_webhook_gives_up_on_client_errors_and_dead_endpoints(webhook_server, caplog):
    url, received, replies, _ = webhook_server
    replies += [400, 400]
    assert not WebhookSink(url, retries=3, backoff_s=0.01).post(alert())
    assert len(received) == 1  # a client error is not retried
    replies.clear()
    notifier = WebhookSink(url, backoff_s=0.01)
    notifier.write([alert("pending"), alert("firing"), alert("resolved"), StreamEvent("cam1", "up")])
    assert [json.loads(b)["state"] for _, b in received[1:]] == ["firing", "resolved"]
    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dead = WebhookSink(f"http://127.0.0.1:{port}/hook", retries=2, backoff_s=0.01, timeout_s=1)
    assert not dead.post(alert())
    assert "not delivered after 3 attempt(s)" in caplog.text


def test_webhook_with_credentials_in_its_url_sends_basic_auth_and_never_logs_them(webhook_server, caplog):
    url, received, replies, authorizations = webhook_server
    secret = url.replace("http://", "http://ops:s%3Acret@")
    hook = WebhookSink(secret, retries=0)
    assert hook.post(alert()) and len(received) == 1
    assert authorizations == ["Basic " + base64.b64encode(b"ops:s:cret").decode()]
    replies.append(500)
    assert not hook.post(alert())
    assert "s%3Acret" not in caplog.text and "s:cret" not in caplog.text and "***@127.0.0.1" in caplog.text
    assert "cret" not in (hook.health() or "") and hook.lost == 1
