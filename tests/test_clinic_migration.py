"""Upgrading a database written by the schema before patient records (revision 0001) keeps
every prediction and feedback row, and the upgraded service serves them and can file them
under a patient; upgrading one from before token expiry (0002) keeps every API token, each
with a sensible expiry. Runs on SQLite and on PostgreSQL (the `database_url` fixture).

    nice -n 10 pytest tests/test_clinic_migration.py -q
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import DateTime, String, inspect, text

from clinic_helpers import PASSWORD, add_account, clinic_settings, new_patient, token_for
from dermalens.runtime.predictor import Predictor
from dermalens.serve import accounts, inference
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


TOKEN_COLUMNS = "id, staff_id, name, token_sha256, prefix, created_at, last_used_at, revoked_at"


def test_upgrade_from_0002_gives_old_tokens_an_expiry(tmp_path, tiny_bundle, database_url):
    """0003: every token row kept; a recent one expires 90 days after it was made, an old
    one (which would be past that) 30 days after the upgrade; a revoked one stays revoked."""
    engine = open_database(database_url)
    migrate(engine, "0002")
    now = datetime.now(UTC)
    secrets = {"recent": "dlt_recent-token-secret", "old": "dlt_old", "gone": "dlt_gone"}
    made = {"recent": now - timedelta(days=10), "old": now - timedelta(days=400), "gone": now}
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO staff (username, role, password_hash, disabled, failed_logins, "
                "created_at) VALUES ('carla', 'clinician', :h, false, 0, :t)"
            ),
            {"h": accounts.HASHER.hash(PASSWORD), "t": made["old"]},
        )
        for k, (name, secret) in enumerate(secrets.items(), start=1):
            connection.execute(
                text(
                    f"INSERT INTO api_tokens ({TOKEN_COLUMNS}) "
                    "VALUES (:id, 1, :name, :sha, :prefix, :made, :used, :revoked)"
                ),
                {
                    "id": k,
                    "name": name,
                    "sha": accounts.digest(secret),
                    "prefix": secret[:10],
                    "made": made[name],
                    "used": made[name] if name == "old" else None,
                    "revoked": now if name == "gone" else None,
                },
            )
    read = text(f"SELECT {TOKEN_COLUMNS} FROM api_tokens ORDER BY id")
    with engine.connect() as connection:
        before = [tuple(r) for r in connection.execute(read)]
    migrate(engine)
    upgraded = datetime.now(UTC)
    with engine.connect() as connection:
        assert [tuple(r) for r in connection.execute(read)] == before
        typed = text("SELECT name, expires_at FROM api_tokens").columns(
            name=String(), expires_at=DateTime(timezone=True)
        )
        expiry = dict(connection.execute(typed).all())
    expiry = {name: accounts.aware(when) for name, when in expiry.items()}
    assert abs(expiry["recent"] - (made["recent"] + timedelta(days=90))) < timedelta(seconds=1)
    assert now + timedelta(days=30) <= expiry["old"] <= upgraded + timedelta(days=30)
    column = [c for c in inspect(engine).get_columns("api_tokens") if c["name"] == "expires_at"]
    assert column[0]["nullable"] is False
    engine.dispose()

    settings = clinic_settings(tmp_path, tiny_bundle, database_url)
    with TestClient(create_app(settings)) as client:
        bearer = {n: {"Authorization": f"Bearer {s}"} for n, s in secrets.items()}
        assert client.get("/api/v1/me", headers=bearer["old"]).json()["username"] == "carla"
        gone = client.get("/api/v1/me", headers=bearer["gone"])
        assert gone.json() == {"detail": "invalid or revoked API token"}
        listed = client.get("/api/v1/me/tokens", headers=bearer["recent"]).json()
    assert [(t["name"], t["state"]) for t in listed] == [
        ("recent", "active"),
        ("old", "active"),
        ("gone", "revoked"),
    ]
