"""The app around the API: settings, startup failures, CORS, the page and its local assets.

nice -n 10 pytest tests/test_serve_app.py -q
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from dermalens.data.records import SITES
from dermalens.runtime.predictor import DISCLAIMER
from dermalens.serve import run
from dermalens.serve.app import ModelMissing, create_app
from dermalens.serve.settings import Settings, make_settings


@pytest.fixture(scope="module")
def client(tiny_bundle, tmp_path_factory):
    settings = Settings(
        model=tiny_bundle,
        data_dir=tmp_path_factory.mktemp("app-data"),
        cors_origins=["https://app.example.org"],
        maps_url="https://maps.example.org/?q={query}",
        maps_query="dermatologist near me",
    )
    with TestClient(create_app(settings)) as client:
        yield client


def test_page_has_everything_the_clinician_needs(client):
    response = client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    html = response.text
    assert DISCLAIMER in html
    assert "Find a dermatologist near me" in html
    assert 'href="https://maps.example.org/?q=dermatologist+near+me"' in html
    assert 'capture="environment"' in html  # phone camera
    assert re.search(r'id="model-version">tiny@[0-9a-f]{12}<', html)
    for site in SITES:
        assert f'<option value="{site}">' in html
    for field in ("file", "camera", "age", "sex", "site", "consent", "correct-label", "note"):
        assert f'for="{field}"' in html, f"no <label> for #{field}"
    assert "$" not in html.replace("$$", "")  # every template placeholder was filled


def test_page_loads_nothing_from_another_server(client):
    html = client.get("/").text
    sources = re.findall(r'(?:src|href)="([^"]+)"', html)
    external = [s for s in sources if re.match(r"(https?:)?//", s)]
    assert external == ["https://maps.example.org/?q=dermatologist+near+me"]  # a link, not an asset
    for asset in ("/static/app.css", "/static/app.js", "/static/favicon.svg"):
        response = client.get(asset)
        assert response.status_code == 200, asset
        text = response.text.replace('xmlns="http://www.w3.org/2000/svg"', "")
        assert "http://" not in text and "https://" not in text
    csp = client.get("/").headers["content-security-policy"]
    assert "default-src 'self'" in csp and "script-src 'self'" in csp


def test_security_headers(client):
    headers = client.get("/healthz").headers
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["referrer-policy"] == "no-referrer"


def test_cors_allows_configured_origins_only(client):
    preflight = {"Access-Control-Request-Method": "POST"}
    allowed = client.options(
        "/api/v1/predictions", headers={"Origin": "https://app.example.org", **preflight}
    )
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == "https://app.example.org"
    other = client.options(
        "/api/v1/predictions", headers={"Origin": "https://evil.example", **preflight}
    )
    assert other.status_code == 400
    assert "access-control-allow-origin" not in other.headers


def test_settings_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("DERMALENS_CORS_ORIGINS", "https://a.example, https://b.example")
    monkeypatch.setenv("DERMALENS_MAX_UPLOAD_BYTES", "1234")
    monkeypatch.setenv("DERMALENS_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("DERMALENS_API_TOKEN", "t0k")
    monkeypatch.setenv("DERMALENS_MODEL", "/models/x")
    settings = Settings()
    assert settings.cors_origins == ["https://a.example", "https://b.example"]
    assert settings.max_upload_bytes == 1234
    assert settings.model == Path("/models/x")
    assert settings.db_url == f"sqlite:///{tmp_path / 'dermalens.db'}"
    assert settings.uploads_dir == tmp_path / "uploads"
    assert settings.api_token.get_secret_value() == "t0k"
    assert "t0k" not in repr(settings)


def test_default_model_is_the_bundled_one(monkeypatch, tmp_path):
    monkeypatch.delenv("DERMALENS_MODEL", raising=False)
    monkeypatch.chdir(tmp_path)
    assert Settings().model.parts[-3:] == ("dermalens", "bundled", "default")


def test_unknown_setting_is_rejected_with_a_suggestion():
    with pytest.raises(ValueError, match=r"unknown serve setting 'max_upload'; did you mean"):
        make_settings(max_upload=5)
    with pytest.raises(ValueError, match="maps_url"):
        Settings(maps_url="javascript:alert(1)")
    with pytest.raises(ValueError, match="precision"):
        Settings(precision="fp8")
    assert Settings().precision == "auto"  # the fastest variant that passed its agreement


def test_missing_model_fails_at_startup_with_a_clear_message(tmp_path):
    app = create_app(Settings(model=tmp_path / "nowhere", data_dir=tmp_path))
    with pytest.raises(ModelMissing) as info, TestClient(app):
        pass
    assert str(info.value) == (
        f"no model bundle at {tmp_path / 'nowhere'} (no bundle.json); pass the bundle folder "
        "(`dermalens serve --model DIR`) or set DERMALENS_MODEL"
    )


def test_run_refuses_to_start_without_a_model(tmp_path):
    with pytest.raises(SystemExit, match=r"^dermalens serve: no model bundle at "):
        run(model=str(tmp_path / "nowhere"), data_dir=tmp_path)
    with pytest.raises(ValueError, match="unknown serve setting 'prot'"):
        run(model=str(tmp_path), prot=1)


def test_broken_bundle_fails_at_startup(tmp_path, tiny_bundle):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "bundle.json").write_text("{not json")
    app = create_app(Settings(model=broken, data_dir=tmp_path))
    with (
        pytest.raises(ModelMissing, match=r"cannot serve model bundle .*not valid JSON"),
        TestClient(app),
    ):
        pass
