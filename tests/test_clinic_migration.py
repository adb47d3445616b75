"""Upgrading a database written by the schema before patient records (revision 0001) keeps
every prediction and feedback row, and the upgraded service serves them and can file them
under a patient. Runs on SQLite and on PostgreSQL (the `database_url` fixture).

    nice -n 10 pytest tests/test_clinic_migration.py -q
"""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import inspect, text

from clinic_helpers import add_account, clinic_settings, new_patient, token_for
from dermalens.runtime.predictor import Predictor
from dermalens.serve import inference
from dermalens.serve.app import create_app
from dermalens.serve.db import migrate, open_database
from dermalens.serve.schemas import Patient

PREDICTION_COLUMNS = (
    "id, created_at, model_name, model_version, label, triage, uncertain, age, sex, site, "
    "image_file, result"
)
FEEDBACK_COLUMNS = (
    "prediction_id, created_at, model_version, predicted_label, agree, correct_label, note"
)


def old_rows(bundle, images) -> list[dict]:
    """Prediction rows as today's service writes them (crud.add_prediction's columns)."""
    predictor = Predictor(bundle, backend="onnx")
    rows = []
    for k, path in enumerate(images):
        out = inference.predict(
            predictor, Image.open(path).convert("RGB"), Patient(age=40.0 + k), explain=False
        )
        rows.append(
            {
                "id": out.id,
                "created_at": datetime(2025, 1, 1 + k, tzinfo=UTC),
                "model_name": out.model.name,
                "model_version": out.model.version,
                "label": out.top[0].code,
                "triage": out.triage.result,
                "uncertain": out.uncertain,
                "age": out.patient.age,
                "sex": None,
                "site": None,
                "image_file": None,
                "result": out.model_dump_json(exclude={"heatmap"}),
            }
        )
    return rows


def snapshot(connection) -> tuple[list, list]:
    predictions = connection.execute(
        text(f"SELECT {PREDICTION_COLUMNS} FROM predictions ORDER BY id")
    ).all()
    feedback = connection.execute(text(f"SELECT id, {FEEDBACK_COLUMNS} FROM feedback ORDER BY id"))
    return [tuple(r) for r in predictions], [tuple(r) for r in feedback.all()]


def test_upgrade_from_0001_keeps_every_row(tmp_path, tiny_bundle, fixture_images, database_url):
    engine = open_database(database_url)
    migrate(engine, "0001")
    rows = old_rows(tiny_bundle, fixture_images[:3])
    placeholders = ", ".join(f":{c.strip()}" for c in PREDICTION_COLUMNS.split(","))
    with engine.begin() as connection:
        for row in rows:
            connection.execute(
                text(f"INSERT INTO predictions ({PREDICTION_COLUMNS}) VALUES ({placeholders})"),
                row,
            )
        connection.execute(
            text(f"INSERT INTO feedback ({FEEDBACK_COLUMNS}) VALUES (:p, :t, :v, :l, :a, :c, :n)"),
            [
                {
                    "p": rows[0]["id"],
                    "t": datetime(2025, 2, 1, tzinfo=UTC),
                    "v": "m@1",
                    "l": rows[0]["label"],
                    "a": True,
                    "c": rows[0]["label"],
                    "n": None,
                },
                {
                    "p": rows[1]["id"],
                    "t": datetime(2025, 2, 2, tzinfo=UTC),
                    "v": "m@1",
                    "l": rows[1]["label"],
                    "a": False,
                    "c": "mel",
                    "n": "histology",
                },
            ],
        )
    with engine.connect() as connection:
        before = snapshot(connection)
    migrate(engine)
    with engine.connect() as connection:
        assert snapshot(connection) == before
        filed = connection.execute(text("SELECT lesion_id, visit_id FROM predictions")).all()
    assert filed == [(None, None)] * 3
    assert {"patients", "lesions", "visits", "staff", "audit_events"} <= set(
        inspect(engine).get_table_names()
    )
    engine.dispose()

    settings = clinic_settings(tmp_path, tiny_bundle, database_url)
    add_account(settings, "carla")
    with TestClient(create_app(settings)) as client:
        served = client.get(f"/api/v1/predictions/{rows[2]['id']}")
        assert served.status_code == 200 and served.json()["patient"]["age"] == 42.0
        export = client.get("/api/v1/feedback", headers={"Authorization": "Bearer export-token"})
        assert [f["note"] for f in export.json()["feedback"]] == [None, "histology"]
        auth = token_for(settings, "carla")
        patient = new_patient(client, auth)
        base = f"/api/v1/patients/{patient['id']}"
        lesion = client.post(f"{base}/lesions", json={"label": "arm"}, headers=auth).json()
        visit = client.post(f"{base}/visits", json={"date": "2025-01-01"}, headers=auth).json()
        attach = client.put(
            f"{base}/lesions/{lesion['id']}/predictions/{rows[0]['id']}",
            json={"visit_id": visit["id"]},
            headers=auth,
        )
        assert attach.status_code == 200
        assert attach.json()["prediction"]["id"] == rows[0]["id"]
