"""One canonical log line per request, and no personal data in any log entry."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import structlog
from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.console import sessions as console_sessions
from service.keys import scopes
from service.lib.db import transaction
from tests.conftest import asgi_scope, csrf_of, new_key, purchase, sign_in

Client = AsyncTestClient[Litestar]

TEST_CLIENT_LOGGERS = ("httpx", "httpcore")  # the test's own HTTP client, not the service
PROJECTOR_EVENTS = ("projector_", "projection_")
FIRST_NAME = "Zebulonia"
LAST_NAME = "Quillfeather"
EMAIL = "zebulonia.quillfeather@example.org"


@contextmanager
def capture() -> Iterator[list[dict[str, Any]]]:
    """Every log entry written while active, as the service writes it: request context merged, tracebacks as text.

    ``structlog.testing.capture_logs`` sees the loggers that use the current structlog configuration. A logger
    first used before another ``create_app`` reconfigured logging (the suite builds a second app in
    test_health.py) keeps the processor list it was cached with and still ends in the standard library's
    logging, so a handler on the root logger collects those, along with any third-party library's lines.
    """
    order = itertools.count()
    stamped: list[tuple[int, dict[str, Any]]] = []

    def stamp(_: Any, __: str, event_dict: dict[str, Any]) -> dict[str, Any]:
        event_dict["_seq"] = next(order)
        return event_dict

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.name.startswith(TEST_CLIENT_LOGGERS):
                return
            if isinstance(record.msg, dict):  # a structlog entry on its way to the formatter
                entry = structlog.processors.format_exc_info(None, "", dict(record.msg))
            else:
                entry = {"event": record.getMessage(), "logger": record.name}
                if record.exc_info:
                    entry["exception"] = logging.Formatter().formatException(record.exc_info)
            entry.setdefault("log_level", record.levelname.lower())
            stamped.append((next(order), entry))

    root = logging.getLogger()
    handler, level = Keep(), root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)  # the service's default level
    entries: list[dict[str, Any]] = []
    try:
        with structlog.testing.capture_logs(
            processors=[structlog.contextvars.merge_contextvars, structlog.processors.format_exc_info, stamp]
        ) as direct:
            yield entries
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
    stamped.extend((e.pop("_seq"), e) for e in direct)
    entries.extend(e for _, e in sorted(stamped, key=lambda pair: pair[0]))


def request_lines(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in entries if e.get("event") == "request"]


def assert_no_personal_data(entries: list[dict[str, Any]]) -> None:
    assert entries, "nothing was logged at all; the test would prove nothing"
    for entry in entries:
        rendered = repr(entry)
        for secret in (FIRST_NAME, LAST_NAME, EMAIL):
            assert secret not in rendered, f"{secret!r} leaked into the log entry {entry.get('event')!r}"


async def test_each_request_logs_one_canonical_line_with_method_path_status_duration_and_request_id(
    client: Client, keys: dict[str, Any]
) -> None:
    with capture() as entries:
        response = await client.post(
            "/v1/events",
            json=purchase("e-log-1", "c-log", 10.0),
            headers={**keys[scopes.EVENTS_WRITE], "X-Request-ID": "log-req-1"},
        )
    assert response.status_code == 201
    [line] = request_lines(entries)
    assert line["method"] == "POST"
    assert line["route"] == "/v1/events"
    assert line["status"] == 201
    assert isinstance(line["duration_ms"], float | int)
    assert line["duration_ms"] >= 0
    assert line["request_id"] == "log-req-1"
    assert line["log_level"] == "info"
    # what the event came to, on the same line
    assert line["event_id"] == "e-log-1"
    assert line["event_type"] == "purchase"
    assert line["awards"] == len(response.json()["awards"])
    assert line["held_out"] == 0


async def test_request_line_carries_the_generated_request_id_the_client_was_given(client: Client) -> None:
    with capture() as entries:
        response = await client.get("/health/live")
    [line] = request_lines(entries)
    assert line["request_id"] == response.headers["x-request-id"]
    assert line["status"] == 200
    assert line["method"] == "GET"
    assert line["route"] == "/health/live"


async def test_failed_requests_are_logged_with_their_error_status(client: Client, keys: dict[str, Any]) -> None:
    with capture() as entries:
        unauthorized = await client.get("/v1/rules")
        not_found = await client.get("/v1/customers/c-nobody", headers=keys[scopes.CUSTOMERS_READ])
        no_route = await client.get("/v1/no-such-route")
    lines = request_lines(entries)
    # the route template, never the path: customer ids and award codes stay out of the logs
    assert [(line["route"], line["status"]) for line in lines] == [
        ("/v1/rules", 401),
        ("/v1/customers/{customer_id}", 404),
        ("unmatched", 404),
    ]
    assert not any("c-nobody" in str(line) for line in lines)
    assert [line["request_id"] for line in lines] == [
        r.headers["x-request-id"] for r in (unauthorized, not_found, no_route)
    ]


async def test_every_entry_logged_during_a_request_carries_its_request_id(client: Client, keys: dict[str, Any]) -> None:
    with capture() as entries:
        response = await client.post(
            "/v1/events/batch",
            json={"events": [purchase("e-log-2", "c-log", 150.0), purchase("e-log-3", "c-log", 5.0)]},
            headers={**keys[scopes.EVENTS_WRITE], "X-Request-ID": "log-req-2"},
        )
    assert response.status_code == 200
    # the service's projector works beside the requests, in no request's context, and may log meanwhile
    entries = [e for e in entries if not str(e.get("event")).startswith(PROJECTOR_EVENTS)]
    assert len(entries) >= 3  # a line per event and the request line
    assert {e.get("request_id") for e in entries} == {"log-req-2"}, [e for e in entries if "request_id" not in e]
    # each event's line says what that event came to; the request line speaks for the batch, not its last event
    recorded = [e for e in entries if e.get("event") == "event_recorded"]
    assert [(e["event_id"], e["awards"]) for e in recorded] == [
        (r["event_id"], len(r.get("awards", []))) for r in response.json()["results"]
    ]
    [line] = request_lines(entries)
    assert "event_id" not in line


async def test_each_event_of_a_batch_is_logged_with_its_own_outcome_and_nothing_of_another(
    client: Client, keys: dict[str, Any]
) -> None:
    first = purchase("e-log-b1", "c-log-b", 150.0)
    with capture() as entries:
        response = await client.post(
            "/v1/events/batch",
            json={"events": [first, {**first, "store_id": "elsewhere"}, first]},
            headers=keys[scopes.EVENTS_WRITE],
        )
    results = response.json()["results"]
    assert [r["status"] for r in results] == [201, 409, 200]
    recorded = [e for e in entries if e.get("event") == "event_recorded"]
    assert [e["event_id"] for e in recorded] == ["e-log-b1", "e-log-b1"]  # the conflict stored nothing
    stored, replay = recorded
    assert stored["awards"] == len(results[0]["awards"])
    assert "replay" not in stored
    assert replay["replay"] is True
    assert "awards" not in replay  # not carried over from the event before it
    [line] = request_lines(entries)
    assert "event_id" not in line
    assert "awards" not in line


async def test_the_customers_name_and_email_never_appear_in_the_logs(client: Client, keys: dict[str, Any]) -> None:
    customer = {"first_name": FIRST_NAME, "last_name": LAST_NAME, "email": EMAIL}
    with capture() as entries:
        # a purchase that wins (its message names the customer), a replay, a conflict and a profile read
        event = purchase("e-pii", "c-pii", 150.0, customer=customer)
        first = await client.post("/v1/events", json=event, headers=keys[scopes.EVENTS_WRITE])
        replay = await client.post("/v1/events", json=event, headers=keys[scopes.EVENTS_WRITE])
        conflict = await client.post(
            "/v1/events", json={**event, "store_id": "other"}, headers=keys[scopes.EVENTS_WRITE]
        )
        profile = await client.get("/v1/customers/c-pii", headers=keys[scopes.CUSTOMERS_READ])
        batch = await client.post(
            "/v1/events/batch",
            json={"events": [purchase("e-pii-2", "c-pii", 150.0, customer=customer)]},
            headers=keys[scopes.EVENTS_WRITE],
        )
    assert [first.status_code, replay.status_code, conflict.status_code, profile.status_code] == [201, 200, 409, 200]
    assert batch.status_code == 200
    # the name did reach the service: it is in the award message and the profile
    assert FIRST_NAME in first.json()["awards"][0]["message"]
    assert profile.json()["attributes"]["first_name"] == FIRST_NAME
    assert len(request_lines(entries)) == 5
    assert_no_personal_data(entries)


async def test_invalid_input_with_personal_data_does_not_log_it(client: Client, keys: dict[str, Any]) -> None:
    event = purchase("e-pii-bad", "c-pii", -1.0, customer={"first_name": FIRST_NAME, "email": EMAIL})
    event["unexpected"] = LAST_NAME
    with capture() as entries:
        response = await client.post("/v1/events", json=event, headers=keys[scopes.EVENTS_WRITE])
    assert response.status_code == 422
    assert_no_personal_data(entries)


async def test_an_event_that_fails_inside_the_database_does_not_log_the_customers_name(
    client: Client, keys: dict[str, Any]
) -> None:
    # A NUL character cannot be stored by PostgreSQL; whatever the service answers, its logs must not carry
    # the payload (and with it the customer's name and e-mail).
    event = purchase("e-pii-nul", "c-pii", 150.0, customer={"first_name": FIRST_NAME, "email": EMAIL})
    event["store_id"] = "madrid\u00001"
    with capture() as entries:
        response = await client.post("/v1/events", json=event, headers=keys[scopes.EVENTS_WRITE])
    assert response.status_code != 201
    assert_no_personal_data(entries)


async def test_a_client_that_goes_away_mid_body_is_logged_as_gone_not_as_a_server_error(
    client: Client, keys: dict[str, Any]
) -> None:
    """A till that drops its connection while sending is not a 500 at 3 a.m.: no error line, status 499."""
    [(name, value)] = keys[scopes.EVENTS_WRITE].items()
    headers = [(name.lower().encode(), value.encode()), (b"content-type", b"application/json")]
    scope = asgi_scope("POST", "/v1/events", [*headers, (b"content-length", b"400")])
    incoming = [
        {"type": "http.request", "body": b'{"event_id": "e-gone", "type": "purch', "more_body": True},
        {"type": "http.disconnect"},
    ]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return incoming.pop(0) if incoming else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    with capture() as entries:
        await client.app(scope, receive, send)  # type: ignore[attr-defined]
    assert [m["status"] for m in sent if m["type"] == "http.response.start"] == [499]
    assert not [e for e in entries if e.get("event") == "unhandled_error"]
    assert [e["status"] for e in request_lines(entries)] == [499]
    assert [e for e in entries if e.get("event") == "client_disconnected"]
    # Nothing was recorded: the same id, sent whole, is a new event.
    again = await client.post("/v1/events", json=purchase("e-gone", "c-gone", 10.0), headers=keys[scopes.EVENTS_WRITE])
    assert again.status_code == 201
    assert again.json()["duplicate"] is False


async def test_signing_in_to_the_console_logs_no_key_session_or_link_token(
    browser: httpx.AsyncClient, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    key = await new_key(sessionmaker, scopes.RULES_ADMIN)
    async with transaction(sessionmaker) as db:
        link = await console_sessions.new_link(db, key.split("_")[1])
    with capture() as entries:
        await browser.post("/console/login", data={"csrf": "forged", "key": key})  # refused: the token is wrong
        csrf = await sign_in(browser, key)
        session = browser.cookies.get("delight_session", path="/console")
        opened = await browser.get(f"/console/link/{link}")
        await browser.post(f"/console/link/{link}", data={"csrf": csrf_of(opened.text)})
        await browser.post("/console/logout", data={"csrf": csrf})
    assert request_lines(entries), "nothing was logged at all; the test would prove nothing"
    for entry in entries:
        rendered = repr(entry)
        for secret in (key.split("_", 2)[2], link, session):
            assert secret not in rendered, f"a secret leaked into the log entry {entry.get('event')!r}"
