"""Record types and their Arrow schemas (ARCHITECTURE.md §3). JSON (Kafka, JSONL) and Parquet use the same field names."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from typing import ClassVar

import pyarrow as pa

SCHEMA_VERSION = 1
_TS = pa.timestamp("us", tz="UTC")


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


@dataclass(slots=True)
class FrameScore:
    """One metric on one frame. `value` is native units; `score` is 0–100 higher-better (None where meaningless)."""

    stream_id: str
    frame_index: int
    pts_s: float | None
    ingest_ts: datetime
    width: int
    height: int
    metric: str
    value: float
    score: float | None = None
    model: str | None = None  # "name/variant@sha256[:12]" or "name/variant@untrained"; None for signals
    extras: dict = field(default_factory=dict)
    corrupt: bool = False  # the decoder flagged the frame corrupt (concealed damage): scored as the viewer sees it
    schema_version: int = SCHEMA_VERSION

    kind_name: ClassVar[str] = "frames"
    schema: ClassVar[pa.Schema] = pa.schema([
        ("schema_version", pa.int16()), ("stream_id", pa.string()), ("frame_index", pa.int64()),
        ("pts_s", pa.float64()), ("ingest_ts", _TS), ("width", pa.int32()), ("height", pa.int32()),
        ("metric", pa.string()), ("value", pa.float64()), ("score", pa.float64()), ("model", pa.string()),
        ("extras", pa.string()),  # JSON object
        ("corrupt", pa.bool_()),  # added later: null in files written before it
    ])

    @property
    def ts(self) -> datetime:
        return self.ingest_ts


@dataclass(slots=True)
class WindowStat:
    """Statistics of one metric over one window. `scale` says whether they are over native values or 0–100 scores."""

    stream_id: str
    metric: str
    scale: str  # "value" | "score"
    window_start_s: float
    window_end_s: float
    kind: str  # "tumbling" | "sliding"
    count: int
    seen: int
    coverage: float
    mean: float
    min: float
    max: float
    std: float
    p5: float
    p10: float
    p50: float
    harmonic_mean: float
    emitted_ts: datetime
    corrupt: int = 0  # frames seen in the window that the decoder flagged corrupt
    schema_version: int = SCHEMA_VERSION

    kind_name: ClassVar[str] = "windows"
    schema: ClassVar[pa.Schema] = pa.schema([
        ("schema_version", pa.int16()), ("stream_id", pa.string()), ("metric", pa.string()), ("scale", pa.string()),
        ("window_start_s", pa.float64()), ("window_end_s", pa.float64()), ("kind", pa.string()),
        ("count", pa.int64()), ("seen", pa.int64()), ("coverage", pa.float64()),
        ("mean", pa.float64()), ("min", pa.float64()), ("max", pa.float64()), ("std", pa.float64()),
        ("p5", pa.float64()), ("p10", pa.float64()), ("p50", pa.float64()), ("harmonic_mean", pa.float64()),
        ("emitted_ts", _TS),
        ("corrupt", pa.int64()),  # added later: null in files written before it
    ])

    @property
    def ts(self) -> datetime:
        return self.emitted_ts

    @classmethod
    def build(cls, stream_id: str, metric: str, scale: str, start: float, end: float, kind: str,
              seen: int, stats: dict[str, float], corrupt: int = 0) -> "WindowStat":
        return cls(stream_id=stream_id, metric=metric, scale=scale, window_start_s=start, window_end_s=end,
                   kind=kind, seen=seen, coverage=stats["count"] / seen if seen else math.nan,
                   emitted_ts=utcnow(), corrupt=corrupt, **stats)


ALERT_STATES = ("pending", "firing", "resolved")
STREAM_EVENTS = ("started",  # a pipeline started: what it reads and how it scores (monitor/build.py), for reports
                 "up", "down", "reconnect", "decode_error", "alignment_gained", "alignment_lost",
                 "restart",  # restart: the Ray supervisor restarted a crashed monitor
                 "behind", "caught_up",  # a live stream's lag crossed max_lag (monitor/source/sampling.py KeepUp)
                 "scorer_error",  # a scorer run failed (a libvmaf chunk): its frames lack that metric
                 "sink_error", "sink_ok")  # a sink failed (detail: sink, error, lost) or works again (down_s, lost)


@dataclass(slots=True)
class AlertEvent:
    """One transition of one alert (monitor/alerts/engine.py). `since_s`/`at_s` are media time, so replays give the same events.

    `value`/`threshold` are the quantity the rule compares and its limit at this transition;
    `evidence` (JSON object) holds the worst frame while the condition held (`frame_index`,
    `pts_s`, `value`), its `thumbnail` path or null, and rule details such as a `baseline`.
    """

    alert_id: str
    stream_id: str
    rule: str
    metric: str
    state: str  # ALERT_STATES
    since_s: float
    at_s: float
    value: float
    threshold: float
    evidence: dict = field(default_factory=dict)
    emitted_ts: datetime = field(default_factory=utcnow)
    schema_version: int = SCHEMA_VERSION

    kind_name: ClassVar[str] = "alerts"
    schema: ClassVar[pa.Schema] = pa.schema([
        ("schema_version", pa.int16()), ("alert_id", pa.string()), ("stream_id", pa.string()), ("rule", pa.string()),
        ("metric", pa.string()), ("state", pa.string()), ("since_s", pa.float64()), ("at_s", pa.float64()),
        ("value", pa.float64()), ("threshold", pa.float64()),
        ("evidence", pa.string()),  # JSON object
        ("emitted_ts", _TS),
    ])

    @property
    def ts(self) -> datetime:
        return self.emitted_ts


@dataclass(slots=True)
class StreamEvent:
    """Something that happened to a stream rather than to its pictures; `at` is wall-clock (a dead stream has no media time)."""

    stream_id: str
    event: str  # STREAM_EVENTS
    at: datetime = field(default_factory=utcnow)
    detail: dict = field(default_factory=dict)  # e.g. error text, reconnect attempt, alignment offset/confidence
    schema_version: int = SCHEMA_VERSION

    kind_name: ClassVar[str] = "events"
    schema: ClassVar[pa.Schema] = pa.schema([
        ("schema_version", pa.int16()), ("stream_id", pa.string()), ("event", pa.string()), ("at", _TS),
        ("detail", pa.string()),  # JSON object
    ])

    def __post_init__(self):
        if self.event not in STREAM_EVENTS:
            raise ValueError(f"unknown stream event {self.event!r} (one of {', '.join(STREAM_EVENTS)})")

    @property
    def ts(self) -> datetime:
        return self.at


RECORD_TYPES = {"frames": FrameScore, "windows": WindowStat, "alerts": AlertEvent, "events": StreamEvent}


def record_kind(record) -> str:
    return type(record).kind_name


def to_row(record) -> dict:
    """Plain dict in schema field order (extras stays a dict here; JSON encoding is the sink's job)."""
    return {f.name: getattr(record, f.name) for f in fields(record)}


def to_json(record) -> str:
    row = to_row(record)
    for k, v in row.items():
        if isinstance(v, datetime):
            row[k] = v.isoformat().replace("+00:00", "Z")
        elif isinstance(v, float) and not math.isfinite(v):
            row[k] = None  # JSON has no NaN/inf
    return json.dumps(row, separators=(",", ":"), ensure_ascii=False)


def to_table(records: list, schema: pa.Schema) -> pa.Table:
    """Records of one type → Arrow table with the declared schema (dict fields such as extras JSON-encoded)."""
    cols: dict[str, list] = {name: [] for name in schema.names}
    for r in records:
        for name in schema.names:
            v = getattr(r, name)
            cols[name].append(json.dumps(v, separators=(",", ":")) if isinstance(v, dict) else v)
    return pa.table(cols, schema=schema)
