"""Database reads and writes, apart from the routes that call them."""

from __future__ import annotations

import csv
import io
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from dermalens.serve.schemas import FeedbackIn, FeedbackOut, PredictionOut
from dermalens.serve.tables import FeedbackRecord, PredictionRecord

EXPORT_COLUMNS = [
    *FeedbackOut.model_fields,
    "triage",
    "uncertain",
    "age",
    "sex",
    "site",
]


def add_prediction(
    session: Session,
    out: PredictionOut,
    image_file: str | None,
    lesion_id: str | None = None,
    visit_id: str | None = None,
) -> None:
    """Store a served prediction (the overlay excluded: it shows the patient's image), filed
    under a patient's lesion and visit when given."""
    record = PredictionRecord(
        id=out.id,
        created_at=out.created_at,
        model_name=out.model.name,
        model_version=out.model.version,
        label=out.top[0].code if out.top else "",  # "": out of scope, no answer
        triage=out.triage.result,
        uncertain=out.uncertain,
        age=out.patient.age,
        sex=out.patient.sex,
        site=out.patient.site,
        image_file=image_file,
        result=out.model_dump(mode="json", exclude={"heatmap"}),
        lesion_id=lesion_id,
        visit_id=visit_id,
    )
    session.add(record)
    session.commit()


def get_prediction(session: Session, prediction_id: str) -> PredictionRecord | None:
    return session.get(PredictionRecord, prediction_id)


def add_feedback(session: Session, prediction: PredictionRecord, body: FeedbackIn) -> FeedbackOut:
    """Store a clinician's verdict with the model version that made the prediction."""
    record = FeedbackRecord(
        prediction_id=prediction.id,
        model_version=prediction.model_version,
        predicted_label=prediction.label,
        agree=body.agree,
        correct_label=prediction.label if body.agree else body.correct_label,
        note=(body.note or "").strip() or None,
    )
    session.add(record)
    session.commit()
    return FeedbackOut.model_validate(record)


def feedback_rows(session: Session) -> list[dict[str, Any]]:
    """All feedback, oldest first, joined with the prediction's triage and patient fields."""
    query = (
        select(FeedbackRecord, PredictionRecord)
        .join(PredictionRecord, FeedbackRecord.prediction_id == PredictionRecord.id)
        .order_by(FeedbackRecord.id)
    )
    rows = []
    for feedback, prediction in session.execute(query):
        row = FeedbackOut.model_validate(feedback).model_dump(mode="json")
        row.update(
            triage=prediction.triage,
            uncertain=prediction.uncertain,
            age=prediction.age,
            sex=prediction.sex,
            site=prediction.site,
        )
        rows.append(row)
    return rows


def spreadsheet_cell(value: Any) -> Any:
    # A free-text note starting with = + - @ would run as a formula in a spreadsheet.
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@"):
        return "'" + value
    return value


def to_csv(rows: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=EXPORT_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: spreadsheet_cell(v) for k, v in row.items()} for row in rows)
    return buffer.getvalue()
