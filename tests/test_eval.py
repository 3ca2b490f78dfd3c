"""`vqmon eval`: correlation metrics, NIQE, and the table end to end on tiny label sets made from scikit-image pictures."""
from __future__ import annotations

import csv

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image, ImageFilter
from skimage import data, filters

from models import registry
from monitor.cli import main
from pipelines.train import evaluate, niqe
from pipelines.train.metrics import correlations, within_group_srcc

SIDE = 224  # one model crop per image: keeps the CPU models cheap


def test_perfect_monotone_prediction_scores_one_everywhere():
    x = np.random.default_rng(0).uniform(0, 1, 200)
    mos = 1 + 4 / (1 + np.exp(-(x - 0.5) * 10))  # non-linear but monotone: the logistic fit absorbs it
    r = correlations(x, mos, n_boot=200)
    assert r["fit"] == "logistic" and r["n"] == 200
    assert r["srcc"] == pytest.approx(1) and r["krcc"] == pytest.approx(1)
    assert r["plcc"] > 0.999 and r["rmse"] < 0.01
    assert correlations(x, mos, n_boot=0)["plcc"] > 0.999  # PLCC/RMSE on the raw scale would be lower
    assert np.corrcoef(x, mos)[0, 1] < 0.99


def test_noise_lowers_the_correlations_and_the_ci_contains_the_estimate():
    rng = np.random.default_rng(1)
    x = rng.uniform(0, 1, 300)
    mos = 10 * x
    mild = correlations(x + rng.normal(0, 0.1, 300), mos, n_boot=300)
    heavy = correlations(x + rng.normal(0, 0.5, 300), mos, n_boot=300)
    for key in ("srcc", "krcc", "plcc"):
        assert 0 < heavy[key] < mild[key] < 1
    assert heavy["rmse"] > mild["rmse"]
    for r in (mild, heavy):
        for key in ("srcc", "krcc", "plcc", "rmse"):
            assert r[f"{key}_lo"] <= r[key] <= r[f"{key}_hi"]
            assert r[f"{key}_lo"] < r[f"{key}_hi"]
    assert correlations(-x, mos, n_boot=0)["srcc"] == pytest.approx(-1)  # sign kept for rank correlations


def test_too_few_items_for_the_logistic_fall_back_to_a_line_and_constants_give_nan():
    r = correlations([1.0, 2.0, 4.0, 3.0], [1.0, 2.0, 3.0, 4.0], n_boot=50)
    assert r["fit"] == "linear" and r["srcc"] == pytest.approx(0.8) and 0 < r["plcc"] < 1
    flat = correlations([2.0] * 5, [1.0, 2.0, 3.0, 4.0, 5.0])
    assert flat["fit"] == "none" and np.isnan(flat["srcc"]) and np.isnan(flat["rmse_hi"])
    with pytest.raises(ValueError, match="at least 3"):
        correlations([1.0, 2.0], [1.0, 2.0])


def test_within_group_srcc_averages_per_source():
    mos = np.array([1, 2, 3, 1, 2, 3, 1, 2, 3.0])
    pred = np.array([1, 2, 3, 3, 2, 1, 5, 5, 5.0])  # source a ranked right, b reversed, c flat
    groups = np.array(list("aaabbbccc"))
    assert within_group_srcc(pred, mos, groups) == pytest.approx((1 - 1 + 0) / 3)
    assert np.isnan(within_group_srcc(pred[:2], mos[:2], groups[:2]))  # no group of 3


def _gray(image: np.ndarray) -> np.ndarray:
    return niqe.rgb_to_gray(image / 255.0) if image.ndim == 3 else image / 255.0


@pytest.mark.parametrize("name", ["astronaut", "camera"])
def test_niqe_rises_with_blur_and_noise(name):
    model = niqe.NIQEModel.load()
    g = _gray(getattr(data, name)())
    rng = np.random.default_rng(0)
    blur = [model.score(filters.gaussian(g, s) if s else g) for s in (0, 1, 2, 4)]
    noise = [model.score(np.clip(g + rng.normal(0, s, g.shape), 0, 1)) for s in (0, 0.02, 0.05, 0.1)]
    assert blur == sorted(blur) and blur[-1] > 2 * blur[0], blur
    assert noise == sorted(noise) and noise[-1] > 2 * noise[0], noise


def test_shipped_niqe_records_its_training_data():
    m = niqe.NIQEModel.load()
    assert m.mean.shape == (36,) and m.cov.shape == (36, 36)
    assert m.fitted_on["root"] == "bsds500" and m.fitted_on["dirs"] == ["train", "val"]
    assert m.fitted_on["images"] == len(m.fitted_on["files"]) == 300 and m.fitted_on["patches"] > 300


def test_niqe_fit_save_load_round_trip(tmp_path):
    images = [_gray(data.astronaut()), _gray(data.coffee()), _gray(data.chelsea())]
    m = niqe.fit(images, {"source": "skimage"})
    m.save(tmp_path / "n.npz")
    back = niqe.NIQEModel.load(tmp_path / "n.npz")
    assert back.fitted_on["source"] == "skimage" and back.fitted_on["patches"] > 3
    assert back.score(images[0]) == pytest.approx(m.score(images[0]))
    with pytest.raises(ValueError, match="96×96"):
        m.score(np.zeros((64, 300)))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        m.score(images[0] * 255)


def _ladder(d, levels=4) -> list[str]:
    """Blurred copies of a scikit-image picture: level 0 (the reference) to levels-1, as PNGs."""
    im = Image.fromarray(data.astronaut()).resize((SIDE, SIDE), Image.BICUBIC)
    names = []
    for lvl in range(levels):
        names.append(f"blur{lvl}.png")
        im.filter(ImageFilter.GaussianBlur(0.7 * lvl)).save(d / names[-1])
    im.save(d / "ref.png")
    return names


def _results(path) -> dict[str, dict]:
    with open(path, newline="") as f:
        return {row["method"]: row for row in csv.DictReader(f)}


def test_eval_nr_csv_end_to_end(tmp_path, capsys):
    names = _ladder(tmp_path)
    (tmp_path / "labels.csv").write_text("path,mos\n" + "".join(f"{n},{90 - 20 * i}\n" for i, n in enumerate(names)))
    rc = main(["eval", "liqe:untrained", "--csv", str(tmp_path / "labels.csv"), "--device", "cpu", "--boot", "100",
               "--out", str(tmp_path / "table.csv"), "-q"])
    shown = capsys.readouterr().out
    assert rc == 0
    assert "liqe/lite@untrained" in shown and "NIQE (−)" in shown and "negated" in shown
    rows = _results(tmp_path / "table.csv")
    assert set(rows) == {"liqe/lite@untrained", "NIQE", "var-Laplacian"}
    assert rows["NIQE"]["negated"] == "True" and float(rows["NIQE"]["srcc"]) == pytest.approx(1)
    assert rows["var-Laplacian"]["negated"] == "False" and float(rows["var-Laplacian"]["srcc"]) == pytest.approx(1)
    liqe = rows["liqe/lite@untrained"]
    assert liqe["n"] == "4" and -1 <= float(liqe["srcc"]) <= 1 and float(liqe["rmse"]) >= 0

    Image.new("RGB", (SIDE, SIDE)).save(tmp_path / "black.png")  # a lost stream's black frame: NIQE is undefined
    with open(tmp_path / "labels.csv", "a") as f:
        f.write("black.png,5\n")
    assert main(["eval", "liqe:untrained", "--csv", str(tmp_path / "labels.csv"), "--device", "cpu", "--boot", "0",
                 "--out", str(tmp_path / "table.csv"), "-q"]) == 0
    rows = _results(tmp_path / "table.csv")
    assert rows["NIQE"]["n"] == "4" and rows["var-Laplacian"]["n"] == rows["liqe/lite@untrained"]["n"] == "5"


def test_eval_fr_csv_end_to_end_with_psnr_ssim_and_vmaf(tmp_path, capsys):
    names = _ladder(tmp_path)
    (tmp_path / "fr.csv").write_text("dist,ref,mos\n" + "".join(f"{n},ref.png,{90 - 20 * i}\n"
                                                                for i, n in enumerate(names)))
    rc = main(["eval", "gsn:untrained", "--csv", str(tmp_path / "fr.csv"), "--device", "cpu", "--boot", "100",
               "--out", str(tmp_path / "table.md"), "-q"])
    assert rc == 0
    md = (tmp_path / "table.md").read_text()
    lines = [line for line in md.splitlines() if line.startswith("| ")]
    assert lines[0].startswith("| method | subset | n | SRCC [95% CI]")
    methods = {line.split(" | ")[0].lstrip("| ") for line in lines[1:]}
    assert methods == {"gsn/lite@untrained", "PSNR-Y", "SSIM-Y", "VMAF"}
    for name in ("PSNR-Y", "VMAF"):  # libvmaf on the pairs as stills, through monitor.scoring.vmaf
        row = next(line for line in lines if line.startswith(f"| {name} "))
        assert row.split(" | ")[3].startswith("1.000"), row  # the blur ladder ranks perfectly
    assert "4-parameter logistic" in md and "VMAF: libvmaf vmaf_v0.6.1 on each pair as a still" in md


def test_eval_bad_csv_row_is_one_line_naming_file_and_line(tmp_path, capsys):
    _ladder(tmp_path, levels=3)
    (tmp_path / "a.csv").write_text("path,mos\nblur0.png,90\nblur1.png,seventy\nblur2.png,50\n")
    (tmp_path / "b.csv").write_text("path,mos\nblur0.png,90\nmissing.png,70\nblur2.png,50\n")
    (tmp_path / "c.csv").write_text("file,score\nblur0.png,90\n")
    (tmp_path / "e.csv").write_text("path,mos\nblur0.png,90\nblur1.png,70\nblur2.png,50\n")
    for name, problem in (("a.csv:3", "'seventy' is not a number"), ("b.csv:3", "image not found"),
                          ("c.csv", "expected a header path,mos")):
        assert main(["eval", "liqe:untrained", "--csv", str(tmp_path / name.split(":")[0])]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and name in err and problem in err, err
    Image.new("RGB", (SIDE, SIDE // 2)).save(tmp_path / "small.png")
    (tmp_path / "d.csv").write_text("dist,ref,mos\nblur0.png,small.png,90\nblur1.png,blur0.png,70\nblur2.png,blur0.png,50\n")
    assert main(["eval", "gsn:untrained", "--csv", str(tmp_path / "d.csv"), "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert "d.csv:2: reference" in err and "224×112, the image 224×224" in err, err
    assert main(["eval", "liqe:untrained"]) == 2  # --csv or --corpus is required
    assert "--csv FILE or --corpus DIR" in capsys.readouterr().err
    assert main(["eval", "gsn:untrained", "--csv", str(tmp_path / "a.csv").replace("a.csv", "e.csv")]) == 2
    assert main(["eval", "liqe:untrained", "--csv", str(tmp_path / "a.csv"), "--out", "t.txt"]) == 2


def _corpus(d):
    """A tiny corpus.parquet: 2 subsets × 2 sources × a 3-level blur ladder (val), plus rows eval must skip."""
    rows = []
    for subset, picture in (("bsds500", data.astronaut()), ("kodak24", data.coffee())):
        for s, (y, x) in enumerate(((0, 0), (96, 96))):
            im = Image.fromarray(picture[y:y + SIDE, x:x + SIDE])
            ref = f"{subset}/{s}/ref.png"
            (d / subset / str(s)).mkdir(parents=True)
            im.save(d / ref)
            for level in range(3):
                path = f"{subset}/{s}/blur{level}.png"
                im.filter(ImageFilter.GaussianBlur(0.8 * level)).save(d / path)
                rows.append({"item": f"{subset}-{s}-{level}", "split": "val", "subset": subset,
                             "source": f"{subset}-{s}", "distortion": "blur", "level": level, "path": path,
                             "ref_path": ref, "vmaf": 95.0 - 30 * level, "psnr_y": 50.0 - 10 * level,
                             "ssim_y": 1.0 - 0.1 * level, "teacher": "vmaf", "ref_motion": 0.0})
    rows.append({**rows[0], "item": "train-row", "split": "train", "vmaf": 0.0})
    rows.append({**rows[1], "item": "level-teacher", "teacher": "level", "vmaf": None, "psnr_y": None,
                 "ssim_y": None})
    pq.write_table(pa.Table.from_pylist(rows), d / "corpus.parquet")


def test_eval_on_a_corpus_reports_each_subset_and_all(tmp_path, capsys):
    _corpus(tmp_path)
    items = evaluate.read_corpus(tmp_path, "val")
    assert len(items) == 12 and {it.subset for it in items} == {"bsds500", "kodak24"}
    psnr, ssim = evaluate.fr_baselines(items)  # the corpus's own columns
    assert sorted(set(psnr)) == [30.0, 40.0, 50.0] and ssim.max() == pytest.approx(1.0)
    assert sorted(set(evaluate.vmaf_scores(items))) == [35.0, 65.0, 95.0]  # the teacher's own labels
    training = registry.create("liqe", "lite", weights=None).train()  # as a training loop would pass it
    quick = evaluate.evaluate_models({"liqe@step0": training}, items, n_boot=0, baselines=False)
    assert training.training  # put back in the mode it came in
    assert [(r["method"], r["subset"]) for r in quick] == [("liqe@step0", s) for s in ("bsds500", "kodak24", "all")]
    assert -1 <= quick[-1]["srcc"] <= 1 and np.isnan(quick[-1]["srcc_lo"])
    rc = main(["eval", "liqe:untrained", "--corpus", str(tmp_path), "--device", "cpu", "--boot", "50",
               "--out", str(tmp_path / "t.csv"), "-q"])
    assert rc == 0
    with open(tmp_path / "t.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["method"], r["subset"], r["n"]) for r in rows] == [
        (m, s, n) for m in ("liqe/lite@untrained", "NIQE", "var-Laplacian") for s, n in (("bsds500", "6"), ("kodak24", "6"), ("all", "12"))]
    niqe_all = rows[-4]
    assert float(niqe_all["within_source_srcc"]) == pytest.approx(1)  # blur ranks perfectly within each crop
    assert "VMAF teacher" in capsys.readouterr().out
    assert main(["eval", "liqe:untrained", "--corpus", str(tmp_path / "nowhere")]) == 2
    assert "corpus.parquet" in capsys.readouterr().err


def test_eval_puts_nr_and_fr_label_sets_in_one_table(tmp_path, capsys):
    """Human-rated photos (NR labels) beside an FR set: NR methods score every item, FR methods the referenced ones."""
    (tmp_path / "photos").mkdir()
    (tmp_path / "pairs").mkdir()
    for d in ("photos", "pairs"):
        _ladder(tmp_path / d)
    (tmp_path / "photos" / "mos.csv").write_text("path,mos\n" + "".join(f"blur{i}.png,{90 - 20 * i}\n" for i in range(4)))
    (tmp_path / "pairs" / "fr.csv").write_text("dist,ref,mos\n" + "".join(f"blur{i}.png,ref.png,{90 - 20 * i}\n"
                                                                       for i in range(4)))
    rc = main(["eval", "liqe:untrained", "gsn:untrained", "--csv", str(tmp_path / "photos" / "mos.csv"),
               "--csv", str(tmp_path / "pairs" / "fr.csv"), "--device", "cpu", "--boot", "0",
               "--out", str(tmp_path / "t.csv"), "-q"])
    assert rc == 0
    with open(tmp_path / "t.csv", newline="") as f:
        rows = {(r["method"], r["subset"]): r["n"] for r in csv.DictReader(f)}
    assert rows[("liqe/lite@untrained", "all")] == "8" and rows[("liqe/lite@untrained", "photos")] == "4"
    assert rows[("gsn/lite@untrained", "all")] == "4" and ("gsn/lite@untrained", "photos") not in rows
    assert rows[("var-Laplacian", "all")] == "8" and rows[("SSIM-Y", "all")] == "4"
    shown = capsys.readouterr().out
    assert "mos.csv" in shown and "fr.csv" in shown


def test_eval_never_pools_human_mos_with_vmaf_labels(tmp_path):
    """MOS and VMAF are different scales: beside a corpus, a human-rated set gets its own row, not a share of "all"."""
    _corpus(tmp_path / "corpus")
    (tmp_path / "photos").mkdir()
    _ladder(tmp_path / "photos")
    (tmp_path / "photos" / "mos.csv").write_text("path,mos\n" + "".join(f"blur{i}.png,{4 - i}\n" for i in range(4)))
    items = evaluate.read_corpus(tmp_path / "corpus") + evaluate.read_csv(tmp_path / "photos" / "mos.csv")
    rows = evaluate.evaluate_models({"liqe": registry.create("liqe", "lite", weights=None)}, items, n_boot=0,
                                    baselines=False)
    assert [(r["subset"], r["n"]) for r in rows] == [("bsds500", 6), ("kodak24", 6), ("photos", 4), ("all VMAF", 12)]
