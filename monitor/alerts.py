"""Alert rules → pending/firing/resolved events, on media time (ARCHITECTURE.md §6).

Rules are plain dataclasses, parsed from the dicts a config file holds (`parse_rules`), and
checked on construction: a bad rule raises `InputError` with one line naming the rule and field.

Every rule turns samples (media time `t`, value `x`) into a condition, and one state machine
per (rule, stream) turns the condition into events:

    idle ──bad──► pending ──bad for `for` s──► firing ──recovered for `recover_for` s──► resolved (idle)
                     └──not bad──► idle (no event: a pending alert that clears was never an alert)

With `for` = 0 the alert goes straight to firing (no pending event). While firing, a sample
that is not "recovered" restarts the `recover_for` clock; for level rules the band between the
trigger and the recover threshold is hysteresis, so a series flapping around the trigger
threshold stays one firing alert.

What each rule consumes:
- `level`, `drop`, `cusum` with `stat: frame` (the default): `FrameScore`s of their metric,
  the 0–100 `score` (`scale: score`, default) or the native `value` (`scale: value`); `t` = pts.
- the same with `stat: p10` (any WindowStat statistic): `WindowStat`s of their metric and
  scale; `t` = window end. Their evidence is the worst frame of the metric inside the bad
  windows, so the engine keeps the frames of those metrics since the last window start.
- `freeze`: `sig.freeze` values (MAFD vs the previous frame); the freeze starts at the frame
  that is repeated, i.e. at the previous frame's pts.
- `black`: `sig.black` values (share of black pixels).
`drop` and `cusum` compare with an EWMA baseline that learns only while the rule is idle, so a
degraded period never becomes the new normal while it is being alerted on.
"""
from __future__ import annotations

import logging
import math
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from dataclasses import MISSING, dataclass, field, fields
from typing import Callable

from monitor.errors import InputError
from monitor.records import AlertEvent, FrameScore, WindowStat, to_json
from monitor.signals import BLACK_FRAME_RATIO, FREEZE_MAFD

log = logging.getLogger(__name__)

WINDOW_STATS = ("mean", "min", "max", "std", "p5", "p10", "p50", "harmonic_mean")
EPS_S = 1e-9  # media-time comparisons: 0.04 s steps do not add up exactly in binary


@dataclass(frozen=True, kw_only=True)
class Rule:
    name: str
    for_s: float = 0.0  # the condition must hold this long before the alert fires
    recover_for_s: float = 0.0  # ... and the recovery this long before it resolves

    def __post_init__(self):
        for f in ("for_s", "recover_for_s"):
            v = getattr(self, f)
            if not (isinstance(v, (int, float)) and 0 <= v < math.inf):
                self._fail(f, f"must be a duration ≥ 0 s, got {v!r}")

    def _fail(self, field_name: str, problem: str):
        raise InputError(f"alert rule {self.name!r}: field {_config_key(field_name)!r} {problem}")


@dataclass(frozen=True, kw_only=True)
class MetricRule(Rule):
    metric: str
    stat: str = "frame"  # "frame": per-frame samples; else a WindowStat statistic (p10, mean, ...)
    scale: str = "score"  # "score" (0–100) or "value" (native units)

    def __post_init__(self):
        super().__post_init__()
        if not isinstance(self.metric, str) or not self.metric:
            self._fail("metric", "must be a metric name such as 'nr.liqe'")
        if self.stat not in ("frame",) + WINDOW_STATS:
            self._fail("stat", f"must be one of frame, {', '.join(WINDOW_STATS)}; got {self.stat!r}")
        if self.scale not in ("score", "value"):
            self._fail("scale", f"must be 'score' or 'value', got {self.scale!r}")


@dataclass(frozen=True, kw_only=True)
class LevelRule(MetricRule):
    """Fires when the sample is below (or above) a threshold; recovers past `recover_above` (`recover_below`)."""

    below: float | None = None
    above: float | None = None
    recover_above: float | None = None  # default: `below` (no hysteresis band)
    recover_below: float | None = None  # default: `above`

    def __post_init__(self):
        super().__post_init__()
        if (self.below is None) == (self.above is None):
            self._fail("below", "or 'above' is required (exactly one of them)")
        if self.below is not None:
            if self.recover_below is not None:
                self._fail("recover_below", "does not go with 'below' (use 'recover_above')")
            if self.recover_above is not None and self.recover_above < self.below:
                self._fail("recover_above", f"must be ≥ below ({self.below}) for hysteresis, got {self.recover_above}")
        else:
            if self.recover_above is not None:
                self._fail("recover_above", "does not go with 'above' (use 'recover_below')")
            if self.recover_below is not None and self.recover_below > self.above:
                self._fail("recover_below", f"must be ≤ above ({self.above}) for hysteresis, got {self.recover_below}")


@dataclass(frozen=True, kw_only=True)
class BaselineRule(MetricRule):
    """A rule judged against an EWMA baseline: set exactly one of `half_life_s` or `span_s` (pandas' span, in seconds)."""

    half_life_s: float | None = None
    span_s: float | None = None
    warmup_s: float | None = None  # no detection before the baseline has learned this long; default: the half-life

    def __post_init__(self):
        super().__post_init__()
        if (self.half_life_s is None) == (self.span_s is None):
            self._fail("half_life", "or 'span' is required (exactly one of them)")
        for f in ("half_life_s", "span_s"):
            v = getattr(self, f)
            if v is not None and not v > 0:
                self._fail(f, f"must be > 0 s, got {v}")

    @property
    def half_life(self) -> float:
        # pandas' span N means alpha = 2/(N+1) per sample ≈ a time constant of N/2: half-life = ln2 · span/2
        return self.half_life_s if self.half_life_s is not None else math.log(2) * self.span_s / 2

    @property
    def warmup(self) -> float:
        return self.warmup_s if self.warmup_s is not None else self.half_life


@dataclass(frozen=True, kw_only=True)
class DropRule(BaselineRule):
    """Fires when the sample is more than `points` below the baseline; recovered within `recover_points` (default points/2)."""

    points: float
    recover_points: float | None = None

    def __post_init__(self):
        super().__post_init__()
        if not self.points > 0:
            self._fail("points", f"must be > 0, got {self.points}")
        if self.recover_points is not None and not 0 <= self.recover_points <= self.points:
            self._fail("recover_points", f"must be between 0 and points ({self.points}), got {self.recover_points}")

    @property
    def recover_within(self) -> float:
        return self.recover_points if self.recover_points is not None else self.points / 2


@dataclass(frozen=True, kw_only=True)
class CusumRule(BaselineRule):
    """One-sided downward CUSUM S = max(0, S + baseline − x − k) fires when S > h; `since` is when S last left 0.

    k is half the shift to detect, h the evidence needed. Recovery is the mirror test, so one
    good frame in a noisy series does not end the alert: while firing, U = max(0, U + x −
    (baseline − k)) and the alert resolves once U > h. Events report S (U when resolved) against
    h; the evidence names the baseline. S and U restart at 0 when the alert resolves or a
    pending alert clears.
    """

    k: float
    h: float

    def __post_init__(self):
        super().__post_init__()
        if not self.k >= 0:
            self._fail("k", f"must be ≥ 0, got {self.k}")
        if not self.h > 0:
            self._fail("h", f"must be > 0, got {self.h}")


@dataclass(frozen=True, kw_only=True)
class FreezeRule(Rule):
    """Fires when sig.freeze (MAFD) stays ≤ `threshold` for `for` seconds, counted from the repeated frame."""

    for_s: float = field()  # required here: a freeze (black) of 0 s is every repeated (dark) frame
    threshold: float = FREEZE_MAFD
    metric = "sig.freeze"

    def __post_init__(self):
        super().__post_init__()
        if not 0 <= self.threshold < 1:
            self._fail("threshold", f"must be an MAFD in [0, 1), got {self.threshold}")


@dataclass(frozen=True, kw_only=True)
class BlackRule(Rule):
    """Fires when sig.black (share of black pixels) stays ≥ `threshold` for `for` seconds."""

    for_s: float = field()  # required here: a freeze (black) of 0 s is every repeated (dark) frame
    threshold: float = BLACK_FRAME_RATIO
    metric = "sig.black"

    def __post_init__(self):
        super().__post_init__()
        if not 0 < self.threshold <= 1:
            self._fail("threshold", f"must be a fraction in (0, 1], got {self.threshold}")


RULE_KINDS: dict[str, type[Rule]] = {"level": LevelRule, "drop": DropRule, "cusum": CusumRule,
                                     "freeze": FreezeRule, "black": BlackRule}
_DURATIONS = ("for_s", "recover_for_s", "half_life_s", "span_s", "warmup_s")  # config keys drop the _s
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def _config_key(field_name: str) -> str:
    return field_name[:-2] if field_name in _DURATIONS else field_name


def parse_rules(config: list[dict]) -> list[Rule]:
    """Rules from config (a list of mappings with `name`, `kind` and the kind's fields); names must be unique."""
    if not isinstance(config, list):
        raise InputError(f"alert rules: expected a list of rules, got {type(config).__name__}")
    rules = [parse_rule(c, i) for i, c in enumerate(config)]
    seen = set()
    for r in rules:
        if r.name in seen:
            raise InputError(f"alert rule {r.name!r}: field 'name' is used by another rule")
        seen.add(r.name)
    return rules


def parse_rule(config: dict, position: int = 0) -> Rule:
    """One rule from a mapping, e.g. {"name": "low", "kind": "level", "metric": "nr.liqe", "stat": "p10",
    "below": 40, "for": "10s", "recover_above": 45, "recover_for": 5}. Durations: seconds or "500ms"/"10s"/"5m"/"1h"."""
    if not isinstance(config, dict):
        raise InputError(f"alert rule #{position + 1}: expected a mapping, got {type(config).__name__}")
    name = config.get("name")
    if not isinstance(name, str) or not name:
        raise InputError(f"alert rule #{position + 1}: field 'name' is required (a non-empty string)")
    kind = config.get("kind")
    cls = RULE_KINDS.get(kind)
    if cls is None:
        raise InputError(f"alert rule {name!r}: field 'kind' must be one of {', '.join(RULE_KINDS)}; got {kind!r}")
    by_key = {_config_key(f.name): f for f in fields(cls) if f.name != "name"}
    kwargs = {}
    for key, v in config.items():
        if key in ("name", "kind"):
            continue
        f = by_key.get(key)
        if f is None:
            raise InputError(f"alert rule {name!r}: unknown field {key!r} for kind {kind} (allowed: {', '.join(by_key)})")
        kwargs[f.name] = _convert(name, key, f, v)
    for key, f in by_key.items():
        if f.default is MISSING and f.default_factory is MISSING and f.name not in kwargs:
            raise InputError(f"alert rule {name!r}: field {key!r} is required for kind {kind}")
    return cls(name=name, **kwargs)


def _convert(name: str, key: str, f, v):
    if f.name in _DURATIONS:
        return _seconds(name, key, v)
    if f.type == "str":
        if not isinstance(v, str):
            raise InputError(f"alert rule {name!r}: field {key!r} must be a string, got {v!r}")
        return v
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise InputError(f"alert rule {name!r}: field {key!r} must be a number, got {v!r}")
    return float(v)


def _seconds(name: str, key: str, v) -> float:
    if isinstance(v, str):
        for unit in ("ms", "s", "m", "h"):  # "ms" before "s"/"m"
            if v.endswith(unit):
                try:
                    v = float(v[: -len(unit)]) * _UNITS[unit]
                except ValueError:
                    pass
                break
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v < math.inf:
        raise InputError(f"alert rule {name!r}: field {key!r} must be a duration ≥ 0 (seconds, or like '10s', '5m'), got {v!r}")
    return float(v)


# ---- detectors: one per (rule, stream), each turns a sample into a condition ----------------------------------

@dataclass
class _Reading:
    bad: bool  # the alert condition holds
    recovered: bool  # the sample counts towards resolving a firing alert
    value: float  # what the event reports as value / threshold
    threshold: float
    onset: float | None = None  # when the condition started, if earlier than this sample


class _Level:
    def __init__(self, rule: LevelRule):
        self.low = rule.below is not None
        if self.low:
            self.trigger = rule.below
            self.recover = rule.recover_above if rule.recover_above is not None else rule.below
        else:
            self.trigger = rule.above
            self.recover = rule.recover_below if rule.recover_below is not None else rule.above

    def read(self, t: float, x: float, state: str | None) -> _Reading:
        if self.low:
            bad, rec = x < self.trigger, x >= self.recover
        else:
            bad, rec = x > self.trigger, x <= self.recover
        return _Reading(bad, rec, x, self.recover if state == "firing" and rec else self.trigger)

    def learn(self, t: float, x: float) -> None:
        pass

    def reset(self) -> None:
        pass

    def evidence(self) -> dict:
        return {}


class _Ewma:
    """Exponentially weighted mean on irregular media time: weight of the past halves every `half_life` seconds."""

    def __init__(self, half_life: float):
        self.half_life = half_life
        self.mean: float | None = None
        self.first_t = self.last_t = None

    def update(self, t: float, x: float) -> None:
        if self.mean is None:
            self.mean, self.first_t = x, t
        else:
            keep = 0.5 ** (max(t - self.last_t, 0.0) / self.half_life)
            self.mean = keep * self.mean + (1 - keep) * x
        self.last_t = t

    def learned_for(self, t: float) -> float:
        return -math.inf if self.first_t is None else t - self.first_t


class _Drop:
    def __init__(self, rule: DropRule):
        self.rule, self.base = rule, _Ewma(rule.half_life)

    def ready(self, t: float) -> bool:
        return self.base.learned_for(t) >= self.rule.warmup - EPS_S

    def read(self, t: float, x: float, state: str | None) -> _Reading:
        if not self.ready(t):
            return _Reading(False, True, x, math.nan)
        b = self.base.mean
        rec = x >= b - self.rule.recover_within
        limit = b - (self.rule.recover_within if state == "firing" and rec else self.rule.points)
        return _Reading(x < b - self.rule.points, rec, x, limit)

    def learn(self, t: float, x: float) -> None:
        self.base.update(t, x)

    def reset(self) -> None:
        pass

    def evidence(self) -> dict:
        return {"baseline": self.base.mean}


class _Cusum(_Drop):
    def __init__(self, rule: CusumRule):
        super().__init__(rule)
        self.reset()

    def read(self, t: float, x: float, state: str | None) -> _Reading:
        h = self.rule.h
        if not self.ready(t):
            return _Reading(False, True, self.s, h)
        target = self.base.mean - self.rule.k
        self.s = max(0.0, self.s + target - x)
        if self.s == 0:
            self.run_start = None
        elif self.run_start is None:
            self.run_start = t
        if state == "firing":
            self.u = max(0.0, self.u + x - target)
        recovered = self.u > h
        return _Reading(self.s > h, recovered, self.u if recovered else self.s, h, self.run_start)

    def reset(self) -> None:
        self.s, self.u, self.run_start = 0.0, 0.0, None  # run_start: first sample of the S > 0 run (change onset)


class _Threshold:
    """freeze (x ≤ threshold, starting at the previous frame) and black (x ≥ threshold)."""

    def __init__(self, rule: FreezeRule | BlackRule):
        self.rule, self.prev_t = rule, None
        self.freeze = isinstance(rule, FreezeRule)

    def read(self, t: float, x: float, state: str | None) -> _Reading:
        bad = x <= self.rule.threshold if self.freeze else x >= self.rule.threshold
        onset = self.prev_t if self.freeze else None
        self.prev_t = t
        return _Reading(bad, not bad, x, self.rule.threshold, onset)

    def learn(self, t: float, x: float) -> None:
        pass

    def reset(self) -> None:
        pass

    def evidence(self) -> dict:
        return {}


def _detector(rule: Rule):
    return {LevelRule: _Level, DropRule: _Drop, CusumRule: _Cusum, FreezeRule: _Threshold, BlackRule: _Threshold}[type(rule)](rule)


def _lower_is_worse(rule: Rule) -> bool:
    if isinstance(rule, LevelRule):
        return rule.below is not None
    return not isinstance(rule, BlackRule)  # drop/cusum: low scores; freeze: the most exact repeat


@dataclass
class _Track:
    """One rule on one stream: its detector and the alert it has open, if any."""

    detector: object
    state: str | None = None  # None (idle), "pending" or "firing"
    alert_id: str = ""
    since: float = 0.0
    recover_since: float | None = None
    worst: tuple[int, float, float] | None = None  # (frame_index, pts_s, value)
    last: tuple[float, _Reading] | None = None  # last sample time and reading while open
    thumbnails: dict | None = None  # frame_index → path, so a frame is written once per alert


ThumbnailWriter = Callable[[int, float], "str | None"]


class AlertEngine:
    """Runs rules over one or more streams on media time; `observe_*` return the events the sample caused, in order.

    `thumbnail`: optional callable (frame_index, pts_s) → path of a JPEG of that frame, or None
    when the frame is no longer at hand. It is called when an event is emitted, for the worst
    frame so far (at most once per frame and alert); the pipeline decides how long it keeps frames.
    Thread-safe: fr.vmaf results reach it from the thread that collects them (monitor/vmaf.py).
    """

    FRAME_MEMORY = 100_000  # frames kept per (stream, metric, scale) for window rules' evidence, at most

    def __init__(self, rules: list[Rule], thumbnail: ThumbnailWriter | None = None):
        self.rules = list(rules)
        self.thumbnail = thumbnail
        self._tracks: dict[tuple[str, str], _Track] = {}  # (stream_id, rule name) → track
        self._frames: dict[tuple[str, str, str], deque] = {}  # (stream, metric, scale) → (pts, index, x)
        self._windowed = {(r.metric, r.scale) for r in self.rules if isinstance(r, MetricRule) and r.stat != "frame"}
        self._lock = threading.Lock()

    def observe_frame(self, score: FrameScore, t: float | None = None) -> list[AlertEvent]:
        """One frame's score of one metric. `t` is its media time: pts_s unless given (pass index/fps without pts)."""
        with self._lock:
            return self._observe_frame(score, t)

    def _observe_frame(self, score: FrameScore, t: float | None) -> list[AlertEvent]:
        t = score.pts_s if t is None else t
        if t is None:
            raise ValueError(f"frame {score.frame_index} of {score.stream_id!r} has no pts: pass its media time as t")
        for scale in ("score", "value"):
            x = score.score if scale == "score" else score.value
            if (score.metric, scale) in self._windowed and x is not None and not math.isnan(x):
                q = self._frames.setdefault((score.stream_id, score.metric, scale), deque(maxlen=self.FRAME_MEMORY))
                q.append((t, score.frame_index, x))
        events = []
        for rule in self.rules:
            if rule.metric != score.metric or (isinstance(rule, MetricRule) and rule.stat != "frame"):
                continue
            x = score.score if isinstance(rule, MetricRule) and rule.scale == "score" else score.value
            if x is None or math.isnan(x):
                continue
            events += self._step(rule, score.stream_id, t, x, (score.frame_index, t, x))
        return events

    def observe_window(self, stat: WindowStat) -> list[AlertEvent]:
        """One window's statistics; rules with a `stat` of this metric and scale judge it at the window's end."""
        with self._lock:
            return self._observe_window(stat)

    def _observe_window(self, stat: WindowStat) -> list[AlertEvent]:
        events = []
        for rule in self.rules:
            if not (isinstance(rule, MetricRule) and rule.stat != "frame" and rule.metric == stat.metric
                    and rule.scale == stat.scale):
                continue
            x = getattr(stat, rule.stat)
            if math.isnan(x):
                continue
            frames = self._frames.get((stat.stream_id, stat.metric, stat.scale), ())
            inside = [(x_, i, p) for p, i, x_ in frames if stat.window_start_s <= p < stat.window_end_s]
            worst = None
            if inside:
                v, i, p = min(inside) if _lower_is_worse(rule) else max(inside)
                worst = (i, p, v)
            events += self._step(rule, stat.stream_id, stat.window_end_s, x, worst)
        q = self._frames.get((stat.stream_id, stat.metric, stat.scale))
        while q and q[0][0] < stat.window_start_s:  # later windows start later: older frames are done with
            q.popleft()
        return events

    def flush(self, stream_id: str | None = None) -> list[AlertEvent]:
        """End of stream: every open alert is emitted once more in its current state (pending or firing), with
        `at_s` the last media time seen, then forgotten. Nothing is resolved: the stream ended, the problem did not."""
        with self._lock:
            return self._flush(stream_id)

    def _flush(self, stream_id: str | None) -> list[AlertEvent]:
        events = []
        for (sid, name), tr in list(self._tracks.items()):
            if stream_id is not None and sid != stream_id:
                continue
            if tr.state is not None:
                t, reading = tr.last
                events.append(self._event(self._rule(name), sid, tr, tr.state, t, reading))
            del self._tracks[(sid, name)]
        for key in [k for k in self._frames if stream_id is None or k[0] == stream_id]:
            del self._frames[key]
        return events

    def _rule(self, name: str) -> Rule:
        return next(r for r in self.rules if r.name == name)

    def _step(self, rule: Rule, stream_id: str, t: float, x: float, frame) -> list[AlertEvent]:
        tr = self._tracks.get((stream_id, rule.name))
        if tr is None:
            tr = self._tracks[(stream_id, rule.name)] = _Track(_detector(rule))
        r = tr.detector.read(t, x, tr.state)
        events = []
        if tr.state is None:
            if r.bad:
                tr.state, tr.since, tr.worst, tr.thumbnails = "pending", r.onset if r.onset is not None else t, None, {}
                tr.alert_id = f"{rule.name}@{stream_id}@{tr.since:.3f}"
                self._note_worst(rule, tr, frame)
                events += self._advance(rule, stream_id, tr, t, r, announce=True)
        elif tr.state == "pending":
            if r.bad:
                self._note_worst(rule, tr, frame)
                events += self._advance(rule, stream_id, tr, t, r, announce=False)
            else:
                tr.state = None
                tr.detector.reset()
        else:  # firing
            if r.bad:
                self._note_worst(rule, tr, frame)
            if r.recovered:
                tr.recover_since = t if tr.recover_since is None else tr.recover_since
                if t - tr.recover_since >= rule.recover_for_s - EPS_S:
                    events.append(self._event(rule, stream_id, tr, "resolved", t, r))
                    tr.state, tr.recover_since = None, None
                    tr.detector.reset()
            else:
                tr.recover_since = None
        if tr.state is None:
            tr.detector.learn(t, x)
        else:
            tr.last = (t, r)
        return events

    def _advance(self, rule: Rule, stream_id: str, tr: _Track, t: float, r: _Reading, announce: bool) -> list[AlertEvent]:
        """Pending alert: fire once the condition has held `for` seconds; announce a new pending alert otherwise."""
        if t - tr.since >= rule.for_s - EPS_S:
            tr.state, tr.recover_since = "firing", None
            return [self._event(rule, stream_id, tr, "firing", t, r)]
        return [self._event(rule, stream_id, tr, "pending", t, r)] if announce else []

    def _note_worst(self, rule: Rule, tr: _Track, frame) -> None:
        if frame is None:
            return
        if tr.worst is None or (frame[2] < tr.worst[2] if _lower_is_worse(rule) else frame[2] > tr.worst[2]):
            tr.worst = frame

    def _event(self, rule: Rule, stream_id: str, tr: _Track, state: str, t: float, r: _Reading) -> AlertEvent:
        evidence = {"frame_index": None, "pts_s": None, "value": None, "thumbnail": None}
        if tr.worst is not None:
            index, pts, value = tr.worst
            evidence.update(frame_index=index, pts_s=pts, value=value)
            if self.thumbnail is not None:
                if index not in tr.thumbnails:
                    tr.thumbnails[index] = self.thumbnail(index, pts)
                evidence["thumbnail"] = tr.thumbnails[index]
        evidence.update(tr.detector.evidence())
        return AlertEvent(alert_id=tr.alert_id, stream_id=stream_id, rule=rule.name, metric=rule.metric, state=state,
                          since_s=tr.since, at_s=t, value=r.value, threshold=r.threshold, evidence=evidence)


class WebhookNotifier:
    """POSTs alert events as JSON (`records.to_json`) to a URL, retrying with capped exponential backoff.

    A sink (write/flush/close), so the pipeline lists it beside the others; it ignores other
    records and, by default, pending events. Delivery is synchronous: a dead endpoint costs up
    to `retries` backoffs per event, and a failed delivery is logged, not raised, so the monitor
    keeps running.
    """

    def __init__(self, url: str, retries: int = 3, backoff_s: float = 0.5, max_backoff_s: float = 30.0,
                 timeout_s: float = 5.0, states: tuple[str, ...] = ("firing", "resolved")):
        self.url, self.retries, self.backoff_s, self.max_backoff_s = url, retries, backoff_s, max_backoff_s
        self.timeout_s, self.states = timeout_s, states

    def post(self, event: AlertEvent) -> bool:
        """Deliver one event; True once the endpoint answers 2xx. Client errors (4xx but 408/429) are not retried."""
        body = to_json(event).encode()
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(min(self.max_backoff_s, self.backoff_s * 2 ** (attempt - 1)))
            req = urllib.request.Request(self.url, data=body, method="POST",
                                         headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(req, timeout=self.timeout_s):
                    return True
            except urllib.error.HTTPError as e:
                problem = f"HTTP {e.code}"
                if 400 <= e.code < 500 and e.code not in (408, 429):
                    break
            except (urllib.error.URLError, OSError) as e:
                problem = str(getattr(e, "reason", e))
        log.warning("webhook %s: alert %s (%s) not delivered after %d attempt(s): %s",
                    self.url, event.alert_id, event.state, attempt + 1, problem)
        return False

    def write(self, records) -> None:
        for r in records:
            if isinstance(r, AlertEvent) and r.state in self.states:
                self.post(r)

    def flush(self) -> None:
        """Nothing is buffered: events are posted as they are written."""

    def close(self) -> None:
        """Nothing to release: every post opens and closes its own connection."""
