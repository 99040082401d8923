"""How many events a second does Delight take, how fast does it answer, and against what?

One command, on one machine, in one run:

1. starts PostgreSQL and Redis (embedded, or the servers in
   ``DELIGHT_DATABASE_URL`` / ``DELIGHT_REDIS_URL``, in a fresh database);
2. writes a rule pack of 100 rules over 20 campaigns with chance draws,
   limits, budgets and holdouts (``rulepack.py``) and seeds 10,000 customers
   with purchase histories, segments and favourite categories;
3. **baseline**: serves ``baseline_app.py`` (Litestar, one asyncpg ``INSERT``
   per request) under the same server and worker count;
4. **Delight**: runs ``delight serve --workers N`` exactly as production does;
5. drives the baseline and Delight at full speed, back to back, in each of
   ``--rounds`` rounds (3 unless told), then Delight at half its median
   maximum as many times: consecutive runs of the same code differ by 10-15%
   in throughput and by more in p99, so one pair would say more about the
   moment than about the code;
6. prints throughput, p50/p95/p99 latency and CPU per event (the server's
   processes, and the embedded PostgreSQL's and Redis's, from /proc) for every
   run, and the medians: Delight's share of the baseline's throughput (each
   round's pair compared) and the p99 at half rate, and the share of stored
   events that issued or held out something; ``--record`` writes them into
   ``bench/RESULTS.md`` in place of the previous run with the same pack.

The load generator is ``wrk`` (Debian package ``wrk``) with ``load.lua``: one
thread, a fixed number of keep-alive connections, a fresh event per request
(four purchases in five, the rest interactions), on the same machine.
Targets: Delight at least 40% of the baseline's throughput with the standard
pack and 35% with ``--pack award-heavy``; p99 at most 25 ms at half of
Delight's maximum.

    .venv/bin/python bench/load.py [--workers 2] [--concurrency 32] [--duration 20] [--rounds 3] [--record]
    .venv/bin/python bench/load.py --chance-scale 0.1   # the same rules winning ten times less often
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import platform
import random
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import httpx
import psutil
from rulepack import CATEGORIES, SEGMENTS, write_pack
from sqlalchemy.engine import make_url

from service.lib.db import asyncpg_connect_args, upgrade_database
from service.lib.embedded import start_postgres, start_redis

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
RESULTS = HERE / "RESULTS.md"
TARGETS = {"standard": 0.40, "award-heavy": 0.35}
"""The least share of the baseline's throughput Delight should reach, by pack."""


@dataclass
class Rounds:
    baseline: list[Run] = field(default_factory=list)
    full: list[Run] = field(default_factory=list)
    half: list[Run] = field(default_factory=list)


@dataclass
class Run:
    name: str
    requests: int
    seconds: float
    non_2xx: int
    errors: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    app_cpu_ms: float  # per event, the server's processes
    db_cpu_ms: float  # per event, PostgreSQL's and Redis's processes (embedded ones only)
    wal_bytes: float  # per event, the WAL PostgreSQL wrote meanwhile

    @property
    def throughput(self) -> float:
        return self.requests / self.seconds

    def row(self) -> str:
        return (
            f"| {self.name} | {self.throughput:,.0f} | {self.p50_ms:.1f} | {self.p95_ms:.1f} | {self.p99_ms:.1f} "
            f"| {self.app_cpu_ms:.2f} | {self.db_cpu_ms:.2f} | {self.wal_bytes:,.0f} | {self.non_2xx + self.errors} |"
        )


HEADER = (
    "| run | events/s | p50 ms | p95 ms | p99 ms | server CPU ms/event | PostgreSQL + Redis CPU ms/event "
    "| WAL bytes/event | failed |\n"
    "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pids: list[int]) -> float:
    """User and system CPU of these processes and all their children, alive now."""
    total = 0.0
    seen: set[int] = set()
    for pid in pids:
        try:
            parent = psutil.Process(pid)
            procs = [parent, *parent.children(recursive=True)]
        except psutil.NoSuchProcess:
            continue
        for proc in procs:
            if proc.pid in seen:
                continue
            seen.add(proc.pid)
            try:
                times = proc.cpu_times()
                total += times.user + times.system
            except psutil.NoSuchProcess:
                pass
    return total


def postmaster_pid(data_dir: Path | None) -> int | None:
    """The PostgreSQL server's pid, when it runs on this machine and we know its data directory."""
    if data_dir is None:
        return None
    pidfile = next(data_dir.rglob("postmaster.pid"), None)
    return int(pidfile.read_text().split()[0]) if pidfile else None


def wrk(port: int, env: dict[str, str], concurrency: int, seconds: float, prefix: str, delay_ms: int = 0) -> dict:
    command = ["wrk", "-t1", f"-c{concurrency}", f"-d{max(1, round(seconds))}s", "--timeout", "10s"]
    command += ["-s", str(HERE / "load.lua")]
    run_env = {**env, "BENCH_PREFIX": prefix, "BENCH_DELAY_MS": str(delay_ms)}
    out = subprocess.run(
        [*command, f"http://127.0.0.1:{port}"], env=run_env, capture_output=True, text=True, check=True
    ).stdout
    line = next(line for line in out.splitlines() if line.startswith("RESULT "))
    return dict(json.loads(line.removeprefix("RESULT ")))


def measure(
    name: str,
    port: int,
    env: dict[str, str],
    args: argparse.Namespace,
    watch: list[int],
    db_pids: list[int],
    delay_ms: int = 0,
    seconds: float | None = None,
) -> Run:
    app_before = cpu_seconds(watch)
    db_before = cpu_seconds(db_pids)
    wal_before = asyncio.run(wal_position(env["BENCH_PG_DSN"]))
    result = wrk(port, env, args.concurrency, seconds or args.duration, f"run{time.time_ns()}", delay_ms)
    app_cpu = cpu_seconds(watch) - app_before
    db_cpu = (cpu_seconds(db_pids) - db_before) if db_pids else float("nan")
    wal = asyncio.run(wal_position(env["BENCH_PG_DSN"])) - wal_before
    requests = max(result["requests"], 1)
    return Run(
        name=name,
        requests=result["requests"],
        seconds=result["duration_us"] / 1e6,
        non_2xx=result["non_2xx"],
        errors=result["socket_errors"],
        p50_ms=result["p50_us"] / 1000,
        p95_ms=result["p95_us"] / 1000,
        p99_ms=result["p99_us"] / 1000,
        app_cpu_ms=app_cpu / requests * 1000,
        db_cpu_ms=db_cpu / requests * 1000,
        wal_bytes=wal / requests,
    )


async def wal_position(dsn: str) -> int:
    """Bytes of WAL the server has written so far."""
    connection = await asyncpg.connect(dsn)
    try:
        return int(await connection.fetchval("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn"))
    finally:
        await connection.close()


@contextlib.contextmanager
def serving(command: list[str], env: dict[str, str], port: int, log: Path, cwd: Path | None = None) -> Iterator[int]:
    """Run a server until the block ends; yields its pid once it answers on ``port``."""
    output = log.open("wb")
    # A session of its own, so that stopping it stops its workers too, whatever happened.
    server = subprocess.Popen(
        command, env=env, cwd=cwd, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{port}/", timeout=2)
                break
            except httpx.TransportError:
                pass
            if server.poll() is not None:
                raise RuntimeError(f"{shlex.join(command)} exited: {log.read_text()[-2000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{shlex.join(command)} did not start")
            time.sleep(0.3)
        yield server.pid
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            server.wait(timeout=60)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGKILL)  # workers that outlived their parent
        output.close()


async def seed(url: str, customers: int) -> None:
    """Customers with histories the pack's conditions look at, and the baseline's table."""
    rng = random.Random(7)
    at = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
    rows = []
    for i in range(customers):
        count = rng.randint(0, 12)
        spend = round(count * rng.uniform(20, 120), 2)
        last = at - dt.timedelta(days=rng.randint(1, 120)) if count else None
        categories = {rng.choice(CATEGORIES): spend} if count else {}
        attributes = {"first_name": f"Customer {i}", "segments": rng.sample(SEGMENTS, rng.randint(0, 2))}
        rows.append((f"c-{i}", count, spend, last, last, json.dumps(categories), json.dumps(attributes)))
    connection = await asyncpg.connect(**asyncpg_connect_args(make_url(url)))
    try:
        await connection.executemany(
            "INSERT INTO customers (customer_id, purchase_count, lifetime_spend, first_purchase_at, "
            "last_purchase_at, category_spend, attributes) VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7::jsonb)",
            rows,
        )
        await connection.execute(
            "CREATE TABLE baseline_events (event_id text PRIMARY KEY, customer_id text NOT NULL, "
            "payload jsonb NOT NULL, received_at timestamptz NOT NULL DEFAULT now())"
        )
    finally:
        await connection.close()


async def fresh_database(admin_url: str, name: str) -> str:
    url = make_url(admin_url)
    connection = await asyncpg.connect(**asyncpg_connect_args(url))
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}"')
        await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()
    return url.set(database=name).render_as_string(hide_password=False)


async def exposed_share(url: str) -> tuple[int, float]:
    """How many events Delight stored, and the share of them that issued or held out something."""
    connection = await asyncpg.connect(**asyncpg_connect_args(url))
    try:
        events, exposed = await connection.fetchrow(
            "SELECT (SELECT count(*) FROM events), (SELECT count(DISTINCT event_id) FROM exposures)"
        )
    finally:
        await connection.close()
    return events, exposed / events if events else 0.0


def machine() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = psutil.virtual_memory().total / 2**30
    return f"{os.cpu_count()} CPUs ({model}), {memory:.0f} GiB, {platform.system()} {platform.release()}"


def server_commands(args: argparse.Namespace, baseline_port: int, delight_port: int) -> tuple[list[str], list[str]]:
    """How the baseline and Delight are served: the same server, the same workers."""
    workers = str(args.workers)
    if args.server == "granian":
        common = [str(BIN / "granian"), "--interface", "asgi", "--factory", "--host", "127.0.0.1"]
        common += ["--workers", workers, "--loop", "uvloop", "--no-access-log"]
        return (
            [*common, "--port", str(baseline_port), "baseline_app:create_app"],
            [*common, "--port", str(delight_port), "service.app:create_app"],
        )
    baseline = [str(BIN / "uvicorn"), "--factory", "baseline_app:create_app", "--host", "127.0.0.1"]
    baseline += ["--port", str(baseline_port), "--workers", workers, "--no-access-log", "--log-level", "warning"]
    return baseline, [str(BIN / "delight"), "serve", "--port", str(delight_port), "--workers", workers]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--concurrency", type=int, default=32, help="wrk's keep-alive connections")
    parser.add_argument("--duration", type=float, default=20, help="seconds per measured run")
    parser.add_argument("--warmup", type=float, default=5, help="seconds of load on each server before measuring")
    parser.add_argument(
        "--rounds", type=int, default=3, help="pairs of full-speed runs (baseline, Delight), then half-rate runs"
    )
    parser.add_argument("--customers", type=int, default=10_000)
    parser.add_argument("--campaigns", type=int, default=20)
    parser.add_argument("--rules-per-campaign", type=int, default=5)
    parser.add_argument(
        "--chance-scale",
        type=float,
        default=1.0,
        help="multiplies every rule's chance; 1 (the benchmark) has about half the events win or be held out",
    )
    parser.add_argument(
        "--pack",
        choices=("standard", "award-heavy"),
        default="standard",
        help="award-heavy adds points on every purchase (10%% held out) and drops the fatigue cap",
    )
    parser.add_argument("--server", choices=("uvicorn", "granian"), default="uvicorn")
    parser.add_argument("--record", action="store_true", help=f"write the figures into {RESULTS.name}")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("bench/load.py needs wrk on PATH (Debian: apt-get install wrk)")

    with tempfile.TemporaryDirectory(prefix="delight-load-") as tmp_name:
        tmp = Path(tmp_name)
        servers = []
        database_url = os.environ.get("DELIGHT_DATABASE_URL")
        redis_url = os.environ.get("DELIGHT_REDIS_URL")
        db_dir = None
        try:
            if database_url:
                database_url = asyncio.run(fresh_database(database_url, f"delight_bench_load_{os.getpid()}"))
            else:
                postgres = start_postgres(tmp / "pg", database="postgres")
                servers.append(postgres)
                database_url, db_dir = postgres.url, tmp / "pg"
            redis_pid = None
            if not redis_url:
                redis = start_redis(tmp / "redis")
                servers.append(redis)
                redis_url, redis_pid = redis.url, redis.client.pid
            upgrade_database(database_url)
            asyncio.run(seed(database_url, args.customers))
            rules = write_pack(
                tmp / "rules",
                args.campaigns,
                args.rules_per_campaign,
                chance_scale=args.chance_scale,
                award_heavy=args.pack == "award-heavy",
            )
            env = {
                **os.environ,
                "DELIGHT_DATABASE_URL": database_url,
                "DELIGHT_REDIS_URL": redis_url,
                "DELIGHT_RULES_DIR": str(rules),
                "DELIGHT_DATA_DIR": str(tmp / "data"),
                "DELIGHT_RATE_LIMIT": "1000000000",  # the limiter runs, but never refuses the load
                "BENCH_PG_DSN": make_url(database_url).set(drivername="postgresql").render_as_string(False),
                "BENCH_CUSTOMERS": str(args.customers),
                "PYTHONPATH": str(HERE),
            }
            created = subprocess.run(
                [str(BIN / "delight"), "keys", "create", "--name", "bench", "--scopes", "events:write"],
                env=env,
                capture_output=True,
                text=True,
                check=True,
                timeout=120,
            )
            env["BENCH_KEY"] = created.stdout.strip().splitlines()[-1]
            db_pids = [pid for pid in (postmaster_pid(db_dir), redis_pid) if pid]
            rounds = run_all(args, env, db_pids, tmp)
            exposed = asyncio.run(exposed_share(database_url))
        finally:
            for server in servers:
                server.stop()
    report(args, rounds, exposed)


def run_all(args: argparse.Namespace, env: dict[str, str], db_pids: list[int], tmp: Path) -> Rounds:
    """``args.rounds`` rounds of the baseline and Delight at full speed, back to back, then as many runs of
    Delight at half the median maximum. Both servers stay up throughout; only the one driven is busy."""
    rounds = Rounds()
    baseline_port, delight_port = free_port(), free_port()
    baseline_cmd, delight_cmd = server_commands(args, baseline_port, delight_port)
    if args.server == "granian":
        metrics = tmp / "metrics"
        metrics.mkdir()
        env = {**env, "PROMETHEUS_MULTIPROC_DIR": str(metrics)}
    print(HEADER, file=sys.stderr)
    with (
        serving(baseline_cmd, env, baseline_port, tmp / "baseline.log", cwd=HERE) as baseline_pid,
        serving(delight_cmd, env, delight_port, tmp / "delight.log") as delight_pid,
    ):
        wrk(baseline_port, env, args.concurrency, args.warmup, "warm-baseline")
        wrk(delight_port, env, args.concurrency, args.warmup, "warm-delight")
        for n in range(1, args.rounds + 1):
            suffix = f" ({n})" if args.rounds > 1 else ""
            baseline = measure(f"baseline: one INSERT{suffix}", baseline_port, env, args, [baseline_pid], db_pids)
            rounds.baseline.append(baseline)
            print(baseline.row(), file=sys.stderr)
            full = measure(f"Delight, full speed{suffix}", delight_port, env, args, [delight_pid], db_pids)
            rounds.full.append(full)
            print(full.row(), file=sys.stderr)
            if full.non_2xx or full.errors:
                failures = [line for line in (tmp / "delight.log").read_text().splitlines() if not _succeeded(line)]
                sys.exit("Delight failed requests; its log ends:\n" + "\n".join(failures[-20:]))
        # Half the maximum rate: each connection pauses between requests. A short
        # calibration run learns the latency at that load, so the pause can allow for it.
        target = statistics.median(run.throughput for run in rounds.full) / 2
        cycle_ms = args.concurrency * 1000 / target
        probe = measure(
            "calibration", delight_port, env, args, [delight_pid], db_pids, int(cycle_ms), min(8.0, args.duration)
        )
        latency_ms = max(0.0, args.concurrency * 1000 / probe.throughput - cycle_ms)
        pause_ms = max(1, round(cycle_ms - latency_ms))
        for n in range(1, args.rounds + 1):
            suffix = f" ({n})" if args.rounds > 1 else ""
            half = measure(f"Delight, half rate{suffix}", delight_port, env, args, [delight_pid], db_pids, pause_ms)
            rounds.half.append(half)
            print(half.row(), file=sys.stderr)
    return rounds


def _succeeded(line: str) -> bool:
    """Whether a log line is neither a failed request nor a warning or error."""
    try:
        entry = json.loads(line)
    except ValueError:
        return False
    if not isinstance(entry, dict) or entry.get("level") in ("warning", "error", "critical"):
        return False
    return entry.get("event") != "request" or 200 <= entry.get("status", 0) < 300


def report(args: argparse.Namespace, rounds: Rounds, exposed: tuple[int, float]) -> None:
    ratios = [
        full.throughput / baseline.throughput for baseline, full in zip(rounds.baseline, rounds.full, strict=True)
    ]
    ratio = statistics.median(ratios)
    full_rate = statistics.median(run.throughput for run in rounds.full)
    half_rate = statistics.median(run.throughput for run in rounds.half)
    p99 = statistics.median(run.p99_ms for run in rounds.half)
    command = "bench/load.py " + " ".join(
        f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k not in ("record",)
    )
    of_runs = ""
    if args.rounds > 1:
        of_runs = f", the median of {args.rounds} rounds: " + ", ".join(f"{r:.0%}" for r in ratios)
    p99_runs = ""
    if args.rounds > 1:
        p99_runs = f", the median of {args.rounds} runs: " + ", ".join(f"{run.p99_ms:.1f}" for run in rounds.half)
    lines = [
        f"### {args.pack} pack: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, {args.server}, "
        f"{args.workers} workers, {args.concurrency} connections",
        "",
        f"Machine: {machine()}. Load generator: wrk on the same machine.",
        "",
        f"Command: `.venv/bin/python {command}`",
        "",
        HEADER,
        *(run.row() for pair in zip(rounds.baseline, rounds.full, strict=True) for run in pair),
        *(run.row() for run in rounds.half),
        "",
        f"- Delight's throughput is **{ratio:.0%}** of the baseline's{of_runs} (each round's pair measured back "
        f"to back; target at least {TARGETS[args.pack]:.0%}).",
        f"- At half its maximum ({half_rate:,.0f} events/s, {half_rate / full_rate:.0%} of {full_rate:,.0f}), "
        f"p99 is **{p99:.1f} ms**{p99_runs} (target at most 25 ms).",
        f"- {exposed[1]:.0%} of the {exposed[0]:,} events Delight stored issued or held out something.",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if args.record:
        record(args.pack, text)


def record(pack: str, text: str) -> None:
    """Put ``text`` in ``RESULTS.md`` between the pack's markers, in place of the run recorded there before."""
    begin, end = f"<!-- load.py {pack} -->", f"<!-- /load.py {pack} -->"
    results = RESULTS.read_text()
    if begin in results and end in results:
        head, rest = results.split(begin, 1)
        results = head + begin + "\n" + text + "\n" + end + rest.split(end, 1)[1]
    else:
        results = results.rstrip("\n") + f"\n\n{begin}\n{text}\n{end}\n"
    RESULTS.write_text(results)


if __name__ == "__main__":
    main()
