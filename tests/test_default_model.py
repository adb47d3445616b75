"""Golden tests of the committed default model, through its own preprocessing."""

import json

import numpy as np
import pytest

from conftest import FIXTURES
from dermalens.bundle import default_model_path, load_bundle
from dermalens.cli import main
from dermalens.runtime.predictor import Predictor

GOLDEN = json.loads((FIXTURES / "golden_default.json").read_text())


@pytest.fixture(scope="module")
def bundle():
    return load_bundle(default_model_path())


def test_bundle_is_complete_and_self_describing(bundle):
    assert bundle.classes == GOLDEN["classes"]
    assert bundle.version == GOLDEN["model_version"]
    assert bundle.has("model.onnx") and bundle.has("model.pt")
    assert bundle.preprocessing.height == 150 and bundle.preprocessing.width == 200
    assert bundle.temperature > 0
    assert 0 < bundle.thresholds["triage_malignant"] < 1
    test = bundle.metrics["test"]
    assert test["n"] > 1000  # evaluated on the held-out part of the lesion-grouped split
    assert bundle.info["onnx_check"]["top1_agreement"] == 1.0
    assert "not a diagnosis" in bundle.info["card"]["intended_use"].lower()


@pytest.mark.parametrize("name", sorted(GOLDEN["probabilities"]))
def test_onnx_probabilities_match_the_golden_record(bundle, name):
    result = Predictor(bundle, backend="onnx").predict(FIXTURES / "ham" / name)
    np.testing.assert_allclose(result.probabilities, GOLDEN["probabilities"][name], atol=1e-4)


def test_shipped_onnx_has_its_pads_frozen(bundle):
    """No per-call shape arithmetic: every Pad amount is a constant of the 200x150 input."""
    import onnx

    graph = onnx.load(str(bundle.file("model.onnx")), load_external_data=False).graph
    constants = {t.name for t in graph.initializer}
    assert not [n.name for n in graph.node if n.op_type == "Shape"]
    assert all(n.input[1] in constants for n in graph.node if n.op_type == "Pad")


def test_pytorch_weights_agree_with_onnx(bundle, fixture_images):
    onnx_p = Predictor(bundle, backend="onnx")
    torch_p = Predictor(bundle, backend="torch")  # float16 weights, computed in float32
    for path in fixture_images:
        a, b = onnx_p.predict(path).probabilities, torch_p.predict(path).probabilities
        assert np.abs(np.subtract(a, b)).max() < 0.01
        assert np.argmax(a) == np.argmax(b)


def test_readme_main_command(capsys):
    assert main(["predict", str(FIXTURES / "ham" / "ISIC_0024310.jpg")]) == 0
    out = capsys.readouterr().out
    assert "triage:" in out and "not a diagnosis" in out


def test_not_skin_answers_for_blank_noise_photos_and_documents(bundle, fixture_images):
    from PIL import Image

    skimage_data = pytest.importorskip("skimage.data")
    predictor = Predictor(bundle)
    rng = np.random.default_rng(0)
    others = {
        "blank": Image.new("RGB", (200, 150), (128, 128, 128)),
        "noise": Image.fromarray(rng.integers(0, 256, (150, 200, 3), dtype=np.uint8)),
    }
    for name in ("astronaut", "coffee", "chelsea", "rocket", "camera", "page", "text", "coins"):
        others[name] = Image.fromarray(getattr(skimage_data, name)())
    for name, image in others.items():
        result = predictor.predict(image)
        assert result.not_skin and result.triage == "not_skin", name
    rejected = [p.name for p in fixture_images if predictor.predict(p).not_skin]
    assert len(rejected) <= 1, rejected  # ~1% false rejects on skin images


def test_folder_prediction_runs_the_same_ood_check_as_predict(bundle, fixture_images, tmp_path):
    """Folder decoders compute the pixel statistics themselves; the answers must not move."""
    from PIL import Image

    from dermalens.runtime.folder import predict_folder

    rng = np.random.default_rng(1)
    Image.new("RGB", (200, 150), (90, 60, 50)).save(tmp_path / "blank.png")
    noise = rng.integers(0, 256, (150, 200, 3), dtype=np.uint8)
    Image.fromarray(noise).save(tmp_path / "noise.png")
    files = [*fixture_images, tmp_path / "blank.png", tmp_path / "noise.png"]
    predictor = Predictor(bundle)
    items = list(predict_folder(predictor, files, batch_size=4, progress=False))
    assert [i.path for i in items] == files
    for item in items:
        alone = predictor.predict(item.path)
        assert item.prediction.ood_score == pytest.approx(alone.ood_score, rel=1e-4), item.path
        assert item.prediction.not_skin_reason == alone.not_skin_reason, item.path
        assert item.prediction.triage == alone.triage, item.path
    assert "flat frame" in items[-2].prediction.not_skin_reason
    assert "pixel noise" in items[-1].prediction.not_skin_reason


def test_predict_reports_a_bad_file_and_exits_nonzero(capsys):
    assert main(["predict", str(FIXTURES / "ham" / "ATTRIBUTION.md")]) == 1
    assert "ATTRIBUTION.md: not an image (unrecognised format)" in capsys.readouterr().err


def test_predict_says_why_an_image_is_not_skin_and_what_to_do(capsys, tmp_path):
    from PIL import Image

    blank = tmp_path / "blank.png"
    Image.new("RGB", (200, 150), (128, 128, 128)).save(blank)
    assert main(["predict", str(blank), str(FIXTURES / "ham" / "ISIC_0024310.jpg")]) == 0
    out = capsys.readouterr().out
    assert "triage: not_skin (no model answered)" in out  # the scope gate's answer
    assert "a flat frame (pixel std 0.0 < 3)" in out
    assert "doctor or dermatologist" in out
    assert out.count("no model answered") == 1  # the lesion image is answered
    assert "Answered by ham-lite0" in out
