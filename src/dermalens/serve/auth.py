"""Who is asking: a staff API token (Authorization: Bearer dlt_...) or a login session cookie.

Requests that change something with a session cookie must also carry the CSRF token (the
X-CSRF-Token header); bearer tokens need none, since a browser never sends them on its own.
The FastAPI dependencies that call these live in `serve.deps`.
"""

from __future__ import annotations

from datetime import timedelta

from fastapi import HTTPException, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.security import HTTPAuthorizationCredentials
from sqlalchemy.orm import Session

from dermalens.serve import accounts
from dermalens.serve.account_tables import StaffRecord
from dermalens.serve.csrf import HEADER, cookie_name
from dermalens.serve.i18n import N_, _
from dermalens.serve.settings import Settings

SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
TOKEN_EXPIRED = N_(
    "API token expired on %(when)s UTC; make a new one on /account or with POST /api/v1/me/tokens"
)
TOKEN_DAYS = N_("a token lasts from 1 to %(max)s days on this server")
LOGIN_NEEDED = N_(
    "authentication required: log in at /login, or send 'Authorization: Bearer <token>' "
    "with a staff API token"
)


def session_cookie(settings: Settings) -> str:
    return cookie_name("dermalens_session", settings.cookie_secure)


def policy(settings: Settings) -> accounts.LoginPolicy:
    return accounts.LoginPolicy(
        max_failures=settings.login_max_failures,
        lockout=timedelta(minutes=settings.login_lockout_minutes),
        min_password_length=settings.password_min_length,
    )


def has_credentials(request: Request, settings: Settings) -> bool:
    cookie = request.cookies.get(session_cookie(settings))
    return bool(request.headers.get("authorization") or cookie)


def authenticate(
    request: Request,
    session: Session,
    settings: Settings,
    credentials: HTTPAuthorizationCredentials | None,
    csrf_header: bool = True,
) -> StaffRecord:
    """The signed-in account; 401 without (valid) credentials, 403 when disabled or no CSRF.
    `csrf_header=False` is for the HTML forms, which check their own `csrf_token` field."""
    if credentials is not None:
        staff = _token_staff(session, credentials.credentials)
    else:
        cookie = request.cookies.get(session_cookie(settings))
        if not cookie:
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                _(LOGIN_NEEDED),
                headers={"WWW-Authenticate": "Bearer"},
            )
        idle = timedelta(minutes=settings.session_idle_minutes)
        staff = accounts.staff_for_session(session, cookie, idle)
        if staff is None:
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, _("session expired; log in again"))
        if csrf_header and request.method not in SAFE_METHODS:
            csrf = request.app.state.csrf
            if not csrf.valid(request, request.headers.get(HEADER)):
                raise HTTPException(
                    status.HTTP_403_FORBIDDEN,
                    _("missing or invalid CSRF token: send the %(header)s header given by the page")
                    % {"header": HEADER},
                )
    if staff is None or staff.disabled:
        name = staff.username if staff else "?"
        raise HTTPException(
            status.HTTP_403_FORBIDDEN, _("account %(name)s is disabled") % {"name": repr(name)}
        )
    session.commit()  # last use of the token or session
    return staff


def _token_staff(session: Session, secret: str) -> StaffRecord:
    found = accounts.staff_for_token(session, secret)
    if found.staff is not None:
        return found.staff
    if found.reason == "expired":
        detail = _(TOKEN_EXPIRED) % {"when": found.expired_at.strftime("%Y-%m-%d %H:%M")}
    else:
        detail = _("invalid or revoked API token")
    raise HTTPException(
        status.HTTP_401_UNAUTHORIZED, detail, headers={"WWW-Authenticate": "Bearer"}
    )


def token_lifetime(settings: Settings, days: int | None) -> timedelta:
    """A new token's lifetime: `days`, else DERMALENS_TOKEN_DAYS; a 422 on the `days` field
    beyond DERMALENS_TOKEN_MAX_DAYS."""
    days = settings.token_days if days is None else days
    if not 1 <= days <= settings.token_max_days:
        message = _(TOKEN_DAYS) % {"max": settings.token_max_days}
        raise RequestValidationError(
            [{"loc": ("body", "days"), "msg": message, "type": "value_error"}]
        )
    return timedelta(days=days)


def require_admin(staff: StaffRecord) -> StaffRecord:
    if staff.role != "admin":
        raise HTTPException(status.HTTP_403_FORBIDDEN, _("this needs an admin account"))
    return staff
