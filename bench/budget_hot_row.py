"""Does a campaign budget shared by every event serialise the service?

Runs `delight serve` twice under the same load — once with a rule pack whose
campaign has no budget, once with the same pack plus a budget that every event
draws from (large enough never to run out) — and prints throughput and latency
for both, and their ratio. The target: with the budget, at least 70% of the
throughput without.

    .venv/bin/python bench/budget_hot_row.py [--events 3000] [--concurrency 32] [--workers 2]

Without DELIGHT_DATABASE_URL / DELIGHT_REDIS_URL each run uses fresh embedded
servers; with them, each run uses a fresh database created on that server.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from load import cpu_seconds

DELIGHT = str(Path(sys.executable).parent / "delight")
CATALOG = "gifts:\n  - id: mug\n    name: Mug\n    unit_cost: 1.00\n"
CAMPAIGN = """\
campaign: hot
{budget}
rules:
  - id: every-purchase
    when: type == "purchase"
    award: {{points: 10}}
"""
SETTINGS = "seed: bench\npoint_value: 0.01\n"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_rules(directory: Path, budget: str) -> None:
    directory.mkdir(parents=True)
    (directory / "catalog.yaml").write_text(CATALOG)
    (directory / "settings.yaml").write_text(SETTINGS)
    (directory / "hot.yaml").write_text(CAMPAIGN.format(budget=budget))


async def drive(base: str, key: str, events: int, concurrency: int, prefix: str) -> tuple[float, list[float]]:
    latencies: list[float] = []
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(events):
        queue.put_nowait(i)
    headers = {"Authorization": f"Bearer {key}"}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async with httpx.AsyncClient(base_url=base, headers=headers, limits=limits, timeout=30) as client:

        async def worker() -> None:
            while not queue.empty():
                i = queue.get_nowait()
                event = {
                    "event_id": f"{prefix}-{i}",
                    "type": "purchase",
                    "customer_id": f"c-{i % 5000}",
                    "occurred_at": "2026-03-01T10:00:00Z",
                    "channel": "pos",
                    "order": {"order_id": f"o-{prefix}-{i}", "total": 25.0, "currency": "EUR"},
                }
                started = time.perf_counter()
                response = await client.post("/v1/events", json=event)
                latencies.append(time.perf_counter() - started)
                if response.status_code != 201:
                    raise RuntimeError(f"{response.status_code}: {response.text}")

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - started, latencies


def run(name: str, budget: str, args: argparse.Namespace, root: Path) -> dict[str, float]:
    rules = root / name / "rules"
    write_rules(rules, budget)
    env = {k: v for k, v in os.environ.items() if k not in ("DELIGHT_RULES_DIR", "DELIGHT_DATA_DIR")}
    env.update(DELIGHT_RULES_DIR=str(rules), DELIGHT_DATA_DIR=str(root / name / "data"), DELIGHT_LOG_LEVEL="WARNING")
    if os.environ.get("DELIGHT_DATABASE_URL"):
        database = f"delight_bench_{name}_{os.getpid()}"
        admin = os.environ["DELIGHT_DATABASE_URL"]
        subprocess.run([sys.executable, "-c", _CREATE_DB, admin, database], check=True, env=env, capture_output=True)
        env["DELIGHT_DATABASE_URL"] = admin.rsplit("/", 1)[0] + "/" + database
    created = subprocess.run(
        [DELIGHT, "keys", "create", "--name", "bench", "--scopes", "events:write"],
        env=env,
        capture_output=True,
        check=True,
        timeout=120,
    )
    key = created.stdout.decode().strip().splitlines()[-1]
    port = free_port()
    server = subprocess.Popen(
        [DELIGHT, "serve", "--port", str(port), "--workers", str(args.workers)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{base}/health/ready", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                raise RuntimeError(f"{name}: server did not start")
            time.sleep(0.3)
        asyncio.run(drive(base, key, args.warmup, args.concurrency, f"warm-{name}"))
        cpu_before = cpu_seconds([server.pid])
        elapsed, latencies = asyncio.run(drive(base, key, args.events, args.concurrency, name))
        cpu = cpu_seconds([server.pid]) - cpu_before
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
    latencies.sort()
    return {
        "throughput": args.events / elapsed,
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99) - 1] * 1000,
        "server_cpu_ms_per_event": cpu / args.events * 1000,
    }


_CREATE_DB = """
import asyncio, sys, asyncpg
from sqlalchemy.engine import make_url
url = make_url(sys.argv[1])
async def main():
    conn = await asyncpg.connect(user=url.username, password=url.password, host=url.query.get("host") or url.host,
                                 port=url.port, database=url.database)
    await conn.execute(f'CREATE DATABASE "{sys.argv[2]}"')
    await conn.close()
asyncio.run(main())
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=3000)
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="delight-bench-") as tmp:
        root = Path(tmp)
        results = {
            "no budget": run("plain", "", args, root),
            "shared budget": run("budget", "budget: {awards: 100000000, cost: 100000000.00}", args, root),
        }
    print(
        f"# {platform.node()}, {os.cpu_count()} CPUs, {args.events} events at concurrency {args.concurrency}, "
        f"{args.workers} workers"
    )
    print(f"{'':15} {'events/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'server CPU ms/event':>20}")
    for name, r in results.items():
        figures = f"{r['throughput']:9.0f} {r['p50_ms']:8.1f} {r['p99_ms']:8.1f} {r['server_cpu_ms_per_event']:20.2f}"
        print(f"{name:15} {figures}")
    ratio = results["shared budget"]["throughput"] / results["no budget"]["throughput"]
    print(f"shared budget / no budget throughput: {ratio:.2f} (target >= 0.70)")


if __name__ == "__main__":
    main()
