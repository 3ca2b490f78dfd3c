"""The Lite0 backbone is really ImageNet-trained; feature taps and the ResNet-50 trunk have the documented shapes."""
import pytest
import torch
import torch.nn.functional as F
import torchvision
from skimage import data

from models.backbones.lite0 import FEATURE_CHANNELS, IMAGENET_MEAN, IMAGENET_STD, lite0_classifier, lite0_features
from models.backbones.resnet import resnet50_trunk
from models.weights import WeightsError


def _imagenet_input(rgb_uint8) -> torch.Tensor:
    """Resize short side to 256, centre-crop 224, ImageNet-normalise (the standard evaluation transform)."""
    x = torch.from_numpy(rgb_uint8).permute(2, 0, 1)[None].float() / 255
    h, w = x.shape[-2:]
    s = 256 / min(h, w)
    x = F.interpolate(x, size=(round(h * s), round(w * s)), mode="bilinear", antialias=True, align_corners=False)
    top, left = (x.shape[-2] - 224) // 2, (x.shape[-1] - 224) // 2
    x = x[..., top:top + 224, left:left + 224]
    return (x - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)


def test_lite0_is_imagenet_trained():
    model = lite0_classifier()
    with torch.inference_mode():
        logits = model(torch.cat([_imagenet_input(data.chelsea()), _imagenet_input(data.coffee())]))
    cat_top5, coffee_top5 = logits.topk(5).indices.tolist()
    assert set(cat_top5) & {281, 282, 283, 284, 285}, cat_top5
    assert {967, 968} & set(coffee_top5), coffee_top5


@pytest.mark.parametrize("output_stride", [32, 16])
def test_lite0_feature_taps(output_stride):
    feats = lite0_features(output_stride=output_stride).eval()
    with torch.inference_mode():
        taps = feats(torch.rand(1, 3, 64, 64))
    strides = [2, 4, 8, 16, 32 if output_stride == 32 else 16]
    assert [t.shape[1] for t in taps] == list(FEATURE_CHANNELS)
    assert [t.shape[-1] for t in taps] == [64 // s for s in strides]


def test_lite0_features_share_classifier_weights():
    full, feats = lite0_classifier(), lite0_features()
    assert torch.equal(full.blocks[6][0].conv_pwl.weight, feats.blocks[6][0].conv_pwl.weight)


def test_resnet_trunk_output_stride_and_local_weights(tmp_path):
    ref = torchvision.models.resnet50()
    path = tmp_path / "resnet50.pth"
    torch.save(ref.state_dict(), path)
    trunk = resnet50_trunk(str(path), output_stride=16).eval()
    assert torch.equal(trunk.layer4[2].conv3.weight, ref.layer4[2].conv3.weight)
    with torch.inference_mode():
        taps = trunk(torch.rand(1, 3, 64, 64))
    assert [tuple(t.shape[1:]) for t in taps] == [(256, 16, 16), (512, 8, 8), (1024, 8, 8), (2048, 4, 4)]
    with torch.inference_mode():
        taps32 = resnet50_trunk(output_stride=32)(torch.rand(1, 3, 64, 64))
    assert [t.shape[-1] for t in taps32] == [16, 8, 4, 2]


def test_resnet_trunk_rejects_partial_file(tmp_path):
    sd = torchvision.models.resnet50().state_dict()
    del sd["layer2.0.conv1.weight"]
    path = tmp_path / "partial.pth"
    torch.save({"state_dict": sd}, path)
    with pytest.raises(WeightsError, match=r"partial\.pth.*missing: layer2\.0\.conv1\.weight"):
        resnet50_trunk(str(path))
