"""Size and render time of `vqmon report` for a long stream: synthetic results of one stream, 1 hour at 1 fps.

The records are synthetic (no video is decoded) but go through the real parts: WindowAggregator
(10 s windows every 2 s), AlertEngine (a level rule on a window p10 and a black rule),
ParquetSink; a down/up stream-event pair marks an outage. The quality has a slow wander, noise,
a 5-minute drop at 20:00 and a 20 s black stretch at 40:00.

Prints: records, report size, report generation time (Parquet → HTML) and Chromium's headless
render time (load + layout + paint to a 1200×2400 screenshot), next to the same for a blank page
(Chromium's own start-up). Usage:
    python bench/report_size.py [--minutes 60] [--fps 1]
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
import time
from datetime import datetime, timedelta, timezone

import numpy as np
from rich.console import Console
from rich.table import Table

from monitor.alerts.engine import AlertEngine
from monitor.config import parse_rules
from monitor.records import FrameScore, StreamEvent
from monitor.sinks.parquet import ParquetSink
from monitor.views.report import write_report
from monitor.windows import WindowAggregator, WindowSpec

RULES = [{"name": "low-quality", "kind": "level", "metric": "nr.liqe", "stat": "p10", "below": 40, "for": "10s",
          "recover_above": 45, "recover_for": "5s"},
         {"name": "black", "kind": "black", "for": "1s"}]


def synthesize(out: str, minutes: float, fps: float) -> int:
    rng = np.random.default_rng(0)
    n = int(minutes * 60 * fps)
    t = np.arange(n) / fps
    base = 70 + 8 * np.sin(t / 300) + rng.normal(0, 3, n)
    base[(t >= 1200) & (t < 1500)] -= 40  # the drop
    black = (t >= 2400) & (t < 2420)
    series = {  # metric → (value, score)
        "nr.liqe": (1 + 4 * base / 100, base),
        "fr.psnr_y": (20 + 30 * base / 100, base),
        "fr.ssim_y": (0.5 + 0.5 * base / 100, base),
        "sig.black": (np.where(black, 1.0, 0.02), np.where(black, 0.0, 100.0)),
        "sig.blockiness": (1 + (100 - base) / 100, base + 10),
        "sig.sharpness": (400 + 5 * base, None),
    }
    start = datetime(2026, 1, 1, tzinfo=timezone.utc)
    windows, alerts, sink = WindowAggregator(WindowSpec(10.0, 2.0)), AlertEngine(parse_rules(RULES)), ParquetSink(out)
    records = 0
    for i in range(n):
        batch = windows.observe("cam1", t[i])
        for m, (v, s) in series.items():
            sc = None if s is None else float(np.clip(s[i], 0, 100))
            r = FrameScore("cam1", i, float(t[i]), start + timedelta(seconds=float(t[i])), 1920, 1080, m, float(v[i]), sc)
            batch.append(r)
            windows.add("cam1", m, "value", t[i], r.value)
            if sc is not None:
                windows.add("cam1", m, "score", t[i], sc)
            batch += alerts.observe_frame(r)
        for w in [w for w in batch if type(w).__name__ == "WindowStat"]:
            batch += alerts.observe_window(w)
        sink.write(batch)
        records += len(batch)
    tail = windows.flush()
    for w in tail:
        tail += alerts.observe_window(w)
    events = [StreamEvent("cam1", "down", start + timedelta(seconds=3000)),
              StreamEvent("cam1", "up", start + timedelta(seconds=3030))]
    sink.write(tail + alerts.flush() + events)
    sink.close()
    return records + len(tail) + len(events)


def screenshot_s(url: str, folder: str) -> float:
    """Seconds for headless Chromium to load `url` and write a 1200×2400 screenshot (NaN without chromium)."""
    exe = shutil.which("chromium")
    if exe is None:
        return float("nan")
    t0 = time.perf_counter()
    subprocess.run([exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                    "--hide-scrollbars", "--window-size=1200,2400", f"--screenshot={folder}/shot.png", url],
                   check=True, capture_output=True, timeout=120)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=60)
    ap.add_argument("--fps", type=float, default=1)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        records = synthesize(d, args.minutes, args.fps)
        page = os.path.join(d, "report.html")
        t0 = time.perf_counter()
        write_report(d, page, parse_rules(RULES))
        gen = time.perf_counter() - t0
        size = os.path.getsize(page)
        render, blank = screenshot_s(f"file://{page}", d), screenshot_s("about:blank", d)
    table = Table(title=f"vqmon report, one stream, {args.minutes:g} min at {args.fps:g} fps", show_edge=False)
    for col in ("frames", "records", "report size", "generate (s)", "chromium (s)", "blank page (s)"):
        table.add_column(col, justify="right")
    table.add_row(f"{int(args.minutes * 60 * args.fps)}", f"{records}", f"{size / 1024:.0f} KiB", f"{gen:.2f}",
                  f"{render:.2f}", f"{blank:.2f}")
    Console().print(table)


if __name__ == "__main__":
    main()
