"""GSN, Gradient Siamese Network (Cong et al., CVPRW 2022 NTIRE): FR, native [0, 1], higher = better.

No code or weights exist; this is the reconstruction of ../shared/MODELS.md §5.2. Decisions [RECON]:
1. Siamese: one shared trunk runs on reference and distorted crops in a single batch (BatchNorm
   statistics see both).
2. Central Difference Convolution, θ = 0.7, `y = conv(x, W) − θ·conv1×1(x, ΣW)` (ΣW over the
   kernel window, same stride/groups). It is linear in x, so `fold()` turns every CDC into a
   plain conv with `W'_centre = W_centre − θ·ΣW`: exact, zero-padded borders included. A CDC
   keeps the conv's parameter names, so ImageNet weights load unchanged (θ = 0 start) and
   trained weights are always stored unfolded.
   Paper: every 3×3 conv of ResNet-50 layer1–layer2 (strides 4 and 8).
   Lite: the depthwise convs of EfficientNet-Lite0 blocks.1 (3×3) and blocks.2 (5×5), its
   stride-4 and stride-8 stages, matching layer1–2; the CDC acts per channel there. The stem
   and blocks.0 stay vanilla, as ResNet's stem does.
3. Four levels (paper layer1–4: 256/512/1024/2048 ch; lite taps at strides 4/8/16/32:
   24/40/112/320 ch). Per level, CBAM spatial attention on Δ = |F_r − F_d|:
   `Δ' = σ(Conv7×7([mean_c Δ; max_c Δ])) ⊙ Δ` (no bias, one attention module per level).
4. Fusion: `v_l = FC_l(GAP(cat(F_d, Δ')))` → 256 each; `cat(v_1..v_4)` (1024) → FC 512 → ReLU →
   FC 1 (linear output; labels are min-max normalised MOS, higher = better).
5. Loss: `MSE(ŷ, y) + λ·KL(P‖Q)`, `P = softmax(z(y)/τ)`, `Q = softmax(z(ŷ)/τ)` over the batch,
   z = batch z-score (population std + 1e-6), τ = 1, λ = 1. Needs batches of 2 or more.
6. Frame protocol: co-located grids of 224 crops in reference and distorted frame, evenly
   spaced corner to corner (lite 3×3 = 9, paper 5×8 = 40), scores averaged. Reference and
   distorted frames must already be aligned and of equal size.

Lite only, our addition (not in the paper): a pixel fidelity branch. Per frame pair, the SSIM-Y and
PSNR-Y yardsticks and GMSD of the luma at scales 1, 1/2 and 1/4 join every crop's fused features
at the head's input.
Why: a Lite0 trunk starts at stride 2 and its taps are pooled, so it is blind to the small,
uniform pixel errors that decide codec damage on soft video, where plain PSNR-Y/SSIM-Y beat the
learned score (held-out 720p clips). Over the whole frame, not the crops: nine 224 crops see a
fifth of a 720p frame, and whole-frame GMSD alone ranks those clips better than crop statistics
do (v5; v4 read them per crop). Weights trained without the branch (gsn-lite v1–v3) load with
zero head weights on these inputs, so they score exactly as they did.
Lite, since v6: the fusion weights on F_d are zero (`without_distorted_features`), so the score
comes from what differs between the frames, not from how the distorted crop looks on its own.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from models.backbones.lite0 import lite0_features
from models.backbones.resnet import resnet50_trunk
from models.base import QualityModel
from models.crops import CROP, grid_crops
from models.table import MODELS
from monitor.scoring.signals import psnr_y, ssim_y

THETA = 0.7


class CDConv2d(nn.Conv2d):
    """Central difference conv: the vanilla conv minus θ × (the kernel's sum) × the centre pixel."""

    def __init__(self, conv: nn.Conv2d, theta: float = THETA) -> None:
        k, d = conv.kernel_size, conv.dilation
        if conv.padding != (d[0] * (k[0] // 2), d[1] * (k[1] // 2)) or conv.padding_mode != "zeros":
            raise ValueError(f"CDC needs centred zero padding, got {conv}")
        super().__init__(conv.in_channels, conv.out_channels, k, conv.stride, conv.padding, d, conv.groups,
                         conv.bias is not None, device=conv.weight.device, dtype=conv.weight.dtype)
        self.weight, self.bias = conv.weight, conv.bias
        self.theta = theta

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        centre = F.conv2d(x, self.weight.sum(dim=(2, 3), keepdim=True), stride=self.stride, groups=self.groups)
        return super().forward(x) - self.theta * centre

    def folded(self) -> nn.Conv2d:
        """The equivalent plain conv (centre tap reduced by θ·ΣW)."""
        conv = nn.Conv2d(self.in_channels, self.out_channels, self.kernel_size, self.stride, self.padding,
                         self.dilation, self.groups, self.bias is not None,
                         device=self.weight.device, dtype=self.weight.dtype)
        with torch.no_grad():
            w = self.weight.clone()
            w[:, :, self.kernel_size[0] // 2, self.kernel_size[1] // 2] -= self.theta * self.weight.sum(dim=(2, 3))
            conv.weight.copy_(w)
            if self.bias is not None:
                conv.bias.copy_(self.bias)
        return conv.train(self.training)


def to_cdc(module: nn.Module, theta: float = THETA) -> None:
    """Replace, in place, every conv with a spatial kernel inside `module` by a CDC."""
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Conv2d and max(child.kernel_size) > 1:
                setattr(parent, name, CDConv2d(child, theta))


class SpatialAttention(nn.Module):
    """CBAM spatial attention: a 7×7 conv on the channel mean and max gives a [0, 1] map that reweights the input."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 1, 7, padding=3, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        return torch.sigmoid(self.conv(pooled)) * x


FIDELITY_SCALES = (1, 2, 4)
FIDELITY_FEATURES = 3 * len(FIDELITY_SCALES) + 1  # SSIM, GMSD, PSNR per scale; the reference's motion
MOTION_CAP = 20.0  # VMAF motion above this reads as this: VMAF's own gain from motion levels off long before
_LUMA = (0.299, 0.587, 0.114)  # BT.601
_GMSD_T = 170.0  # GMSD's stability constant (170/255² for [0, 1] pictures), in 8-bit units


def _luma(x: torch.Tensor) -> torch.Tensor:
    """N×1×H×W BT.601 luma of RGB in [0, 1], float32 in 8-bit units; in-place adds take a third of the time
    of a weighted channel sum."""
    y = x[:, 0:1].float() * (255 * _LUMA[0])
    return y.add_(x[:, 1:2], alpha=255 * _LUMA[1]).add_(x[:, 2:3], alpha=255 * _LUMA[2]).clamp_(0, 255)


def _halve(y: torch.Tensor) -> torch.Tensor:
    """2×2 mean, odd sizes zero-padded first, as piq.gmsd downsamples (the same as avg_pool2d for even sizes)."""
    h, w = y.shape[-2:]
    return F.avg_pool2d(F.pad(y, (0, w % 2, 0, h % 2)) if h % 2 or w % 2 else y, 2)


def _gradient_magnitude(y: torch.Tensor) -> torch.Tensor:
    """|∇y| with 3×3 Prewitt kernels and zero padding; shifted slices, 10× faster on CPU than a 1-channel conv."""
    p = F.pad(y, (1, 1, 1, 1))
    dx, dy = p[..., 2:] - p[..., :-2], p[..., 2:, :] - p[..., :-2, :]
    gx = (dx[..., :-2, :] + dx[..., 1:-1, :] + dx[..., 2:, :]) / 3
    gy = (dy[..., :-2] + dy[..., 1:-1] + dy[..., 2:]) / 3
    return torch.sqrt(gx * gx + gy * gy)


def _gmsd(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """GMSD (Xue et al. 2013) of N×1×H×W luma pictures already halved: the deviation of the gradient magnitude
    similarity map; what piq.gmsd returns for the unhalved pictures (a test checks it)."""
    ga, gb = _gradient_magnitude(a), _gradient_magnitude(b)
    return ((2 * ga * gb + _GMSD_T) / (ga * ga + gb * gb + _GMSD_T)).flatten(1).std(dim=1, correction=0)


def fidelity(x: torch.Tensor, ref: torch.Tensor, motion: torch.Tensor | None = None) -> torch.Tensor:
    """N×FIDELITY_FEATURES pixel-fidelity statistics of distorted vs reference RGB pictures in [0, 1], each O(1):
    per scale, SSIM-Y and PSNR-Y/50 as the yardsticks compute them (monitor.scoring.signals: FFmpeg's SSIM,
    PSNR capped at 100 dB) and 5·GMSD. In 8-bit units and float32 (autocast off); each scale halves the one
    before, which also gives GMSD its halved input. Last, the reference's VMAF motion (None: 0, a still),
    capped at MOTION_CAP, /10. Why: VMAF, the teacher, forgives more loss on moving content; without the
    motion a frame pair cannot tell a pan from a still (held out vs VMAF: bikes .961 → .976)."""
    if x.device.type == "meta":  # cost counting (registry.describe): no values to compute statistics of
        return x.new_zeros(x.shape[0], FIDELITY_FEATURES)
    if motion is None:
        motion = x.new_zeros(x.shape[0])
    with torch.autocast(x.device.type, enabled=False):
        levels = [(_luma(x), _luma(ref))]  # scales 1, 2, 4, …: each level halves the one before
        for _ in range(FIDELITY_SCALES[-1].bit_length()):
            levels.append((_halve(levels[-1][0]), _halve(levels[-1][1])))
        out = []
        for s in FIDELITY_SCALES:
            (a, b), halved = levels[s.bit_length() - 1], levels[s.bit_length()]
            out += [ssim_y(a[:, 0], b[:, 0]), 5 * _gmsd(*halved), psnr_y(a[:, 0], b[:, 0]) / 50]
        out.append(motion.to(x.device, torch.float32).clamp(0, MOTION_CAP) / 10)
        return torch.stack(out, dim=1)


class GSN(QualityModel):

    def __init__(self, variant: str = "lite", backbone_weights: str | None = None, theta: float = THETA) -> None:
        super().__init__()
        if variant == "paper":
            self.resnet = resnet50_trunk(backbone_weights)
            to_cdc(self.resnet.layer1, theta)
            to_cdc(self.resnet.layer2, theta)
            channels = (256, 512, 1024, 2048)
            self.grid = (5, 8)
        elif variant == "lite":
            self.lite0 = lite0_features(out_indices=(1, 2, 3, 4))
            to_cdc(self.lite0.blocks[1], theta)
            to_cdc(self.lite0.blocks[2], theta)
            channels = (24, 40, 112, 320)
            self.grid = (3, 3)
        else:
            raise ValueError(f"variant must be 'lite' or 'paper', got {variant!r}")
        self.info = MODELS["gsn", variant]
        self.register_buffer("mean", torch.tensor(self.info.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(self.info.std).view(1, 3, 1, 1), persistent=False)
        self.attention = nn.ModuleList(SpatialAttention() for _ in channels)
        self.project = nn.ModuleList(nn.Linear(2 * c, 256) for c in channels)
        self.pixel_fidelity = variant == "lite"
        extra = FIDELITY_FEATURES if self.pixel_fidelity else 0
        self.head = nn.Sequential(nn.Linear(256 * len(channels) + extra, 512), nn.ReLU(), nn.Linear(512, 1))

    def crops(self, frames: torch.Tensor) -> tuple[torch.Tensor, int]:
        rows, cols = self.grid
        return (grid_crops(frames, CROP, rows, cols) - self.mean) / self.std, rows * cols

    @property
    def uses_ref_motion(self) -> bool:
        return self.pixel_fidelity

    def score_frames(self, frames: torch.Tensor, refs: torch.Tensor | None = None,
                     ref_motion: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """The base protocol, with the lite fidelity features read over each whole frame pair."""
        if refs is None or not self.pixel_fidelity:
            return super().score_frames(frames, refs)
        (x, p), (r, _) = self.crops(frames), self.crops(refs)
        per_crop = self(x, r, fidelity(frames, refs, ref_motion).repeat_interleave(p, dim=0))
        return {"quality": per_crop.float().view(frames.shape[0], p).mean(dim=1)}

    def forward(self, x: torch.Tensor, ref: torch.Tensor, frame_fidelity: torch.Tensor | None = None) -> torch.Tensor:
        """Score per (distorted, reference) crop pair, both normalised, same shape. Lite: `frame_fidelity`, the
        `fidelity` rows of each crop's frame pair; without it the crops are taken as whole pictures."""
        trunk = self.resnet if hasattr(self, "resnet") else self.lite0
        levels = trunk(torch.cat([ref, x]))
        vs = []
        for f, attend, project in zip(levels, self.attention, self.project):
            f_ref, f_dist = f.chunk(2)
            delta = attend((f_ref - f_dist).abs())
            vs.append(project(torch.cat([f_dist, delta], dim=1).mean(dim=(2, 3))))
        if self.pixel_fidelity:
            if frame_fidelity is None:
                frame_fidelity = fidelity(x * self.std + self.mean, ref * self.std + self.mean)
            vs.append(frame_fidelity.to(vs[0].dtype))
        return self.head(torch.cat(vs, dim=1)).squeeze(1)

    def without_distorted_features(self) -> GSN:
        """Zero the fusion weights on F_d, the distorted crop's own features, and keep their gradients at zero
        (for training). The forward is unchanged, so files trained either way load into one model.
        Why: F_d is a no-reference cue. It helps on stills with pristine masters but misleads on video whose
        master is already soft or compressed, where the score must follow fidelity to that master (gsn-lite
        v5 → v6 held out vs VMAF: bikes .926 → .952, all .954 → .963)."""
        for project in self.project:
            c = project.in_features // 2  # cat(F_d, Δ'): F_d first
            with torch.no_grad():
                project.weight[:, :c] = 0
            project.weight.register_hook(lambda g, c=c: g.index_fill(1, torch.arange(c, device=g.device), 0))
        return self

    def adapt_state_dict(self, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Weights trained without the pixel fidelity branch (v4 and before) or without its motion input (v8 and
        before): zero head weights on the inputs they lack, which come last (the same scores)."""
        w = state_dict.get("head.0.weight")
        own = self.head[0].weight
        missing = own.shape[1] - w.shape[1] if w is not None else 0
        if self.pixel_fidelity and missing in (1, FIDELITY_FEATURES):
            state_dict = {**state_dict, "head.0.weight": torch.cat([w, w.new_zeros(w.shape[0], missing)], 1)}
        return state_dict

    def fold(self) -> GSN:
        """Replace every CDC by its equivalent plain conv, for inference (in place; do not train or save afterwards)."""
        for parent in list(self.modules()):
            for name, child in list(parent.named_children()):
                if isinstance(child, CDConv2d):
                    setattr(parent, name, child.folded())
        return self


def build(variant: str = "lite", backbone_weights: str | None = None) -> GSN:
    return GSN(variant, backbone_weights)
