"""Patient records through the REST API: patients, lesions, visits, images filed under a
lesion at a visit, a lesion's history, deletion (with kept image files) and the export.
Each test runs on SQLite and on PostgreSQL (the `database_url` fixture).

    nice -n 10 pytest tests/test_clinic_records.py -q
"""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from clinic_helpers import add_account, clinic_settings, file_image, new_patient, token_for
from dermalens.serve import staff
from dermalens.serve.account_tables import AuditEventRecord
from dermalens.serve.app import create_app
from dermalens.serve.tables import (
    FeedbackRecord,
    LesionRecord,
    PatientRecord,
    PredictionRecord,
    VisitRecord,
)


@pytest.fixture
def clinic(tmp_path, tiny_bundle, database_url):
    settings = clinic_settings(tmp_path, tiny_bundle, database_url)
    add_account(settings, "carla")
    add_account(settings, "ada", role="admin")
    with TestClient(create_app(settings)) as client:
        yield client, settings, token_for(settings, "carla")


def chart(client, auth, data: bytes, clinic_id: str = "PT-1") -> dict:
    """A patient with one lesion, two visits (the later one recorded first) and an image each."""
    patient = new_patient(client, auth, clinic_id, sex="female", birth_year=1960)
    base = f"/api/v1/patients/{patient['id']}"
    lesion = client.post(
        f"{base}/lesions", json={"site": "Back", "label": "left scapula"}, headers=auth
    )
    assert lesion.status_code == 201, lesion.json()
    late = client.post(f"{base}/visits", json={"date": "2026-06-01"}, headers=auth).json()
    early = client.post(f"{base}/visits", json={"date": "2025-06-01"}, headers=auth).json()
    lesion = lesion.json()
    filed = [
        file_image(client, auth, patient["id"], lesion["id"], v["id"], data) for v in (late, early)
    ]
    return {
        "patient": patient,
        "lesion": lesion,
        "visits": (early, late),
        "filed": filed,
        "base": base,
    }


def test_records_round_trip(clinic, fixture_images):
    client, _, auth = clinic
    c = chart(client, auth, fixture_images[0].read_bytes())
    patient, lesion, base = c["patient"], c["lesion"], c["base"]
    assert lesion["site"] == "back" and lesion["label"] == "left scapula"
    first = c["filed"][0]
    # the model gets age at the visit, sex and site from the records
    assert first["prediction"]["patient"] == {
        "age": 66.0,
        "sex": "female",
        "site": "back",
        "clinical": {},
    }
    assert first["prediction"]["image_kept"] is True and first["image_url"].endswith("/image")
    history = client.get(f"{base}/lesions/{lesion['id']}/history", headers=auth).json()
    assert [p["visit_date"] for p in history["predictions"]] == ["2025-06-01", "2026-06-01"]
    image = client.get(first["image_url"], headers=auth)
    assert image.status_code == 200 and image.headers["content-type"] == "image/jpeg"
    visit = client.get(f"{base}/visits/{c['visits'][1]['id']}", headers=auth).json()
    assert [p["prediction_id"] for p in visit["predictions"]] == [first["prediction_id"]]
    found = client.get("/api/v1/patients?clinic_id=PT-1", headers=auth).json()
    assert [p["id"] for p in found] == [patient["id"]]
    changed = client.patch(f"{base}", json={"note": "follow up yearly"}, headers=auth).json()
    assert changed["note"] == "follow up yearly" and changed["clinic_id"] == "PT-1"
    # a stored prediction filed under a patient is no longer readable anonymously
    url = f"/api/v1/predictions/{first['prediction_id']}"
    assert client.get(url).status_code == 401
    assert client.get(url, headers=auth).json()["id"] == first["prediction_id"]


def test_attach_an_earlier_quick_check(clinic, fixture_images):
    client, _, auth = clinic
    quick = client.post(
        "/api/v1/predictions?explain=false",
        files={"file": ("x.jpg", fixture_images[1].read_bytes())},
    ).json()
    patient = new_patient(client, auth)
    base = f"/api/v1/patients/{patient['id']}"
    lesion = client.post(f"{base}/lesions", json={"label": "nose"}, headers=auth).json()
    visit = client.post(f"{base}/visits", json={"date": "2026-01-02"}, headers=auth).json()
    url = f"{base}/lesions/{lesion['id']}/predictions/{quick['id']}"
    filed = client.put(url, json={"visit_id": visit["id"]}, headers=auth)
    assert filed.status_code == 200
    assert filed.json()["image_url"] is None and filed.json()["visit_id"] == visit["id"]
    other = new_patient(client, auth, "PT-2")
    other_visit = client.post(
        f"/api/v1/patients/{other['id']}/visits", json={"date": "2026-01-02"}, headers=auth
    ).json()
    wrong = client.put(url, json={"visit_id": other_visit["id"]}, headers=auth)
    assert wrong.status_code == 422
    assert wrong.json() == {
        "detail": f"visit_id: visit {other_visit['id']!r} is not a visit of this patient"
    }


def test_bad_requests_have_exact_details(clinic):
    client, _, auth = clinic
    patient = new_patient(client, auth)
    again = client.post("/api/v1/patients", json={"clinic_id": "PT-1"}, headers=auth)
    assert again.status_code == 409
    assert again.json() == {"detail": "a patient with clinic_id 'PT-1' already exists"}
    assert client.get("/api/v1/patients/nope", headers=auth).json() == {
        "detail": "patient 'nope' not found"
    }
    base = f"/api/v1/patients/{patient['id']}"
    bad_site = client.post(f"{base}/lesions", json={"label": "x", "site": "elbow"}, headers=auth)
    assert bad_site.status_code == 422
    assert bad_site.json()["detail"].startswith("site: Value error, unknown site 'elbow'; use one")
    name = client.post("/api/v1/patients", json={"clinic_id": "P-9", "name": "Ann"}, headers=auth)
    assert name.json()["detail"] == "name: Extra inputs are not permitted"
    other = new_patient(client, auth, "PT-2")
    lesion = client.post(f"{base}/lesions", json={"label": "x"}, headers=auth).json()
    # a lesion is found only under its own patient
    cross = client.get(f"/api/v1/patients/{other['id']}/lesions/{lesion['id']}", headers=auth)
    assert cross.status_code == 404 and cross.json() == {
        "detail": f"lesion {lesion['id']!r} not found"
    }


def count(settings, table) -> int:
    with staff.database(settings) as session:
        return session.scalar(select(func.count()).select_from(table))


def test_deleting_a_patient_deletes_images_predictions_feedback_keeps_audit(clinic, fixture_images):
    client, settings, auth = clinic
    kept = chart(client, auth, fixture_images[2].read_bytes(), "PT-KEEP")
    gone = chart(client, auth, fixture_images[3].read_bytes(), "PT-GONE")
    for filed in gone["filed"]:
        feedback = client.post(
            f"/api/v1/predictions/{filed['prediction_id']}/feedback",
            json={"agree": False, "correct_label": "mel", "note": "biopsy: melanoma"},
            headers=auth,
        )
        assert feedback.status_code == 201
    uploads = settings.uploads_dir
    assert len(list(uploads.glob("*.jpg"))) == 4
    patient_id = gone["patient"]["id"]
    assert client.get(f"{gone['base']}/export", headers=auth).status_code == 200
    assert client.get(gone["base"], headers=auth).status_code == 200
    assert client.delete(gone["base"], headers=auth).status_code == 204
    assert client.get(gone["base"], headers=auth).status_code == 404
    assert client.get(gone["filed"][0]["image_url"], headers=auth).status_code == 404
    assert len(list(uploads.glob("*.jpg"))) == 2  # only the other patient's images are left
    assert (count(settings, PatientRecord), count(settings, LesionRecord)) == (1, 1)
    assert (count(settings, VisitRecord), count(settings, PredictionRecord)) == (2, 2)
    assert count(settings, FeedbackRecord) == 0
    with staff.database(settings) as session:
        events = list(
            session.scalars(
                select(AuditEventRecord).where(AuditEventRecord.patient_id == patient_id)
            )
        )
        texts = " ".join(f"{e.path} {e.resource_id} {e.action}" for e in events)
    assert events[-1].action == "delete" and events[-1].username == "carla"
    assert {"create", "read", "delete"} <= {e.action for e in events}
    assert "PT-GONE" not in texts and "biopsy" not in texts and "scapula" not in texts
    history = client.get(f"{kept['base']}/lesions/{kept['lesion']['id']}/history", headers=auth)
    assert len(history.json()["predictions"]) == 2


def test_patient_export_has_everything(clinic, fixture_images):
    client, _, auth = clinic
    c = chart(client, auth, fixture_images[4].read_bytes())
    first = c["filed"][0]["prediction_id"]
    client.post(f"/api/v1/predictions/{first}/feedback", json={"agree": True}, headers=auth)
    export = client.get(f"{c['base']}/export", headers=auth)
    assert export.status_code == 200
    body = export.json()
    assert body["patient"]["clinic_id"] == "PT-1"
    assert [lesion["label"] for lesion in body["lesions"]] == ["left scapula"]
    assert [v["date"] for v in body["visits"]] == ["2025-06-01", "2026-06-01"]
    assert {p["id"] for p in body["predictions"]} == {f["prediction_id"] for f in c["filed"]}
    assert all(p["image_kept"] and p["result"]["probabilities"] for p in body["predictions"])
    assert [(f["prediction_id"], f["agree"]) for f in body["feedback"]] == [(first, True)]
