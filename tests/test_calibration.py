"""The 0–100 scale across resolutions: the same picture at the same quality reads the same at 360p, 720p and 1080p.

The picture is native 1080p (monitor.samples.native_1080p); its 720p and 360p versions are area
downscales, so all three are sharp per pixel, and each is encoded with x264 at CRF 18/28/38/48.
VMAF, computed at each rung's own resolution against its own pristine, reads the same at every
resolution for the same CRF; the shipped models must too, within SPREAD points (README, "Reading
the numbers"; the measured table: `python bench/resolution_scores.py`).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from models import registry
from models.weights import manifest_entries
from monitor.samples import resolution_rungs
from monitor.scoring.vmaf import still_scores

RESOLUTIONS = ((1920, 1080), (1280, 720), (640, 360))
CRFS = (18, 28, 38, 48)
SPREAD = 15.0  # points of 0–100: the most one quality level may move between 360p, 720p and 1080p


@pytest.fixture(scope="module")
def rungs():
    return resolution_rungs(RESOLUTIONS, CRFS)


def test_vmaf_reads_the_same_quality_at_every_resolution(rungs):
    """The premise: with these rungs, one CRF is one picture quality whatever the resolution."""
    vmaf = {h: still_scores((e, p) for e in encodes) for h, (p, encodes) in rungs.items()}
    for level in range(len(CRFS)):
        values = [v[level] for v in vmaf.values()]
        assert max(values) - min(values) < 5, (CRFS[level], vmaf)
    assert all(np.all(np.diff(v) < -5) for v in vmaf.values()), vmaf


@pytest.mark.parametrize("entry", manifest_entries(), ids=lambda e: f"{e['name']}-{e['variant']}")
def test_shipped_scores_agree_across_resolutions(entry, rungs):
    """Every shipped default orders each rung's ladder, and each quality level reads within SPREAD points
    at 360p, 720p and 1080p."""
    model = registry.create(entry["name"], entry["variant"], for_inference=True)
    scores = {}
    for h, (pristine, encodes) in rungs.items():
        frames = torch.from_numpy(np.stack([pristine, *encodes])).permute(0, 3, 1, 2).float() / 255
        refs = frames[:1].expand_as(frames) if model.info.kind == "FR" else None
        with torch.no_grad():
            scores[h] = [round(v, 1) for v in model.normalise(model.score_frames(frames, refs)["quality"]).tolist()]
    for h, q in scores.items():
        assert all(a > b for a, b in zip(q, q[1:])), (entry["name"], h, scores)
    for level in range(len(CRFS) + 1):
        values = [q[level] for q in scores.values()]
        assert max(values) - min(values) <= SPREAD, (entry["name"], ("pristine", *CRFS)[level], scores)
