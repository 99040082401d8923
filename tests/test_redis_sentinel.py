"""Redis behind Sentinels: ``redis+sentinel://`` URLs, and events recorded exactly once through a failover.

The URL tests need nothing. The failover test starts Debian's ``redis-server``
and ``redis-sentinel`` on free loopback ports (a primary, a replica of it and
three Sentinels with a quorum of two, nothing persisted, all under the test's
temporary directory) and a real ``delight serve`` on the test database whose
``DELIGHT_REDIS_URL`` names the Sentinels. It drives events at the service,
kills the primary (SIGKILL) while they flow, and goes on until the Sentinels
have promoted the replica; then it checks what clients were answered, what
PostgreSQL holds, and that the key cache, revocations, rate limits and
readiness all work on the new master. Without the two programs the test
skips, saying so; with ``DELIGHT_TEST_REQUIRE_SENTINEL`` set (CI installs
them) it fails instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import shutil
import statistics
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import redis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.cli import main
from service.keys.limits import RateLimiter
from service.keys.scopes import EVENTS_WRITE
from service.lib.db import asyncpg_connect_args
from service.lib.redis import close, connect, sentinel_master, shown
from service.lib.resp import LeanRedis, encode
from service.lib.settings import SentinelURL, Settings, SettingsError, parse_sentinel_url
from service.rules.registry import CHANNEL
from tests.conftest import TEST_RULES, new_key, purchase
from tests.replicas import DELIGHT, IDLE_CONNECTION_SECONDS, Replica, free_port, replica_env, running

SERVICE = "delight-test"
QUORUM = 2
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 3000
START_WITHIN = 20.0
"""Seconds for the replica to sync and the Sentinels to find it and each other."""
PROMOTED_WITHIN = 20.0
"""Seconds from the kill for the Sentinels to name the replica master."""
IN_FLIGHT = 20
LOAD_SECONDS = 15.0
KILL_AFTER = 4.0
AFTER_PROMOTION = 3.0
"""Seconds the load goes on once the replica is master, at least."""
PACE = 0.05
"""Seconds between the starts of one sender's requests, at least: no key of the load nears the rate limit."""
KEYS_EACH = 5
RATE_LIMIT = 100
CUSTOMERS = 150
FAST = 3.0
"""Seconds within which every answer must come, during the switch too."""
PROBLEM = "application/problem+json"


# --- the URL form -----------------------------------------------------------------------------------------------


def test_a_sentinel_url_names_the_sentinels_the_master_its_database_and_credentials() -> None:
    url = "redis+sentinel://app:s%40cret@10.0.0.1:26380,sentinel-b,[::1]:26381/cache/3?sentinel_password=watch"
    assert parse_sentinel_url(url) == SentinelURL(
        sentinels=(("10.0.0.1", 26380), ("sentinel-b", 26379), ("::1", 26381)),
        service="cache",
        db=3,
        username="app",
        password="s@cret",
        sentinel_password="watch",
    )
    assert parse_sentinel_url("redis+sentinel://h/mymaster") == SentinelURL(
        sentinels=(("h", 26379),), service="mymaster"
    )


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("redis+sentinel:///mymaster/0", "names no Sentinel"),
        ("redis+sentinel://h1:26379,,h2/mymaster", "empty Sentinel address"),
        ("redis+sentinel://h1:port/mymaster", "port 'port'"),
        ("redis+sentinel://h1:26379", "names no master"),
        ("redis+sentinel://h1/mymaster/zero", "database 'zero'"),
        ("redis+sentinel://h1/mymaster/0/extra", "more after the database"),
        ("redis+sentinel://:hunter2@h1/mymaster?socket_timeout=5", "options socket_timeout"),
        ("sentinel://h1:26379/mymaster", "redis://, rediss://, unix:// or redis+sentinel://"),
        ("127.0.0.1:6379", "redis://, rediss://, unix:// or redis+sentinel://"),
    ],
)
def test_a_malformed_redis_url_stops_start_up_saying_what_is_wrong(url: str, says: str) -> None:
    with pytest.raises(SettingsError, match="DELIGHT_REDIS_URL") as refused:
        Settings.from_env({"DELIGHT_REDIS_URL": url})
    assert says in str(refused.value)
    assert "hunter2" not in str(refused.value)


def test_serve_refuses_a_malformed_sentinel_url_before_starting_anything(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setenv("DELIGHT_REDIS_URL", "redis+sentinel://h1:26379,h2:26379")
    monkeypatch.setenv("DELIGHT_DATA_DIR", str(tmp_path / "data"))
    assert main(["serve"]) == 2
    assert "delight: DELIGHT_REDIS_URL: the Sentinel URL 'redis+sentinel://h1:26379,h2:26379' names no master" in (
        capsys.readouterr().err
    )
    assert not (tmp_path / "data").exists()


# --- a primary, a replica and three Sentinels ---------------------------------------------------------------------


@dataclass(frozen=True)
class Server:
    """A ``redis-server`` or ``redis-sentinel`` the test started, on a loopback port of its own."""

    name: str
    port: int
    directory: Path
    process: subprocess.Popen[bytes]

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=2, socket_connect_timeout=2)

    def tail(self, lines: int = 12) -> str:
        try:
            text = (self.directory / "log").read_text(errors="replace")
        except OSError as exc:
            return f"(no log: {exc})"
        return "\n".join(text.splitlines()[-lines:])


@dataclass(frozen=True)
class Cluster:
    primary: Server
    replica: Server
    sentinels: list[Server]

    @property
    def url(self) -> str:
        return f"redis+sentinel://{','.join(s.address for s in self.sentinels)}/{SERVICE}/0"

    def named_masters(self) -> set[str | None]:
        """What each Sentinel names master now (``None``: it did not answer)."""
        named: set[str | None] = set()
        for sentinel in self.sentinels:
            try:
                with sentinel.client() as client:
                    host, port = client.sentinel_get_master_addr_by_name(SERVICE)
                named.add(f"{host.decode()}:{port}")
            except (redis.RedisError, TypeError, ValueError):
                named.add(None)
        return named


def _require_programs() -> None:
    missing = [name for name in ("redis-server", "redis-sentinel") if shutil.which(name) is None]
    if not missing:
        return
    reason = f"{' and '.join(missing)} not found (Debian: apt-get install redis-server redis-sentinel)"
    if os.environ.get("DELIGHT_TEST_REQUIRE_SENTINEL"):
        pytest.fail(f"{reason}, and DELIGHT_TEST_REQUIRE_SENTINEL is set")
    pytest.skip(reason)


def _start(name: str, work: Path, command: Callable[[int, Path], list[str]], started: list[Server]) -> Server:
    """``command(port, directory)`` run with its output in ``directory/log``."""
    directory = work / name
    directory.mkdir()
    port = free_port()
    process = subprocess.Popen(command(port, directory), stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    server = Server(name, port, directory, process)
    started.append(server)
    return server


def _redis_server(name: str, work: Path, started: list[Server], *extra: str) -> Server:
    def command(port: int, directory: Path) -> list[str]:
        return [
            "redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory),
            "--logfile", str(directory / "log"), "--save", "", "--appendonly", "no",
            "--repl-diskless-sync-delay", "0", *extra,
        ]  # fmt: skip

    return _start(name, work, command, started)


def _sentinel(name: str, work: Path, primary: Server, started: list[Server]) -> Server:
    def command(port: int, directory: Path) -> list[str]:
        config = directory / "sentinel.conf"  # a Sentinel writes what it learns into its configuration file
        config.write_text(
            f"port {port}\nbind 127.0.0.1\ndir {directory}\nlogfile {directory / 'log'}\n"
            f"sentinel monitor {SERVICE} 127.0.0.1 {primary.port} {QUORUM}\n"
            f"sentinel down-after-milliseconds {SERVICE} {DOWN_AFTER_MS}\n"
            f"sentinel failover-timeout {SERVICE} {FAILOVER_TIMEOUT_MS}\n"
        )
        return ["redis-sentinel", str(config)]

    return _start(name, work, command, started)


def _wait_for(what: str, check: Callable[[], bool], started: list[Server], seconds: float = START_WITHIN) -> None:
    deadline = time.monotonic() + seconds
    while True:
        with contextlib.suppress(redis.RedisError):
            if check():
                return
        for server in started:
            assert server.process.poll() is None, f"{server.name} exited:\n{server.tail()}"
        assert time.monotonic() < deadline, f"{what} within {seconds} s\n" + _tails(started)
        time.sleep(0.05)


def _tails(servers: list[Server]) -> str:
    return "\n".join(f"--- {s.name} ({s.address}), exit code {s.process.poll()}:\n{s.tail()}" for s in servers)


def _replica_in_sync(replica: Server) -> bool:
    with replica.client() as client:
        return bool(client.info("replication").get("master_link_status") == "up")


def _sentinels_ready(cluster: Cluster) -> bool:
    """Every Sentinel sees the primary up, its replica and the other Sentinels: a failover can be agreed."""
    for sentinel in cluster.sentinels:
        with sentinel.client() as client:
            state = client.sentinel_master(SERVICE)
        if state["num-slaves"] != 1 or state["num-other-sentinels"] != len(cluster.sentinels) - 1:
            return False
        if not state["is_master"] or state["is_sdown"] or state["is_odown"]:
            return False
    return True


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    _require_programs()
    started: list[Server] = []
    try:
        primary = _redis_server("primary", tmp_path, started)
        replica = _redis_server("replica", tmp_path, started, "--replicaof", "127.0.0.1", str(primary.port))
        _wait_for("the replica did not sync with the primary", lambda: _replica_in_sync(replica), started)
        sentinels = [_sentinel(f"sentinel-{i}", tmp_path, primary, started) for i in range(3)]
        found = Cluster(primary, replica, sentinels)
        _wait_for("the Sentinels did not find the replica and each other", lambda: _sentinels_ready(found), started)
        yield found
    finally:
        for server in started:
            if server.process.poll() is None:
                server.process.terminate()
        for server in started:
            try:
                server.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.process.kill()
                server.process.wait()
        print(_tails(started))  # captured: pytest shows it when the test failed


@pytest.fixture
def served(cluster: Cluster, tmp_path: Path, database_url: str) -> Iterator[Replica]:
    env = {"DELIGHT_JOBS_EVERY": "0", "DELIGHT_RATE_LIMIT": str(RATE_LIMIT), "DELIGHT_LOG_LEVEL": "WARNING"}
    with running([TEST_RULES], tmp_path, database_url, cluster.url, env=env) as [replica]:
        yield replica


# --- driving the service ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    event_id: str
    customer_id: str
    key: str
    sent_at: float
    seconds: float
    status: int | None
    """``None`` when no HTTP answer came."""
    body: Any
    content_type: str = ""

    def __str__(self) -> str:
        return f"{self.event_id}: {self.status} after {self.seconds:.2f} s {json.dumps(self.body)[:300]}"


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def post(http: httpx.AsyncClient, base: str, key: str, event: dict[str, Any]) -> Answer:
    sent = time.monotonic()
    try:
        response = await http.post(f"{base}/v1/events", json=event, headers=bearer(key))
    except httpx.TransportError as exc:
        return Answer(event["event_id"], event["customer_id"], key, sent, time.monotonic() - sent, None, repr(exc))
    try:
        body = response.json()
    except ValueError:
        body = response.text
    content_type = response.headers.get("content-type", "")
    return Answer(
        event["event_id"], event["customer_id"], key, sent, time.monotonic() - sent, response.status_code, body,
        content_type,
    )  # fmt: skip


def is_problem(answer: Answer, status: int) -> bool:
    return (
        answer.status == status
        and answer.content_type.startswith(PROBLEM)
        and isinstance(answer.body, dict)
        and answer.body.get("status") == status
    )


async def drive(
    http: httpx.AsyncClient, base: str, keys: list[str], stop: asyncio.Event, answers: list[Answer]
) -> None:
    """``IN_FLIGHT`` senders, each posting new purchases with its own keys in turn until ``stop`` is set."""
    numbers = itertools.count()

    async def sender(mine: list[str]) -> None:
        turn = 0
        while not stop.is_set():
            n = next(numbers)
            began = time.monotonic()
            event = purchase(f"fo-{n}", f"fc-{n % CUSTOMERS}", 120.0)
            answers.append(await post(http, base, mine[turn % len(mine)], event))
            turn += 1
            await asyncio.sleep(max(0.0, PACE - (time.monotonic() - began)))

    await asyncio.gather(*(sender(keys[i * KEYS_EACH : (i + 1) * KEYS_EACH]) for i in range(IN_FLIGHT)))


@dataclass(frozen=True)
class Reading:
    at: float
    status: int | None
    body: Any


async def ready(http: httpx.AsyncClient, base: str) -> Reading:
    at = time.monotonic()
    try:
        response = await http.get(f"{base}/health/ready")
    except httpx.TransportError as exc:
        return Reading(at, None, repr(exc))
    return Reading(at, response.status_code, response.json())


async def watch_readiness(http: httpx.AsyncClient, base: str, stop: asyncio.Event, readings: list[Reading]) -> None:
    while not stop.is_set():
        readings.append(await ready(http, base))
        await asyncio.sleep(0.2)


async def promoted(cluster: Cluster) -> float:
    """When every Sentinel named the replica master."""
    deadline = time.monotonic() + PROMOTED_WITHIN
    while await asyncio.to_thread(cluster.named_masters) != {cluster.replica.address}:
        assert time.monotonic() < deadline, "the Sentinels did not promote the replica\n" + _tails(
            [cluster.replica, *cluster.sentinels]
        )
        await asyncio.sleep(0.05)
    return time.monotonic()


async def revoke_with_the_command_line(key_id: str, database_url: str, cluster: Cluster, work: Path) -> str:
    """``delight keys revoke`` as an operator runs it, with the same Sentinel URL as the service."""
    data = work / "data-cli"
    data.mkdir()
    env = replica_env(database_url, cluster.url, TEST_RULES, data)
    done = await asyncio.to_thread(
        subprocess.run, [DELIGHT, "keys", "revoke", key_id], env=env, capture_output=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    return done.stdout.decode()


def key_id(key: str) -> str:
    return key.split("_")[1]


async def test_events_are_recorded_exactly_once_while_sentinel_fails_the_redis_primary_over(
    cluster: Cluster,
    served: Replica,
    sessionmaker: async_sessionmaker[AsyncSession],
    database_url: str,
    tmp_path: Path,
) -> None:
    load_keys = [await new_key(sessionmaker, EVENTS_WRITE) for _ in range(IN_FLIGHT * KEYS_EACH)]
    limited = await new_key(sessionmaker, EVENTS_WRITE)
    old, new = cluster.primary.address, cluster.replica.address
    # The key check's lean client, made as the service makes it: it must find the new master by itself.
    lean_owner = connect(cluster.url, timeout=1.0)
    lean = LeanRedis.for_client(lean_owner, timeout=1.0)
    assert lean is not None
    answers: list[Answer] = []
    readings: list[Reading] = []
    try:
        assert await lean.execute(encode("SET", "delight:test:lean", "before", "EX", 120)) == b"OK"
        limits = httpx.Limits(max_connections=IN_FLIGHT + 10, keepalive_expiry=IDLE_CONNECTION_SECONDS)
        async with httpx.AsyncClient(timeout=30, limits=limits) as http:
            first = await ready(http, served.base)
            assert first.status == 200, first
            assert first.body["status"] == "ready", first
            assert first.body["sentinel"] == {
                "service": SERVICE, "master": old, "problem": None, "failovers": 0, "previous": None,
                "changed_at": None,
            }  # fmt: skip

            stop_load, stop_watch = asyncio.Event(), asyncio.Event()
            began = time.monotonic()
            load = asyncio.create_task(drive(http, served.base, load_keys, stop_load, answers))
            watch = asyncio.create_task(watch_readiness(http, served.base, stop_watch, readings))
            try:
                await asyncio.sleep(KILL_AFTER)
                cluster.primary.process.kill()
                killed_at = time.monotonic()
                promoted_at = await promoted(cluster)
                await asyncio.sleep(max(LOAD_SECONDS - (time.monotonic() - began), AFTER_PROMOTION))
            finally:
                stop_load.set()
                stop_watch.set()
                await asyncio.gather(load, watch)
            after_load = await ready(http, served.base)

            # Every event sent while Redis changed hands, sent again: a replay, with the same awards.
            switching = [a for a in answers if killed_at - 0.5 <= a.sent_at <= promoted_at + 0.5]
            replays = await asyncio.gather(
                *(post(http, served.base, a.key, purchase(a.event_id, a.customer_id, 120.0)) for a in switching)
            )

            # The shared key cache works on the new master: the key's entry is there, the command line's client
            # finds the new master to mark the key revoked, and the service refuses the key.
            victim = load_keys[0]
            entry = f"delight:key:{key_id(victim)}"
            used = await post(http, served.base, victim, purchase("fo-victim", "fc-victim"))
            assert used.status == 201, used
            with cluster.replica.client() as new_master:
                cached = new_master.get(entry)
            assert cached is not None
            assert cached != b"revoked"
            said = await revoke_with_the_command_line(key_id(victim), database_url, cluster, tmp_path)
            assert f"Key {key_id(victim)} revoked." in said, said
            with cluster.replica.client() as new_master:
                assert new_master.get(entry) == b"revoked"
            refused = await post(http, served.base, victim, purchase("fo-revoked", "fc-victim"))
            assert is_problem(refused, 401), refused

            # The rate limit counts on the new master: one window's worth goes through, the next one is refused.
            if time.time() % 60 > 55:  # all of it within one window
                await asyncio.sleep(61 - time.time() % 60)
            window = RateLimiter.counter(key_id(limited), time.time())
            gate = asyncio.Semaphore(IN_FLIGHT)

            async def limited_post(i: int) -> Answer:
                async with gate:
                    return await post(http, served.base, limited, purchase(f"fo-limited-{i}", f"fc-{i % CUSTOMERS}"))

            bounded = await asyncio.gather(*(limited_post(i) for i in range(RATE_LIMIT + 1)))
            with cluster.replica.client() as new_master:
                counted = new_master.get(window)

        # Rule reloads travel on the new master: the service's listener has subscribed there again.
        def listeners() -> int:
            with cluster.replica.client() as new_master:
                return int(new_master.pubsub_numsub(CHANNEL)[0][1])

        for _ in range(30):
            if listeners():
                break
            await asyncio.sleep(0.1)
        assert listeners() == 1

        # The lean client follows the Sentinels to the new master, which holds what the old one had.
        seen = None
        for _ in range(20):
            with contextlib.suppress(redis.RedisError):
                seen = await lean.execute(encode("GET", "delight:test:lean"))
                break
            await asyncio.sleep(0.1)
        assert seen == b"before", seen
        assert await lean.execute(encode("SET", "delight:test:lean", "after", "EX", 120)) == b"OK"
        with cluster.replica.client() as new_master:
            assert new_master.get("delight:test:lean") == b"after"
        followed = sentinel_master(lean_owner)
        assert followed is not None
        assert followed.address is not None
        assert followed.previous is not None
        assert (shown(followed.address), shown(followed.previous), followed.failovers) == (new, old, 1)
    finally:
        await lean.close()
        await close(lean_owner)

    during = [a for a in answers if killed_at <= a.sent_at <= promoted_at]
    summary = json.dumps(
        {
            "events": len(answers),
            "statuses": Counter(a.status for a in answers),
            "sent while the Sentinels switched": len(during),
            "switch seconds": round(promoted_at - killed_at, 2),
            "slowest s": max(round(a.seconds, 2) for a in answers),
            "median s before, during, after": [
                round(statistics.median(a.seconds for a in part), 3) if part else None
                for part in (
                    [a for a in answers if a.sent_at < killed_at],
                    during,
                    [a for a in answers if a.sent_at > promoted_at],
                )
            ],
            "readiness": [(round(r.at - killed_at, 2), r.status, r.body) for r in readings if r.at >= killed_at][:12],
        },
        default=str,
    )
    print(summary)

    # Every event was taken, at once, also while Redis had no master: Redis is a cache here, never the truth.
    assert len(during) > IN_FLIGHT, summary
    failed = [str(a) for a in answers if a.status != 201 or a.body.get("duplicate") is not False]
    assert not failed, "\n".join(failed[:10]) + "\n" + summary
    slow = [str(a) for a in answers if a.seconds > FAST]
    assert not slow, "\n".join(slow[:10]) + "\n" + summary
    first_answers = {a.event_id: a for a in answers}
    wrong_replays = [
        f"{a.event_id}: {r.status} {str(r.body)[:200]}"
        for a, r in zip(switching, replays, strict=True)
        if r.status != 200 or r.body["duplicate"] is not True or r.body["awards"] != a.body["awards"]
    ]
    assert switching
    assert not wrong_replays, wrong_replays[:10]

    # What PostgreSQL holds: each answered event exactly once, each customer's purchases counted once each.
    statuses = Counter(a.status for a in bounded)
    assert statuses == {201: RATE_LIMIT, 429: 1}, statuses
    [limited_out] = [a for a in bounded if a.status == 429]
    assert is_problem(limited_out, 429), limited_out
    assert counted == str(RATE_LIMIT + 1).encode(), counted
    taken = [a for a in [*answers, used, *bounded] if a.status == 201]
    connection = await asyncpg.connect(**asyncpg_connect_args(database_url))
    try:
        stored = Counter(
            r["event_id"] for r in await connection.fetch("SELECT event_id FROM events WHERE event_id LIKE 'fo-%'")
        )
        profiles = {
            r["customer_id"]: r["purchase_count"]
            for r in await connection.fetch("SELECT customer_id, purchase_count FROM customers")
        }
        third = Counter(
            r["customer_id"]
            for r in await connection.fetch("SELECT customer_id FROM awards WHERE rule_id = 'points-on-third'")
        )
    finally:
        await connection.close()
    assert stored == Counter(a.event_id for a in taken), {
        "missing": sorted(set(first_answers) - set(stored))[:10],
        "more than once": [e for e, n in stored.items() if n > 1][:10],
        "not answered 201": sorted(set(stored) - {a.event_id for a in taken})[:10],
    }
    assert profiles == Counter(a.customer_id for a in taken)
    assert third == {c: 1 for c, n in Counter(a.customer_id for a in taken).items() if n >= 3}

    # Readiness stayed 200 (PostgreSQL was there), said Redis was missing while it was, and names the new master.
    assert all(r.status == 200 for r in readings), [r for r in readings if r.status != 200][:3]
    switch = [r.body for r in readings if killed_at <= r.at <= promoted_at]
    assert any(b["status"] == "degraded" and b["redis"].startswith("unreachable") for b in switch), summary
    # The master it names goes from the old one to none (the Sentinels agree it is down) to the new one, only.
    named = [r.body["sentinel"]["master"] for r in readings if r.at >= killed_at]
    order = {old: 0, None: 1, new: 2}
    assert all(name in order for name in named), named
    assert [order[name] for name in named] == sorted(order[name] for name in named), named
    assert after_load.status == 200, after_load
    assert after_load.body["status"] == "ready", after_load
    sentinel = after_load.body["sentinel"]
    assert (sentinel["master"], sentinel["previous"], sentinel["failovers"], sentinel["problem"]) == (new, old, 1, None)
    assert sentinel["changed_at"], after_load
    changes = [json.loads(line) for line in served.log.read_text().splitlines() if "redis_master_changed" in line]
    assert [(c["master"], c["previous"]) for c in changes] == [(new, old)], changes
