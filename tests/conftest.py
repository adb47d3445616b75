"""Shared fixtures: real fixture images, the HAM10000 folder, a tiny model bundle, and
`database_url`: a fresh empty database on SQLite and on a real PostgreSQL server."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"
HAM_FIXTURES = FIXTURES / "ham"
HAM_ROOT = ROOT.parent / "shared" / "data" / "ham10000"
DEFAULT_MODEL = ROOT / "src" / "dermalens" / "bundled" / "default"
# A PostgreSQL role allowed to CREATE DATABASE (.ci/run makes this one); override with the
# variable, e.g. DERMALENS_TEST_POSTGRES_URL=postgresql+psycopg://me:pw@db.local:5432/postgres
POSTGRES_ENV = "DERMALENS_TEST_POSTGRES_URL"
POSTGRES_DEFAULT = "postgresql+psycopg://dermalens:dermalens@127.0.0.1:5432/postgres"


@pytest.fixture(scope="session")
def fixture_images() -> list[Path]:
    """Seven real HAM10000 images, one per class (see fixtures/ham/ATTRIBUTION.md)."""
    return sorted(HAM_FIXTURES.glob("*.jpg"))


@pytest.fixture(scope="session")
def ham_root() -> Path:
    if not (HAM_ROOT / "metadata.csv").is_file():
        pytest.skip(f"HAM10000 data not found at {HAM_ROOT}")
    return HAM_ROOT


def make_tiny_bundle(
    target: Path, use_metadata: bool = False, onnx: bool = True, seed: int = 0
) -> Path:
    """A randomly initialised small CNN bundle (7 HAM classes, 64x80 input), ONNX-exported."""
    import torch

    from dermalens.config import make_config
    from dermalens.export.to_onnx import export_onnx
    from dermalens.networks import build_model
    from dermalens.preprocess import Preprocessing
    from dermalens.taxonomy import HAM10000_CLASSES
    from dermalens.training.package import bundle_from_model

    torch.manual_seed(seed)
    cfg = make_config(
        model="plain_cnn", height=64, width=80, name="tiny", use_metadata=use_metadata
    )
    model, source = build_model("plain_cnn", 7, "none", 0.0, use_metadata)
    with torch.no_grad():  # spread the random logits so probabilities are not all ~1/7
        model.head.weight.mul_(20)
    pre = Preprocessing(height=64, width=80)
    bundle_from_model(model.eval(), target, list(HAM10000_CLASSES), pre, cfg, source)
    if onnx:
        export_onnx(target, sorted(HAM_FIXTURES.glob("*.jpg")))
    return target


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory) -> Path:
    return make_tiny_bundle(tmp_path_factory.mktemp("bundles") / "tiny")


def train_tiny(data: Path, out: Path, *extra: str) -> int:
    """`dermalens train` of the small CNN on tiny data: seconds, no calibration."""
    from dermalens.cli import main

    args = [
        "train",
        f"data={data}",
        f"out={out}",
        "model=plain_cnn",
        "batch_size=8",
        "height=48",
        "width=64",
        "workers=0",
        "progress=False",
        "calibrate=False",
        "lr=0.01",
        *extra,
    ]
    return main(args)


def make_tiny_ham(root: Path, copies: int = 4) -> Path:
    """A HAM10000-format dataset from the fixture images: `copies` lesions per class, each
    a flipped / rotated / re-toned version of the class's fixture image."""
    import pandas as pd
    from PIL import Image, ImageEnhance

    (root / "images").mkdir(parents=True, exist_ok=True)
    meta = pd.read_csv(HAM_FIXTURES / "metadata.csv")
    rows = []
    for rec in meta.to_dict("records"):
        base = Image.open(HAM_FIXTURES / f"{rec['image_id']}.jpg").convert("RGB")
        for k in range(copies):
            image = base.rotate(180 * (k % 2)).transpose(Image.FLIP_LEFT_RIGHT) if k else base
            image = ImageEnhance.Brightness(image).enhance(1 + 0.05 * k)
            image_id = f"{rec['image_id']}_{k}"
            image.save(root / "images" / f"{image_id}.jpg", quality=92)
            rows.append({**rec, "image_id": image_id, "lesion_id": f"{rec['lesion_id']}_{k}"})
    pd.DataFrame(rows).to_csv(root / "metadata.csv", index=False)
    return root


@pytest.fixture(scope="session")
def tiny_ham(tmp_path_factory) -> Path:
    return make_tiny_ham(tmp_path_factory.mktemp("data") / "tiny_ham")


@pytest.fixture(scope="session")
def postgres_server() -> str:
    """The URL of a reachable PostgreSQL server (a role that may create databases).

    Skips, saying why, where none can be reached; under CI (the CI variable set) that is a
    failure instead, since .ci/run installs and starts one."""
    import sqlalchemy as sa

    url = os.environ.get(POSTGRES_ENV, POSTGRES_DEFAULT)
    try:
        engine = sa.create_engine(url, connect_args={"connect_timeout": 5})
        with engine.connect() as connection:
            connection.execute(sa.text("SELECT 1"))
        engine.dispose()
    except Exception as exc:  # no driver, no server, bad password: all mean "cannot test"
        reason = (
            f"no PostgreSQL server reachable at {sa.engine.make_url(url)!r} ({POSTGRES_ENV}): "
            f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc) else ''}"
        )
        if os.environ.get("CI"):
            pytest.fail(f"CI: .ci/run starts PostgreSQL, but {reason}", pytrace=False)
        pytest.skip(reason)
    return url


@contextmanager
def fresh_postgres_database(server_url: str) -> Iterator[str]:
    """A new, empty database on the server at `server_url`, dropped on exit: yields its URL."""
    import sqlalchemy as sa

    server = sa.engine.make_url(server_url)
    name = f"dermalens_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(sa.text(f"CREATE DATABASE {name} ENCODING 'UTF8' TEMPLATE template0"))
    try:
        yield server.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:  # FORCE: engines a test left open are cut off
            connection.execute(sa.text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path) -> Iterator[str]:
    """A SQLAlchemy URL of a fresh, empty database: each test using it runs twice, on a SQLite
    file under tmp_path and on a new database on the PostgreSQL server (dropped afterwards).

    Use it wherever a test stores something, e.g.
    `Settings(model=tiny_bundle, data_dir=tmp_path, database_url=database_url)` or
    `migrate(open_database(database_url))`; for backend-specific checks, read
    `make_url(database_url).get_backend_name()` ("sqlite" / "postgresql"). The PostgreSQL case
    skips with the reason where no server is reachable (not under CI: see `postgres_server`).
    A module-scoped database: `with fresh_postgres_database(postgres_server) as url: ...`."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'test.sqlite'}"
        return
    with fresh_postgres_database(request.getfixturevalue("postgres_server")) as url:
        yield url
