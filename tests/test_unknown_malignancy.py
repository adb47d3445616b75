"""Classes of unknown malignancy (issue 19, item 1): names and flags kept in bundle.json, no
benign / malignant triage from a model with such a class ("unavailable"), calibration and
evaluation skip triage, the API returns `malignant: null`, the page shows no badge.

Bundles here are copies of the tiny bundle with bundle.json's "classes" edited.

    nice -n 10 pytest tests/test_unknown_malignancy.py -q
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from conftest import DEFAULT_MODEL
from dermalens import taxonomy
from dermalens.bundle import BundleError, load_bundle
from dermalens.evaluation.calibrate import calibrate_bundle
from dermalens.evaluation.evaluate import evaluate
from dermalens.evaluation.thresholds import decision_metrics
from dermalens.runtime.predictor import Predictor
from dermalens.serve.app import create_app
from dermalens.serve.settings import Settings
from test_serve_browser import ARGS, CHROMIUM, free_port

RARE = "erythema_elevatum_diutinum"  # a DermNet NZ folder the taxonomy does not know
RARE_NAME = "Erythema elevatum diutinum"


def edited_bundle(tiny_bundle: Path, target: Path, classes=None, **fields) -> Path:
    """A copy of the tiny bundle; `classes` maps an index to the keys its entry gets."""
    shutil.copytree(tiny_bundle, target)
    data = json.loads((target / "bundle.json").read_text())
    for index, changes in (classes or {}).items():
        data["classes"][index].update(changes)
    data.update(fields)
    (target / "bundle.json").write_text(json.dumps(data, indent=2))
    return target


@pytest.fixture
def rare_bundle(tiny_bundle, tmp_path) -> Path:
    """Class 6 (vasc) replaced by an open class nobody flagged; never "uncertain"."""
    assert taxonomy.lookup(RARE) is None
    change = {6: {"code": RARE, "name": RARE_NAME, "malignant": None}}
    return edited_bundle(
        tiny_bundle, tmp_path / "rare", change, thresholds={"uncertain_below": 0.0}
    )


def test_no_triage_from_a_model_with_a_class_of_unknown_malignancy(rare_bundle, fixture_images):
    predictor = Predictor(rare_bundle, backend="onnx")
    for image in fixture_images:
        result = predictor.predict(image, top_k=7)
        assert result.triage == "unavailable" and not result.uncertain
        assert result.triage_rule.startswith(
            f"no benign / malignant triage (unavailable): the malignancy of {RARE_NAME} "
            f"({RARE}) is not known, so a clinician must decide; uncertain if"
        )
        p = dict(zip(result.classes, result.probabilities))
        assert result.malignant_probability == pytest.approx(p["akiec"] + p["bcc"] + p["mel"])
        flags = {c.code: c.malignant for c in result.top}
        assert flags == {
            "akiec": True,
            "bcc": True,
            "bkl": False,
            "df": False,
            "mel": True,
            "nv": False,
            RARE: None,
        }
        json.dumps(result.to_dict())
    # "not_skin" and "uncertain" still come first
    probs = np.full(7, 1 / 7)
    assert predictor.result(probs, not_skin_reason="a flat frame").triage == "not_skin"
    predictor.uncertain_below = 0.5
    assert predictor.result(probs).triage == "uncertain"


def test_names_and_flags_come_from_bundle_json(rare_bundle, tiny_bundle, tmp_path):
    bundle = load_bundle(rare_bundle)
    assert bundle.display_names[6] == RARE_NAME and bundle.malignant[6] is None
    assert bundle.unknown_malignancy == [RARE]
    top = Predictor(bundle, backend="onnx").result(np.eye(7)[6])
    assert (top.top[0].code, top.top[0].name, top.top[0].malignant) == (RARE, RARE_NAME, None)
    bundle.save_description()  # written back as read
    assert load_bundle(rare_bundle).description()["classes"][6] == {
        "index": 6,
        "code": RARE,
        "name": RARE_NAME,
        "malignant": None,
    }
    renamed = edited_bundle(tiny_bundle, tmp_path / "renamed", {3: {"name": "Histiocytoma"}})
    assert load_bundle(renamed).display_names[3] == "Histiocytoma"
    bad = edited_bundle(tiny_bundle, tmp_path / "bad", {2: {"malignant": "maybe"}})
    with pytest.raises(BundleError, match=r"class 'bkl': malignant must be true, false or null"):
        load_bundle(bad)


def test_bundles_written_before_load_unchanged():
    saved = json.loads((DEFAULT_MODEL / "bundle.json").read_text())["classes"]
    bundle = load_bundle(DEFAULT_MODEL)
    assert bundle.description()["classes"] == saved
    assert bundle.display_names == [taxonomy.display_name(c) for c in bundle.classes]
    assert bundle.malignant == [True, True, False, False, True, False, False]
    assert bundle.unknown_malignancy == []


def test_rash_groups_get_no_triage_even_from_an_older_bundle(tiny_bundle, tmp_path):
    for code in ("psoriasis", "eczema", "cellulitis", "scabies", "urticaria", "exanthems"):
        assert taxonomy.is_malignant(code) is None, code
    for code, flag in [
        ("melanoma_nevi", True),
        ("actinic_keratosis_bcc", True),
        ("seborrheic_keratoses", False),
        ("vascular_tumors", False),
    ]:
        assert taxonomy.is_malignant(code) is flag, code
    # bundle.json written when the taxonomy still called psoriasis benign
    old = {6: {"code": "psoriasis", "name": "Psoriasis", "malignant": False}}
    bundle = load_bundle(edited_bundle(tiny_bundle, tmp_path / "old", old))
    assert bundle.malignant[6] is None and bundle.unknown_malignancy == ["psoriasis"]


def test_declared_flags_still_triage(tiny_bundle, tmp_path, fixture_images):
    declared = {6: {"code": RARE, "name": RARE_NAME, "malignant": False}}  # as classes.csv
    folder = edited_bundle(
        tiny_bundle, tmp_path / "declared", declared, thresholds={"uncertain_below": 0.0}
    )
    predictor = Predictor(folder, backend="onnx")
    result = predictor.predict(fixture_images[0])
    assert result.triage in ("benign", "malignant")
    assert result.triage_rule.startswith("malignant if P(malignant classes) >= 0.500")


def test_packaged_open_classes_keep_names_after_the_loading_process(tmp_path, monkeypatch):
    import torch

    from dermalens.config import make_config
    from dermalens.networks import build_model
    from dermalens.preprocess import Preprocessing
    from dermalens.training.package import bundle_from_model

    # what the folder loader registers: one open class unflagged, one declared in classes.csv
    found = [("sweet_syndrome_x", "Sweet syndrome", None), ("oral_lesion_x", "Oral lesion", True)]
    classes = [code for code, _, _ in found]
    for code, name, flag in found:
        monkeypatch.setitem(taxonomy.OPEN_CLASSES, code, taxonomy.LesionClass(code, name, flag))
    torch.manual_seed(0)
    cfg = make_config(model="plain_cnn", height=32, width=32, name="open")
    model, source = build_model("plain_cnn", 2, "none", 0.0, False)
    bundle_from_model(
        model.eval(), tmp_path / "open", classes, Preprocessing(height=32, width=32), cfg, source
    )
    for code in classes:  # a new process: the folder loader has not run
        monkeypatch.delitem(taxonomy.OPEN_CLASSES, code)
    bundle = load_bundle(tmp_path / "open")
    assert bundle.display_names == ["Sweet syndrome", "Oral lesion"]
    assert bundle.malignant == [None, True]
    assert "sweet_syndrome_x" in bundle.info["card"]["triage"]


def write_split(data_root: Path, path: Path) -> Path:
    """Copies 0-1 of each tiny HAM lesion train, 2-3 val."""
    meta = pd.read_csv(data_root / "metadata.csv")
    copy = meta["image_id"].str.rsplit("_", n=1).str[1].astype(int)
    pd.DataFrame(
        {
            "image_id": meta["image_id"],
            "label": meta["dx"],
            "group": meta["lesion_id"],
            "split": np.where(copy < 2, "train", "val"),
        }
    ).to_csv(path, index=False)
    return path


def test_calibrate_and_evaluate_skip_triage(tiny_bundle, tiny_ham, tmp_path):
    folder = edited_bundle(tiny_bundle, tmp_path / "vasc-unknown", {6: {"malignant": None}})
    split = write_split(tiny_ham, tmp_path / "split.csv")
    summary = calibrate_bundle(
        folder, tiny_ham, split, out_dir=tmp_path / "cal", fit_ood=False, progress=False
    )
    assert summary["triage"]["skipped"].startswith(
        "no benign / malignant triage: the malignancy of vasc is unknown"
    )
    assert summary["triage"]["unknown_malignancy"] == ["vasc"]
    saved = json.loads((folder / "bundle.json").read_text())
    assert (
        "triage_malignant" not in saved["thresholds"] and "uncertain_below" in saved["thresholds"]
    )

    result = evaluate(folder, tiny_ham, out_dir=tmp_path / "eval", progress=False)
    triage = result.metrics["decision"]["triage"]
    assert set(triage) == {"skipped", "unknown_malignancy"} and "vasc" in triage["skipped"]
    assert result.metrics["decision"]["abstention"]["coverage"] is not None
    preds = result.predictions
    summed = preds["p_akiec"] + preds["p_bcc"] + preds["p_mel"]
    assert np.allclose(preds["p_malignant"], summed, atol=2e-6)
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["decision"] == json.loads(
        json.dumps(result.metrics["decision"])
    )


def test_decision_metrics_with_an_unknown_flag():
    labels, probs = np.array([0, 1, 1]), np.array([[0.9, 0.1], [0.3, 0.7], [0.6, 0.4]])
    out = decision_metrics(
        labels, probs, probs.argmax(1), [True, None], 0.65, 0.4, None, ["a", "b"]
    )
    assert out["triage"]["unknown_malignancy"] == ["b"]
    assert out["abstention"]["coverage"] == pytest.approx(2 / 3)


@pytest.fixture
def rare_settings(rare_bundle, tmp_path) -> Settings:
    return Settings(model=rare_bundle, data_dir=tmp_path / "serve", api_token="t")


def test_api_returns_null_malignant_and_unavailable_triage(rare_settings, fixture_images):
    with TestClient(create_app(rare_settings)) as client:
        jpeg = fixture_images[0].read_bytes()
        response = client.post(
            "/api/v1/predictions?top_k=7&explain=false",
            files={"file": ("lesion.jpg", jpeg, "image/jpeg")},
        )
        assert response.status_code == 201
        body = response.json()
        assert body["triage"]["result"] == "unavailable"
        assert f"{RARE_NAME} ({RARE}) is not known" in body["triage"]["rule"]
        rare = next(c for c in body["top"] if c["code"] == RARE)
        assert rare == {**rare, "name": RARE_NAME, "malignant": None}
        again = client.get(f"/api/v1/predictions/{body['id']}").json()
        assert again["triage"] == body["triage"] and again["top"] == body["top"]
        model = client.get("/api/v1/model").json()
        assert model["classes"][6] == {
            "index": 6,
            "code": RARE,
            "name": RARE_NAME,
            "malignant": None,
        }
        schema = client.get("/openapi.json").json()["components"]["schemas"]
        malignant = schema["ClassScore"]["properties"]["malignant"]
        assert {"type": "null"} in malignant["anyOf"] and "null: malignancy unknown" in (
            malignant["description"]
        )
        assert "unavailable" in schema["Triage"]["properties"]["result"]["description"]
        page = client.get("/").text
        assert 'id="no-triage"' in page and "A clinician must examine the lesion." in page


@pytest.mark.browser
def test_page_shows_no_badge_and_says_why(rare_settings, fixture_images):
    if not CHROMIUM.is_file():
        pytest.skip(f"{CHROMIUM} not found: install Debian's chromium package")
    playwright = pytest.importorskip("playwright.sync_api")
    import uvicorn

    config = uvicorn.Config(
        create_app(rare_settings), host="127.0.0.1", port=free_port(), log_level="warning"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    errors: list[str] = []
    try:
        with playwright.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
            page = browser.new_page()
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(f"http://127.0.0.1:{config.port}")
            page.set_input_files("#file", str(fixture_images[0]))
            page.get_by_role("button", name="Analyse image").click()
            page.wait_for_selector("#result:not([hidden])", timeout=30_000)
            assert page.locator("#triage").is_hidden()
            assert page.locator("#triage-detail").is_hidden()
            why = page.locator("#no-triage")
            assert why.is_visible()
            assert "malignancy is not known" in why.inner_text()
            assert "A clinician must examine the lesion." in why.inner_text()
            browser.close()
    finally:
        server.should_exit = True
        thread.join(timeout=10)
    assert errors == []
