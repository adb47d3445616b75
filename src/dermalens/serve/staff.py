"""Staff account administration, as the CLI does it (`dermalens user add`, `password`,
`disable`, `enable`, `list`): each function opens the service's database
(DERMALENS_DATABASE_URL or the SQLite file under DERMALENS_DATA_DIR), migrates it, makes its
change and returns the account as a dict.

There is no default account and no default password: the first admin comes from `add_user`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy.orm import Session

from dermalens.serve import accounts
from dermalens.serve.account_schemas import StaffOut
from dermalens.serve.account_tables import StaffRecord
from dermalens.serve.auth import policy
from dermalens.serve.db import make_sessions, migrate, open_database
from dermalens.serve.settings import Settings


@contextmanager
def database(settings: Settings | None) -> Iterator[Session]:
    engine = open_database((settings or Settings()).db_url)
    try:
        migrate(engine)
        with make_sessions(engine)() as session:
            yield session
    finally:
        engine.dispose()


def _out(staff: StaffRecord) -> dict[str, Any]:
    return StaffOut.model_validate(staff).model_dump(mode="json")


def add_user(
    username: str, role: str, password: str, settings: Settings | None = None
) -> dict[str, Any]:
    """Create an account; AccountError names a taken name, an unknown role or a weak password."""
    settings = settings or Settings()
    with database(settings) as session:
        staff = accounts.add_staff(session, username, role, password, policy(settings))
        session.commit()
        return _out(staff)


def set_user_disabled(
    username: str, disabled: bool, settings: Settings | None = None
) -> dict[str, Any]:
    """Disable an account (its sessions end, its tokens stop working) or enable it again
    (which also lifts a lockout)."""
    with database(settings) as session:
        staff = accounts.set_disabled(session, username, disabled)
        session.commit()
        return _out(staff)


def set_user_password(
    username: str, password: str, settings: Settings | None = None
) -> dict[str, Any]:
    """Replace an account's password (a lockout is lifted, open sessions end)."""
    settings = settings or Settings()
    with database(settings) as session:
        staff = accounts.set_password(session, username, password, policy(settings))
        session.commit()
        return _out(staff)


def list_users(settings: Settings | None = None) -> list[dict[str, Any]]:
    with database(settings) as session:
        return [_out(s) for s in accounts.all_staff(session)]
