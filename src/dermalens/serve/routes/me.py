"""The signed-in account: who am I, and personal API tokens (each shown once)."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request, Response, status

from dermalens.serve import accounts, audit, auth
from dermalens.serve.account_schemas import StaffOut, TokenCreated, TokenIn, TokenOut
from dermalens.serve.clinic_deps import AUTH_ERRORS
from dermalens.serve.deps import RowId, SessionDep, SettingsDep, StaffDep
from dermalens.serve.i18n import _

router = APIRouter(prefix="/me", tags=["accounts"], responses=AUTH_ERRORS)


@router.get("")
def read_me(staff: StaffDep) -> StaffOut:
    """The account making the request."""
    return StaffOut.model_validate(staff)


@router.get("/tokens")
def list_tokens(staff: StaffDep, session: SessionDep) -> list[TokenOut]:
    """Your API tokens (never their secrets), revoked and expired ones included."""
    return [TokenOut.model_validate(t) for t in accounts.tokens_of(session, staff)]


@router.post("/tokens", status_code=status.HTTP_201_CREATED)
def create_token(
    body: TokenIn, staff: StaffDep, session: SessionDep, settings: SettingsDep, request: Request
) -> TokenCreated:
    """A new bearer token for scripts, valid for `days` (default DERMALENS_TOKEN_DAYS, at most
    DERMALENS_TOKEN_MAX_DAYS): `token` is shown in this answer only."""
    lifetime = auth.token_lifetime(settings, body.days)
    record, secret = accounts.new_token(session, staff, body.name, lifetime)
    audit.record(session, staff, request, "token", resource_id=str(record.id))
    return TokenCreated(**TokenOut.model_validate(record).model_dump(), token=secret)


@router.delete(
    "/tokens/{token_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={404: {"description": "not one of your tokens"}},
)
def revoke_token(
    token_id: RowId, staff: StaffDep, session: SessionDep, request: Request
) -> Response:
    """Revoke one of your tokens; it stops working at once."""
    return revoke_or_404(session, staff, staff, token_id, request)


def revoke_or_404(session, owner, actor, token_id: int, request: Request) -> Response:
    """Revoke `owner`'s token `token_id` (404 if it is not theirs), audited as `actor`'s act:
    the one path of DELETE /me/tokens/{id} and an admin's DELETE /users/{id}/tokens/{id}."""
    if accounts.revoke_token(session, owner, token_id) is None:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND, _("token %(id)s not found") % {"id": token_id}
        )
    audit.record(session, actor, request, "token", resource_id=str(token_id))
    return Response(status_code=status.HTTP_204_NO_CONTENT)
