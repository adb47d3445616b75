"""The staff pages: log in, log out, and the account page that makes API tokens.

Every form carries a CSRF token (signed double-submit, `serve.csrf`); logins are rate-limited
per client address and lock the account after repeated failures (`serve.accounts`).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Form, HTTPException, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from dermalens.serve import accounts, audit, auth
from dermalens.serve.account_tables import StaffRecord
from dermalens.serve.deps import SessionDep, SettingsDep
from dermalens.serve.i18n import N_, _
from dermalens.serve.ratelimit import client_address
from dermalens.serve.settings import Settings
from dermalens.serve.templating import environment

router = APIRouter(include_in_schema=False)
# the pages speak the request's language: the gettext environment of serve.templating
TEMPLATES = Jinja2Templates(env=environment(strict=False))
CSP = (
    "default-src 'self'; img-src 'self'; style-src 'self'; script-src 'none'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
FORM_EXPIRED = N_("The form expired or came from another site; reload the page and try again.")
WRONG = N_("Wrong user name or password.")
DISABLED = N_("This account is disabled; ask an administrator.")
LOCKED = N_("Too many failed logins: this account is locked until %(until)s UTC.")
Text = Annotated[str, Form(max_length=1024)]


def render(request: Request, name: str, status_code: int = 200, **context: Any) -> Response:
    csrf = request.app.state.csrf
    token, new_cookie = csrf.token(request)
    response = TEMPLATES.TemplateResponse(
        request,
        name,
        {"csrf_token": token, "staff": None, **context},
        status_code=status_code,
        headers={"Content-Security-Policy": CSP, "Cache-Control": "no-store"},
    )
    csrf.set_cookie(response, new_cookie)
    return response


def safe_next(target: str) -> str:
    # Only a path on this site: "//host" or "/\\host" would leave it.
    return target if target.startswith("/") and not target.startswith(("//", "/\\")) else "/"


def signed_in(request: Request, session, settings: Settings) -> StaffRecord | None:
    try:
        return auth.authenticate(request, session, settings, None, csrf_header=False)
    except HTTPException:
        return None


def login_page(request: Request, settings: Settings, status_code: int = 200, **context):
    context = {"next": "/account", "username": "", "error": None, **context}
    anonymous = settings.anonymous_predictions
    return render(request, "login.html", status_code, anonymous=anonymous, **context)


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request, settings: SettingsDep, next: str = "/account") -> Response:
    """The staff login form."""
    return login_page(request, settings, next=safe_next(next))


@router.post("/login", response_class=HTMLResponse)
def login(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    username: Annotated[str, Form(max_length=64)] = "",
    password: Text = "",
    csrf_token: Text = "",
    next: Text = "/account",
) -> Response:
    """Check the password; on success start a session and go to `next`."""
    again = {"next": safe_next(next), "username": username}
    if not request.app.state.csrf.valid(request, csrf_token):
        return login_page(request, settings, 403, error=_(FORM_EXPIRED), **again)
    try:
        request.app.state.rate_limits.check(
            settings.login_rate_limit,
            "login",
            client_address(request, settings.trusted_proxies),
            _("Too many login attempts from this address; try again in {seconds} s."),
        )
    except HTTPException as exc:
        page = login_page(request, settings, 429, error=exc.detail, **again)
        page.headers.update(exc.headers or {})
        return page
    result = accounts.log_in(session, username, password, auth.policy(settings))
    if result.staff is None:
        audit.record(session, None, request, "account", action=result.reason, username=username)
        if result.reason == "locked":
            until = result.locked_until.strftime("%Y-%m-%d %H:%M")
            return login_page(request, settings, 403, error=_(LOCKED) % {"until": until}, **again)
        if result.reason == "disabled":
            return login_page(request, settings, 403, error=_(DISABLED), **again)
        return login_page(request, settings, 401, error=_(WRONG), **again)
    cookie = accounts.start_session(session, result.staff, timedelta(hours=settings.session_hours))
    audit.record(session, result.staff, request, "account", action="login")
    response = RedirectResponse(again["next"], status_code=status.HTTP_303_SEE_OTHER)
    response.set_cookie(
        auth.session_cookie(settings),
        cookie,
        max_age=int(settings.session_hours * 3600),
        httponly=True,
        samesite="lax",  # sent when following a link here, never on cross-site posts
        secure=settings.cookie_secure,
    )
    return response


@router.post("/logout")
def logout(
    request: Request, session: SessionDep, settings: SettingsDep, csrf_token: Text = ""
) -> Response:
    """End the session."""
    if not request.app.state.csrf.valid(request, csrf_token):
        return login_page(request, settings, 403, error=_(FORM_EXPIRED))
    staff = signed_in(request, session, settings)
    cookie = request.cookies.get(auth.session_cookie(settings))
    if cookie:
        accounts.end_session(session, cookie)
    if staff is not None:
        audit.record(session, staff, request, "account", action="logout")
    response = RedirectResponse("/login", status_code=status.HTTP_303_SEE_OTHER)
    response.delete_cookie(auth.session_cookie(settings), secure=settings.cookie_secure)
    return response


def account_page(
    request, session, staff: StaffRecord, status_code: int = 200, **context
) -> Response:
    tokens = [
        (t, accounts.token_state(t.revoked_at, t.expires_at))
        for t in accounts.tokens_of(session, staff)
    ]
    settings = request.app.state.settings
    return render(
        request,
        "account.html",
        status_code,
        staff=staff,
        tokens=tokens,
        token_days=settings.token_days,
        token_max_days=settings.token_max_days,
        **context,
    )


@router.get("/account", response_class=HTMLResponse)
def account(request: Request, session: SessionDep, settings: SettingsDep) -> Response:
    """Who is signed in, their API tokens, a form for a new one."""
    staff = signed_in(request, session, settings)
    if staff is None:
        return RedirectResponse("/login?next=/account", status_code=status.HTTP_303_SEE_OTHER)
    return account_page(request, session, staff)


@router.post("/account/tokens", response_class=HTMLResponse)
def make_token(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    name: Annotated[str, Form(max_length=100)] = "",
    days: Annotated[int | None, Form()] = None,
    csrf_token: Text = "",
) -> Response:
    """Make an API token (for `days`, default DERMALENS_TOKEN_DAYS) and show it once."""
    staff = signed_in(request, session, settings)
    if staff is None:
        return RedirectResponse("/login?next=/account", status_code=status.HTTP_303_SEE_OTHER)
    if not request.app.state.csrf.valid(request, csrf_token):
        return render(
            request,
            "login.html",
            403,
            error=_(FORM_EXPIRED),
            next="/account",
            username=staff.username,
            anonymous=settings.anonymous_predictions,
        )
    try:
        lifetime = auth.token_lifetime(settings, days)
    except RequestValidationError as exc:
        return account_page(request, session, staff, 422, error=exc.errors()[0]["msg"])
    record, secret = accounts.new_token(session, staff, name.strip() or "unnamed", lifetime)
    audit.record(session, staff, request, "token", resource_id=str(record.id))
    shown = {"name": record.name, "secret": secret}
    return account_page(request, session, staff, new_token=shown)
