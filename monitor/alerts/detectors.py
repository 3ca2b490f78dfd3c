"""Detectors: one per (rule, stream), each turns a sample (media time `t`, value `x`) into a condition."""
from __future__ import annotations

import math
from dataclasses import dataclass

from monitor.alerts.rules import BlackRule, CusumRule, DropRule, FreezeRule, LevelRule, Rule

EPS_S = 1e-9  # media-time comparisons: 0.04 s steps do not add up exactly in binary


@dataclass
class Reading:
    bad: bool  # the alert condition holds
    recovered: bool  # the sample counts towards resolving a firing alert
    value: float  # what the event reports as value / threshold
    threshold: float
    onset: float | None = None  # when the condition started, if earlier than this sample


class Detector:
    """Turns one sample into a Reading; stateful detectors also learn while idle and reset when an alert ends."""

    def read(self, t: float, x: float, state: str | None) -> Reading:
        raise NotImplementedError

    def learn(self, t: float, x: float) -> None:
        """Called with every sample while the rule is idle."""

    def reset(self) -> None:
        """Called when an alert resolves or a pending alert clears."""

    def evidence(self) -> dict:
        """What the detector adds to an event's evidence."""
        return {}


class _Level(Detector):
    def __init__(self, rule: LevelRule):
        self.low = rule.below is not None
        if self.low:
            self.trigger = rule.below
            self.recover = rule.recover_above if rule.recover_above is not None else rule.below
        else:
            self.trigger = rule.above
            self.recover = rule.recover_below if rule.recover_below is not None else rule.above

    def read(self, t: float, x: float, state: str | None) -> Reading:
        if self.low:
            bad, rec = x < self.trigger, x >= self.recover
        else:
            bad, rec = x > self.trigger, x <= self.recover
        return Reading(bad, rec, x, self.recover if state == "firing" and rec else self.trigger)


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


class _Drop(Detector):
    def __init__(self, rule: DropRule):
        self.rule, self.base = rule, _Ewma(rule.half_life)

    def ready(self, t: float) -> bool:
        return self.base.learned_for(t) >= self.rule.warmup - EPS_S

    def read(self, t: float, x: float, state: str | None) -> Reading:
        if not self.ready(t):
            return Reading(False, True, x, math.nan)
        b = self.base.mean
        rec = x >= b - self.rule.recover_within
        limit = b - (self.rule.recover_within if state == "firing" and rec else self.rule.points)
        return Reading(x < b - self.rule.points, rec, x, limit)

    def learn(self, t: float, x: float) -> None:
        self.base.update(t, x)

    def evidence(self) -> dict:
        return {"baseline": self.base.mean}


class _Cusum(_Drop):
    def __init__(self, rule: CusumRule):
        super().__init__(rule)
        self.reset()

    def read(self, t: float, x: float, state: str | None) -> Reading:
        h = self.rule.h
        if not self.ready(t):
            return Reading(False, True, self.s, h)
        target = self.base.mean - self.rule.k
        self.s = max(0.0, self.s + target - x)
        if self.s == 0:
            self.run_start = None
        elif self.run_start is None:
            self.run_start = t
        if state == "firing":
            self.u = max(0.0, self.u + x - target)
        recovered = self.u > h
        return Reading(self.s > h, recovered, self.u if recovered else self.s, h, self.run_start)

    def reset(self) -> None:
        self.s, self.u, self.run_start = 0.0, 0.0, None  # run_start: first sample of the S > 0 run (change onset)


class _Threshold(Detector):
    """freeze (x ≤ threshold, starting at the previous frame) and black (x ≥ threshold)."""

    def __init__(self, rule: FreezeRule | BlackRule):
        self.rule, self.prev_t = rule, None
        self.freeze = isinstance(rule, FreezeRule)

    def read(self, t: float, x: float, state: str | None) -> Reading:
        bad = x <= self.rule.threshold if self.freeze else x >= self.rule.threshold
        onset = self.prev_t if self.freeze else None
        self.prev_t = t
        return Reading(bad, not bad, x, self.rule.threshold, onset)


def detector_for(rule: Rule) -> Detector:
    return {LevelRule: _Level, DropRule: _Drop, CusumRule: _Cusum, FreezeRule: _Threshold, BlackRule: _Threshold}[type(rule)](rule)


def lower_is_worse(rule: Rule) -> bool:
    if isinstance(rule, LevelRule):
        return rule.below is not None
    return not isinstance(rule, BlackRule)  # drop/cusum: low scores; freeze: the most exact repeat

