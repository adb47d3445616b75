"""The bundled clinical close-up model (PAD-UFES-20): loads, predicts a PAD fixture image
through `Predictor` with and without clinical fields, names ack and scc as malignant.

pytest tests/test_clinical_model.py -q
"""

from __future__ import annotations

import numpy as np
import pytest

from conftest import FIXTURES, ROOT
from dermalens import patient
from dermalens.bundle import load_bundle
from dermalens.runtime.predictor import Predictor

CLINICAL_MODEL = ROOT / "src" / "dermalens" / "bundled" / "clinical"
IMAGE = FIXTURES / "pad" / "images" / "PAT_564_1079_430.png"  # a BCC


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    return Predictor(CLINICAL_MODEL, backend="onnx")


def test_bundle_describes_its_classes_and_fields(predictor: Predictor) -> None:
    bundle = predictor.bundle
    flags = dict(zip(bundle.classes, bundle.malignant))
    assert flags["ack"] is True and flags["scc"] is True and flags["nv"] is False
    assert "akiec" not in bundle.classes
    fields = bundle.metadata_fields
    assert tuple(fields[:3]) == patient.FIELDS and set(fields[3:]) <= set(patient.CLINICAL)
    assert "biopsed" not in fields
    assert bundle.has("model.onnx") and bundle.has("ood.npz")
    assert "CC BY 4.0" in bundle.info["card"]["data_licence"]


def test_predicts_with_and_without_clinical_fields(predictor: Predictor) -> None:
    bare = predictor.predict(IMAGE, explain=True)
    given = predictor.predict(
        IMAGE,
        age=73,
        sex="female",
        site="upper extremity",
        clinical={"itch": "yes", "grew": True, "bleed": "yes", "diameter_1": 18.0},
    )
    for result in (bare, given):
        assert np.isclose(sum(result.probabilities), 1.0, atol=1e-4)
        assert result.triage in ("malignant", "benign", "uncertain", "not_skin")
    assert bare.probabilities != given.probabilities  # the fields reach the model
    assert bare.heatmap is not None and bare.heatmap.shape == (
        predictor.pre.height,
        predictor.pre.width,
    )


def test_unknown_clinical_field_is_refused_by_name(predictor: Predictor) -> None:
    with pytest.raises(ValueError, match="biopsed"):
        predictor.predict(IMAGE, clinical={"biopsed": True})


def test_default_model_ignores_clinical_fields() -> None:
    default = Predictor(ROOT / "src" / "dermalens" / "bundled" / "default", backend="onnx")
    image = FIXTURES / "ham" / "ISIC_0024310.jpg"
    a = default.predict(image, age=50, sex="male", site="back")
    b = default.predict(image, age=50, sex="male", site="back", clinical={"itch": "yes"})
    assert a.probabilities == b.probabilities
    assert load_bundle(default.bundle.path).metadata_fields == list(patient.FIELDS)
