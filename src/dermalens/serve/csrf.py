"""CSRF protection: the signed double-submit pattern with itsdangerous.

A random value lives in an HttpOnly cookie; forms carry it signed with the server's secret
(`csrf_token` field), scripts send the same signed value in the X-CSRF-Token header. A
cross-site page can make the browser send the cookie but can neither read it nor sign it.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from fastapi import Request, Response
from itsdangerous import BadData, URLSafeTimedSerializer

FIELD = "csrf_token"
HEADER = "X-CSRF-Token"
MAX_AGE_S = 24 * 3600  # a form left open longer than this must be reloaded


def cookie_name(base: str, secure: bool) -> str:
    # __Host- cookies must be Secure, host-only and path=/: browsers refuse them otherwise.
    return f"__Host-{base}" if secure else base


def load_secret(configured: str | None, data_dir: Path) -> str:
    """DERMALENS_SECRET_KEY, else a random key kept in data_dir/secret_key (mode 0600)."""
    if configured:
        return configured
    path = data_dir / "secret_key"
    if not path.is_file():
        data_dir.mkdir(parents=True, exist_ok=True)
        # Written whole to a private file, then linked into place: a worker process starting
        # beside this one sees either no key or the complete key, never a half-written one,
        # and every worker signs with the same key (a token one issued, another accepts).
        draft = data_dir / f".secret_key.{os.getpid()}.{secrets.token_hex(4)}"
        fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_urlsafe(48))
        try:
            os.link(draft, path)
        except FileExistsError:  # another worker's key came first: use that one
            pass
        finally:
            draft.unlink()
    return path.read_text().strip()


class Csrf:
    """Issues and checks CSRF tokens bound to the browser's CSRF cookie."""

    def __init__(self, secret: str, secure: bool):
        self.serializer = URLSafeTimedSerializer(secret, salt="dermalens-csrf")
        self.secure = secure
        self.cookie = cookie_name("dermalens_csrf", secure)

    def token(self, request: Request) -> tuple[str, str | None]:
        """The signed token for this browser, and a new cookie value to set (None: keep)."""
        value = request.cookies.get(self.cookie)
        new = None if value else secrets.token_urlsafe(32)
        return self.serializer.dumps(value or new), new

    def set_cookie(self, response: Response, value: str | None) -> None:
        if value:
            response.set_cookie(
                self.cookie, value, httponly=True, samesite="strict", secure=self.secure
            )

    def valid(self, request: Request, token: str | None) -> bool:
        value = request.cookies.get(self.cookie)
        if not value or not token:
            return False
        try:
            signed = self.serializer.loads(token, max_age=MAX_AGE_S)
        except BadData:
            return False
        return isinstance(signed, str) and secrets.compare_digest(signed, value)
