"""`dermalens evaluate BUNDLE FOLDER` on an external folder: triage at the shipped point with
turned-away lesions counted as missed, one-class sets said plainly, the comparison with the
bundle's test record, the shift share; and subgroup results with bootstrap intervals."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from conftest import DEFAULT_MODEL, HAM_FIXTURES
from dermalens.cli import main
from dermalens.evaluation.external import compare, external_report, triage_at_shipped_point
from dermalens.evaluation.subgroups import age_band, markdown, subgroup_metrics

CLASSES = ["mel", "nv"]
MALIGNANT = [True, False]


def test_a_turned_away_melanoma_is_missed_and_an_uncertain_one_deferred():
    p_mal = np.array([0.9, 0.9, 0.9, 0.01, 0.01, 0.5])
    is_mal = np.array([True, True, True, True, False, False])
    uncertain = np.array([False, True, False, False, False, False])
    not_skin = np.array([False, False, True, False, False, False])
    t = triage_at_shipped_point(p_mal, is_mal, uncertain, not_skin, threshold=0.1)
    assert t["sensitivity"] == 0.5  # flagged and not turned away: 2 of 4
    assert t["malignant_turned_away"] == 0.25 and t["malignant_deferred"] == 0.25
    assert t["specificity"] == 0.5 and t["malignant_auc"] is not None


def test_one_class_set_gives_sensitivity_and_says_what_it_cannot_measure():
    labels = np.zeros(5, int)
    probs = np.tile([0.3, 0.7], (5, 1))
    metrics = {"accuracy": 0.0, "balanced_accuracy": 0.0, "macro_auc": None, "ece": 0.4}
    none = np.zeros(5, bool)
    report = external_report(
        metrics, labels, probs, CLASSES, MALIGNANT, none, none, 0.5, None, None
    )
    assert report["one_class"] and report["headline"]["sensitivity"] == 0.0
    assert report["headline"]["specificity"] is None
    assert report["headline"]["malignant_auc"] is None
    assert any("every image here is mel" in n for n in report["notes"])


def test_comparison_with_the_bundle_test_record():
    test = {"accuracy": 0.8, "ece": 0.03, "decision": {"triage": {"sensitivity": 0.9}}}
    out = compare({"accuracy": 0.6, "ece": 0.1, "sensitivity": 0.7}, test)
    assert out["accuracy"]["difference"] == pytest.approx(-0.2)
    assert out["sensitivity"]["bundle_test"] == 0.9 and "specificity" not in out


def test_subgroups_have_counts_intervals_and_small_marks():
    rng = np.random.default_rng(0)
    n = 80
    table = pd.DataFrame(
        {
            "image_id": [f"i{i}" for i in range(n)],
            "lesion_id": [f"l{i // 2}" for i in range(n)],
            "age": np.r_[rng.uniform(20, 40, 60), np.full(20, np.nan)],
            "sex": ["female", "male"] * 40,
            "site": [None] * n,
            "fitspatrick": [2.0, 3.0, np.nan, 3.0] * 20,
        }
    )
    labels = rng.integers(0, 2, n)
    probs = np.c_[labels * 0.6 + 0.2, 1 - (labels * 0.6 + 0.2)]
    rows = subgroup_metrics(table, labels, probs, 1 - labels, MALIGNANT, 0.5, reps=50)
    fields = {r["field"] for r in rows}
    assert fields == {"age", "sex", "fitzpatrick"}  # site records nothing here
    by = {(r["field"], r["group"]): r for r in rows}
    assert by[("age", "unknown")]["n"] == 20 and by[("age", "unknown")]["small"]
    assert by[("fitzpatrick", "III")]["n"] == 40
    female = by[("sex", "female")]
    low, high = female["balanced_accuracy_ci"]
    assert low <= female["balanced_accuracy"] <= high
    assert "| sex | female |" in markdown(rows)
    assert age_band(75) == "75+" and age_band(float("nan")) == "unknown"


def test_cli_evaluates_a_one_class_folder_without_a_split(tmp_path, capsys):
    folder = tmp_path / "clinic" / "mel"
    folder.mkdir(parents=True)
    for name in ("ISIC_0024306.jpg", "ISIC_0024310.jpg", "ISIC_0024312.jpg"):
        shutil.copy(HAM_FIXTURES / name, folder / name)
    out = tmp_path / "report"
    code = main(["evaluate", str(DEFAULT_MODEL), str(tmp_path / "clinic"), "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "triage at the shipped point" in printed and "every image here is mel" in printed
    assert "the bundle's own test record" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    external = metrics["external"]
    assert external["n"] == 3 and external["triage"]["specificity"] is None
    assert external["compared_with_bundle_test"]["balanced_accuracy"]["bundle_test"] > 0.5
    assert metrics["shift"]["batch"]["images"] == 3
    assert (out / "confusion.png").is_file() and (out / "reliability.png").is_file()
