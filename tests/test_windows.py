"""Window statistics equal numpy/scipy on random series; windows close at the right times; coverage counts gaps."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from monitor.windows import WindowAggregator, WindowSpec, window_stats


@pytest.mark.parametrize("seed", range(5))
def test_window_stats_equal_numpy(seed):
    rng = np.random.default_rng(seed)
    v = rng.gamma(2.0, 20.0, size=rng.integers(1, 300))
    s = window_stats(v)
    assert s["count"] == v.size
    assert s["mean"] == pytest.approx(v.mean()) and s["std"] == pytest.approx(v.std())
    assert s["min"] == v.min() and s["max"] == v.max()
    for q in (5, 10, 50):
        assert s[f"p{q}"] == pytest.approx(np.percentile(v, q))
    assert s["harmonic_mean"] == pytest.approx(sps.hmean(v))


def test_harmonic_mean_edge_cases():
    assert window_stats(np.array([0.0, 5.0]))["harmonic_mean"] == 0.0
    assert math.isnan(window_stats(np.array([-1.0, 5.0]))["harmonic_mean"])


def feed(agg, pts, values, scored):
    out = []
    for t, v, ok in zip(pts, values, scored):
        out += agg.observe("s", t)
        if ok:
            agg.add("s", "m", "value", t, v)
    return out + agg.flush()


@pytest.mark.parametrize("size,hop", [(2.0, None), (2.0, 0.5), (1.0, 1.0)])
def test_windows_match_numpy_on_media_time(size, hop):
    rng = np.random.default_rng(1)
    pts = np.arange(0, 10, 0.04)  # 25 fps, 10 s
    values = rng.normal(50, 10, pts.size)
    scored = rng.random(pts.size) > 0.2
    wins = feed(WindowAggregator(WindowSpec(size, hop)), pts, values, scored)
    step = hop or size
    starts = np.arange(0, 10, step)
    assert [w.window_start_s for w in wins] == pytest.approx(list(starts))
    for w in wins:
        inside = (pts >= w.window_start_s) & (pts < w.window_end_s)
        v = values[inside & scored]
        assert w.kind == ("tumbling" if hop in (None, size) else "sliding")
        assert w.count == v.size and w.seen == inside.sum()
        assert w.coverage == pytest.approx(v.size / inside.sum())
        assert w.mean == pytest.approx(v.mean()) and w.p10 == pytest.approx(np.percentile(v, 10))


def test_windows_close_as_soon_as_time_passes_their_end():
    agg = WindowAggregator(WindowSpec(1.0))
    closed = []
    for t in np.arange(0, 2.5, 0.1):
        closed += agg.observe("s", float(t))
        agg.add("s", "m", "value", float(t), 1.0)
        if t < 0.95:
            assert not closed
    assert [w.window_end_s for w in closed] == [1.0, 2.0]


def test_gap_in_media_time_skips_empty_windows():
    wins = feed(WindowAggregator(WindowSpec(1.0)), [0.0, 0.5, 3600.2, 3600.7], [1, 2, 3, 4], [True] * 4)
    assert [(w.window_start_s, w.count) for w in wins] == [(0.0, 2), (3600.0, 2)]


def test_late_frames_are_counted_and_left_out():
    agg = WindowAggregator(WindowSpec(1.0))
    wins = feed(agg, [0.0, 0.5, 1.2, 2.1, 0.7, 2.5], [1, 1, 5, 9, 100, 9], [True] * 6)
    assert agg.late["s"] == 1  # 0.7 s arrived after the [0, 1) window was emitted
    assert [(w.window_start_s, w.count, w.max) for w in wins] == [(0.0, 2, 1), (1.0, 1, 5), (2.0, 2, 9)]
