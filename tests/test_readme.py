"""The README's two set-up commands: the run command really runs the embedded default end to end."""
from __future__ import annotations

import os
import re
import subprocess
import sys

import pyarrow.dataset as ds
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def readme_commands() -> list[str]:
    text = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    block = re.search(r"## Quick start.*?```sh\n(.*?)```", text, re.S)[1]
    return [line.split("#")[0].strip() for line in block.splitlines() if line.strip()]


def test_readme_names_exactly_the_run_and_test_commands():
    assert readme_commands() == ["make run", "make test"]
    ci = open(os.path.join(ROOT, ".ci", "run")).read()
    assert "make test" in ci


@pytest.mark.slow
def test_readme_run_command_scores_the_sample_and_writes_parquet(tmp_path):
    venv = sys.prefix  # the environment running these tests; make installs into it only if its stamp is missing
    p = subprocess.run(["make", "-C", ROOT, "run", f"VENV={venv}", f"OUT={tmp_path}"],
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "fr.psnr_y" in p.stdout and "black: 6.000–6.480 s" in p.stdout and "freeze:" in p.stdout
    frames = ds.dataset(str(tmp_path / "results" / "frames"), format="parquet").to_table()
    assert set(frames.column("frame_index").to_pylist()) == set(range(200))
    models = {m for m in frames.column("model").to_pylist() if m}
    assert any(m.startswith("liqe/lite@") and not m.endswith("@untrained") for m in models), models  # shipped weights
    assert (tmp_path / "results" / "report.html").stat().st_size > 10_000


def test_readme_alert_rules_parse():
    import yaml

    from monitor.config import parse_rules

    text = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    block = re.search(r"### Alert rules\s+```yaml\n(.*?)```", text, re.S)[1]
    rules = parse_rules(yaml.safe_load(block))
    assert [r.name for r in rules] == ["low-quality", "sudden-drop", "slow-decline", "frozen", "black"]
