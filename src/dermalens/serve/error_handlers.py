"""Every error is JSON with a `detail` sentence; an unexpected failure is logged and answered
500 without taking the server down."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

logger = logging.getLogger("dermalens.serve")

LOCATIONS = ("body", "query", "path", "header", "cookie")


def describe(errors: list[dict]) -> str:
    """'age: Input should be a valid number' for each error, the field named first."""
    parts = []
    for error in errors:
        field = ".".join(str(p) for p in error.get("loc", ()) if p not in LOCATIONS)
        parts.append(f"{field}: {error.get('msg', 'invalid')}" if field else error.get("msg"))
    return "; ".join(parts)


async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = [
        {"loc": list(e.get("loc", ())), "msg": e.get("msg"), "type": e.get("type")}
        for e in exc.errors()
    ]
    return JSONResponse(
        {"detail": describe(errors), "errors": errors},
        status_code=status.HTTP_422_UNPROCESSABLE_CONTENT,
    )


async def unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    logger.exception("unhandled error on %s %s", request.method, request.url.path)
    return JSONResponse(
        {"detail": "internal server error; the details are in the server log"},
        status_code=status.HTTP_500_INTERNAL_SERVER_ERROR,
    )


def install(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(Exception, unexpected_error)
