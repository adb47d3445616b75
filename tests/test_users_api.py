"""The admins' staff-account API (/api/v1/users) through TestClient: admin only (exact 401 /
403), create with the CLI's password checks, read, disable / enable, role, a new password
(sessions end, lockout lifted), a user's tokens, the last admin kept (409), CSRF with a
cookie session, the audit log, and no password hash or token digest in any answer.
Stored accounts run on SQLite and on PostgreSQL (the `database_url` fixture).

    nice -n 10 pytest tests/test_users_api.py -q
"""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from clinic_helpers import PASSWORD, add_account, clinic_settings, csrf_of, log_in, token_for
from dermalens.serve.app import create_app

USERS = "/api/v1/users"
NEW_PASSWORD = "a brand new pass phrase"


@pytest.fixture
def clinic(tmp_path, tiny_bundle, database_url):
    settings = clinic_settings(tmp_path, tiny_bundle, database_url, login_max_failures=2)
    add_account(settings, "carla")
    add_account(settings, "ada", role="admin")
    with TestClient(create_app(settings)) as client:
        yield client, settings, token_for(settings, "ada")


def no_secrets(*bodies) -> None:
    text = " ".join(str(b) for b in bodies)
    assert "argon2" not in text and "password" not in text and "sha256" not in text


def test_admin_only(clinic):
    client, settings, admin = clinic
    anonymous = client.get(USERS)
    assert anonymous.status_code == 401 and anonymous.headers["www-authenticate"] == "Bearer"
    clinician = client.post(USERS, json={"username": "x"}, headers=token_for(settings, "carla"))
    assert clinician.status_code == 403
    assert clinician.json() == {"detail": "this needs an admin account"}
    listed = client.get(USERS, headers=admin).json()
    assert [(u["username"], u["role"], u["disabled"]) for u in listed] == [
        ("carla", "clinician", False),
        ("ada", "admin", False),
    ]
    assert client.get(f"{USERS}/999", headers=admin).json() == {"detail": "user 999 not found"}
    no_secrets(listed)


def test_create_checks_like_the_cli(clinic):
    client, _, admin = clinic
    short = client.post(USERS, json={"username": "bo", "password": "short"}, headers=admin)
    assert short.status_code == 422 and short.json()["detail"] == (
        "password: password is too short: at least 12 characters"
    )
    body = {"username": "bo", "role": "admin", "password": PASSWORD}
    made = client.post(USERS, json=body, headers=admin)
    assert made.status_code == 201 and made.json()["role"] == "admin"
    taken = client.post(USERS, json=body, headers=admin)
    assert taken.status_code == 409 and taken.json() == {"detail": "user 'bo' already exists"}
    spaced = client.post(USERS, json={**body, "username": "b o"}, headers=admin)
    assert spaced.status_code == 422 and spaced.json()["errors"][0]["loc"] == ["body", "username"]
    read = client.get(f"{USERS}/{made.json()['id']}", headers=admin).json()
    assert read == made.json()
    no_secrets(made.json(), read)


def test_disable_enable_role_and_the_last_admin(clinic):
    client, settings, admin = clinic
    carla, ada = (u["id"] for u in client.get(USERS, headers=admin).json())
    carla_auth = token_for(settings, "carla")
    off = client.patch(f"{USERS}/{carla}", json={"disabled": True}, headers=admin)
    assert off.status_code == 200 and off.json()["disabled"] is True
    assert client.get("/api/v1/me", headers=carla_auth).status_code == 403
    client.patch(f"{USERS}/{carla}", json={"disabled": False}, headers=admin)
    assert client.get("/api/v1/me", headers=carla_auth).status_code == 200
    last = "'ada' is the last enabled admin account: make another admin first"
    for change in ({"disabled": True}, {"role": "clinician"}):
        refused = client.patch(f"{USERS}/{ada}", json=change, headers=admin)
        assert refused.status_code == 409 and refused.json() == {"detail": last}
    promoted = client.patch(f"{USERS}/{carla}", json={"role": "admin"}, headers=admin)
    assert promoted.json()["role"] == "admin"
    demoted = client.patch(f"{USERS}/{ada}", json={"role": "clinician"}, headers=admin)
    assert demoted.status_code == 200 and demoted.json()["role"] == "clinician"
    assert client.get(USERS, headers=admin).status_code == 403  # no longer an admin
    bad = client.patch(f"{USERS}/{ada}", json={"role": "root"}, headers=carla_auth)
    assert bad.status_code == 422


def test_new_password_ends_sessions_and_lifts_lockout(clinic):
    client, _, admin = clinic
    carla = client.get(USERS, headers=admin).json()[0]["id"]
    log_in(client, "carla")
    assert client.get("/api/v1/me").json()["username"] == "carla"  # her session cookie
    locked = [log_in(client, "carla", "wrong guess").status_code for _ in range(2)]
    assert locked == [401, 403]
    assert client.get(f"{USERS}/{carla}", headers=admin).json()["locked_until"]
    weak = client.put(f"{USERS}/{carla}/password", json={"password": "carla"}, headers=admin)
    assert weak.status_code == 422
    done = client.put(f"{USERS}/{carla}/password", json={"password": NEW_PASSWORD}, headers=admin)
    assert done.status_code == 200 and done.json()["locked_until"] is None
    no_secrets(done.json())
    assert client.get("/api/v1/me").json() == {"detail": "session expired; log in again"}
    assert log_in(client, "carla").status_code == 401  # the old password
    assert log_in(client, "carla", NEW_PASSWORD).status_code == 303


def test_a_users_tokens_listed_and_revoked(clinic):
    client, settings, admin = clinic
    carla = client.get(USERS, headers=admin).json()[0]["id"]
    carla_auth = token_for(settings, "carla")
    tokens = client.get(f"{USERS}/{carla}/tokens", headers=admin).json()
    assert [(t["name"], t["state"]) for t in tokens] == [("t", "active")]
    assert tokens[0]["expires_at"] and "token" not in tokens[0]
    no_secrets(tokens)
    own = client.get("/api/v1/me/tokens", headers=admin).json()[0]["id"]
    other = client.delete(f"{USERS}/{carla}/tokens/{own}", headers=admin)  # ada's token
    assert other.status_code == 404 and other.json() == {"detail": f"token {own} not found"}
    gone = client.delete(f"{USERS}/{carla}/tokens/{tokens[0]['id']}", headers=admin)
    assert gone.status_code == 204
    assert client.get("/api/v1/me", headers=carla_auth).status_code == 401


def test_cookie_session_needs_csrf_and_every_change_is_audited(clinic):
    client, _, admin = clinic
    carla = client.get(USERS, headers=admin).json()[0]["id"]
    log_in(client, "ada")
    csrf = csrf_of(client.get("/account").text)
    forged = client.patch(f"{USERS}/{carla}", json={"disabled": True})
    assert forged.status_code == 403 and forged.json()["detail"].startswith("missing or invalid")
    ok = client.patch(f"{USERS}/{carla}", json={"disabled": True}, headers={"X-CSRF-Token": csrf})
    assert ok.status_code == 200
    client.patch(f"{USERS}/{carla}", json={"disabled": False, "role": "admin"}, headers=admin)
    body = {"username": "bo", "password": PASSWORD}
    bo = client.post(USERS, json=body, headers=admin).json()["id"]
    client.put(f"{USERS}/{bo}/password", json={"password": NEW_PASSWORD}, headers=admin)
    events = client.get("/api/v1/audit", headers=admin).json()["events"]
    changes = [
        (e["username"], e["action"], e["resource_id"])
        for e in events
        if e["resource"] == "account" and e["path"].startswith(USERS)
    ]
    assert changes == [
        ("ada", "disable", str(carla)),
        ("ada", "role", str(carla)),
        ("ada", "enable", str(carla)),
        ("ada", "create", str(bo)),
        ("ada", "password", str(bo)),
    ]
