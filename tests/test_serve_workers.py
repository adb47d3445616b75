"""Several worker processes (`dermalens serve --workers N`): the setting is checked, the
ONNX Runtime threads are shared out, and apps on one data folder share the CSRF secret, the
login sessions and the schema (made once even when the workers start together).

    nice -n 10 pytest tests/test_serve_workers.py -q
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError
from sqlalchemy import inspect

from clinic_helpers import add_account, csrf_of, log_in
from dermalens.serve.app import create_app
from dermalens.serve.csrf import load_secret
from dermalens.serve.db import migrate, open_database
from dermalens.serve.settings import Settings


@pytest.mark.parametrize("value", ["0", "two", "65"])
def test_a_bad_workers_value_is_refused_by_name(monkeypatch, value):
    monkeypatch.setenv("DERMALENS_WORKERS", value)
    with pytest.raises(ValidationError, match=f"DERMALENS_WORKERS={value!r}|WORKERS={value}"):
        Settings()


def test_each_worker_gets_its_share_of_the_cores(monkeypatch):
    monkeypatch.setattr("os.sched_getaffinity", lambda _pid: {0, 1, 2, 3}, raising=False)
    assert Settings(workers=" 2 ").onnx_threads == 2
    assert Settings(workers=8).onnx_threads == 1
    assert Settings(workers=1).onnx_threads == 0  # ONNX Runtime's default: every core
    assert Settings(workers=2, threads=3).onnx_threads == 3  # DERMALENS_THREADS wins


def test_workers_share_one_secret_key(tmp_path):
    with ThreadPoolExecutor(4) as pool:
        keys = set(pool.map(lambda _: load_secret(None, tmp_path), range(8)))
    assert len(keys) == 1 and len(keys.pop()) > 40
    assert [p.name for p in tmp_path.iterdir()] == ["secret_key"]  # no draft left behind


def _migrate(url: str) -> None:
    engine = open_database(url)
    migrate(engine)
    engine.dispose()


@pytest.mark.skipif(
    "fork" not in multiprocessing.get_all_start_methods(), reason="needs fork (POSIX)"
)
def test_workers_starting_together_make_the_schema_once(tmp_path):
    # without the lock, three processes on a new file fail with "table ... already exists"
    url = f"sqlite:///{tmp_path / 'new.sqlite'}"
    with ProcessPoolExecutor(3, mp_context=multiprocessing.get_context("fork")) as pool:
        list(pool.map(_migrate, [url] * 3))
    engine = open_database(url)
    assert "predictions" in inspect(engine).get_table_names()
    engine.dispose()


def test_a_login_on_one_worker_is_valid_on_another(tmp_path, tiny_bundle):
    # no DERMALENS_SECRET_KEY: the workers must find the same key in the data folder
    settings = Settings(
        model=tiny_bundle,
        data_dir=tmp_path / "data",
        database_url=f"sqlite:///{tmp_path / 'clinic.sqlite'}",
    )
    add_account(settings, "carla")
    with (
        TestClient(create_app(settings)) as first,
        TestClient(create_app(settings)) as second,
    ):
        assert log_in(first, "carla").status_code == 303
        token = csrf_of(first.get("/account").text)
        second.cookies = first.cookies  # the browser's next request reaches the other worker
        assert second.get("/api/v1/me").json()["username"] == "carla"
        made = second.post(
            "/api/v1/patients", json={"clinic_id": "PT-9"}, headers={"X-CSRF-Token": token}
        )
        assert made.status_code == 201, made.json()
