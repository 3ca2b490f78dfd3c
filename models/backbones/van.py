"""Visual Attention Network (Guo et al., "Visual Attention Network", 2022), written from the paper's design.

VAN is not in timm, so it is written here. Module names follow the official checkpoint layout
(`patch_embed{i}.proj/norm`, `block{i}.{j}.…`, `norm{i}`, `head`) so that the official ImageNet
files (`ckpt['state_dict']`) load strictly with `load_van_checkpoint`.

Design, per stage i = 1…4: an overlapping patch embedding (conv k7/s4 for stage 1, k3/s2 after,
then BatchNorm) and `depths[i]` blocks; each block is two pre-BN residual branches, large-kernel
attention (LKA) and a conv MLP, each scaled by a learned per-channel layer scale (init 1e-2) and
wrapped in drop path; the stage ends with a LayerNorm over channels. LKA decomposes a 21×21
kernel into a 5×5 depthwise conv, a 7×7 depthwise conv with dilation 3 and a 1×1 conv, and uses
the result to gate its input (spatial gating).

`forward` returns the four stage outputs after each stage's LayerNorm (strides 4/8/16/32): that
is the tensor the next stage consumes, so every loaded weight is used and the taps are
scale-normalised. Use `van_b0`…`van_b3` to build one.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch
from timm.layers import DropPath, trunc_normal_
from torch import nn

from models.weights import load_strict, read_state_dict

# embed_dims, depths, mlp_ratios of the four published sizes
VAN_SIZES = {
    "b0": ([32, 64, 160, 256], [3, 3, 5, 2], [8, 8, 4, 4]),
    "b1": ([64, 128, 320, 512], [2, 2, 4, 2], [8, 8, 4, 4]),
    "b2": ([64, 128, 320, 512], [3, 3, 12, 3], [8, 8, 4, 4]),
    "b3": ([64, 128, 320, 512], [3, 5, 27, 3], [8, 8, 4, 4]),
}


class OverlapPatchEmbed(nn.Module):
    """Strided conv whose kernel overlaps its neighbours (k > stride), then BatchNorm."""

    def __init__(self, in_chans: int, embed_dim: int, patch_size: int, stride: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, patch_size, stride=stride, padding=patch_size // 2)
        self.norm = nn.BatchNorm2d(embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(x))


class LargeKernelAttention(nn.Module):
    """A 21×21 receptive field at depthwise cost: 5×5 dw → 7×7 dw dilation 3 → 1×1; the map gates the input."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.conv0 = nn.Conv2d(dim, dim, 5, padding=2, groups=dim)
        self.conv_spatial = nn.Conv2d(dim, dim, 7, padding=9, groups=dim, dilation=3)
        self.conv1 = nn.Conv2d(dim, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.conv1(self.conv_spatial(self.conv0(x)))


class SpatialAttention(nn.Module):
    """1×1 → GELU → LKA → 1×1, with its own shortcut around the whole branch."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.proj_1 = nn.Conv2d(dim, dim, 1)
        self.activation = nn.GELU()
        self.spatial_gating_unit = LargeKernelAttention(dim)
        self.proj_2 = nn.Conv2d(dim, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.proj_2(self.spatial_gating_unit(self.activation(self.proj_1(x))))


class DepthwiseConv(nn.Module):
    """3×3 depthwise conv between the MLP's two 1×1 convs (adds locality to the MLP)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dwconv(x)


class ConvMlp(nn.Module):
    def __init__(self, dim: int, hidden: int, drop: float) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(dim, hidden, 1)
        self.dwconv = DepthwiseConv(hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Conv2d(hidden, dim, 1)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.drop(self.act(self.dwconv(self.fc1(x))))
        return self.drop(self.fc2(x))


class VanBlock(nn.Module):
    def __init__(self, dim: int, mlp_ratio: float, drop: float, drop_path: float) -> None:
        super().__init__()
        self.norm1 = nn.BatchNorm2d(dim)
        self.attn = SpatialAttention(dim)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.BatchNorm2d(dim)
        self.mlp = ConvMlp(dim, int(dim * mlp_ratio), drop)
        # small layer scale lets deep stacks start close to identity
        self.layer_scale_1 = nn.Parameter(torch.full((dim,), 1e-2))
        self.layer_scale_2 = nn.Parameter(torch.full((dim,), 1e-2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.layer_scale_1[:, None, None] * self.attn(self.norm1(x)))
        return x + self.drop_path(self.layer_scale_2[:, None, None] * self.mlp(self.norm2(x)))


class VAN(nn.Module):
    """Four-stage VAN; `forward` gives the stage taps, `classify` the ImageNet logits (when built with a head)."""

    def __init__(
        self,
        embed_dims: list[int],
        depths: list[int],
        mlp_ratios: list[float],
        num_classes: int = 0,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        self.embed_dims = list(embed_dims)
        total = sum(depths)
        rates = [drop_path_rate * k / max(total - 1, 1) for k in range(total)]  # linear decay rule
        start = 0
        for i, (dim, depth, ratio) in enumerate(zip(embed_dims, depths, mlp_ratios), start=1):
            in_chans = 3 if i == 1 else embed_dims[i - 2]
            patch, stride = (7, 4) if i == 1 else (3, 2)
            setattr(self, f"patch_embed{i}", OverlapPatchEmbed(in_chans, dim, patch, stride))
            blocks = [VanBlock(dim, ratio, drop_rate, rates[start + j]) for j in range(depth)]
            setattr(self, f"block{i}", nn.ModuleList(blocks))
            setattr(self, f"norm{i}", nn.LayerNorm(dim, eps=1e-6))
            start += depth
        self.head = nn.Linear(embed_dims[-1], num_classes) if num_classes > 0 else None
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            trunc_normal_(m.weight, std=0.02)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Conv2d):
            fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
            nn.init.normal_(m.weight, 0.0, (2.0 / fan_out) ** 0.5)
            nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        taps = []
        for i in range(1, len(self.embed_dims) + 1):
            x = getattr(self, f"patch_embed{i}")(x)
            for block in getattr(self, f"block{i}"):
                x = block(x)
            # LayerNorm over channels, computed channels-last and handed back as N×C×H×W
            x = getattr(self, f"norm{i}")(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
            taps.append(x)
        return taps

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        if self.head is None:
            raise RuntimeError("this VAN was built without a classification head (num_classes=0)")
        return self.head(self.forward(x)[-1].mean(dim=(2, 3)))


def van(size: str, **kwargs) -> VAN:
    dims, depths, ratios = VAN_SIZES[size]
    return VAN(dims, depths, ratios, **kwargs)


def van_b0(**kwargs) -> VAN:
    return van("b0", **kwargs)


def van_b1(**kwargs) -> VAN:
    return van("b1", **kwargs)


def van_b2(**kwargs) -> VAN:
    return van("b2", **kwargs)


def van_b3(**kwargs) -> VAN:
    return van("b3", **kwargs)


def load_van_checkpoint(model: VAN, path: str | Path) -> None:
    """Load an official VAN file (`{'state_dict': …}` or a bare state dict) strictly from a local path.

    The classifier `head.*` is dropped when the model has no head. A file that does not fit this
    model raises `WeightsError` listing every missing, unexpected and mis-shaped key.
    """
    # timm-style training scripts may pickle their argparse.Namespace next to the weights
    with torch.serialization.safe_globals([argparse.Namespace]):
        state = read_state_dict(path)
    if model.head is None:
        state = {k: v for k, v in state.items() if not k.startswith("head.")}
    load_strict(model, state, source=path)
