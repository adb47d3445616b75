"""Database tables: one row per prediction served, any number of feedback rows per prediction."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Boolean, DateTime, Float, ForeignKey, Integer, String, Text
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
