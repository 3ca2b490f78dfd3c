"""The TRAINING-NOTES baseline on our corpus: frozen Lite0 multi-stage mean+std pooling + ridge regression to VMAF.

Why: the trained lite models should beat it on the same held-out items. Features: mean and std of
Lite0 taps 1–4 (992-d), from the training crops of the feature cache (CORPUS/cache, made by
`vqmon train`) and, for validation, from the whole image at native size. Ridge strength by 5-fold
cross-validation grouped by source. Prints SRCC/PLCC per subset, with the same item selection as
`vqmon eval --per-subset N`.

    python bench/ridge_baseline.py CORPUS [--per-subset 100]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.backbones.lite0 import IMAGENET_MEAN, IMAGENET_STD, lite0_features  # noqa: E402
from pipelines.train import evaluate, features  # noqa: E402
from pipelines.train.metrics import correlations  # noqa: E402


def pooled(taps) -> np.ndarray:
    out = []
    for f in taps:
        f = f.float()
        out += [f.mean(dim=(2, 3)), (f.var(dim=(2, 3), unbiased=False) + 1e-6).sqrt()]
    return torch.cat(out, dim=1).numpy()


def ridge_fit(x: np.ndarray, y: np.ndarray, alpha: float) -> tuple[np.ndarray, float, np.ndarray, np.ndarray]:
    mu, sd = x.mean(0), x.std(0) + 1e-6
    z = (x - mu) / sd
    w = np.linalg.solve(z.T @ z + alpha * np.eye(z.shape[1]), z.T @ (y - y.mean()))
    return w, y.mean(), mu, sd


def ridge_predict(model, x: np.ndarray) -> np.ndarray:
    w, b, mu, sd = model
    return ((x - mu) / sd) @ w + b


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("corpus", type=Path)
    ap.add_argument("--per-subset", type=int, default=100)
    args = ap.parse_args()
    cache = features.FeatureCache(args.corpus / "cache")
    x = np.concatenate([pooled([torch.from_numpy(np.asarray(cache.arrays[f"tap{t}"][i:i + 512])) for t in features.TAPS])
                        for i in range(0, len(cache), 512)])
    y = np.asarray(cache.meta["vmaf"], dtype=np.float64)
    groups = np.array([item.rsplit("/", 1)[0] for item in cache.meta["items"]])
    folds = {g: i % 5 for i, g in enumerate(sorted(set(groups)))}
    fold = np.array([folds[g] for g in groups])
    best = None
    for alpha in (1.0, 10.0, 100.0, 1000.0):
        pred = np.empty_like(y)
        for k in range(5):
            m = ridge_fit(x[fold != k], y[fold != k], alpha)
            pred[fold == k] = ridge_predict(m, x[fold == k])
        srcc = correlations(pred, y, n_boot=0)["srcc"]
        print(f"alpha {alpha:>7}: grouped 5-fold CV SRCC {srcc:.4f}")
        best = max(best or (srcc, alpha), (srcc, alpha))
    model = ridge_fit(x, y, best[1])
    trunk = lite0_features(out_indices=features.TAPS).eval()
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    items = evaluate.read_corpus(args.corpus, "val", args.per_subset)
    with torch.no_grad():
        xv = np.concatenate([pooled(trunk((evaluate._tensor([evaluate._rgb(it.path, it.where)], "cpu") - mean) / std))
                             for it in items])
    pred = ridge_predict(model, xv)
    mos = np.array([it.mos for it in items])
    subsets = np.array([it.subset for it in items])
    print(f"\nridge (alpha {best[1]}) on {len(items)} held-out items")
    print(f"{'subset':<18} {'n':>4} {'SRCC':>7} {'PLCC':>7}")
    for name in [*dict.fromkeys(subsets), "all"]:
        sel = np.ones(len(items), bool) if name == "all" else subsets == name
        c = correlations(pred[sel], mos[sel], n_boot=0)
        print(f"{name:<18} {sel.sum():>4} {c['srcc']:>7.4f} {c['plcc']:>7.4f}")


if __name__ == "__main__":
    main()
