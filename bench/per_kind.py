"""What one event of each kind costs PostgreSQL: CPU time and WAL, for sizing a primary.

Starts embedded PostgreSQL and Redis, serves a one-rule pack with
``delight serve --workers 1`` (points for a purchase of 100 or more), and
posts events of one kind at a time, ``--events`` of each after a warm-up,
from ``--concurrency`` keep-alive connections. For each kind it reads the
CPU time of PostgreSQL's processes (from /proc) and the WAL written
(``pg_current_wal_lsn``) over the run, per event, with the projector on, as
production runs it: its share is in the figures. A checkpoint restarts
full-page images, so each kind runs right after one (``CHECKPOINT``), as the
first writes after any checkpoint would be.

    .venv/bin/python bench/per_kind.py [--events 3000] [--concurrency 8] [--repeats 3] [--record]

``--record`` writes the table into ``docs/scaling.md``, whose sizing rule
reads it.

The kinds: a purchase that wins nothing, a purchase that earns points, a
return of an earlier purchase, an interaction no rule looks at (its own
statement, committing alone), and a purchase posted again (a replay).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from load import BIN, cpu_seconds, free_port, machine, postmaster_pid, serving, wal_position
from sqlalchemy.engine import make_url

from service.lib.db import upgrade_database
from service.lib.embedded import start_postgres, start_redis

SCALING = Path(__file__).resolve().parent.parent / "docs" / "scaling.md"
RULE = """\
campaign: points
rules:
  - id: big-basket
    when: type == "purchase" and order.total >= 100
    award: {points: 10}
"""
SETTINGS = "seed: per-kind\n"
CATALOG = "gifts: []\n"

Event = Callable[[str, int], dict[str, Any]]


def _purchase(total: float) -> Event:
    def make(prefix: str, i: int) -> dict[str, Any]:
        return {
            "event_id": f"{prefix}-{i}",
            "type": "purchase",
            "customer_id": f"c-{i % 5000}",
            "occurred_at": "2026-12-01T10:00:00Z",
            "channel": "pos",
            "order": _order(f"{prefix}-o-{i}", total),
        }

    return make


def _order(order_id: str, total: float) -> dict[str, Any]:
    return {
        "order_id": order_id,
        "total": total,
        "currency": "EUR",
        "items": [{"sku": "SKU-1", "category": "home", "quantity": 1, "unit_price": total}],
    }


def _return(prefix: str, i: int) -> dict[str, Any]:
    """The refund of the purchase ``i`` of the setup posted for this run (``bought-<prefix>``)."""
    return {
        "event_id": f"{prefix}-{i}",
        "type": "return",
        "customer_id": f"c-{i % 5000}",
        "occurred_at": "2026-12-02T10:00:00Z",
        "channel": "pos",
        "order": _order(f"bought-{prefix}-o-{i}", 20.0),
    }


def _interaction(prefix: str, i: int) -> dict[str, Any]:
    return {
        "event_id": f"{prefix}-{i}",
        "type": "interaction",
        "customer_id": f"c-{i % 5000}",
        "occurred_at": "2026-12-01T10:00:00Z",
        "channel": "web",
        "name": "page_view",
    }


KINDS: dict[str, Event] = {
    "purchase, no award": _purchase(20.0),
    "purchase, points": _purchase(150.0),
    "return": _return,
    "interaction no rule reads": _interaction,
}


async def _post_all(url: str, key: str, events: list[dict[str, Any]], concurrency: int) -> int:
    """Post every event; raises on the first that is not stored or replayed."""
    queue = list(reversed(events))
    failed: list[str] = []

    async def worker(client: httpx.AsyncClient) -> None:
        while queue:
            response = await client.post("/v1/events", json=queue.pop())
            if response.status_code not in (200, 201):
                failed.append(f"{response.status_code} {response.text[:300]}")

    async with httpx.AsyncClient(base_url=url, headers={"authorization": f"Bearer {key}"}, timeout=30) as client:
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
    if failed:
        raise RuntimeError(f"{len(failed)} of {len(events)} events failed, the first: {failed[0]}")
    return len(events)


async def _checkpoint(dsn: str) -> None:
    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute("CHECKPOINT")
    finally:
        await connection.close()


def _measure(
    url: str, key: str, dsn: str, db_pids: list[int], events: list[dict[str, Any]], concurrency: int
) -> tuple[float, float]:
    asyncio.run(_checkpoint(dsn))
    time.sleep(0.5)  # the projector's last batch of the previous kind
    cpu_before, wal_before = cpu_seconds(db_pids), asyncio.run(wal_position(dsn))
    asyncio.run(_post_all(url, key, events, concurrency))
    time.sleep(1.0)  # the projector applies this kind's events
    cpu = cpu_seconds(db_pids) - cpu_before
    wal = asyncio.run(wal_position(dsn)) - wal_before
    return cpu / len(events) * 1000, wal / len(events)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=3000, help="events of each kind per run")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3, help="runs of each kind; medians are printed")
    parser.add_argument("--record", action="store_true", help="write the table into docs/scaling.md")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="delight-per-kind-") as tmp_name:
        tmp = Path(tmp_name)
        postgres = start_postgres(tmp / "pg", database="postgres")
        redis = start_redis(tmp / "redis")
        try:
            rules = tmp / "rules"
            rules.mkdir()
            (rules / "points.yaml").write_text(RULE)
            (rules / "settings.yaml").write_text(SETTINGS)
            (rules / "catalog.yaml").write_text(CATALOG)
            upgrade_database(postgres.url)
            env = {
                **os.environ,
                "DELIGHT_DATABASE_URL": postgres.url,
                "DELIGHT_REDIS_URL": redis.url,
                "DELIGHT_RULES_DIR": str(rules),
                "DELIGHT_DATA_DIR": str(tmp / "data"),
                "DELIGHT_RATE_LIMIT": "0",
                "DELIGHT_LOG_LEVEL": "WARNING",
            }
            created = subprocess.run(
                [str(BIN / "delight"), "keys", "create", "--name", "bench", "--scopes", "events:write"],
                env=env,
                capture_output=True,
                text=True,
                check=True,
                timeout=120,
            )
            key = created.stdout.strip().splitlines()[-1]
            dsn = make_url(postgres.url).set(drivername="postgresql").render_as_string(False)
            db_pids = [pid for pid in (postmaster_pid(tmp / "pg"),) if pid]
            port = free_port()
            command = [str(BIN / "delight"), "serve", "--workers", "1", "--port", str(port)]
            with serving(command, env, port, tmp / "serve.log"):
                url = f"http://127.0.0.1:{port}"
                asyncio.run(
                    _post_all(url, key, [_purchase(20.0)("setup", i) for i in range(args.events)], args.concurrency)
                )
                asyncio.run(_post_all(url, key, [_purchase(20.0)("warm", i) for i in range(1000)], args.concurrency))
                figures: dict[str, list[tuple[float, float]]] = {name: [] for name in [*KINDS, "replay"]}
                for repeat in range(args.repeats):
                    for number, (name, make) in enumerate(KINDS.items()):
                        prefix = f"r{repeat}-k{number}"
                        if make is _return:  # the purchases its events refund, not measured
                            bought = [_purchase(20.0)(f"bought-{prefix}", i) for i in range(args.events)]
                            asyncio.run(_post_all(url, key, bought, args.concurrency))
                        events = [make(prefix, i) for i in range(args.events)]
                        figures[name].append(_measure(url, key, dsn, db_pids, events, args.concurrency))
                    replayed = [_purchase(20.0)("setup", i) for i in range(args.events)]
                    figures["replay"].append(_measure(url, key, dsn, db_pids, replayed, args.concurrency))
        finally:
            redis.stop()
            postgres.stop()
    medians = {
        name: (statistics.median(c for c, _ in runs), statistics.median(w for _, w in runs))
        for name, runs in figures.items()
    }
    table = render(
        medians,
        f"{machine()}; {args.events} events of each kind, {args.concurrency} connections, "
        f"medians of {args.repeats} runs, {dt.date.today():%Y-%m-%d}",
    )
    print(table)
    if args.record:
        record(table)


MIX = {"purchase, no award": 0.6, "purchase, points": 0.3, "return": 0.1}
"""The worked example's mix of events."""


def render(medians: dict[str, tuple[float, float]], context: str) -> str:
    lines = ["| kind | PostgreSQL CPU ms/event | WAL bytes/event |", "|---|---|---|"]
    lines += [f"| {name} | {cpu:.2f} | {wal:,.0f} |" for name, (cpu, wal) in medians.items()]
    cpu = sum(share * medians[name][0] for name, share in MIX.items())
    wal = sum(share * medians[name][1] for name, share in MIX.items())
    per_core = 0.7 * 1000 / cpu
    lines += [
        "",
        f"{context}. With 60% purchases that win nothing, 30% that earn points and 10% returns: {cpu:.2f} ms of "
        f"PostgreSQL CPU and {wal:,.0f} bytes of WAL per event, so about {per_core:,.0f} events a second per core "
        f"kept 70% busy ({16 * per_core:,.0f} on 16 cores, writing {16 * per_core * wal / 1e6:,.1f} MB of WAL a "
        "second).",
    ]
    return "\n".join(lines)


def record(table: str) -> None:
    start, end = "<!-- per_kind -->\n", "\n<!-- /per_kind -->"
    text = SCALING.read_text()
    before, rest = text.split(start, 1)
    _, after = rest.split(end, 1)
    SCALING.write_text(before + start + table + end + after)


if __name__ == "__main__":
    sys.exit(main())
