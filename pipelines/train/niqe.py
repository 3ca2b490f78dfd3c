"""NIQE, the "completely blind" natural-image quality baseline, written from the paper.

Mittal, Soundararajan, Bovik, "Making a 'Completely Blind' Image Quality Analyzer", IEEE SPL 2013:
natural-scene statistics of MSCN coefficients (7×7 Gaussian window, σ = 7/6) are measured on
96×96 patches at two scales (the second after halving the image, antialiased bicubic, on
48×48 patches covering the same area). Per patch and scale, 18 features: the GGD fit of the
MSCN coefficients (shape, variance) and the AGGD fits of their products with the horizontal,
vertical and two diagonal neighbours (shape, mean, left variance, right variance), 36 in all.
A multivariate Gaussian fitted to the features of the sharpest patches of pristine images
(sharpness = mean local deviation σ over the patch, kept when above 0.75 of the image's
sharpest patch) is the model; an image's score is the distance between that MVG and the MVG of
all its own patches, sqrt((ν1−ν2)ᵀ((Σ1+Σ2)/2)⁺(ν1−ν2)): lower is better.

The GGD/AGGD shapes are found by moment matching against a lookup table of the gamma-function
ratio (shape 0.2…10 in steps of 0.001), vectorised over all patches of an image.

    python -m pipelines.train.niqe fit /work/shared/data/pristine/bsds500 --out models/weights/niqe_pristine.npz
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.ndimage import gaussian_filter
from scipy.special import gamma as gamma_fn

from models.weights import WEIGHTS_DIR

PATCH = 96
SHARPNESS_FRACTION = 0.75
WINDOW_SIGMA = 7 / 6
WINDOW_RADIUS = 3  # 7×7 window
STABILITY_C = 1.0  # MSCN denominator constant, for pixel values in 0..255
SHIPPED = WEIGHTS_DIR / "niqe_pristine.npz"

_SHAPES = np.arange(0.2, 10.0, 0.001)
_RATIO = gamma_fn(1 / _SHAPES) * gamma_fn(3 / _SHAPES) / gamma_fn(2 / _SHAPES) ** 2  # E[x²]/E[|x|]², decreasing


def _shape_for_ratio(ratio: np.ndarray) -> np.ndarray:
    """Inverse of E[x²]/E[|x|]² as a function of the GGD shape (table lookup, clipped to 0.2…10)."""
    return np.interp(ratio, _RATIO[::-1], _SHAPES[::-1])


def rgb_to_gray(rgb: np.ndarray) -> np.ndarray:
    """H×W×3 RGB → H×W luma with BT.601 weights (as the reference's rgb2gray), same value range."""
    return rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114


def load_gray(path: str | Path) -> np.ndarray:
    """An image file → H×W gray float64 in [0, 1]."""
    with Image.open(path) as im:
        return rgb_to_gray(np.asarray(im.convert("RGB"), dtype=np.float64) / 255.0)


def mscn(img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean-subtracted contrast-normalised coefficients of a 0..255 image, and the local deviation σ."""
    smooth = lambda a: gaussian_filter(a, WINDOW_SIGMA, mode="nearest", truncate=WINDOW_RADIUS / WINDOW_SIGMA)  # noqa: E731
    mu = smooth(img)
    sigma = np.sqrt(np.abs(smooth(img * img) - mu * mu))
    return (img - mu) / (sigma + STABILITY_C), sigma


def _patches(a: np.ndarray, size: int) -> np.ndarray:
    """Non-overlapping size×size tiles, row-major, P×size×size (a's sides are multiples of size)."""
    h, w = a.shape
    return a.reshape(h // size, size, w // size, size).swapaxes(1, 2).reshape(-1, size, size)


def _ggd(x: np.ndarray) -> list[np.ndarray]:
    """GGD fit per row of P×n: shape, variance."""
    m2 = np.mean(x * x, axis=1)
    return [_shape_for_ratio(m2 / np.mean(np.abs(x), axis=1) ** 2), m2]


def _aggd(y: np.ndarray) -> list[np.ndarray]:
    """AGGD fit per row of P×n: shape, mean, left variance, right variance."""
    sq = y * y
    left_var = np.sum(sq * (y < 0), axis=1) / np.maximum(np.sum(y < 0, axis=1), 1)
    right_var = np.sum(sq * (y > 0), axis=1) / np.maximum(np.sum(y > 0, axis=1), 1)
    g = np.sqrt(left_var / right_var)
    r = np.mean(np.abs(y), axis=1) ** 2 / np.mean(sq, axis=1)
    big_r = r * (g**3 + 1) * (g + 1) / (g**2 + 1) ** 2
    shape = _shape_for_ratio(1 / big_r)
    k = np.sqrt(gamma_fn(1 / shape) / gamma_fn(3 / shape))
    mean = (np.sqrt(right_var) - np.sqrt(left_var)) * k * gamma_fn(2 / shape) / gamma_fn(1 / shape)
    return [shape, mean, left_var, right_var]


def _scale_features(m: np.ndarray, size: int) -> np.ndarray:
    """18 features per size×size patch of an MSCN map: P×18."""
    x = _patches(m, size)
    neighbours = [x[:, :, :-1] * x[:, :, 1:], x[:, :-1, :] * x[:, 1:, :],  # horizontal, vertical
                  x[:, :-1, :-1] * x[:, 1:, 1:], x[:, :-1, 1:] * x[:, 1:, :-1]]  # main and anti-diagonal
    cols = _ggd(x.reshape(len(x), -1))
    for y in neighbours:
        cols += _aggd(y.reshape(len(y), -1))
    return np.stack(cols, axis=1)


def features(gray: np.ndarray, sharpest_only: bool = False) -> np.ndarray:
    """P×36 patch features of a gray image in [0, 1]; rows that are not finite (flat patches) are dropped.

    sharpest_only: keep patches sharper than 0.75 of the sharpest one (how the pristine model is fitted).
    """
    gray = np.asarray(gray, dtype=np.float64)
    if gray.ndim != 2:
        raise ValueError(f"NIQE needs a 2-d gray image, got shape {gray.shape}")
    if gray.max(initial=0.0) > 1.0 + 1e-6:
        raise ValueError("NIQE expects gray values in [0, 1]")
    h, w = (gray.shape[0] // PATCH) * PATCH, (gray.shape[1] // PATCH) * PATCH
    if not h or not w:
        raise ValueError(f"NIQE needs at least {PATCH}×{PATCH} pixels, got {gray.shape[1]}×{gray.shape[0]}")
    img = gray[:h, :w] * 255.0
    m, sigma = mscn(img)
    sharpness = _patches(sigma, PATCH).mean(axis=(1, 2))
    half = np.asarray(Image.fromarray(img.astype(np.float32)).resize((w // 2, h // 2), Image.BICUBIC),
                      dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        f = np.concatenate([_scale_features(m, PATCH), _scale_features(mscn(half)[0], PATCH // 2)], axis=1)
    keep = np.all(np.isfinite(f), axis=1)
    if sharpest_only:
        keep &= sharpness > SHARPNESS_FRACTION * sharpness.max()
    return f[keep]


@dataclass
class NIQEModel:
    """The pristine MVG (mean 36, covariance 36×36) and a record of the data it was fitted on."""

    mean: np.ndarray
    cov: np.ndarray
    fitted_on: dict = field(default_factory=dict)

    def score(self, gray: np.ndarray) -> float:
        """NIQE of a gray image in [0, 1] (at least 96×96): lower is better. NaN for a picture without a textured
        patch (a black or flat frame): NIQE is undefined there."""
        f = features(gray)
        if not len(f):
            return float("nan")
        cov = np.cov(f, rowvar=False) if len(f) > 1 else np.zeros_like(self.cov)
        d = self.mean - f.mean(axis=0)
        return float(np.sqrt(max(d @ np.linalg.pinv((self.cov + cov) / 2) @ d, 0.0)))

    def save(self, path: str | Path) -> None:
        np.savez(path, mean=self.mean, cov=self.cov, fitted_on=json.dumps(self.fitted_on))

    @classmethod
    def load(cls, path: str | Path = SHIPPED) -> "NIQEModel":
        with np.load(path, allow_pickle=False) as d:
            return cls(d["mean"], d["cov"], json.loads(str(d["fitted_on"])))


def fit(images, fitted_on: dict | None = None) -> NIQEModel:
    """The pristine MVG over the sharpest patches of `images` (gray arrays in [0, 1])."""
    f = np.concatenate([features(g, sharpest_only=True) for g in images])
    if len(f) < 2:
        raise ValueError("NIQE fit: fewer than 2 usable patches")
    return NIQEModel(f.mean(axis=0), np.cov(f, rowvar=False), {**(fitted_on or {}), "patches": len(f)})


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pipelines.train.niqe", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    f = sub.add_parser("fit", help="fit the pristine MVG on the *.jpg files of ROOT's subfolders")
    f.add_argument("root")
    f.add_argument("--dirs", nargs="+", default=["train", "val"], help="subfolders of ROOT (default: train val)")
    f.add_argument("--out", required=True, help=".npz to write")
    args = p.parse_args(argv)
    root = Path(args.root)
    files = sorted(q for d in args.dirs for q in (root / d).glob("*.jpg"))
    if not files:
        print(f"niqe: error: no *.jpg under {root}/{{{','.join(args.dirs)}}}", file=sys.stderr)
        return 2
    digest = hashlib.sha256()
    for q in files:
        digest.update(q.read_bytes())
    fitted_on = {"root": root.name, "dirs": args.dirs, "images": len(files),
                 "files_sha256": digest.hexdigest(), "files": [str(q.relative_to(root)) for q in files]}
    model = fit((load_gray(q) for q in files), fitted_on)
    model.save(args.out)
    print(f"NIQE MVG fitted on {len(files)} images ({model.fitted_on['patches']} patches) → {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
