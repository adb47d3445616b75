"""The scope gate and router through the real bundled models: library, API, page, CLI and
`predict_folder`. A HAM10000 fixture is a dermoscopic close-up (the default model answers);
PAD-UFES-20 fixtures are phone close-ups (the clinical model answers where installed, else
"out_of_scope", no model covering them); a flat frame is not skin. An answer from no model
never carries classes, probabilities or a benign / malignant triage."""

from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from dermalens.bundle import load_bundle
from dermalens.cli import main
from dermalens.runtime.folder import folder_summary, predict_folder
from dermalens.runtime.router import Router
from dermalens.runtime.scope import KINDS, load_gate
from dermalens.serve.app import create_app
from dermalens.serve.settings import Settings

ROOT = Path(__file__).resolve().parent
HAM = ROOT / "fixtures" / "ham" / "ISIC_0024310.jpg"
PAD = sorted((ROOT / "fixtures" / "pad" / "images").glob("*.png"))
DEFAULT = ROOT.parent / "src" / "dermalens" / "bundled" / "default"
CLINICAL = ROOT.parent / "src" / "dermalens" / "bundled" / "clinical"

pytestmark = pytest.mark.skipif(load_gate() is None, reason="no bundled gate")


@pytest.fixture(scope="module")
def router() -> Router:
    return Router.installed(backend="onnx")


@pytest.fixture(scope="module")
def clinical(router) -> list[Path]:
    """The PAD-UFES-20 fixtures the gate takes for clinical close-ups."""
    found = [p for p in PAD if router.predict(p).scope.kind == "clinical"]
    assert found, "the gate took no PAD-UFES-20 fixture for a clinical close-up"
    return found


def assert_no_answer(result) -> None:
    assert result.status in ("out_of_scope", "not_skin")
    assert result.top == [] and result.probabilities == [] and result.classes == []
    assert result.malignant_probability is None and result.label == ""
    assert result.triage not in ("benign", "malignant")
    assert result.scope.model is None and result.scope.advice and result.scope.why


def test_a_dermoscopic_image_is_answered_by_the_default_model(router):
    result = router.predict(HAM, explain=True)
    assert result.status == "ok" and result.triage in ("benign", "malignant")
    assert result.scope.kind == "dermoscopic" and result.scope.reason == "answered"
    assert result.scope.model == router.routes["dermoscopic"].bundle.name
    assert "dermoscopic" in result.scope.why and result.heatmap is not None
    # the routed answer is the default model's own, from the same forward pass
    alone = router.feature.predict(HAM)
    assert result.probabilities == pytest.approx(alone.probabilities, abs=1e-6)


def test_a_clinical_close_up_goes_to_the_clinical_model_or_is_out_of_scope(router, clinical):
    for path in clinical:
        result = router.predict(path)
        if "clinical" in router.routes:
            assert result.scope.model == router.routes["clinical"].bundle.name
        else:
            assert_no_answer(result)
            assert result.scope.reason == "no_model" and "phone close-up" in result.scope.why
            assert result.scope.covers == ["dermoscopic close-ups of skin lesions"]


def test_a_flat_frame_is_not_skin_and_gets_no_answer(router):
    result = router.predict(np.full((150, 200, 3), 128, np.uint8))
    assert_no_answer(result)
    assert result.status == "not_skin" and result.scope.kind == "not_skin"
    assert "flat frame" in result.scope.rule


def test_a_pinned_model_says_it_was_not_made_for_a_clinical_photo(clinical):
    pinned = Router.installed(pin=DEFAULT, backend="onnx")
    assert pinned.pinned_kind == "dermoscopic"
    result = pinned.predict(clinical[0])
    assert_no_answer(result)
    assert result.scope.reason == "not_made_for" and "was made for" in result.scope.why
    assert pinned.predict(HAM).status == "ok"  # what it was made for: answered


def test_predict_folder_routes_and_its_summary_counts_them(router, clinical, tmp_path):
    Image.new("RGB", (200, 150), (128, 128, 128)).save(tmp_path / "blank.png")
    items = list(predict_folder(router, [HAM, *clinical, tmp_path / "blank.png"], progress=False))
    single = [router.predict(p).status for p in [HAM, *clinical, tmp_path / "blank.png"]]
    assert [i.prediction.status for i in items] == single
    summary = folder_summary(router, items)
    assert summary["images"] == len(items) and summary["not_skin"] >= 1
    assert summary["answered_by"][router.feature.bundle.name] >= 1
    expected = sum(s == "out_of_scope" for s in single)
    assert summary["out_of_scope"] == expected
    assert all(i.prediction.scope.kind in KINDS for i in items)


def test_cli_names_the_model_or_gives_the_sentence_and_a_summary(capsys, clinical, monkeypatch):
    monkeypatch.delenv("DERMALENS_MODEL", raising=False)
    assert main(["predict", str(HAM), str(clinical[0])]) == 0
    out = capsys.readouterr().out
    assert "Answered by ham-lite0" in out
    if not CLINICAL.is_dir():
        assert "triage: out_of_scope (no model answered)" in out
        assert "doctor or dermatologist" in out and "rule: clinical:" in out
    assert "summary: " in out
    if CLINICAL.is_dir():  # the clinical model answers the close-up (ok or uncertain)
        assert "answered by " + load_bundle(CLINICAL).name in out
    else:
        assert "1 ok" in out


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    settings = Settings(data_dir=tmp_path_factory.mktemp("data"))  # not pinned: the gate routes
    with TestClient(create_app(settings)) as client:
        yield client


def post(client, path: Path) -> dict:
    with path.open("rb") as fh:
        response = client.post("/api/v1/predictions", files={"file": (path.name, fh)})
    assert response.status_code == 201, response.text
    return response.json()


def test_api_gives_status_and_scope(client, clinical):
    body = post(client, HAM)
    assert body["status"] == "ok" and body["scope"]["kind"] == "dermoscopic"
    assert body["scope"]["reason"] == "answered" and body["heatmap"] is not None
    if not CLINICAL.is_dir():
        body = post(client, clinical[0])
        assert body["status"] == "out_of_scope" and body["scope"]["reason"] == "no_model"
        assert body["top"] == [] and body["probabilities"] == {} and body["heatmap"] is None
        assert body["triage"]["result"] == "out_of_scope"
        assert body["triage"]["malignant_probability"] is None
        stored = client.get(f"/api/v1/predictions/{body['id']}").json()
        assert stored["status"] == "out_of_scope" and stored["scope"] == body["scope"]


def test_openapi_documents_status_and_scope_with_examples(client):
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    status = schemas["PredictionOut"]["properties"]["status"]
    assert set(status["examples"]) == {"ok", "uncertain", "out_of_scope", "not_skin"}
    scope = schemas["Scope"]
    assert {"kind", "reason", "model", "why", "rule", "covers", "advice"} <= set(
        scope["properties"]
    )
    assert scope["examples"][0]["kind"] == "other_skin"


@pytest.mark.parametrize(
    ("lang", "advice"),
    [
        ("en", "Please show the skin to a doctor or dermatologist"),
        ("de", "Bitte zeigen Sie die Haut"),
        ("pt", "Mostre a pele a um médico"),
    ],
)
def test_page_has_the_out_of_scope_box_and_a_details_toggle(client, lang, advice):
    html = client.get(f"/?lang={lang}").text
    assert 'id="scope-out"' in html and 'id="scope-details"' in html and "<summary>" in html
    assert advice in html
