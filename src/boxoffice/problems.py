"""The one place that turns every error into RFC 9457 problem+json, and documents it.

Domain refusals (`boxoffice.errors`) carry their own status and slug; database errors are
read by `boxoffice.db.classify`; FastAPI's validation and routing errors are reworded here.
"""

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import SkipJsonSchema
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import compile_path

from boxoffice.db import DATABASE_ERRORS, LOCK_NOT_AVAILABLE, Failure, classify, sqlstate
from boxoffice.errors import (
    BoxofficeError,
    IdempotentReplay,
    ServiceUnavailable,
    TooManyRequests,
)

logger = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"
# Validation errors listed in a 422; the rest are only counted.
REPORTED_VALIDATION_ERRORS = 5
TYPE_BASE = "https://boxoffice.dev/problems/"


class FieldError(BaseModel):
    """One reason a request was refused as invalid (from `invalid-request` problems)."""

    loc: list[str | int] = Field(description='Where: e.g. `["body", "quantity"]`.')
    msg: str
    type: str


def _extensions_without_defaults(schema: dict[str, Any]) -> None:
    """The extensions are absent when they do not apply, never null: document them so."""
    for member in schema.get("properties", {}).values():
        member.pop("default", None)


class Problem(BaseModel):
    """RFC 9457 problem details: the body of every error answer (`application/problem+json`).

    `type` is stable and names the kind of problem; the optional members are extensions that
    some types carry. Other extensions may be added later: clients should ignore unknown ones.
    """

    model_config = ConfigDict(
        extra="allow",
        json_schema_extra=_extensions_without_defaults,
    )

    type: str = Field(
        description=f"A stable URI, `{TYPE_BASE}<slug>`.",
        examples=[TYPE_BASE + "tickets-unavailable"],
    )
    title: str = Field(examples=["Tickets unavailable"])
    status: int = Field(ge=400, le=599, examples=[409])
    detail: str = Field(examples=["1 of the requested tickets are already held or sold"])
    errors: list[FieldError] | SkipJsonSchema[None] = Field(
        default=None,
        description="`invalid-request` from validation: what is wrong, where (the first "
        f"{REPORTED_VALIDATION_ERRORS}).",
    )
    errors_omitted: int | SkipJsonSchema[None] = Field(
        default=None, description="`invalid-request`: how many more errors `errors` leaves out."
    )
    ticket_ids: list[int] | SkipJsonSchema[None] = Field(
        default=None, description="`tickets-unavailable`, `unknown-tickets`: which tickets."
    )
    requested: int | SkipJsonSchema[None] = Field(
        default=None, description="`tickets-unavailable` for best available: how many asked."
    )
    free: int | SkipJsonSchema[None] = Field(
        default=None, description="`tickets-unavailable` for best available: how many were free."
    )
    expires_at: str | SkipJsonSchema[None] = Field(
        default=None, description="`reservation-expired`: when the hold ended."
    )
    reservation_status: str | SkipJsonSchema[None] = Field(
        default=None, description="`reservation-not-active`: the reservation's status."
    )
    booking_id: str | SkipJsonSchema[None] = Field(
        default=None, description="`reservation-not-active` when confirmed: its booking."
    )
    sales_start_at: str | SkipJsonSchema[None] = Field(
        default=None, description="`sales-closed`: when sales open (absent: since creation)."
    )
    sales_end_at: str | SkipJsonSchema[None] = Field(
        default=None, description="`sales-closed`: when sales end."
    )
    limit: int | SkipJsonSchema[None] = Field(
        default=None, description="`customer-limit-reached`: the event's cap per customer."
    )
    holding: int | SkipJsonSchema[None] = Field(
        default=None,
        description="`customer-limit-reached`: tickets this customer holds or bought already.",
    )
    checked_in_at: str | SkipJsonSchema[None] = Field(
        default=None, description="`already-checked-in`: when the ticket was admitted."
    )
    checked_in_by: str | SkipJsonSchema[None] = Field(
        default=None,
        description='`already-checked-in`: the scanner that admitted it (or "admin").',
    )
    event_name: str | SkipJsonSchema[None] = Field(
        default=None, description="`wrong-event`: the event the ticket is for."
    )


PROBLEM_SCHEMA_REF = "#/components/schemas/Problem"

_PROBLEM_DESCRIPTIONS = {
    400: "The request cannot be taken (`invalid-signature` for a payment notification).",
    401: "No credentials: send `Authorization: Bearer <token>` (`unauthorized`).",
    403: "The token is not the admin token (`forbidden`).",
    404: "Not found.",
    409: "Conflict.",
    429: "Too many requests from this client (`too-many-requests`); retry after "
    "`Retry-After` seconds.",
    413: "The request body is larger than MAX_BODY_BYTES (`payload-too-large`).",
    422: "The request is not valid: `invalid-request` (with `errors` when a field is wrong), "
    "or a more specific type.",
    503: "The database is busy or unreachable (`service-unavailable`); retry after "
    "`Retry-After` seconds.",
}

_PROBLEM_HEADERS: dict[int, dict[str, Any]] = {
    401: {"WWW-Authenticate": {"description": "`Bearer`", "schema": {"type": "string"}}},
    429: {"Retry-After": {"description": "Seconds to wait.", "schema": {"type": "string"}}},
    503: {"Retry-After": {"description": "Seconds to wait.", "schema": {"type": "string"}}},
}


def problem_responses(
    *statuses: int, descriptions: dict[int, str] | None = None
) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses=` for a route's error answers, all `application/problem+json` with
    the `Problem` schema (which `install_problem_schema` registers in the components)."""
    descriptions = descriptions or {}
    responses: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        response: dict[str, Any] = {
            "description": descriptions.get(status, _PROBLEM_DESCRIPTIONS[status]),
            "content": {PROBLEM_JSON: {"schema": {"$ref": PROBLEM_SCHEMA_REF}}},
        }
        if status in _PROBLEM_HEADERS:
            response["headers"] = _PROBLEM_HEADERS[status]
        responses[status] = response
    return responses


def install_problem_schema(app: FastAPI) -> None:
    """Add `Problem` (and what it refers to) to the OpenAPI components: the routes refer to it
    from their `application/problem+json` responses, which FastAPI's `model=` cannot express
    (it files a response model under the route's own media type, `application/json`)."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = generate()  # FastAPI keeps it as app.openapi_schema: completed in place
        definitions = Problem.model_json_schema(
            ref_template="#/components/schemas/{model}", mode="serialization"
        )
        schemas = schema.setdefault("components", {}).setdefault("schemas", {})
        schemas.update(definitions.pop("$defs", {}))
        schemas["Problem"] = definitions
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def problem(
    status: int,
    slug: str,
    title: str,
    detail: str,
    headers: dict[str, str] | None = None,
    **ext: Any,
) -> JSONResponse:
    body = {"type": TYPE_BASE + slug, "title": title, "status": status, "detail": detail, **ext}
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def _count_lock_timeout() -> None:
    # Imported here: `boxoffice serve` imports this module (for its own answers) before it
    # sets PROMETHEUS_MULTIPROC_DIR, and prometheus_client must not be imported before that.
    from boxoffice import metrics

    metrics.LOCK_TIMEOUTS.inc()


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(BoxofficeError)
    async def _domain(_: Request, exc: BoxofficeError) -> JSONResponse:
        # A service that turned a lock timeout into a 409 keeps the driver's error as context.
        if sqlstate(exc.__context__) == LOCK_NOT_AVAILABLE:
            _count_lock_timeout()
        headers = {"Retry-After": "1"} if exc.status == 503 else None
        if isinstance(exc, TooManyRequests):
            headers = {"Retry-After": str(exc.retry_after)}
        if exc.status == 401:
            headers = {"WWW-Authenticate": "Bearer"}
        return problem(exc.status, exc.slug, exc.title, exc.detail, headers, **exc.extensions)

    @app.exception_handler(IdempotentReplay)
    async def _replay(_: Request, exc: IdempotentReplay) -> JSONResponse:
        return JSONResponse(
            exc.body, status_code=exc.status_code, headers={"Idempotent-Replayed": "true"}
        )

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        found = exc.errors()
        # A body can be wrong in thousands of places (one per item or unknown key): the answer
        # names the first few and counts the rest, so it stays small whatever was sent.
        errors = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
            for e in found[:REPORTED_VALIDATION_ERRORS]
        ]
        omitted = len(found) - len(errors)
        extra: dict[str, Any] = {"errors_omitted": omitted} if omitted else {}
        return problem(
            422,
            "invalid-request",
            "The request is not valid",
            _summary(errors, len(found)),
            errors=errors,
            **extra,
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        unparsable = _unparsable_body(exc)
        if unparsable is not None:
            errors = [{"loc": ["body"], "msg": unparsable, "type": "json_invalid"}]
            return problem(
                422, "invalid-request", "The request is not valid", unparsable, errors=errors
            )
        slug = {404: "not-found", 405: "method-not-allowed"}.get(exc.status_code, "http-error")
        headers = dict(exc.headers) if exc.headers else None
        if exc.status_code == 405:
            headers = {**(headers or {}), "Allow": _allowed_methods(request, headers)}
        return problem(exc.status_code, slug, str(exc.detail), str(exc.detail), headers)

    async def _database(_: Request, exc: Exception) -> JSONResponse:
        return database_problem(exc, classify(exc) or Failure.UNEXPECTED)

    for kind in DATABASE_ERRORS:
        app.add_exception_handler(kind, _database)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error")
        return problem(500, "internal-error", "Internal error", "an unexpected error occurred")


def database_problem(error: BaseException, failure: Failure) -> JSONResponse:
    """The answer to a database error, by what `classify` says it means."""
    if failure is Failure.CONTENDED:
        if sqlstate(error) == LOCK_NOT_AVAILABLE:
            _count_lock_timeout()
        return problem(409, "conflict", "Conflict", "another request holds these rows; retry")
    if failure is Failure.BAD_VALUE:
        return problem(
            422,
            "invalid-request",
            "The request is not valid",
            "a value cannot be stored (e.g. a NUL character in text, or a date out of range)",
        )
    if failure is Failure.UNAVAILABLE:
        if isinstance(error, ServiceUnavailable):
            return unavailable(error.detail)
        logger.warning("database unavailable (%s)", sqlstate(error) or type(error).__name__)
        return unavailable("the database is unavailable; retry shortly")
    logger.error("unexpected database error %s", sqlstate(error), exc_info=error)
    return problem(500, "internal-error", "Internal error", "an unexpected error occurred")


def _unparsable_body(exc: StarletteHTTPException) -> str | None:
    """Why FastAPI could not read the JSON body, when that is what its 400 means.

    Malformed JSON is a 422 (FastAPI raises a validation error); a body that fails before the
    JSON parser even runs (not UTF-8) or inside it (nested past the recursion limit) becomes a
    bare 400 "There was an error parsing the body", raised from the original error. Both are
    the same client mistake as malformed JSON, so they get the same answer.
    """
    cause = exc.__cause__
    if exc.status_code != 400 or cause is None:
        return None
    if isinstance(cause, UnicodeDecodeError):
        return "the body is not JSON: it is not valid UTF-8"
    if isinstance(cause, RecursionError):
        return "the body is not acceptable JSON: it is nested too deeply"
    return "the body cannot be parsed as JSON"


_HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}


def _allowed_methods(request: Request, headers: dict[str, str] | None) -> str:
    """Every method the path supports, for a 405's `Allow` (RFC 9110).

    The router's 405 names only the methods of the first route whose path matched, but one
    path may have several routes (GET /events and POST /events): add every method the OpenAPI
    document lists for a path template that matches.
    """
    methods = {m.strip() for m in (headers or {}).get("Allow", "").split(",") if m.strip()}
    path = request.scope["path"]
    for template, operations in request.app.openapi().get("paths", {}).items():
        if compile_path(template)[0].match(path):
            methods |= {method.upper() for method in operations if method in _HTTP_METHODS}
    return ", ".join(sorted(methods))


def unavailable(detail: str) -> JSONResponse:
    """503 problem+json with Retry-After: the one answer for a busy or absent database."""
    error = ServiceUnavailable(detail)
    return problem(error.status, error.slug, error.title, detail, {"Retry-After": "1"})


def _summary(errors: list[dict[str, Any]], total: int) -> str:
    """The first error in words, and how many others there are (`total` counts them all)."""
    if not errors:
        return "invalid request"
    first = errors[0]
    where = ".".join(str(part) for part in first["loc"] if part != "body") or "body"
    more = f" (and {total - 1} more)" if total > 1 else ""
    return f"{where}: {first['msg']}{more}"
