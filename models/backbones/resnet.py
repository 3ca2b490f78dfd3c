"""torchvision ResNet-50 trunk (no avgpool/fc) for the paper variants of NEMG and GSN.

Keys stay torchvision's (`conv1`, `bn1`, `layer1`…`layer4`), so an IMAGENET1K_V1/V2 state dict
(`resnet50-19c8e357.pth`, `resnet50-0676ba61.pth`, or timm `resnet50.tv_in1k`) loads as is; its
`fc.*` keys are dropped. Nothing is ever downloaded: weights come from a local file or the trunk
stays random-init.

`output_stride=16` is NEMG's change: stride 1 in `layer3[0].conv2` and in its downsample 1×1,
with no dilation (unlike torchvision's `replace_stride_with_dilation`). No parameter shape changes.
"""
from __future__ import annotations

import torch
from torch import nn
from torchvision.models.resnet import Bottleneck, ResNet

CHANNELS = (256, 512, 1024, 2048)  # layer1..layer4


class ResNet50Trunk(ResNet):
    """ResNet-50 returning the outputs of layer1..layer4 (strides 4/8/16/32, or 4/8/8/16 at output stride 16)."""

    def __init__(self, output_stride: int = 32) -> None:
        super().__init__(Bottleneck, [3, 4, 6, 3])
        del self.fc, self.avgpool
        if output_stride == 16:
            self.layer3[0].conv2.stride = (1, 1)
            self.layer3[0].downsample[0].stride = (1, 1)
        elif output_stride != 32:
            raise ValueError(f"output_stride must be 16 or 32, got {output_stride}")
        self.output_stride = output_stride

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        taps = []
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = layer(x)
            taps.append(x)
        return taps


def resnet50_trunk(weights: str | None = None, output_stride: int = 32) -> ResNet50Trunk:
    """ResNet-50 trunk, ImageNet weights from a local torchvision-layout file (`fc.*` ignored) or random init."""
    from models.weights import load_strict, read_state_dict

    trunk = ResNet50Trunk(output_stride)
    if weights is not None:
        sd = {k: v for k, v in read_state_dict(weights).items() if not k.startswith("fc.")}
        load_strict(trunk, sd, source=weights)
    return trunk
