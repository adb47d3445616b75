"""What the loaded model is: classes, metrics, version and intended use."""

from __future__ import annotations

from fastapi import APIRouter

from dermalens.runtime.predictor import DISCLAIMER
from dermalens.serve.deps import PredictorDep
from dermalens.serve.i18n import N_, _
from dermalens.serve.schemas import ModelInfo

router = APIRouter(prefix="/model", tags=["model"])

DEFAULT_INTENDED_USE = N_(
    "Decision support for clinicians looking at dermoscopic images of skin lesions: a second "
    "opinion on the lesion class and a triage suggestion. Not for diagnosis, not for use by "
    "patients on their own, and not validated on clinical (non-dermoscopic) photographs."
)


@router.get("")
def read_model(predictor: PredictorDep) -> ModelInfo:
    """The served model: classes in index order, metrics, version and intended use."""
    bundle = predictor.bundle
    card = dict(bundle.info.get("card") or {})
    return ModelInfo(
        name=bundle.name,
        version=bundle.version,
        classes=bundle.description()["classes"],
        input=bundle.preprocessing.to_dict(),
        metadata_fields=bundle.metadata_fields,
        thresholds={
            "uncertain_below": predictor.uncertain_below,
            "triage_malignant": predictor.triage_at,
        },
        metrics=bundle.metrics,
        intended_use=str(card.get("intended_use") or _(DEFAULT_INTENDED_USE)),
        card=card,
        disclaimer=_(DISCLAIMER),
    )
