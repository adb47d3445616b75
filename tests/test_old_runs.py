"""Runs and bundles written by the code from before the package-layout move (commit fe1522d)
still resume, evaluate, soup and load with today's code.

The fixture, tests/fixtures/old_run, was written by the old code (see its make_old_run.py):
a 2-epoch test_efficientnet run with snapshots on a 28-image HAM10000-format folder, its
bundle calibrated and ONNX-exported, and the old code's probabilities for one image. Its
paths are relative (data=data), so each test copies it and works from inside the copy, as a
user who moved the folder would.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import FIXTURES, HAM_FIXTURES
from dermalens.bundle import load_bundle
from dermalens.cli import main
from dermalens.runtime.predictor import Predictor

pytestmark = pytest.mark.slow

OLD = FIXTURES / "old_run"
EXPECTED = json.loads((OLD / "expected.json").read_text())
CLASSES = ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]


@pytest.fixture
def old(tmp_path, monkeypatch):
    """A copy of the old fixture; the working directory is its root (data/, run/)."""
    root = tmp_path / "moved"
    shutil.copytree(OLD, root, ignore=shutil.ignore_patterns("*.py", "*.md"))
    monkeypatch.chdir(root)
    return root


def _weights(path):
    return torch.load(path, map_location="cpu", weights_only=False)["model"]


@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_old_bundle_loads_and_predicts_as_before(old, backend):
    bundle = load_bundle(old / "run" / "bundle")  # verifies the recorded weight hashes
    assert bundle.classes == CLASSES
    assert bundle.info["onnx_check"]["top1_agreement"] == 1.0
    predictor = Predictor(bundle, backend=backend)
    assert predictor.ood is not None  # the old ood.npz is read
    prediction = predictor.predict(HAM_FIXTURES / EXPECTED["image"])
    assert prediction.classes == CLASSES
    np.testing.assert_allclose(
        prediction.probabilities, EXPECTED["probabilities"][backend], rtol=0, atol=1e-5
    )


def test_old_run_resumes_from_its_last_checkpoint(old):
    before = pd.read_csv(old / "run" / "log.csv")
    assert main(["train", "resume=run", "epochs=3", "progress=False"]) == 0
    log = pd.read_csv(old / "run" / "log.csv")
    assert list(log["epoch"]) == [1, 2, 3]
    pd.testing.assert_frame_equal(log.iloc[:2], before)  # the old epochs, carried over
    assert (old / "run" / "snapshots" / "e03.pt").is_file()
    state = torch.load(old / "run" / "last.pt", map_location="cpu", weights_only=False)
    assert state["epoch"] == 2 and state["config"]["model"] == "test_efficientnet"
    bundle = load_bundle(old / "run" / "bundle")
    assert bundle.classes == CLASSES and len(bundle.info["history"]) == 3


def test_old_bundle_evaluates_on_its_data_as_before(old, tmp_path):
    out = tmp_path / "report"
    args = ["evaluate", "run/bundle", "data", "--split", "test", "--split-file", "run/split.csv"]
    assert main([*args, "--out", str(out), "--quiet"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n"] == 7 and set(metrics["per_class"]) == set(CLASSES)
    # the same test images and probabilities as the old code's own test record
    new = pd.read_csv(out / "predictions.csv").set_index("image_id").sort_index()
    then = pd.read_csv(old / "run" / "eval-test" / "predictions.csv")
    then = then.set_index("image_id").sort_index()
    assert list(new.index) == list(then.index)
    columns = [f"p_{c}" for c in CLASSES]
    np.testing.assert_allclose(new[columns], then[columns], rtol=0, atol=1e-5)


def test_old_snapshots_make_a_soup(old, tmp_path):
    out = tmp_path / "soup12"
    assert main(["soup", "run", "--out", str(out), "--epochs", "1", "2", "--no-calibrate"]) == 0
    bundle = load_bundle(out)
    assert bundle.info["soup"]["epochs"] == [1, 2]
    shipped = torch.load(out / "model.pt", weights_only=True)
    first = _weights(old / "run" / "snapshots" / "e01.pt")
    second = _weights(old / "run" / "snapshots" / "e02.pt")
    for key, value in shipped.items():
        if value.is_floating_point():
            assert torch.allclose(value, (first[key] + second[key]) / 2, atol=1e-6), key
    prediction = Predictor(out, backend="torch").predict(HAM_FIXTURES / EXPECTED["image"])
    assert prediction.top[0].code in CLASSES
