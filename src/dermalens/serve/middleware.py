"""ASGI middleware: refuse oversized bodies before they are read, add security headers."""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Receive, Scope, Send

from dermalens.serve import i18n
from dermalens.serve.i18n import _, number

# Room for the multipart envelope and the form fields around the file itself.
ENVELOPE_BYTES = 64 * 1024

HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
]


class BodyLimit:
    """413 as soon as Content-Length says the body exceeds the limit, before reading it."""

    def __init__(self, app: ASGIApp, max_upload_bytes: int):
        self.app = app
        self.limit = max_upload_bytes + ENVELOPE_BYTES
        self.max_upload_bytes = max_upload_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            length = dict(scope["headers"]).get(b"content-length", b"0")
            if length.isdigit() and int(length) > self.limit:
                detail = _(
                    "request body is %(size)s bytes, over the upload limit of "
                    "%(limit)s bytes (MAX_UPLOAD_BYTES)"
                ) % {"size": number(int(length)), "limit": number(self.max_upload_bytes)}
                body = json.dumps({"detail": detail}).encode()
                await send(
                    {
                        "type": "http.response.start",
                        "status": 413,
                        "headers": [
                            (b"content-type", b"application/json"),
                            (b"content-language", i18n.current().encode()),
                            (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close"),
                        ],
                    }
                )
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


class SecurityHeaders:
    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_headers(message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *HEADERS]
            await send(message)

        await self.app(scope, receive, send_with_headers if scope["type"] == "http" else send)
