"""Ensemble bundles: several calibrated members served as one bundle (dermalens.ensemble)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from conftest import make_tiny_bundle
from dermalens.bundle import BundleError, load_bundle
from dermalens.cli import main
from dermalens.evaluation.calibrate import calibrate_bundle
from dermalens.export.to_onnx import export_onnx
from dermalens.runtime.ensemble import build_ensemble
from dermalens.runtime.folder import predict_folder
from dermalens.runtime.predictor import Predictor
from dermalens.runtime.selection import make_engine
from test_calibrate import write_split


def _set(bundle_dir, **fields):
    path = bundle_dir / "bundle.json"
    data = json.loads(path.read_text())
    data.update(fields)
    path.write_text(json.dumps(data))


@pytest.fixture(scope="module")
def members(tmp_path_factory):
    """Two tiny bundles with different weights and different (made-up) calibrations."""
    root = tmp_path_factory.mktemp("members")
    a = make_tiny_bundle(root / "a", seed=0)
    b = make_tiny_bundle(root / "b", seed=1)
    _set(a, temperature=2.0, class_bias=[0.5, 0, 0, -0.5, 0, 1.0, 0], decision_bias=[0.3] + [0] * 6)
    _set(b, temperature=0.7, class_bias=[0] * 6 + [0.8], decision_bias=[0] * 5 + [-0.4, 0])
    return a, b


@pytest.fixture(scope="module")
def ensemble(members, tmp_path_factory):
    return build_ensemble(list(members), tmp_path_factory.mktemp("ens") / "pair")


def test_probabilities_are_the_mean_of_the_members_calibrated_ones(
    members, ensemble, fixture_images
):
    singles = [Predictor(m) for m in members]
    both = Predictor(ensemble.path)
    assert ensemble.is_ensemble and both.engine.name.startswith("ensemble(")
    decision = np.mean([s.calibration.decision_bias for s in singles], axis=0)
    assert np.allclose(both.calibration.decision_bias, decision)
    for tta in (False, True):
        for image in fixture_images[:3]:
            x = both.prepare(image)[None]
            expected = np.mean([s.probabilities(x, tta=tta) for s in singles], axis=0)[0]
            result = both.predict(image, top_k=7, tta=tta)
            assert np.allclose(result.probabilities, expected, atol=1e-5)
            answer = int(np.argmax(np.log(expected) + decision))
            assert result.label == ensemble.classes[answer]
    # the two members disagree on some image, so the test says something
    labels = {tuple(s.predict(i).label for s in singles) for i in fixture_images}
    assert any(a != b for a, b in labels)


def test_folder_prediction_and_heatmap_work_on_an_ensemble(ensemble, fixture_images):
    predictor = Predictor(ensemble.path)
    one = [predictor.predict(i).probabilities for i in fixture_images]
    folder = [
        item.prediction.probabilities
        for item in predict_folder(predictor, fixture_images, batch_size=4, progress=False)
    ]
    assert np.allclose(one, folder, atol=1e-5)
    heatmap = predictor.predict(fixture_images[0], explain=True).heatmap
    assert heatmap.shape == (64, 80) and heatmap.min() >= 0 and heatmap.max() <= 1


def test_members_are_copied_and_checked_when_loaded(ensemble, tmp_path):
    copy = tmp_path / "moved"
    shutil.copytree(ensemble.path, copy)  # the folder moves as one piece
    assert load_bundle(copy).version == ensemble.version
    member = copy / load_bundle(copy).info["members"][1]
    onnx = member / "model.onnx"
    onnx.write_bytes(onnx.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(BundleError, match="content hash does not match"):
        load_bundle(copy)
    shutil.rmtree(member)
    with pytest.raises(BundleError, match="is missing"):
        load_bundle(copy)
    _set(copy, members=["../elsewhere"])
    with pytest.raises(BundleError, match="outside the bundle"):
        load_bundle(copy)


def test_members_that_cannot_be_averaged_are_refused(members, tmp_path):
    a, b = members
    other = tmp_path / "other"
    shutil.copytree(b, other)
    with pytest.raises(BundleError, match="at least 2 member bundles"):
        build_ensemble([a], tmp_path / "x")
    _set(other, train_config={"split_seed": 5})
    with pytest.raises(BundleError, match="has seen the test lesions"):
        build_ensemble([a, other], tmp_path / "x")
    data = json.loads((other / "bundle.json").read_text())
    data["preprocessing"]["height"] = 96
    _set(
        other,
        preprocessing=data["preprocessing"],
        train_config=data["train_config"] | {"split_seed": 0},
    )
    with pytest.raises(BundleError, match="preprocessing .* differs"):
        build_ensemble([a, other], tmp_path / "x")
    assert not (tmp_path / "x").exists()  # nothing half-written


def test_members_from_run_folders_are_matched_by_their_split_tables(members, tmp_path):
    split = "image_id,label,group,split\nA,nv,L1,train\nB,mel,L2,test\n"
    reordered = "image_id,label,group,split\nB,mel,L2,test\nA,nv,L1,train\n"
    for run, text in (("r1", split), ("r2", reordered), ("r3", split.replace("test", "val"))):
        shutil.copytree(members[0], tmp_path / run / "bundle")
        (tmp_path / run / "split.csv").write_text(text)
    _set(tmp_path / "r2" / "bundle", train_config={"split_seed": 7})  # the table decides
    runs = [tmp_path / r / "bundle" for r in ("r1", "r2", "r3")]
    assert build_ensemble(runs[:2], tmp_path / "same").is_ensemble
    with pytest.raises(BundleError, match="trained on split"):
        build_ensemble([runs[0], runs[2]], tmp_path / "other")


def test_a_failed_build_leaves_an_existing_ensemble_alone(members, ensemble, tmp_path):
    target = tmp_path / "pair"
    shutil.copytree(ensemble.path, target)
    before = (target / "bundle.json").read_bytes()
    with pytest.raises(BundleError, match="at least 2"):
        build_ensemble([members[0]], target)
    assert (target / "bundle.json").read_bytes() == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".pair.")]


def test_an_ensemble_serves_fp32_only_and_has_no_weights_to_export(ensemble):
    with pytest.raises(BundleError, match="fp32 only"):
        make_engine(ensemble, precision="int8")
    assert make_engine(ensemble, precision="auto").name.startswith("ensemble(")
    with pytest.raises(BundleError, match="export each member"):
        export_onnx(ensemble.path)


def test_calibrating_an_ensemble_fits_thresholds_not_probabilities(ensemble, tiny_ham, tmp_path):
    target = tmp_path / "pair"
    shutil.copytree(ensemble.path, target)
    split = write_split(tiny_ham, tmp_path / "split.csv")
    summary = calibrate_bundle(target, tiny_ham, split, out_dir=tmp_path / "cal", progress=False)
    saved = load_bundle(target)
    assert saved.temperature == 1.0 and not any(saved.class_bias)
    assert saved.decision_bias == ensemble.decision_bias  # the members' ranking, kept
    assert summary["calibration"]["ece_after"] == summary["calibration"]["ece_before"]
    assert set(saved.thresholds) == {"uncertain_below", "triage_malignant", "ood_above"}
    assert (target / "ood.npz").is_file()
    assert Predictor(target).ood is not None


def test_the_service_serves_an_ensemble(ensemble, fixture_images, tmp_path):
    from fastapi.testclient import TestClient

    from dermalens.serve.app import create_app
    from dermalens.serve.settings import Settings

    settings = Settings(model=ensemble.path, data_dir=tmp_path / "serve")
    with TestClient(create_app(settings)) as client:
        card = client.get("/api/v1/model").json()
        assert card["version"] == ensemble.version and "2 networks" in card["card"]["ensemble"]
        files = {"file": ("a.jpg", fixture_images[0].read_bytes(), "image/jpeg")}
        body = client.post("/api/v1/predictions", files=files).json()
    expected = Predictor(ensemble.path).predict(fixture_images[0]).probabilities
    assert np.allclose(list(body["probabilities"].values()), expected, atol=1e-5)
    assert body["model"]["version"] == ensemble.version and body["heatmap"] is not None


def test_cli_builds_and_refuses_with_a_clear_message(members, tmp_path, capsys):
    out = tmp_path / "cli-pair"
    assert main(["ensemble", str(members[0]), str(members[1]), "--out", str(out)]) == 0
    assert "not calibrated yet" in capsys.readouterr().out
    assert load_bundle(out).is_ensemble
    assert main(["ensemble", str(members[0]), "--out", str(tmp_path / "one")]) == 2
    assert "at least 2 member bundles" in capsys.readouterr().err
    other = tmp_path / "other-split"
    shutil.copytree(members[1], other)
    _set(other, train_config={"split_seed": 3})
    two = [str(members[0]), str(other), "--out", str(tmp_path / "two")]
    assert main(["ensemble", *two]) == 2
    assert "has seen the test lesions" in capsys.readouterr().err
    assert main(["ensemble", *two, "--allow-other-splits"]) == 0
    code = main(["ensemble", str(members[0]), str(members[1]), "--out", str(out), "--data", "x"])
    assert code == 2 and "--data and --split-file together" in capsys.readouterr().err
