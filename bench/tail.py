"""Where does the tail come from? One checkout driven at a fixed rate in short slices, each with what
PostgreSQL was doing meanwhile.

``load.py`` reports one p99 per 20-second run; a run's p99 is made by its
worst few seconds, and which seconds those are is what this shows. The
checkout is served as ``ab.py`` serves a side (``delight serve --workers N``,
its own embedded PostgreSQL and Redis, the bench's rule pack and seeded
customers), driven at full speed for ``--warmup`` seconds (so the tables
are as large as in ``load.py``'s half-rate runs), then in ``--slices``
slices of ``--seconds`` with every connection pausing ``--pause-ms`` before
each request (55 ms from 32 connections is about half of what it takes at
full speed here). Every 50 ms PostgreSQL's activity is sampled: which tables
autovacuum is on, how many backends wait to flush the WAL behind
another (``LWLock:WALWrite``), and whether one is writing a new WAL file. Each slice prints its rate,
p50, p99 and maximum, and what was seen during it.

    .venv/bin/python bench/tail.py [CHECKOUT] [--warmup 60] [--slices 24] [--seconds 5] [--pause-ms 55]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
from ab import Side, start
from load import free_port, wrk
from rulepack import write_pack

# The waits counted: queued behind another backend's WAL flush, and writing a new WAL file.
WAL_WAITS = ("LWLock:WALWrite", "IO:WalInitWrite", "IO:WalInitSync")


@dataclass
class Sample:
    at: float
    autovacuum: set[str]
    waits: Counter[str] = field(default_factory=Counter)


class Sampler:
    """Samples ``pg_stat_activity`` every 50 ms on a thread of its own until stopped."""

    def __init__(self, host: str) -> None:
        self.host = host
        self.samples: list[Sample] = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    async def _run(self) -> None:
        connection = await asyncpg.connect(host=self.host, user="postgres", database="delight")
        try:
            while not self.stopping.is_set():
                rows = await connection.fetch(
                    """
                    SELECT backend_type, query, wait_event_type || ':' || wait_event AS wait
                    FROM pg_stat_activity
                    WHERE pid <> pg_backend_pid() AND (state = 'active' OR backend_type = 'autovacuum worker')
                    """
                )
                sample = Sample(time.time(), set())
                for row in rows:
                    if row["backend_type"] == "autovacuum worker" and row["query"]:
                        sample.autovacuum.add(row["query"].removeprefix("autovacuum: ").split(".")[-1])
                    elif row["backend_type"] == "client backend" and row["wait"] in WAL_WAITS:
                        sample.waits[row["wait"]] += 1
                self.samples.append(sample)
                await asyncio.sleep(0.05)
        finally:
            await connection.close()

    def between(self, start: float, end: float) -> list[Sample]:
        return [s for s in self.samples if start <= s.at <= end]


def describe(samples: list[Sample]) -> str:
    """What PostgreSQL was doing in a slice: tables autovacuumed, and the worst WAL queue seen."""
    tables = sorted(set().union(*(s.autovacuum for s in samples))) if samples else []
    queued = max((s.waits["LWLock:WALWrite"] for s in samples), default=0)
    init = sum(s.waits["IO:WalInitWrite"] + s.waits["IO:WalInitSync"] for s in samples)
    parts = []
    if tables:
        parts.append("autovacuum: " + ", ".join(tables))
    if queued >= 5:
        parts.append(f"{queued} backends queued to flush the WAL")
    if init:
        parts.append(f"a new WAL file written in {init} samples")
    return "; ".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkout", type=Path, nargs="?", default=Path("."))
    parser.add_argument("--warmup", type=float, default=60, help="seconds at full speed first")
    parser.add_argument("--slices", type=int, default=24)
    parser.add_argument("--seconds", type=float, default=5, help="length of each slice")
    parser.add_argument("--pause-ms", type=int, default=55)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--customers", type=int, default=10_000)
    parser.add_argument("--campaigns", type=int, default=20)
    parser.add_argument("--rules-per-campaign", type=int, default=5)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("bench/tail.py needs wrk on PATH (Debian: apt-get install wrk)")
    code = args.checkout.resolve()
    with tempfile.TemporaryDirectory(prefix="delight-tail-") as tmp_name, contextlib.ExitStack() as stack:
        tmp = Path(tmp_name)
        data = tmp / "data"
        data.mkdir()
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("DELIGHT_")},
            "PYTHONPATH": str(code),
            "DELIGHT_DATA_DIR": str(data),
            "DELIGHT_RULES_DIR": str(write_pack(tmp / "rules", args.campaigns, args.rules_per_campaign)),
            "DELIGHT_RATE_LIMIT": "1000000000",
            "BENCH_CUSTOMERS": str(args.customers),
            "AB_WORKERS": str(args.workers),
        }
        side = Side("tail", code, free_port(), data, env)
        start(side, stack, args.customers)
        sampler = Sampler(str(side.socket_dir()))
        sampler.thread.start()
        stack.callback(sampler.stopping.set)
        warm = wrk(side.port, env, args.concurrency, args.warmup, "warm")
        rate = warm["requests"] / (warm["duration_us"] / 1e6)
        print(f"Warm-up: {args.warmup:.0f} s at full speed, {rate:,.0f} events/s")
        print("| slice | events/s | p50 ms | p99 ms | max ms | meanwhile |")
        print("|---:|---:|---:|---:|---:|---|")
        p99s, quiet = [], []
        for n in range(1, args.slices + 1):
            began = time.time()
            result = wrk(side.port, env, args.concurrency, args.seconds, f"slice{n}-{time.time_ns()}", args.pause_ms)
            if result["non_2xx"] or result["socket_errors"]:
                sys.exit(f"failed requests: {result}")
            seen = sampler.between(began, time.time())
            p99 = result["p99_us"] / 1000
            p99s.append(p99)
            if not any(s.autovacuum for s in seen):
                quiet.append(p99)
            rate = result["requests"] / (result["duration_us"] / 1e6)
            print(
                f"| {n} | {rate:,.0f} | {result['p50_us'] / 1000:.1f} | {p99:.1f} | {result['max_us'] / 1000:.1f} "
                f"| {describe(seen)} |",
                flush=True,
            )
    print(
        f"\nMedian p99 over the slices: {statistics.median(p99s):.1f} ms; over the {len(quiet)} without autovacuum: "
        f"{statistics.median(quiet) if quiet else float('nan'):.1f} ms; the worst slice: {max(p99s):.1f} ms."
    )
    print(f"Command: `.venv/bin/python bench/tail.py {' '.join(sys.argv[1:])}`")


if __name__ == "__main__":
    main()
