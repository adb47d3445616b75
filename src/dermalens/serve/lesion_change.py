"""Change between a lesion's visits, for its history: each visit's first image against the
previous visit's last one (`runtime.change`), and the "changed since last visit" flag.

The flag is raised when the summed malignant probability rose by more than the preset's
margin, the change score reached its threshold or the lesion's area grew past the growth
limit (`runtime.change`; the preset from DERMALENS_CHANGE_FRAMING); the images
are the kept uploads, so a prediction without a kept image gets no change score (its
P(malignant) still counts). P(malignant) is compared only between answers of the same
model: an image the scope gate turned away, or two visits answered by different models
(a dermoscopic and a phone close-up), leave only the images' change to judge.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, Field

from dermalens.imageio import ImageError
from dermalens.runtime.change import (
    DEFAULT_SCALES,
    MEASURES,
    ChangeScales,
    ChangeScore,
    LesionView,
    compare,
    describe,
    embed,
    since_last_visit,
)
from dermalens.runtime.predictor import Predictor
from dermalens.serve.uploads import kept_path


class ChangeParts(BaseModel):
    colour: float = Field(description=MEASURES["colour"])
    size: float = Field(description=MEASURES["size"])
    growth: float = Field(description=MEASURES["growth"])
    structure: float | None = Field(description=MEASURES["structure"])
    score: float = Field(ge=0, le=1, description=MEASURES["score"])
    threshold: float = Field(description="score at or above which `changed` is true")
    growth_limit: float = Field(description="growth at or above which `changed` is true too")
    changed: bool
    reliable: bool = Field(
        description="false when a lesion could not be told apart from the skin in one of the "
        "images (colour and size are then less reliable, size is 0)"
    )

    @classmethod
    def of(cls, score: ChangeScore) -> ChangeParts:
        return cls(**{k: v for k, v in score.to_dict().items() if k != "measures"})


class VisitChange(BaseModel):
    """From one visit's prediction to the next visit's."""

    before_prediction_id: str
    after_prediction_id: str
    before_date: dt.date
    after_date: dt.date
    malignant_probability_rise: float | None = Field(
        description="P(malignant) after minus before (summed malignant classes); null when "
        "no model answered one of the two images (out of scope) or two different models "
        "answered them (their probabilities are not comparable)"
    )
    margin: float = Field(description="a rise above this flags the lesion")
    change: ChangeParts | None = Field(
        description="the change score between the two images; null when either image was not "
        "kept or cannot be read"
    )
    changed_since_last_visit: bool
    reasons: list[str] = Field(description="why the flag is raised (empty when it is not)")


@dataclass
class Entry:
    """What one filed prediction contributes: its id, visit, date, P(malignant), image and
    the model that answered."""

    prediction_id: str
    visit_id: str
    date: dt.date
    p_malignant: float | None  # None: no model answered (the scope gate turned it away)
    image: Path | None  # the kept upload, None when not kept
    model: str = ""  # the answering model's version: only one model's P(malignant) compare


def malignant_probability(result: dict) -> float | None:
    """P(malignant) of a stored prediction's result JSON; None when no model answered."""
    value = result.get("triage", {}).get("malignant_probability")
    return None if value is None else float(value)


class Views:
    """Each kept image described once (segmentation and model features), on first use."""

    def __init__(self, predictor: Predictor, scales: ChangeScales):
        self.predictor, self.scales, self.cache = predictor, scales, {}

    def of(self, item: Entry) -> LesionView | None:
        if item.image is None:
            return None
        if item.prediction_id not in self.cache:
            try:
                view = describe(item.image, embed(self.predictor, item.image))
            except (ImageError, OSError):  # a kept file gone or damaged: no score, no crash
                view = None
            self.cache[item.prediction_id] = view
        return self.cache[item.prediction_id]

    def change(self, before: Entry, after: Entry) -> ChangeScore | None:
        a, b = self.of(before), self.of(after)
        return None if a is None or b is None else compare(a, b, self.scales)


def visit_changes(
    predictor: Predictor, entries: list[Entry], scales: ChangeScales = DEFAULT_SCALES
) -> list[VisitChange]:
    """Changes between consecutive visits of a timeline that is already in time order."""
    changes, views = [], Views(predictor, scales)
    for k, after in enumerate(entries):
        earlier = [e for e in entries[:k] if e.visit_id != after.visit_id]
        first_of_visit = all(e.visit_id != after.visit_id for e in entries[:k])
        if not earlier or not first_of_visit:
            continue
        before = earlier[-1]
        score = views.change(before, after)
        margin = scales.malignant_margin
        rise = None
        if None not in (before.p_malignant, after.p_malignant) and before.model == after.model:
            rise = after.p_malignant - before.p_malignant
        # no rise to judge (no answer, or two models' probabilities): only the images count
        flag, reasons = since_last_visit(score, 0.0, rise or 0.0, margin)
        changes.append(
            VisitChange(
                before_prediction_id=before.prediction_id,
                after_prediction_id=after.prediction_id,
                before_date=before.date,
                after_date=after.date,
                malignant_probability_rise=rise,
                margin=margin,
                change=None if score is None else ChangeParts.of(score),
                changed_since_last_visit=flag,
                reasons=reasons,
            )
        )
    return changes


def history_changes(
    predictor: Predictor, timeline, uploads_dir: Path, scales: ChangeScales = DEFAULT_SCALES
) -> list[VisitChange]:
    """`visit_changes` over a lesion's stored (prediction, visit) timeline, oldest first."""
    entries = [
        Entry(
            p.id,
            v.id,
            v.date,
            malignant_probability(p.result),
            kept_path(uploads_dir, p.image_file),
            p.model_version,
        )
        for p, v in timeline
    ]
    return visit_changes(predictor, entries, scales)
