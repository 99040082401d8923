"""HTTP plumbing: the request-id middleware with its canonical log line, and problem+json handlers."""

from __future__ import annotations

import re
import time
import uuid
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import msgspec
import structlog
from litestar import Request, Response
from litestar.enums import ScopeType
from litestar.exceptions import HTTPException, ValidationException
from litestar.status_codes import HTTP_413_REQUEST_ENTITY_TOO_LARGE
from litestar.types import ASGIApp, Empty, Message, Receive, Scope, Send
from litestar.utils.scope.state import ScopeState
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from service.lib import validation
from service.lib.db import translate_error
from service.lib.errors import (
    PROBLEM_MEDIA_TYPE,
    PROBLEM_TYPE_PREFIX,
    DelightError,
    FieldError,
    InternalError,
    MalformedRequestError,
    Problem,
    ServiceUnavailableError,
    ValidationError,
)
from service.lib.logging import get_logger
from service.lib.metrics import observe_request

log = get_logger("delight.http")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,100}$")
_SLUGS = {
    400: ("malformed-request", "Malformed request"),
    404: ("not-found", "Not found"),
    405: ("method-not-allowed", "Method not allowed"),
    406: ("not-acceptable", "Not acceptable"),
    413: ("payload-too-large", "Request body too large"),
    415: ("unsupported-media-type", "Unsupported media type"),
    429: ("rate-limited", "Too many requests"),
}


NUL_IN_URL = "the URL holds a NUL character (%00), which no id or parameter may contain"


def _holds_nul(scope: Scope) -> bool:
    """NUL in the path or the query: PostgreSQL cannot hold it in text, so no route can take it (refused before any,
    streaming ones included, starts)."""
    query = scope.get("query_string", b"")
    return "\x00" in scope.get("path", "") or b"%00" in query or b"\x00" in query


async def _send_problem(send: Send, scope: Scope, request_id: str, error: DelightError) -> None:
    instance = scope.get("path", "").replace("\x00", "%00")
    body = msgspec.json.encode(error.to_problem(instance=instance, request_id=request_id))
    headers = [(b"content-type", PROBLEM_MEDIA_TYPE.encode()), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


class RequestContextMiddleware:
    """Gives every request an id (kept from ``X-Request-ID`` when sane) and logs one line when it ends."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await self.app(scope, receive, send)
            return
        incoming = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        request_id = incoming if _REQUEST_ID.match(incoming) else uuid.uuid4().hex
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=request_id)
        status = 500
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            if _holds_nul(scope):
                await _send_problem(send_with_id, scope, request_id, MalformedRequestError(NUL_IN_URL))
            else:
                await self.app(scope, receive, send_with_id)
        finally:
            seconds = time.perf_counter() - started
            route = scope.get("path_template") or "unmatched"
            observe_request(scope.get("method", ""), route, status, seconds)
            log.info(
                "request",
                method=scope.get("method"),
                route=route,
                status=status,
                duration_ms=round(seconds * 1000, 2),
            )
            structlog.contextvars.clear_contextvars()


def _request_id() -> str | None:
    value = structlog.contextvars.get_contextvars().get("request_id")
    return value if isinstance(value, str) else None


def problem(request: Request[Any, Any, Any], error: DelightError) -> Response[bytes]:
    body = error.to_problem(instance=request.url.path, request_id=_request_id())
    return Response(
        content=msgspec.json.encode(body),
        status_code=error.status,
        media_type=PROBLEM_MEDIA_TYPE,
        headers=error.headers(),
    )


def handle_delight_error(request: Request[Any, Any, Any], exc: DelightError) -> Response[bytes]:
    return problem(request, exc)


def handle_validation_exception(request: Request[Any, Any, Any], exc: ValidationException) -> Response[bytes]:
    """Litestar's own validation: re-check a JSON body field by field so the 422 names every mistake."""
    extra = exc.extra if isinstance(exc.extra, list) else []
    from_body = any(isinstance(e, dict) and e.get("source") == "body" for e in extra)
    data_field = getattr(request.route_handler, "parsed_data_field", None)
    state = ScopeState.from_scope(request.scope)
    raw = state.json
    if data_field is not None and (state.body is Empty or not state.body.strip()):
        return problem(request, MalformedRequestError("the request body is empty; send a JSON document"))
    if from_body and data_field is not None and raw is not Empty:
        errors = validation.schema_errors(data_field.annotation, raw)
        if not errors:
            errors = [_field_error(e) for e in extra]
        return problem(request, ValidationError(f"{len(errors)} field(s) do not match the schema", errors=errors))
    return problem(request, refused_parameters(exc))


def refused_parameters(exc: ValidationException) -> MalformedRequestError:
    """What the service answers when Litestar refuses a query or path parameter: each one named, with why."""
    extra = exc.extra if isinstance(exc.extra, list) else []
    errors = [_field_error(e) for e in extra if isinstance(e, dict)]
    return MalformedRequestError(exc.detail or "the request is not valid", errors=errors)


def _field_error(item: Any) -> FieldError:
    if not isinstance(item, dict):
        return FieldError(field="(request)", message=str(item))
    message = str(item.get("message", ""))
    field, text = validation.split_msgspec_message(message)
    key = item.get("key")
    if field == "(body)" and key and key != "data":
        field = str(key)
    return FieldError(field=field, message=text)


CLIENT_CLOSED_REQUEST = 499  # nginx's status for a client that went away before the answer
_DISCONNECTED = "client disconnected prematurely"  # Litestar's detail when the body stream ends in a disconnect


def handle_http_exception(request: Request[Any, Any, Any], exc: HTTPException) -> Response[bytes]:
    status = exc.status_code
    if status == 500 and exc.detail == _DISCONNECTED:
        # Nobody is left to answer, and nothing was done: not a server error.
        log.info("client_disconnected")
        return Response(content=b"", status_code=CLIENT_CLOSED_REQUEST)
    if status >= 500:
        return handle_unexpected(request, exc)
    slug, title = _SLUGS.get(status, ("client-error", "Client error"))
    detail = exc.detail or title
    if status == HTTP_413_REQUEST_ENTITY_TOO_LARGE:
        detail = _too_large(request)
    body = Problem(
        type=PROBLEM_TYPE_PREFIX + slug,
        title=title,
        status=status,
        detail=detail,
        instance=request.url.path,
        request_id=_request_id(),
    )
    return Response(
        content=msgspec.json.encode(body), status_code=status, media_type=PROBLEM_MEDIA_TYPE, headers=exc.headers
    )


def _too_large(request: Request[Any, Any, Any]) -> str:
    """What a 413 says: the limit the body went over (Litestar's own detail names none)."""
    limit = request.route_handler.resolve_request_max_body_size()
    if not limit:
        return "the request body is too large"
    return f"the request body is over {limit:,} bytes, the most this server accepts (DELIGHT_MAX_BODY_BYTES)"


def handle_database_error(
    request: Request[Any, Any, Any], exc: DBAPIError | PoolTimeoutError | asyncpg.PostgresError
) -> Response[bytes]:
    error = translate_error(exc)
    if error is None:
        return handle_unexpected(request, exc)
    log.warning("database_error", error=type(exc).__name__, status=error.status)
    return problem(request, error)


def handle_connection_error(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    log.warning("backend_unreachable", error=type(exc).__name__)
    return problem(request, ServiceUnavailableError("a backing service is unreachable; retry shortly"))


def handle_recursion_error(request: Request[Any, Any, Any], exc: RecursionError) -> Response[bytes]:
    return problem(request, MalformedRequestError("the JSON document is nested too deeply"))


def handle_unicode_error(request: Request[Any, Any, Any], exc: UnicodeDecodeError) -> Response[bytes]:
    """Text that is not UTF-8: JSON decoders raise this of their own, not as a decoding error."""
    return problem(request, MalformedRequestError(f"the request is not valid UTF-8 ({exc.reason})"))


def handle_unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    log.error("unhandled_error", exc_info=exc)
    return problem(request, InternalError("an unexpected error occurred; it has been logged with this request id"))


EXCEPTION_HANDLERS: dict[type[Exception], Any] = {
    DelightError: handle_delight_error,
    ValidationException: handle_validation_exception,
    HTTPException: handle_http_exception,
    DBAPIError: handle_database_error,
    PoolTimeoutError: handle_database_error,
    asyncpg.PostgresError: handle_database_error,
    OSError: handle_connection_error,
    asyncpg.exceptions.OperatorInterventionError: handle_connection_error,
    asyncpg.exceptions.PostgresConnectionError: handle_connection_error,
    asyncpg.exceptions.InterfaceError: handle_connection_error,
    asyncpg.exceptions.InternalClientError: handle_connection_error,
    RecursionError: handle_recursion_error,
    UnicodeDecodeError: handle_unicode_error,
    Exception: handle_unexpected,
}
