"""`vqmon report`: one self-contained HTML file over the Parquet records of `score` or `watch`.

Plots are hand-built SVG rather than matplotlib: a time series is one <polyline>, a histogram a
row of <rect>s, so the page stays small (a 1-hour stream at 1 fps is a few hundred kB), renders
instantly, stays crisp at any zoom, and the tests can count plot elements in the DOM. Nothing is
loaded from anywhere: CSS is inline, thumbnails are base64 JPEGs.

Per stream: a summary table (mean, p5, min, time below each alert threshold), quality over time
per metric (frame scores, window mean, shaded p10–mean band), alert spans shaded and labelled
with their rule, stream events (down/up, alignment) as vertical markers, score histograms, the
alerts, and the worst frames with their pts. Several streams sit side by side in columns.

Thumbnails are the JPEGs under RESULTS/thumbnails/<stream>/frame-<index>.jpg: the alert engine
writes its evidence frames there, and `vqmon score --report` adds the worst frame of each metric
(`write_worst_thumbnails`, one more decode of the file).
"""
from __future__ import annotations

import base64
import html
import json
import math
import os
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from monitor.errors import InputError
from monitor.paths import inside

W, H = 900, 190  # chart viewBox; CSS scales it to the column width
PAD_L, PAD_R, PAD_T, PAD_B = 44, 10, 16, 22
HIST_W, HIST_H, BINS = 300, 120, 20
FRAME_COLOR, MEAN_COLOR, BAND_COLOR, ALERT_COLOR = "#1f77b4", "#d62728", "#9ecae1", "#f5b041"
MAX_WORST = 6

CSS = f"""
body{{font:13px/1.4 system-ui,sans-serif;margin:16px;color:#222;background:#fff}}
h1{{font-size:20px;margin:0 0 4px}} h2{{font-size:16px;margin:12px 0 6px}} h3{{font-size:13px;margin:10px 0 2px}}
.streams{{display:grid;gap:24px}}
table{{border-collapse:collapse;margin:4px 0}} td,th{{padding:2px 8px;border-bottom:1px solid #ddd;text-align:right}}
td:first-child,th:first-child{{text-align:left}}
svg{{display:block;width:100%;height:auto}} .hist{{max-width:{HIST_W}px;display:inline-block;margin-right:8px}}
.legend span{{margin-right:12px}} .sw{{display:inline-block;width:18px;height:4px;vertical-align:middle;margin-right:4px}}
.thumbs{{display:flex;flex-wrap:wrap;gap:8px}} figure{{margin:0;font-size:12px}} figure img{{display:block;width:200px}}
.muted{{color:#777}}
"""


@dataclass
class Alert:
    """One alert that fired: its span in media time (`until` None while still firing at the end of the records)."""

    rule: str
    metric: str
    since: float
    until: float | None
    threshold: float
    worst: dict = field(default_factory=dict)


@dataclass
class Stream:
    stream_id: str
    frames: dict[str, dict[str, np.ndarray]]  # metric → {"t", "index", "value", "score"}
    windows: dict[str, dict[str, np.ndarray]]  # metric → window columns (scale chosen per metric)
    alerts: list[Alert]
    events: list[tuple[float, str]]  # (media time, event name)
    t0: float
    t1: float


def build_report(results: str, rules: list | None = None) -> str:
    """The report's HTML. `rules`: parsed alert rules (monitor.alerts.parse_rules) for the "time below" columns."""
    streams = load_streams(results)
    cols = f"repeat({len(streams)},minmax(0,1fr))"
    body = "".join(_stream_html(s, results, rules or []) for s in streams)
    title = f"vqmon report: {', '.join(s.stream_id for s in streams)}"
    return (f"<!doctype html><html><head><meta charset=utf-8><title>{_e(title)}</title>"
            f'<link rel=icon href="data:,"><style>{CSS}</style></head><body>'
            f"<h1>{_e(title)}</h1><p class=muted>records from {_e(os.path.abspath(results))}, "
            f"generated {datetime.now().astimezone():%Y-%m-%d %H:%M %Z}</p>"
            f'<div class=legend><span><i class=sw style="background:{FRAME_COLOR}"></i>frame score</span>'
            f'<span><i class=sw style="background:{MEAN_COLOR}"></i>window mean</span>'
            f'<span><i class=sw style="background:{BAND_COLOR}"></i>window p10–mean</span>'
            f'<span><i class=sw style="background:{ALERT_COLOR}"></i>alert firing</span>'
            f'<span><i class=sw style="background:#444"></i>stream event</span></div>'
            f'<div class=streams style="grid-template-columns:{cols}">{body}</div></body></html>')


def write_report(results: str, out: str, rules: list | None = None) -> str:
    page = build_report(results, rules)
    tmp = os.path.join(os.path.dirname(os.path.abspath(out)), f".{os.path.basename(out)}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(page)
    os.replace(tmp, out)
    return out


def _table(results: str, kind: str) -> pa.Table | None:
    from monitor.sinks.parquet import read

    if not os.path.isdir(os.path.join(results, kind)):
        return None
    return read(results, kind)


def load_streams(results: str) -> list[Stream]:
    frames = _table(results, "frames")
    if frames is None or frames.num_rows == 0:
        raise InputError(f"{results}: no frame records (expected the Parquet output of vqmon score or watch: "
                         f"{os.path.join(results, 'frames')}/)")
    windows, alerts, events = (_table(results, k) for k in ("windows", "alerts", "events"))
    frames = frames.filter(pc.is_valid(frames["pts_s"]))
    out = []
    for sid in sorted(set(frames["stream_id"].to_pylist())):
        fs = frames.filter(pc.equal(frames["stream_id"], sid)).sort_by("pts_s")
        t = fs["pts_s"].to_numpy()
        per_metric = {}
        for m in sorted(set(fs["metric"].to_pylist())):
            fm = fs.filter(pc.equal(fs["metric"], m))
            per_metric[m] = {"t": fm["pts_s"].to_numpy(), "index": fm["frame_index"].to_numpy(),
                             "value": fm["value"].to_numpy(zero_copy_only=False),
                             "score": pc.fill_null(fm["score"], math.nan).to_numpy()}
        win = _windows(windows, sid, per_metric)
        t0, t1 = (float(t.min()), float(t.max())) if t.size else (0.0, 1.0)
        t1 = max([t1, t0 + 1e-3] + [float(w["window_end_s"].max()) for w in win.values()])
        out.append(Stream(sid, per_metric, win, _alerts(alerts, sid), _events(events, sid, fs), t0, t1))
    return out


def _windows(table, sid: str, frames: dict) -> dict:
    """Window stats per metric on the scale its chart uses (score where the metric has one)."""
    if table is None:
        return {}
    table = table.filter(pc.equal(table["stream_id"], sid))
    out = {}
    for m, f in frames.items():
        scale = "score" if _has_score(f) else "value"
        w = table.filter(pc.and_(pc.equal(table["metric"], m), pc.equal(table["scale"], scale)))
        if w.num_rows:
            w = w.sort_by("window_end_s")
            out[m] = {k: pc.fill_null(w[k], math.nan).to_numpy()
                      for k in ("window_start_s", "window_end_s", "mean", "p10", "p5", "min")}
    return out


def _alerts(table, sid: str) -> list[Alert]:
    """Alerts that fired, one span each: from `since_s` to the resolving event (or the end of the records)."""
    if table is None:
        return []
    by_id: dict[str, list[dict]] = {}
    for row in sorted(table.to_pylist(), key=lambda r: (r["at_s"], r["emitted_ts"])):
        if row["stream_id"] == sid:
            by_id.setdefault(row["alert_id"], []).append(row)
    spans = []
    for rows in by_id.values():
        firing = [r for r in rows if r["state"] == "firing"]
        if not firing:
            continue  # pending that cleared: never an alert
        resolved = [r for r in rows if r["state"] == "resolved"]
        last = resolved[-1] if resolved else firing[-1]
        spans.append(Alert(firing[0]["rule"], firing[0]["metric"], firing[0]["since_s"],
                           resolved[-1]["at_s"] if resolved else None, firing[0]["threshold"],
                           json.loads(last["evidence"] or "{}")))
    return sorted(spans, key=lambda a: a.since)


def _events(table, sid: str, frames: pa.Table) -> list[tuple[float, str]]:
    """Stream events carry wall-clock time; frames carry both, so events land on media time by interpolation."""
    if table is None:
        return []
    table = table.filter(pc.equal(table["stream_id"], sid))
    if not table.num_rows:
        return []
    frames = frames.sort_by("ingest_ts")
    wall = pc.cast(frames["ingest_ts"], pa.int64()).to_numpy() / 1e6
    media = frames["pts_s"].to_numpy()
    at = pc.cast(table["at"], pa.int64()).to_numpy() / 1e6
    return [(float(np.interp(a, wall, media)), e) for a, e in zip(at, table["event"].to_pylist())]


def _has_score(f: dict) -> bool:
    return bool(np.any(~np.isnan(f["score"])))


def _stream_html(s: Stream, results: str, rules: list) -> str:
    thumbs = _thumbnails(results, s.stream_id)
    parts = [f"<section data-stream='{_e(s.stream_id)}'><h2>{_e(s.stream_id)}</h2>",
             f"<p class=muted>{_clock(s.t0)}–{_clock(s.t1)} media time · {len(s.alerts)} alert(s) · "
             f"{len(s.events)} stream event(s)</p>", _summary_table(s, rules)]
    metrics = sorted(s.frames, key=lambda m: (not _has_score(s.frames[m]), m))
    for m in metrics:
        parts.append(f"<h3>{_e(m)}{'' if _has_score(s.frames[m]) else ' (native units)'}</h3>")
        parts.append(_chart(s, m))
    parts.append("<h3>score histograms</h3>")
    parts += [_histogram(m, s.frames[m]["score"]) for m in metrics if _has_score(s.frames[m])]
    parts.append(_alerts_html(s, thumbs))
    parts.append(_worst_html(s, thumbs))
    parts.append("</section>")
    return "".join(parts)


def _summary_table(s: Stream, rules: list) -> str:
    levels = _level_rules(rules)
    head = "".join(f"<th>{_e(name)}</th>" for name, *_ in levels)
    rows = []
    for m, f in sorted(s.frames.items()):
        scored = _has_score(f)
        x = f["score"] if scored else f["value"]
        x = x[~np.isnan(x)]
        if not x.size:
            continue
        cells = []
        for _, metric, scale, below, above in levels:
            if metric != m:
                cells.append("<td></td>")
                continue
            v = f["score"] if scale == "score" else f["value"]
            v = v[~np.isnan(v)]
            share = np.mean(v < below) if below is not None else np.mean(v > above)
            cells.append(f"<td>{100 * share:.1f} %</td>")
        rows.append(f"<tr><td>{_e(m)}</td><td>{'score' if scored else 'value'}</td><td>{x.size}</td>"
                    f"<td>{_num(x.mean())}</td><td>{_num(np.percentile(x, 5))}</td><td>{_num(x.min())}</td>"
                    f"{''.join(cells)}</tr>")
    return (f"<table class=summary><tr><th>metric</th><th>scale</th><th>frames</th><th>mean</th><th>p5</th>"
            f"<th>min</th>{head}</tr>{''.join(rows)}</table>"
            + ("<p class=muted>time below each alert threshold: columns per level/freeze/black rule "
               "(share of scored frames)</p>" if levels else ""))


def _level_rules(rules: list) -> list[tuple[str, str, str, float | None, float | None]]:
    """(column title, metric, scale, below, above) for each rule with a fixed threshold on per-frame values."""
    from monitor.alerts.rules import BlackRule, FreezeRule, LevelRule

    out = []
    for r in rules:
        if isinstance(r, LevelRule):
            sign = f"< {r.below:g}" if r.below is not None else f"> {r.above:g}"
            out.append((f"{r.name}: {sign}", r.metric, r.scale, r.below, r.above))
        elif isinstance(r, FreezeRule):  # freeze: MAFD at or below the threshold
            out.append((f"{r.name}: ≤ {r.threshold:g}", r.metric, "value", r.threshold + 1e-12, None))
        elif isinstance(r, BlackRule):
            out.append((f"{r.name}: ≥ {r.threshold:g}", r.metric, "value", None, r.threshold - 1e-12))
    return out


def _chart(s: Stream, metric: str) -> str:
    f = s.frames[metric]
    scored = _has_score(f)
    y = f["score"] if scored else f["value"]
    ok = ~np.isnan(y)
    t, y = f["t"][ok], y[ok]
    win = s.windows.get(metric)
    if scored:
        lo, hi = 0.0, 100.0
    else:
        vals = [y] + ([win["p10"], win["mean"]] if win else [])
        allv = np.concatenate(vals) if vals else np.array([0.0, 1.0])
        allv = allv[np.isfinite(allv)]
        lo, hi = (float(allv.min()), float(allv.max())) if allv.size else (0.0, 1.0)
        if hi - lo < 1e-9:
            lo, hi = lo - 0.5, hi + 0.5
    sx = lambda v: PAD_L + (v - s.t0) / (s.t1 - s.t0) * (W - PAD_L - PAD_R)  # noqa: E731
    sy = lambda v: PAD_T + (hi - v) / (hi - lo) * (H - PAD_T - PAD_B)  # noqa: E731
    g = [f"<rect class=bg x={PAD_L} y={PAD_T} width={W - PAD_L - PAD_R} height={H - PAD_T - PAD_B} fill='#fafafa' "
         f"stroke='#ccc' />"]
    for v in np.linspace(lo, hi, 5):
        g.append(f"<line x1={PAD_L} x2={W - PAD_R} y1={sy(v):.1f} y2={sy(v):.1f} stroke='#e5e5e5' />"
                 f"<text x={PAD_L - 4} y={sy(v) + 4:.1f} text-anchor=end font-size=10>{_num(v)}</text>")
    for tick in _ticks(s.t0, s.t1):
        g.append(f"<text x={sx(tick):.1f} y={H - 6} text-anchor=middle font-size=10>{_clock(tick)}</text>")
    for a in s.alerts:
        x0, x1 = sx(max(a.since, s.t0)), sx(min(a.until if a.until is not None else s.t1, s.t1))
        g.append(f"<g class=alert-span data-rule='{_e(a.rule)}' data-since='{a.since:.3f}' "
                 f"data-until='{'' if a.until is None else f'{a.until:.3f}'}'>"
                 f"<title>{_e(a.rule)}: {_clock(a.since)}–{_clock(a.until) if a.until is not None else 'end'}</title>"
                 f"<rect x={x0:.1f} y={PAD_T} width={max(x1 - x0, 1.5):.1f} height={H - PAD_T - PAD_B} "
                 f"fill='{ALERT_COLOR}' fill-opacity=0.35 />"
                 f"<text x={x0 + 2:.1f} y={PAD_T + 11} font-size=10>{_e(a.rule)}</text></g>")
    if win:
        wt, mean, p10 = _window_line(win), np.clip(win["mean"], lo, hi), np.clip(win["p10"], lo, hi)
        mean, p10 = _window_values(win, mean), _window_values(win, p10)
        band = [(sx(a), sy(b)) for a, b in zip(wt, mean)] + [(sx(a), sy(b)) for a, b in zip(wt[::-1], p10[::-1])]
        g.append(f"<polygon class=band points='{_pts(band)}' fill='{BAND_COLOR}' fill-opacity=0.6 />")
    tt, yy = _decimate(t, y, W - PAD_L - PAD_R)
    g.append(f"<polyline class=frames points='{_pts(zip(map(sx, tt), map(sy, yy)))}' fill=none "
             f"stroke='{FRAME_COLOR}' stroke-width=1.2 />")
    if win:
        g.append(f"<polyline class=mean points='{_pts(zip(map(sx, wt), map(sy, mean)))}' "
                 f"fill=none stroke='{MEAN_COLOR}' stroke-width=2 />")
    for k, (at, name) in enumerate(s.events):
        x, label_y = sx(min(max(at, s.t0), s.t1)), H - PAD_B - 3 - 12 * (k % 2)  # alternate: down/up close together
        g.append(f"<g class=event data-event='{_e(name)}'><title>{_e(name)} at {_clock(at)}</title>"
                 f"<line x1={x:.1f} x2={x:.1f} y1={PAD_T} y2={H - PAD_B} stroke='#444' stroke-dasharray='3 2' />"
                 f"<text x={x + 2:.1f} y={label_y} font-size=10>{_e(name)}</text></g>")
    return (f"<svg class=chart data-metric='{_e(metric)}' data-t0='{s.t0:.3f}' data-t1='{s.t1:.3f}' "
            f"viewBox='0 0 {W} {H}' xmlns='http://www.w3.org/2000/svg'>{''.join(g)}</svg>")


def _histogram(metric: str, scores: np.ndarray) -> str:
    x = scores[~np.isnan(scores)]
    counts, _ = np.histogram(x, bins=BINS, range=(0, 100))
    top = max(int(counts.max()), 1)
    bw = (HIST_W - 20) / BINS
    bars = "".join(f"<rect class=bar x={10 + i * bw:.1f} y={HIST_H - 18 - c / top * (HIST_H - 34):.1f} "
                   f"width={bw - 1:.1f} height={c / top * (HIST_H - 34):.1f} fill='{FRAME_COLOR}'>"
                   f"<title>{i * 100 // BINS}–{(i + 1) * 100 // BINS}: {c} frames</title></rect>"
                   for i, c in enumerate(counts) if c)
    return (f"<svg class=hist data-metric='{_e(metric)}' viewBox='0 0 {HIST_W} {HIST_H}' "
            f"xmlns='http://www.w3.org/2000/svg'><text x=10 y=12 font-size=11>{_e(metric)} (score)</text>{bars}"
            f"<line x1=10 x2={HIST_W - 10} y1={HIST_H - 18} y2={HIST_H - 18} stroke='#999' />"
            f"<text x=10 y={HIST_H - 4} font-size=10>0</text>"
            f"<text x={HIST_W - 10} y={HIST_H - 4} font-size=10 text-anchor=end>100</text></svg>")


def _alerts_html(s: Stream, thumbs: dict[int, str]) -> str:
    if not s.alerts:
        return "<h3>alerts</h3><p class=muted>none fired</p>"
    rows = []
    for a in s.alerts:
        dur = (a.until if a.until is not None else s.t1) - a.since
        idx = a.worst.get("frame_index")
        pic = _img(thumbs.get(idx)) if idx is not None else ""
        worst = f"#{idx} @ {_clock(a.worst['pts_s'])}" if idx is not None else "—"
        rows.append(f"<tr class=alert-row><td>{_e(a.rule)}</td><td>{_e(a.metric)}</td><td>{_clock(a.since)}</td>"
                    f"<td>{_clock(a.until) if a.until is not None else 'still firing'}</td><td>{dur:.1f} s</td>"
                    f"<td>{_num(a.threshold)}</td><td>{worst}</td><td>{pic}</td></tr>")
    return ("<h3>alerts</h3><table><tr><th>rule</th><th>metric</th><th>since</th><th>until</th><th>duration</th>"
            f"<th>threshold</th><th>worst frame</th><th></th></tr>{''.join(rows)}</table>")


def _worst_html(s: Stream, thumbs: dict[int, str]) -> str:
    figs = []
    for m, idx, t, score in worst_frames(s)[:MAX_WORST]:
        pic = _img(thumbs.get(idx)) or "<div class=muted>(no thumbnail)</div>"
        figs.append(f"<figure class=worst data-frame='{idx}'>{pic}<figcaption>{_e(m)} {score:.1f} · frame #{idx} "
                    f"@ pts {t:.3f} s</figcaption></figure>")
    return f"<h3>worst frames</h3><div class=thumbs>{''.join(figs)}</div>"


def worst_frames(s: Stream) -> list[tuple[str, int, float, float]]:
    """(metric, frame index, pts, score) of the lowest-scored frame of each scored metric, worst first, one per frame."""
    found = []
    for m, f in s.frames.items():
        if _has_score(f) and np.nanmin(f["score"]) < np.nanmax(f["score"]):  # a flat series has no worst frame
            k = int(np.nanargmin(f["score"]))
            found.append((m, int(f["index"][k]), float(f["t"][k]), float(f["score"][k])))
    seen, out = set(), []
    for row in sorted(found, key=lambda r: r[3]):
        if row[1] not in seen:
            seen.add(row[1])
            out.append(row)
    return out


def write_worst_thumbnails(results: str, video: str, stream_id: str | None = None) -> list[str]:
    """JPEGs of each metric's worst frame, decoded again from `video`, next to the alert evidence pictures."""
    from monitor.alerts.thumbnails import ThumbnailStore
    from monitor.source.sources import FileSource

    written = []
    with FileSource(video, stream_id=stream_id) as src:
        stream = next((s for s in load_streams(results) if s.stream_id == src.stream_id), None)
        wanted = {idx for _, idx, _, _ in worst_frames(stream)[:MAX_WORST]} if stream else set()
        store = ThumbnailStore(os.path.join(results, "thumbnails"), src.stream_id)
        for frame in src:
            if frame.index in wanted:
                store.add(frame)
                written.append(store(frame.index, frame.pts_s))
                wanted.discard(frame.index)
            if not wanted:
                break
    return written


def _thumbnails(results: str, stream_id: str) -> dict[int, str]:
    folder = inside(os.path.join(results, "thumbnails"), stream_id)
    if not os.path.isdir(folder):
        return {}
    out = {}
    for name in os.listdir(folder):
        if name.startswith("frame-") and name.endswith(".jpg"):
            out[int(name[6:-4])] = os.path.join(folder, name)
    return out


def _img(path: str | None) -> str:
    if not path or not os.path.exists(path):
        return ""
    data = base64.b64encode(open(path, "rb").read()).decode()
    return f"<img alt='' src='data:image/jpeg;base64,{data}'>"


def _tumbling(win: dict) -> bool:
    return bool(np.all(win["window_start_s"][1:] >= win["window_end_s"][:-1] - 1e-6))


def _window_line(win: dict) -> np.ndarray:
    """Times to plot window statistics at: each tumbling window as a step over its span, sliding ones at their centre."""
    if _tumbling(win):
        return np.column_stack([win["window_start_s"], win["window_end_s"]]).ravel()
    return (win["window_start_s"] + win["window_end_s"]) / 2


def _window_values(win: dict, v: np.ndarray) -> np.ndarray:
    return np.repeat(v, 2) if _tumbling(win) else v


def _decimate(t: np.ndarray, y: np.ndarray, columns: int) -> tuple[np.ndarray, np.ndarray]:
    """At most ~2 points per pixel column (its min and max, in time order), so a drop is never smoothed away."""
    if t.size <= 2 * columns:
        return t, y
    col = np.minimum(((t - t[0]) / max(t[-1] - t[0], 1e-9) * columns).astype(int), columns - 1)
    keep = []
    for c in np.unique(col):
        idx = np.flatnonzero(col == c)
        keep += sorted({idx[np.argmin(y[idx])], idx[np.argmax(y[idx])]})
    keep = np.array(keep)
    return t[keep], y[keep]


def _ticks(t0: float, t1: float) -> list[float]:
    span = t1 - t0
    step = next((s for s in (0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200)
                 if span / s <= 8), 3600 * math.ceil(span / 8 / 3600))
    first = math.ceil(t0 / step) * step
    return list(np.arange(first, t1 + 1e-9, step))


def _pts(points) -> str:
    return " ".join(f"{x:.1f},{y:.1f}" for x, y in points)


def _clock(t: float) -> str:
    if t < 60:
        return f"{t:.1f}s" if t % 1 else f"{t:.0f}s"
    h, rem = divmod(int(round(t)), 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def _num(v: float) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    return f"{v:.4g}"


def _e(text) -> str:
    return html.escape(str(text), quote=True)
