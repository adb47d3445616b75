"""A visit as a document: one FHIR R4B report with the patient (pseudonymous identifier) as
subject and one PDF over the lesions filed at the visit; staff only, audited.

nice -n 5 pytest tests/test_visit_documents.py -q
"""

from __future__ import annotations

import io
import re

import pytest
from fastapi.testclient import TestClient
from fhir.resources.R4B.bundle import Bundle
from pypdf import PdfReader

from clinic_helpers import add_account, clinic_settings, file_image, new_patient, token_for
from dermalens.runtime.predictor import DISCLAIMER
from dermalens.serve import audit, staff
from dermalens.serve.app import create_app
from dermalens.serve.settings import Settings

FONT = Settings.model_fields["report_font"].default
LABEL = "Schulter links, 3 cm unter dem Schlüsselbein"


@pytest.fixture(scope="module")
def clinic(tmp_path_factory, tiny_bundle):
    tmp = tmp_path_factory.mktemp("visit-documents")
    settings = clinic_settings(
        tmp, tiny_bundle, f"sqlite:///{tmp / 'db.sqlite'}", fhir_patient_system="urn:oid:1.2.3"
    )
    add_account(settings, "vera")
    with TestClient(create_app(settings)) as client:
        yield client, token_for(settings, "vera"), settings


@pytest.fixture(scope="module")
def visit(clinic, fixture_images):
    """A patient, two lesions, one visit with an image of each."""
    client, auth, _settings = clinic
    patient = new_patient(client, auth, "PT-DOC-7")
    base = f"/api/v1/patients/{patient['id']}"
    lesions = [
        client.post(f"{base}/lesions", json={"label": label}, headers=auth).json()
        for label in (LABEL, "back, left of the spine")
    ]
    seen = client.post(f"{base}/visits", json={"date": "2026-06-01"}, headers=auth).json()
    filed = [
        file_image(client, auth, patient["id"], lesion["id"], seen["id"], image.read_bytes())
        for lesion, image in zip(lesions, fixture_images[:2])
    ]
    return {"base": f"{base}/visits/{seen['id']}", "patient": patient, "filed": filed}


def test_visit_fhir_has_the_patient_as_subject_and_one_report(clinic, visit):
    client, auth, _settings = clinic
    response = client.get(f"{visit['base']}/fhir", headers=auth)
    assert response.status_code == 200, response.text
    body = response.json()
    Bundle.model_validate(body)
    kinds = [e["resource"]["resourceType"] for e in body["entry"]]
    assert kinds.count("DiagnosticReport") == 1 and kinds.count("Patient") == 1
    [patient] = [e for e in body["entry"] if e["resource"]["resourceType"] == "Patient"]
    assert patient["resource"]["identifier"] == [{"system": "urn:oid:1.2.3", "value": "PT-DOC-7"}]
    report = body["entry"][0]["resource"]
    assert (
        report["status"] == "preliminary" and report["subject"]["reference"] == patient["fullUrl"]
    )
    assert LABEL in report["conclusion"] and DISCLAIMER in report["conclusion"]
    assert len(report["conclusionCode"]) == 2  # one answer per lesion image
    assert kinds.count("Observation") == sum(
        len(f["prediction"]["top"]) + 1 for f in visit["filed"]
    )


def test_visit_pdf_prints_both_lesions(clinic, visit):
    client, auth, _settings = clinic
    if not FONT.is_file():
        pytest.skip(f"{FONT} missing: apt-get install fonts-dejavu-core")
    response = client.get(f"{visit['base']}/report.pdf", headers=auth)
    assert response.status_code == 200 and response.content.startswith(b"%PDF-")
    reader = PdfReader(io.BytesIO(response.content))
    text = re.sub(r"\s+", " ", " ".join(p.extract_text() for p in reader.pages))
    assert LABEL in text and "back, left of the spine" in text and "PT-DOC-7" in text
    assert DISCLAIMER in text and visit["filed"][0]["prediction"]["model"]["version"] in text


def test_visit_exports_are_in_the_audit_log(clinic, visit):
    client, auth, settings = clinic
    client.get(f"{visit['base']}/fhir", headers=auth)
    with staff.database(settings) as session:
        events = audit.events(session, visit["patient"]["id"])
        exported = [e for e in events if e.action == "export" and e.path.endswith("/fhir")]
    assert exported and exported[-1].username == "vera" and exported[-1].resource == "visit"


def test_visit_documents_need_an_account(clinic, visit):
    client, _auth, _settings = clinic
    for suffix in ("fhir", "report.pdf"):
        assert client.get(f"{visit['base']}/{suffix}").status_code == 401


def test_an_unknown_visit_is_404_naming_it(clinic, visit):
    client, auth, _settings = clinic
    base = f"/api/v1/patients/{visit['patient']['id']}/visits/{'0' * 32}"
    response = client.get(f"{base}/fhir", headers=auth)
    assert response.status_code == 404
    assert response.json() == {"detail": f"visit {'0' * 32!r} not found"}


def test_a_visit_with_nothing_filed_says_so(clinic, visit):
    client, auth, _settings = clinic
    base = f"/api/v1/patients/{visit['patient']['id']}/visits"
    empty = client.post(base, json={"date": "2026-07-01"}, headers=auth).json()
    response = client.get(f"{base}/{empty['id']}/report.pdf", headers=auth)
    assert response.status_code == 404
    assert "nothing to report" in response.json()["detail"]
