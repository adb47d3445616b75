"""Every error is JSON with a `detail` sentence; an unexpected failure is logged and answered
500 without taking the server down. The OpenAPI document says so for every error response."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

logger = logging.getLogger("dermalens.serve")

LOCATIONS = ("body", "query", "path", "header", "cookie")
REF = "#/components/schemas/{model}"


class ErrorOut(BaseModel):
    """The body of every 4xx / 5xx answer."""

    detail: str = Field(description="what went wrong, in one sentence naming the field")


class FieldError(BaseModel):
    loc: list[str | int] = Field(description="where: body, query, path ... then the field")
    msg: str
    type: str


class ValidationErrorOut(ErrorOut):
    """422 from request validation: the sentence, then each error on its own."""

    errors: list[FieldError]


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
    app.openapi = lambda: document_errors(FastAPI.openapi(app))


def document_errors(schema: dict[str, Any]) -> dict[str, Any]:
    """Describe the error bodies as they are sent: FastAPI's generated document says a 422's
    `detail` is a list (ours is a sentence, the list is `errors`) and gives the other errors
    no body at all; a request body that cannot be parsed (bad UTF-8 in JSON, broken multipart)
    is FastAPI's 400, so each operation with a body documents one. Idempotent: FastAPI keeps
    the document and hands it back on every call."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for model, name in ((ErrorOut, "Error"), (ValidationErrorOut, "HTTPValidationError")):
        body = model.model_json_schema(ref_template=REF)
        components.update(body.pop("$defs", {}))
        components[name] = body
    error = {"application/json": {"schema": {"$ref": REF.format(model="Error")}}}
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            if "requestBody" in operation:
                responses.setdefault("400", {"description": "the body could not be parsed"})
            for code, response in responses.items():
                if code[:1] in ("4", "5") and "content" not in response:
                    response["content"] = error
    return schema
