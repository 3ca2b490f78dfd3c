"""OpenTelemetry sink: metrics collected by the SDK's in-memory reader carry the right names, attributes and values."""
from __future__ import annotations

import io
import json
from datetime import datetime, timezone

import pytest
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from monitor.records import FrameScore, WindowStat
from monitor.sinks.otel import SCORE_BUCKETS, OTelSink

TS = datetime(2026, 11, 23, 12, 0, tzinfo=timezone.utc)


def window(stream, metric, scale, mean, p10):
    return WindowStat.build(stream, metric, scale, 0.0, 2.0, "tumbling", 50,
                            {"count": 50, "mean": mean, "min": 0.0, "max": 100.0, "std": 1.0, "p5": p10 - 1,
                             "p10": p10, "p50": mean, "harmonic_mean": mean})


def collected(reader) -> dict[str, dict[frozenset, object]]:
    """metric name → {attributes: data point}."""
    out: dict[str, dict[frozenset, object]] = {}
    for rm in reader.get_metrics_data().resource_metrics:
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                out[m.name] = {frozenset(p.attributes.items()): p for p in m.data.data_points}
    return out


def attrs(**kw) -> frozenset:
    return frozenset(kw.items())


def test_records_and_runtime_events_become_metrics():
    reader = InMemoryMetricReader()
    sink = OTelSink(exporter=None, readers=(reader,))
    scores = [5.0, 15.0, 95.0, 99.0]
    sink.write([FrameScore("cam1", i, i / 25, TS, 640, 360, "fr.psnr_y", 20 + s * 0.3, s) for i, s in enumerate(scores)])
    sink.write([FrameScore("cam2", 0, 0.0, TS, 640, 360, "sig.sharpness", 812.0, None)])  # no score: counted only
    sink.write([window("cam1", "fr.psnr_y", "score", 50.0, 10.0), window("cam1", "fr.psnr_y", "value", 35.0, 23.0)])
    sink.write([window("cam1", "fr.psnr_y", "score", 60.0, 12.0)])  # the latest window wins
    sink.frames_decoded("cam1", 25)
    sink.frames_decoded("cam1", 5)
    sink.frames_dropped("cam1", 2)
    sink.decode_latency("cam1", 0.004)
    sink.decode_latency("cam1", 0.012)
    sink.inference_latency("cam1", "liqe/lite@abc", 0.3)
    sink.alert_fired("cam1", "low_quality")
    sink.alert_fired("cam1", "freeze")
    sink.alert_resolved("cam1", "freeze")

    m = collected(reader)
    assert set(m) == {"vqmon.frame.score", "vqmon.frame.records", "vqmon.window.mean", "vqmon.window.p10",
                      "vqmon.frames.decoded", "vqmon.frames.dropped", "vqmon.decode.duration",
                      "vqmon.inference.duration", "vqmon.alerts.firing"}
    psnr = attrs(stream_id="cam1", metric="fr.psnr_y")
    hist = m["vqmon.frame.score"][psnr]
    assert list(m["vqmon.frame.score"]) == [psnr]
    assert (hist.count, hist.sum, hist.min, hist.max) == (4, sum(scores), 5.0, 99.0)
    assert tuple(hist.explicit_bounds) == SCORE_BUCKETS
    assert list(hist.bucket_counts) == [0, 1, 1, 0, 0, 0, 0, 0, 0, 0, 2, 0]  # (≤0], (0,10], (10,20], …, (90,100], >100
    assert {k: p.value for k, p in m["vqmon.frame.records"].items()} == \
        {psnr: 4, attrs(stream_id="cam2", metric="sig.sharpness"): 1}
    score_w = attrs(stream_id="cam1", metric="fr.psnr_y", scale="score")
    value_w = attrs(stream_id="cam1", metric="fr.psnr_y", scale="value")
    assert {k: p.value for k, p in m["vqmon.window.mean"].items()} == {score_w: 60.0, value_w: 35.0}
    assert {k: p.value for k, p in m["vqmon.window.p10"].items()} == {score_w: 12.0, value_w: 23.0}
    assert m["vqmon.frames.decoded"][attrs(stream_id="cam1")].value == 30
    assert m["vqmon.frames.dropped"][attrs(stream_id="cam1")].value == 2
    decode = m["vqmon.decode.duration"][attrs(stream_id="cam1")]
    assert (decode.count, decode.sum) == (2, pytest.approx(0.016))
    assert m["vqmon.inference.duration"][attrs(stream_id="cam1", model="liqe/lite@abc")].count == 1
    assert {k: p.value for k, p in m["vqmon.alerts.firing"].items()} == \
        {attrs(stream_id="cam1", rule="low_quality"): 1, attrs(stream_id="cam1", rule="freeze"): 0}
    sink.close()


def test_console_exporter_writes_the_metrics_on_close():
    out = io.StringIO()
    sink = OTelSink(exporter="console", console_out=out, export_interval_s=3600)
    sink.write([FrameScore("cam1", 0, 0.0, TS, 640, 360, "nr.liqe", 3.1, 52.5)])
    sink.close()  # shutdown exports what the periodic reader has not yet
    exported = json.loads(out.getvalue())
    [metric] = [m for rm in exported["resource_metrics"] for sm in rm["scope_metrics"] for m in sm["metrics"]
                if m["name"] == "vqmon.frame.score"]
    [point] = metric["data"]["data_points"]
    assert point["attributes"] == {"stream_id": "cam1", "metric": "nr.liqe"} and point["sum"] == 52.5
    assert exported["resource_metrics"][0]["resource"]["attributes"]["service.name"] == "vqmon"


def test_missing_otlp_exporter_is_a_clear_error():
    try:
        import opentelemetry.exporter.otlp.proto.http.metric_exporter  # noqa: F401
        pytest.skip("opentelemetry-exporter-otlp is installed")
    except ImportError:
        pass
    with pytest.raises(RuntimeError, match="pip install opentelemetry-exporter-otlp"):
        OTelSink(exporter="otlp")
    with pytest.raises(ValueError, match="unknown metrics exporter 'prom'"):
        OTelSink(exporter="prom")


def test_alert_events_drive_the_firing_gauge_once_per_alert():
    from monitor.records import AlertEvent

    reader = InMemoryMetricReader()
    sink = OTelSink(exporter=None, readers=(reader,))

    def event(state, alert_id="low@cam1@10.0"):
        return AlertEvent(alert_id=alert_id, stream_id="cam1", rule="low", metric="nr.liqe", state=state, since_s=10.0,
                          at_s=12.0, value=30.0, threshold=40.0, evidence={})

    sink.write([event("pending"), event("firing"), event("firing")])  # end-of-stream flushes repeat a firing event
    assert collected(reader)["vqmon.alerts.firing"][attrs(stream_id="cam1", rule="low")].value == 1
    sink.write([event("resolved"), event("resolved")])
    assert collected(reader)["vqmon.alerts.firing"][attrs(stream_id="cam1", rule="low")].value == 0
    sink.close()


def test_prometheus_endpoint_serves_the_metrics():
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    from broker import free_port

    port = free_port()
    sink = OTelSink(exporter=None, prometheus=f"127.0.0.1:{port}")
    try:
        sink.write([FrameScore("cam1", i, i / 25, TS, 640, 360, "fr.psnr_y", 40.0, 66.0) for i in range(3)])
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    finally:
        sink.close()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    hist = families["vqmon_frame_score"]
    count = next(s.value for s in hist.samples if s.name.endswith("_count") and s.labels.get("stream_id") == "cam1")
    assert count == 3
