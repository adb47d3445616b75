"""The printable PDF report: a real PDF (parsed with pypdf) with the model version, the
notice, the image and its heatmap when kept, and text beyond Latin-1 printed without error.

nice -n 5 pytest tests/test_visit_report.py -q
"""

from __future__ import annotations

import io
import re

import pytest
from fastapi.testclient import TestClient
from pypdf import PdfReader

from dermalens.runtime.predictor import DISCLAIMER
from dermalens.serve import i18n, localize
from dermalens.serve.app import create_app
from dermalens.serve.report_items import ReportItem, stored_image
from dermalens.serve.schemas import ClassScore, ModelRef, Patient, PredictionOut, Triage
from dermalens.serve.settings import Settings
from dermalens.serve.visit_report import ReportFontMissing, render

FONT = Settings.model_fields["report_font"].default


def text_of(pdf: bytes) -> tuple[PdfReader, str]:
    reader = PdfReader(io.BytesIO(pdf))
    text = " ".join(page.extract_text() for page in reader.pages)
    return reader, re.sub(r"\s+", " ", text)  # lines wrap anywhere


@pytest.fixture(scope="module")
def client(tiny_bundle, tmp_path_factory):
    if not FONT.is_file():
        pytest.skip(f"{FONT} missing: apt-get install fonts-dejavu-core")
    settings = Settings(model=tiny_bundle, data_dir=tmp_path_factory.mktemp("pdf-data"))
    with TestClient(create_app(settings)) as client:
        yield client


def predict(client, jpeg: bytes, consent: bool) -> dict:
    files = {"file": ("lesion.jpg", jpeg, "image/jpeg")}
    response = client.post("/api/v1/predictions", files=files, data={"consent": str(consent)})
    assert response.status_code == 201, response.text
    return response.json()


def test_report_pdf_has_version_notice_image_and_heatmap(client, fixture_images):
    body = predict(client, fixture_images[0].read_bytes(), consent=True)
    response = client.get(f"/api/v1/predictions/{body['id']}/report.pdf")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/pdf"
    assert response.content.startswith(b"%PDF-")
    reader, text = text_of(response.content)
    assert body["model"]["version"] in text
    assert DISCLAIMER in text and "Preliminary software result, not a diagnosis." in text
    assert body["top"][0]["name"] in text and body["triage"]["result"] in text
    assert len(reader.pages[0].images) == 2  # the kept image and the redrawn heatmap


def test_without_consent_the_report_says_there_is_no_image(client, fixture_images):
    body = predict(client, fixture_images[1].read_bytes(), consent=False)
    reader, text = text_of(client.get(f"/api/v1/predictions/{body['id']}/report.pdf").content)
    assert "Image not kept" in text and not reader.pages[0].images


def test_the_report_follows_the_requested_language(client, fixture_images):
    body = predict(client, fixture_images[2].read_bytes(), consent=False)
    response = client.get(f"/api/v1/predictions/{body['id']}/report.pdf?lang=de")
    assert response.headers["content-language"] == "de"
    _, text = text_of(response.content)
    with i18n.use("de"):
        notice = i18n._(DISCLAIMER)
    client.cookies.clear()  # ?lang= is remembered: later tests want English
    assert "Bericht zur Hautveränderung" in text and notice in text and "keine Diagnose" in text
    with i18n.use("de"):
        rule = localize.triage_rule(body["triage"]["rule"])
    assert rule != body["triage"]["rule"] and re.sub(r"\s+", " ", rule) in text


def test_unknown_prediction_is_404_with_a_sentence(client):
    response = client.get("/api/v1/predictions/" + "f" * 32 + "/report.pdf")
    assert response.status_code == 404
    assert response.json() == {"detail": f"prediction {'f' * 32!r} not found"}


def sample(prediction_id: str = "c" * 32) -> PredictionOut:
    return PredictionOut(
        id=prediction_id,
        created_at="2026-01-02T03:04:00Z",
        model=ModelRef(name="m", version="m@0123456789ab"),
        top=[ClassScore(code="bcc", name="Basal cell carcinoma", probability=0.6, malignant=True)],
        probabilities={"bcc": 0.6},
        triage=Triage(result="malignant", rule="malignant if >= 0.3", malignant_probability=0.6),
        uncertain=True,
        timings_ms={},
        patient=Patient(),
        image_kept=False,
        disclaimer=DISCLAIMER,
    )


def test_text_beyond_latin1_prints(fixture_images):
    if not FONT.is_file():
        pytest.skip(f"{FONT} missing: apt-get install fonts-dejavu-core")
    label = "Ombro esquerdo, lesão — Größe 3 mm; Łódź, Ωμέγα, Щека €"
    image = stored_image(fixture_images[0].parent, fixture_images[0].name)
    with i18n.use("pt"):
        pdf = render(
            [ReportItem(sample(), image, label), ReportItem(sample("d" * 32), None)],
            FONT,
            patient="Paciente nº 7 (São Paulo)",
            serving_version="other@000000000000",
        )
        notice = i18n._(DISCLAIMER)
    _, text = text_of(pdf)
    for part in (label, "Relatório de lesão de pele", "São Paulo", "m@0123456789ab", notice):
        assert part in text
    assert "Carcinoma basocelular" in text and "0,600" in text  # glossary name, pt decimals
    assert "o servidor agora usa other@000000000000" in text  # why there is no heatmap
    assert "SNOMED CT 254701007" in text and "ICD-11 2C32" in text


def test_a_missing_font_is_named_with_the_package_to_install(tmp_path):
    with pytest.raises(ReportFontMissing, match="fonts-dejavu-core"):
        render([ReportItem(sample(), None)], tmp_path / "none.ttf")
