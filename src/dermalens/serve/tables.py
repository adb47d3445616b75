"""Database tables: one row per prediction served, any number of feedback rows per prediction,
and the clinic's pseudonymous patients, their lesions and visits.

A prediction made for a patient carries its lesion and visit (both nullable: the anonymous
quick check has neither). Columns on `predictions` rather than a link table, because one
image is of exactly one lesion at one visit: a link table would allow many-to-many rows that
mean nothing here and one more table to clean up when a patient is deleted."""

from __future__ import annotations

import datetime as dt
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    pass


class PredictionRecord(Base):
    __tablename__ = "predictions"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)  # random hex, not guessable
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    model_name: Mapped[str] = mapped_column(String(200))
    model_version: Mapped[str] = mapped_column(String(200), index=True)
    label: Mapped[str] = mapped_column(String(64))  # the answer's class code (top[0])
    triage: Mapped[str] = mapped_column(String(16))
    uncertain: Mapped[bool] = mapped_column(Boolean)
    age: Mapped[float | None] = mapped_column(Float)
    sex: Mapped[str | None] = mapped_column(String(16))
    site: Mapped[str | None] = mapped_column(String(64))
    image_file: Mapped[str | None] = mapped_column(String(64))  # kept upload (consent only)
    result: Mapped[dict[str, Any]] = mapped_column(JSON)  # the response, minus the overlay
    lesion_id: Mapped[str | None] = mapped_column(ForeignKey("lesions.id"), index=True)
    visit_id: Mapped[str | None] = mapped_column(ForeignKey("visits.id"), index=True)

    feedback: Mapped[list[FeedbackRecord]] = relationship(back_populates="prediction")


class FeedbackRecord(Base):
    __tablename__ = "feedback"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    prediction_id: Mapped[str] = mapped_column(ForeignKey("predictions.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    model_version: Mapped[str] = mapped_column(String(200))
    predicted_label: Mapped[str] = mapped_column(String(64))
    agree: Mapped[bool] = mapped_column(Boolean)
    correct_label: Mapped[str] = mapped_column(String(64))
    note: Mapped[str | None] = mapped_column(Text)

    prediction: Mapped[PredictionRecord] = relationship(back_populates="feedback")


class PatientRecord(Base):
    """A pseudonymous patient: the clinic's own id, no name."""

    __tablename__ = "patients"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)  # random hex
    clinic_id: Mapped[str] = mapped_column(String(64), unique=True)  # the clinic's reference
    sex: Mapped[str | None] = mapped_column(String(16))
    birth_year: Mapped[int | None] = mapped_column(Integer)  # gives the model an age per visit
    note: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )


class LesionRecord(Base):
    __tablename__ = "lesions"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    patient_id: Mapped[str] = mapped_column(ForeignKey("patients.id"), index=True)
    site: Mapped[str | None] = mapped_column(String(64))  # one of data.records.SITES
    label: Mapped[str] = mapped_column(String(200))  # "left shoulder, 3 cm below clavicle"
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )


class VisitRecord(Base):
    __tablename__ = "visits"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    patient_id: Mapped[str] = mapped_column(ForeignKey("patients.id"), index=True)
    date: Mapped[dt.date] = mapped_column(Date)
    note: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
