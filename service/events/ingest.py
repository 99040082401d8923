"""``POST /v1/events`` straight from ASGI, for the requests that need nothing else of Litestar.

Most requests a till sends are well-formed events with a valid key: for
those, Litestar's routing, dependency resolution, signature model and
response building cost a sixth of the server's CPU per event (1.45 against
1.21 ms, the bench's events driven through the ASGI app in one process),
and the body was decoded twice (leniently for the handler's signature, then
strictly). Here such a request is read, checked, authorised and recorded by
the same functions the controller uses, and answered with the same bytes.

The key is checked first, as the guard checks it before anything is read,
and a refused key is answered at once through the same exception handlers.
Anything the path does not take itself is handed to Litestar, with the body
read so far replayed: any path or method but exactly ``POST /v1/events``, a
request without a bearer key or a JSON content type, a body announced over
the limit; and, once the key has passed, a body that is too large, not JSON,
does not match the schema or breaks a rule between fields. Litestar answers
those as it always has; its guard takes the principal found here (in the
scope's state) instead of checking and counting the key twice. Errors after
the key check (429, 403, 409, 503, 500) go through the same exception
handlers as the controller's. ``tests/test_events_ingest.py`` posts the same
requests both ways.
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
        authorization, json_body, length = None, False, None
        for name, value in scope["headers"]:
            if name == b"authorization":
                if authorization is None:  # the first, whatever it says, as Litestar's headers give it
                    authorization = value.decode("latin-1")
            elif name == b"content-type":
                json_body = value.lower() in _JSON_TYPES
            elif name == b"content-length":
                length = value
        # What Litestar refuses before the key or the body is read, it refuses as before: no bearer key
        # (401), a body announced over the limit (413) or with a length that is no number (400).
        if authorization is None or authorization[:7].lower() != "bearer " or not json_body or not self._fits(length):
            await self.fallback(scope, receive, send)
            return
        scope["app"] = scope["litestar_app"] = self.app  # as Litestar's own entry point sets them
        state = scope.setdefault("state", {})
        scope["path_template"] = PATH  # the route, for the request's log line and metrics
        try:
            # The key first, as the guard checks it before the body is read: a refused request is
            # answered at once, without waiting for its body.
            state["principal"] = await authorize(self.app.state, authorization, EVENTS_WRITE)
        except Exception as exc:
            await self._answer_error(scope, receive, send, exc)
            return
        messages: list[ReceiveMessage] = []
        event = await self._read_event(receive, messages)
        if event is None:
            # Litestar says what is wrong with the body; its guard takes the principal found above
            # instead of checking (and counting) the key again.
            await self.fallback(scope, _replay(messages, receive), send)
            return
        try:
            registry = self.app.state.get("registry")
            if registry is None:
                raise ServiceUnavailableError("no rule set is loaded")
            result, is_new = await record_event_retrying(
                self.app.state.engine, registry.current, event, self.app.state.settings.app.retention_days
            )
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

    def _fits(self, length: bytes | None) -> bool:
        """Whether an announced ``Content-Length`` is a number within the limit (or absent)."""
        if length is None:
            return True
        try:
            announced = int(length)
        except ValueError:
            return False
        return self.max_body is None or announced <= self.max_body

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
        except Exception:  # not JSON, not UTF-8, not the schema, nested too deep: Litestar's to answer
            return None
        # JSON has no raw control characters in strings: a NUL can only come escaped.
        if b"\\u0000" in body and nul_errors(raw):
            return None
        return None if semantic_errors(event) else event

    async def _answer_error(self, scope: Scope, receive: Receive, send: Send, exc: Exception) -> None:
        handler = next(EXCEPTION_HANDLERS[c] for c in type(exc).__mro__ if c in EXCEPTION_HANDLERS)
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
