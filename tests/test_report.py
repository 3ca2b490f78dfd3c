"""`vqmon report` rendered in a real headless Chromium: the plots draw, the alert span sits where the drop is,
and the page loads nothing from the network."""
from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from PIL import Image

import browser
from monitor.samples import Segment, apply_segments, encode, panned_frames
from monitor.views.report import PAD_L, PAD_R, PAD_T, W, build_report, nice_ticks

FPS, N = 25, 60
DROP = (25, 45)  # soft frames 25..44: 1.0–1.8 s
RULES = "- {name: psnr-drop, kind: level, metric: fr.psnr_y, below: 40, for: 0.2s, recover_above: 45}\n"


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    """A clip with a quality drop, scored against its reference with `vqmon score --alerts --report`."""
    d = tmp_path_factory.mktemp("report")
    ref = encode(str(d / "ref.mp4"), panned_frames(320, 192, N), fps=FPS, crf=None)
    dist = encode(str(d / "drop.mp4"), apply_segments(panned_frames(320, 192, N), [Segment(*DROP, "soft")]),
                  fps=FPS, crf=23)
    (d / "rules.yaml").write_text(RULES)
    out = d / "out"
    p = subprocess.run([sys.executable, "-m", "monitor.cli", "score", dist, "--ref", ref, "--out", str(out),
                        "--alerts", str(d / "rules.yaml"), "--window", "0.4s", "--report", "-q"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    return out


def test_report_draws_every_plot(scored, tmp_path):
    page = str(scored / "report.html")
    dom = browser.dump_dom(f"file://{page}")
    charts = re.findall(r'<svg class="chart" data-metric="([^"]+)"', dom)
    assert "fr.psnr_y" in charts and "sig.blockiness" in charts and len(charts) == 9  # 7 signals + PSNR + SSIM
    assert dom.count('class="frames"') == len(charts) and dom.count('class="mean"') == len(charts)
    assert dom.count('class="hist"') == 5  # the metrics with a 0–100 score: psnr, ssim, black, blockiness, freeze
    assert 'data:image/jpeg;base64,' in dom and dom.count('class="worst"') >= 2
    psnr_row = re.search(r'<tr data-metric="fr.psnr_y">(.*?)</tr>', dom)[1]  # the drop's share of frames below 40
    assert f"{100 * (DROP[1] - DROP[0]) / N:.1f} %" in psnr_row and "psnr-drop: &lt; 40" in dom

    size = (1200, 2400)
    png = browser.screenshot(f"file://{page}", str(tmp_path / "report.png"), size)
    boxes = browser.layout(page, "svg.chart", size)
    first = boxes[0]  # fr.psnr_y (scored metrics first, alphabetical)
    img = np.asarray(Image.open(png).convert("RGB")).astype(int)
    plot = img[int(first["y"]):int(first["y"] + first["h"]), int(first["x"]):int(first["x"] + first["w"])]
    line = (np.abs(plot - [0x1F, 0x77, 0xB4]).sum(axis=2) < 60).sum()  # frame-score line pixels
    mean = (np.abs(plot - [0xD6, 0x27, 0x28]).sum(axis=2) < 60).sum()  # window-mean line pixels
    assert line > 300 and mean > 300, (line, mean)


def test_alert_span_covers_the_drop(scored, tmp_path):
    page = str(scored / "report.html")
    dom = browser.dump_dom(f"file://{page}")
    spans = re.findall(r'class="alert-span" data-rule="psnr-drop" data-since="([\d.]+)" data-until="([\d.]+)"', dom)
    assert spans, "no alert span in the report"
    since, until = map(float, spans[0])
    assert since == pytest.approx(DROP[0] / FPS, abs=0.05) and until == pytest.approx(DROP[1] / FPS, abs=0.05)

    size = (1200, 2400)  # on screen: the shaded columns of the PSNR chart are where 1.0 s and 1.8 s map to
    img = np.asarray(Image.open(browser.screenshot(f"file://{page}", str(tmp_path / "r.png"), size)).convert("RGB"))
    box = browser.layout(page, "svg.chart", size)[0]
    k = box["w"] / W
    t0, t1 = map(float, re.search(r'data-metric="fr.psnr_y" data-t0="([\d.]+)" data-t1="([\d.]+)"', dom).groups())
    to_px = lambda t: box["x"] + (PAD_L + (t - t0) / (t1 - t0) * (W - PAD_L - PAD_R)) * k  # noqa: E731
    rows = img[int(box["y"] + (PAD_T + 16) * k):int(box["y"] + (PAD_T + 30) * k)].astype(int)  # above the lines
    orange = ((rows[..., 0] > 220) & (rows[..., 1] > 190) & (rows[..., 1] < 235) & (rows[..., 2] < 210)).any(axis=0)
    cols = np.flatnonzero(orange)
    assert cols.size, "no shaded alert span on screen"
    assert cols.min() == pytest.approx(to_px(DROP[0] / FPS), abs=4)
    assert cols.max() == pytest.approx(to_px(DROP[1] / FPS), abs=4)


def test_report_makes_no_network_request(scored):
    own, elsewhere = browser.requests_made(str(scored / "report.html"))
    assert own == ["/report.html"] and elsewhere == []


def test_network_check_catches_an_external_resource(tmp_path):
    """The check above can fail: a page with a CDN stylesheet and a remote image is caught."""
    page = tmp_path / "leaky.html"
    page.write_text("<!doctype html><link rel=icon href='data:,'>"
                    "<link rel=stylesheet href='http://cdn.example.invalid/x.css'><img src='http://img.example.invalid/a.png'>")
    own, elsewhere = browser.requests_made(str(page))
    assert own == ["/leaky.html"] and any("cdn.example.invalid" in r for r in elsewhere), elsewhere


def test_report_shows_several_streams_side_by_side(scored, tmp_path):
    """Two streams' records in one folder: one column each, and the FR metrics only where a reference was."""
    from monitor.build import score_file
    from monitor.config import StreamConfig
    from monitor.sinks.parquet import ParquetSink

    out = str(tmp_path / "two")
    score_file(StreamConfig(str(scored.parent / "drop.mp4"), id="cam-a"), sinks=[ParquetSink(out)])
    score_file(StreamConfig(str(scored.parent / "drop.mp4"), ref=str(scored.parent / "ref.mp4"), id="cam-b"), sinks=[ParquetSink(out)])
    page = build_report(out)
    assert "grid-template-columns:repeat(2,minmax(0,1fr))" in page
    sections = re.findall(r"<section data-stream='([^']+)'>(.*?)</section>", page, re.S)
    assert [s for s, _ in sections] == ["cam-a", "cam-b"]
    assert "data-metric='fr.psnr_y'" not in sections[0][1] and "data-metric='fr.psnr_y'" in sections[1][1]


def test_report_of_a_folder_without_records_is_a_one_line_error(tmp_path, capsys):
    from monitor.cli import main

    assert main(["report", str(tmp_path)]) == 2
    assert "no frame records" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "nope")]) == 2
    assert "no such results folder" in capsys.readouterr().err
    assert main(["score", "x.mp4", "--report"]) == 2
    assert "--report needs --out DIR" in capsys.readouterr().err


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """The `make run` pair (soft, frozen and black stretches), scored with `vqmon score --report` (signals only)."""
    from monitor.samples import make_sample

    d = tmp_path_factory.mktemp("demo")
    pair = make_sample(str(d), width=320, height=180)
    out = d / "out"
    p = subprocess.run([sys.executable, "-m", "monitor.cli", "score", pair["distorted"], "--ref", pair["reference"],
                        "--out", str(out), "--report", "-q"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    psnr = pq.read_table(out / "frames", partitioning=None).filter(pc.field("metric") == "fr.psnr_y")  # as in the README
    return pair, out, browser.dump_dom(f"file://{out / 'report.html'}"), psnr.sort_by("frame_index").to_pydict()


def test_report_header_says_what_was_scored_and_how(demo):
    pair, _, dom, _ = demo
    about = dict(re.findall(r"<tr><th>([^<]+)</th><td>([^<]*)</td></tr>", dom))
    assert about["source"] == pair["distorted"] and about["reference"] == pair["reference"]
    assert about["video"] == "h264 yuv420p" and about["resolution"] == "320×180" and about["frame rate"] == "25 fps"
    assert about["sampling"] == "every frame" and about["windows"] == "2 s" and about["models"] == "signals only"
    assert "200 frames scored" in about["media time"] and about["vqmon"]
    assert re.search(r'class="verdict">verdict: <span class="grade"[^>]*>(excellent|good|fair|poor|bad)</span>', dom)
    assert "1 black stretch (0.48 s)" in dom and "1 freeze stretch" in dom


def test_report_shows_psnr_in_db_and_the_worst_frame_by_its_value(demo):
    """Many frames of the freeze and the black stretch score 0 (below 20 dB): only the dB value finds the worst."""
    _, _, dom, psnr = demo
    value, score, index = np.array(psnr["value"]), np.array(psnr["score"]), psnr["frame_index"]
    worst = index[int(np.argmin(value))]
    assert (score == 0).sum() > 10 and index[int(np.argmin(score))] != worst
    assert 'fr.psnr_y <span class="muted">(dB, higher is better)' in dom
    row = re.search(r'<tr data-metric="fr.psnr_y">(.*?)</tr>', dom)[1]
    assert "<td>dB</td><td>higher</td>" in row and f"#{worst} @ " in row
    fig = re.search(r'<figure class="worst" data-frame="(\d+)" data-metric="fr.psnr_y">(.*?)</figure>', dom, re.S)
    assert int(fig[1]) == worst and f"fr.psnr_y {value.min():.4g} dB" in fig[2]
    assert fig[2].count("data:image/jpeg;base64,") == 2 and "reference" in fig[2]  # the reference beside it
    chart = re.search(r'<svg class="chart" data-metric="fr.psnr_y".*?</svg>', dom, re.S)[0]
    ticks = [float(t) for t in re.findall(r'<text class="ytick"[^>]*>([^<]+)</text>', chart)]
    assert ticks[0] <= value.min() and ticks[-1] >= value.max() and all(t % 10 == 0 for t in ticks)


def test_report_hover_gives_a_frames_value_and_score(demo):
    _, _, dom, psnr = demo
    chart = re.search(r'<svg class="chart" data-metric="fr.psnr_y".*?</svg>', dom, re.S)[0]
    tips = re.findall(r'<rect class="hover"[^>]*><title>frame #(\d+) @ ([\d.]+) s: ([\d.]+) dB · score (\d+)</title>',
                      chart)
    assert len(tips) == len(psnr["value"])  # 200 frames: one hover target each
    index, pts, value, score = tips[150]
    assert int(index) == psnr["frame_index"][150] == 150 and float(pts) == pytest.approx(psnr["pts_s"][150], abs=1e-3)
    assert value == f"{psnr['value'][150]:.4g}" and int(score) == round(psnr["score"][150])


def test_report_lists_black_and_freeze_stretches_with_a_picture(demo):
    _, out, dom, _ = demo
    rows = re.findall(r'<tr class="stretch-row" data-kind="(\w+)"><td>\w+</td><td>([\d.]+) s</td><td>([\d.]+) s</td>'
                      r"(.*?)</tr>", dom, re.S)
    assert [(k, a, b) for k, a, b, _ in rows] == [("freeze", "3.960", "5.000"), ("black", "6.000", "6.480")]
    assert all("data:image/jpeg;base64," in rest for *_, rest in rows)
    assert (out / "thumbnails" / "distorted" / "frame-00000099.jpg").exists()  # the frame the freeze repeats
    assert len(re.findall(r'<g class="stretch" data-kind="black"', dom)) == len(re.findall(r'<svg class="chart"', dom))


def test_nice_ticks_are_round_steps():
    assert nice_ticks(0.06275, 0.5598) == [0.0, 0.2, 0.4, 0.6]  # not 0.06275, 0.1829, …
    assert nice_ticks(6.078, 42.59) == [0, 10, 20, 30, 40, 50]
    assert nice_ticks(3.0, 3.0) == [2.5, 3.0, 3.5]
