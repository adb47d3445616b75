"""Helpers shared by the clinic tests (accounts, tokens, logging in, filing an image)."""

from __future__ import annotations

import re

from dermalens.serve import accounts, staff
from dermalens.serve.settings import Settings

PASSWORD = "correct horse battery staple"


def clinic_settings(tmp_path, bundle, database_url: str, **overrides) -> Settings:
    return Settings(
        model=bundle,
        data_dir=tmp_path / "data",
        database_url=database_url,
        api_token="export-token",
        secret_key="test-secret-key",
        **overrides,
    )


def add_account(settings: Settings, username: str, role: str = "clinician") -> None:
    staff.add_user(username, role, PASSWORD, settings)


def token_for(settings: Settings, username: str) -> dict[str, str]:
    """An Authorization header with a new API token of `username`."""
    with staff.database(settings) as session:
        record, secret = accounts.new_token(session, accounts.find_staff(session, username), "t")
        session.commit()
    return {"Authorization": f"Bearer {secret}"}


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, "no CSRF field on the page"
    return match.group(1)


def log_in(client, username: str, password: str = PASSWORD):
    """Post the login form as a browser does (the form's CSRF token included)."""
    token = csrf_of(client.get("/login").text)
    form = {"username": username, "password": password, "csrf_token": token, "next": "/account"}
    return client.post("/login", data=form, follow_redirects=False)


def new_patient(client, headers, clinic_id: str = "PT-1", **fields) -> dict:
    response = client.post(
        "/api/v1/patients", json={"clinic_id": clinic_id, **fields}, headers=headers
    )
    assert response.status_code == 201, response.json()
    return response.json()


def file_image(client, headers, patient_id: str, lesion_id: str, visit_id: str, data: bytes):
    response = client.post(
        f"/api/v1/patients/{patient_id}/lesions/{lesion_id}/predictions?explain=false",
        files={"file": ("lesion.jpg", data)},
        data={"visit_id": visit_id},
        headers=headers,
    )
    assert response.status_code == 201, response.json()
    return response.json()
