"""A lesion's history with the change between visits: the API's `changes` and
`changed_since_last_visit`, and the staff page (images in visit order, chart, flag).

    nice -n 10 pytest tests/test_lesion_history.py -q
"""

from __future__ import annotations

import io
import re

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from clinic_helpers import add_account, clinic_settings, file_image, log_in, new_patient, token_for
from conftest import DEFAULT_MODEL
from dermalens.serve.app import create_app
from test_change import drawn


def jpeg(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def clinic(tmp_path_factory):
    """The default model, change framing 'same' (follow-ups with the same zoom)."""
    settings = clinic_settings(
        tmp_path_factory.mktemp("history"), DEFAULT_MODEL, "", change_framing="same"
    )
    add_account(settings, "carla")
    with TestClient(create_app(settings)) as client:
        yield client, token_for(settings, "carla")


def lesion_over(client, auth, images: list[bytes]) -> tuple[str, dict]:
    """A patient with one lesion and one image per visit, a month apart; its history."""
    patient = new_patient(client, auth, f"PT-{len(images)}-{id(images)}", birth_year=1960)
    base = f"/api/v1/patients/{patient['id']}"
    lesion = client.post(
        f"{base}/lesions", json={"site": "back", "label": "left scapula"}, headers=auth
    )
    assert lesion.status_code == 201, lesion.text
    lesion = lesion.json()
    for month, data in enumerate(images, start=1):
        visit = client.post(f"{base}/visits", json={"date": f"2026-0{month}-01"}, headers=auth)
        file_image(client, auth, patient["id"], lesion["id"], visit.json()["id"], data)
    path = f"/patients/{patient['id']}/lesions/{lesion['id']}"
    history = client.get(f"/api/v1{path}/history", headers=auth)
    assert history.status_code == 200, history.text
    return path, history.json()


def test_history_scores_each_visit_against_the_one_before(clinic, fixture_images):
    client, auth = clinic
    same, other = fixture_images[0].read_bytes(), fixture_images[4].read_bytes()
    _, history = lesion_over(client, auth, [same, same, other])
    first, second = history["changes"]
    assert [c["after_date"] for c in history["changes"]] == ["2026-02-01", "2026-03-01"]
    assert first["change"]["structure"] < 1e-3 and first["change"]["colour"] < 1
    assert not first["changed_since_last_visit"] and first["reasons"] == []
    assert second["change"]["structure"] > first["change"]["structure"]
    assert second["change"]["score"] > first["change"]["score"]
    assert history["changed_since_last_visit"] == second["changed_since_last_visit"]
    ids = [p["prediction_id"] for p in history["predictions"]]
    assert [c["after_prediction_id"] for c in history["changes"]] == ids[1:]


def test_growth_is_flagged_on_the_page(clinic):
    client, auth = clinic
    path, history = lesion_over(client, auth, [jpeg(drawn(20)), jpeg(drawn(20 * 1.5))])
    (change,) = history["changes"]
    assert change["change"]["growth"] > change["change"]["growth_limit"]
    assert history["changed_since_last_visit"]
    assert any(r.startswith("lesion area grew by") for r in change["reasons"])

    assert client.get(path, follow_redirects=False).status_code == 303  # not signed in
    assert log_in(client, "carla").status_code == 303
    page = client.get(path)
    assert page.status_code == 200 and "Changed since last visit" in page.text
    images = re.findall(r'<img src="([^"]+)"', page.text)
    assert images == [p["image_url"] for p in history["predictions"]]  # visit order
    assert client.get(images[0]).status_code == 200  # the session cookie reads them
    # drawn lesions are not dermoscopic close-ups: the scope gate turns them away from the
    # pinned dermoscopic model (as POST /predictions would), so no P(malignant) to draw or
    # compare, and only the images' change flags the lesion
    assert {p["prediction"]["status"] for p in history["predictions"]} == {"out_of_scope"}
    assert change["malignant_probability_rise"] is None
    assert 'polyline class="malignant"' in page.text
    assert page.text.count('<circle class="malignant"') == 0
    assert page.text.count("this tool cannot assess this image") == 2
    assert page.text.count("<tr><td>") == 1  # one row of changes
    client.cookies.clear()


def test_a_visit_upload_goes_through_the_scope_gate(clinic, fixture_images):
    """A lesion's upload at a visit gets the answer POST /api/v1/predictions gives the same
    bytes: the gate's decision, the model that answered, or no answer at all."""
    client, auth = clinic
    grey = Image.new("RGB", (200, 150), (128, 128, 128))
    lesion_image = fixture_images[0].read_bytes()
    path, history = lesion_over(client, auth, [lesion_image, jpeg(grey)])
    filed = [p["prediction"] for p in history["predictions"]]
    for data, got in zip([lesion_image, jpeg(grey)], filed):
        fields = {k: v for k, v in got["patient"].items() if v not in (None, {})}
        quick = client.post(
            "/api/v1/predictions?explain=false",
            files={"file": ("x.jpg", data)},
            data=fields,
            headers=auth,
        )
        assert quick.status_code == 201, quick.text
        want = quick.json()
        for key in ("status", "scope", "model", "triage", "shift", "not_skin"):
            assert got[key] == want[key], key
        assert got["probabilities"] == pytest.approx(want["probabilities"], abs=1e-6)
    assert filed[0]["scope"]["reason"] == "answered" and filed[0]["top"]
    assert filed[1]["status"] == "not_skin" and filed[1]["top"] == []
    assert filed[1]["model"]["name"] == "scope-gate"
    (change,) = history["changes"]
    assert change["malignant_probability_rise"] is None  # no model answered the second
    assert log_in(client, "carla").status_code == 303
    page = client.get(path)
    assert page.status_code == 200 and page.text.count('<circle class="malignant"') == 1
    client.cookies.clear()


def test_the_page_in_a_second_language(clinic):
    """The lesion page speaks the reader's language: words, class names, dates, numbers."""
    client, auth = clinic
    path, history = lesion_over(client, auth, [jpeg(drawn(20)), jpeg(drawn(20 * 1.5))])
    assert log_in(client, "carla").status_code == 303
    page = client.get(path, headers={"Accept-Language": "de"})
    assert page.status_code == 200 and '<html lang="de">' in page.text
    assert "Seit dem letzten Besuch verändert." in page.text
    assert "die Fläche der Hautveränderung ist um " in page.text  # the reason, reworded
    assert "Veränderung zwischen Besuchen" in page.text and "Jan. 2026" in page.text
    assert "Nur eine Entscheidungshilfe, keine Diagnose." in page.text
    client.cookies.clear()
