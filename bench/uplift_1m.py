"""How long does the uplift report take for a campaign with a million exposed customers?

Fills a fresh database (through the real migrations) with 1,000,000
customers and 10,000,000 purchases over 2026, generated in SQL; exposes every
customer once to one of the campaign's four rules at one of their purchases,
holding out 10% at random, with a gift costing 2.50 for the others; and builds
the uplift projection from those rows the way ``delight reports rebuild`` does
(timed too). Then times the report the way the service computes it, in process
and over HTTP from a running ``delight serve``, and prints medians.

    .venv/bin/python bench/uplift_1m.py [--customers 1000000] [--purchases 10000000] [--runs 5]

Without DELIGHT_DATABASE_URL an embedded PostgreSQL is started in a
temporary directory; with it, a fresh database is created on that server.
Target: the report in at most 2 seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import asyncpg
import httpx
from sqlalchemy.engine import make_url

from service.lib.db import asyncpg_connect_args, create_engine, upgrade_database
from service.lib.embedded import start_postgres
from service.projection.apply import projector_connection, rebuild
from service.reports.uplift import uplift_report

DELIGHT = str(Path(sys.executable).parent / "delight")
CAMPAIGN = "bench"

FILL = [
    (
        "customers",
        "INSERT INTO customers (customer_id) SELECT 'c-' || g FROM generate_series(0, $1 - 1) AS g",
    ),
    ("rule set", "INSERT INTO rule_sets (version, files) VALUES ('bench', '{}')"),
    (
        "month partitions",  # as the jobs would have made them over the year
        """
        SELECT delight_month_partition(t, m::date)
        FROM unnest(ARRAY['events', 'exposures']) AS t,
             generate_series(timestamp '2026-01-01', timestamp '2027-01-01', interval '1 month') AS m
        """,
    ),
    (
        "purchases",
        """
        INSERT INTO events (event_id, content_hash, type, customer_id, occurred_at, received_at, channel, order_id,
                            amount, rule_set_version, payload)
        SELECT 'e-' || g, '\\x00', 'purchase', 'c-' || (g % $1), at, at, 'pos', 'o-' || g,
               (5 + (g::bigint * 7919) % 19500 / 100.0)::numeric(14, 2), 'bench', '{}'
        FROM (
            SELECT g, timestamptz '2026-01-01 08:00:00+00'
                      + (('x' || substr(md5(g::text), 1, 8))::bit(32)::bigint % 31449600) * interval '1 second' AS at
            FROM generate_series(0, $2 - 1) AS g
        ) AS e
        """,
    ),
    (
        "awards",
        """
        INSERT INTO awards (award_id, code, event_id, customer_id, campaign, rule_id, rule_set_version, kind,
                            gift_id, gift_name, cost, issued_at, status)
        SELECT md5('award-' || g)::uuid, 'B' || g, e.event_id, e.customer_id, $2, 'rule-' || g % 4, 'bench', 'gift',
               'candle', 'A candle', 2.50, e.occurred_at, 'issued'
        FROM generate_series(0, $1 - 1) AS g
        JOIN events e ON e.event_id = 'e-' || g
        WHERE (g::bigint * 40503) % 1000 >= 100
        """,
    ),
    (
        "exposures",
        """
        INSERT INTO exposures (event_id, campaign, rule_id, customer_id, "group", occurred_at, award_id,
                               rule_set_version, holdout)
        SELECT e.event_id, $2, 'rule-' || g % 4, e.customer_id,
               CASE WHEN (g::bigint * 40503) % 1000 >= 100 THEN 'treatment' ELSE 'control' END,
               e.occurred_at, CASE WHEN (g::bigint * 40503) % 1000 >= 100 THEN md5('award-' || g)::uuid END,
               'bench', 0.1
        FROM generate_series(0, $1 - 1) AS g
        JOIN events e ON e.event_id = 'e-' || g
        """,
    ),
]


async def fill(admin_url: str, database: str, customers: int, purchases: int, reuse: bool) -> str:
    admin = await asyncpg.connect(**asyncpg_connect_args(admin_url))
    url = make_url(admin_url).set(database=database).render_as_string(hide_password=False)
    if reuse and await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", database):
        await admin.close()
        print("  reusing the database filled by an earlier run", file=sys.stderr)
        return url
    await admin.execute(f'DROP DATABASE IF EXISTS "{database}"')
    await admin.execute(f'CREATE DATABASE "{database}"')
    await admin.close()
    await asyncio.to_thread(upgrade_database, url)
    connection = await asyncpg.connect(**asyncpg_connect_args(url))
    arguments = {
        "customers": (customers,),
        "rule set": (),
        "month partitions": (),
        "purchases": (customers, purchases),
        "awards": (customers, CAMPAIGN),
        "exposures": (customers, CAMPAIGN),
    }
    try:
        await connection.execute("SET synchronous_commit = off")
        for name, sql in FILL:
            started = time.perf_counter()
            await connection.execute(sql, *arguments[name])
            # The next step reads what this one wrote: plan it with statistics, not with whatever
            # autovacuum has got round to (without them, building first_exposures had written a fifth of
            # the table after 45 minutes; with them the whole table takes about a minute).
            await connection.execute("ANALYZE")
            print(f"  {name}: {time.perf_counter() - started:.0f} s", file=sys.stderr)
        await connection.execute("VACUUM ANALYZE")
    finally:
        await connection.close()
    started = time.perf_counter()
    async with projector_connection(url) as projector:
        built = await rebuild(projector)
    print(f"  projection rebuilt from {built.events:,} events: {time.perf_counter() - started:.0f} s", file=sys.stderr)
    connection = await asyncpg.connect(**asyncpg_connect_args(url))
    try:
        await connection.execute("VACUUM ANALYZE first_exposures, customer_timelines")
    finally:
        await connection.close()
    return url


async def in_process(url: str, runs: int, window_days: int) -> tuple[list[float], int]:
    engine = create_engine(url)
    times = []
    customers = 0
    try:
        for _ in range(runs):
            async with engine.connect() as connection:
                started = time.perf_counter()
                report = await uplift_report(
                    connection, campaign=CAMPAIGN, window_days=window_days, holdout=0.1, currency="EUR", rule_ids=()
                )
                times.append(time.perf_counter() - started)
            total = report.campaign_total
            assert total is not None
            customers = total.treated.customers + total.control.customers + total.treated.open + total.control.open
    finally:
        await engine.dispose()
    return times, customers


def over_http(url: str, runs: int, window_days: int, data_dir: Path) -> list[float]:
    env = {**os.environ, "DELIGHT_DATABASE_URL": url, "DELIGHT_DATA_DIR": str(data_dir), "DELIGHT_LOG_LEVEL": "WARNING"}
    created = subprocess.run(
        [DELIGHT, "keys", "create", "--name", "bench", "--scopes", "reports:read"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    key = created.stdout.strip().splitlines()[-1]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([DELIGHT, "serve", "--port", str(port)], env=env)
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(300):
            try:
                if httpx.get(f"{base}/health/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        times = []
        for _ in range(runs):
            started = time.perf_counter()
            response = httpx.get(
                f"{base}/v1/reports/uplift",
                params={"campaign": CAMPAIGN, "window_days": window_days},
                headers={"Authorization": f"Bearer {key}"},
                timeout=60,
            )
            times.append(time.perf_counter() - started)
            response.raise_for_status()
        return times
    finally:
        server.terminate()
        server.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--purchases", type=int, default=10_000_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--window-days", type=int, default=30)
    parser.add_argument(
        "--reuse", action="store_true", help="keep the data of an earlier run on DELIGHT_DATABASE_URL's server"
    )
    parser.add_argument("--in-process-only", action="store_true", help="time the report in this process only")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="delight-bench-") as tmp:
        server = None
        admin_url = os.environ.get("DELIGHT_DATABASE_URL")
        if not admin_url:
            server = start_postgres(Path(tmp), database="postgres")
            admin_url = server.url
        try:
            started = time.perf_counter()
            url = asyncio.run(fill(admin_url, "delight_bench_uplift", args.customers, args.purchases, args.reuse))
            print(f"filled in {time.perf_counter() - started:.0f} s", file=sys.stderr)
            local, customers = asyncio.run(in_process(url, args.runs, args.window_days))
            print(f"# {os.cpu_count()} CPUs; {customers:,} customers exposed, {args.purchases:,} purchases")
            print(
                f"uplift report, {args.window_days}-day window, in process: median {statistics.median(local):.2f} s "
                f"(runs: {', '.join(f'{t:.2f}' for t in local)})",
                flush=True,
            )
            if not args.in_process_only:
                remote = over_http(url, args.runs, args.window_days, Path(tmp) / "serve")
                print(
                    f"uplift report over HTTP: median {statistics.median(remote):.2f} s "
                    f"(runs: {', '.join(f'{t:.2f}' for t in remote)}); target <= 2 s"
                )
        finally:
            if server is not None:
                server.stop()


if __name__ == "__main__":
    main()
