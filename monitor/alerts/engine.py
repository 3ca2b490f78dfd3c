"""The alert engine: one state machine per (rule, stream) turns detector readings into pending/firing/resolved events.

Every rule turns samples (media time `t`, value `x`) into a condition, and one state machine
per (rule, stream) turns the condition into events:

    idle ──bad──► pending ──bad for `for` s──► firing ──recovered for `recover_for` s──► resolved (idle)
                     └──not bad──► idle (no event: a pending alert that clears was never an alert)

With `for` = 0 the alert goes straight to firing (no pending event). While firing, a sample
that is not "recovered" restarts the `recover_for` clock; for level rules the band between the
trigger and the recover threshold is hysteresis, so a series flapping around the trigger
threshold stays one firing alert.
"""
from __future__ import annotations

import json
import math
import threading
from collections import deque
from dataclasses import dataclass
from typing import Callable

from monitor.alerts.detectors import EPS_S, Detector, Reading, detector_for, lower_is_worse
from monitor.alerts.rules import MetricRule, Rule
from monitor.records import AlertEvent, FrameScore, WindowStat


@dataclass
class AlertSpan:
    """One alert that fired, for people to read: its span in media time (`until` None while still firing at the end)."""

    rule: str
    metric: str
    since: float
    until: float | None
    threshold: float
    worst: dict  # evidence of its last event: worst frame_index, pts_s, value, thumbnail


def alert_spans(events: list[dict]) -> list[AlertSpan]:
    """Alert events (as rows: Parquet or `records.to_row`) → the alerts that fired, each from its first firing
    event's `since_s` to its resolving event (a pending alert that cleared was never an alert)."""
    by_id: dict[str, list[dict]] = {}
    for row in sorted(events, key=lambda r: (r["at_s"], r["emitted_ts"])):
        by_id.setdefault(row["alert_id"], []).append(row)
    spans = []
    for rows in by_id.values():
        firing = [r for r in rows if r["state"] == "firing"]
        if not firing:
            continue
        resolved = [r for r in rows if r["state"] == "resolved"]
        evidence = (resolved or firing)[-1]["evidence"] or {}
        spans.append(AlertSpan(firing[0]["rule"], firing[0]["metric"], firing[0]["since_s"],
                               resolved[-1]["at_s"] if resolved else None, firing[0]["threshold"],
                               json.loads(evidence) if isinstance(evidence, str) else evidence))
    return sorted(spans, key=lambda a: a.since)


@dataclass
class _Track:
    """One rule on one stream: its detector and the alert it has open, if any."""

    detector: Detector
    state: str | None = None  # None (idle), "pending" or "firing"
    alert_id: str = ""
    since: float = 0.0
    recover_since: float | None = None
    worst: tuple[int, float, float] | None = None  # (frame_index, pts_s, value)
    last: tuple[float, Reading] | None = None  # last sample time and reading while open
    thumbnails: dict | None = None  # frame_index → path, so a frame is written once per alert


ThumbnailWriter = Callable[[int, float], "str | None"]


class AlertEngine:
    """Runs rules over one or more streams on media time; `observe_*` return the events the sample caused, in order.

    `thumbnail`: optional callable (frame_index, pts_s) → path of a JPEG of that frame, or None
    when the frame is no longer at hand. It is called when an event is emitted, for the worst
    frame so far (at most once per frame and alert); the pipeline decides how long it keeps frames.
    Thread-safe: fr.vmaf results reach it from the thread that collects them (monitor/scoring/vmaf.py).
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
                v, i, p = min(inside) if lower_is_worse(rule) else max(inside)
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
            tr = self._tracks[(stream_id, rule.name)] = _Track(detector_for(rule))
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

    def _advance(self, rule: Rule, stream_id: str, tr: _Track, t: float, r: Reading, announce: bool) -> list[AlertEvent]:
        """Pending alert: fire once the condition has held `for` seconds; announce a new pending alert otherwise."""
        if t - tr.since >= rule.for_s - EPS_S:
            tr.state, tr.recover_since = "firing", None
            return [self._event(rule, stream_id, tr, "firing", t, r)]
        return [self._event(rule, stream_id, tr, "pending", t, r)] if announce else []

    def _note_worst(self, rule: Rule, tr: _Track, frame) -> None:
        if frame is None:
            return
        if tr.worst is None or (frame[2] < tr.worst[2] if lower_is_worse(rule) else frame[2] > tr.worst[2]):
            tr.worst = frame

    def _event(self, rule: Rule, stream_id: str, tr: _Track, state: str, t: float, r: Reading) -> AlertEvent:
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
