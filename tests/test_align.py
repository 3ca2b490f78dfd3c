"""Automatic reference alignment: the offset is found, a drop is followed, wrong or ambiguous references never pair."""
from __future__ import annotations

import av
import numpy as np
import pytest
import torch

from conftest import libvmaf_motion2
from monitor.records import StreamEvent
from monitor.samples import encode, panned_frames
from monitor.scoring.signals import psnr_y, to_float_luma
from monitor.source.align import MIN_FRAMES, Aligner, ReferencePairer
from monitor.source.frames import Frame
from monitor.source.sources import FileSource

W, H, FPS = 320, 192, 25
LATE, DROP_AT, DROPPED, N_DIST = 7, 50, 3, 100  # distorted starts 7 frames in and loses 3 frames after its 50th


def true_ref_index(i: int) -> int:
    return i + LATE + (DROPPED if i >= DROP_AT else 0)


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """Lossless reference, its late-starting CRF-30 copy with a drop, and a lossless pan over another photo."""
    d = tmp_path_factory.mktemp("align")
    frames = list(panned_frames(W, H, LATE + DROPPED + N_DIST + 10, step=1))  # step 1: no repeat within the clip
    kept = frames[LATE:LATE + DROP_AT] + frames[LATE + DROP_AT + DROPPED:LATE + DROPPED + N_DIST]
    return {
        "ref": encode(str(d / "ref.mp4"), frames, fps=FPS, crf=None),
        "dist": encode(str(d / "dist.mp4"), kept, fps=FPS, crf=30),
        "other": encode(str(d / "other.mp4"), panned_frames(W, H, len(frames), photo="chelsea", step=1), fps=FPS, crf=None),
    }


def run(distorted, reference, **kw):
    events: list[StreamEvent] = []
    aligner = Aligner(reference, on_event=events.append, **kw)
    pairs = [(f, aligner.match(f)) for f in distorted]
    return pairs, events, aligner


@pytest.fixture(scope="module")
def aligned(clips):
    return run(FileSource(clips["dist"]), FileSource(clips["ref"]))


def test_finds_the_offset_and_follows_a_drop(aligned):
    pairs, events, aligner = aligned
    assert len(pairs) == N_DIST
    for f, m in pairs:
        if m is not None:  # never a wrong pair
            assert (m.reference.index, m.offset) == (true_ref_index(f.index), true_ref_index(f.index) - f.index)
            assert 0.5 <= m.confidence <= 1
    unpaired = [f.index for f, m in pairs if m is None]
    assert unpaired == list(range(MIN_FRAMES - 1)) + list(range(DROP_AT, DROP_AT + MIN_FRAMES - 1))
    assert (aligner.paired, aligner.unpaired, aligner.state) == (N_DIST - len(unpaired), len(unpaired), "aligned")
    assert [(e.event, e.detail["offset"], e.detail["frame_index"]) for e in events] == [
        ("alignment_gained", LATE, MIN_FRAMES - 1),
        ("alignment_lost", LATE, DROP_AT),
        ("alignment_gained", LATE + DROPPED, DROP_AT + MIN_FRAMES - 1),
    ]
    assert all(e.stream_id == "dist" for e in events)
    assert events[1].detail["reason"] == "drift" and events[2].detail["confidence"] >= 0.5


def test_psnr_over_aligned_pairs_equals_the_offline_truth(aligned, clips):
    pairs, _, _ = aligned
    got = [(f.y, m.reference.y) for f, m in pairs if m is not None]
    ref_y = [f.y for f in FileSource(clips["ref"])]
    truth = [(f.y, ref_y[true_ref_index(f.index)]) for f, m in pairs if m is not None]

    def psnr(ys):
        d, r = (to_float_luma(torch.from_numpy(np.stack(p)), 8) for p in zip(*ys))
        return psnr_y(d, r)

    assert torch.equal(psnr(got), psnr(truth))
    assert psnr(got).min() > 30  # CRF 30 against its own source: a misaligned pair would be far lower


def test_a_different_clip_never_aligns(clips):
    pairs, events, aligner = run(FileSource(clips["dist"]), FileSource(clips["other"]))
    assert events == [] and all(m is None for _, m in pairs) and aligner.paired == 0


def frames_of(rgbs, stream_id: str, start: int = 0):
    """In-memory Frames (no codec): for cases that need exact content rather than a real encode."""
    for i, rgb in enumerate(rgbs):
        yield Frame(stream_id, i, (start + i) / FPS, av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24"))


def resized(rgb: np.ndarray, w: int, h: int) -> np.ndarray:
    return av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(width=w, height=h).to_ndarray(format="rgb24")


def test_still_content_never_locks_on_a_guess():
    still = next(panned_frames(160, 96, 1))
    ref = [still] * 30 + list(panned_frames(160, 96, 40, step=1))[1:]  # 30 identical frames, then the pan
    pairs, events, _ = run(frames_of(ref[5:], "dist"), frames_of(ref, "ref"))  # offset 5
    paired = [f.index for f, m in pairs if m is not None]
    assert paired and min(paired) >= 30 - 5  # nothing pairs until the picture moves
    assert all(m.reference.index == f.index + 5 for f, m in pairs if m is not None)
    assert [e.event for e in events] == ["alignment_gained"]


@pytest.mark.parametrize("offset", [4, -6])
def test_sampled_frames_and_a_larger_reference(offset):
    """The reference is 2× the size (scaled down for pairing), distorted frames are every 3rd; offsets either way."""
    pan = list(panned_frames(320, 192, 80, step=1))
    ref = pan if offset > 0 else pan[-offset:]  # offset > 0: distorted starts late; < 0: reference does
    dist = [resized(rgb, 160, 96) for rgb in (pan[offset:] if offset > 0 else pan)]
    sampled = (f for f in frames_of(dist, "dist") if f.index % 3 == 0)
    pairs, events, _ = run(sampled, frames_of(ref, "ref"), search=12)
    matched = [(f, m) for f, m in pairs if m is not None]
    assert len(matched) >= len(pairs) - (MIN_FRAMES - 1) - 2  # offset -6: the first distorted frames have no reference
    for f, m in matched:
        assert (m.offset, m.reference.index) == (offset, f.index + offset)
        assert (m.reference.width, m.reference.height) == (160, 96) and m.reference.y.shape == (96, 160)
    assert [e.event for e in events] == ["alignment_gained"]


def test_black_stays_paired_and_a_freeze_relocks_on_the_same_offset():
    """A black stretch is the picture (FR must see it); a freeze repeats frames, so its pairs are withheld."""
    pan = list(panned_frames(160, 96, 70, step=1))
    dist = [np.zeros_like(rgb) if 20 <= i < 26 else pan[39] if 40 <= i < 48 else rgb for i, rgb in enumerate(pan)]
    pairs, events, _ = run(frames_of(dist, "dist"), frames_of(pan, "ref"))
    assert all(m.reference.index == f.index for f, m in pairs if m is not None)
    unpaired = [f.index for f, m in pairs if m is None]
    assert not set(range(20, 26)) & set(unpaired)  # black frames are paired
    assert set(unpaired) - {0, 1} <= set(range(40, 48 + MIN_FRAMES))
    assert [(e.event, e.detail["offset"]) for e in events] == [
        ("alignment_gained", 0), ("alignment_lost", 0), ("alignment_gained", 0)]


def test_reference_buffer_stays_bounded_on_a_long_stream():
    rng = np.random.default_rng(0)
    textures = [rng.integers(0, 256, (36, 64, 3), dtype=np.uint8) for _ in range(600)]
    aligner = Aligner(frames_of(textures, "ref"), search=10, window=4)
    held = []
    for f in frames_of(textures[5:], "dist"):
        m = aligner.match(f)
        assert m is None or m.reference.index == f.index + 5
        held.append(aligner.buffered)
    assert aligner.paired == 595 - (MIN_FRAMES - 1)
    assert max(held) <= 2 * 10 + 4 + 1


@pytest.fixture(scope="module")
def cut_clip(tmp_path_factory):
    """A lossless clip with a pan, a cut to another picture and a still stretch: motion, a cut, none."""
    pan = list(panned_frames(W, H, 12, step=2))
    other = next(panned_frames(W, H, 1, photo="chelsea"))
    return encode(str(tmp_path_factory.mktemp("motion") / "ref.mp4"), pan + [other] * 6, fps=FPS, crf=None)


@pytest.mark.parametrize("scale", [1, 2])
def test_reference_motion_is_what_libvmaf_measures(cut_clip, scale):
    """Paired references carry VMAF's motion2, measured at the reference's own size even when it is scaled
    to a smaller distorted stream; the cut counts as no motion, as VMAF counts it."""
    truth = libvmaf_motion2(cut_clip)
    w, h = W // scale, H // scale
    pairer = ReferencePairer(FileSource(cut_clip, scale_to=(w, h)), motion=True)
    motion = []
    for frame in FileSource(cut_clip, scale_to=(w, h)):
        m = pairer.match(frame)
        assert m.reference.index == frame.index and m.reference.y.shape == (h, w)
        motion.append(m.reference.motion)
    assert len(motion) == len(truth) == 18
    assert motion == pytest.approx(truth, abs=0.01)
    assert motion[0] == 0 and min(motion[1:12]) > 1 and max(motion[12:]) < 0.1  # pan, cut, still

    aligner = Aligner(FileSource(cut_clip), search=4, motion=True)
    aligned = {f.index: m.reference.motion for f in FileSource(cut_clip) if (m := aligner.match(f)) is not None}
    assert aligned and all(v == pytest.approx(truth[i], abs=0.01) for i, v in aligned.items())


def test_references_carry_no_motion_unless_asked(cut_clip):
    pairer = ReferencePairer(FileSource(cut_clip))
    assert all(pairer.match(f).reference.motion is None for f in FileSource(cut_clip))
