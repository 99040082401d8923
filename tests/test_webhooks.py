"""Webhooks: a real HTTP receiver on loopback hears about awards, signed, at least once, after an outage too."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import hmac
import json
import socket
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from service.awards.expiry import run_expiry
from service.lib.db import transaction
from service.webhooks.delivery import backoff, deliver_due
from tests.conftest import AppFactory, purchase

SECRET = "test-signing-secret"
MUG = """\
campaign: hooks
rules:
  - id: mug
    when: type == "purchase" and order.total >= 100
    award: {gift: mug}
"""


def settings(port: int) -> str:
    return (
        "seed: hooks\n"
        "webhooks:\n"
        f"  - {{id: crm, url: 'http://127.0.0.1:{port}/hooks', secret_env: WEBHOOK_SECRET_TEST,\n"
        "     events: [award.issued, award.redeemed, award.expired, award.reversed]}\n"
    )


class Receiver:
    """An HTTP server on loopback that records what it is sent; it can go down and come back on the same port."""

    def __init__(self) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = int(sock.getsockname()[1])
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.server: ThreadingHTTPServer | None = None

    def start(self) -> None:
        received = self.received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                received.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def messages(self) -> list[dict[str, Any]]:
        return [json.loads(body) for _, body in self.received]


@pytest.fixture
def receiver(monkeypatch: pytest.MonkeyPatch) -> Iterator[Receiver]:
    monkeypatch.setenv("WEBHOOK_SECRET_TEST", SECRET)
    monkeypatch.setenv("DELIGHT_WEBHOOK_ALLOW", "127.0.0.1")  # the receivers here are on loopback
    server = Receiver()
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


@pytest.fixture
def deliver(
    sessionmaker: async_sessionmaker[AsyncSession], http: httpx.AsyncClient
) -> Callable[[AsyncTestClient[Litestar], dt.datetime], Awaitable[int]]:
    """Run one delivery pass for an app's subscribers (in this test's event loop)."""

    async def run(client: AsyncTestClient[Litestar], now: dt.datetime) -> int:
        webhooks = client.app.state.registry.current.settings.webhooks
        return await deliver_due(sessionmaker, webhooks, http, now=now)

    return run


Deliver = Callable[[AsyncTestClient[Litestar], dt.datetime], Awaitable[int]]


def soon() -> dt.datetime:
    """A delivery pass just after now: outbox rows are due from the moment they are written."""
    return dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1)


async def test_an_issued_award_reaches_the_receiver_signed_and_marked_delivered(
    rules_app: AppFactory, keys: dict[str, Any], receiver: Receiver, deliver: Deliver, engine: AsyncEngine
) -> None:
    async with rules_app(MUG, settings=settings(receiver.port)) as client:
        response = await client.post("/v1/events", json=purchase("e-1", "c-1", 150.0), headers=keys["events:write"])
        [award] = response.json()["awards"]
        assert await deliver(client, soon()) == 1
        state = (await client.get("/v1/webhooks", headers=keys["rules:admin"])).json()
    [(headers, body)] = receiver.received
    message = json.loads(body)
    assert message["type"] == "award.issued"
    assert message["data"]["code"] == award["code"]
    assert headers["x-delight-id"] == message["id"]
    expected = hmac.new(SECRET.encode(), f"{headers['x-delight-timestamp']}.".encode() + body, hashlib.sha256)
    assert headers["x-delight-signature"] == f"v1={expected.hexdigest()}"
    [crm] = state["subscriptions"]
    assert (crm["id"], crm["delivered"], crm["pending"]) == ("crm", 1, 0)


async def test_the_outbox_row_is_written_with_the_award_or_not_at_all(
    rules_app: AppFactory, keys: dict[str, Any], receiver: Receiver, engine: AsyncEngine
) -> None:
    async with rules_app(MUG, settings=settings(receiver.port)) as client:
        await client.post("/v1/events", json=purchase("e-1", "c-1", 150.0), headers=keys["events:write"])
        conflict = await client.post("/v1/events", json=purchase("e-1", "c-1", 160.0), headers=keys["events:write"])
        assert conflict.status_code == 409
    async with engine.connect() as connection:
        awards = (await connection.execute(text("SELECT count(*) FROM awards"))).scalar_one()
        outbox = (await connection.execute(text("SELECT count(*) FROM outbox"))).scalar_one()
    assert awards == outbox == 1


async def test_a_receiver_that_was_down_gets_everything_when_it_returns(
    rules_app: AppFactory, keys: dict[str, Any], receiver: Receiver, deliver: Deliver
) -> None:
    receiver.stop()
    async with rules_app(MUG, settings=settings(receiver.port)) as client:
        for i in range(3):
            await client.post("/v1/events", json=purchase(f"e-{i}", f"c-{i}", 150.0), headers=keys["events:write"])
        now = soon()
        for _ in range(12):  # an hour and more of failed attempts, backing off
            assert await deliver(client, now) == 0
            now += backoff(12)
        state = (await client.get("/v1/webhooks", headers=keys["rules:admin"])).json()["subscriptions"][0]
        assert (state["pending"], state["failing"]) == (3, 3)
        assert "ConnectError" in state["last_error"]
        receiver.start()
        assert await deliver(client, now + backoff(12)) == 3
        assert await deliver(client, now + 2 * backoff(12)) == 0  # nothing is sent twice once delivered
    assert sorted(m["data"]["event_id"] for m in receiver.messages()) == ["e-0", "e-1", "e-2"]


async def test_back_off_doubles_and_stops_at_five_minutes() -> None:
    assert [backoff(n).total_seconds() for n in (1, 2, 3, 4, 9, 10, 30)] == [1, 2, 4, 8, 256, 300, 300]


async def test_redemption_expiry_and_reversal_are_told_too(
    rules_app: AppFactory,
    keys: dict[str, Any],
    receiver: Receiver,
    deliver: Deliver,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    async with rules_app(MUG, settings=settings(receiver.port)) as client:
        codes = []
        for i in range(3):
            event = purchase(f"e-{i}", "c-1", 150.0, occurred_at="2026-03-01T10:00:00Z")
            codes.append((await client.post("/v1/events", json=event, headers=keys["events:write"])).json())
        redeemed = await client.post(
            f"/v1/awards/{codes[0]['awards'][0]['code']}/redeem",
            json={"order_id": "till-1", "redeemed_at": "2026-03-02T10:00:00Z"},
            headers=keys["awards:redeem"],
        )
        assert redeemed.status_code == 200
        returned = {
            "event_id": "r-1",
            "type": "return",
            "customer_id": "c-1",
            "occurred_at": "2026-03-03T10:00:00Z",
            "order": {"order_id": "o-e-1", "total": 150.0},
        }
        assert (await client.post("/v1/events", json=returned, headers=keys["events:write"])).status_code == 201
        webhooks = client.app.state.registry.current.settings.webhooks
        async with transaction(sessionmaker) as session:
            report = await run_expiry(session, dt.datetime(2026, 12, 1, tzinfo=dt.UTC), None, webhooks)
        assert report.awards_expired == 1
        assert await deliver(client, soon()) == 6
    kinds = sorted((m["type"], m["data"]["event_id"]) for m in receiver.messages())
    assert kinds == [
        ("award.expired", "e-2"),
        ("award.issued", "e-0"),
        ("award.issued", "e-1"),
        ("award.issued", "e-2"),
        ("award.redeemed", "e-0"),
        ("award.reversed", "e-1"),
    ]


class Dripper:
    """A receiver on loopback that takes a request and answers one byte a second: a peer that is slow, not dead."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.port = int(self.sock.getsockname()[1])
        self.stop = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._drip, args=(conn,), daemon=True).start()

    def _drip(self, conn: socket.socket) -> None:
        with conn:
            conn.recv(65536)
            for byte in b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n":
                if self.stop.wait(1.0):
                    return
                try:
                    conn.sendall(bytes([byte]))
                except OSError:
                    return

    def close(self) -> None:
        self.stop.set()
        self.sock.close()


async def test_a_slow_receiver_costs_its_own_delivery_five_seconds_and_holds_no_lock_meanwhile(
    rules_app: AppFactory, keys: dict[str, Any], receiver: Receiver, deliver: Deliver, engine: AsyncEngine
) -> None:
    dripper = Dripper()
    both = (
        "seed: hooks\nwebhooks:\n"
        f"  - {{id: crm, url: 'http://127.0.0.1:{receiver.port}/hooks', secret_env: WEBHOOK_SECRET_TEST,\n"
        "     events: [award.issued]}\n"
        f"  - {{id: slow, url: 'http://127.0.0.1:{dripper.port}/hooks', secret_env: WEBHOOK_SECRET_TEST,\n"
        "     events: [award.issued]}\n"
    )
    try:
        async with rules_app(MUG, settings=both) as client:
            await client.post("/v1/events", json=purchase("e-1", "c-1", 150.0), headers=keys["events:write"])
            started = asyncio.get_running_loop().time()
            delivering = asyncio.create_task(deliver(client, soon()))
            await asyncio.sleep(2.0)  # both sends are under way; the slow one has sent two bytes
            async with engine.connect() as connection:
                locked = (
                    await connection.execute(
                        text("SELECT count(*) FROM (SELECT 1 FROM outbox FOR UPDATE SKIP LOCKED) AS free")
                    )
                ).scalar_one()
                await connection.rollback()
            delivered = await delivering
            seconds = asyncio.get_running_loop().time() - started
            state = {
                s["id"]: s
                for s in (await client.get("/v1/webhooks", headers=keys["rules:admin"])).json()["subscriptions"]
            }
    finally:
        dripper.close()
    assert locked == 2  # no row of the outbox was held by a transaction while the receivers answered
    assert delivered == 1
    assert len(receiver.messages()) == 1
    assert seconds < 5.0 + 2.0, seconds  # one deadline for the whole delivery, however often the peer sends a byte
    assert (state["slow"]["pending"], state["slow"]["failing"]) == (1, 1)
    assert state["slow"]["last_error"] == "no answer within 5 s"


async def test_a_name_that_resolves_to_an_internal_address_is_not_sent_to_unless_allowed(
    rules_app: AppFactory,
    keys: dict[str, Any],
    receiver: Receiver,
    deliver: Deliver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The URL names the machine (this passes the check of the URL alone); the address it resolves to is judged at
    delivery, and the request goes to that address, not to a second lookup."""
    name = socket.gethostname()
    assert {info[4][0] for info in socket.getaddrinfo(name, 80)} == {"127.0.0.1"}, "the receiver listens there"
    monkeypatch.delenv("DELIGHT_WEBHOOK_ALLOW")
    hooked = settings(receiver.port).replace("127.0.0.1", name)
    async with rules_app(MUG, settings=hooked) as client:
        await client.post("/v1/events", json=purchase("e-1", "c-1", 150.0), headers=keys["events:write"])
        assert await deliver(client, soon()) == 0
        state = (await client.get("/v1/webhooks", headers=keys["rules:admin"])).json()["subscriptions"][0]
        monkeypatch.setenv("DELIGHT_WEBHOOK_ALLOW", "127.0.0.0/8")
        assert await deliver(client, soon() + backoff(1)) == 1
    assert state["last_error"].startswith("refused: 127.0.0.1 is a loopback address")
    [(headers, _)] = receiver.received
    assert headers["host"] == f"{name}:{receiver.port}"
