"""MFENet (Li Yu et al., arXiv 2411.07556): a reconstruction of the Multi-task Feature Enhancement Network.

No paper text, code or weights were available, so the network follows the reconstruction of
shared/MODELS.md §4.2. Three branches read the same crop:

* QEN (quality estimation, the primary branch): VAN-B2 (paper) or ImageNet EfficientNet-Lite0
  (lite), four stage taps at strides 4/8/16/32.
* DAN (distortion awareness): ResNet-50 (paper) or a second Lite0 (lite), frozen by default.
* HFEN (high frequency): a two-conv stem, then per stage one octave block that keeps only the
  high-frequency output Y^H, and a stride-2 conv into the next stage.

Per stage, AFF fuses QEN ⊕ DAN and FFM adds the HFEN features; a small MLP regresses the score
from the pooled fused features. Native score: [0, 1], higher is better (normalised MOS).

Reconstruction decisions [RECON], all to be checked against the paper PDF:

1. QEN taps are taken *after* each VAN stage's LayerNorm (the tensor the next stage consumes), so
   every official weight is used and the taps are scale-normalised.
2. DAN, paper: torchvision ResNet-50 trunk (layer1–4: 256/512/1024/2048). Weights from CONTRIQUE
   (`encoder.{0,1,4,5,6,7}.*` = conv1, bn1, layer1–4; its `projector.*` is dropped; input plain
   [0, 1] as CONTRIQUE was trained) or from a torchvision ImageNet file (input ImageNet mean/std).
   The DAN's input normalisation is stored as persistent buffers (`dan_mean`, `dan_std`), so
   quality weights carry the convention their DAN was trained with.
3. DAN, lite: a second ImageNet Lite0, frozen. No contrastively trained Lite0 exists; a frozen
   ImageNet copy keeps generic low-level (texture, blur, noise-sensitive) features fixed while the
   QEN copy adapts to quality, at +0.36 GMACs per crop. The paper variant can use CONTRIQUE.
4. The DAN is frozen by default (`freeze_dan=True`): no gradient, run under no_grad, and kept in
   eval mode so its BatchNorm statistics never move. `freeze_dan=False` fine-tunes it (the brief
   suggests lr ×0.1). The auxiliary distortion-type CE head of the brief's fallback is not built.
5. HFEN: stem Conv3×3 s2 (3→C₁/2)–BN–ReLU–Conv3×3 s2 (C₁/2→C₁)–BN–ReLU (32/64 for the paper,
   12/24 for lite). Octave block per stage, α = 0.5, realised as the first/last octave conv pair of
   Chen et al. (ICCV 2019): X → (X^H = f(X), X^L = f(AvgPool₂(X))), each half the channels, then
   Y^H = f(X^H; W^{H→H}) + Up₂(f(X^L; W^{L→H})) with C channels. The low-frequency output Y^L is
   never computed (it would be discarded). AvgPool uses ceil mode and Up₂ is nearest to X^H's
   size, so odd maps (7×7 at 224) work. Stride-2 Conv3×3–BN–ReLU between stages. HFEN channels =
   QEN channels (paper 64/128/320/512, lite 24/40/112/320).
6. AFF (Dai et al., WACV 2021) per stage, r = 4: Y = BN(Conv1×1(F_d)) projects the DAN to the
   QEN width; U = X + Y; M = σ(L(U) + G(U)) with local and global (GAP) bottleneck branches;
   Z = M ⊙ X + (1 − M) ⊙ Y.
7. FFM per stage: A = σ(Conv3×3(cat(Z, F_h)) → 1 channel); Z' = Z + A ⊙ Conv1×1(F_h); then
   squeeze-and-excitation (torchvision, reduction 4).
8. Head: GAP of the fused features of **all four** stages (paper 1024, lite 496 channels) →
   FC → 256 → GELU → dropout 0.1 → FC → 1. The brief pools stages 3–4 only, but then the stage-1/2
   fusion would feed nothing (the taps do not feed back into the QEN), so all four are pooled.
9. Linear output, no sigmoid: the L1 loss keeps its gradient at the ends of the scale;
   `normalise` clamps to 0–100.
10. Loss: L1 on MOS in [0, 1] higher-better, plus an optional LIQE-style fidelity rank term on
    all pairs of the batch, Φ(4·Δŷ): Δ on our [0, 1] scale times 4 equals Δ on LIQE's [1, 5]
    scale, where LIQE uses Φ(Δ).
11. Paper QEN is built with drop path 0.1 for fine-tuning (inactive at inference).
12. Frame protocol: frames with a side under 224 are first upscaled (bilinear) so the short side
    is 224. The frame is split into a rows × cols grid of equal cells, rows = round(√(N·H/W)),
    cols = round(N / rows) with N = `crops_per_frame` (default 10, ≈ 103 GMACs per 1080p frame
    for the paper variant), and one 224 crop is centred in each cell (clipped to the frame):
    1080p gives 2 × 5 = 10 crops, a square frame 3 × 3; offsets that clipping repeats on a side
    close to 224 are kept once (a 224×224 frame is one crop). Centring in cells, rather than
    spreading crops edge to edge, samples the frame evenly. Scores are the mean over the crops.
13. `backbone_weights` for the paper variant: a VAN-B2 file (`ckpt['state_dict']`, QEN only; the
    DAN stays random-init), or a directory holding `van_base_828.pth.tar` and the DAN's file
    (`CONTRIQUE_checkpoint25.tar`, or one torchvision `resnet50-*.pth`).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import SqueezeExcitation

from models.backbones import lite0
from models.backbones.resnet import CHANNELS as RESNET_CHANNELS, resnet50_trunk
from models.backbones.van import load_van_checkpoint, van_b2
from models.base import QualityModel
from models.crops import CROP, centred_grid
from models.table import MODELS, ModelInfo
from models.weights import WeightsError, load_strict, read_state_dict

CROPS_PER_FRAME = 10
LITE_CHANNELS = (24, 40, 112, 320)  # Lite0 taps 1–4 (strides 4/8/16/32)
VAN_CHANNELS = (64, 128, 320, 512)
VAN_FILE = "van_base_828.pth.tar"
CONTRIQUE_FILE = "CONTRIQUE_checkpoint25.tar"
# CONTRIQUE's encoder is nn.Sequential(*resnet50.children()[:-2]): index → torchvision name
CONTRIQUE_TO_TORCHVISION = {"0": "conv1", "1": "bn1", "4": "layer1", "5": "layer2", "6": "layer3", "7": "layer4"}

def conv_bn_relu(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class OctaveHighBlock(nn.Module):
    """Octave conv pair with α = 0.5 whose output is only the high-frequency map Y^H (decision 5)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        low = channels // 2
        high = channels - low
        self.split_high = conv_bn_relu(channels, high)
        self.split_low = conv_bn_relu(channels, low)
        self.high_to_high = nn.Conv2d(high, channels, 3, padding=1, bias=False)
        self.low_to_high = nn.Conv2d(low, channels, 3, padding=1, bias=False)
        self.norm = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x_high = self.split_high(x)
        x_low = self.split_low(F.avg_pool2d(x, 2, ceil_mode=True))
        low_up = F.interpolate(self.low_to_high(x_low), size=x_high.shape[-2:], mode="nearest")
        return F.relu(self.norm(self.high_to_high(x_high) + low_up))


class HighFrequencyNet(nn.Module):
    """HFEN: conv stem to stride 4, then per stage an octave block, stride-2 convs between stages."""

    def __init__(self, channels: tuple[int, ...]) -> None:
        super().__init__()
        self.stem = nn.Sequential(conv_bn_relu(3, channels[0] // 2, 2), conv_bn_relu(channels[0] // 2, channels[0], 2))
        self.downs = nn.ModuleList(conv_bn_relu(a, b, 2) for a, b in zip(channels[:-1], channels[1:]))
        self.octaves = nn.ModuleList(OctaveHighBlock(c) for c in channels)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.octaves[0](self.stem(x))
        taps = [x]
        for down, octave in zip(self.downs, self.octaves[1:]):
            x = octave(down(x))
            taps.append(x)
        return taps


def bottleneck(channels: int, reduction: int) -> nn.Sequential:
    mid = max(1, channels // reduction)
    return nn.Sequential(
        nn.Conv2d(channels, mid, 1, bias=False), nn.BatchNorm2d(mid), nn.ReLU(inplace=True),
        nn.Conv2d(mid, channels, 1, bias=False), nn.BatchNorm2d(channels),
    )


class AttentionalFeatureFusion(nn.Module):
    """AFF: a soft per-position, per-channel choice between the QEN feature X and the projected DAN feature Y."""

    def __init__(self, channels: int, dan_channels: int, reduction: int = 4) -> None:
        super().__init__()
        self.project = nn.Sequential(nn.Conv2d(dan_channels, channels, 1, bias=False), nn.BatchNorm2d(channels))
        self.local_att = bottleneck(channels, reduction)
        self.global_att = nn.Sequential(nn.AdaptiveAvgPool2d(1), bottleneck(channels, reduction))

    def forward(self, x: torch.Tensor, dan_feature: torch.Tensor) -> torch.Tensor:
        y = self.project(dan_feature)
        u = x + y
        m = torch.sigmoid(self.local_att(u) + self.global_att(u))
        return m * x + (1 - m) * y


class FeatureFusionModule(nn.Module):
    """FFM: spatially gated injection of the HFEN feature, then channel attention (SE)."""

    def __init__(self, channels: int, hf_channels: int, reduction: int = 4) -> None:
        super().__init__()
        self.gate = nn.Conv2d(channels + hf_channels, 1, 3, padding=1)
        self.inject = nn.Conv2d(hf_channels, channels, 1)
        self.se = SqueezeExcitation(channels, max(1, channels // reduction))

    def forward(self, z: torch.Tensor, hf: torch.Tensor) -> torch.Tensor:
        a = torch.sigmoid(self.gate(torch.cat([z, hf], dim=1)))
        return self.se(z + a * self.inject(hf))


class MFENet(QualityModel):
    def __init__(
        self,
        info: ModelInfo,
        qen: nn.Module,
        qen_channels: tuple[int, ...],
        dan: nn.Module,
        dan_channels: tuple[int, ...],
        dan_normalisation: tuple[tuple[float, ...], tuple[float, ...]],
        freeze_dan: bool = True,
        crops_per_frame: int = CROPS_PER_FRAME,
    ) -> None:
        super().__init__()
        self.info = info
        self.crops_per_frame = crops_per_frame
        self.qen = qen
        self.dan = dan
        self.hfen = HighFrequencyNet(qen_channels)
        self.aff = nn.ModuleList(AttentionalFeatureFusion(c, d) for c, d in zip(qen_channels, dan_channels))
        self.ffm = nn.ModuleList(FeatureFusionModule(c, c) for c in qen_channels)
        self.head = nn.Sequential(
            nn.Linear(sum(qen_channels), 256), nn.GELU(), nn.Dropout(0.1), nn.Linear(256, 1)
        )
        # model input is normalised as its table row says (ImageNet: both QEN backbones expect it)
        self.register_buffer("mean", torch.tensor(info.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(info.std).view(1, 3, 1, 1), persistent=False)
        # the DAN's own convention travels with the weights (decision 2)
        mean, std = dan_normalisation
        self.register_buffer("dan_mean", torch.tensor(mean).view(1, 3, 1, 1))
        self.register_buffer("dan_std", torch.tensor(std).view(1, 3, 1, 1))
        self.freeze_dan = freeze_dan
        if freeze_dan:
            self.dan.requires_grad_(False)
            self.dan.eval()

    def train(self, mode: bool = True) -> "MFENet":
        super().train(mode)
        if self.freeze_dan:
            self.dan.eval()
        return self

    def crops(self, frames: torch.Tensor) -> tuple[torch.Tensor, int]:
        n, _, h, w = frames.shape
        if min(h, w) < CROP:
            scale = CROP / min(h, w)
            h, w = max(CROP, round(h * scale)), max(CROP, round(w * scale))
            frames = F.interpolate(frames, size=(h, w), mode="bilinear", align_corners=False)
        tops, lefts = centred_grid(h, w, self.crops_per_frame)
        tiles = [frames[:, :, t : t + CROP, l : l + CROP] for t in tops for l in lefts]
        x = torch.stack(tiles, dim=1).flatten(0, 1)
        x = (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)
        if frames.is_contiguous(memory_format=torch.channels_last):
            x = x.contiguous(memory_format=torch.channels_last)
        return x, len(tiles)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet-normalised crops (B×3×h×w) → B native scores."""
        qen_taps = self.qen(x)
        dan_in = (x * self.std + self.mean - self.dan_mean) / self.dan_std
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze_dan):
            dan_taps = self.dan(dan_in)
        hf_taps = self.hfen(x)
        pooled = [
            ffm(aff(q, d), hf).mean(dim=(2, 3))
            for aff, ffm, q, d, hf in zip(self.aff, self.ffm, qen_taps, dan_taps, hf_taps)
        ]
        return self.head(torch.cat(pooled, dim=1)).squeeze(1)





def _load_dan(trunk: nn.Module, path: Path) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Fill the ResNet-50 DAN from a CONTRIQUE or torchvision file; returns the input normalisation it expects."""
    state = read_state_dict(path)
    if any(k.startswith("encoder.") for k in state):
        renamed = {}
        for key, value in state.items():
            if key.startswith("encoder."):
                index, rest = key.removeprefix("encoder.").split(".", 1)
                renamed[f"{CONTRIQUE_TO_TORCHVISION.get(index, 'encoder.' + index)}.{rest}"] = value
        load_strict(trunk, renamed, source=path)
        return (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    load_strict(trunk, {k: v for k, v in state.items() if not k.startswith("fc.")}, source=path)
    return lite0.IMAGENET_MEAN, lite0.IMAGENET_STD


def _paper_files(backbone_weights: str | None) -> tuple[Path | None, Path | None]:
    """(VAN file, DAN file) named by `backbone_weights` (decision 13)."""
    if backbone_weights is None:
        return None, None
    path = Path(backbone_weights)
    if path.is_file():
        return path, None
    if not path.is_dir():
        raise WeightsError(f"backbone weights not found: {path}")
    dan_files = [path / CONTRIQUE_FILE] if (path / CONTRIQUE_FILE).is_file() else sorted(path.glob("resnet50-*.pth"))
    if not (path / VAN_FILE).is_file() or len(dan_files) != 1:
        raise WeightsError(f"{path} must hold {VAN_FILE} and either {CONTRIQUE_FILE} or one resnet50-*.pth")
    return path / VAN_FILE, dan_files[0]


def build(variant: str = "lite", backbone_weights: str | None = None, freeze_dan: bool = True) -> MFENet:
    if variant == "lite":
        if backbone_weights is not None:
            raise ValueError("mfenet lite always uses the packaged ImageNet Lite0; backbone_weights is for variant='paper'")
        qen = lite0.lite0_features(out_indices=(1, 2, 3, 4))
        dan = lite0.lite0_features(out_indices=(1, 2, 3, 4))
        return MFENet(MODELS["mfenet", "lite"], qen, LITE_CHANNELS, dan, LITE_CHANNELS, (lite0.IMAGENET_MEAN, lite0.IMAGENET_STD), freeze_dan)
    if variant != "paper":
        raise ValueError(f"unknown mfenet variant {variant!r} (expected 'lite' or 'paper')")
    van_file, dan_file = _paper_files(backbone_weights)
    qen = van_b2(drop_path_rate=0.1)
    if van_file is not None:
        load_van_checkpoint(qen, van_file)
    dan = resnet50_trunk()
    dan_norm = ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))  # CONTRIQUE's convention until a file says otherwise
    if dan_file is not None:
        dan_norm = _load_dan(dan, dan_file)
    info = dataclasses.replace(MODELS["mfenet", "paper"], backbone=(
        f"QEN: VAN-B2 ({van_file.name if van_file else 'random init'}); "
        f"DAN: ResNet-50, frozen={freeze_dan} ({dan_file.name if dan_file else 'random init'})"))
    return MFENet(info, qen, VAN_CHANNELS, dan, RESNET_CHANNELS, dan_norm, freeze_dan)
