"""How long does a back-test of a million stored events take?

Fills a fresh database with purchases and interactions of 50,000 customers
over a year (generated in SQL, through the real migrations), then runs
`delight rules backtest` with the demo rule pack over the whole year and
prints the time. Target: 1,000,000 events within 60 seconds on the 2-core
development machine.

    .venv/bin/python bench/backtest_1m.py [--events 1000000] [--rules rules]

Without DELIGHT_DATABASE_URL an embedded PostgreSQL is started in a
temporary directory; with it, a fresh database is created on that server.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import asyncpg
from sqlalchemy.engine import make_url

from service.lib.db import asyncpg_connect_args, upgrade_database
from service.lib.embedded import start_postgres

DELIGHT = str(Path(sys.executable).parent / "delight")

FILL = """
INSERT INTO customers (customer_id, attributes)
SELECT 'c-' || g, jsonb_build_object('first_name', 'Customer ' || g,
                                     'birthday', make_date(1960 + g % 40, 1 + g % 12, 1 + g % 28))
FROM generate_series(0, 49999) AS g;

INSERT INTO rule_sets (version, files) VALUES ('bench', '{}');

-- the year's month partitions, as the jobs would have made them
SELECT delight_month_partition('events', m::date)
FROM generate_series(timestamp '2026-01-01', timestamp '2027-01-01', interval '1 month') AS m;

INSERT INTO events (event_id, content_hash, type, customer_id, occurred_at, received_at, order_id, amount,
                    name, rule_set_version, payload)
SELECT 'e-' || g, '\\x00', kind, 'c-' || (g::bigint * 7919 % 50000), at, at, order_id, total, name, 'bench',
       jsonb_strip_nulls(jsonb_build_object(
           'event_id', 'e-' || g, 'type', kind, 'customer_id', 'c-' || (g::bigint * 7919 % 50000),
           'occurred_at', to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
           'channel', CASE WHEN g % 3 = 0 THEN 'web' ELSE 'pos' END,
           'name', name,
           'attributes', CASE WHEN kind = 'interaction' THEN jsonb_build_object('rating', g % 5 + 1, 'score', g % 5)
                         ELSE '{}'::jsonb END,
           'order', CASE WHEN kind = 'purchase' THEN jsonb_build_object(
               'order_id', order_id, 'total', total, 'currency', 'EUR',
               'items', jsonb_build_array(jsonb_build_object(
                   'sku', 'SKU-' || g % 500, 'category', (ARRAY['handmade', 'lamps', 'rugs', 'textiles'])[g % 4 + 1],
                   'quantity', 1, 'unit_price', total))) END))
FROM (
    SELECT g,
           CASE WHEN g % 5 < 4 THEN 'purchase' ELSE 'interaction' END AS kind,
           timestamptz '2026-01-01 08:00:00+00' + (g::double precision / $1 * 364 * 86400) * interval '1 second' AS at,
           CASE WHEN g % 5 < 4 THEN 'o-' || g END AS order_id,
           CASE WHEN g % 5 < 4 THEN (20 + g % 400)::numeric END AS total,
           CASE WHEN g % 5 = 4
                THEN (ARRAY['review_posted', 'app_visit', 'social_follow', 'survey_completed'])[g / 5 % 4 + 1]
           END AS name
    FROM generate_series(0, $1 - 1) AS g
) AS e;
"""


async def fill(admin_url: str, database: str, events: int) -> str:
    admin = await asyncpg.connect(**asyncpg_connect_args(admin_url))
    await admin.execute(f'DROP DATABASE IF EXISTS "{database}"')
    await admin.execute(f'CREATE DATABASE "{database}"')
    await admin.close()
    url = make_url(admin_url).set(database=database).render_as_string(hide_password=False)
    await asyncio.to_thread(upgrade_database, url)
    connection = await asyncpg.connect(**asyncpg_connect_args(url))
    try:
        statements = [s for s in FILL.split(";\n") if s.strip()]
        for statement in statements[:-1]:
            await connection.execute(statement)
        await connection.execute(statements[-1], events)
        await connection.execute("ANALYZE")
    finally:
        await connection.close()
    return url


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--rules", default="rules")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="delight-bench-") as tmp:
        server = None
        admin_url = os.environ.get("DELIGHT_DATABASE_URL")
        if not admin_url:
            server = start_postgres(Path(tmp), database="postgres")
            admin_url = server.url
        try:
            started = time.perf_counter()
            url = asyncio.run(fill(admin_url, "delight_bench_backtest", args.events))
            print(f"filled {args.events:,} events in {time.perf_counter() - started:.0f} s", file=sys.stderr)
            env = {**os.environ, "DELIGHT_DATABASE_URL": url, "DELIGHT_LOG_LEVEL": "WARNING"}
            command = [DELIGHT, "rules", "backtest", args.rules, "--from", "2026-01-01", "--to", "2026-12-31"]
            started = time.perf_counter()
            result = subprocess.run([*command, "--format", "json"], env=env, capture_output=True, check=True)
            elapsed = time.perf_counter() - started
        finally:
            if server is not None:
                server.stop()
    report = json.loads(result.stdout)
    awards = sum(r["awards"] for r in report["rules"])
    print(f"# {os.cpu_count()} CPUs; {report['events_read']:,} events, {awards:,} awards")
    print(f"backtest: {elapsed:.1f} s wall ({report['events_read'] / elapsed:,.0f} events/s); target <= 60 s")


if __name__ == "__main__":
    main()
