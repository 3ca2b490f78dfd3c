"""Live status page of `vqmon watch --http [HOST:]PORT`: stdlib ThreadingHTTPServer in a daemon thread.

    /             HTML, rendered on each request, reloads itself every 2 s (meta refresh: no script needed)
    /status.json  the same data for programs
    /metrics      Prometheus text (prometheus_client renders it from the streams' status)
    /healthz      "ok" while at least one stream thread runs, else 503

It reads the Watcher's StreamStatus objects (updated from the records each pipeline writes), so
it costs nothing between requests. Bound to 127.0.0.1 unless a host is given; URLs are shown
through `redact()`, so credentials never reach the page.
"""
from __future__ import annotations

import dataclasses
import html
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from monitor.errors import InputError
from monitor.redaction import redact
from monitor.scoring.metrics import SCORE_MEANING, better, metric_info, unit, with_unit

REFRESH_S = 2
SPARK_W, SPARK_H = 120, 24


def parse_address(text: str) -> tuple[str, int]:
    """'8080' or ':8080' → ('127.0.0.1', 8080); 'HOST:PORT' as given."""
    host, _, port = str(text).rpartition(":")
    if not port.isdigit() or not 0 <= int(port) < 65536:
        raise InputError(f"--http {text}: expected [host:]port, e.g. 127.0.0.1:8080")
    return host.strip("[]") or "127.0.0.1", int(port)


def snapshot(watcher) -> dict:
    """Every stream's state as plain data (copies, taken while the pipelines keep writing)."""
    urls = {sc.id: redact(sc.url) for sc in watcher.cfg.streams}
    streams = {}
    for sid, st in list(watcher.status.items()):
        history = dict(st.history)
        streams[sid] = {
            "url": urls.get(sid, ""), "state": st.state, "frames": st.frames, "fps": round(st.fps(), 2),
            "lag_s": _round(st.lag_s()), "behind": st.behind, "sampling": st.sampling,
            "sample_fps": _round(st.sample_fps), "frames_dropped": st.frames_dropped,
            "restarts": st.restarts, "firing": sorted(set(st.firing)),
            "windows": {m: _window(m, v, dict(st.last_value).get(m), history.get(m, ()))
                        for m, v in sorted(dict(st.last_window).items())},
        }
    sinks = [dataclasses.asdict(h) for h in watcher.sinks.health()]
    return {"running": watcher.running(), "streams": streams, "sinks": sinks}


def _window(metric: str, score: float, value: float | None, recent) -> dict:
    """A metric's latest window: mean 0–100 score and mean native value side by side, with its unit."""
    info = metric_info(metric)
    return {"mean": score, "value": _round(value), "unit": unit(info), "better": better(info), "recent": list(recent)}


class _Collector:
    """prometheus_client custom collector: gauges and counters read from the snapshot at scrape time."""

    def __init__(self, watcher):
        self.watcher = watcher

    def collect(self):
        full = snapshot(self.watcher)
        snap = full["streams"]
        up = GaugeMetricFamily("vqmon_stream_up", "1 while the stream delivers frames", labels=["stream_id"])
        frames = CounterMetricFamily("vqmon_stream_frames", "frames scored", labels=["stream_id"])
        fps = GaugeMetricFamily("vqmon_stream_fps", "frames scored per second since start", labels=["stream_id"])
        lag = GaugeMetricFamily("vqmon_stream_lag_seconds", "seconds since the newest scored frame was received",
                                labels=["stream_id"])
        behind = GaugeMetricFamily("vqmon_stream_behind", "1 while scoring lags the live stream by more than max_lag",
                                   labels=["stream_id"])
        dropped = CounterMetricFamily("vqmon_stream_frames_dropped", "frames to score dropped because scoring lagged",
                                      labels=["stream_id"])
        score = GaugeMetricFamily("vqmon_window_score_mean", f"latest window mean of the {SCORE_MEANING}",
                                  labels=["stream_id", "metric"])
        value = GaugeMetricFamily("vqmon_window_value_mean", "latest window mean of the native value, in `unit`",
                                  labels=["stream_id", "metric", "unit"])
        firing = GaugeMetricFamily("vqmon_alert_firing", "1 while the alert rule fires", labels=["stream_id", "rule"])
        for sid, s in snap.items():
            up.add_metric([sid], 1.0 if s["state"] == "up" else 0.0)
            frames.add_metric([sid], s["frames"])
            fps.add_metric([sid], s["fps"])
            if s["lag_s"] is not None:
                lag.add_metric([sid], s["lag_s"])
            behind.add_metric([sid], 1.0 if s["behind"] else 0.0)
            dropped.add_metric([sid], s["frames_dropped"])
            for m, w in s["windows"].items():
                score.add_metric([sid, m], w["mean"])
                if w["value"] is not None:
                    value.add_metric([sid, m, w["unit"]], w["value"])
            for rule in s["firing"]:
                firing.add_metric([sid, rule], 1.0)
        sink_ok = GaugeMetricFamily("vqmon_sink_ok", "1 while the sink delivers its records", labels=["sink"])
        sink_lost = CounterMetricFamily("vqmon_sink_records_lost", "records the sink could neither deliver nor keep",
                                        labels=["sink"])
        sink_queued = GaugeMetricFamily("vqmon_sink_queued", "records waiting for the sink", labels=["sink"])
        for h in full["sinks"]:
            sink_ok.add_metric([h["name"]], 1.0 if h["ok"] else 0.0)
            sink_lost.add_metric([h["name"]], h["lost"])
            sink_queued.add_metric([h["name"]], h["queued"])
        yield from (up, frames, fps, lag, behind, dropped, score, value, firing, sink_ok, sink_lost, sink_queued)


class StatusServer:
    def __init__(self, watcher, address: str):
        host, port = parse_address(address)
        self.watcher = watcher
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Collector(watcher))
        page = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                page.handle(self)

            def log_message(self, *args):  # no per-request lines on stderr next to the status line
                pass

        try:
            self.httpd = ThreadingHTTPServer((host, port), Handler)
        except OSError as e:
            raise InputError(f"--http {address}: cannot listen: {e.strerror or e}") from None
        self.httpd.daemon_threads = True
        self.url = f"http://{host}:{self.httpd.server_address[1]}/"
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="status-page", daemon=True)
        self._thread.start()

    def handle(self, req: BaseHTTPRequestHandler) -> None:
        path = req.path.split("?")[0]
        if path == "/":
            status, ctype, body = 200, "text/html; charset=utf-8", render_html(snapshot(self.watcher)).encode()
        elif path == "/status.json":
            status, ctype, body = 200, "application/json", json.dumps(snapshot(self.watcher)).encode()
        elif path == "/metrics":
            status, ctype, body = 200, "text/plain; version=0.0.4; charset=utf-8", generate_latest(self.registry)
        elif path == "/healthz":
            ok = self.watcher.running()
            status, ctype, body = (200 if ok else 503), "text/plain", (b"ok\n" if ok else b"no stream running\n")
        else:
            status, ctype, body = 404, "text/plain", b"not found\n"
        req.send_response(status)
        req.send_header("Content-Type", ctype)
        req.send_header("Content-Length", str(len(body)))
        req.send_header("Cache-Control", "no-store")
        req.end_headers()
        req.wfile.write(body)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def render_html(snap: dict) -> str:
    rows = []
    for sid, s in snap["streams"].items():
        scores = "".join(f"<div class=metric data-metric='{_e(m)}'><b>{_e(m)}</b> "
                         f"{_e(with_unit(w['value'], metric_info(m)))} · <span class=score>{w['mean']:.0f}</span> "
                         f"{_spark(w['recent'])}</div>" for m, w in s["windows"].items()) or "—"
        alerts = "".join(f"<span class=firing>{_e(r)}</span> " for r in s["firing"]) or "—"
        rows.append(f"<tr class=stream data-stream='{_e(sid)}'><td>{_e(sid)}<div class=url>{_e(s['url'])}</div></td>"
                    f"<td class='state {_e(s['state'])}'>{_e(s['state'])}</td><td>{s['frames']}</td>"
                    f"<td>{s['fps']:.1f}</td><td class=keepup>{_keepup_cell(s)}</td><td>{scores}</td><td>{alerts}</td></tr>")
    return (f"<!doctype html><html><head><meta charset=utf-8><meta http-equiv=refresh content={REFRESH_S}>"
            "<link rel=icon href='data:,'><title>vqmon status</title><style>"
            "body{font:13px system-ui,sans-serif;margin:16px}table{border-collapse:collapse}"
            "td,th{padding:4px 10px;border-bottom:1px solid #ddd;text-align:left;vertical-align:top}"
            ".url,.note{color:#777;font-size:11px}.up{color:#1a7f37}.down,.stopped{color:#c62828}"
            ".firing,.behind{background:#c62828;color:#fff;padding:1px 5px;border-radius:3px}"
            ".metric svg{vertical-align:middle}</style></head><body><h1>vqmon status</h1>"
            "<table><tr><th>stream</th><th>state</th><th>frames</th><th>fps</th><th>lag · sampling</th>"
            f"<th>latest windows: mean value · score</th><th>alerts firing</th></tr>{''.join(rows)}</table>"
            f"<p class=note>{_e(SCORE_MEANING)}</p>{_sinks_html(snap.get('sinks', []))}"
            "<p>also: <a href='/status.json'>status.json</a> · <a href='/metrics'>metrics</a> · "
            "<a href='/healthz'>healthz</a></p></body></html>")


def _sinks_html(sinks: list[dict]) -> str:
    """One line per sink: ok, or what is wrong and how many records it lost."""
    rows = "".join(f"<tr class=sink data-sink='{_e(h['name'])}'><td>{_e(h['name'])}</td>"
                   f"<td class='{'up' if h['ok'] else 'down'}'>{'ok' if h['ok'] else _e(h['problem'])}</td>"
                   f"<td>{h['queued']}</td><td>{h['lost']}</td></tr>" for h in sinks)
    return f"<h2>sinks</h2><table><tr><th>sink</th><th>state</th><th>queued</th><th>lost</th></tr>{rows}</table>" \
        if rows else ""


def _keepup_cell(s: dict) -> str:
    """Lag while up, a `behind` badge, the sampling in force and frames dropped (when any)."""
    parts = [f"{s['lag_s']:.1f} s" if s["lag_s"] is not None and s["state"] == "up" else "—"]
    if s["behind"]:
        parts.append("<span class=behind>behind</span>")
    parts.append(f"<div class=note>{_e(s['sampling'])}</div>")
    if s["frames_dropped"]:
        parts.append(f"<div class=note>{s['frames_dropped']} dropped</div>")
    return " ".join(parts)


def _round(v: float | None) -> float | None:
    return None if v is None else round(v, 2)


def _spark(values: list[float]) -> str:
    """A tiny inline SVG line of recent window means on the 0–100 scale."""
    if len(values) < 2:
        return ""
    step = SPARK_W / (len(values) - 1)
    pts = " ".join(f"{i * step:.1f},{SPARK_H - max(0.0, min(100.0, v)) / 100 * SPARK_H:.1f}" for i, v in enumerate(values))
    return (f"<svg class=spark width={SPARK_W} height={SPARK_H} viewBox='0 0 {SPARK_W} {SPARK_H}'>"
            f"<polyline points='{pts}' fill=none stroke='#1f77b4' stroke-width=1.5 /></svg>")


def _e(text) -> str:
    return html.escape(str(text), quote=True)
