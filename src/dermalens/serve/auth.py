"""Who is asking: a staff API token (Authorization: Bearer dlt_...) or a login session cookie.

Requests that change something with a session cookie must also carry the CSRF token (the
X-CSRF-Token header); bearer tokens need none, since a browser never sends them on its own.
The FastAPI dependencies that call these live in `serve.deps`.
"""

from __future__ import annotations

from datetime import timedelta

from fastapi import HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials
from sqlalchemy.orm import Session

from dermalens.serve import accounts
from dermalens.serve.account_tables import StaffRecord
from dermalens.serve.csrf import HEADER, cookie_name
from dermalens.serve.i18n import N_, _
from dermalens.serve.settings import Settings

SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
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
        staff = accounts.staff_for_token(session, credentials.credentials)
        if staff is None:
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                _("invalid or revoked API token"),
                headers={"WWW-Authenticate": "Bearer"},
            )
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


def require_admin(staff: StaffRecord) -> StaffRecord:
    if staff.role != "admin":
        raise HTTPException(status.HTTP_403_FORBIDDEN, _("this needs an admin account"))
    return staff
