"""Alembic environment. The service runs `upgrade head` at startup (dermalens.serve.db.migrate);
by hand: `alembic -c src/dermalens/serve/migrations/alembic.ini upgrade head`, with the
database taken from DERMALENS_DATABASE_URL like the service."""

from __future__ import annotations

from alembic import context

from dermalens.serve import account_tables  # noqa: F401  (registers its tables in Base.metadata)
from dermalens.serve.db import open_database
from dermalens.serve.settings import Settings
from dermalens.serve.tables import Base


def run_migrations() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:  # handed over by dermalens.serve.db.migrate
        context.configure(connection=connection, target_metadata=Base.metadata)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = open_database(Settings().db_url)
    with engine.begin() as connection:
        context.configure(connection=connection, target_metadata=Base.metadata)
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    raise SystemExit("offline (--sql) migrations are not supported; run against a database")
run_migrations()
