"""``POST /v1/events`` taken straight from ASGI answers exactly as the controller does.

``/v1/events/`` (trailing slash) reaches the same controller through
Litestar's router, so every request here is sent both ways and the answers
compared: status, headers and body, less what must differ (the request id
and the path quoted back). The first test shows the two ways really are
different code.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from httpx import Response
from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from service.app import create_app
from service.events import controller
from service.keys import scopes
from tests.conftest import asgi_scope, new_key, purchase, serving
from tests.test_security import settings_with

Client = AsyncTestClient[Litestar]
DIRECT, ROUTED = "/v1/events", "/v1/events/"


def comparable(response: Response) -> tuple[int, dict[str, str], Any]:
    headers = {k: v for k, v in response.headers.items() if k not in ("x-request-id", "content-length")}
    body = response.json() if response.content else None
    if isinstance(body, dict):
        body.pop("request_id", None)
        if body.get("instance") in (DIRECT, ROUTED):
            body["instance"] = "(path)"
    return response.status_code, headers, body


async def both(client: Client, headers: dict[str, str], **request: Any) -> tuple[Response, Response]:
    direct = await client.post(DIRECT, headers=headers, **request)
    routed = await client.post(ROUTED, headers=headers, **request)
    assert comparable(direct) == comparable(routed)
    return direct, routed


async def test_the_direct_way_does_not_go_through_the_controller(
    client: Client, keys: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    async def not_here(*_: Any) -> Any:
        raise AssertionError("the controller recorded this event")

    monkeypatch.setattr(controller, "record_event_retrying", not_here)
    direct = await client.post(DIRECT, json=purchase("ingest-way-1", "c-ingest", 10.0), headers=keys["events:write"])
    assert direct.status_code == 201, direct.text
    routed = await client.post(ROUTED, json=purchase("ingest-way-2", "c-ingest", 10.0), headers=keys["events:write"])
    assert routed.status_code == 500, routed.text


async def test_a_new_event_and_its_replay_answer_alike_both_ways(
    client: Client, keys: dict[str, Any], engine: AsyncEngine
) -> None:
    headers = keys["events:write"]
    for way, path in (("direct", DIRECT), ("routed", ROUTED)):
        first = await client.post(path, json=purchase(f"ingest-new-{way}", "c-ingest", 42.0), headers=headers)
        assert first.status_code == 201, first.text
        assert first.headers["content-type"] == "application/json"
        assert int(first.headers["content-length"]) == len(first.content)
        assert set(first.json()) == {"event_id", "duplicate", "awards"}
    # the replay of an event is the same answer whichever way the event and its replay came
    for way in ("direct", "routed"):
        replay, _ = await both(client, headers, json=purchase(f"ingest-new-{way}", "c-ingest", 42.0))
        assert replay.status_code == 200
        assert replay.json()["duplicate"] is True
    async with engine.connect() as connection:
        stored = await connection.scalar(text("SELECT count(*) FROM events WHERE event_id LIKE 'ingest-new-%'"))
    assert stored == 2


async def test_every_refusal_is_the_same_problem_both_ways(
    client: Client, keys: dict[str, Any], sessionmaker: async_sessionmaker[AsyncSession], engine: AsyncEngine
) -> None:
    writer = keys["events:write"]
    good = purchase("ingest-refused", "c-ingest", 10.0)
    await client.post(DIRECT, json=good, headers=writer)
    reader = {"Authorization": f"Bearer {await new_key(sessionmaker, scopes.CUSTOMERS_READ)}"}
    cases: list[tuple[int, dict[str, str], dict[str, Any]]] = [
        (409, writer, {"json": {**good, "channel": "web"}}),  # the same id with other content
        (401, {}, {"json": good}),
        (401, {"Authorization": "Bearer dlk_0000000000000000_" + "x" * 43}, {"json": good}),
        # the key is judged before the body
        (
            401,
            {"Authorization": "Basic abc"},
            {"content": b"{not json", "headers": {"content-type": "application/json"}},
        ),
        (403, reader, {"json": good}),
        (400, writer, {"content": b"{not json", "headers": {"content-type": "application/json"}}),
        (400, writer, {"content": b"", "headers": {"content-type": "application/json"}}),
        (422, writer, {"json": {**good, "occurred_at": "yesterday"}}),
        (422, writer, {"json": {**good, "order": None}}),  # a purchase needs an order
        (422, writer, {"json": {**good, "event_id": "nul-\x00"}}),
        (422, writer, {"json": {**good, "customer_id": 12}}),  # strict: no number for a string
        (400, writer, {"content": b'{"event_id": "a\xc0\x80"}', "headers": {"content-type": "application/json"}}),
        (
            401,
            {"Authorization": "Bearer dlk_0000000000000000_" + "x" * 43},
            {"content": b"{not json", "headers": {"content-type": "application/json"}},
        ),
    ]
    for status, headers, request in cases:
        request_headers = {**headers, **request.pop("headers", {})}
        direct, _ = await both(client, request_headers, **request)
        assert direct.status_code == status, (status, direct.text)
        assert direct.headers["content-type"].startswith("application/problem+json")
        if status == 401:
            assert direct.headers["www-authenticate"] == 'Bearer realm="delight"'
    async with engine.connect() as connection:
        stored = await connection.scalar(text("SELECT count(*) FROM events WHERE event_id LIKE 'ingest-refused%'"))
    assert stored == 1


async def test_only_the_first_authorization_header_counts_both_ways(client: Client, keys: dict[str, Any]) -> None:
    valid = keys["events:write"]["Authorization"]
    event = purchase("ingest-two-keys", "c-ingest", 10.0)
    for first, second, status in (("", valid, 401), ("Bearer nonsense", valid, 401), (valid, "Bearer x", 201)):
        answers = [
            await client.post(path, json=event, headers=[("authorization", first), ("authorization", second)])
            for path in (DIRECT, ROUTED)
        ]
        assert answers[0].status_code == status, answers[0].text
        assert comparable(answers[1])[0] == (200 if status == 201 else status)  # a replay by then, when stored


async def asgi_post(app: Any, headers: list[tuple[bytes, bytes]]) -> tuple[int, bool]:
    """POST /v1/events straight to the ASGI app: its status, and whether it asked for the body at all."""
    asked = False
    statuses = []

    async def receive() -> dict[str, Any]:
        nonlocal asked
        asked = True
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    scope = asgi_scope("POST", DIRECT, [(b"host", b"testserver"), (b"content-type", b"application/json"), *headers])
    await app(scope, receive, send)
    return statuses[0], asked


async def test_a_refused_key_or_an_announced_oversize_body_is_answered_before_the_body_is_read(
    client: Client, keys: dict[str, Any]
) -> None:
    """As Litestar's guard and body reader do: an unauthorised client cannot make the server wait for,
    or buffer, a body it will refuse."""
    app = client.app  # type: ignore[attr-defined]
    unknown = (b"authorization", b"Bearer dlk_0000000000000000_" + b"x" * 43)
    assert await asgi_post(app, [unknown]) == (401, False)
    valid = (b"authorization", keys["events:write"]["Authorization"].encode())
    assert await asgi_post(app, [valid, (b"content-length", str(6 * 2**20).encode())]) == (413, False)


async def test_a_body_over_the_limit_is_a_413_both_ways(
    database_url: str, redis_url: str, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    key = {"Authorization": f"Bearer {await new_key(sessionmaker, scopes.EVENTS_WRITE)}"}
    async with serving(create_app(settings_with(database_url, redis_url, max_body_bytes=300))) as small:
        event = purchase("ingest-large", "c-ingest", 10.0)
        event["customer"] = {"first_name": "x" * 400}
        direct, _ = await both(small, key, json=event)
        assert direct.status_code == 413, direct.text


@pytest.fixture
async def rate_limited(database_url: str, redis_url: str) -> AsyncIterator[Client]:
    async with serving(create_app(settings_with(database_url, redis_url, rate_limit=2))) as limited:
        yield limited


async def test_a_rate_limited_key_gets_the_same_429_both_ways_and_nothing_is_stored(
    rate_limited: Client, sessionmaker: async_sessionmaker[AsyncSession], engine: AsyncEngine
) -> None:
    key = {"Authorization": f"Bearer {await new_key(sessionmaker, scopes.EVENTS_WRITE)}"}
    if 60 - time.time() % 60 < 5:  # four requests in one minute's window
        await asyncio.sleep(60 - time.time() % 60 + 0.05)
    # a bad body is counted once, not again by the guard of the route that then says what is wrong with it
    refused = await rate_limited.post(DIRECT, json={"event_id": "ingest-limit-bad"}, headers=key)
    assert refused.status_code == 422, refused.text
    accepted = await rate_limited.post(DIRECT, json=purchase("ingest-limit-0", "c-ingest", 1.0), headers=key)
    assert accepted.status_code == 201, accepted.text
    direct, _ = await both(rate_limited, key, json=purchase("ingest-limit-x", "c-ingest", 1.0))
    assert direct.status_code == 429
    assert direct.headers["retry-after"].isdigit()
    async with engine.connect() as connection:
        stored = await connection.scalar(text("SELECT count(*) FROM events WHERE event_id = 'ingest-limit-x'"))
    assert stored == 0
