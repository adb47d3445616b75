"""FHIR R4B export: the Bundle validates with fhir.resources (round trip), carries the codes,
is preliminary, references the kept image without inlining it, and 404s with a sentence.

nice -n 5 pytest tests/test_fhir_export.py -q
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from fastapi.testclient import TestClient
from fhir.resources.R4B.bundle import Bundle

from dermalens import clinical_codes
from dermalens.runtime.predictor import DISCLAIMER
from dermalens.serve.app import create_app
from dermalens.serve.fhir_export import report_bundle
from dermalens.serve.report_items import PatientRef, ReportItem
from dermalens.serve.schemas import ClassScore, ModelRef, Patient, PredictionOut, Triage
from dermalens.serve.settings import Settings


@pytest.fixture(scope="module")
def client(tiny_bundle, tmp_path_factory):
    settings = Settings(model=tiny_bundle, data_dir=tmp_path_factory.mktemp("fhir-data"))
    with TestClient(create_app(settings)) as client:
        yield client


def predict(client, jpeg: bytes, consent: bool) -> str:
    files = {"file": ("lesion.jpg", jpeg, "image/jpeg")}
    response = client.post("/api/v1/predictions", files=files, data={"consent": str(consent)})
    assert response.status_code == 201, response.text
    return response.json()["id"]


def resources(bundle: dict, kind: str) -> list[dict]:
    return [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == kind]


def test_prediction_bundle_validates_and_carries_report_codes_device(client, fixture_images):
    prediction_id = predict(client, fixture_images[0].read_bytes(), consent=True)
    response = client.get(f"/api/v1/predictions/{prediction_id}/fhir")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/fhir+json")
    body = response.json()
    again = Bundle.model_validate(body)  # round trip through the R4B models
    assert json.loads(again.model_dump_json(exclude_none=True))["entry"] == body["entry"]
    assert body["type"] == "collection"
    [report] = resources(body, "DiagnosticReport")
    assert report["status"] == "preliminary"
    assert DISCLAIMER in report["conclusion"]
    stored = client.get(f"/api/v1/predictions/{prediction_id}").json()
    answer = stored["top"][0]["code"]
    [concept] = report["conclusionCode"]
    coded = {(c["system"], c["code"]) for c in concept["coding"]}
    assert {(c.system, c.code) for c in clinical_codes.emitted(answer)} <= coded
    assert report["presentedForm"][0]["url"].endswith(f"/{prediction_id}/report.pdf")
    observations = resources(body, "Observation")
    assert len(observations) == len(stored["top"]) + 1  # the top classes and the triage
    assert all(o["status"] == "preliminary" for o in observations)
    values = [o["valueQuantity"]["value"] for o in observations if "valueQuantity" in o]
    assert values == [round(c["probability"], 4) for c in stored["top"]]
    [device] = resources(body, "Device")
    assert device["version"][0]["value"] == stored["model"]["version"]
    [media] = resources(body, "Media")  # consent: the image is referenced, not inlined
    assert "data" not in media["content"] and media["content"]["size"] > 0
    assert report["media"][0]["link"]["reference"] in {e["fullUrl"] for e in body["entry"]}


def test_without_consent_there_is_no_media_and_transaction_entries_post(client, fixture_images):
    prediction_id = predict(client, fixture_images[1].read_bytes(), consent=False)
    response = client.get(f"/api/v1/predictions/{prediction_id}/fhir?type=transaction")
    body = response.json()
    Bundle.model_validate(body)
    assert body["type"] == "transaction" and not resources(body, "Media")
    assert {e["request"]["method"] for e in body["entry"]} == {"POST"}


def test_unknown_prediction_is_404_with_a_sentence(client):
    response = client.get("/api/v1/predictions/" + "0" * 32 + "/fhir")
    assert response.status_code == 404
    assert response.json() == {"detail": f"prediction {'0' * 32!r} not found"}


def test_bad_bundle_type_is_422_naming_it(client, fixture_images):
    prediction_id = predict(client, fixture_images[2].read_bytes(), consent=False)
    response = client.get(f"/api/v1/predictions/{prediction_id}/fhir?type=document")
    assert response.status_code == 422 and "type" in response.json()["detail"]


def melanoma(prediction_id: str) -> PredictionOut:
    return PredictionOut(
        id=prediction_id,
        created_at=datetime(2026, 1, 2, 3, 4, tzinfo=UTC),
        model=ModelRef(name="m", version="m@0123456789ab"),
        top=[
            ClassScore(code="mel", name="Melanoma", probability=0.7, malignant=True),
            ClassScore(code="nv", name="Melanocytic nevus", probability=0.2, malignant=False),
        ],
        probabilities={"mel": 0.7, "nv": 0.2},
        triage=Triage(result="malignant", rule="malignant if >= 0.3", malignant_probability=0.7),
        uncertain=False,
        timings_ms={},
        patient=Patient(),
        image_kept=False,
        disclaimer=DISCLAIMER,
    )


def test_visit_report_has_the_patient_as_subject_and_snomed_icd11_codes():
    items = [
        ReportItem(melanoma("a" * 32), None, "left shoulder"),
        ReportItem(melanoma("b" * 32), None),
    ]
    subject = PatientRef("urn:oid:1.2.3.4", "P-0042")
    bundle = report_bundle(items, "visit-7", subject=subject)
    body = json.loads(bundle.model_dump_json(exclude_none=True))
    [report] = resources(body, "DiagnosticReport")
    [patient] = resources(body, "Patient")
    assert patient["identifier"] == [{"system": "urn:oid:1.2.3.4", "value": "P-0042"}]
    assert "name" not in patient
    assert report["subject"]["reference"] == next(
        e["fullUrl"] for e in body["entry"] if e["resource"]["resourceType"] == "Patient"
    )
    codes = {(c["system"], c["code"]) for c in report["conclusionCode"][0]["coding"]}
    assert (clinical_codes.SNOMED, "93655004") in codes and (clinical_codes.ICD11, "2C30") in codes
    assert "left shoulder" in report["conclusion"] and len(report["result"]) == 2 * 3
    assert (
        report_bundle(items, "visit-7", subject=subject).entry[1].fullUrl
        == body["entry"][1]["fullUrl"]
    )


def test_a_report_over_two_model_versions_names_each_device():
    older = melanoma("e" * 32).model_copy(update={"model": ModelRef(name="m", version="m@old")})
    body = json.loads(
        report_bundle(
            [ReportItem(older, None), ReportItem(melanoma("f" * 32), None)], "v"
        ).model_dump_json(exclude_none=True)
    )
    devices = {
        e["fullUrl"]: e["resource"]["version"][0]["value"]
        for e in body["entry"]
        if e["resource"]["resourceType"] == "Device"
    }
    assert sorted(devices.values()) == ["m@0123456789ab", "m@old"]
    used = {o["device"]["reference"] for o in resources(body, "Observation")}
    assert used == set(devices)
