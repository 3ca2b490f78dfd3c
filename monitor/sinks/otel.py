"""OpenTelemetry metrics sink: frame scores and window statistics as metrics, plus the runtime's health counters.

Each sink owns its MeterProvider (not the process-global one), so several monitors or tests in one
process never mix their metrics. Records become metrics in `write`; the live runtime calls the
explicit methods for what records do not carry (decoded/dropped frames, latencies, firing alerts).
"""
from __future__ import annotations

import sys
from typing import IO

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import ConsoleMetricExporter, MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource

from monitor.records import AlertEvent, FrameScore, WindowStat
from monitor.sinks import RuntimeStats, Sink

SCORE_BUCKETS = tuple(range(0, 101, 10))  # scores are 0–100; the SDK's default buckets are for milliseconds
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)  # seconds


class OTelSink(Sink):
    """Metrics (attributes in brackets):

    - vqmon.frame.score histogram, 0–100 (stream_id, metric): frame records that have a score
    - vqmon.frame.records counter (stream_id, metric): every frame record
    - vqmon.window.mean, vqmon.window.p10 gauges (stream_id, metric, scale): the latest window
    - vqmon.frames.decoded, vqmon.frames.dropped counters (stream_id)
    - vqmon.decode.duration, vqmon.inference.duration histograms in seconds (stream_id; model for inference)
    - vqmon.alerts.firing up-down counter (stream_id, rule)
    """

    kinds = frozenset({"frames", "windows", "alerts"})

    def __init__(self, exporter: str | None = "console", readers: tuple[MetricReader, ...] = (),
                 export_interval_s: float = 10.0, console_out: IO = sys.stdout, service_name: str = "vqmon",
                 prometheus: str | None = None):
        """`exporter`: "console", "otlp" (needs opentelemetry-exporter-otlp; endpoint from the standard
        OTEL_EXPORTER_OTLP_* variables) or None; `readers`: extra readers, e.g. an InMemoryMetricReader;
        `prometheus`: "host:port" to serve the metrics as Prometheus text at http://host:port/metrics."""
        readers = list(readers)
        self._http = None
        if prometheus:
            readers.append(self._serve_prometheus(prometheus))
        self._firing: set[str] = set()  # alert_ids counted as firing
        if exporter is not None:
            readers.append(PeriodicExportingMetricReader(make_exporter(exporter, console_out),
                                                         export_interval_millis=export_interval_s * 1000))
        self.provider = MeterProvider(metric_readers=readers, shutdown_on_exit=False,
                                      resource=Resource.create({"service.name": service_name}))
        meter = self.provider.get_meter("vqmon")
        self._score = meter.create_histogram("vqmon.frame.score", unit="1", description="0-100 frame quality score",
                                             explicit_bucket_boundaries_advisory=SCORE_BUCKETS)
        self._frame_records = meter.create_counter("vqmon.frame.records", description="frame score records")
        self._window_mean = meter.create_gauge("vqmon.window.mean", description="mean over the latest window")
        self._window_p10 = meter.create_gauge("vqmon.window.p10", description="10th percentile over the latest window")
        self._decoded = meter.create_counter("vqmon.frames.decoded", description="frames decoded")
        self._dropped = meter.create_counter("vqmon.frames.dropped", description="frames lost to corrupt data or overload")
        self._decode_s = meter.create_histogram("vqmon.decode.duration", unit="s", description="decode time per frame",
                                                explicit_bucket_boundaries_advisory=LATENCY_BUCKETS)
        self._inference_s = meter.create_histogram("vqmon.inference.duration", unit="s",
                                                   description="model time per batch",
                                                   explicit_bucket_boundaries_advisory=LATENCY_BUCKETS)
        self._alerts = meter.create_up_down_counter("vqmon.alerts.firing", description="alerts now firing")

    def write(self, records) -> None:
        """Frame scores, window stats and alert transitions become metrics; other record kinds have none here."""
        for r in records:
            if isinstance(r, FrameScore):
                attrs = {"stream_id": r.stream_id, "metric": r.metric}
                self._frame_records.add(1, attrs)
                if r.score is not None:
                    self._score.record(r.score, attrs)
            elif isinstance(r, WindowStat):
                attrs = {"stream_id": r.stream_id, "metric": r.metric, "scale": r.scale}
                self._window_mean.set(r.mean, attrs)
                self._window_p10.set(r.p10, attrs)
            elif isinstance(r, AlertEvent):  # counted once per alert: end-of-stream flushes repeat firing events
                if r.state == "firing" and r.alert_id not in self._firing:
                    self._firing.add(r.alert_id)
                    self.alert_fired(r.stream_id, r.rule)
                elif r.state == "resolved" and r.alert_id in self._firing:
                    self._firing.discard(r.alert_id)
                    self.alert_resolved(r.stream_id, r.rule)

    def runtime(self, stream_id: str, stats: RuntimeStats) -> None:
        """The pipeline's counters: frames decoded and dropped, decode time per frame, inference time per scorer."""
        if stats.decoded:
            self.frames_decoded(stream_id, stats.decoded)
        if stats.dropped:
            self.frames_dropped(stream_id, stats.dropped)
        for seconds in stats.decode_s:
            self.decode_latency(stream_id, seconds)
        for model, seconds in stats.inference_s.items():
            self.inference_latency(stream_id, model, seconds)

    def frames_decoded(self, stream_id: str, n: int = 1) -> None:
        self._decoded.add(n, {"stream_id": stream_id})

    def frames_dropped(self, stream_id: str, n: int = 1) -> None:
        self._dropped.add(n, {"stream_id": stream_id})

    def decode_latency(self, stream_id: str, seconds: float) -> None:
        self._decode_s.record(seconds, {"stream_id": stream_id})

    def inference_latency(self, stream_id: str, model: str, seconds: float) -> None:
        self._inference_s.record(seconds, {"stream_id": stream_id, "model": model})

    def alert_fired(self, stream_id: str, rule: str) -> None:
        self._alerts.add(1, {"stream_id": stream_id, "rule": rule})

    def alert_resolved(self, stream_id: str, rule: str) -> None:
        self._alerts.add(-1, {"stream_id": stream_id, "rule": rule})

    def flush(self) -> None:
        self.provider.force_flush()

    def close(self) -> None:
        self.provider.shutdown()
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()

    def _serve_prometheus(self, address: str) -> MetricReader:
        from opentelemetry.exporter.prometheus import PrometheusMetricReader
        from prometheus_client import start_http_server

        host, _, port = address.rpartition(":")
        reader = PrometheusMetricReader()  # a pull reader: collected at each scrape
        self._http, _ = start_http_server(int(port), addr=host or "127.0.0.1")
        return reader


def make_exporter(kind: str, console_out: IO = sys.stdout):
    if kind == "console":
        return ConsoleMetricExporter(out=console_out)
    if kind == "otlp":
        try:  # optional dependency, imported only when asked for
            from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        except ImportError as e:
            raise RuntimeError("the OTLP exporter needs the opentelemetry-exporter-otlp package "
                               "(pip install opentelemetry-exporter-otlp)") from e
        return OTLPMetricExporter()
    raise ValueError(f"unknown metrics exporter {kind!r}: use 'console' or 'otlp'")
