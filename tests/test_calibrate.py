"""Temperature scaling, abstention and triage thresholds, TTA, and `calibrate_bundle` end to end."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from conftest import make_tiny_bundle
from dermalens.bundle import load_bundle
from dermalens.evaluation.calibrate import (
    Targets,
    calibrate_bundle,
    fit_temperature,
    fit_temperature_and_bias,
    nll,
)
from dermalens.evaluation.evaluate import evaluate
from dermalens.evaluation.metrics import expected_calibration_error
from dermalens.evaluation.ood_fit import balanced_sample
from dermalens.evaluation.thresholds import (
    choose_triage_threshold,
    choose_uncertain_threshold,
    decision_metrics,
    risk_coverage,
)
from dermalens.runtime.calibration import softmax, tta_views
from dermalens.runtime.predictor import Predictor


def sample_labels(logits: np.ndarray, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    probs = softmax(logits)
    return (probs.cumsum(axis=1) > rng.random((len(probs), 1))).argmax(axis=1)


@pytest.fixture(scope="module")
def overconfident():
    """Labels drawn from softmax(true logits); the model reports 3x sharper logits."""
    true = np.random.default_rng(1).normal(scale=1.5, size=(6000, 5))
    return true * 3, sample_labels(true)


def test_fit_temperature_recovers_known_temperature(overconfident):
    logits, labels = overconfident
    assert fit_temperature(logits, labels) == pytest.approx(3.0, rel=0.08)


def test_fit_temperature_on_identical_views_matches_one_view(overconfident):
    logits, labels = overconfident
    views = np.stack([logits, logits])
    assert fit_temperature(views, labels) == pytest.approx(fit_temperature(logits, labels))


def test_calibration_lowers_ece_and_nll(overconfident):
    logits, labels = overconfident
    t = fit_temperature(logits, labels)
    before, _ = expected_calibration_error(labels, softmax(logits))
    after, _ = expected_calibration_error(labels, softmax(logits, t))
    assert after < before / 3
    assert nll(logits, labels, t) < nll(logits, labels, 1.0)


def test_bias_undoes_a_tilt_that_temperature_cannot(overconfident):
    """A model tilted towards class 4 (as class weights tilt towards rare classes)."""
    logits, labels = overconfident
    tilt = np.array([0.0, 0.0, 0.0, 0.0, 4.0])
    t_only = fit_temperature(logits + tilt, labels)
    t, bias = fit_temperature_and_bias(logits + tilt, labels)
    assert t == pytest.approx(3.0, rel=0.1)
    assert bias.sum() == pytest.approx(0.0, abs=1e-9)
    assert bias[4] - bias[:4].mean() == pytest.approx(-4.0 / 3.0, abs=0.15)
    assert nll(logits + tilt, labels, t, bias) < nll(logits + tilt, labels, t_only) - 0.05
    after, _ = expected_calibration_error(labels, softmax(logits / 3.0 + (tilt / 3.0 + bias)))
    assert after < 0.02


def test_answers_keep_the_model_ranking_while_probabilities_move(tiny_bundle):
    predictor = Predictor(tiny_bundle)
    logits = np.random.default_rng(0).normal(scale=2.0, size=(1, 200, 7))
    plain = predictor.decide(predictor.calibrated(logits))
    predictor.calibration.class_bias = np.array([2.0, -1.0, 0.0, 0.5, 0.0, -1.5, 0.0])
    predictor.calibration.decision_bias = -predictor.calibration.class_bias
    probs = predictor.calibrated(logits)
    answers = predictor.decide(probs)
    assert np.array_equal(answers, plain)  # the same answers as before the bias
    assert np.array_equal(answers, logits[0].argmax(1))
    assert (probs.argmax(1) != answers).any()  # ...though the most probable class moved
    result = predictor.result(probs[np.flatnonzero(probs.argmax(1) != answers)[0]])
    assert result.label == predictor.bundle.classes[answers[probs.argmax(1) != answers][0]]


@pytest.mark.parametrize("n_malignant", [1, 7, 20, 21, 100, 333])
def test_triage_threshold_reaches_sensitivity_and_is_the_highest(n_malignant):
    rng = np.random.default_rng(n_malignant)
    is_mal = np.r_[np.ones(n_malignant, bool), np.zeros(400, bool)]
    p_mal = np.clip(rng.normal(np.where(is_mal, 0.6, 0.3), 0.2), 0, 1)
    t = choose_triage_threshold(p_mal, is_mal, 0.95)
    assert (p_mal[is_mal] >= t).mean() >= 0.95
    # the next malignant score above t misses one more: below target, so t is the highest
    above = np.sort(p_mal[is_mal][p_mal[is_mal] >= t])
    assert (p_mal[is_mal] >= above[0] + 1e-12).mean() < 0.95
    assert not ((p_mal > t - 1e-12) & (p_mal < t + 1e-12)).any()  # no score sits on it


def test_triage_threshold_needs_malignant_images():
    with pytest.raises(ValueError, match="no malignant images"):
        choose_triage_threshold(np.array([0.1, 0.2]), np.array([False, False]))


def test_risk_coverage_counts_ties_together():
    curve = risk_coverage(np.array([0.9, 0.8, 0.8, 0.5]), np.array([1, 1, 0, 0]))
    assert curve["coverage"].tolist() == [0.25, 0.75, 1.0]
    assert curve["selective_accuracy"].tolist() == pytest.approx([1.0, 2 / 3, 0.5])


def test_uncertain_threshold_keeps_the_largest_coverage_meeting_the_target():
    # 100 images; confidence i/100; the 30 least confident are wrong, the rest right
    conf = np.arange(1, 101) / 100
    correct = conf > 0.30
    t = choose_uncertain_threshold(conf, correct, target=0.9, min_coverage=0.5)
    kept = conf >= t
    assert correct[kept].mean() >= 0.9
    assert kept.sum() == 77  # 70 right / 77 kept = 0.909; 78 kept would be 0.897
    # out of reach at 90% coverage: defer exactly 10%
    t = choose_uncertain_threshold(conf, correct, target=0.99, min_coverage=0.9)
    assert (conf >= t).sum() == 90


def test_decision_metrics_counts_by_hand():
    labels = np.array([0, 0, 1, 1])  # class 0 malignant
    probs = np.array([[0.9, 0.1], [0.45, 0.55], [0.2, 0.8], [0.52, 0.48]])
    out = decision_metrics(labels, probs, probs.argmax(1), np.array([True, False]), 0.6, 0.4)
    assert out["abstention"]["coverage"] == 0.5  # rows 0 and 2 are confident enough
    assert out["abstention"]["selective_accuracy"] == 1.0
    assert out["triage"]["sensitivity"] == 1.0  # both malignant rows have p >= 0.4
    assert out["triage"]["specificity"] == 0.5  # row 3 (benign) is flagged
    assert out["triage"]["benign_cleared"] == 0.5


def test_predictor_marks_uncertain_below_the_bundle_threshold(tiny_bundle):
    predictor = Predictor(tiny_bundle)
    predictor.uncertain_below = 0.5
    unsure = predictor.result(np.array([0.45, 0.3, 0.25, 0, 0, 0, 0]))
    sure = predictor.result(np.array([0.55, 0.2, 0.25, 0, 0, 0, 0]))
    assert (unsure.uncertain, unsure.triage) == (True, "uncertain")
    assert sure.uncertain is False and sure.triage in ("malignant", "benign")


def test_tta_views_and_flip_invariance(tiny_bundle, fixture_images):
    x = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5)
    views = tta_views(x)
    assert views.shape == (8, 3, 4, 5)
    assert np.array_equal(views[:2], x) and np.array_equal(views[6:], x[..., ::-1, ::-1])
    predictor = Predictor(tiny_bundle, tta=True)
    image = Image.open(fixture_images[0]).convert("RGB").resize((80, 64))
    flipped = image.transpose(Image.FLIP_LEFT_RIGHT)
    a, b = predictor.predict(image), predictor.predict(flipped)
    assert a.tta is True
    assert np.allclose(a.probabilities, b.probabilities, atol=1e-5)
    plain = predictor.predict(image, tta=False)
    assert plain.tta is False and not np.allclose(a.probabilities, plain.probabilities)


def test_balanced_sample_gives_rare_classes_all_they_have():
    table = pd.DataFrame({"label": ["nv"] * 50 + ["mel"] * 20 + ["df"] * 3})
    counts = balanced_sample(table, 30).value_counts("label").to_dict()
    assert counts == {"df": 3, "mel": 13, "nv": 14}
    assert len(balanced_sample(table, 1000)) == 73


def write_split(data_root, path):
    """Lesion copies 0-1 of each class train, 2-3 val (the tiny HAM set has 4 per class)."""
    meta = pd.read_csv(data_root / "metadata.csv")
    copy = meta["image_id"].str.rsplit("_", n=1).str[1].astype(int)
    split = pd.DataFrame(
        {
            "image_id": meta["image_id"],
            "label": meta["dx"],
            "group": meta["lesion_id"],
            "split": np.where(copy < 2, "train", "val"),
        }
    )
    split.to_csv(path, index=False)
    return path


@pytest.mark.parametrize("backend", ["onnx", "torch"])
def test_calibrate_bundle_round_trip(backend, tiny_bundle, tiny_ham, tmp_path, fixture_images):
    bundle_dir = tmp_path / "bundle"
    if backend == "onnx":
        shutil.copytree(tiny_bundle, bundle_dir)
    else:  # as training leaves it: model.pt only
        make_tiny_bundle(bundle_dir, onnx=False)
    split = write_split(tiny_ham, tmp_path / "split.csv")
    summary = calibrate_bundle(
        bundle_dir, tiny_ham, split, out_dir=tmp_path / "cal", progress=False
    )
    json.dumps(summary)  # the CLI prints it

    saved = json.loads((bundle_dir / "bundle.json").read_text())
    assert saved["temperature"] == summary["calibration"]["temperature"] > 0
    assert set(saved["thresholds"]) == {"uncertain_below", "triage_malignant", "ood_above"}
    assert {"calibration", "abstention", "triage", "ood"} <= set(saved["metrics"])
    assert saved["metrics"]["triage"]["sensitivity"] >= 0.95
    assert len(saved["metrics"]["abstention"]["curve"]) == 20
    assert saved["ood_sha256"] and (bundle_dir / "ood.npz").is_file()
    probes = saved["metrics"]["ood"]["probes_rejected"]  # random-init model: only the frames
    assert int(probes.split("/")[0]) >= 3 and int(probes.split("/")[1]) >= 4
    for name in ("reliability-before.png", "reliability-after.png", "risk-coverage.png"):
        assert (tmp_path / "cal" / name).stat().st_size > 1000

    predictor = Predictor(bundle_dir)
    assert predictor.uncertain_below == saved["thresholds"]["uncertain_below"]
    assert predictor.triage_at == saved["thresholds"]["triage_malignant"]
    assert predictor.ood is not None and predictor.ood.threshold == saved["thresholds"]["ood_above"]
    result = predictor.predict(fixture_images[0])
    assert result.ood_score is not None and "not_skin" in result.to_dict()

    report = evaluate(bundle_dir, tiny_ham, "val", split, progress=False).metrics
    assert report["decision"]["triage"]["sensitivity"] >= 0.95  # same images, same threshold
    assert report["ood"]["n"] == 14
    assert load_bundle(bundle_dir).temperature == saved["temperature"]
    assert len(saved["class_bias"]) == 7 and saved["decision_bias"] == [
        -b for b in saved["class_bias"]
    ]
    cal = saved["metrics"]["calibration"]
    assert cal["nll_after"] <= cal["temperature_only"]["nll"] + 1e-9


def test_record_test_without_a_test_part_fails_before_touching_the_bundle(
    tiny_bundle, tiny_ham, tmp_path
):
    from dermalens.data.records import DataError

    bundle_dir = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, bundle_dir)
    before = (bundle_dir / "bundle.json").read_bytes()
    split = write_split(tiny_ham, tmp_path / "split.csv")  # train and val only
    with pytest.raises(DataError, match="no test part to record"):
        calibrate_bundle(bundle_dir, tiny_ham, split, record_test=True, progress=False)
    assert (bundle_dir / "bundle.json").read_bytes() == before


def test_record_test_stores_the_test_part(tiny_bundle, tiny_ham, tmp_path):
    bundle_dir = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, bundle_dir)
    split = write_split(tiny_ham, tmp_path / "split.csv")
    table = pd.read_csv(split)
    table.loc[table["image_id"].str.endswith("_3"), "split"] = "test"
    table.to_csv(split, index=False)
    summary = calibrate_bundle(
        bundle_dir, tiny_ham, split, out_dir=tmp_path / "cal", record_test=True, progress=False
    )
    saved = json.loads((bundle_dir / "bundle.json").read_text())
    assert saved["metrics"]["test"]["n"] == summary["test"]["n"] == 7
    assert (tmp_path / "cal" / "eval-test").is_dir()


def test_calibrate_cli_refuses_an_ood_cap_outside_0_1(tiny_bundle, tiny_ham, tmp_path, capsys):
    from dermalens.cli import main

    split = write_split(tiny_ham, tmp_path / "split.csv")
    args = ["calibrate", str(tiny_bundle), str(tiny_ham), "--split-file", str(split)]
    before = (tiny_bundle / "bundle.json").read_bytes()
    with pytest.raises(SystemExit):
        main([*args, "--ood-max-val-reject", "1.5"])
    assert "--ood-max-val-reject: must lie between 0 and 1, got 1.5" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*args, "--ood-max-val-reject", "two"])
    assert "not a number: 'two'" in capsys.readouterr().err
    assert (tiny_bundle / "bundle.json").read_bytes() == before


def test_calibrate_records_the_ood_cap(tiny_bundle, tiny_ham, tmp_path):
    bundle_dir = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, bundle_dir)
    split = write_split(tiny_ham, tmp_path / "split.csv")
    calibrate_bundle(
        bundle_dir, tiny_ham, split, targets=Targets(ood_max_val_reject=0.0), progress=False
    )
    ood = json.loads((bundle_dir / "bundle.json").read_text())["metrics"]["ood"]
    choice = ood["threshold_choice"]
    assert choice["max_val_reject"] == 0.0 and len(choice["grid"]) == 16
    fewest = min(g["val_rejected"] for g in choice["grid"])
    # met or not, a cap of 0 leaves the pair with the fewest skin rejects
    assert choice["cap_met"] == (fewest == 0.0)
    assert choice["chosen"]["val_rejected"] == fewest
    assert "at most 0.0% of validation skin images" in ood["rule"]


def test_targets_refuse_an_ood_cap_outside_0_1():
    with pytest.raises(ValueError, match=r"ood_max_val_reject must lie in \[0, 1\], got -0.1"):
        Targets(ood_max_val_reject=-0.1)
