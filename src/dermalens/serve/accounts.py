"""Staff accounts: argon2 password hashes, login with lockout, disabling, roles, API tokens
and login sessions. Database work only (the HTTP side is in `serve.auth`); callers commit.
The CLI (`serve.staff`) and the admin API (`routes/users`) both make their changes here.

Tokens and session cookies are 256-bit random strings shown once and stored as SHA-256
digests; passwords are hashed with argon2id (memory-hard), the library's default parameters.
Tokens expire (`expires_at`, DERMALENS_TOKEN_DAYS); an expired one is refused as such.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from dermalens.serve.account_tables import ApiTokenRecord, LoginSessionRecord, StaffRecord
from dermalens.serve.i18n import _

ROLES = ("clinician", "admin")
# a token's lifetime when the caller gives none; the service passes DERMALENS_TOKEN_DAYS
DEFAULT_TOKEN_LIFETIME = timedelta(days=90)
TOKEN_PREFIX = "dlt_"  # tells a staff token apart from the feedback-export DERMALENS_API_TOKEN
HASHER = PasswordHasher()
# Checked when the user name is unknown, so a wrong name takes as long as a wrong password.
_DUMMY_HASH = HASHER.hash(secrets.token_hex(16))


class AccountError(ValueError):
    """A bad account request (unknown user, weak password, taken name); says which, and
    `field` names the bad input ("username", "password") where there is one."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field


class UnknownAccount(AccountError):
    """No account of that name."""


class AccountConflict(AccountError):
    """The change clashes with what is stored: a taken name, or the last admin account."""


@dataclass(frozen=True)
class LoginPolicy:
    max_failures: int = 5  # failed logins in a row before the account locks
    lockout: timedelta = timedelta(minutes=15)
    min_password_length: int = 12


@dataclass(frozen=True)
class TokenLookup:
    staff: StaffRecord | None  # None when the token is refused
    reason: str = ""  # why it was refused: "unknown", "revoked" or "expired"
    expired_at: datetime | None = None


@dataclass(frozen=True)
class LoginResult:
    staff: StaffRecord | None  # None when the login failed
    reason: str = ""  # why it failed: "invalid", "locked" or "disabled"
    locked_until: datetime | None = None


def now() -> datetime:
    return datetime.now(UTC)


def aware(value: datetime | None) -> datetime | None:
    # SQLite hands back naive datetimes; every time stored here is UTC.
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def check_password(password: str, username: str, policy: LoginPolicy) -> None:
    if len(password) < policy.min_password_length:
        raise AccountError(
            _("password is too short: at least %(n)s characters")
            % {"n": policy.min_password_length},
            "password",
        )
    if password.strip().lower() == username.lower():
        raise AccountError(_("password must not be the user name"), "password")


def find_staff(session: Session, username: str) -> StaffRecord | None:
    return session.scalar(select(StaffRecord).where(StaffRecord.username == username))


def get_staff(session: Session, username: str) -> StaffRecord:
    staff = find_staff(session, username)
    if staff is None:
        raise UnknownAccount(_("no user %(name)s") % {"name": repr(username)})
    return staff


def all_staff(session: Session) -> list[StaffRecord]:
    return list(session.scalars(select(StaffRecord).order_by(StaffRecord.id)))


def add_staff(
    session: Session, username: str, role: str, password: str, policy: LoginPolicy
) -> StaffRecord:
    """A new account; AccountError for a bad name or role, a taken name or a weak password."""
    username = username.strip()
    if not username or len(username) > 64 or not username.isprintable() or " " in username:
        raise AccountError(
            _("invalid user name %(name)s: 1-64 characters, no spaces") % {"name": repr(username)},
            "username",
        )
    _check_role(role)
    if find_staff(session, username) is not None:
        raise AccountConflict(_("user %(name)s already exists") % {"name": repr(username)})
    check_password(password, username, policy)
    staff = StaffRecord(
        username=username,
        role=role,
        password_hash=HASHER.hash(password),
        disabled=False,
        failed_logins=0,
    )
    session.add(staff)
    session.flush()
    return staff


def _check_role(role: str) -> None:
    if role not in ROLES:
        raise AccountError(
            _("unknown role %(role)s; use one of %(roles)s")
            % {"role": repr(role), "roles": list(ROLES)},
            "role",
        )


def _keep_an_admin(session: Session, staff: StaffRecord, role: str, disabled: bool) -> None:
    """AccountConflict when the change would leave no enabled admin account."""
    if staff.role != "admin" or staff.disabled or (role == "admin" and not disabled):
        return
    others = select(StaffRecord.id).where(
        StaffRecord.role == "admin", StaffRecord.disabled.is_(False), StaffRecord.id != staff.id
    )
    if session.scalar(others.limit(1)) is None:
        raise AccountConflict(
            _("%(name)s is the last enabled admin account: make another admin first")
            % {"name": repr(staff.username)}
        )


def set_disabled(
    session: Session, username: str, disabled: bool, keep_an_admin: bool = False
) -> StaffRecord:
    """Disable (sessions ended, tokens refused) or enable (lockout cleared) an account.
    `keep_an_admin` refuses to disable the last enabled admin (the API sets it; the CLI,
    which is how a server's holder recovers an admin, does not)."""
    staff = get_staff(session, username)
    if keep_an_admin:
        _keep_an_admin(session, staff, staff.role, disabled)
    staff.disabled = disabled
    if disabled:
        for login in session.scalars(
            select(LoginSessionRecord).where(LoginSessionRecord.staff_id == staff.id)
        ):
            session.delete(login)
    else:
        staff.failed_logins, staff.locked_until = 0, None
    session.flush()
    return staff


def set_role(
    session: Session, username: str, role: str, keep_an_admin: bool = False
) -> StaffRecord:
    """Make an account a clinician or an admin (`keep_an_admin` as in `set_disabled`)."""
    _check_role(role)
    staff = get_staff(session, username)
    if keep_an_admin:
        _keep_an_admin(session, staff, role, staff.disabled)
    staff.role = role
    session.flush()
    return staff


def set_password(
    session: Session, username: str, password: str, policy: LoginPolicy
) -> StaffRecord:
    """A new password (checked like a first one); lifts a lockout and ends the sessions."""
    staff = get_staff(session, username)
    check_password(password, staff.username, policy)
    staff.password_hash = HASHER.hash(password)
    staff.failed_logins, staff.locked_until = 0, None
    for login in session.scalars(
        select(LoginSessionRecord).where(LoginSessionRecord.staff_id == staff.id)
    ):
        session.delete(login)
    session.flush()
    return staff


def log_in(session: Session, username: str, password: str, policy: LoginPolicy) -> LoginResult:
    """Check a password, counting failures; the account locks after `policy.max_failures`."""
    staff = find_staff(session, username.strip())
    if staff is None:
        _verify(_DUMMY_HASH, password)
        return LoginResult(None, "invalid")
    locked_until = aware(staff.locked_until)
    if locked_until is not None and locked_until > now():
        return LoginResult(None, "locked", locked_until)
    if not _verify(staff.password_hash, password):
        staff.failed_logins += 1
        if staff.failed_logins >= policy.max_failures:
            staff.locked_until, staff.failed_logins = now() + policy.lockout, 0
            session.flush()
            return LoginResult(None, "locked", aware(staff.locked_until))
        session.flush()
        return LoginResult(None, "invalid")
    if staff.disabled:  # told only to someone who knows the password
        return LoginResult(None, "disabled")
    if HASHER.check_needs_rehash(staff.password_hash):
        staff.password_hash = HASHER.hash(password)
    staff.failed_logins, staff.locked_until, staff.last_login_at = 0, None, now()
    session.flush()
    return LoginResult(staff)


def _verify(password_hash: str, password: str) -> bool:
    try:
        return HASHER.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def new_token(
    session: Session,
    staff: StaffRecord,
    name: str,
    lifetime: timedelta = DEFAULT_TOKEN_LIFETIME,
) -> tuple[ApiTokenRecord, str]:
    """A new API token for `staff`, valid for `lifetime`: the record and the secret, which
    is never stored."""
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    record = ApiTokenRecord(
        staff_id=staff.id,
        name=name.strip(),
        token_sha256=digest(secret),
        prefix=secret[:10],
        expires_at=now() + lifetime,
    )
    session.add(record)
    session.flush()
    return record, secret


def tokens_of(session: Session, staff: StaffRecord) -> list[ApiTokenRecord]:
    query = select(ApiTokenRecord).where(ApiTokenRecord.staff_id == staff.id)
    return list(session.scalars(query.order_by(ApiTokenRecord.id)))


def revoke_token(session: Session, staff: StaffRecord, token_id: int) -> ApiTokenRecord | None:
    record = session.get(ApiTokenRecord, token_id)
    if record is None or record.staff_id != staff.id:
        return None
    record.revoked_at = record.revoked_at or now()
    session.flush()
    return record


def token_state(revoked_at: datetime | None, expires_at: datetime | None) -> str:
    """ "revoked", "expired" or "active" (now)."""
    if revoked_at is not None:
        return "revoked"
    expires_at = aware(expires_at)
    return "expired" if expires_at is not None and expires_at <= now() else "active"


def staff_for_token(session: Session, secret: str) -> TokenLookup:
    """The account a bearer token belongs to, or why the token is refused."""
    record = session.scalar(
        select(ApiTokenRecord).where(ApiTokenRecord.token_sha256 == digest(secret))
    )
    if record is None:
        return TokenLookup(None, "unknown")
    state = token_state(record.revoked_at, record.expires_at)
    if state != "active":
        return TokenLookup(None, state, aware(record.expires_at))
    record.last_used_at = now()
    return TokenLookup(session.get(StaffRecord, record.staff_id))


def start_session(session: Session, staff: StaffRecord, lifetime: timedelta) -> str:
    """A new login session; returns the cookie value (stored only as its digest)."""
    cookie = secrets.token_urlsafe(32)
    session.add(
        LoginSessionRecord(id=digest(cookie), staff_id=staff.id, expires_at=now() + lifetime)
    )
    session.flush()
    return cookie


def staff_for_session(session: Session, cookie: str, idle: timedelta) -> StaffRecord | None:
    """The account of a live session; an expired or idle one is deleted and gives None."""
    login = session.get(LoginSessionRecord, digest(cookie))
    if login is None:
        return None
    moment = now()
    if aware(login.expires_at) <= moment or aware(login.last_seen_at) + idle <= moment:
        session.delete(login)
        session.commit()
        return None
    login.last_seen_at = moment
    return session.get(StaffRecord, login.staff_id)


def end_session(session: Session, cookie: str) -> None:
    login = session.get(LoginSessionRecord, digest(cookie))
    if login is not None:
        session.delete(login)
        session.flush()
