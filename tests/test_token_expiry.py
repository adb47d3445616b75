"""Staff API tokens expire: the DERMALENS_TOKEN_DAYS / TOKEN_MAX_DAYS settings, a lifetime
asked for at creation within the maximum, an expired token refused with its own 401, the
expiry in the token lists (API and /account). Stored tokens run on SQLite and PostgreSQL.

    nice -n 10 pytest tests/test_token_expiry.py -q
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError
from sqlalchemy import update

from clinic_helpers import add_account, clinic_settings, csrf_of, log_in, token_for
from dermalens.serve import staff
from dermalens.serve.account_tables import ApiTokenRecord
from dermalens.serve.app import create_app
from dermalens.serve.settings import Settings


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"token_days": "ninety"}, "DERMALENS_TOKEN_DAYS='ninety' is not a whole number of days"),
        ({"token_days": 0}, "DERMALENS_TOKEN_DAYS=0: a token lasts from 1 to 3650 days"),
        ({"token_max_days": "2.5"}, "DERMALENS_TOKEN_MAX_DAYS='2.5' is not a whole number"),
        (
            {"token_days": 30, "token_max_days": 7},
            "DERMALENS_TOKEN_DAYS=30 is longer than DERMALENS_TOKEN_MAX_DAYS=7",
        ),
    ],
)
def test_bad_token_settings_name_the_variable(values, message):
    with pytest.raises(ValidationError, match=message):
        Settings(**values)


def test_token_settings_from_the_environment(monkeypatch):
    monkeypatch.setenv("DERMALENS_TOKEN_DAYS", "30")
    monkeypatch.setenv("DERMALENS_TOKEN_MAX_DAYS", "60")
    assert (Settings().token_days, Settings().token_max_days) == (30, 60)


@pytest.fixture
def clinic(tmp_path, tiny_bundle, database_url):
    settings = clinic_settings(tmp_path, tiny_bundle, database_url, token_max_days=120)
    add_account(settings, "carla")
    with TestClient(create_app(settings)) as client:
        yield client, settings


def days_left(token: dict) -> float:
    left = datetime.fromisoformat(token["expires_at"]) - datetime.now(UTC)
    return left / timedelta(days=1)


def test_lifetime_asked_for_within_the_maximum(clinic):
    client, settings = clinic
    auth = token_for(settings, "carla")
    default = client.post("/api/v1/me/tokens", json={"name": "d"}, headers=auth).json()
    short = client.post("/api/v1/me/tokens", json={"name": "s", "days": 7}, headers=auth)
    assert short.status_code == 201 and short.json()["state"] == "active"
    assert 89.9 < days_left(default) <= 90 and 6.9 < days_left(short.json()) <= 7
    long = client.post("/api/v1/me/tokens", json={"name": "l", "days": 121}, headers=auth)
    assert long.status_code == 422
    assert long.json()["detail"] == "days: a token lasts from 1 to 120 days on this server"
    listed = client.get("/api/v1/me/tokens", headers=auth).json()
    assert [t["name"] for t in listed] == ["t", "d", "s"]  # token_for's, then the two made
    assert all(t["expires_at"] and t["state"] == "active" for t in listed)


def expire(settings: Settings, token_name: str) -> None:
    with staff.database(settings) as session:
        past = datetime.now(UTC) - timedelta(minutes=1)
        query = update(ApiTokenRecord).where(ApiTokenRecord.name == token_name)
        session.execute(query.values(expires_at=past))
        session.commit()


def test_an_expired_token_is_refused_as_expired(clinic):
    client, settings = clinic
    auth = token_for(settings, "carla")  # named "t"
    made = client.post("/api/v1/me/tokens", json={"name": "old"}, headers=auth).json()
    old = {"Authorization": f"Bearer {made['token']}"}
    assert client.get("/api/v1/me", headers=old).status_code == 200
    expire(settings, "old")
    refused = client.get("/api/v1/me", headers=old)
    assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer"
    assert refused.json()["detail"].startswith("API token expired on ")
    assert refused.json()["detail"].endswith(
        " UTC; make a new one on /account or with POST /api/v1/me/tokens"
    )
    unknown = client.get("/api/v1/me", headers={"Authorization": "Bearer dlt_nope"})
    assert unknown.json() == {"detail": "invalid or revoked API token"}
    states = {t["name"]: t["state"] for t in client.get("/api/v1/me/tokens", headers=auth).json()}
    assert states == {"t": "active", "old": "expired"}


def test_account_page_shows_the_expiry_and_asks_the_lifetime(tmp_path, tiny_bundle):
    settings = clinic_settings(tmp_path, tiny_bundle, f"sqlite:///{tmp_path / 'db.sqlite'}")
    add_account(settings, "carla")
    with TestClient(create_app(settings)) as client:
        log_in(client, "carla")
        page = client.get("/account")
        assert 'name="days" type="number" min="1" max="365"' in page.text
        token = csrf_of(page.text)
        made = client.post("/account/tokens", data={"name": "a", "days": 3, "csrf_token": token})
        assert made.status_code == 200 and "<th>Expires</th>" in made.text
        too_long = client.post(
            "/account/tokens", data={"name": "b", "days": 366, "csrf_token": token}
        )
        assert too_long.status_code == 422
        assert "a token lasts from 1 to 365 days on this server" in too_long.text
        expire(settings, "a")
        assert "<td>expired</td>" in client.get("/account").text
