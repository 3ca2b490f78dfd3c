"""Text becomes typed objects here and nowhere else: config files and command-line flags alike.

Everything downstream (the pipeline builder, `vqmon watch`, the Ray monitors) takes the typed
objects, so a mistake fails here, on the driver, in one line naming the file and the key,
never hours later inside a stream thread or a Ray actor.

    device: auto                # cpu, cuda, cuda:N
    defaults:                   # applied to every stream unless it says otherwise
      sample: 5fps              # all, N (every Nth frame) or Xfps (rate cap)
      window: 10s/2s            # SIZE (tumbling) or SIZE/HOP (sliding)
      max_lag: 2s               # a live stream whose scored frames lag more than this is `behind`
      adaptive: true            # behind: lower the sampling to what the scorers sustain, raise it back later
      models: [liqe]            # NAME[/VARIANT][:WEIGHTS]; WEIGHTS = a checkpoint path or `untrained`
      alerts:
        - {name: low-quality, kind: level, metric: nr.liqe, stat: p10, below: 40, for: 10s, recover_above: 45, recover_for: 5s}
    streams:
      - {id: cam1, url: "rtmp://ingest:1935/live/cam1"}
      - {id: cam2, url: "srt://10.0.0.2:9000", ref: "udp://239.0.0.1:5000", vmaf: true}   # fr.vmaf needs a ref
        # vmaf_model: vmaf_v0.6.1 (default), vmaf_v0.6.1neg, vmaf_4k_v0.6.1 or a .json file; vmaf_threads: 2
    sinks:                      # named sinks; `type` defaults to the name, so several of one type can coexist
      parquet: {out: /var/lib/vqmon, roll: 60s}
      kafka: {bootstrap: "kafka:9092", topic_prefix: vqmon, spool: /var/spool/vqmon}
      alerts-dr: {type: kafka, bootstrap: "kafka-dr:9092", records: [alerts]}   # records: the kinds it takes
      otel: {exporter: console, prometheus: "127.0.0.1:9464"}   # exporter: console, otlp or null
      jsonl: {out: "-"}
      webhook: {url: "https://alerts.example/hook", retries: 3}   # POSTs firing/resolved alert events
    http: "127.0.0.1:8080"      # status page, /status.json, /metrics, /healthz (monitor/views/statuspage.py)
    ray:                        # only `vqmon live` (pipelines/live.py) reads this: placement of each stream's actor
      num_gpus: 0.25            # GPU share per stream (4 streams per GPU); 0 = CPU only
      num_cpus: 1
      backoff: 1s               # first restart delay after a crash, doubling up to max_backoff
      max_backoff: 60s

One duration grammar everywhere (alert rules, max_lag, parquet roll, ray backoff): a number of
seconds, or text such as 500ms, 2s, 1.5m, 2min or 1h.
"""
from __future__ import annotations

import json
import math
import os
import re
import types
from dataclasses import MISSING, dataclass, field, fields
from typing import Literal, Union, get_args, get_origin, get_type_hints

from monitor.alerts.rules import DURATIONS, RULE_KINDS, Rule, config_key
from monitor.errors import InputError
from monitor.records import RECORD_TYPES
from monitor.scoring.vmaf import BUILT_IN, LIVE_CHUNK_S, VmafOptions
from monitor.source.sampling import Sampler
from monitor.source.sources import MAX_PIXELS
from monitor.windows import WindowSpec


class Seconds(float):
    """Marks a field that takes a duration: config parses it with `parse_duration`."""


# ---- the grammars ------------------------------------------------------------------------------

_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|min|m|h)?\s*")
_UNIT_S = {"ms": 0.001, "s": 1.0, None: 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}


def parse_duration(value, allow_zero: bool = False) -> float:
    """Seconds from a number of seconds or text: 500ms, 2s, 1.5m, 2min, 1h."""
    m = _DURATION.fullmatch(value) if isinstance(value, str) else None
    if m:
        seconds = float(m[1]) * _UNIT_S[m[2]]
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    else:
        raise InputError(f"{value!r}: expected a duration like 2s, 500ms, 1m or 1h")
    if not math.isfinite(seconds) or seconds < 0 or (seconds == 0 and not allow_zero):
        raise InputError(f"{value!r}: a duration must be {'≥ 0' if allow_zero else 'positive'}")
    return seconds


def parse_window(text) -> WindowSpec:
    """'2s' → tumbling 2 s windows; '10s/1s' → sliding 10 s windows every 1 s."""
    size, _, hop = str(text).partition("/")
    spec = WindowSpec(parse_duration(size), parse_duration(hop) if hop else None)
    if spec.hop > spec.size_s:
        raise InputError(f"{text!r}: the hop must not exceed the window size")
    return spec


def parse_sample(text) -> Sampler:
    """'all', 'N' or 'every:N' (every Nth frame), 'Xfps' or 'fps:X' (rate cap)."""
    s = str(text).strip().lower()
    if s in ("all", "1"):
        return Sampler()
    if m := re.fullmatch(r"(?:every:)?(\d+)", s):
        if int(m[1]) < 1:
            raise InputError(f"{text!r}: N must be at least 1")
        return Sampler(every=int(m[1]))
    if m := re.fullmatch(r"(?:fps:)?(\d+(?:\.\d+)?)\s*(?:fps)?", s):
        if float(m[1]) <= 0:
            raise InputError(f"{text!r}: the fps cap must be positive")
        return Sampler(max_fps=float(m[1]))
    raise InputError(f"{text!r}: expected 'all', N (every Nth frame) or Xfps (rate cap)")


def parse_device(text) -> str:
    """auto (CUDA when there is one), cpu, cuda or cuda:N."""
    if not isinstance(text, str) or not re.fullmatch(r"auto|cpu|cuda(:\d+)?", text):
        raise InputError(f"{text!r}: expected auto, cpu, cuda or cuda:N")
    return text


@dataclass(frozen=True)
class ModelSpec:
    """Which quality model to score with; `weights`: "default" (the shipped file), None (untrained) or a checkpoint path."""

    name: str
    variant: str = "lite"
    weights: str | None = "default"

    def __str__(self) -> str:
        tail = {"default": "", None: ":untrained"}.get(self.weights, f":{self.weights}")
        return f"{self.name}/{self.variant}{tail}"


def parse_model(text) -> ModelSpec:
    """`name[/variant][:weights]`, checked against the model table: a known model, and weights that exist."""
    from models.table import MODELS, VARIANTS, default_weights, no_default_weights

    if not isinstance(text, str) or not text:
        raise InputError(f"{text!r}: expected a model such as liqe, gsn/lite or nemg:untrained")
    head, _, weights = text.partition(":")
    name, _, variant = head.partition("/")
    spec = ModelSpec(name, variant or "lite", {"": "default", "untrained": None}.get(weights, weights))
    if not any(n == name for n, _ in MODELS):
        raise InputError(f"{text!r}: unknown model (known: {', '.join(sorted({n for n, _ in MODELS}))})")
    if spec.variant not in VARIANTS:
        raise InputError(f"{text!r}: unknown variant {spec.variant!r} (known: {', '.join(VARIANTS)})")
    if spec.weights == "default" and default_weights(name, spec.variant) is None:
        raise InputError(f"{text!r}: {no_default_weights(name, spec.variant)} (give {head}:PATH or {head}:untrained)")
    if spec.weights not in ("default", None) and not os.path.isfile(spec.weights):
        raise InputError(f"{text!r}: no such weights file {spec.weights}")
    return spec


def parse_models(values) -> tuple[ModelSpec, ...]:
    if not isinstance(values, (list, tuple)):
        raise InputError(f"expected a list of models, got {values!r}")
    return tuple(parse_model(v) for v in values)


def parse_rules(values) -> tuple[Rule, ...]:
    """Alert rules from a list of mappings with `name`, `kind` and the kind's fields; names must be unique."""
    if not isinstance(values, (list, tuple)):
        raise InputError(f"expected a list of alert rules, got {type(values).__name__}")
    rules = tuple(_rule(c, i) for i, c in enumerate(values))
    seen = set()
    for r in rules:
        if r.name in seen:
            raise InputError(f"alert rule {r.name!r}: field 'name' is used by another rule")
        seen.add(r.name)
    return rules


def _rule(raw, position: int) -> Rule:
    """One rule, e.g. {name: low, kind: level, metric: nr.liqe, stat: p10, below: 40, for: 10s, recover_for: 5}."""
    if not isinstance(raw, dict):
        raise InputError(f"alert rule #{position + 1}: expected a mapping, got {type(raw).__name__}")
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise InputError(f"alert rule #{position + 1}: field 'name' is required (a non-empty string)")
    kind = raw.get("kind")
    cls = RULE_KINDS.get(kind)
    if cls is None:
        raise InputError(f"alert rule {name!r}: field 'kind' must be one of {', '.join(RULE_KINDS)}; got {kind!r}")
    hints = get_type_hints(cls)
    by_key = {config_key(f.name): f for f in fields(cls) if f.name != "name"}
    kwargs = {}
    for key, v in raw.items():
        if key in ("name", "kind"):
            continue
        f = by_key.get(key)
        if f is None:
            raise InputError(f"alert rule {name!r}: unknown field {key!r} for kind {kind} (allowed: {', '.join(by_key)})")
        hint = Seconds if f.name in DURATIONS else hints[f.name]
        kwargs[f.name] = _value(hint, v, f"alert rule {name!r}: field {key!r}", allow_zero=True)
    for key, f in by_key.items():
        if f.default is MISSING and f.default_factory is MISSING and f.name not in kwargs:
            raise InputError(f"alert rule {name!r}: field {key!r} is required for kind {kind}")
    return cls(name=name, **kwargs)


# ---- typed values from mappings ----------------------------------------------------------------

_PARSERS = {Sampler: parse_sample, WindowSpec: parse_window, tuple[ModelSpec, ...]: parse_models,
            tuple[Rule, ...]: parse_rules}


def _value(hint, v, where: str, allow_zero: bool = False):
    """`v` converted to the annotated type, or an InputError naming `where`."""
    if get_origin(hint) in (Union, types.UnionType):
        options = get_args(hint)
        if v is None and type(None) in options:
            return None
        (hint,) = [o for o in options if o is not type(None)]
    if hint is Seconds:
        try:
            return parse_duration(v, allow_zero=allow_zero)
        except InputError as e:
            raise InputError(f"{where}: {e}") from None
    if hint in _PARSERS:
        try:
            return _PARSERS[hint](v)
        except InputError as e:
            raise InputError(f"{where}: {e}") from None
    if get_origin(hint) is Literal:
        if v in get_args(hint):
            return v
        expected = " or ".join(repr(a) for a in get_args(hint))
    elif hint is bool:
        if isinstance(v, bool):
            return v
        expected = "bool (true or false)"
    elif hint in (int, float):
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and (hint is float or v == int(v)):
            return hint(v)
        expected = "a whole number" if hint is int else "a number"
    elif hint is str:
        if isinstance(v, str):
            return v
        expected = "a string"
    else:
        raise TypeError(f"no conversion for {hint!r}")
    raise InputError(f"{where} must be {expected}, got {v!r}")


def _typed(cls, values, where: str, **given):
    """A `cls` from a mapping of config keys: unknown keys, missing required keys and wrong types fail naming `where`."""
    if not isinstance(values, dict):
        raise InputError(f"{where}: expected a mapping, got {values!r}")
    hints = get_type_hints(cls)
    settable = {f.name: f for f in fields(cls) if f.init and f.name not in given}
    unknown = set(values) - set(settable)
    if unknown:
        raise InputError(f"{where}: unknown key(s) {', '.join(sorted(map(str, unknown)))}")
    for name, f in settable.items():
        if f.default is MISSING and f.default_factory is MISSING and name not in values:
            raise InputError(f"{where}: '{name}' is required")
    kwargs = {k: _value(hints[k], v, f"{where}: '{k}'") for k, v in values.items()}
    try:
        return cls(**kwargs, **given)
    except InputError as e:  # an invariant of the type itself
        raise InputError(f"{where}: {e}") from None


# ---- streams -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class StreamConfig:
    """One stream, typed: where it comes from and what is computed on it. `id` defaults to one made from the URL."""

    url: str
    id: str = ""
    listen: bool = False  # RTMP/SRT listen mode: wait for the encoder to push to us
    realtime: bool = False  # play a file at its own frame rate (demos, replay tests)
    ref: str | None = None  # reference stream or file for FR metrics
    ref_listen: bool = False
    ref_offset: int = 0  # files: reference frame i + N pairs with frame i; live: where the aligner starts looking
    sample: Sampler = field(default_factory=Sampler)
    window: WindowSpec = WindowSpec(2.0)
    models: tuple[ModelSpec, ...] = ()
    alerts: tuple[Rule, ...] = ()
    rtsp_transport: str | None = None
    open_timeout: Seconds = 10.0
    read_timeout: Seconds = 5.0
    max_reconnects: int | None = None
    max_lag: Seconds = 2.0  # from receiving a frame to scoring it, beyond which the stream is `behind`
    adaptive: bool = True  # lower the sampling while behind (live streams and realtime replays)
    vmaf: VmafOptions | None = None  # fr.vmaf (monitor/scoring/vmaf.py) on frames paired with `ref`
    max_pixels: int = MAX_PIXELS  # frames larger than this (width × height) are refused: memory

    def __post_init__(self):
        if not self.id:
            object.__setattr__(self, "id", default_id(self.url))
        if self.vmaf and not self.ref:
            raise InputError("'vmaf' needs a 'ref' (VMAF compares with a reference)")
        if not self.ref:
            from models.table import MODELS

            full_reference = [str(m) for m in self.models if getattr(MODELS.get((m.name, m.variant)), "kind", "") == "FR"]
            if full_reference:
                raise InputError(f"model {full_reference[0]} is full-reference: it needs a reference (--ref / 'ref')")
        if self.max_pixels < 1:
            raise InputError(f"'max_pixels' must be at least 1, got {self.max_pixels}")


STREAM_KEYS = {f.name for f in fields(StreamConfig)} | {"vmaf_model", "vmaf_threads"}


def stream(raw, where: str, vmaf_chunk_s: float = LIVE_CHUNK_S) -> StreamConfig:
    """A StreamConfig from a mapping of config keys (a config file's stream, or command-line flags)."""
    if not isinstance(raw, dict) or "url" not in raw:
        raise InputError(f"{where}: each stream needs at least a 'url'")
    raw = dict(raw)
    vmaf = parse_vmaf(raw.pop("vmaf", False), raw.pop("vmaf_model", None), raw.pop("vmaf_threads", None),
                      vmaf_chunk_s, where)
    return _typed(StreamConfig, raw, where, vmaf=vmaf)


def parse_vmaf(on, model, threads, chunk_s: float, where: str) -> VmafOptions | None:
    """VmafOptions from the keys vmaf (on/off), vmaf_model and vmaf_threads; None when VMAF is off."""
    on = _value(bool, on, f"{where}: 'vmaf'")
    for key, v in (("vmaf_model", model), ("vmaf_threads", threads)):
        if v is not None and not on:
            raise InputError(f"{where}: '{key}' needs 'vmaf: true'")
    if not on:
        return None
    threads = 2 if threads is None else _value(int, threads, f"{where}: 'vmaf_threads'")
    if threads < 1:
        raise InputError(f"{where}: 'vmaf_threads' must be at least 1, got {threads}")
    return VmafOptions(BUILT_IN[0] if model is None else _value(str, model, f"{where}: 'vmaf_model'"), threads, chunk_s)


def default_id(url: str, fallback: str = "stream") -> str:
    """Last path segment without extension (cam1.m3u8 → cam1), else host:port; never a secret.

    An RTMP URL's last segment is its stream key, so its id is the application (rtmp://host/live/KEY → live).
    """
    from urllib.parse import urlsplit

    from monitor.redaction import HIDDEN, redact

    safe = redact(url)
    if "://" not in safe:
        return os.path.splitext(os.path.basename(safe))[0] or fallback
    parts = urlsplit(safe)
    segments = [s for s in parts.path.split("/") if s and s != HIDDEN]
    return os.path.splitext(segments[-1])[0] if segments else (parts.netloc.rpartition("@")[2] or fallback)


# ---- sinks -------------------------------------------------------------------------------------

RECORD_KINDS = tuple(RECORD_TYPES)


@dataclass(frozen=True)
class ParquetOptions:
    out: str = "vqmon-out"
    roll: Seconds | None = 60.0  # a file per partition once its oldest buffered record is this old; null: on close
    rows: int = 200_000


@dataclass(frozen=True)
class KafkaOptions:
    bootstrap: str
    topic_prefix: str = "vqmon"
    spool: str = "vqmon-spool"  # where records wait while the broker is unreachable


@dataclass(frozen=True)
class OTelOptions:
    exporter: Literal["console", "otlp"] | None = "console"
    prometheus: str | None = None  # host:port of a /metrics endpoint


@dataclass(frozen=True)
class JsonlOptions:
    out: str = "-"  # a folder, or - for stdout


@dataclass(frozen=True)
class WebhookOptions:
    url: str
    retries: int = 3


SINK_OPTIONS = {"parquet": ParquetOptions, "kafka": KafkaOptions, "otel": OTelOptions, "jsonl": JsonlOptions,
                "webhook": WebhookOptions}


@dataclass(frozen=True)
class SinkConfig:
    """One named sink: its type, its typed options, and the record kinds it takes (None: the type's own choice)."""

    name: str
    type: str
    options: ParquetOptions | KafkaOptions | OTelOptions | JsonlOptions | WebhookOptions
    records: frozenset[str] | None = None


def parse_sinks(raw, where: str) -> tuple[SinkConfig, ...]:
    """Named sinks from a mapping name → options (`type` defaults to the name; `records` picks record kinds)."""
    if not isinstance(raw, dict):
        raise InputError(f"{where}: 'sinks' must be a mapping of name → options")
    sinks = []
    for name, opts in raw.items():
        here = f"{where}: sinks.{name}"
        opts = dict(opts or {}) if isinstance(opts, dict) or opts is None else opts
        if not isinstance(opts, dict):
            raise InputError(f"{here}: expected a mapping of options, got {opts!r}")
        kind = opts.pop("type", name)
        if kind not in SINK_OPTIONS:
            raise InputError(f"{here}: unknown sink type {kind!r} (known: {', '.join(SINK_OPTIONS)})")
        records = opts.pop("records", None)
        if records is not None:
            if not isinstance(records, list) or not records or not set(records) <= set(RECORD_KINDS):
                raise InputError(f"{here}: 'records' must be a list of {', '.join(RECORD_KINDS)}; got {records!r}")
            records = frozenset(records)
        sinks.append(SinkConfig(str(name), kind, _typed(SINK_OPTIONS[kind], opts, here), records))
    return tuple(sinks)


# ---- the whole file ----------------------------------------------------------------------------

@dataclass(frozen=True)
class RayConfig:
    """Placement and restart backoff of each stream's actor under `vqmon live`."""

    num_gpus: float = 0.0  # GPU share per stream (0.25 = four streams per GPU); 0 = CPU only
    num_cpus: float = 1.0
    backoff: Seconds = 1.0  # first restart delay after a crash, doubling ...
    max_backoff: Seconds = 60.0  # ... up to this

    def __post_init__(self):
        for key in ("num_gpus", "num_cpus"):
            if getattr(self, key) < 0:
                raise InputError(f"'{key}' must be a number >= 0, got {getattr(self, key)!r}")


@dataclass(frozen=True)
class WatchConfig:
    streams: tuple[StreamConfig, ...]
    sinks: tuple[SinkConfig, ...] = ()
    device: str = "auto"
    http: str | None = None  # [host:]port of the status page
    ray: RayConfig = RayConfig()


TOP_KEYS = ("streams", "sinks", "defaults", "device", "http", "ray")


def load(path: str) -> WatchConfig:
    """Read and validate a YAML (.yaml/.yml) or JSON config file."""
    return parse(read(path), source=path)


def read(path: str):
    """The data of a YAML or JSON file, or one line naming the file."""
    if not os.path.exists(path):
        raise InputError(f"{path}: no such file")
    text = open(path, encoding="utf-8").read()
    yaml_file = path.endswith((".yaml", ".yml"))
    try:
        if yaml_file:
            import yaml

            return yaml.safe_load(text)
        return json.loads(text)
    except Exception as e:  # yaml and json raise their own error types
        raise InputError(f"{path}: not valid {'YAML' if yaml_file else 'JSON'}: {str(e).splitlines()[0]}") from None


def load_rules(path: str) -> tuple[Rule, ...]:
    """Alert rules from a YAML/JSON file holding a list of them."""
    data = read(path)
    if not isinstance(data, list):
        raise InputError(f"{path}: expected a list of alert rules")
    try:
        return parse_rules(data)
    except InputError as e:
        raise InputError(f"{path}: {e}") from None


def parse(data, source: str = "config") -> WatchConfig:
    """A WatchConfig from the data of a config file (or the same built from command-line flags)."""
    if not isinstance(data, dict):
        raise InputError(f"{source}: expected a mapping with 'streams' (and optional {', '.join(TOP_KEYS[1:])})")
    unknown = set(data) - set(TOP_KEYS)
    if unknown:
        raise InputError(f"{source}: unknown top-level key(s) {', '.join(sorted(map(str, unknown)))}")
    defaults = data.get("defaults") or {}
    if not isinstance(defaults, dict):
        raise InputError(f"{source}: defaults: expected a mapping")
    misplaced = set(defaults) & {"id", "url"} or set(defaults) - STREAM_KEYS
    if misplaced:
        raise InputError(f"{source}: defaults: unknown key(s) {', '.join(sorted(map(str, misplaced)))}")
    raw_streams = data.get("streams")
    if not raw_streams or not isinstance(raw_streams, list):
        raise InputError(f"{source}: 'streams' must be a non-empty list")
    streams, seen = [], set()
    for i, raw in enumerate(raw_streams):
        where = f"{source}: streams[{i}]"
        if isinstance(raw, dict):
            raw = {**defaults, **raw}
            if "url" in raw:
                raw.setdefault("id", default_id(str(raw["url"]), f"stream{i}"))
        s = stream(raw, where)
        if s.id in seen:
            raise InputError(f"{where}: duplicate stream id {s.id!r}")
        seen.add(s.id)
        streams.append(s)
    try:
        device = parse_device(data.get("device", "auto"))
    except InputError as e:
        raise InputError(f"{source}: 'device': {e}") from None
    http = data.get("http")
    if http is not None and (isinstance(http, bool) or not isinstance(http, (str, int))):
        raise InputError(f"{source}: 'http' must be [host:]port, got {http!r}")
    return WatchConfig(tuple(streams), parse_sinks(data.get("sinks") or {}, source), device,
                       None if http is None else str(http), _typed(RayConfig, data.get("ray") or {}, f"{source}: ray"))
