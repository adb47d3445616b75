"""Access control through TestClient: accounts needed (exact 401 / 403 details), the login
form with its CSRF token and cookie flags, lockout, disabling, session expiry, API tokens,
rate limits with and without a trusted proxy, the audit log export, the quick check off.
The tests of stored accounts, sessions, tokens and audit events run on SQLite and on
PostgreSQL (the `database_url` fixture); those of a setting alone, on SQLite.

    nice -n 10 pytest tests/test_clinic_access.py -q
"""

from __future__ import annotations

import csv
import io
import re
import time

import pytest
from fastapi.testclient import TestClient

from clinic_helpers import (
    PASSWORD,
    add_account,
    clinic_settings,
    csrf_of,
    log_in,
    new_patient,
    token_for,
)
from dermalens.serve import staff
from dermalens.serve.app import create_app

LOGIN_NEEDED = (
    "authentication required: log in at /login, or send 'Authorization: Bearer <token>' "
    "with a staff API token"
)


def app_client(tmp_path, bundle, url: str = "", **overrides) -> tuple[TestClient, object]:
    url = url or f"sqlite:///{tmp_path / 'clinic.sqlite'}"
    settings = clinic_settings(tmp_path, bundle, url, **overrides)
    add_account(settings, "carla")
    add_account(settings, "ada", role="admin")
    base = "https://testserver" if settings.cookie_secure else "http://testserver"
    return TestClient(create_app(settings), base_url=base), settings


@pytest.fixture
def clinic(tmp_path, tiny_bundle, database_url):
    client, settings = app_client(tmp_path, tiny_bundle, database_url)
    with client:
        yield client, settings


def test_patient_routes_need_an_account(clinic):
    client, settings = clinic
    response = client.get("/api/v1/patients")
    assert response.status_code == 401 and response.json() == {"detail": LOGIN_NEEDED}
    assert response.headers["www-authenticate"] == "Bearer"
    bad = client.get("/api/v1/patients", headers={"Authorization": "Bearer dlt_nope"})
    assert bad.status_code == 401 and bad.json() == {"detail": "invalid or revoked API token"}
    auth = token_for(settings, "carla")
    assert client.get("/api/v1/me", headers=auth).json()["username"] == "carla"
    tokens = client.get("/api/v1/me/tokens", headers=auth).json()
    assert client.delete(f"/api/v1/me/tokens/{tokens[0]['id']}", headers=auth).status_code == 204
    revoked = client.get("/api/v1/patients", headers=auth)
    assert revoked.json() == {"detail": "invalid or revoked API token"}
    auth = token_for(settings, "carla")
    staff.set_user_disabled("carla", True, settings)
    disabled = client.get("/api/v1/patients", headers=auth)
    assert disabled.status_code == 403 and disabled.json() == {
        "detail": "account 'carla' is disabled"
    }
    staff.set_user_disabled("carla", False, settings)
    assert client.get("/api/v1/patients", headers=auth).status_code == 200


def test_token_made_by_the_api_is_shown_once_and_stored_hashed(tmp_path, tiny_bundle):
    # SQLite only: the check reads the database file's bytes
    client, settings = app_client(tmp_path, tiny_bundle)
    with client:
        made = client.post(
            "/api/v1/me/tokens", json={"name": "ehr"}, headers=token_for(settings, "carla")
        )
        assert made.status_code == 201
        secret = made.json()["token"]
        assert secret.startswith("dlt_") and made.json()["prefix"] == secret[:10]
        auth = {"Authorization": f"Bearer {secret}"}
        listed = client.get("/api/v1/me/tokens", headers=auth).json()
    assert all("token" not in t for t in listed)
    db = (settings.data_dir.parent / "clinic.sqlite").read_bytes()
    assert secret.encode() not in db and PASSWORD.encode() not in db


def test_login_form_csrf_cookies_and_account_page(clinic):
    client, _ = clinic
    page = client.get("/login")
    assert (
        page.status_code == 200 and "script-src 'none'" in page.headers["content-security-policy"]
    )
    form = {"username": "carla", "password": PASSWORD, "next": "/account"}
    forged = client.post("/login", data=form, follow_redirects=False)  # no csrf_token field
    assert forged.status_code == 403 and "The form expired or came from another site" in forged.text
    wrong = log_in(client, "carla", "not the password")
    assert wrong.status_code == 401 and "Wrong user name or password." in wrong.text
    ok = log_in(client, "carla")
    assert ok.status_code == 303 and ok.headers["location"] == "/account"
    cookie = [h for h in ok.headers.get_list("set-cookie") if h.startswith("dermalens_session=")]
    assert cookie and "HttpOnly" in cookie[0] and "SameSite=lax" in cookie[0]
    assert "Secure" not in cookie[0]  # cookie_secure is off here
    # the session works on the API; a change needs the page's CSRF token in a header
    assert client.get("/api/v1/me").json()["username"] == "carla"
    body = {"clinic_id": "PT-7"}
    refused = client.post("/api/v1/patients", json=body)
    assert refused.status_code == 403
    assert refused.json() == {
        "detail": "missing or invalid CSRF token: send the X-CSRF-Token header given by the page"
    }
    account = client.get("/account")
    token = csrf_of(account.text)
    assert (
        client.post("/api/v1/patients", json=body, headers={"X-CSRF-Token": token}).status_code
        == 201
    )
    assert client.post("/account/tokens", data={"name": "script"}).status_code == 403
    shown = client.post("/account/tokens", data={"name": "script", "csrf_token": token})
    secret = shown.text.split('id="new-token">')[1].split("<")[0]
    assert (
        client.get("/api/v1/me", headers={"Authorization": f"Bearer {secret}"}).status_code == 200
    )
    assert secret not in client.get("/account").text  # shown once only
    out = client.post("/logout", data={"csrf_token": token}, follow_redirects=False)
    assert out.status_code == 303
    assert client.get("/api/v1/me").json() == {"detail": LOGIN_NEEDED}


def test_secure_cookies_when_configured(tmp_path, tiny_bundle):
    client, _ = app_client(tmp_path, tiny_bundle, cookie_secure=True)
    with client:
        ok = log_in(client, "carla")
    cookies = ok.headers.get_list("set-cookie")
    session = [c for c in cookies if c.startswith("__Host-dermalens_session=")]
    assert session and "Secure" in session[0] and "Path=/" in session[0]


def test_lockout_after_repeated_failures(tmp_path, tiny_bundle, database_url):
    client, settings = app_client(tmp_path, tiny_bundle, database_url, login_max_failures=3)
    with client:
        assert [log_in(client, "carla", "wrong guess").status_code for _ in range(3)] == [
            401,
            401,
            403,
        ]
        locked = log_in(client, "carla")  # even the right password, until the lockout ends
        assert locked.status_code == 403 and "this account is locked until" in locked.text
        staff.set_user_disabled("carla", False, settings)  # `dermalens user enable` lifts it
        assert log_in(client, "carla").status_code == 303
        staff.set_user_disabled("carla", True, settings)  # disabling ends the session
        assert client.get("/api/v1/me").json() == {"detail": "session expired; log in again"}
        assert "This account is disabled" in log_in(client, "carla").text
        events = client.get("/api/v1/audit", headers=token_for(settings, "ada")).json()["events"]
    actions = [(e["username"], e["action"]) for e in events if e["resource"] == "account"]
    assert actions == [("carla", "invalid")] * 2 + [("carla", "locked")] * 2 + [
        ("carla", "login"),
        ("carla", "disabled"),
    ]


def test_session_expires_when_idle(tmp_path, tiny_bundle, database_url):
    client, _ = app_client(tmp_path, tiny_bundle, database_url, session_idle_minutes=0.01)
    with client:
        log_in(client, "carla")
        assert client.get("/api/v1/me").status_code == 200
        time.sleep(0.8)
        expired = client.get("/api/v1/me")
        assert expired.status_code == 401 and expired.json() == {
            "detail": "session expired; log in again"
        }


def test_login_rate_limit(tmp_path, tiny_bundle):
    client, _ = app_client(tmp_path, tiny_bundle, login_rate_limit="2/minute")
    with client:
        assert [log_in(client, "nobody", "x").status_code for _ in range(3)] == [401, 401, 429]
        limited = log_in(client, "carla")
    assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
    assert "Too many login attempts from this address; try again in" in limited.text


def quick_check(client, data: bytes, **headers):
    files = {"file": ("x.jpg", data)}
    return client.post("/api/v1/predictions?explain=false", files=files, headers=headers)


def test_anonymous_rate_limit_counts_by_address(tmp_path, tiny_bundle, fixture_images):
    data = fixture_images[0].read_bytes()
    client, settings = app_client(tmp_path, tiny_bundle, anonymous_rate_limit="2/minute")
    with client:
        spoofed = [
            quick_check(client, data, **{"X-Forwarded-For": f"10.0.0.{k}"}) for k in range(3)
        ]
        assert [r.status_code for r in spoofed] == [201, 201, 429]  # the header is ignored
        assert spoofed[2].json()["detail"] == (
            "too many predictions from this address without an account (limit 2/minute); "
            f"try again in {spoofed[2].headers['retry-after']} s"
        )
        auth = token_for(settings, "carla")
        assert quick_check(client, data, **auth).status_code == 201  # staff are not limited
    proxied = TestClient(
        create_app(settings.model_copy(update={"trusted_proxies": ["10.9.0.0/16"]})),
        client=("10.9.0.1", 5000),
    )
    with proxied:
        first = [quick_check(proxied, data, **{"X-Forwarded-For": "203.0.113.7"}) for _ in range(3)]
        other = quick_check(proxied, data, **{"X-Forwarded-For": "203.0.113.8, 10.9.0.2"})
    assert [r.status_code for r in first] == [201, 201, 429] and other.status_code == 201


def test_quick_check_can_be_turned_off(tmp_path, tiny_bundle, fixture_images):
    client, settings = app_client(tmp_path, tiny_bundle, anonymous_predictions=False)
    data = fixture_images[0].read_bytes()
    with client:
        off = quick_check(client, data)
        assert off.status_code == 401
        assert off.json()["detail"].startswith("the anonymous quick check is off on this server")
        assert quick_check(client, data, **token_for(settings, "carla")).status_code == 201


def test_audit_log_export_is_for_admins(clinic):
    client, settings = clinic
    auth = token_for(settings, "carla")
    patient = new_patient(client, auth)
    client.get(f"/api/v1/patients/{patient['id']}", headers=auth)
    denied = client.get("/api/v1/audit", headers=auth)
    assert denied.status_code == 403 and denied.json() == {"detail": "this needs an admin account"}
    admin = token_for(settings, "ada")
    events = client.get(f"/api/v1/audit?patient_id={patient['id']}", headers=admin).json()
    assert [(e["username"], e["action"], e["resource"]) for e in events["events"]] == [
        ("carla", "create", "patient"),
        ("carla", "read", "patient"),
    ]
    assert events["events"][1]["path"] == f"/api/v1/patients/{patient['id']}"
    exported = client.get("/api/v1/audit?format=csv", headers=admin)
    assert exported.headers["content-type"] == "text/csv; charset=utf-8"
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    assert [r["action"] for r in rows][-1] == "export"  # the JSON export above was logged
    assert {r["patient_id"] for r in rows} >= {patient["id"]}


def test_page_needs_a_login_when_the_quick_check_is_off(tmp_path, tiny_bundle, fixture_images):
    client, _ = app_client(tmp_path, tiny_bundle, anonymous_predictions=False)
    with client:
        page = client.get("/", follow_redirects=False)
        assert page.status_code == 303 and page.headers["location"] == "/login?next=/"
        log_in(client, "carla")
        page = client.get("/")
        token = re.search(r'<meta name="csrf-token" content="([^"]+)">', page.text).group(1)
        data = fixture_images[0].read_bytes()
        assert quick_check(client, data).status_code == 403  # the cookie alone is not enough
        assert quick_check(client, data, **{"X-CSRF-Token": token}).status_code == 201


def test_details_and_login_page_in_the_readers_language(clinic):
    client, _ = clinic
    german = client.get("/api/v1/patients", headers={"Accept-Language": "de"})
    assert german.status_code == 401
    assert german.json()["detail"].startswith("Anmeldung erforderlich: Melden Sie sich unter")
    page = client.get("/login?lang=pt")
    assert 'lang="pt"' in page.text and "Nome de usuário" in page.text
    wrong = log_in(client, "carla", "not the password")  # the lang cookie is remembered
    assert "Nome de usuário ou senha incorretos." in wrong.text
