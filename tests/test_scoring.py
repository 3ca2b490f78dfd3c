"""Quality models inside the scoring path: records say which model and whether it is trained; FR needs a reference."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import Collect
from models import registry
from monitor.build import score_file
from monitor.cli import main
from monitor.config import StreamConfig
from monitor.config import parse_sample
from monitor.records import FrameScore, WindowStat
from monitor.samples import encode, panned_frames


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    d = tmp_path_factory.mktemp("models")
    frames = list(panned_frames(256, 160, 10))
    return {"ref": encode(str(d / "ref.mp4"), frames, crf=None),
            "dist": encode(str(d / "dist.mp4"), frames, crf=40),
            "short_ref": encode(str(d / "short.mp4"), frames[:6], crf=None)}


def test_untrained_nr_model_scores_every_sampled_frame_and_says_untrained(clips):
    sink = Collect()
    model = registry.create("nemg", "lite", weights=None)
    s = score_file(StreamConfig(clips["dist"], sample=parse_sample("2")), models=[model], sinks=[sink])
    rows = [r for r in sink.records if isinstance(r, FrameScore) and r.metric == "nr.nemg"]
    assert [r.frame_index for r in rows] == [0, 2, 4, 6, 8]
    assert all(r.model == "nemg/lite@untrained" and np.isfinite(r.value) and 0 <= r.score <= 100 for r in rows)
    assert any(m.metric == "nr.nemg" for m in s.metrics)
    assert any(isinstance(r, WindowStat) and r.metric == "nr.nemg" and r.scale == "score" for r in sink.records)


def test_fr_model_scores_only_frames_with_a_reference(clips):
    sink = Collect()
    model = registry.create("gsn", "lite", weights=None)
    score_file(StreamConfig(clips["dist"], ref=clips["short_ref"]), models=[model], sinks=[sink])
    rows = [r for r in sink.records if isinstance(r, FrameScore) and r.metric == "fr.gsn"]
    assert [r.frame_index for r in rows] == list(range(6))
    assert all(r.model == "gsn/lite@untrained" for r in rows)


def test_fr_model_reads_the_reference_motion_libvmaf_measures(clips):
    """GSN-lite is given the reference's VMAF motion at each frame (its teacher's motion term): its records are
    what the model scores with libvmaf's own motion values, and not what it scores as a still."""
    import av
    import torch

    from conftest import libvmaf_motion2

    sink = Collect()
    model = registry.create("gsn", "lite", weights=None).eval()
    score_file(StreamConfig(clips["dist"], ref=clips["ref"]), models=[model], sinks=[sink])
    got = [r.value for r in sink.records if isinstance(r, FrameScore) and r.metric == "fr.gsn"]

    def rgb(path):
        with av.open(path) as c:
            return torch.stack([torch.from_numpy(f.to_ndarray(format="rgb24")) for f in c.decode(video=0)]).permute(0, 3, 1, 2) / 255

    motion = torch.tensor(libvmaf_motion2(clips["ref"]))
    assert len(got) == len(motion) == 10 and motion[1:].min() > 1
    with torch.no_grad():
        moving, still = (model.score_frames(rgb(clips["dist"]), rgb(clips["ref"]), m)["quality"] for m in (motion, None))
    assert got == pytest.approx(moving.tolist(), rel=1e-3, abs=1e-4)
    assert got != pytest.approx(still.tolist(), rel=1e-3, abs=1e-4)


def test_model_without_shipped_weights_is_a_clear_usage_error(clips, capsys):
    assert main(["score", clips["dist"], "--model", "nemg/paper", "-q"]) == 2
    err = capsys.readouterr().err
    assert "--model" in err and "nemg/paper" in err and "untrained" in err
    assert main(["score", clips["dist"], "--model", "nosuch:untrained", "-q"]) == 2


def test_liqe_scene_and_distortion_distributions_reach_the_records(clips):
    sink = Collect()
    score_file(StreamConfig(clips["dist"], sample=parse_sample("5")), models=[registry.create("liqe", "lite", weights=None)], sinks=[sink])
    rows = [r for r in sink.records if isinstance(r, FrameScore) and r.metric == "nr.liqe"]
    assert len(rows) == 2 and all(1 <= r.value <= 5 for r in rows)
    scene = rows[0].extras["scene"]
    assert set(scene) == {"animal", "cityscape", "human", "indoor", "landscape", "night", "plant", "still_life", "others"}
    assert sum(scene.values()) == pytest.approx(1, abs=1e-3) and len(rows[0].extras["distortion"]) == 11


def test_vqmon_models_cost_lists_every_model_and_variant(capsys):
    assert main(["models", "--cost"]) == 0
    out = capsys.readouterr().out
    for name in ("nemg", "mfenet", "liqe", "gsn"):
        for variant in ("lite", "paper"):
            assert f"{name}/{variant}" in out
    assert "unavailable" not in out and "13.49" in out  # NEMG paper GMACs per 224 crop, as the brief measured
