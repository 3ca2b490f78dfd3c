"""`vqmon report`: one self-contained HTML file over the Parquet records of `score` or `watch`.

Plots are hand-built SVG rather than matplotlib: a time series is one <polyline>, a histogram a
row of <rect>s, so the page stays small (a 1-hour stream at 1 fps is a few hundred kB), renders
instantly, stays crisp at any zoom, and the tests can count plot elements in the DOM. Nothing is
loaded from anywhere: CSS is inline, thumbnails are base64 JPEGs.

Per stream, what an engineer passes on: what was scored and how (source, codec, size, frame rate,
reference, sampling, windows, model versions with their weights' sha256: the `started` and `up`
stream events), a verdict, a summary table (native values in their unit beside the 0–100 score,
which way is better, time beyond each alert threshold), black and freeze stretches, quality over
time per metric in native units (frame values, window mean, shaded p10–mean band; hovering shows
a frame's value and score) with alert spans, stretches and stream events marked, score
histograms, the alerts, and the worst frame of each metric by its native value, with the
reference beside it. Several streams sit side by side in columns.

Thumbnails are the JPEGs under RESULTS/thumbnails/<stream>/: frame-<index>.jpg (the alert engine's
evidence, and from `vqmon score --report` each metric's worst frame and the first frame of each
stretch: `write_worst_thumbnails`) and ref-<index>.jpg (the reference frame paired with it).
"""
from __future__ import annotations

import base64
import html
import json
import math
import os
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyarrow.fs import FileType

from monitor import storage
from monitor.alerts.engine import AlertSpan, alert_spans
from monitor.errors import InputError
from monitor.redaction import redact
from monitor.scoring.metrics import SCORE_MEANING, better, grade, metric_info, unit, with_unit
from monitor.summary import Segment, stretches
from monitor.paths import inside

W, H = 900, 190  # chart viewBox of a single stream; CSS scales it to the column width
PAD_L, PAD_R, PAD_T, PAD_B = 48, 10, 16, 22
HIST_W, HIST_H, BINS = 300, 120, 20
FRAME_COLOR, MEAN_COLOR, BAND_COLOR, ALERT_COLOR, STRETCH_COLOR = "#1f77b4", "#d62728", "#9ecae1", "#f5b041", "#7f7f7f"
GRADE_COLORS = {"excellent": "#1a7f37", "good": "#4c9a2a", "fair": "#b7791f", "poor": "#c05621", "bad": "#c62828"}
MAX_WORST = 6
HOVER_PX = 3  # narrowest hover target: one per frame, or per group of frames where frames are closer

CSS = f"""
body{{font:13px/1.4 system-ui,sans-serif;margin:16px;color:#222;background:#fff}}
h1{{font-size:20px;margin:0 0 4px}} h2{{font-size:16px;margin:12px 0 6px}} h3{{font-size:13px;margin:10px 0 2px}}
.streams{{display:grid;gap:24px}}
table{{border-collapse:collapse;margin:4px 0}} td,th{{padding:2px 8px;border-bottom:1px solid #ddd;text-align:right}}
td:first-child,th:first-child{{text-align:left}} table.about td,table.about th{{text-align:left}}
svg{{display:block;width:100%;height:auto}} .hist{{max-width:{HIST_W}px;display:inline-block;margin-right:8px}}
.legend span{{margin-right:12px}} .sw{{display:inline-block;width:18px;height:4px;vertical-align:middle;margin-right:4px}}
.thumbs{{display:flex;flex-wrap:wrap;gap:12px}} figure{{margin:0;font-size:12px}} figure img{{display:block;width:200px}}
.pair{{display:flex;gap:4px}} .pair div{{font-size:11px;color:#777}}
.verdict{{font-size:14px;margin:6px 0}} .grade{{color:#fff;padding:1px 6px;border-radius:3px;font-weight:bold}}
.muted{{color:#777}} rect.hover{{fill:transparent}} rect.hover:hover{{fill:#0001}}
"""


@dataclass
class Stream:
    stream_id: str
    frames: dict[str, dict[str, np.ndarray]]  # metric → {"t", "index", "value", "score"}
    windows: dict[str, dict[str, np.ndarray]]  # metric → window columns over native values
    alerts: list[AlertSpan]
    events: list[tuple[float, str]]  # (media time, event name)
    t0: float
    t1: float
    about: dict  # what was scored and how: the `started` event's detail, with the first `up` event's
    stretches: list[Segment]


def build_report(results: str, rules: list | None = None) -> str:
    """The report's HTML. `rules`: parsed alert rules (monitor.alerts.parse_rules) for the "time below" columns."""
    streams = load_streams(results)
    cols = f"repeat({len(streams)},minmax(0,1fr))"
    width = max(450, W // len(streams))  # narrower columns, narrower charts: their labels keep their size
    body = "".join(_stream_html(s, results, rules or [], width) for s in streams)
    title = f"vqmon report: {', '.join(s.stream_id for s in streams)}"
    return (f"<!doctype html><html><head><meta charset=utf-8><title>{_e(title)}</title>"
            f'<link rel=icon href="data:,"><style>{CSS}</style></head><body>'
            f"<h1>{_e(title)}</h1><p class=muted>records from {_e(redact(storage.absolute(results)))}, "
            f"generated {datetime.now().astimezone():%Y-%m-%d %H:%M %Z}</p>"
            f"<p class=meaning>Values are in each metric's own unit (PSNR in dB). The {_e(SCORE_MEANING)}.</p>"
            f'<div class=legend><span><i class=sw style="background:{FRAME_COLOR}"></i>frame value</span>'
            f'<span><i class=sw style="background:{MEAN_COLOR}"></i>window mean</span>'
            f'<span><i class=sw style="background:{BAND_COLOR}"></i>window p10–mean</span>'
            f'<span><i class=sw style="background:{ALERT_COLOR}"></i>alert firing</span>'
            f'<span><i class=sw style="background:{STRETCH_COLOR}"></i>black/freeze</span>'
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

    if storage.info(storage.join(results, kind)).type != FileType.Directory:
        return None
    return read(results, kind)


def load_streams(results: str) -> list[Stream]:
    frames = _table(results, "frames")
    if frames is None or frames.num_rows == 0:
        raise InputError(f"{redact(results)}: no frame records (expected the Parquet output of vqmon score or watch: "
                         f"{redact(storage.join(results, 'frames'))}/)")
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
        about = _about(events, sid)
        out.append(Stream(sid, per_metric, win,
                          alert_spans([r for r in alerts.to_pylist() if r["stream_id"] == sid]) if alerts else [],
                          _events(events, sid, fs), t0, t1, about, _stretches(per_metric, about)))
    return out


def _windows(table, sid: str, frames: dict) -> dict:
    """Window stats per metric over native values (the scale the charts use)."""
    if table is None:
        return {}
    table = table.filter(pc.and_(pc.equal(table["stream_id"], sid), pc.equal(table["scale"], "value")))
    out = {}
    for m in frames:
        w = table.filter(pc.equal(table["metric"], m))
        if w.num_rows:
            w = w.sort_by("window_end_s")
            out[m] = {k: pc.fill_null(w[k], math.nan).to_numpy()
                      for k in ("window_start_s", "window_end_s", "mean", "p10", "p5", "min")}
    return out


def _about(table, sid: str) -> dict:
    """The latest `started` event's detail, completed by the `up` event that followed it (a live source's codec,
    size and frame rate); {} for records written before vqmon recorded them."""
    if table is None:
        return {}
    rows = sorted((r for r in table.to_pylist() if r["stream_id"] == sid), key=lambda r: r["at"])
    about: dict = {}
    for r in rows:
        if r["event"] == "started":
            about = json.loads(r["detail"] or "{}")
        elif r["event"] == "up" and about and "codec" not in about:
            about.update({k: v for k, v in json.loads(r["detail"] or "{}").items() if k != "url"})
    return about


def _stretches(frames: dict, about: dict) -> list[Segment]:
    """Black and freeze stretches, found as `vqmon score`'s summary finds them."""
    if "sig.black" not in frames:
        return []
    black = frames["sig.black"]
    freeze = dict(zip(frames["sig.freeze"]["index"].tolist(), frames["sig.freeze"]["value"])) if "sig.freeze" in frames else {}
    fps = about.get("fps") or (1.0 / float(np.median(np.diff(black["t"]))) if black["t"].size > 1 else 25.0)
    return stretches(black["index"], black["t"], black["value"],
                     [freeze.get(i, math.nan) for i in black["index"].tolist()], fps)


def _events(table, sid: str, frames: pa.Table) -> list[tuple[float, str]]:
    """Stream events carry wall-clock time; frames carry both, so events land on media time by interpolation.
    `started` is left out: the header says what it records."""
    if table is None:
        return []
    table = table.filter(pc.and_(pc.equal(table["stream_id"], sid), pc.not_equal(table["event"], "started")))
    if not table.num_rows:
        return []
    frames = frames.sort_by("ingest_ts")
    wall = pc.cast(frames["ingest_ts"], pa.int64()).to_numpy() / 1e6
    media = frames["pts_s"].to_numpy()
    at = pc.cast(table["at"], pa.int64()).to_numpy() / 1e6
    return [(float(np.interp(a, wall, media)), e) for a, e in zip(at, table["event"].to_pylist())]


def _has_score(f: dict) -> bool:
    return bool(np.any(~np.isnan(f["score"])))


def _stream_html(s: Stream, results: str, rules: list, width: int) -> str:
    thumbs = _thumbnails(results, s.stream_id)
    parts = [f"<section data-stream='{_e(s.stream_id)}'><h2>{_e(s.stream_id)}</h2>", _about_html(s),
             _verdict_html(s), _summary_table(s, rules), _stretches_html(s, thumbs)]
    metrics = sorted(s.frames, key=lambda m: (not _has_score(s.frames[m]), m))
    for m in metrics:
        info = metric_info(m)
        way = "neither direction is better" if better(info) == "—" else f"{better(info)} is better"
        parts.append(f"<h3>{_e(m)} <span class=muted>({_e(unit(info))}, {way})</span></h3>")
        parts.append(_chart(s, m, width))
    parts.append("<h3>score histograms <span class=muted>(0–100 score)</span></h3>")
    parts += [_histogram(m, s.frames[m]["score"]) for m in metrics if _has_score(s.frames[m])]
    parts.append(_alerts_html(s, thumbs))
    parts.append(_worst_html(s, thumbs))
    parts.append("</section>")
    return "".join(parts)


def _about_html(s: Stream) -> str:
    """What was scored and how, as a table an engineer can paste into a ticket."""
    a = s.about
    size = f"{a['width']}×{a['height']}" if a.get("width") else None
    video = " ".join(str(x) for x in (a.get("codec"), a.get("pix_fmt")) if x)
    ref = a.get("reference")
    if ref and a.get("ref_offset"):
        ref += f" (offset {a['ref_offset']} frames)"
    frames = max((f["index"].size for f in s.frames.values()), default=0)
    rows = [("source", a.get("source")), ("video", video or None), ("resolution", size),
            ("frame rate", f"{a['fps']:.4g} fps" if a.get("fps") else None),
            ("media time", f"{_clock(s.t0)}–{_clock(s.t1)} · {frames} frames scored"),
            ("reference", ref or ("none (no full-reference metrics)" if a else None)),
            ("sampling", a.get("sampling")), ("windows", a.get("window")),
            ("models", "; ".join(f"{m}: {tag}" for m, tag in a["models"].items()) or "signals only"
             if "models" in a else None),
            ("vqmon", a.get("vqmon"))]
    cells = "".join(f"<tr><th>{k}</th><td>{_e(v if v is not None else '— (not recorded)')}</td></tr>" for k, v in rows)
    return f"<table class=about>{cells}</table>"


def verdict(s: Stream) -> tuple[str, str]:
    """(grade, sentence): the grade of the lowest mean score among the quality metrics (nr.*, fr.*), then what
    went wrong: the worst moment, black and freeze stretches, alerts."""
    means = {m: float(np.nanmean(f["score"])) for m, f in s.frames.items()
             if m.startswith(("nr.", "fr.")) and _has_score(f)}
    if not means:
        return "unknown", "no quality metric with a 0–100 score was recorded"
    word = grade(min(means.values()))
    parts = ["mean score " + ", ".join(f"{m} {v:.0f} ({grade(v)})" for m, v in sorted(means.items()))]
    worst = next((w for w in worst_frames(s) if w[0] in means), None)
    if worst:
        m, idx, t, value, score = worst
        parts.append(f"worst: {m} {with_unit(value, metric_info(m))} (score {score:.0f}) at {_clock(t)}, frame #{idx}")
    for kind in ("black", "freeze"):
        runs = [g for g in s.stretches if g.kind == kind]
        if runs:
            total = sum(g.end_s - g.start_s for g in runs)
            parts.append(f"{len(runs)} {kind} stretch{'es' if len(runs) > 1 else ''} ({total:.2f} s)")
    parts.append(f"{len(s.alerts)} alert(s) fired" if s.alerts else "no alert fired")
    return word, "; ".join(parts)


def _verdict_html(s: Stream) -> str:
    word, text = verdict(s)
    color = GRADE_COLORS.get(word, "#777")
    return f"<p class=verdict>verdict: <span class=grade style='background:{color}'>{word}</span> {_e(text)}</p>"


def _summary_table(s: Stream, rules: list) -> str:
    levels = _level_rules(rules)
    head = "".join(f"<th>{_e(name)}</th>" for name, *_ in levels)
    rows = []
    for m, f in sorted(s.frames.items()):
        x, sc = f["value"][~np.isnan(f["value"])], f["score"][~np.isnan(f["score"])]
        if not x.size:
            continue
        info = metric_info(m)
        cells = []
        for _, metric, scale, below, above in levels:
            if metric != m:
                cells.append("<td></td>")
                continue
            v = f["score"] if scale == "score" else f["value"]
            v = v[~np.isnan(v)]
            share = np.mean(v < below) if below is not None else np.mean(v > above)
            cells.append(f"<td>{100 * share:.1f} %</td>")
        worst = _worst_of(m, f)
        rows.append(f"<tr data-metric='{_e(m)}'><td>{_e(m)}</td><td>{_e(unit(info))}</td><td>{better(info)}</td>"
                    f"<td>{x.size}</td><td>{_num(x.mean())}</td><td>{_num(np.percentile(x, 5))}</td>"
                    f"<td>{_num(x.min())}</td><td>{_num(x.max())}</td>"
                    f"<td>{_num(sc.mean()) if sc.size else '—'}</td><td>{_num(np.percentile(sc, 5)) if sc.size else '—'}</td>"
                    f"<td>{f'#{worst[0]} @ {_clock(worst[1])}: {_e(with_unit(worst[2], info))}' if worst else '—'}</td>"
                    f"{''.join(cells)}</tr>")
    return (f"<table class=summary><tr><th>metric</th><th>unit</th><th>better</th><th>frames</th><th>mean</th>"
            f"<th>p5</th><th>min</th><th>max</th><th>mean score</th><th>p5 score</th><th>worst frame</th>{head}</tr>"
            f"{''.join(rows)}</table>"
            + ("<p class=muted>time beyond each alert threshold: columns per level/freeze/black rule "
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


def _stretches_html(s: Stream, thumbs: dict) -> str:
    if not s.stretches:
        return "<h3>black and freeze stretches</h3><p class=muted>none</p>"
    rows = "".join(f"<tr class=stretch-row data-kind='{g.kind}'><td>{g.kind}</td><td>{g.start_s:.3f} s</td>"
                   f"<td>{g.end_s:.3f} s</td><td>{g.end_s - g.start_s:.2f} s</td>"
                   f"<td>#{g.first_frame}–#{g.last_frame}</td><td>{_img(thumbs.get(('frame', g.first_frame)))}</td></tr>"
                   for g in s.stretches)
    return ("<h3>black and freeze stretches</h3><table><tr><th>kind</th><th>from</th><th>to</th><th>duration</th>"
            f"<th>frames</th><th>first frame</th></tr>{rows}</table>")


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About `n` round tick values (steps of 1, 2 or 5 × 10^k) covering lo..hi."""
    if not hi > lo:
        lo, hi = lo - 0.5, hi + 0.5
    raw = (hi - lo) / max(n - 1, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(k * mag for k in (1, 2, 5, 10) if k * mag >= raw)
    first, last = math.floor(lo / step + 1e-9), math.ceil(hi / step - 1e-9)
    return [round(k * step, 12) for k in range(first, last + 1)]


def _chart(s: Stream, metric: str, width: int = W) -> str:
    f = s.frames[metric]
    info = metric_info(metric)
    ok = ~np.isnan(f["value"])
    t, y, idx, score = f["t"][ok], f["value"][ok], f["index"][ok], f["score"][ok]
    win = s.windows.get(metric)
    allv = np.concatenate([y] + ([win["p10"], win["mean"]] if win else []))
    allv = allv[np.isfinite(allv)]
    ticks = nice_ticks(float(allv.min()), float(allv.max())) if allv.size else [0.0, 1.0]
    lo, hi = ticks[0], ticks[-1]
    sx = lambda v: PAD_L + (v - s.t0) / (s.t1 - s.t0) * (width - PAD_L - PAD_R)  # noqa: E731
    sy = lambda v: PAD_T + (hi - v) / (hi - lo) * (H - PAD_T - PAD_B)  # noqa: E731
    g = [f"<rect class=bg x={PAD_L} y={PAD_T} width={width - PAD_L - PAD_R} height={H - PAD_T - PAD_B} "
         f"fill='#fafafa' stroke='#ccc' />"]
    for v in ticks:
        g.append(f"<line x1={PAD_L} x2={width - PAD_R} y1={sy(v):.1f} y2={sy(v):.1f} stroke='#e5e5e5' />"
                 f"<text class=ytick x={PAD_L - 4} y={sy(v) + 4:.1f} text-anchor=end font-size=10>{v:g}</text>")
    for tick in _ticks(s.t0, s.t1):
        g.append(f"<text x={sx(tick):.1f} y={H - 6} text-anchor=middle font-size=10>{_clock(tick)}</text>")
    spans = [(a.since, a.until, a.rule, ALERT_COLOR, 0.35, "alert-span", f"data-rule='{_e(a.rule)}'") for a in s.alerts]
    spans += [(g_.start_s, g_.end_s, g_.kind, STRETCH_COLOR, 0.25, "stretch", f"data-kind='{g_.kind}'")
              for g_ in s.stretches]
    for since, until, label, color, opacity, cls, data in spans:
        x0, x1 = sx(max(since, s.t0)), sx(min(until if until is not None else s.t1, s.t1))
        g.append(f"<g class={cls} {data} data-since='{since:.3f}' data-until='{'' if until is None else f'{until:.3f}'}'>"
                 f"<title>{_e(label)}: {_clock(since)}–{_clock(until) if until is not None else 'end'}</title>"
                 f"<rect x={x0:.1f} y={PAD_T} width={max(x1 - x0, 1.5):.1f} height={H - PAD_T - PAD_B} "
                 f"fill='{color}' fill-opacity={opacity} />"
                 f"<text x={x0 + 2:.1f} y={PAD_T + 11} font-size=10>{_e(label)}</text></g>")
    if win:
        wt, mean, p10 = _window_line(win), np.clip(win["mean"], lo, hi), np.clip(win["p10"], lo, hi)
        mean, p10 = _window_values(win, mean), _window_values(win, p10)
        band = [(sx(a), sy(b)) for a, b in zip(wt, mean)] + [(sx(a), sy(b)) for a, b in zip(wt[::-1], p10[::-1])]
        g.append(f"<polygon class=band points='{_pts(band)}' fill='{BAND_COLOR}' fill-opacity=0.6 />")
    tt, yy = _decimate(t, y, width - PAD_L - PAD_R)
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
    g += _hover_targets(t, y, idx, score, info, sx)
    return (f"<svg class=chart data-metric='{_e(metric)}' data-t0='{s.t0:.3f}' data-t1='{s.t1:.3f}' "
            f"viewBox='0 0 {width} {H}' xmlns='http://www.w3.org/2000/svg'>{''.join(g)}</svg>")


def _hover_targets(t, y, idx, score, info, sx) -> list[str]:
    """Transparent columns over the plot whose tooltip gives a frame's value and score: one per frame, or on long
    streams one per group of frames, naming the worst of them."""
    if not t.size:
        return []
    plot_w = sx(t[-1]) - sx(t[0])
    groups = np.array_split(np.arange(t.size), max(1, min(t.size, int(plot_w / HOVER_PX))))
    edges = [sx(t[0])] + [(sx(t[a[-1]]) + sx(t[b[0]])) / 2 for a, b in zip(groups, groups[1:])] + [sx(t[-1])]
    out = []
    for k, grp in enumerate(groups):
        j = grp[_worst_position(y[grp], info)]
        what = f"frame #{idx[j]}" if grp.size == 1 else f"frames #{idx[grp[0]]}–#{idx[grp[-1]]}, worst #{idx[j]}"
        sc = "" if math.isnan(score[j]) else f" · score {score[j]:.0f}"
        out.append(f"<rect class=hover x={edges[k]:.1f} y={PAD_T} width={max(edges[k + 1] - edges[k], 1):.1f} "
                   f"height={H - PAD_T - PAD_B}><title>{what} @ {t[j]:.3f} s: {_e(with_unit(y[j], info))}{sc}"
                   f"</title></rect>")
    return out


def _worst_position(values: np.ndarray, info) -> int:
    """Position of the worst value by the metric's own direction (the first one where neither is better)."""
    if info is None or info.higher_is_better is None:
        return 0
    return int(np.nanargmin(values) if info.higher_is_better else np.nanargmax(values))


def _worst_of(metric: str, f: dict) -> tuple[int, float, float] | None:
    """(frame index, pts, native value) of a metric's worst frame, or None (no direction, or a flat series)."""
    info = metric_info(metric)
    ok = ~np.isnan(f["value"])
    v = f["value"][ok]
    if info is None or info.higher_is_better is None or not v.size or v.min() == v.max():
        return None
    k = _worst_position(v, info)
    return int(f["index"][ok][k]), float(f["t"][ok][k]), float(v[k])


def _histogram(metric: str, scores: np.ndarray) -> str:
    x = scores[~np.isnan(scores)]
    counts, _ = np.histogram(x, bins=BINS, range=(0, 100))
    top = max(int(counts.max()), 1)
    bw = (HIST_W - 20) / BINS
    bars = "".join(f"<rect class=bar x={10 + i * bw:.1f} y={HIST_H - 18 - c / top * (HIST_H - 34):.1f} "
                   f"width={bw - 1:.1f} height={c / top * (HIST_H - 34):.1f} fill='{FRAME_COLOR}'>"
                   f"<title>score {i * 100 // BINS}–{(i + 1) * 100 // BINS}: {c} frames</title></rect>"
                   for i, c in enumerate(counts) if c)
    return (f"<svg class=hist data-metric='{_e(metric)}' viewBox='0 0 {HIST_W} {HIST_H}' "
            f"xmlns='http://www.w3.org/2000/svg'><text x=10 y=12 font-size=11>{_e(metric)} (score)</text>{bars}"
            f"<line x1=10 x2={HIST_W - 10} y1={HIST_H - 18} y2={HIST_H - 18} stroke='#999' />"
            f"<text x=10 y={HIST_H - 4} font-size=10>0</text>"
            f"<text x={HIST_W - 10} y={HIST_H - 4} font-size=10 text-anchor=end>100</text></svg>")


def _alerts_html(s: Stream, thumbs: dict) -> str:
    if not s.alerts:
        return "<h3>alerts</h3><p class=muted>none fired</p>"
    rows = []
    for a in s.alerts:
        dur = (a.until if a.until is not None else s.t1) - a.since
        idx = a.worst.get("frame_index")
        pic = _pair(thumbs, idx) if idx is not None else ""
        worst = f"#{idx} @ {_clock(a.worst['pts_s'])}" if idx is not None else "—"
        rows.append(f"<tr class=alert-row><td>{_e(a.rule)}</td><td>{_e(a.metric)}</td><td>{_clock(a.since)}</td>"
                    f"<td>{_clock(a.until) if a.until is not None else 'still firing'}</td><td>{dur:.1f} s</td>"
                    f"<td>{_num(a.threshold)}</td><td>{worst}</td><td>{pic}</td></tr>")
    return ("<h3>alerts</h3><table><tr><th>rule</th><th>metric</th><th>since</th><th>until</th><th>duration</th>"
            f"<th>threshold</th><th>worst frame</th><th></th></tr>{''.join(rows)}</table>")


def _worst_html(s: Stream, thumbs: dict) -> str:
    figs = []
    for m, idx, t, value, score in worst_frames(s)[:MAX_WORST]:
        sc = "" if math.isnan(score) else f" (score {score:.0f})"
        figs.append(f"<figure class=worst data-frame='{idx}' data-metric='{_e(m)}'>"
                    f"{_pair(thumbs, idx) or '<div class=muted>(no picture)</div>'}"
                    f"<figcaption>{_e(m)} {_e(with_unit(value, metric_info(m)))}{sc} · frame #{idx} "
                    f"@ pts {t:.3f} s</figcaption></figure>")
    return (f"<h3>worst frames <span class=muted>(by each metric's value; the reference beside)</span></h3>"
            f"<div class=thumbs>{''.join(figs)}</div>")


def worst_frames(s: Stream) -> list[tuple[str, int, float, float, float]]:
    """(metric, frame index, pts, native value, score) of each metric's worst frame by its native value and
    direction, lowest score first, one per frame; metrics without a score or a direction have none."""
    found = []
    for m, f in s.frames.items():
        worst = _worst_of(m, f) if _has_score(f) else None
        if worst:
            k = int(np.flatnonzero(f["index"] == worst[0])[0])
            found.append((m, *worst, float(f["score"][k])))
    seen, out = set(), []
    for row in sorted(found, key=lambda r: (r[4], r[0])):
        if row[1] not in seen:
            seen.add(row[1])
            out.append(row)
    return out


def write_worst_thumbnails(results: str, video: str, stream_id: str | None = None, ref: str | None = None,
                           ref_offset: int = 0) -> list[str]:
    """JPEGs of each metric's worst frame and of the first frame of each black/freeze stretch, decoded again from
    `video`, next to the alert evidence pictures; with `ref`, the reference frame paired with each, too."""
    from monitor.alerts.thumbnails import ThumbnailStore
    from monitor.source.align import ReferencePairer
    from monitor.source.sources import FileSource

    written = []
    with FileSource(video, stream_id=stream_id) as src:
        stream = next((s for s in load_streams(results) if s.stream_id == src.stream_id), None)
        wanted = ({w[1] for w in worst_frames(stream)[:MAX_WORST]} | {g.first_frame for g in stream.stretches}
                  if stream else set())
        folder = os.path.join(results, "thumbnails")
        store, ref_store = ThumbnailStore(folder, src.stream_id), ThumbnailStore(folder, src.stream_id, prefix="ref")
        pairer = ReferencePairer(FileSource(ref, scale_to=(src.info.width, src.info.height)), ref_offset) if ref else None
        for frame in src:
            if not wanted:
                break
            match = pairer.match(frame) if pairer and (frame.index == 0 or frame.index in wanted) else None
            if frame.index in wanted:
                store.add(frame)
                written.append(store(frame.index, frame.pts_s))
                if match is not None:
                    ref_store.add(match.reference, index=frame.index)
                    written.append(ref_store(frame.index, frame.pts_s))
                wanted.discard(frame.index)
        if pairer:
            pairer.ref.close()
    return written


def _thumbnails(results: str, stream_id: str) -> dict[tuple[str, int], str]:
    """("frame" or "ref", frame index) → JPEG path."""
    folder = inside(os.path.join(results, "thumbnails"), stream_id)
    if not os.path.isdir(folder):
        return {}
    out = {}
    for name in os.listdir(folder):
        kind, _, rest = name.partition("-")
        if kind in ("frame", "ref") and rest.endswith(".jpg") and rest[:-4].isdigit():
            out[kind, int(rest[:-4])] = os.path.join(folder, name)
    return out


def _pair(thumbs: dict, idx: int) -> str:
    """A frame's picture, with its reference's beside it when there is one."""
    pic = _img(thumbs.get(("frame", idx)))
    ref = _img(thumbs.get(("ref", idx)))
    if not ref:
        return pic
    return f"<div class=pair><div>{pic}video</div><div class=ref>{ref}reference</div></div>"


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
