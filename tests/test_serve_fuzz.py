"""The REST API fuzzed from its own OpenAPI schema with schemathesis, in-process over ASGI on
the bundled default model and PostgreSQL (SQLite where no server is reachable): for every
operation in the schema (routes added later included), a few generated requests, valid and
invalid, seeded (derandomized) with a per-request deadline.
The checks: no 5xx, a documented status code, the documented content type and a body that
matches the documented schema. Where generated data cannot reach a route's real work, the
hooks below mix in what a client sends: real lesion images for uploads, an existing id for
path parameters. The account routes (/me, /users) get an admin's staff token, so they do
their real work too (the other routes keep the feedback export's token).

    nice -n 10 pytest tests/test_serve_fuzz.py -q
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from conftest import DEFAULT_MODEL, HAM_FIXTURES, fresh_postgres_database
from dermalens.serve import accounts, staff
from dermalens.serve.app import create_app
from dermalens.serve.settings import Settings

TOKEN = "fuzz-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
EXAMPLES = 8  # per operation: the whole run stays well under a minute
STAFF_ROUTES = ("/api/v1/me", "/api/v1/users")
STAFF_AUTH: dict[str, str] = {}  # an admin's staff token, made with the app below


def seed_ids(app) -> dict[str, str]:
    """Path-parameter values that exist: one stored prediction (as a client would make it)."""
    with TestClient(app) as client:
        image = sorted(HAM_FIXTURES.glob("*.jpg"))[0].read_bytes()
        response = client.post("/api/v1/predictions?explain=false", files={"file": image})
        assert response.status_code == 201, response.text
    return {"prediction_id": response.json()["id"]}


def seed_accounts(settings: Settings) -> dict[str, str]:
    """An admin (whose token the account routes get) and a clinician to change: their id."""
    staff.add_user("fuzz-admin", "admin", "fuzz admin pass phrase", settings)
    clinician = staff.add_user("fuzz-clinician", "clinician", "fuzz clinician phrase", settings)
    with staff.database(settings) as session:
        _, secret = accounts.new_token(session, accounts.find_staff(session, "fuzz-admin"), "f")
        session.commit()
    STAFF_AUTH["Authorization"] = f"Bearer {secret}"
    return {"user_id": str(clinician["id"])}


@pytest.fixture(scope="module")
def fuzz_database(request, tmp_path_factory) -> Iterator[str]:
    """PostgreSQL where reachable: stricter than SQLite (string lengths, NUL characters), so
    it finds what SQLite lets through; else a SQLite file (under CI a missing server fails)."""
    try:
        server = request.getfixturevalue("postgres_server")
    except pytest.skip.Exception:
        yield f"sqlite:///{tmp_path_factory.mktemp('fuzz-db') / 'fuzz.sqlite'}"
        return
    with fresh_postgres_database(server) as url:
        yield url


@pytest.fixture(scope="module")
def api_schema(tmp_path_factory, fuzz_database):
    settings = Settings(
        model=DEFAULT_MODEL,
        data_dir=tmp_path_factory.mktemp("fuzz"),
        database_url=fuzz_database,
        api_token=TOKEN,
    )
    app = create_app(settings)
    known = {**seed_ids(app), **seed_accounts(settings)}
    images = [path.read_bytes() for path in sorted(HAM_FIXTURES.glob("*.jpg"))[:3]]
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)

    @schema.hook
    def flatmap_path_parameters(context, path_parameters):
        # Random ids only ever meet the 404 path; a known one reaches the route's real work.
        if not path_parameters:
            return st.just(path_parameters)
        real = {k: known.get(k, v) for k, v in path_parameters.items()}
        return st.sampled_from([path_parameters, real])

    @schema.hook
    def flatmap_body(context, body):
        if not isinstance(body, dict) or "file" not in body:
            return st.just(body)
        # A multipart form has no null: schemathesis would send the text "null" for an
        # optional field, where a client leaves the field out.
        form = {k: v for k, v in body.items() if v is not None}
        return st.sampled_from([form, *({**form, "file": image} for image in images)])

    return schema


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=5000,  # ms per request: one CNN forward pass and its heatmap on a shared CPU
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)
def test_api_conforms_to_its_schema(case):
    headers = STAFF_AUTH if case.path.startswith(STAFF_ROUTES) else AUTH
    case.call_and_validate(headers=headers, checks=CHECKS)
