"""A lesion's visit-to-visit changes (`serve.lesion_change`): which predictions are paired,
the change score between kept images, and the "changed since last visit" flag.

    nice -n 10 pytest tests/test_lesion_change.py -q
"""

from __future__ import annotations

import datetime as dt

import pytest

from conftest import DEFAULT_MODEL
from dermalens.runtime.change import P_MALIGNANT_MARGIN
from dermalens.runtime.predictor import Predictor
from dermalens.serve.lesion_change import Entry, malignant_probability, visit_changes


@pytest.fixture(scope="module")
def predictor():
    return Predictor(DEFAULT_MODEL, backend="onnx")


def day(n: int) -> dt.date:
    return dt.date(2026, 1, 1) + dt.timedelta(days=30 * n)


def test_pairs_each_visit_with_the_one_before(predictor, fixture_images, tmp_path):
    same, other = fixture_images[0], fixture_images[4]
    entries = [
        Entry("p1", "v1", day(0), 0.10, same),
        Entry("p2", "v2", day(1), 0.12, same),  # the same image again: nothing changed
        Entry("p3", "v2", day(1), 0.11, None),  # a second image at visit 2: not paired
        Entry("p4", "v3", day(2), 0.10 + P_MALIGNANT_MARGIN + 0.05, other),
        Entry("p5", "v4", day(3), 0.30, None),  # not kept: no score, P(malignant) still counts
        Entry("p6", "v5", day(4), 0.31, tmp_path / "gone.jpg"),  # a file that vanished
    ]
    changes = visit_changes(predictor, entries)
    assert [(c.before_prediction_id, c.after_prediction_id) for c in changes] == [
        ("p1", "p2"),
        ("p3", "p4"),
        ("p4", "p5"),
        ("p5", "p6"),
    ]
    calm, risen, unkept, gone = changes
    assert not calm.changed_since_last_visit and calm.reasons == []
    assert calm.change.score < calm.change.threshold and calm.change.structure < 1e-4
    assert calm.malignant_probability_rise == pytest.approx(0.02)
    # p3 has no image: the rise alone flags it
    assert risen.change is None and risen.changed_since_last_visit
    assert risen.reasons[0].startswith("malignant probability rose by")
    assert unkept.change is None and not unkept.changed_since_last_visit
    assert gone.change is None


def test_a_different_lesion_image_scores_higher(predictor, fixture_images):
    a, b = fixture_images[0], fixture_images[4]
    same, other = visit_changes(
        predictor,
        [Entry("p1", "v1", day(0), 0.1, a), Entry("p2", "v2", day(1), 0.1, a)],
    ) + visit_changes(
        predictor,
        [Entry("p1", "v1", day(0), 0.1, a), Entry("p2", "v2", day(1), 0.1, b)],
    )
    assert other.change.score > same.change.score
    assert other.change.structure > same.change.structure


def test_malignant_probability_of_a_stored_result():
    assert malignant_probability({"triage": {"malignant_probability": 0.42}}) == 0.42
    # no model answered (out of scope), or a result without a triage block
    assert malignant_probability({"triage": {"malignant_probability": None}}) is None
    assert malignant_probability({}) is None


def test_only_one_models_probabilities_are_compared(predictor):
    """A rise from no answer, or between two models' answers, is not a rise: no flag."""
    high = 0.1 + P_MALIGNANT_MARGIN + 0.2
    entries = [
        Entry("p1", "v1", day(0), 0.1, None, "dermoscopic@1"),
        Entry("p2", "v2", day(1), high, None, "clinical@1"),  # another model
        Entry("p3", "v3", day(2), None, None, ""),  # turned away by the scope gate
        Entry("p4", "v4", day(3), high, None, "clinical@1"),
        Entry("p5", "v5", day(4), high + P_MALIGNANT_MARGIN + 0.01, None, "clinical@1"),
    ]
    changes = visit_changes(predictor, entries)
    assert [c.malignant_probability_rise for c in changes[:3]] == [None, None, None]
    assert not any(c.changed_since_last_visit for c in changes[:3])
    assert changes[3].malignant_probability_rise == pytest.approx(P_MALIGNANT_MARGIN + 0.01)
    assert changes[3].changed_since_last_visit
