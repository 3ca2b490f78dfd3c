"""Alert rules as typed values (ARCHITECTURE.md §6): what each kind watches and the invariants of its fields.

Text becomes rules in `monitor.config` (`parse_rules`); a rule that breaks an invariant raises
`InputError` with one line naming the rule and field.

Every rule turns samples (media time `t`, value `x`) into a condition (`monitor.alerts.detectors`),
which the engine's state machine turns into events (`monitor.alerts.engine`). What each rule consumes:
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

import math
from dataclasses import dataclass, field

from monitor.errors import InputError
from monitor.scoring.signals import BLACK_FRAME_RATIO, FREEZE_MAFD

WINDOW_STATS = ("mean", "min", "max", "std", "p5", "p10", "p50", "harmonic_mean")
DURATIONS = ("for_s", "recover_for_s", "half_life_s", "span_s", "warmup_s")  # config keys drop the _s


def config_key(field_name: str) -> str:
    """The key a field has in a config file: durations drop their `_s`."""
    return field_name[:-2] if field_name in DURATIONS else field_name


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
        raise InputError(f"alert rule {self.name!r}: field {config_key(field_name)!r} {problem}")


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
class ThresholdRule(Rule):
    """A signal past a fixed threshold for `for` seconds: freeze and black."""

    for_s: float = field()  # required here: a freeze (black) of 0 s is every repeated (dark) frame


@dataclass(frozen=True, kw_only=True)
class FreezeRule(ThresholdRule):
    """Fires when sig.freeze (MAFD) stays ≤ `threshold` for `for` seconds, counted from the repeated frame."""

    threshold: float = FREEZE_MAFD
    metric = "sig.freeze"

    def __post_init__(self):
        super().__post_init__()
        if not 0 <= self.threshold < 1:
            self._fail("threshold", f"must be an MAFD in [0, 1), got {self.threshold}")


@dataclass(frozen=True, kw_only=True)
class BlackRule(ThresholdRule):
    """Fires when sig.black (share of black pixels) stays ≥ `threshold` for `for` seconds."""

    threshold: float = BLACK_FRAME_RATIO
    metric = "sig.black"

    def __post_init__(self):
        super().__post_init__()
        if not 0 < self.threshold <= 1:
            self._fail("threshold", f"must be a fraction in (0, 1], got {self.threshold}")


RULE_KINDS: dict[str, type[Rule]] = {"level": LevelRule, "drop": DropRule, "cusum": CusumRule,
                                     "freeze": FreezeRule, "black": BlackRule}
