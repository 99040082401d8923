"""Test fixtures: real PostgreSQL and Redis, the real migrations, the real HTTP stack.

By default the suite starts its own embedded PostgreSQL and Redis in a
temporary directory. Set ``DELIGHT_TEST_DATABASE_URL`` (a ``postgresql+asyncpg://``
URL to a server where the suite may create databases) and ``DELIGHT_TEST_REDIS_URL``
to run against external servers instead. Each run creates a fresh database,
builds it by running the migrations, and drops it at the end.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import html
import itertools
import os
import re
import secrets
import textwrap
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import asyncpg
import httpx
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from redis.asyncio import Redis
from sqlalchemy import event, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from service.app import create_app
from service.keys import scopes
from service.keys.service import create_key
from service.lib.db import (
    asyncpg_connect_args,
    create_engine,
    create_sessionmaker,
    transaction,
    upgrade_database_async,
)
from service.lib.embedded import start_postgres, start_redis
from service.lib.redis import close, connect
from service.lib.settings import AppSettings, DatabaseSettings, RedisSettings, Settings
from service.projection.apply import BATCH_LOCK, catch_up, projector_connection, rebuild

ROOT = Path(__file__).resolve().parent.parent
DEMO_RULES = ROOT / "rules"
TEST_RULES = Path(__file__).resolve().parent / "fixtures" / "rules"
TABLES_RESET_PER_TEST = (
    "console_sessions",
    "console_links",
    "projection_state",
    "customer_timelines",
    "first_exposures",
    "audit_log",
    "outbox",
    "exposures",
    "points_ledger",
    "awards",
    "events",
    "event_ids",
    "customers",
    "counters",
)


@pytest.fixture(scope="session")
def server_urls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """Admin URLs of a PostgreSQL and a Redis: external when configured, embedded otherwise."""
    started: list[Any] = []
    database_url = os.environ.get("DELIGHT_TEST_DATABASE_URL")
    redis_url = os.environ.get("DELIGHT_TEST_REDIS_URL")
    data_dir = tmp_path_factory.mktemp("servers")
    try:
        if not database_url:
            pg = start_postgres(data_dir, database="postgres")
            started.append(pg)
            database_url = pg.url
        if not redis_url:
            rd = start_redis(data_dir)
            started.append(rd)
            redis_url = rd.url
        yield database_url, redis_url
    finally:
        for server in reversed(started):
            server.stop()


@asynccontextmanager
async def scratch_database(admin_url: str, prefix: str = "delight_test") -> AsyncIterator[str]:
    """A new database on the test server, built by the real migrations, and dropped afterwards."""
    name = f"{prefix}_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(**asyncpg_connect_args(admin_url))
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    url = make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    await upgrade_database_async(url)
    try:
        yield url
    finally:
        admin = await asyncpg.connect(**asyncpg_connect_args(admin_url))
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


@pytest.fixture(scope="session")
async def database_url(server_urls: tuple[str, str]) -> AsyncIterator[str]:
    """A fresh database for this run, built by the real migrations."""
    async with scratch_database(server_urls[0]) as url:
        yield url


@pytest.fixture(scope="session")
def redis_url(server_urls: tuple[str, str]) -> str:
    return server_urls[1]


def make_settings(database_url: str, redis_url: str, rules_dir: Path = TEST_RULES) -> Settings:
    return Settings(
        app=AppSettings(
            rules_dir=rules_dir, log_level="WARNING", log_json=True, rules_sync=False, jobs_every=0, rate_limit=0
        ),
        db=DatabaseSettings(url=database_url, pool_size=20, max_overflow=20),
        redis=RedisSettings(url=redis_url),
    )


@pytest.fixture(scope="session")
def app(database_url: str, redis_url: str) -> Litestar:
    return create_app(make_settings(database_url, redis_url))


class ServedClient(httpx.AsyncClient):
    """An HTTP client for an app served in the test's own event loop, so requests sent together run together.

    (Litestar's ``AsyncTestClient`` hands each request to a portal thread and waits for it, so
    requests sent with ``asyncio.gather`` through it would be handled one after the other.)
    """

    def __init__(self, app: Litestar, timeout: float) -> None:
        transport = httpx.ASGITransport(app=cast("Any", app))  # Litestar's ASGI types are narrower than httpx's
        super().__init__(transport=transport, base_url="http://testserver", timeout=timeout)
        self.app = app


@asynccontextmanager
async def serving(app: Litestar, seconds: float = 60) -> AsyncIterator[AsyncTestClient[Litestar]]:
    # The lifespan runs in a task of its own: a session fixture is set up and torn down in different
    # tasks, and the lifespan's cancel scope must be left in the task that entered it.
    started, stop = asyncio.Event(), asyncio.Event()

    async def lifespan() -> None:
        async with app.lifespan():
            started.set()
            await stop.wait()

    task = asyncio.create_task(lifespan())
    await asyncio.wait([task, asyncio.create_task(started.wait())], return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        task.result()  # the app failed to start: raise why
    try:
        async with ServedClient(app, seconds) as client:
            yield cast("AsyncTestClient[Litestar]", client)
    finally:
        stop.set()
        await task


@pytest.fixture(scope="session")
async def client(app: Litestar) -> AsyncIterator[AsyncTestClient[Litestar]]:
    async with serving(app, seconds=30) as test_client:
        yield test_client


ASYNCPG_INTROSPECTION = ("typeinfo_tree", "set_config('jit'")


@dataclass(frozen=True, slots=True)
class Sent:
    """A query sent, with its arguments and which checkout from the pool sent it (a transaction and the statements
    around it share one)."""

    query: str
    args: Any
    checkout: int


@contextmanager
def sent_statements(app: Litestar, engine: AsyncEngine | None = None) -> Iterator[list[Any]]:
    """Every query asyncpg sends on a connection of ``app``'s pool (or ``engine``'s) while the block runs (BEGIN and
    COMMIT too), as ``Sent`` (``query``, ``args``, ``checkout``); asyncpg learning a type is left out. Queries
    reach the list on the loop's next turn after they are sent."""
    statements: list[Any] = []
    checkouts = itertools.count()
    loggers: dict[int, Any] = {}

    def checkout(dbapi_connection: Any, *_: Any) -> None:
        number = next(checkouts)

        def record(query: Any) -> None:
            if not any(mark in query.query for mark in ASYNCPG_INTROSPECTION):
                statements.append(Sent(query.query, query.args, number))

        loggers[id(dbapi_connection)] = record
        dbapi_connection.driver_connection.add_query_logger(record)

    def checkin(dbapi_connection: Any, *_: Any) -> None:
        record = loggers.pop(id(dbapi_connection), None)
        if record is not None:
            dbapi_connection.driver_connection.remove_query_logger(record)

    pool = (engine or app.state.engine).sync_engine.pool
    event.listen(pool, "checkout", checkout)
    event.listen(pool, "checkin", checkin)
    try:
        yield statements
    finally:
        event.remove(pool, "checkout", checkout)
        event.remove(pool, "checkin", checkin)


CSRF_FIELD = re.compile(r'name="csrf" value="([^"]+)"')


def csrf_of(page: str) -> str:
    """The CSRF token of a console page's forms."""
    match = CSRF_FIELD.search(page)
    assert match, "the page has no form with a CSRF token"
    return html.unescape(match.group(1))


@pytest.fixture
async def browser(client: AsyncTestClient[Litestar]) -> AsyncIterator[httpx.AsyncClient]:
    """A client of its own (its own cookies) on the running app, as one browser at the console is."""
    transport = httpx.ASGITransport(app=cast("Any", client.app))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver", timeout=60) as http:
        yield http


async def sign_in(http: httpx.AsyncClient, key: str) -> str:
    """Sign ``http`` in to the console with ``key`` through the sign-in form; the session's CSRF token."""
    form = await http.get("/console/login")
    assert form.status_code == 200, form.text
    signed_in = await http.post("/console/login", data={"csrf": csrf_of(form.text), "key": key, "next": "/console"})
    assert signed_in.status_code == 303, signed_in.text
    home = await http.get("/console")
    assert home.status_code == 200, home.text
    return csrf_of(home.text)


@pytest.fixture(scope="session")
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url)
    yield engine
    await engine.dispose()


@pytest.fixture(scope="session")
def sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return create_sessionmaker(engine)


async def truncate(engine: AsyncEngine, tables: Sequence[str] = TABLES_RESET_PER_TEST) -> None:
    """Empty ``tables``, between two pages of the projector (a page reads several of them, in its own order)."""
    async with engine.begin() as connection:
        await connection.execute(text("SELECT pg_advisory_xact_lock(:lock)"), {"lock": BATCH_LOCK})
        await connection.execute(text(f"TRUNCATE {', '.join(tables)} CASCADE"))
        # Rule sets stay (events name theirs), but none is in force: the set in force decides what a new one may
        # change (the programme holdout), and a test's set is not judged against one an earlier test left.
        await connection.execute(text("UPDATE rule_sets SET activated_at = NULL WHERE activated_at IS NOT NULL"))


@pytest.fixture
async def clean_tables(engine: AsyncEngine) -> None:
    await truncate(engine)


@pytest.fixture(autouse=True)
def _fresh_data_for_database_tests(request: pytest.FixtureRequest) -> None:
    """Every test that touches the database starts with no customers, events, awards or counters.

    Keys and rule sets stay, none of them in force.

    Pure tests never start a database.
    """
    if "database_url" in request.fixturenames:
        request.getfixturevalue("clean_tables")


@pytest.fixture(scope="session")
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = connect(redis_url, timeout=10.0)
    yield client
    await close(client)


async def new_key(sessionmaker: async_sessionmaker[AsyncSession], *key_scopes: str) -> str:
    async with transaction(sessionmaker) as session:
        _, key = await create_key(session, "test", list(key_scopes))
    return key


@pytest.fixture(scope="session")
async def keys(sessionmaker: async_sessionmaker[AsyncSession]) -> dict[str, dict[str, str]]:
    """``Authorization`` headers: one key per scope, plus ``all``."""
    headers = {}
    for scope in scopes.ALL:
        headers[scope] = {"Authorization": f"Bearer {await new_key(sessionmaker, scope)}"}
    headers["all"] = {"Authorization": f"Bearer {await new_key(sessionmaker, *scopes.ALL)}"}
    return headers


def purchase(
    event_id: str = "pos-1",
    customer_id: str = "c-1",
    total: float = 120.0,
    *,
    occurred_at: str = "2026-03-01T10:15:00Z",
    category: str = "handmade",
    channel: str = "pos",
    **extra: Any,
) -> dict[str, Any]:
    """A purchase event in the v1 wire format."""
    event: dict[str, Any] = {
        "event_id": event_id,
        "type": "purchase",
        "customer_id": customer_id,
        "occurred_at": occurred_at,
        "channel": channel,
        "store_id": "madrid-1",
        "order": {
            "order_id": f"o-{event_id}",
            "total": total,
            "currency": "EUR",
            "items": [{"sku": "SKU-1", "category": category, "quantity": 1, "unit_price": total}],
        },
    }
    event.update(extra)
    return event


def a_return(event_id: str, customer: str, order_id: str, total: float, occurred_at: str) -> dict[str, Any]:
    """A return of (part of) an order, in the v1 wire format."""
    return {
        "event_id": event_id,
        "type": "return",
        "customer_id": customer,
        "occurred_at": occurred_at,
        "order": {"order_id": order_id, "total": total, "currency": "EUR"},
    }


def interaction(
    event_id: str, customer_id: str = "c-1", name: str = "review_posted", **attributes: Any
) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "type": "interaction",
        "customer_id": customer_id,
        "occurred_at": "2026-03-02T09:00:00Z",
        "channel": "web",
        "name": name,
        "attributes": attributes,
    }


# --- apps on their own rule packs -------------------------------------------------------------------------------

PACK_CATALOG = """\
gifts:
  - id: mug
    name: Branded mug
    unit_cost: 3.10
  - id: vase
    name: Small vase
    unit_cost: 4.50
  - id: lamp
    name: Desk lamp
    unit_cost: 20.00
    stock: 10
"""

AppFactory = Callable[..., Any]


@pytest.fixture
def rules_app(tmp_path: Path, database_url: str, redis_url: str) -> Callable[..., Any]:
    """``async with rules_app(campaign_yaml, settings_yaml) as client`` — an app serving that rule pack."""

    counter = itertools.count()

    @asynccontextmanager
    async def open_app(
        *campaigns: str, settings: str = "seed: http-tests\n"
    ) -> AsyncIterator[AsyncTestClient[Litestar]]:
        directory = tmp_path / f"rules-{next(counter)}"
        directory.mkdir()
        (directory / "catalog.yaml").write_text(PACK_CATALOG)
        settings = textwrap.dedent(settings)
        if "offline_redemptions" not in settings:  # the tests redeem awards as of March 2026, as tills back online
            settings += "offline_redemptions: 1000d\n"
        (directory / "settings.yaml").write_text(settings)
        for i, campaign in enumerate(campaigns):
            (directory / f"c{i}.yaml").write_text(textwrap.dedent(campaign))
        app = create_app(make_settings(database_url, redis_url, directory))
        async with serving(app) as client:
            yield client

    return open_app


def asgi_scope(method: str, path: str, headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    """An HTTP scope as an ASGI server would pass it, for driving the app without a client."""
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
        "state": {},
    }


async def post_all(client: AsyncTestClient[Litestar], keys: dict[str, Any], events: list[dict[str, Any]]) -> list[Any]:
    responses = await asyncio.gather(*(client.post("/v1/events", json=e, headers=keys["events:write"]) for e in events))
    assert all(r.status_code == 201 for r in responses), {r.status_code for r in responses}
    return [a for r in responses for a in r.json()["awards"]]


# --- the uplift projection ---------------------------------------------------------------------------------------

FIRST_EXPOSURES = """
    SELECT campaign, rule_id, customer_id, event_id, t0, "group", holdout, channel, store_id, cost_s, cost_cents
    FROM first_exposures ORDER BY campaign, rule_id, customer_id
"""
CUSTOMER_TIMELINES = "SELECT customer_id, at, cum, ret_at, ret_cum FROM customer_timelines ORDER BY customer_id"


def steps(instants: Sequence[Any], running: Sequence[int]) -> list[tuple[Any, int]]:
    """A timeline as the step function the report reads: the last running total at each instant (or offset).

    Several entries at one instant may come in either order, or as one: the
    report reads the total after all of them.
    """
    last: dict[Any, int] = {}
    for instant, total in zip(instants, running, strict=True):
        last[instant] = max(total, last.get(instant, total))
    return sorted(last.items())


@dataclass(frozen=True)
class Projection:
    firsts: list[dict[str, Any]]  # first_exposures rows, with the cost timeline as ``cost`` steps
    timelines: dict[str, list[tuple[dt.datetime, int]]]  # customer -> purchase steps
    returns: dict[str, list[tuple[dt.datetime, int]]]  # customer -> return steps (refunded), for those with any


async def read_projection(conn: Any) -> Projection:
    firsts = []
    for row in await conn.fetch(FIRST_EXPOSURES):
        first = dict(row)
        first["cost"] = steps(first.pop("cost_s"), first.pop("cost_cents"))
        firsts.append(first)
    rows = await conn.fetch(CUSTOMER_TIMELINES)
    timelines = {r["customer_id"]: steps(r["at"], r["cum"]) for r in rows if r["at"]}
    returns = {r["customer_id"]: steps(r["ret_at"], r["ret_cum"]) for r in rows if r["ret_at"]}
    return Projection(firsts, timelines, returns)


async def projected(database_url: str) -> Projection:
    """The projection once every event committed so far is in it, as the service's projector built it."""
    async with projector_connection(database_url) as conn:
        await catch_up(conn)
        return await read_projection(conn)


async def rebuilt(database_url: str) -> Projection:
    """The projection built from scratch from the stored events (``delight reports rebuild``)."""
    async with projector_connection(database_url) as conn:
        await rebuild(conn)
        return await read_projection(conn)
