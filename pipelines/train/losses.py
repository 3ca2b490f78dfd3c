"""Training losses of the quality models and the label tables they use; inference never needs them.

Each model's own loss, as its paper defines it (NEMG, GSN, MFENet, LIQE), plus LIQE's Dynamic
Weight Average of its task losses.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from models.liqe import DISTORTIONS

NEMG_LOSS_WEIGHTS = {"score": 1000.0, "mse_map": 50.0, "ssim_map": 150.0}
_EPS = 1e-8
DISTORTION_INDEX = {name: i for i, name in enumerate(DISTORTIONS)}  # LIQE's distortion labels → class index


# ---- NEMG -----------------------------------------------------------------------------------------

def _gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    g = torch.exp(-((torch.arange(size) - size // 2) ** 2) / (2 * sigma**2))
    g = g / g.sum()
    return torch.outer(g, g).view(1, 1, size, size)


def ssim(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean SSIM of single-channel maps: 11×11 Gaussian (σ 1.5), zero-padded 'same', C1 = 0.01², C2 = 0.03²."""
    win = _gaussian_window().to(a)
    blur = lambda t: F.conv2d(t, win, padding=5)  # noqa: E731
    mu_a, mu_b = blur(a), blur(b)
    var_a, var_b = blur(a * a) - mu_a**2, blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return s.mean()


def nemg_loss(out: dict[str, torch.Tensor], mos: torch.Tensor) -> torch.Tensor:
    """1000·SmoothL1(score, mos) + 50·MSE(M_mse, E4) + 150·(1 − SSIM(E4, M_ssim)); `out` from `forward_train`."""
    e4 = out["e4"]
    return (NEMG_LOSS_WEIGHTS["score"] * F.smooth_l1_loss(out["score"].float(), mos.float())
            + NEMG_LOSS_WEIGHTS["mse_map"] * F.mse_loss(out["m_mse"].float(), e4)
            + NEMG_LOSS_WEIGHTS["ssim_map"] * (1 - ssim(e4, out["m_ssim"].float())))


# ---- GSN ------------------------------------------------------------------------------------------

def _zscore(v: torch.Tensor) -> torch.Tensor:
    return (v - v.mean()) / (v.std(unbiased=False) + 1e-6)


def gsn_loss(pred: torch.Tensor, mos: torch.Tensor, lam: float = 1.0, tau: float = 1.0) -> torch.Tensor:
    """MSE + λ·KL(P‖Q) between batch softmaxes of the z-scored labels (P) and predictions (Q)."""
    pred, mos = pred.float(), mos.float()
    log_q = F.log_softmax(_zscore(pred) / tau, dim=0)
    p = F.softmax(_zscore(mos) / tau, dim=0)
    return F.mse_loss(pred, mos) + lam * F.kl_div(log_q, p, reduction="sum")


# ---- MFENet ---------------------------------------------------------------------------------------

def mfenet_loss(pred: torch.Tensor, mos: torch.Tensor, rank_weight: float = 0.0) -> torch.Tensor:
    """L1 to MOS in [0, 1] (higher better), plus `rank_weight` × the pairwise fidelity loss (decision 10)."""
    pred, mos = pred.float(), mos.float()
    loss = F.l1_loss(pred, mos)
    if rank_weight > 0 and pred.numel() > 1:
        i, j = torch.triu_indices(pred.numel(), pred.numel(), offset=1, device=pred.device)
        p = 0.5 * (1 + torch.erf(4 * (pred[i] - pred[j]) / math.sqrt(2)))  # Φ(4Δ)
        g = 0.5 * (torch.sign(mos[i] - mos[j]) + 1)
        eps = 1e-8
        fidelity = 1 - torch.sqrt(p * g + eps) - torch.sqrt((1 - p) * (1 - g) + eps)
        loss = loss + rank_weight * fidelity.mean()
    return loss


# ---- LIQE -----------------------------------------------------------------------------------------

def _fidelity(p: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    return 1 - torch.sqrt(p * g + _EPS) - torch.sqrt((1 - p) * (1 - g) + _EPS)


def fidelity_rank_loss(quality: torch.Tensor, mos: torch.Tensor, groups: torch.Tensor | None = None) -> torch.Tensor:
    """Pairwise fidelity loss on Φ(q̂_i − q̂_j) against 1[y_i > y_j] (ties ½), over pairs i<j of the same
    group (source dataset); mean per group, then mean over the groups that have a pair."""
    quality, mos = quality.float(), mos.float()
    if groups is None:
        groups = torch.zeros_like(mos, dtype=torch.long)
    p = 0.5 * (1 + torch.erf((quality[:, None] - quality[None, :]) / math.sqrt(2)))
    g = 0.5 * (torch.sign(mos[:, None] - mos[None, :]) + 1)
    loss = _fidelity(p, g)
    upper = torch.ones_like(loss, dtype=torch.bool).triu(diagonal=1)
    per_group = [
        loss[pairs].mean()
        for group in groups.unique()
        if (pairs := upper & (groups[:, None] == group) & (groups[None, :] == group)).any()
    ]
    if not per_group:
        raise ValueError("the ranking loss needs at least two images of one group")
    return torch.stack(per_group).mean()


def scene_fidelity_loss(scene: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Multi-label fidelity: scene marginals (N×9) against multi-hot targets, mean over classes and images."""
    return _fidelity(scene.float(), targets.float()).mean()


def distortion_fidelity_loss(distortion: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Single-label fidelity: 1 − Σ_k √(p_k g_k + ε) with one-hot g from class indices, mean over images."""
    g = F.one_hot(targets, distortion.shape[-1]).float()
    return (1 - torch.sqrt(distortion.float() * g + _EPS).sum(dim=-1)).mean()


def liqe_loss(out: dict[str, torch.Tensor], mos: torch.Tensor, groups: torch.Tensor | None = None,
                  scenes: torch.Tensor | None = None, distortions: torch.Tensor | None = None,
                  weights: tuple[float, float, float] = (1.0, 1.0, 1.0)) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """LIQE's loss on `predict` output: λ_q·ranking + λ_s·scene + λ_d·distortion (the terms whose labels are given).

    `weights` are the Dynamic Weight Average factors (quality, scene, distortion). Returns the
    total and each unweighted term (the epoch means of those feed `DynamicWeightAverage`).
    """
    terms = {"quality": fidelity_rank_loss(out["quality"], mos, groups)}
    if scenes is not None:
        terms["scene"] = scene_fidelity_loss(out["scene"], scenes)
    if distortions is not None:
        terms["distortion"] = distortion_fidelity_loss(out["distortion"], distortions)
    lam = dict(zip(("quality", "scene", "distortion"), weights))
    return sum(lam[k] * v for k, v in terms.items()), terms


class DynamicWeightAverage:
    """Task weights λ_k = K·softmax_k(w/T), w_k = L̄_k(t−1)/L̄_k(t−2) from epoch-mean losses (MTAN); 1 for the first two epochs."""

    def __init__(self, num_tasks: int = 3, temperature: float = 2.0) -> None:
        self.num_tasks, self.temperature = num_tasks, temperature
        self.history: list[list[float]] = []

    def weights(self) -> list[float]:
        if len(self.history) < 2:
            return [1.0] * self.num_tasks
        ratios = torch.tensor(self.history[-1]) / torch.tensor(self.history[-2])
        return (self.num_tasks * torch.softmax(ratios / self.temperature, dim=0)).tolist()

    def end_epoch(self, mean_losses: list[float]) -> None:
        if len(mean_losses) != self.num_tasks:
            raise ValueError(f"expected {self.num_tasks} epoch losses, got {len(mean_losses)}")
        self.history = (self.history + [list(mean_losses)])[-2:]
