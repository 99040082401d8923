"""``POST /v1/events`` straight from ASGI, for the requests that need nothing else of Litestar.

Most requests a till sends are well-formed events with a valid key: for
those, Litestar's routing, dependency resolution, signature model and
response building cost a sixth of the server's CPU per event (1.45 against
1.21 ms, the bench's events driven through the ASGI app in one process),
and the body was decoded twice (leniently for the handler's signature, then
strictly). Here such a request is read, checked, authorised and recorded by
the same functions the controller uses, and answered with the same bytes.

Anything else is handed to Litestar untouched, with the body read so far
replayed: a body that is not JSON, does not match the schema, breaks a rule
between fields or is too large, and any path or method but exactly
``POST /v1/events``. Those are answered by the controller, its guard and
the exception handlers, as before, and nothing has been counted or written
by then. Errors after the key is checked (401, 403, 429, 409, 503, 500) go
through the same exception handlers as the controller's.
``tests/test_events_ingest.py`` posts the same requests both ways.
"""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Litestar, Request
from litestar.enums import ScopeType
from litestar.serialization import encode_json
from litestar.types import ASGIApp, HTTPResponseStartEvent, Receive, ReceiveMessage, Scope, Send

from service.events.schemas import EventIn, semantic_errors
from service.events.service import record_event_retrying
from service.keys.guards import authorize
from service.keys.scopes import EVENTS_WRITE
from service.lib.errors import ServiceUnavailableError
from service.lib.http import EXCEPTION_HANDLERS
from service.lib.validation import nul_errors

PATH = "/v1/events"
_JSON_TYPES = (b"application/json", b"application/json; charset=utf-8")
_HEADERS: list[tuple[bytes, bytes]] = [(b"content-type", b"application/json")]


class EventIngest:
    """Serves ``POST /v1/events`` for well-formed events; everything else goes on to ``app``."""

    def __init__(self, app: Litestar, fallback: ASGIApp) -> None:
        self.app = app
        self.fallback = fallback
        limit = app.request_max_body_size
        self.max_body = limit if isinstance(limit, int) else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP or scope["path"] != PATH or scope.get("method") != "POST":
            await self.fallback(scope, receive, send)
            return
        authorization, json_body = "", False
        for name, value in scope["headers"]:
            if name == b"authorization" and not authorization:
                authorization = value.decode("latin-1")
            elif name == b"content-type":
                json_body = value.lower() in _JSON_TYPES
        messages: list[ReceiveMessage] = []
        # Without a bearer key Litestar answers 401 before it reads the body; so it does here.
        bearer = authorization[:7].lower() == "bearer "
        event = await self._read_event(receive, messages) if json_body and bearer else None
        if event is None:
            await self.fallback(scope, _replay(messages, receive), send)
            return
        scope["path_template"] = PATH  # the route, for the request's log line and metrics
        try:
            await authorize(self.app.state, authorization, EVENTS_WRITE)
            registry = self.app.state.get("registry")
            if registry is None:
                raise ServiceUnavailableError("no rule set is loaded")
            result, is_new = await record_event_retrying(self.app.state.engine, registry.current, event)
        except Exception as exc:
            await self._answer_error(scope, receive, send, exc)
            return
        body = encode_json(result)
        start: HTTPResponseStartEvent = {
            "type": "http.response.start",
            "status": 201 if is_new else 200,
            "headers": [*_HEADERS, (b"content-length", str(len(body)).encode())],
        }
        await send(start)
        await send({"type": "http.response.body", "body": body, "more_body": False})

    async def _read_event(self, receive: Receive, messages: list[ReceiveMessage]) -> EventIn | None:
        """The body as an event, when it is one the controller would accept; ``None`` otherwise.

        ``messages`` keeps what was received, for Litestar to read again.
        """
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                return None
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if self.max_body is not None and size > self.max_body:
                return None
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        try:  # as the controller reads it (``validation.convert``): decoded, then held strictly to the schema
            raw = msgspec.json.decode(body)
            event = msgspec.convert(raw, EventIn, strict=True)
        except (msgspec.MsgspecError, RecursionError):
            return None
        # JSON has no raw control characters in strings: a NUL can only come escaped.
        if b"\\u0000" in body and nul_errors(raw):
            return None
        return None if semantic_errors(event) else event

    async def _answer_error(self, scope: Scope, receive: Receive, send: Send, exc: Exception) -> None:
        handler = next(EXCEPTION_HANDLERS[c] for c in type(exc).__mro__ if c in EXCEPTION_HANDLERS)
        scope["app"] = scope["litestar_app"] = self.app  # as Litestar's own entry point sets them
        scope.setdefault("state", {})
        request: Request[Any, Any, Any] = Request(scope, receive)
        response = handler(request, exc)
        await response.to_asgi_response(None, request)(scope, receive, send)


def _replay(messages: list[ReceiveMessage], receive: Receive) -> Receive:
    """``receive`` as it was before ``messages`` were taken from it."""
    pending = list(messages)

    async def replayed() -> ReceiveMessage:
        if pending:
            return pending.pop(0)
        return await receive()

    return replayed
