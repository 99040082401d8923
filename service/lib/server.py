"""uvicorn's HTTP protocol with the limits a public server needs against slow and greedy clients.

uvicorn bounds only the idle time between requests (keep-alive). A client
that connects and sends nothing, or drips a header a byte at a time, or a
body, holds its connection (and a file descriptor) for as long as it likes:
a thousand such clients used up a 1,024-descriptor limit, and readiness
failed. Here, per connection:

- the request line and headers must arrive within ``header_timeout`` of the
  connection opening or of the previous response (``408``, closed), and
  amount to at most ``MAX_HEADER_BYTES`` (``431``, closed);
- the body must arrive within ``body_timeout`` of the headers (``408`` when no
  response has started, closed either way);
- past ``max_connections`` open at once, a new connection is answered ``503``
  with ``Retry-After`` and closed at once, before it reads anything.

The answers are problem+json, like every other error of the API. The limits
come from ``DELIGHT_HEADER_TIMEOUT``, ``DELIGHT_BODY_TIMEOUT`` and
``DELIGHT_MAX_CONNECTIONS`` (``service.lib.settings``).
"""

from __future__ import annotations

import asyncio
import functools
import resource
from typing import Any

import msgspec
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from service.lib.logging import get_logger
from service.lib.settings import Settings

log = get_logger("delight.http")

MAX_HEADER_BYTES = 64 * 1024
"""The request line and headers together; browsers and tills send a few hundred bytes."""


def _problem(status: int, title: str, detail: str, *extra: bytes) -> bytes:
    body = msgspec.json.encode({"type": "about:blank", "title": title, "status": status, "detail": detail})
    head = [
        STATUS_LINE[status],
        b"content-type: application/problem+json\r\n",
        b"content-length: %d\r\n" % len(body),
        b"connection: close\r\n",
        *extra,
        b"\r\n",
    ]
    return b"".join(head) + body


@functools.cache
def _settings() -> Settings:
    return Settings.from_env()


class LimitedHttpProtocol(HttpToolsProtocol):
    """``HttpToolsProtocol`` with header and body deadlines, a header size cap and a connection cap."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        app = _settings().app
        self.header_timeout = app.header_timeout
        self.body_timeout = app.body_timeout
        self.max_connections = app.max_connections
        self.header_bytes = 0
        self.reading_headers = False
        self.deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.max_connections:
            log.warning("connection_refused", reason="too many connections", limit=self.max_connections)
            transport.write(
                _problem(
                    503,
                    "Too many connections",
                    f"the server holds at most {self.max_connections} connections at once; try again shortly",
                    b"retry-after: 1\r\n",
                )
            )
            transport.close()
            return
        self._expect_headers()

    def connection_lost(self, exc: Exception | None) -> None:
        self._clear()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.header_bytes = 0
        self.reading_headers = True
        if self.deadline is None:  # a request on a kept-alive connection: its headers are due from now
            self._expect_headers()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        # Counted whole, after the parser had it: a chunk that ends the headers may carry the body too.
        if self.reading_headers and not self.transport.is_closing():
            self.header_bytes += len(data)
            if self.header_bytes > MAX_HEADER_BYTES:
                self._refuse(
                    431, "Request headers too large", f"the request line and headers exceed {MAX_HEADER_BYTES} bytes"
                )

    def on_headers_complete(self) -> None:
        self._clear()
        self.reading_headers = False
        super().on_headers_complete()
        if not self.transport.is_closing():
            self.deadline = self.loop.call_later(self.body_timeout, self._body_too_slow)

    def on_message_complete(self) -> None:
        self._clear()
        super().on_message_complete()

    def _expect_headers(self) -> None:
        self._clear()
        self.deadline = self.loop.call_later(self.header_timeout, self._headers_too_slow)

    def _clear(self) -> None:
        if self.deadline is not None:
            self.deadline.cancel()
            self.deadline = None

    def _headers_too_slow(self) -> None:
        self.deadline = None
        if not self.transport.is_closing():
            self._refuse(
                408, "Request timeout", f"the request line and headers did not arrive within {self.header_timeout:g} s"
            )

    def _body_too_slow(self) -> None:
        self.deadline = None
        if self.transport.is_closing():
            return
        log.warning("request_timeout", part="body", limit_s=self.body_timeout)
        if self.cycle is not None:
            if not self.cycle.response_started:
                self.transport.write(
                    _problem(408, "Request timeout", f"the request body did not arrive within {self.body_timeout:g} s")
                )
            self.cycle.disconnected = True  # the application reads the end of the request, and its answer goes nowhere
            self.cycle.message_event.set()
        self.transport.close()

    def _refuse(self, status: int, title: str, detail: str) -> None:
        log.warning("request_refused", status=status, reason=detail)
        self.transport.write(_problem(status, title, detail))
        self.transport.close()


def raise_open_files_limit(wanted: int) -> int:
    """Lift this process's soft limit on open files towards ``wanted`` (never past the hard limit); the limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        return target
    return soft
