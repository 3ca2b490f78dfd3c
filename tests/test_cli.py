"""The command line as a user meets it: --version, help on every option, `vqmon models` quick and narrow,
the summary at 80 columns, progress lines in a log."""
from __future__ import annotations

import argparse
import io
import re
import subprocess
import sys
import time

import pytest
from rich.console import Console

from monitor.cli import commands
from monitor.cli.parser import build_parser
from monitor.samples import make_sample


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices


def test_every_option_has_help_and_says_its_default():
    missing = []
    for name, sub in _subcommands().items():
        for action in sub._actions:
            if not action.help:
                missing.append(f"{name} {action.option_strings or action.dest}: no help")
            elif action.default not in (None, False, [], argparse.SUPPRESS) and "default" not in action.help:
                missing.append(f"{name} {action.option_strings}: default {action.default!r} not said")
    assert not missing, missing


def test_version():
    p = subprocess.run([sys.executable, "-m", "monitor.cli", "--version"], capture_output=True, text=True)
    assert p.returncode == 0 and re.fullmatch(r"vqmon \S+\n", p.stdout)


def test_vqmon_models_answers_quickly_and_fits_80_columns():
    started = time.monotonic()
    p = subprocess.run([sys.executable, "-m", "monitor.cli", "models"], capture_output=True, text=True,
                       env={"COLUMNS": "80", "PATH": "/usr/bin:/bin", "PYTHONPATH": ":".join(sys.path)})
    elapsed = time.monotonic() - started
    assert p.returncode == 0, p.stderr
    assert elapsed < 2.0, f"vqmon models took {elapsed:.1f} s"
    table = p.stdout.split("\n\n")[0].splitlines()
    assert all(len(line) <= 80 for line in table)
    for name in ("nemg", "mfenet", "liqe", "gsn"):
        for variant in ("lite", "paper"):
            assert any(line.split()[0] == f"{name}/{variant}" for line in table[1:])
    assert "weights licence: backbone Apache-2.0" in p.stdout


@pytest.fixture(scope="module")
def summary(tmp_path_factory):
    from monitor.build import score_file
    from monitor.config import StreamConfig, parse_rules

    d = tmp_path_factory.mktemp("cli")
    pair = make_sample(str(d), width=320, height=180)
    rules = parse_rules([{"name": "psnr-low", "kind": "level", "metric": "fr.psnr_y", "scale": "value",
                          "below": 20, "for": "0.2s", "recover_above": 25}])
    return score_file(StreamConfig(pair["distorted"], ref=pair["reference"], alerts=rules))


def test_summary_at_80_columns_keeps_metric_names_whole(summary):
    console = Console(file=io.StringIO(), width=80)
    commands.print_summary(summary, console, None)
    out = console.file.getvalue()
    rows = [line.split()[0] for line in out.splitlines() if line.strip().startswith(("sig.", "fr.", "nr."))]
    assert {"sig.black", "sig.blockiness", "fr.psnr_y", "fr.ssim_y", "sig.luma"} <= set(rows)
    assert all(len(line) <= 80 for line in out.splitlines())
    psnr = next(line for line in out.splitlines() if line.strip().startswith("fr.psnr_y"))
    assert psnr.split()[1:3] == ["dB", "higher"]
    assert "decoded frames/s" in out and "score: 0–100" in out
    assert re.search(r"alert psnr-low \(fr\.psnr_y, threshold 20\): [\d.]+–[\d.]+ s, worst frame #\d+", out)


def test_progress_is_printed_as_lines_off_a_terminal(tmp_path, monkeypatch):
    monkeypatch.setattr(commands, "PROGRESS_EVERY_S", 0.0)
    buf = io.StringIO()
    monkeypatch.setattr(commands, "err", Console(file=buf, width=200))  # a file, not a terminal
    with commands._progress() as progress:
        task = progress.add_task("clip.mp4", total=200)
        progress.advance(task, 50)
    lines = buf.getvalue().splitlines()
    assert lines[0].startswith("clip.mp4: 50/200 (25 %) after ") and len(lines) == 2


def test_sampling_says_3rd():
    from monitor.source.sampling import Sampler, ordinal

    assert [ordinal(n) for n in (1, 2, 3, 4, 11, 12, 13, 21, 22, 103)] == \
        ["1st", "2nd", "3rd", "4th", "11th", "12th", "13th", "21st", "22nd", "103rd"]
    assert Sampler(every=3).describe() == "every 3rd frame"


def test_a_rule_on_a_metric_nothing_scores_is_warned_about(tmp_path):
    from monitor.samples import encode, panned_frames

    clip = encode(str(tmp_path / "clip.mp4"), panned_frames(160, 96, 10), fps=25, crf=30)
    (tmp_path / "rules.yaml").write_text("- {name: low-liqe, kind: level, metric: nr.liqe, below: 40}\n"
                                        "- {name: psnr-low, kind: level, metric: fr.psnr_y, below: 40}\n"
                                        "- {name: frozen, kind: freeze, for: 2s}\n")
    p = subprocess.run([sys.executable, "-m", "monitor.cli", "score", clip, "--alerts", str(tmp_path / "rules.yaml"),
                        "-q"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    warnings = [line for line in p.stderr.splitlines() if "cannot fire" in line]
    assert len(warnings) == 2, p.stderr
    assert "'low-liqe' watches nr.liqe" in warnings[0] and "add --model liqe" in warnings[0]
    assert "'psnr-low' watches fr.psnr_y" in warnings[1] and "--ref" in warnings[1]
