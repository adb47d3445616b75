"""Operating points under shift: corrupted validation runs, how the points move, and a
triage threshold chosen on clean + corrupted malignant images."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import DEFAULT_MODEL, HAM_FIXTURES
from dermalens.data.loaders import load_dataset
from dermalens.evaluation.shift_points import corrupted_runs, movement, triage_under_shift
from dermalens.runtime.predictor import Predictor

MASK = np.array([True, False])


def test_pooled_threshold_is_lower_when_corruption_lowers_p_malignant():
    rng = np.random.default_rng(0)
    clean = rng.uniform(0.3, 1.0, 100)
    runs = {
        "blur s3": {
            "probs": np.c_[clean * 0.3, 1 - clean * 0.3],
            "labels": np.zeros(100, int),
            "not_skin": np.r_[np.ones(10, bool), np.zeros(90, bool)],
        }
    }
    threshold, report = triage_under_shift(clean, np.ones(100, bool), runs, MASK, 0.95)
    assert threshold < report["clean_only_threshold"]
    assert report["pooled_malignant_images"] == 190  # the 10 turned away are left out
    pooled = np.r_[clean, clean[10:] * 0.3]
    assert (pooled >= threshold).mean() >= 0.95


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    return Predictor(DEFAULT_MODEL, threads=1)


def test_corrupted_runs_and_movement_on_real_images(predictor):
    table = load_dataset(HAM_FIXTURES).table
    runs = corrupted_runs(predictor, table, ("brightness", "gaussian_blur"), (1, 5))
    assert sorted(runs) == [
        "brightness s1",
        "brightness s5",
        "gaussian_blur s1",
        "gaussian_blur s5",
    ]
    assert runs["brightness s1"]["probs"].shape == (7, 7)
    rows = movement(predictor, runs, 0.95)
    assert {r["condition"] for r in rows} == set(runs)
    for row in rows:
        assert 0 <= row["uncertain"] <= 1 and 0 <= row["ece"] <= 1
        assert row["sensitivity_at_current"] is not None  # akiec, bcc, mel are malignant
