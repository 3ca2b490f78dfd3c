"""`vqmon watch` configuration: a YAML/JSON file of streams and sinks, or the same built from CLI flags.

Validation happens here, once, with one-line errors naming the file and the key, so a bad
config fails at start-up and never hours later inside a stream thread.

    device: auto                # cpu, cuda, cuda:N
    defaults:                   # applied to every stream unless it says otherwise
      sample: 5fps
      window: 10s/2s
      max_lag: 2s               # a live stream whose scored frames lag more than this is `behind` (a duration)
      adaptive: true            # behind: lower the sampling to what the scorers sustain, raise it back later
      models: [liqe]
      alerts:
        - {name: low-quality, kind: level, metric: nr.liqe, stat: p10, below: 40, for: 10s, recover_above: 45, recover_for: 5s}
    streams:
      - {id: cam1, url: "rtmp://ingest:1935/live/cam1"}
      - {id: cam2, url: "srt://10.0.0.2:9000", ref: "udp://239.0.0.1:5000", vmaf: true}   # fr.vmaf needs a ref
        # vmaf_model: vmaf_v0.6.1 (default), vmaf_v0.6.1neg, vmaf_4k_v0.6.1 or a .json file; vmaf_threads: 2
    sinks:
      parquet: {out: /var/lib/vqmon, roll: 60s}
      kafka: {bootstrap: "kafka:9092", topic_prefix: vqmon, spool: /var/spool/vqmon}
      otel: {exporter: console, prometheus: "127.0.0.1:9464"}   # exporter: console, otlp or null
      jsonl: {out: "-"}
      webhook: {url: "https://alerts.example/hook", retries: 3}   # POSTs firing/resolved alert events
    http: "127.0.0.1:8080"      # status page, /status.json, /metrics, /healthz (monitor/statuspage.py)
    ray:                        # only `vqmon live` (pipelines/live.py) reads this: placement of each stream's actor
      num_gpus: 0.25            # GPU share per stream (4 streams per GPU); 0 = CPU only
      num_cpus: 1
      backoff: 1s               # first restart delay after a crash, doubling up to max_backoff
      max_backoff: 60s
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, fields

from monitor.errors import InputError

STREAM_KEYS = {"id", "url", "listen", "realtime", "ref", "ref_listen", "sample", "window", "models", "alerts",
               "rtsp_transport", "open_timeout", "read_timeout", "max_reconnects", "max_lag", "adaptive",
               "vmaf", "vmaf_model", "vmaf_threads"}
SINK_KEYS = {"parquet": {"out", "roll", "rows"}, "kafka": {"bootstrap", "topic_prefix", "spool"},
             "otel": {"exporter", "prometheus"}, "jsonl": {"out"}, "webhook": {"url", "retries"}}
RAY_KEYS = {"num_gpus", "num_cpus", "backoff", "max_backoff"}


@dataclass
class StreamConfig:
    id: str
    url: str
    listen: bool = False  # RTMP/SRT listen mode: wait for the encoder to push to us
    realtime: bool = False  # play a file at its own frame rate (demos, replay tests)
    ref: str | None = None  # reference stream or file for FR metrics (aligned automatically)
    ref_listen: bool = False
    sample: str = "all"
    window: str = "2s"
    models: list[str] = field(default_factory=list)
    alerts: list[dict] = field(default_factory=list)
    rtsp_transport: str | None = None
    open_timeout: float = 10.0
    read_timeout: float = 5.0
    max_reconnects: int | None = None
    max_lag: float = 2.0  # seconds from receiving a frame to scoring it beyond which the stream is `behind`
    adaptive: bool = True  # lower the sampling while behind (live streams and realtime replays)
    vmaf: bool = False  # fr.vmaf (monitor/vmaf.py) on frames paired with `ref`
    vmaf_model: str = "vmaf_v0.6.1"
    vmaf_threads: int = 2


@dataclass
class WatchConfig:
    streams: list[StreamConfig]
    sinks: dict[str, dict] = field(default_factory=dict)
    device: str = "auto"
    http: str | None = None  # [host:]port of the status page
    ray: dict = field(default_factory=dict)  # placement and restart backoff on Ray (RAY_KEYS)


def load(path: str) -> WatchConfig:
    """Read and validate a YAML (.yaml/.yml) or JSON config file."""
    return parse(_read(path), source=path)


def _read(path: str):
    if not os.path.exists(path):
        raise InputError(f"{path}: no such file")
    text = open(path, encoding="utf-8").read()
    try:
        if path.endswith((".yaml", ".yml")):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except Exception as e:  # yaml and json raise their own error types
        raise InputError(f"{path}: not valid {'YAML' if path.endswith(('.yaml', '.yml')) else 'JSON'}: "
                         f"{str(e).splitlines()[0]}") from None
    return data


def load_rules(path: str) -> list[dict]:
    """A YAML/JSON file holding a list of alert rules (validated when the engine parses them)."""
    data = _read(path)
    if not isinstance(data, list):
        raise InputError(f"{path}: expected a list of alert rules")
    return data


def parse(data, source: str = "config") -> WatchConfig:
    if not isinstance(data, dict):
        raise InputError(f"{source}: expected a mapping with 'streams' (and optional 'sinks', 'defaults', 'device', "
                         "'http', 'ray')")
    unknown = set(data) - {"streams", "sinks", "defaults", "device", "http", "ray"}
    if unknown:
        raise InputError(f"{source}: unknown top-level key(s) {', '.join(sorted(unknown))}")
    defaults = data.get("defaults") or {}
    _check_keys(defaults, STREAM_KEYS - {"id", "url"}, f"{source}: defaults")
    raw_streams = data.get("streams")
    if not raw_streams or not isinstance(raw_streams, list):
        raise InputError(f"{source}: 'streams' must be a non-empty list")
    streams, seen = [], set()
    for i, raw in enumerate(raw_streams):
        where = f"{source}: streams[{i}]"
        if not isinstance(raw, dict) or "url" not in raw:
            raise InputError(f"{where}: each stream needs at least a 'url'")
        _check_keys(raw, STREAM_KEYS, where)
        merged = {**defaults, **raw}
        merged.setdefault("id", _default_id(raw["url"], i))
        if merged["id"] in seen:
            raise InputError(f"{where}: duplicate stream id {merged['id']!r}")
        seen.add(merged["id"])
        if "max_lag" in merged:
            merged["max_lag"] = _seconds(merged["max_lag"], f"{where}: max_lag")
        if merged.get("vmaf") and not merged.get("ref"):
            raise InputError(f"{where}: 'vmaf' needs a 'ref' (VMAF compares with a reference)")
        streams.append(_typed(StreamConfig, merged, where))
    sinks = data.get("sinks") or {}
    if not isinstance(sinks, dict):
        raise InputError(f"{source}: 'sinks' must be a mapping")
    for name, opts in sinks.items():
        if name not in SINK_KEYS:
            raise InputError(f"{source}: sinks.{name}: unknown sink (known: {', '.join(SINK_KEYS)})")
        _check_keys(opts or {}, SINK_KEYS[name], f"{source}: sinks.{name}")
    for name, key in (("kafka", "bootstrap"), ("webhook", "url")):
        if name in sinks and not (sinks[name] or {}).get(key):
            raise InputError(f"{source}: sinks.{name}: '{key}' is required")
    http = data.get("http")
    if http is not None and not isinstance(http, (str, int)):
        raise InputError(f"{source}: 'http' must be [host:]port, got {http!r}")
    placement = data.get("ray") or {}
    _check_keys(placement, RAY_KEYS, f"{source}: ray")
    for key in ("num_gpus", "num_cpus"):
        v = placement.get(key, 0)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
            raise InputError(f"{source}: ray.{key} must be a number >= 0, got {v!r}")
    for key in ("backoff", "max_backoff"):
        if key in placement:
            from monitor.cli import parse_duration

            try:
                parse_duration(str(placement[key]))
            except InputError as e:
                raise InputError(f"{source}: ray.{key}: {e}") from None
    return WatchConfig(streams, {k: dict(v or {}) for k, v in sinks.items()}, str(data.get("device", "auto")),
                       None if http is None else str(http), dict(placement))


def _seconds(value, where: str) -> float:
    """A duration given as seconds (a positive number) or text such as 2s or 500ms."""
    from monitor.cli import parse_duration

    if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
        return float(value)
    try:
        return parse_duration(str(value))
    except InputError as e:
        raise InputError(f"{where}: {e}") from None


def _check_keys(d: dict, allowed: set[str], where: str) -> None:
    if not isinstance(d, dict):
        raise InputError(f"{where}: expected a mapping")
    unknown = set(d) - allowed
    if unknown:
        raise InputError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")


def _typed(cls, values: dict, where: str):
    """Build a dataclass, checking each value against the field's type (bool, int, float, str, list)."""
    kinds = {f.name: f.type for f in fields(cls)}
    for key, v in values.items():
        t = kinds[key]
        ok = (
            (t == "bool" and isinstance(v, bool))
            or (t == "str" and isinstance(v, str))
            or (t == "str | None" and (v is None or isinstance(v, str)))
            or (t == "float" and isinstance(v, (int, float)) and not isinstance(v, bool))
            or (t == "int" and isinstance(v, int) and not isinstance(v, bool))
            or (t == "int | None" and (v is None or (isinstance(v, int) and not isinstance(v, bool))))
            or (t.startswith("list") and isinstance(v, list))
        )
        if not ok:
            raise InputError(f"{where}: '{key}' must be {t.replace(' | None', ' or null')}, got {v!r}")
    return cls(**values)


def _default_id(url: str, i: int) -> str:
    """Last path segment without extension (cam1.m3u8 → cam1), else host:port; never credentials."""
    from urllib.parse import urlsplit

    from monitor.sources import redact

    safe = redact(url)
    if "://" not in safe:
        return os.path.splitext(os.path.basename(safe))[0] or f"stream{i}"
    parts = urlsplit(safe)
    tail = parts.path.rstrip("/").rsplit("/", 1)[-1]
    return os.path.splitext(tail)[0] if tail else (parts.netloc.rpartition("@")[2] or f"stream{i}")
