"""Storage: the feedback round trip through the database, Alembic migrations, the API token,
and consented uploads kept without EXIF under random names. Each test that stores something
runs on SQLite and on a real PostgreSQL server (the `database_url` fixture in conftest.py).

    nice -n 10 pytest tests/test_serve_storage.py -q
"""

from __future__ import annotations

import csv
import io
import re

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from fastapi.testclient import TestClient
from PIL import ExifTags, Image
from sqlalchemy import inspect, text
from sqlalchemy.engine import make_url

from dermalens.serve.app import create_app
from dermalens.serve.db import migrate, open_database
from dermalens.serve.settings import Settings
from dermalens.serve.tables import Base

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def make_settings(tmp_path, bundle, database_url: str, **overrides) -> Settings:
    return Settings(
        model=bundle, data_dir=tmp_path, database_url=database_url, api_token=TOKEN, **overrides
    )


@pytest.fixture
def client(tmp_path, tiny_bundle, database_url):
    with TestClient(create_app(make_settings(tmp_path, tiny_bundle, database_url))) as client:
        yield client


def predict(client, data: bytes, **form) -> dict:
    response = client.post(
        "/api/v1/predictions?explain=false", files={"file": ("x.jpg", data)}, data=form
    )
    assert response.status_code == 201, response.json()
    return response.json()


def test_feedback_round_trip_through_the_database(
    tmp_path, tiny_bundle, fixture_images, database_url
):
    settings = make_settings(tmp_path, tiny_bundle, database_url)
    with TestClient(create_app(settings)) as client:
        first = predict(client, fixture_images[0].read_bytes(), age="61", site="face")
        second = predict(client, fixture_images[1].read_bytes())
        agree = client.post(f"/api/v1/predictions/{first['id']}/feedback", json={"agree": True})
        assert agree.status_code == 201
        assert agree.json()["correct_label"] == first["top"][0]["code"]
        other = client.post(
            f"/api/v1/predictions/{second['id']}/feedback",
            json={"agree": False, "correct_label": "MEL", "note": "  histology: melanoma  "},
        )
        assert other.status_code == 201
    # A new app on the same database sees everything: it was stored, not cached.
    with TestClient(create_app(settings)) as client:
        assert client.get(f"/api/v1/predictions/{first['id']}").json()["id"] == first["id"]
        exported = client.get("/api/v1/feedback", headers=AUTH)
    assert exported.status_code == 200
    rows = exported.json()["feedback"]
    assert exported.json()["count"] == 2
    assert rows[0]["prediction_id"] == first["id"]
    assert rows[0]["agree"] is True
    assert rows[0]["age"] == 61.0 and rows[0]["site"] == "face"
    assert rows[1] | {"id": 0, "created_at": ""} == {
        "id": 0,
        "prediction_id": second["id"],
        "created_at": "",
        "model_version": second["model"]["version"],
        "predicted_label": second["top"][0]["code"],
        "agree": False,
        "correct_label": "mel",
        "note": "histology: melanoma",
        "triage": second["triage"]["result"],
        "uncertain": second["uncertain"],
        "age": None,
        "sex": None,
        "site": None,
    }
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", rows[1]["created_at"])


def test_feedback_csv_export(client, fixture_images):
    created = predict(client, fixture_images[0].read_bytes())
    note = "=HYPERLINK(1)"  # must not run as a spreadsheet formula
    client.post(
        f"/api/v1/predictions/{created['id']}/feedback",
        json={"agree": False, "correct_label": "bcc", "note": note},
    )
    response = client.get("/api/v1/feedback?format=csv", headers=AUTH)
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    assert "attachment" in response.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert len(rows) == 1
    assert rows[0]["correct_label"] == "bcc" and rows[0]["agree"] == "False"
    assert rows[0]["note"] == "'" + note


@pytest.mark.parametrize(
    ("body", "status", "detail"),
    [
        ({"agree": False}, 422, "correct_label: required when agree is false"),
        (
            {"agree": False, "correct_label": "wart"},
            422,
            "correct_label: 'wart' is not a class code; use one of ",
        ),
        ({"agree": True, "confidence": 3}, 422, "confidence: Extra inputs are not permitted"),
        ({}, 422, "agree: Field required"),
        ({"agree": False, "correct_label": "x" * 65}, 422, "correct_label: String should have"),
    ],
)
def test_bad_feedback_is_422(client, fixture_images, body, status, detail):
    created = predict(client, fixture_images[0].read_bytes())
    response = client.post(f"/api/v1/predictions/{created['id']}/feedback", json=body)
    assert response.status_code == status
    assert response.json()["detail"].startswith(detail)


def test_feedback_contradicting_agree_is_422(client, fixture_images):
    created = predict(client, fixture_images[0].read_bytes())
    top = created["top"][0]["code"]
    other = "df" if top != "df" else "nv"
    response = client.post(
        f"/api/v1/predictions/{created['id']}/feedback",
        json={"agree": True, "correct_label": other},
    )
    assert response.status_code == 422
    assert response.json() == {
        "detail": f"correct_label: {other!r} contradicts agree=true (the prediction was {top!r})"
    }


def test_feedback_on_unknown_prediction_is_404(client):
    response = client.post("/api/v1/predictions/feedcafe/feedback", json={"agree": True})
    assert response.status_code == 404
    assert response.json() == {"detail": "prediction 'feedcafe' not found"}


def test_export_needs_the_token(client):
    missing = client.get("/api/v1/feedback")
    assert missing.status_code == 401
    assert missing.json() == {
        "detail": "missing API token; send the header 'Authorization: Bearer <token>'"
    }
    assert missing.headers["www-authenticate"] == "Bearer"
    wrong = client.get("/api/v1/feedback", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 403
    assert wrong.json() == {"detail": "invalid API token"}
    assert client.get("/api/v1/feedback", headers=AUTH).json() == {"count": 0, "feedback": []}


def test_export_is_disabled_without_a_configured_token(tmp_path, tiny_bundle):
    settings = Settings(model=tiny_bundle, data_dir=tmp_path)
    with TestClient(create_app(settings)) as client:
        response = client.get("/api/v1/feedback", headers=AUTH)
    assert response.status_code == 403
    assert response.json() == {
        "detail": "feedback export is disabled: the server has no API token (DERMALENS_API_TOKEN)"
    }


def test_migrations_match_the_models_and_sqlite_uses_wal(tmp_path, database_url):
    if make_url(database_url).get_backend_name() == "sqlite":  # in a folder not yet made
        database_url = f"sqlite:///{tmp_path / 'sub' / 'db.sqlite'}"
    engine = open_database(database_url)
    migrate(engine)
    migrate(engine)  # idempotent: a restart runs it again
    with engine.connect() as connection:
        assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []
        if engine.dialect.name == "sqlite":
            assert connection.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert connection.execute(text("SELECT version_num FROM alembic_version")).scalar()
    assert set(inspect(engine).get_table_names()) == {
        *("alembic_version", "predictions", "feedback", "patients", "lesions", "visits"),
        *("staff", "api_tokens", "login_sessions", "audit_events"),
    }
    engine.dispose()


def phone_photo(upright: Image.Image) -> bytes:
    """A JPEG as phones write it: sideways pixels, EXIF Orientation=6 and a GPS position."""
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6
    exif[ExifTags.Base.Make] = "PhoneCo"
    exif.get_ifd(ExifTags.IFD.GPSInfo).update(
        {ExifTags.GPS.GPSLatitudeRef: "N", ExifTags.GPS.GPSLatitude: (52.0, 22.0, 7.5)}
    )
    buffer = io.BytesIO()
    upright.transpose(Image.Transpose.ROTATE_90).save(buffer, "JPEG", quality=95, exif=exif)
    data = buffer.getvalue()
    assert Image.open(io.BytesIO(data)).getexif().get_ifd(ExifTags.IFD.GPSInfo)
    return data


def test_consented_image_is_kept_without_exif_under_a_random_name(
    tmp_path, tiny_bundle, fixture_images, database_url
):
    uploads = tmp_path / "kept"
    settings = make_settings(tmp_path, tiny_bundle, database_url, keep_uploads_dir=uploads)
    upright = Image.open(fixture_images[3]).convert("RGB")
    with TestClient(create_app(settings)) as client:
        not_kept = predict(client, phone_photo(upright))
        assert not_kept["image_kept"] is False
        assert not uploads.exists()
        kept = predict(client, phone_photo(upright), consent="true")
        assert kept["image_kept"] is True
        files = list(uploads.iterdir())
        assert len(files) == 1 and re.fullmatch(r"[0-9a-f]{32}\.jpg", files[0].name)
        assert client.get(f"/static/{files[0].name}").status_code == 404
        assert client.get(f"/{files[0].name}").status_code == 404
    saved = Image.open(files[0])
    assert saved.size == upright.size  # turned upright, full size
    assert not saved.getexif() and "exif" not in saved.info
    assert (files[0].stat().st_mode & 0o777) == 0o600
    engine = open_database(settings.db_url)
    with engine.connect() as connection:
        names = connection.execute(text("SELECT image_file FROM predictions")).scalars().all()
    engine.dispose()
    assert sorted(names, key=str) == sorted([None, files[0].name], key=str)


def test_text_with_a_nul_character_is_422_not_a_database_error(client, fixture_images):
    """PostgreSQL cannot store U+0000 in text (SQLite can): refused up front, on both."""
    created = predict(client, fixture_images[0].read_bytes())
    response = client.post(
        f"/api/v1/predictions/{created['id']}/feedback",
        json={"agree": True, "note": "histology\x00 pending"},
    )
    assert response.status_code == 422
    assert response.json()["detail"] == "note: must not contain the NUL character (U+0000)"
