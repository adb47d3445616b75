"""Request and response bodies; their field descriptions become the OpenAPI docs."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_core import PydanticCustomError


def storable(value: str | None) -> str | None:
    """Client text bound for the database: PostgreSQL text cannot hold U+0000 (SQLite can),
    so it is a 422 naming the field here, not a 500 from the driver. Use it as a validator."""
    if value is not None and "\x00" in value:
        raise PydanticCustomError("nul_character", "must not contain the NUL character (U+0000)")
    return value


class ModelRef(BaseModel):
    name: str
    version: str = Field(description="bundle name @ first 12 hex digits of its weights' SHA-256")


class ClassScore(BaseModel):
    code: str = Field(examples=["mel"])
    name: str = Field(examples=["Melanoma"])
    probability: float = Field(ge=0, le=1)
    malignant: bool | None = Field(
        description="true: a malignant class; false: a benign one; null: malignancy unknown "
        "(a class no one has flagged, or a condition that is not a skin lesion, such as a "
        "rash): a model with such a class gives no triage (triage.result 'unavailable')"
    )


class Triage(BaseModel):
    result: str = Field(
        description="benign, malignant, uncertain, not_skin (OOD check), out_of_scope (no "
        "installed model is made for this image: no triage), or unavailable: the "
        "model's classes include some of unknown malignancy, so it gives no benign / "
        "malignant triage and a clinician must decide"
    )
    rule: str = Field(description="the thresholds that produced `result`, or why none applies")
    malignant_probability: float | None = Field(
        description="summed probability of the classes flagged malignant (classes of unknown "
        "malignancy are not counted); null when no model answered (status out_of_scope, or "
        "not_skin from the scope gate)"
    )


class Heatmap(BaseModel):
    image: str | None = Field(
        None,
        description="PNG overlay as a data URL (data:image/png;base64,...), display_width "
        "pixels wide, over the model's crop of the image; null when the request set "
        "overlay=false",
    )
    grid: list[list[float]] = Field(
        description="the same map at the model's feature-map resolution (rows x columns, "
        "each in [0, 1], the largest 1), before upsampling: it covers the model's crop of the "
        "image (GET /api/v1/model, input.resize). To draw it as the overlay does: upsample "
        "bilinearly (half-pixel centres, edges clamped), colour each heat h as r = clip(1.5 - "
        "|4h - 3|), g = clip(1.5 - |4h - 2|), b = clip(1.5 - |4h - 1|), and blend over the "
        "photo with opacity 0.45 h"
    )
    shape: tuple[int, int] = Field(description="(rows, columns) of grid", examples=[[5, 7]])
    target: str = Field(description="class code the map explains (the answer, top[0])")
    method: str = "Grad-CAM on the last feature map (equal to CAM for a pooled linear head)"


class Shift(BaseModel):
    flagged: bool = Field(
        description="true: the image's acquisition statistics (brightness, contrast, "
        "saturation, colour cast, sharpness, noise, dark border, OOD feature and colour "
        "scores) lie outside the bands that hold nearly all validation images, so the "
        "operating point (triage threshold, abstention) may not hold for it"
    )
    measures: list[str] = Field(
        description="the statistics outside their band, e.g. 'saturation low'",
        examples=[["green_chroma high"]],
    )
    message: str = Field(description="a sentence for the user when flagged, else ''")


class ShiftBatch(BaseModel):
    images: int = Field(description="latest requests judged (this one included)")
    flagged: int = Field(description="how many of them were flagged one by one")
    share: float = Field(ge=0, le=1)
    expected_share: float = Field(description="the share flagged among validation images")
    p_value: float = Field(description="one-sided binomial test of `flagged` against it")
    shifted: bool = Field(
        description="the latest requests, taken together, differ from the validation data "
        "(p_value < 0.001, at least 10 images)"
    )
    message: str = Field(description="a sentence for the user when shifted, else ''")


class Patient(BaseModel):
    age: float | None = None
    sex: str | None = None
    site: str | None = None
    # optional clinical fields (dermalens.patient.CLINICAL) for a model that takes them
    clinical: dict[str, float | None] = Field(default_factory=dict)


STATUSES = ("ok", "uncertain", "out_of_scope", "not_skin")


class Scope(BaseModel):
    """The scope gate's decision: what the image seems to be and which model answered."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "kind": "other_skin",
                    "reason": "other_skin",
                    "model": None,
                    "why": "This image seems to be a photo of skin that is not a close-up of a "
                    "single lesion (for example a rash, a wider body area, a nail or hair), "
                    "so no installed model answers it.",
                    "rule": "other_skin: dermoscopic score 5.12 > 4.42, scene 1.31 <= 1.62, "
                    "lesion score 1.70 <= 1.90, scene 1.88 > 1.71 (unlike the lesion close-ups "
                    "of both kinds in training)",
                    "scores": {
                        "p_dermoscopic": 0.012,
                        "dermoscopic_score": 5.12,
                        "lesion_score": 1.7,
                        "scene_dermoscopic_score": 1.31,
                        "scene_lesion_score": 1.88,
                        "colour_score": 1.3,
                    },
                    "covers": [
                        "dermoscopic close-ups of skin lesions",
                        "camera or phone close-ups of skin lesions",
                    ],
                    "advice": "Please show the skin to a doctor or dermatologist: this tool "
                    "cannot assess this image.",
                }
            ]
        }
    )

    kind: str = Field(
        description="dermoscopic (a dermoscopic close-up of a lesion), clinical (a camera or "
        "phone close-up of a lesion), other_skin (skin, but not a lesion close-up: a rash, a "
        "body area, a nail, hair) or not_skin",
        examples=["dermoscopic"],
    )
    reason: str = Field(
        description="stable code: answered (the model for this kind answered), model_check "
        "(that model's own check refused the image), other_skin, not_skin, no_model (no "
        "installed model covers this kind), not_made_for (the pinned model was made for "
        "another kind)",
        examples=["answered"],
    )
    model: str | None = Field(
        description="name of the bundle that answered; null when none did",
        examples=["ham-lite0-meta-ema-ls0-s0"],
    )
    why: str = Field(description="plain words: which model answered and why, or why none did")
    rule: str = Field(description="the gate's technical rule, with its scores and thresholds")
    scores: dict[str, float] = Field(description="the gate's scores (see runtime.scope)")
    covers: list[str] = Field(description="what the installed models cover, in plain words")
    advice: str = Field(description="what to do when no definite answer was given")


class PredictionOut(BaseModel):
    id: str
    status: str = Field(
        "ok",
        description="ok: a definite answer from the model made for this kind of image; "
        "uncertain: that model is unsure (no triage); out_of_scope: no installed model is made "
        "for this image (a rash, a body area, a nail, hair, or a kind of photo the chosen model "
        "was not made for): no classes, no probabilities and no triage; not_skin: not a photo "
        "of skin. Stable values: " + ", ".join(STATUSES),
        examples=list(STATUSES),
    )
    scope: Scope | None = Field(
        None, description="the scope gate's decision (null when the service runs without one)"
    )
    created_at: datetime
    model: ModelRef
    top: list[ClassScore] = Field(
        description="the answer first, then runners-up, ranked by the class-balanced decision "
        "rule; each with its calibrated probability (which need not decrease down the list)"
    )
    probabilities: dict[str, float] = Field(description="every class, in the model's order")
    triage: Triage
    uncertain: bool = Field(description="true when the answer's probability is below threshold")
    not_skin: bool = Field(False, description="the image does not look like dermoscopic skin")
    not_skin_reason: str = ""
    ood_score: float | None = Field(None, description="about 1 on typical skin images")
    tta: bool = Field(False, description="probabilities averaged over flips and a rotation")
    shift: Shift | None = Field(
        None, description="the shift warning for this image; null: the model has none"
    )
    shift_recent: ShiftBatch | None = Field(
        None,
        description="the shift warning's batch test over the service's latest requests "
        "(DERMALENS_SHIFT_WINDOW of them, per server process), as it stood after this one; "
        "null: the model has no shift warning",
    )
    heatmap: Heatmap | None = Field(
        None, description="null when explain=false, and always in GET (overlays are not stored)"
    )
    timings_ms: dict[str, float]
    patient: Patient
    image_kept: bool = Field(description="true only when the request consented to keep it")
    disclaimer: str


class FeedbackIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    agree: bool = Field(description="true: the answer (top[0]) is right")
    correct_label: str | None = Field(
        None, max_length=64, description="taxonomy code of the right class; needed if agree=false"
    )
    note: str | None = Field(None, max_length=2000)

    _storable = field_validator("correct_label", "note")(storable)


class FeedbackOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    prediction_id: str
    created_at: datetime
    model_version: str
    predicted_label: str
    agree: bool
    correct_label: str
    note: str | None

    @field_validator("created_at")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        # SQLite returns naive datetimes; every time stored here is UTC.
        return value if value.tzinfo else value.replace(tzinfo=UTC)


class ModelInfo(BaseModel):
    name: str
    version: str
    classes: list[dict[str, Any]]
    input: dict[str, Any] = Field(description="input size and preprocessing")
    metadata_fields: list[str]
    thresholds: dict[str, Any]
    metrics: dict[str, Any]
    intended_use: str
    card: dict[str, Any]
    disclaimer: str


class Status(BaseModel):
    status: str
    model: str | None = None
