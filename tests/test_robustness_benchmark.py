"""benchmarks/robustness.py: the corruption benchmark, end to end on the tiny fixture data."""

from __future__ import annotations

import importlib.util
import json

import pandas as pd
import pytest

from conftest import DEFAULT_MODEL, ROOT
from dermalens.data.loaders import load_dataset

CORRUPTIONS = ["gaussian_blur", "hair"]
SEVERITIES = [1, 3]


@pytest.fixture(scope="module")
def robustness():
    spec = importlib.util.spec_from_file_location(
        "robustness_benchmark", ROOT / "benchmarks" / "robustness.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def split_file(tiny_ham, tmp_path_factory):
    """Every tiny_ham image in the test part."""
    table = load_dataset(tiny_ham).table
    path = tmp_path_factory.mktemp("split") / "split.csv"
    pd.DataFrame({"image_id": table["image_id"], "split": "test"}).to_csv(path, index=False)
    return path


def run(robustness, model, data, split_file, out, *extra, corruptions=CORRUPTIONS) -> dict:
    args = [str(model), str(data), "--split-file", str(split_file), "--out", str(out)]
    args += ["--corruptions", *corruptions, "--severities", *map(str, SEVERITIES)]
    assert robustness.main(["--limit", "14", *args, "--quiet", *extra]) == 0
    return json.loads((out / f"robustness-{model.name}.json").read_text())


def in_unit(value) -> bool:
    return value is None or 0.0 <= value <= 1.0


@pytest.mark.parametrize("which", ["default", "tiny"])
def test_rows_summary_and_plot(robustness, tiny_ham, split_file, tiny_bundle, tmp_path, which):
    model = DEFAULT_MODEL if which == "default" else tiny_bundle
    report = run(robustness, model, tiny_ham, split_file, tmp_path)
    rows = report["rows"]
    keys = {(r["corruption"], r["severity"]) for r in rows}
    assert keys == {("clean", 0)} | {(c, s) for c in CORRUPTIONS for s in SEVERITIES}
    assert len(rows) == 1 + len(CORRUPTIONS) * len(SEVERITIES)
    assert report["n_images"] == 14 and all(r["n"] == 14 for r in rows)
    # --limit spreads over the classes (tiny_ham: 4 images of each of 7 classes)
    assert sum(report["class_counts"].values()) == 14
    assert all(n >= 1 for n in report["class_counts"].values())
    for r in rows:
        for key in (
            "accuracy",
            "balanced_accuracy",
            "malignant_auc",
            "triage_sensitivity",
            "triage_specificity",
            "malignant_flagged_or_uncertain",
            "turned_away",
            "turned_away_malignant",
            "uncertain",
        ):
            assert in_unit(r[key]), (r["corruption"], r["severity"], key, r[key])
        assert r["n_malignant"] == 6  # akiec, bcc, mel: 2 of each in the 14
        # a turned-away malignant is a miss: sensitivity + its turned-away share <= 1
        assert r["triage_sensitivity"] + r["turned_away_malignant"] <= 1 + 1e-9
        assert r["malignant_flagged_or_uncertain"] >= r["triage_sensitivity"] - 1e-9
    summary = report["summary"]
    clean = next(r for r in rows if r["corruption"] == "clean")
    assert summary["clean_balanced_accuracy"] == clean["balanced_accuracy"]
    relative = [
        r["balanced_accuracy"] / clean["balanced_accuracy"]
        for r in rows
        if r["corruption"] != "clean"
    ]
    if clean["balanced_accuracy"] > 0:
        assert summary["mean_relative_balanced_accuracy"] == pytest.approx(
            sum(relative) / len(relative), abs=1e-4
        )
        assert 0 <= summary["mean_relative_balanced_accuracy"] < 10
    for name in CORRUPTIONS:
        entry = summary["per_corruption"][name]
        worst = entry["worst_triage_sensitivity_sev_le3"]
        mine = [r["triage_sensitivity"] for r in rows if r["corruption"] == name]
        assert worst == min(mine)
        assert (name in summary["breaks_triage_sev_le3"]) == (worst < 0.90)
    assert report["model_version"] and report["cpu"] and report["seconds"] >= 0
    assert report["command"].startswith("python benchmarks/robustness.py ")
    assert report["metadata_fed"] is (which == "default")
    assert report["thresholds"]["ood_check"] is (which == "default")
    assert (tmp_path / f"robustness-{model.name}.png").stat().st_size > 10_000


def test_deterministic(robustness, tiny_ham, split_file, tmp_path):
    def rows(out, *extra):
        report = run(
            robustness,
            DEFAULT_MODEL,
            tiny_ham,
            split_file,
            tmp_path / out,
            "--limit",
            "7",
            *extra,
            corruptions=["hair"],
        )
        return [{k: v for k, v in r.items() if k != "seconds"} for r in report["rows"]]

    a = rows("a")
    assert a == rows("b")
    # another seed draws other hairs; the clean row stays
    c = rows("c", "--seed", "1")
    assert c[0] == a[0] and c[1:] != a[1:]


def test_unknown_corruption_is_refused_by_name(robustness, tiny_ham, split_file, tmp_path, capsys):
    with pytest.raises(SystemExit):
        robustness.main(
            [
                str(DEFAULT_MODEL),
                str(tiny_ham),
                "--split-file",
                str(split_file),
                "--corruptions",
                "blurr",
            ]
        )
    assert "unknown corruption 'blurr'" in capsys.readouterr().err
