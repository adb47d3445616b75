"""The shift warning wired through: Prediction, predict_folder's summary, calibration, the CLI,
the API (per image and over the latest requests) and the page. Uses the bundled default model,
whose bundle.json holds a shift warning fitted on its validation images."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from fastapi.testclient import TestClient

from conftest import DEFAULT_MODEL
from dermalens.cli import main
from dermalens.evaluation.corruptions import apply
from dermalens.evaluation.evaluate import TableRun
from dermalens.evaluation.shift_fit import MIN_IMAGES, shift_from_run
from dermalens.imageio import load_image
from dermalens.runtime.folder import folder_summary, predict_folder
from dermalens.runtime.predictor import Predictor
from dermalens.runtime.shift import IMAGE_WARNING, STATS, WARNING
from dermalens.serve.app import create_app
from dermalens.serve.settings import Settings


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    return Predictor(DEFAULT_MODEL, threads=1)


def blurred(path) -> bytes:
    buffer = io.BytesIO()
    apply(load_image(path), "gaussian_blur", 5, seed=0).save(buffer, format="PNG")
    return buffer.getvalue()


def test_prediction_carries_the_shift_warning(predictor, fixture_images):
    clean = predictor.predict(fixture_images[1])
    assert clean.shift is not None and not clean.shift.flagged
    assert clean.shift.measures == [] and clean.shift.message == ""
    shifted = predictor.predict(blurred(fixture_images[1]))
    assert shifted.shift.flagged and shifted.shift.message == IMAGE_WARNING
    assert "sharpness low" in shifted.shift.measures
    assert shifted.to_dict()["shift"]["flagged"] is True


def test_folder_summary_gives_the_share_and_the_batch_test(predictor, fixture_images, tmp_path):
    for i in range(12):  # a "clinic" whose camera blurs every image
        (tmp_path / f"blur{i}.png").write_bytes(blurred(fixture_images[i % 7]))
    items = list(predict_folder(predictor, [tmp_path, tmp_path / "missing.jpg"], progress=False))
    summary = folder_summary(predictor, items)
    assert summary["images"] == 13 and summary["failed"] == 1
    shift = summary["shift"]
    assert shift["images"] == 12 and shift["flagged"] == 12 and shift["shifted"]
    assert shift["message"] == WARNING
    single = folder_summary(predictor, items[:1])["shift"]
    assert single["images"] == 1 and not single["shifted"]  # too few to judge a batch


def test_shift_fit_from_a_validation_run_and_too_few_images():
    rng = np.random.default_rng(0)
    n = 60
    run = TableRun(
        logits=rng.normal(size=(1, n, 3)),
        features=rng.normal(size=(n, 4)),
        pixels=np.zeros((n, 1)),
        acquisition=np.c_[rng.normal(size=(n, 8)), np.full((n, len(STATS) - 8), np.nan)],
    )
    monitor, report = shift_from_run(run, None, target=0.05)
    assert monitor.expected <= 0.05 and report["n"] == n and "validation" in report["rule"]
    few = TableRun(run.logits[:, : MIN_IMAGES - 1], run.features, run.pixels, [], run.acquisition)
    monitor, report = shift_from_run(few, None)
    assert monitor is None and "too few" in report["skipped"]


def test_cli_prints_the_warning_per_image_and_for_the_run(fixture_images, tmp_path, capsys):
    for i in range(10):
        (tmp_path / f"blur{i}.png").write_bytes(blurred(fixture_images[i % 7]))
    # without the scope gate, which takes some blurred dermoscopy for phone photos
    assert main(["predict", str(tmp_path), "--no-gate"]) == 0
    out = capsys.readouterr().out
    assert out.count("shift warning: this image differs") == 10
    assert "shift warning: 10 of 10 images (100.0%)" in out and "as a batch, these" in out
    assert main(["predict", str(fixture_images[0]), "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["shift"]["flagged"] is False


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    settings = Settings(
        model=DEFAULT_MODEL,
        data_dir=tmp_path_factory.mktemp("shift-serve"),
        shift_window=10,
        scope_gate=False,  # blurred dermoscopy can look like a phone photo to the gate
    )
    with TestClient(create_app(settings)) as client:
        yield client


def post(client, data: bytes):
    files = {"file": ("lesion.png", data, "application/octet-stream")}
    response = client.post("/api/v1/predictions?explain=false", files=files)
    assert response.status_code == 201, response.text
    return response.json()


def test_api_gives_the_image_and_the_latest_requests_warning(client, fixture_images):
    first = post(client, fixture_images[0].read_bytes())
    assert first["shift"] == {"flagged": False, "measures": [], "message": ""}
    assert first["shift_recent"]["images"] == 1 and not first["shift_recent"]["shifted"]
    for i in range(10):
        last = post(client, blurred(fixture_images[i % 7]))
    assert last["shift"]["flagged"] and "sharpness low" in last["shift"]["measures"]
    recent = last["shift_recent"]
    assert recent["images"] == 10 and recent["flagged"] == 10  # the window holds 10
    assert recent["shifted"] and recent["message"] == WARNING
    stored = client.get(f"/api/v1/predictions/{last['id']}").json()
    assert stored["shift"] == last["shift"]


def test_openapi_documents_the_shift_fields_and_the_page_has_the_sentence(client):
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    assert {"flagged", "measures", "message"} <= set(schemas["Shift"]["properties"])
    assert "shifted" in schemas["ShiftBatch"]["properties"]
    props = schemas["PredictionOut"]["properties"]
    assert "DERMALENS_SHIFT_WINDOW" in props["shift_recent"]["description"]
    page = client.get("/").text
    assert 'id="shift-image"' in page and "differs from the images this model was" in page
