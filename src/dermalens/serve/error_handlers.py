"""Every error is JSON with a `detail` sentence in the request's language; an unexpected
failure is logged and answered 500 without taking the server down. The OpenAPI document says
so for every error response.

Validation errors keep pydantic's English message in English; for another language the
common error types have their own sentence (`VALIDATION`), and the rest stay English.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request, status
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException

from dermalens.serve import i18n
from dermalens.serve.i18n import N_, _

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


# pydantic's messages by error type, placeholders from the error's `ctx`
VALIDATION = {
    "missing": N_("Field required"),
    "extra_forbidden": N_("Extra inputs are not permitted"),
    "greater_than": N_("Input should be greater than %(gt)s"),
    "greater_than_equal": N_("Input should be greater than or equal to %(ge)s"),
    "less_than": N_("Input should be less than %(lt)s"),
    "less_than_equal": N_("Input should be less than or equal to %(le)s"),
    "string_type": N_("Input should be a valid string"),
    "string_too_short": N_("String should have at least %(min_length)s characters"),
    "string_too_long": N_("String should have at most %(max_length)s characters"),
    "bool_type": N_("Input should be a valid boolean"),
    "bool_parsing": N_("Input should be a valid boolean, unable to interpret input"),
    "int_type": N_("Input should be a valid integer"),
    "int_parsing": N_("Input should be a valid integer, unable to parse string as an integer"),
    "int_from_float": N_("Input should be a valid integer, got a number with a fractional part"),
    "float_type": N_("Input should be a valid number"),
    "float_parsing": N_("Input should be a valid number, unable to parse string as a number"),
    "finite_number": N_("Input should be a finite number"),
    "literal_error": N_("Input should be %(expected)s"),
    "enum": N_("Input should be %(expected)s"),
    "dict_type": N_("Input should be a valid dictionary"),
    "model_attributes_type": N_(
        "Input should be a valid dictionary or object to extract fields from"
    ),
    "list_type": N_("Input should be a valid list"),
    "json_invalid": N_("Invalid JSON: %(error)s"),
    "nul_character": N_("must not contain the NUL character (U+0000)"),  # schemas.storable
}

# Starlette's own details (unknown path, wrong method), for the catalogues
STARLETTE = [N_("Not Found"), N_("Method Not Allowed")]


def message(error: dict) -> str:
    """The error's sentence in the current language."""
    template = VALIDATION.get(str(error.get("type")))
    context = dict(error.get("ctx") or {})
    if error.get("type") == "value_error" and i18n.current() != i18n.DEFAULT and context:
        return str(context.get("error", error.get("msg")))  # our validator's own words
    if i18n.current() == i18n.DEFAULT or template is None:
        return str(error.get("msg", "invalid"))
    try:
        return _(template) % context
    except (KeyError, TypeError, ValueError):  # a context without the expected values
        return str(error.get("msg", "invalid"))


def describe(errors: list[dict]) -> str:
    """'age: Input should be a valid number' for each error, the field named first."""
    parts = []
    for error in errors:
        field = ".".join(str(p) for p in error.get("loc", ()) if p not in LOCATIONS)
        parts.append(f"{field}: {message(error)}" if field else message(error))
    return "; ".join(parts)


async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = [
        {"loc": list(e.get("loc", ())), "msg": e.get("msg"), "type": e.get("type")}
        for e in exc.errors()
    ]
    return JSONResponse(
        {"detail": describe(list(exc.errors())), "errors": errors},
        status_code=status.HTTP_422_UNPROCESSABLE_CONTENT,
    )


async def http_error(request: Request, exc: HTTPException) -> Response:
    """FastAPI's own handler, after translating a detail that is a catalogue msgid
    (Starlette's "Not Found"); one already translated where it was raised passes unchanged."""
    if isinstance(exc.detail, str):
        exc.detail = _(exc.detail)
    return await http_exception_handler(request, exc)


async def unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    logger.exception("unhandled error on %s %s", request.method, request.url.path)
    return JSONResponse(
        {"detail": _("internal server error; the details are in the server log")},
        status_code=status.HTTP_500_INTERNAL_SERVER_ERROR,
    )


def install(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(HTTPException, http_error)
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
