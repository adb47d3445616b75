"""The change score (`runtime.change`): segmentation of a drawn lesion, each part moving
with the change it measures, the combined flag, and the "changed since last visit" rule.

    nice -n 10 pytest tests/test_change.py -q
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image, ImageDraw

from conftest import DEFAULT_MODEL
from dermalens.runtime.change import (
    ANY_FRAMING,
    DEFAULT_SCALES,
    MEASURES,
    SAME_FRAMING,
    change_between,
    compare,
    describe,
    embed,
    since_last_visit,
)
from dermalens.runtime.predictor import Predictor

SKIN = (214, 170, 150)
BROWN = (110, 70, 50)


def drawn(radius: float, colour=BROWN, size=(200, 150), light: float = 1.0) -> Image.Image:
    """A round 'lesion' on skin-coloured ground with a little noise, seeded."""
    image = Image.new("RGB", size, SKIN)
    cx, cy = size[0] / 2, size[1] / 2
    ImageDraw.Draw(image).ellipse((cx - radius, cy - radius, cx + radius, cy + radius), colour)
    noise = np.random.default_rng(0).normal(0, 4, (size[1], size[0], 3))
    pixels = (np.asarray(image, dtype=np.float32) + noise) * light
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def test_segments_a_drawn_lesion_at_its_size():
    view = describe(drawn(30))
    assert view.segmented
    assert view.area_fraction == pytest.approx(math.pi * 30**2 / (200 * 150), rel=0.1)
    assert view.lesion_lab[0] < view.skin_lab[0]  # darker than the skin around it


def test_a_flat_frame_has_no_lesion():
    view = describe(Image.new("RGB", (200, 150), SKIN))
    assert not view.segmented and view.area_fraction == 0


def test_each_part_moves_with_its_change():
    before = describe(drawn(25))
    same = compare(before, describe(drawn(25)))
    assert same.size < 0.05 and same.colour < 1 and not same.changed
    grown = compare(before, describe(drawn(25 * 1.3)))
    assert grown.growth == pytest.approx(math.log(1.3**2), abs=0.1) and grown.size > 0.4
    darker = compare(before, describe(drawn(25, colour=(70, 40, 30))))
    assert darker.colour > 5 and darker.size < 0.05
    # brighter light on lesion and skin alike: the colour part measures the lesion's
    # contrast to the skin, so it moves far less than for a darker lesion
    lit = compare(before, describe(drawn(25, light=1.1)))
    assert lit.colour < darker.colour / 2
    assert 0 <= darker.score <= 1 and set(darker.measures) == set(MEASURES)
    assert darker.to_dict()["measures"]["colour"].startswith("CIE76")


def test_the_score_rises_with_each_part_and_growth_flags_by_preset():
    before = describe(drawn(25))
    darker = [describe(drawn(25, colour=(110 - d, 70 - d, 50 - d))) for d in (0, 15, 30, 45)]
    scores = [compare(before, after).score for after in darker]
    assert scores == sorted(scores) and scores[0] < scores[-1]
    assert all(w >= 0 for w in DEFAULT_SCALES.weights)  # a larger part never lowers it
    assert DEFAULT_SCALES.threshold > compare(before, before).score
    assert not compare(before, before).changed
    # the same framing preset counts a third more area as growth; any framing does not,
    # since re-photographs at another zoom move the lesion's share far more than that
    grown = describe(drawn(25 * 1.3))
    assert compare(before, grown, SAME_FRAMING).changed
    assert not compare(before, grown, ANY_FRAMING).changed
    assert compare(before, describe(drawn(25 * 0.7)), SAME_FRAMING).growth < 0


def test_structure_from_the_model_features(fixture_images):
    predictor = Predictor(DEFAULT_MODEL, backend="onnx")
    vector = embed(predictor, fixture_images[0])
    assert vector.ndim == 1 and np.linalg.norm(vector) == pytest.approx(1, abs=1e-5)
    itself = change_between(predictor, fixture_images[0], fixture_images[0])
    assert itself.structure == pytest.approx(0, abs=1e-5) and not itself.changed
    assert itself.reliable and itself.colour == pytest.approx(0, abs=1e-6)
    other = change_between(predictor, fixture_images[0], fixture_images[4])
    assert other.structure > itself.structure and other.score > itself.score


def test_since_last_visit_names_its_reasons():
    before = describe(drawn(25))
    calm = compare(before, describe(drawn(25)))
    assert since_last_visit(calm, 0.10, 0.12, margin=0.1) == (False, [])
    flag, reasons = since_last_visit(calm, 0.10, 0.35, margin=0.1)
    assert flag and reasons == ["malignant probability rose by 0.250 (more than 0.100)"]
    grown = compare(before, describe(drawn(50)), SAME_FRAMING)
    flag, reasons = since_last_visit(grown, 0.3, 0.3)
    assert flag and reasons[-1].startswith("lesion area grew by ")
    assert "%" in reasons[-1] and "limit 33%" in reasons[-1]  # exp(0.2835) - 1
    dark = compare(before, describe(drawn(25, colour=(20, 10, 5))), SAME_FRAMING)
    flag, reasons = since_last_visit(dark, 0.3, 0.3)
    assert flag and reasons[0].startswith("change score")
    assert since_last_visit(None, 0.3, 0.2) == (False, [])
