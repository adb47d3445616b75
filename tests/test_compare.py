"""The paired, lesion-grouped bootstrap that compares two models on the same test images."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dermalens.evaluation.metrics import (
    PAIRED_KEYS,
    _headline,
    classification_metrics,
    paired_bootstrap,
)

ROOT = Path(__file__).resolve().parents[1]
CLASSES = ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]


def fake_model(labels: np.ndarray, skill: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities that put `skill` extra mass on the true class, plus noise."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(len(labels), len(CLASSES)))
    logits[np.arange(len(labels)), labels] += skill
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return probs, probs.argmax(axis=1)


@pytest.fixture
def labels() -> np.ndarray:
    # imbalanced like HAM10000, one class absent from the test part
    counts = [20, 30, 60, 0, 50, 300, 10]
    return np.repeat(np.arange(len(CLASSES)), counts)


@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")
def test_fast_metrics_match_the_reported_ones(labels):
    probs, preds = fake_model(labels, 1.5, seed=1)
    preds[::7] = 3  # answers in the absent class too
    fast = _headline(labels, probs, preds)
    full = classification_metrics(labels, probs, CLASSES, preds)
    assert fast == pytest.approx([full[k] for k in PAIRED_KEYS], abs=1e-12)


def test_a_model_against_itself_differs_by_exactly_zero(labels):
    model = fake_model(labels, 1.5, seed=1)
    result = paired_bootstrap(labels, model, model, resamples=50)
    for key in PAIRED_KEYS:
        assert result[key]["diff"] == 0.0
        assert result[key]["lo"] == 0.0 and result[key]["hi"] == 0.0
        assert result[key]["p_b_better"] == 0.0


def test_a_much_better_model_wins_on_every_resample(labels):
    weak, strong = fake_model(labels, 0.5, seed=1), fake_model(labels, 4.0, seed=2)
    result = paired_bootstrap(labels, weak, strong, resamples=200)
    for key in ("accuracy", "balanced_accuracy", "macro_f1", "macro_auc"):
        assert result[key]["lo"] > 0, key
        assert result[key]["p_b_better"] == 1.0, key
    assert result["balanced_accuracy"]["a"] < result["balanced_accuracy"]["b"]


def test_grouping_widens_the_interval_when_images_of_a_lesion_agree(labels):
    # Every lesion has 10 images, and each model is right or wrong on a whole lesion at
    # once: image resampling pretends there are 10x more independent cases than there are.
    rng = np.random.default_rng(3)
    groups = np.arange(len(labels)) // 10
    labels = labels[::10].repeat(10)
    probs_a = np.full((len(labels), len(CLASSES)), 0.1 / 6)
    probs_b = probs_a.copy()
    right_a = rng.random(groups.max() + 1)[groups] < 0.7
    right_b = rng.random(groups.max() + 1)[groups] < 0.7
    wrong = (labels + 1) % len(CLASSES)
    for probs, right in ((probs_a, right_a), (probs_b, right_b)):
        probs[np.arange(len(labels)), np.where(right, labels, wrong)] = 0.9
    a = (probs_a, probs_a.argmax(axis=1))
    b = (probs_b, probs_b.argmax(axis=1))
    by_image = paired_bootstrap(labels, a, b, resamples=300)
    by_lesion = paired_bootstrap(labels, a, b, groups=groups, resamples=300)
    width_image = by_image["accuracy"]["hi"] - by_image["accuracy"]["lo"]
    width_lesion = by_lesion["accuracy"]["hi"] - by_lesion["accuracy"]["lo"]
    assert width_lesion > 2 * width_image
    assert by_image["accuracy"]["diff"] == by_lesion["accuracy"]["diff"]


def test_bad_input_is_refused_with_the_reason(labels):
    model = fake_model(labels, 1.0, seed=0)
    with pytest.raises(ValueError, match="model b has 10 probability rows"):
        paired_bootstrap(labels, model, (model[0][:10], model[1][:10]))
    with pytest.raises(ValueError, match="resamples must be >= 1"):
        paired_bootstrap(labels, model, model, resamples=0)
    with pytest.raises(ValueError, match="no images"):
        paired_bootstrap(labels[:0], (model[0][:0], model[1][:0]), (model[0][:0], model[1][:0]))


def write_predictions(path: Path, labels, probs, preds, ids) -> Path:
    table = pd.DataFrame({"image_id": ids, "label": [CLASSES[i] for i in labels]})
    table["predicted"] = [CLASSES[i] for i in preds]
    for i, c in enumerate(CLASSES):
        table[f"p_{c}"] = probs[:, i]
    table["p_malignant"] = probs[:, [0, 1, 4]].sum(axis=1)
    table.to_csv(path, index=False)
    return path


def run_script(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "compare.py"), *map(str, args)],
        capture_output=True,
        text=True,
    )


def test_the_script_prints_the_table_and_refuses_mismatched_files(tmp_path, labels):
    ids = [f"IMG_{i:04d}" for i in range(len(labels))]
    weak, strong = fake_model(labels, 0.5, seed=1), fake_model(labels, 4.0, seed=2)
    a = write_predictions(tmp_path / "a.csv", labels, *weak, ids)
    b = write_predictions(tmp_path / "b.csv", labels, *strong, ids)
    done = run_script(a, b, "--resamples", "100")
    assert done.returncode == 0, done.stderr
    assert f"{len(labels)} shared images; 100 resamples of single images" in done.stdout
    row = next(line for line in done.stdout.splitlines() if line.startswith("| balanced_accuracy"))
    assert row.rstrip().endswith("| 1.00 |")

    relabelled = pd.read_csv(b)
    relabelled.loc[0, "label"] = "vasc" if relabelled.loc[0, "label"] != "vasc" else "nv"
    relabelled.to_csv(tmp_path / "c.csv", index=False)
    done = run_script(a, tmp_path / "c.csv")
    assert done.returncode != 0
    assert "1 shared image(s) have different labels" in done.stderr

    other = write_predictions(tmp_path / "d.csv", labels, *strong, [f"X{i}" for i in ids])
    done = run_script(a, other)
    assert "share no image_id" in done.stderr

    pd.read_csv(a).drop(columns="predicted").to_csv(tmp_path / "e.csv", index=False)
    done = run_script(tmp_path / "e.csv", b)
    assert "missing column(s) predicted" in done.stderr
