"""Database engine and schema migrations. SQLite (WAL mode) by default; any SQLAlchemy URL
works, e.g. postgresql+psycopg://user:password@host/dermalens."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import sessionmaker

try:
    import fcntl  # POSIX: serialises the migrations of several worker processes
except ImportError:  # Windows: one worker per data folder there
    fcntl = None

MIGRATIONS = Path(__file__).parent / "migrations"


def open_database(url: str) -> Engine:
    """An engine for `url`; for SQLite, creates the folder and turns on WAL and foreign keys."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True)
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    # Routes run in a thread pool, so a connection may move between threads.
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection, _record) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")  # readers do not block the writer
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    return engine


def make_sessions(engine: Engine) -> sessionmaker:
    return sessionmaker(engine, expire_on_commit=False)


def migrate(engine: Engine, revision: str = "head") -> None:
    """Bring the schema up to `revision` with Alembic (no alembic.ini needed)."""
    from alembic import command  # migrations only, not on every import
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with _one_process_at_a_time(engine), engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


@contextmanager
def _one_process_at_a_time(engine: Engine) -> Iterator[None]:
    """An exclusive lock on a file beside a SQLite database: worker processes starting
    together (`uvicorn --workers N`) would otherwise all create the tables of a new one."""
    database = engine.url.database
    if (
        fcntl is None
        or engine.url.get_backend_name() != "sqlite"
        or database in (None, "", ":memory:")
    ):
        yield
        return
    with open(Path(database).expanduser().with_suffix(".migrate-lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
