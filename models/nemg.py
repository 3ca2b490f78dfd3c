"""NEMG, Nested Error Map Generation network (Chen, Wang, Li, Liu, ICASSP 2021): NR, native [0, 1], higher = better.

Follows ../shared/MODELS.md §2 (the official code). A ResNet-50 at output stride 16 feeds a
nested head: a coarse error map (MSE branch), a finer one built on it (SSIM branch), a
2-channel sensitivity map built on both, masking, and a 1×1 regression averaged over the map.
Training uses the reference to make the error-map target E4; inference needs the distorted
crop only. State-dict keys follow the official layout (363 keys for the paper variant).

Reconstruction decisions ([RECON], brief §2.8):
1. Gray for E4 and the high-frequency input: BT.601 gray of the *de-normalised* RGB in [0, 1]
   (so 255·Δ is in gray levels, ε = 1). `gray_on_normalised=True` reproduces the code, which
   takes the gray of the ImageNet-normalised tensors.
2. PredictNet's own D'/U' are binomial, as intended. `replicate_init_bug=True` gives them the
   frozen random Kaiming kernels the official init leaves there.
3. Any H×W works: the input is reflect-padded (bottom/right) to a multiple of 16 and the
   masked map is cut back to the frame's own extent before the border shave and the mean.
4. Frame protocol: a deterministic grid of 224 crops, evenly spaced from corner to corner
   (3×3 = 9 for lite, 5×8 = 40 for paper, as the paper's 40 test crops); scores averaged.
   `grid=None` scores the whole frame instead. A frame with a side under 224 is first
   upscaled (bilinear) so its short side is 224.
5. Training labels must be "higher = better, [0, 1]" (convert DMOS before training); the
   regression output is then in that scale (the final LeakyReLU lets it dip slightly below 0).
6. Lite variant: ImageNet EfficientNet-Lite0 with timm's output stride 16 (blocks.5 stride
   removed, later depthwise convs dilated by 2). x1 is its stride-4 tap (24 ch), x4 its
   stride-16 tap (320 ch), mirroring layer1/layer4 of the OS16 ResNet. The heads are the
   paper's with only their input widths changed (res_out 320→1024→512→64, MSE conv 89→64).
7. Under autocast the Laplacian detail Hf and the E4 target are computed in float32: Hf is a
   difference of two near-equal low-passes and would keep almost no bits in bf16/fp16.
"""
from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F
from torch import nn

from models.backbones.lite0 import lite0_features
from models.backbones.resnet import resnet50_trunk
from models.base import QualityModel
from models.crops import CROP, grid_crops
from models.table import MODELS

BT601 = (0.2989, 0.5870, 0.1140)



def _binomial5() -> torch.Tensor:
    k = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0])
    return (torch.outer(k, k) / 256).view(1, 1, 5, 5)


class _FixedFilter(nn.Module):
    """A frozen single-channel 5×5 kernel held as buffers (`weight`, optional `bias`), applied to every channel."""

    def __init__(self, weight: torch.Tensor, with_bias: bool) -> None:
        super().__init__()
        self.register_buffer("weight", weight)
        self.register_buffer("bias", torch.zeros(1) if with_bias else None)

    def kernel(self, x: torch.Tensor) -> torch.Tensor:
        return self.weight.to(x.dtype).expand(x.shape[1], 1, 5, 5)

    def channel_bias(self, x: torch.Tensor) -> torch.Tensor | None:
        return None if self.bias is None else self.bias.to(x.dtype).expand(x.shape[1])


class Downsample(nn.Module):
    """D: 5×5 binomial low-pass, stride 2, padding 2, per channel."""

    def __init__(self) -> None:
        super().__init__()
        self.filter = _FixedFilter(_binomial5(), with_bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.filter.kernel(x), self.filter.channel_bias(x), stride=2, padding=2, groups=x.shape[1])


class Upsample(nn.Module):
    """U: the matching transposed conv (kernel ×4, stride 2, padding 2, output_padding 1): exactly doubles H and W."""

    def __init__(self) -> None:
        super().__init__()
        self.filter = _FixedFilter(4 * _binomial5(), with_bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv_transpose2d(x, self.filter.kernel(x), stride=2, padding=2, output_padding=1, groups=x.shape[1])


class ConcatConv(nn.Module):
    """Concatenate the inputs on channels, then one conv (the official `.conv` key layout)."""

    def __init__(self, cin: int, cout: int, k: int, stride: int = 1, bias: bool = False) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, bias=bias)

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat(xs, dim=1))


def _full_precision(x: torch.Tensor):
    """Context that turns autocast off for x's device (a no-op where autocast does not exist, e.g. meta)."""
    if torch.amp.is_autocast_available(x.device.type):
        return torch.autocast(x.device.type, enabled=False)
    return contextlib.nullcontext()


def _lrelu(x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, 0.01)


class PredictNet(nn.Module):
    """The nested head: MSE branch → SSIM branch → sensitivity branch (brief §2.1 table)."""

    def __init__(self, low_channels: int, replicate_init_bug: bool = False) -> None:
        super().__init__()
        self.downsample_filter, self.upsample_filter = Downsample(), Upsample()
        if replicate_init_bug:
            for f in (self.downsample_filter.filter, self.upsample_filter.filter):
                nn.init.kaiming_normal_(f.weight)
        self.h1, self.h2, self.h3, self.h4, self.h5 = (ConcatConv(64, 64, 1, bias=True) for _ in range(5))
        self.mse_conv1 = ConcatConv(low_channels + 64, 64, 3)
        self.mse_conv2, self.mse_conv3, self.mse_conv4, self.mse_conv5 = (nn.Conv2d(64, 64, 3, padding=1) for _ in range(4))
        self.mse_conv6 = nn.Conv2d(64, 1, 1)
        self.ssim_conv1 = ConcatConv(192, 64, 3)
        self.ssim_conv2, self.ssim_conv3, self.ssim_conv4 = (ConcatConv(128, 64, 3) for _ in range(3))
        self.ssim_conv5 = ConcatConv(65, 1, 1)
        self.predict_conv1 = ConcatConv(192, 64, 3, stride=2)
        self.predict_conv2, self.predict_conv3 = ConcatConv(192, 64, 3), ConcatConv(192, 64, 3)
        self.predict_conv4 = nn.Conv2d(64, 2, 1)

    def forward(self, low: torch.Tensor, hl: torch.Tensor) -> dict[str, torch.Tensor]:
        up, down = self.upsample_filter, self.downsample_filter
        h1, h2, h3, h4, h5 = (_lrelu(h(hl)) for h in (self.h1, self.h2, self.h3, self.h4, self.h5))
        r0 = _lrelu(self.mse_conv1(low, up(h1)))
        r1 = _lrelu(self.mse_conv2(r0))
        r2 = _lrelu(self.mse_conv3(r1))
        r3 = _lrelu(self.mse_conv4(r2))
        r4 = _lrelu(self.mse_conv5(r3))
        m_mse = F.relu(self.mse_conv6(r4))
        s1 = _lrelu(self.ssim_conv1(r0, r1, up(h2)))
        s2 = _lrelu(self.ssim_conv2(s1, r2))
        s3 = _lrelu(self.ssim_conv3(s2, r3))
        s4 = _lrelu(self.ssim_conv4(s3, r4))
        m_ssim = F.relu(self.ssim_conv5(s4, m_mse))
        p1 = _lrelu(self.predict_conv1(s1, s2, up(h3)))
        p2 = _lrelu(self.predict_conv2(p1, down(s3), h4))
        p3 = _lrelu(self.predict_conv3(p2, down(s4), h5))
        sensitivity = F.relu(self.predict_conv4(p3))
        return {"m_mse": m_mse, "m_ssim": m_ssim, "sensitivity": sensitivity}


class NEMG(QualityModel):

    def __init__(self, variant: str = "lite", backbone_weights: str | None = None,
                 gray_on_normalised: bool = False, replicate_init_bug: bool = False) -> None:
        super().__init__()
        if variant == "paper":
            self.resnet = resnet50_trunk(backbone_weights, output_stride=16)
            low_ch, high_ch = 256, 2048
            self.grid: tuple[int, int] | None = (5, 8)
        elif variant == "lite":
            self.lite0 = lite0_features(out_indices=(1, 4), output_stride=16)
            low_ch, high_ch = 24, 320
            self.grid = (3, 3)
        else:
            raise ValueError(f"variant must be 'lite' or 'paper', got {variant!r}")
        self.gray_on_normalised = gray_on_normalised
        self.info = MODELS["nemg", variant]
        self.register_buffer("mean", torch.tensor(self.info.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(self.info.std).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("bt601", torch.tensor(BT601).view(1, 3, 1, 1), persistent=False)
        self.downsample_filter, self.upsample_filter = Downsample(), Upsample()
        self.res_out = nn.Sequential(nn.Conv2d(high_ch, 1024, 1), nn.LeakyReLU(0.01), nn.Conv2d(1024, 512, 1),
                                     nn.LeakyReLU(0.01), nn.Conv2d(512, 64, 1), nn.LeakyReLU(0.01))
        self.predict_net = PredictNet(low_ch + 1, replicate_init_bug)
        self.regression = nn.Sequential(nn.Conv2d(2, 1, 1), nn.LeakyReLU(0.01))
        for head in (self.res_out, self.predict_net, self.regression):
            for m in head.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight)

    def _trunk(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        taps = (self.resnet if hasattr(self, "resnet") else self.lite0)(x)
        return taps[0], taps[-1]

    def crops(self, frames: torch.Tensor) -> tuple[torch.Tensor, int]:
        if self.grid is None:
            return (frames - self.mean) / self.std, 1
        rows, cols = self.grid
        return (grid_crops(frames, CROP, rows, cols) - self.mean) / self.std, rows * cols

    def gray(self, x: torch.Tensor) -> torch.Tensor:
        """BT.601 gray of a normalised batch: of its [0,1] RGB by default, of the normalised tensor if code-faithful."""
        rgb = x if self.gray_on_normalised else x * self.std + self.mean
        return (rgb * self.bt601).sum(dim=1, keepdim=True)

    def high_frequency(self, x: torch.Tensor) -> torch.Tensor:
        """Hf = G4 − U(U(D(D(G4)))), G4 = D(D(gray)): Laplacian-pyramid detail at stride 4.

        Always float32: a difference of two near-equal low-passes keeps almost no bits in bf16/fp16.
        """
        d, u = self.downsample_filter, self.upsample_filter
        with _full_precision(x):
            g4 = d(d(self.gray(x.float())))
            return g4 - u(u(d(d(g4))))

    def error_map_target(self, x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        """E4 = D(D(E)), E the normalised log-PSNR fidelity map (1 = identical), in float32."""
        with _full_precision(x):
            diff = 255.0 * (self.gray(ref.float()) - self.gray(x.float()))
            e = 1.0 - torch.log(diff.square() + 1.0) / (2 * math.log(255.0))
            return self.downsample_filter(self.downsample_filter(e))

    def maps(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Score per crop plus the diagnostic maps (M_mse, M_ssim at stride 4; sensitivity at stride 8)."""
        h, w = x.shape[-2:]
        pad_h, pad_w = -h % 16, -w % 16
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h), mode="reflect")
        x1, x4 = self._trunk(x)
        low = torch.cat([x1, self.high_frequency(x).to(x1.dtype)], dim=1)
        if x1.is_contiguous(memory_format=torch.channels_last):  # the 1-channel Hf made it NCHW, and so the whole head
            low = low.contiguous(memory_format=torch.channels_last)
        hl = self.upsample_filter(self.res_out(x4))
        out = self.predict_net(low, hl)
        masked = out["sensitivity"] * torch.cat([self.downsample_filter(out["m_ssim"]), self.downsample_filter(out["m_mse"])], 1)
        masked = masked[..., :math.ceil(h / 8), :math.ceil(w / 8)][..., 4:-4, 4:-4]
        out["score"] = self.regression(masked).mean(dim=(1, 2, 3))
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.maps(x)["score"]

    def forward_train(self, x: torch.Tensor, ref: torch.Tensor) -> dict[str, torch.Tensor]:
        """Maps and score of distorted crops plus the E4 target from their co-located reference crops."""
        out = self.maps(x)
        out["e4"] = self.error_map_target(x, ref)
        return out


def build(variant: str = "lite", backbone_weights: str | None = None) -> NEMG:
    return NEMG(variant, backbone_weights)
