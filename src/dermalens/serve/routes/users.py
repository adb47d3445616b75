"""Staff accounts, for admins: list, create, read, disable / enable, change role, set a new
password, and a user's API tokens (list, revoke). The same `serve.accounts` functions as
`dermalens user ...`; every change goes to the audit log (resource "account" or "token").

An admin cannot disable or demote the last enabled admin account (409): the API must never
lock every admin out. Passwords, their hashes and token digests are in no answer.
"""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request, Response, status
from fastapi.exceptions import RequestValidationError

from dermalens.serve import accounts, audit, auth
from dermalens.serve.account_schemas import PasswordIn, TokenOut, UserChange, UserIn, UserOut
from dermalens.serve.account_tables import StaffRecord
from dermalens.serve.clinic_deps import AUTH_ERRORS
from dermalens.serve.deps import AdminDep, RowId, SessionDep, SettingsDep, UserDep
from dermalens.serve.routes.me import revoke_or_404

ADMIN_ONLY = {403: {"description": "not an admin account (or disabled, or no CSRF token)"}}
NOT_FOUND = {404: {"description": "no such user (or token of that user)"}}
TAKEN = {409: {"description": "the user name is taken"}}
LAST_ADMIN = {409: {"description": "it would disable or demote the last enabled admin"}}
router = APIRouter(prefix="/users", tags=["users"], responses={**AUTH_ERRORS, **ADMIN_ONLY})


def account_error(exc: accounts.AccountError) -> Exception:
    """404 / 409, or a 422 shaped like every other (a weak password, a bad user name)."""
    if isinstance(exc, accounts.UnknownAccount):
        return HTTPException(status.HTTP_404_NOT_FOUND, str(exc))
    if isinstance(exc, accounts.AccountConflict):
        return HTTPException(status.HTTP_409_CONFLICT, str(exc))
    loc = ("body", exc.field) if exc.field else ("body",)
    return RequestValidationError([{"loc": loc, "msg": str(exc), "type": "value_error"}])


def _log(session, admin: StaffRecord, request: Request, user: StaffRecord, action: str) -> None:
    audit.record(session, admin, request, "account", resource_id=str(user.id), action=action)


@router.get("")
def list_users(admin: AdminDep, session: SessionDep) -> list[UserOut]:
    """Every staff account, oldest first, disabled ones included."""
    return [UserOut.model_validate(s) for s in accounts.all_staff(session)]


@router.post("", status_code=status.HTTP_201_CREATED, responses=TAKEN)
def create_user(
    body: UserIn, admin: AdminDep, session: SessionDep, settings: SettingsDep, request: Request
) -> UserOut:
    """A new account (the password is checked like `dermalens user add`'s)."""
    try:
        user = accounts.add_staff(
            session, body.username, body.role, body.password, auth.policy(settings)
        )
    except accounts.AccountError as exc:
        raise account_error(exc) from None
    _log(session, admin, request, user, "create")
    return UserOut.model_validate(user)


@router.get("/{user_id}", responses=NOT_FOUND)
def read_user(user: UserDep) -> UserOut:
    """One account."""
    return UserOut.model_validate(user)


@router.patch("/{user_id}", responses={**NOT_FOUND, **LAST_ADMIN})
def change_user(
    body: UserChange, user: UserDep, admin: AdminDep, session: SessionDep, request: Request
) -> UserOut:
    """Change the role, or disable (its sessions end, its tokens are refused) or enable (a
    lockout is lifted) the account; fields left out stay as they are."""
    done = []
    try:  # both changes are checked before anything is committed
        if body.role is not None:
            accounts.set_role(session, user.username, body.role, keep_an_admin=True)
            done.append("role")
        if body.disabled is not None:
            accounts.set_disabled(session, user.username, body.disabled, keep_an_admin=True)
            done.append("disable" if body.disabled else "enable")
    except accounts.AccountError as exc:
        session.rollback()
        raise account_error(exc) from None
    for action in done:
        _log(session, admin, request, user, action)
    return UserOut.model_validate(user)


@router.put("/{user_id}/password", responses=NOT_FOUND)
def set_password(
    body: PasswordIn,
    user: UserDep,
    admin: AdminDep,
    session: SessionDep,
    settings: SettingsDep,
    request: Request,
) -> UserOut:
    """A new password, like `dermalens user password`: checked like a first one; the
    account's sessions end and a lockout is lifted."""
    try:
        accounts.set_password(session, user.username, body.password, auth.policy(settings))
    except accounts.AccountError as exc:
        raise account_error(exc) from None
    _log(session, admin, request, user, "password")
    return UserOut.model_validate(user)


@router.get("/{user_id}/tokens", responses=NOT_FOUND)
def list_user_tokens(user: UserDep, session: SessionDep) -> list[TokenOut]:
    """The account's API tokens (never their secrets), revoked and expired ones included."""
    return [TokenOut.model_validate(t) for t in accounts.tokens_of(session, user)]


@router.delete(
    "/{user_id}/tokens/{token_id}", status_code=status.HTTP_204_NO_CONTENT, responses=NOT_FOUND
)
def revoke_user_token(
    token_id: RowId, user: UserDep, admin: AdminDep, session: SessionDep, request: Request
) -> Response:
    """Revoke one of the account's tokens; it stops working at once."""
    return revoke_or_404(session, user, admin, token_id, request)
