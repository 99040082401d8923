"""Does a deployment slow down as it ages? The same load on a fresh database and on one with a year of history.

Two deployments of this checkout, each as production runs it (``delight serve
--workers N`` on its own PostgreSQL and Redis, the benchmark's rule pack):

- **fresh**: the migrations and nothing else;
- **aged**: a year of history written in SQL before the load, by default
  200,000 customers and 2,000,000 events from March 2025 to March 2026, each
  customer exposed to between 0 and 40 of the pack's rules at their own
  events (held out by their campaign's share, awarded otherwise), with the
  profiles, awards, points ledger and surprise logs the event path would have
  left, and the uplift projection built from it.

Both are then driven by turns, as ``ab.py`` drives two checkouts: a slice of
a few seconds on one, then on the other (fresh aged, aged fresh, ...), the
same load as ``load.py`` (``load.lua``: four purchases in five, customers
``c-0`` to ``c-199999``, event times from March to October 2026, after the
history), first at full speed and then at about half of the fresh side's
maximum. The aged side's customers exist and have histories; the fresh
side's are new. Printed per pair, then the medians: the aged side's
throughput over the fresh side's, the p99s at half rate, the WAL written per
event and the projection's lag at the end of each slice.
Target: throughput and half-rate p99 of the aged deployment within 10% of
the fresh one.

    .venv/bin/python bench/aged.py [--customers 200000] [--events 2000000] [--max-rules 40] [--pairs 8]
        [--seconds 8] [--workers 2] [--pack standard|award-heavy]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
from load import BIN, cpu_seconds, free_port, postmaster_pid, serving, wrk
from rulepack import write_pack

from service.lib.db import asyncpg_connect_args, upgrade_database
from service.lib.embedded import start_postgres, start_redis

HISTORY_FROM = "2025-03-01 00:00:00+00"
HISTORY_SECONDS = 365 * 86400

# Who was exposed to which rule, at which of their events, and what they got: customer k to (k * 7919) % 41 rules.
EXPOSED = """
    SELECT e.event_id, x.campaign, x.rule_id, e.customer_id, x.grp, e.occurred_at,
           CASE WHEN x.grp = 'treatment' THEN md5(e.event_id || x.campaign || x.rule_id)::uuid END AS award_id
    FROM (
        SELECT k, j, format('bench-%s', lpad(((k * 37 + j * 13) % 100 / 5)::text, 3, '0')) AS campaign,
               'r' || (k * 37 + j * 13) % 100 % 5 AS rule_id,
               CASE WHEN (k * 31 + (k * 37 + j * 13) % 100 / 5) % 10 = 0 THEN 'control' ELSE 'treatment' END AS grp,
               'h-' || (k + $1 * ((j * 7 + k) % ($2 / $1))) AS event_id
        FROM generate_series(0, $1 - 1) AS k
        CROSS JOIN LATERAL generate_series(0, (k * 7919) % ($3 + 1) - 1) AS j
    ) AS x
    JOIN events e ON e.event_id = x.event_id
"""

# A year of history, in SQL. Customer k owns events k, k + C, k + 2C, ...; each is exposed to n_k of the pack's
# rules (0 to :max_rules, spread evenly), the j-th at one of their own events, held out when the campaign's
# hash says so, otherwise awarded a gift (or points for one rule in three).
HISTORY = [
    (
        "month partitions",  # as the jobs would have made them month by month over the year
        """
        SELECT delight_month_partition(t, m::date)
        FROM unnest(ARRAY['events', 'exposures', 'points_ledger']) AS t,
             generate_series(timestamp '{HISTORY_FROM}', timestamp '{HISTORY_FROM}' + interval '12 months',
                             interval '1 month') AS m
        """,
    ),
    (
        "events",
        """
        INSERT INTO events (event_id, content_hash, type, customer_id, occurred_at, received_at, channel, store_id,
                            name, order_id, amount, rule_set_version, payload)
        SELECT 'h-' || g, sha256(('h-' || g)::bytea), kind, 'c-' || (g % $1), at, at, channel,
               CASE WHEN kind = 'purchase' THEN 'madrid-' || (g % 20 + 1) END,
               CASE WHEN kind = 'interaction' THEN 'review_posted' END,
               CASE WHEN kind = 'purchase' THEN 'o-h-' || g END, amount, 'history',
               jsonb_build_object('event_id', 'h-' || g, 'type', kind, 'customer_id', 'c-' || (g % $1),
                                  'occurred_at', at, 'channel', channel,
                                  'order', CASE WHEN kind = 'purchase' THEN jsonb_build_object(
                                      'order_id', 'o-h-' || g, 'total', amount, 'currency', 'EUR',
                                      'items', jsonb_build_array(jsonb_build_object(
                                          'sku', 'SKU-' || g % 500, 'category', category, 'quantity', 1,
                                          'unit_price', amount))) END)
        FROM (
            SELECT g, CASE WHEN g % 5 = 4 THEN 'interaction' ELSE 'purchase' END AS kind,
                   timestamptz '{HISTORY_FROM}' + ((g::bigint * 2654435761) % {HISTORY_SECONDS}) * interval '1 second'
                       AS at,
                   (ARRAY['pos', 'pos', 'pos', 'web', 'app'])[g % 5 + 1] AS channel,
                   (ARRAY['handmade', 'lamps', 'textiles', 'kitchen', 'garden', 'kids'])[g % 6 + 1] AS category,
                   CASE WHEN g % 5 = 4 THEN NULL ELSE (5 + (g::bigint * 7919) % 39500 / 100.0)::numeric(14, 2) END
                       AS amount
            FROM generate_series(0, $2 - 1) AS g
        ) AS e
        """,
    ),
    (
        "event ids",
        "INSERT INTO event_ids (event_id, occurred_at) SELECT event_id, occurred_at FROM events",
    ),
    (
        "awards",
        f"""
        INSERT INTO awards (award_id, code, event_id, customer_id, campaign, rule_id, rule_set_version, kind, points,
                            gift_id, gift_name, cost, issued_at, status)
        SELECT x.award_id, 'H' || row_number() OVER (), x.event_id, x.customer_id, x.campaign, x.rule_id, 'history',
               CASE WHEN x.rule_id = 'r1' THEN 'points' ELSE 'gift' END,
               CASE WHEN x.rule_id = 'r1' THEN 100 END,
               CASE WHEN x.rule_id = 'r1' THEN NULL ELSE 'candle' END,
               CASE WHEN x.rule_id = 'r1' THEN NULL ELSE 'Scented candle' END,
               CASE WHEN x.rule_id = 'r1' THEN 1.00 ELSE 2.20 END, x.occurred_at, 'issued'
        FROM ({EXPOSED}) AS x WHERE x.award_id IS NOT NULL
        """,
    ),
    (
        "exposures",
        f"""
        INSERT INTO exposures (event_id, campaign, rule_id, customer_id, "group", occurred_at, award_id,
                               rule_set_version, holdout)
        SELECT x.event_id, x.campaign, x.rule_id, x.customer_id, x.grp, x.occurred_at, x.award_id, 'history', 0.1
        FROM ({EXPOSED}) AS x
        """,
    ),
    (
        "points ledger",
        """
        INSERT INTO points_ledger (customer_id, delta, reason, award_id, event_id, occurred_at)
        SELECT customer_id, points, 'earn', award_id, event_id, issued_at FROM awards WHERE points IS NOT NULL
        """,
    ),
    (
        "profiles",
        """
        WITH counted AS (
            SELECT customer_id, count(*) FILTER (WHERE type = 'purchase') AS purchases,
                   count(*) FILTER (WHERE type = 'interaction') AS reviews, coalesce(sum(amount), 0) AS spend,
                   min(occurred_at) FILTER (WHERE type = 'purchase') AS first_purchase,
                   max(occurred_at) FILTER (WHERE type = 'purchase') AS last_purchase, max(occurred_at) AS last_event
            FROM events GROUP BY customer_id
        ), categories AS (
            SELECT customer_id, jsonb_object_agg(category, spend) AS spend
            FROM (
                SELECT customer_id, payload #>> '{order,items,0,category}' AS category, sum(amount) AS spend
                FROM events WHERE type = 'purchase' GROUP BY 1, 2
            ) AS c
            GROUP BY customer_id
        ), logs AS (
            SELECT customer_id,
                   jsonb_agg(jsonb_build_array(extract(epoch FROM occurred_at)::bigint, campaign, rule_id)
                             ORDER BY occurred_at, campaign, rule_id) AS log
            FROM exposures GROUP BY customer_id
        ), balances AS (
            SELECT customer_id, sum(points) AS points FROM awards WHERE points IS NOT NULL GROUP BY customer_id
        )
        INSERT INTO customers (customer_id, purchase_count, return_count, lifetime_spend, first_purchase_at,
                               last_purchase_at, last_event_at, category_spend, interaction_counts, points_balance,
                               attributes, award_log)
        SELECT n.customer_id, n.purchases, 0, n.spend, n.first_purchase, n.last_purchase, n.last_event,
               coalesce(c.spend, '{}'), jsonb_build_object('review_posted', n.reviews), coalesce(b.points, 0),
               jsonb_build_object('first_name', 'Customer ' || substr(n.customer_id, 3),
                                  'segments', CASE WHEN length(n.customer_id) % 3 = 0 THEN '["vip"]'::jsonb
                                                   ELSE '[]'::jsonb END),
               coalesce(l.log, '[]')
        FROM counted n
        LEFT JOIN categories c USING (customer_id)
        LEFT JOIN logs l USING (customer_id)
        LEFT JOIN balances b USING (customer_id)
        """,
    ),
    ("rebuild the projection", "UPDATE projection_state SET snapshot = NULL"),
]


@dataclass
class Side:
    name: str
    port: int
    url: str
    data: Path
    env: dict[str, str]
    pid: int = 0
    throughput: list[float] = field(default_factory=list)
    p99: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    wal: list[float] = field(default_factory=list)
    lag: list[float] = field(default_factory=list)


def service_env(
    database_url: str, redis_url: str, data: Path, rules: Path, customers: int, key_name: str
) -> dict[str, str]:
    """The environment ``delight serve`` and ``load.lua`` run under on a deployment in ``data``, with an API key
    made for the load (``BENCH_KEY``)."""
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("DELIGHT_")},
        "DELIGHT_DATABASE_URL": database_url,
        "DELIGHT_REDIS_URL": redis_url,
        "DELIGHT_DATA_DIR": str(data / "serve"),
        "DELIGHT_RULES_DIR": str(rules),
        "DELIGHT_RATE_LIMIT": "1000000000",  # the limiter runs, but never refuses the load
        "DELIGHT_LOG_LEVEL": "WARNING",
        "BENCH_CUSTOMERS": str(customers),
    }
    created = subprocess.run(
        [str(BIN / "delight"), "keys", "create", "--name", key_name, "--scopes", "events:write"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=180,
    )
    env["BENCH_KEY"] = created.stdout.strip().splitlines()[-1]
    return env


async def write_history(url: str, customers: int, events: int, max_rules: int) -> None:
    connection = await asyncpg.connect(**asyncpg_connect_args(url))
    try:
        await connection.execute("SET synchronous_commit = off")
        exposed = (customers, events, max_rules)
        arguments = {"events": (customers, events), "awards": exposed, "exposures": exposed}
        async with connection.transaction():  # the profiles come last: their foreign keys are checked at commit
            await connection.execute("INSERT INTO rule_sets (version, files) VALUES ('history', '{}')")
            for name, sql in HISTORY:
                started = time.perf_counter()
                sql = sql.replace("{HISTORY_FROM}", HISTORY_FROM).replace("{HISTORY_SECONDS}", str(HISTORY_SECONDS))
                await connection.execute(sql, *arguments.get(name, ()))
                await connection.execute("ANALYZE")
                print(f"  {name}: {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
        stats = await connection.fetchrow(
            """
            SELECT (SELECT count(*) FROM customers) AS customers, (SELECT count(*) FROM events) AS events,
                   (SELECT count(*) FROM exposures) AS exposures, (SELECT count(*) FROM awards) AS awards,
                   (SELECT max(n) FROM (SELECT count(DISTINCT (campaign, rule_id)) AS n FROM exposures
                                        GROUP BY customer_id) AS r) AS most_rules
            """
        )
        print(f"  history: {dict(stats)}", file=sys.stderr, flush=True)
    finally:
        await connection.close()


async def until_built(url: str) -> None:
    """Wait for the service's projector to build the projection from the history, then settle the database as a
    deployment that has run for a year would be: every table vacuumed and frozen, and a checkpoint behind it.
    (Straight after writing the history, autovacuum freezing it and the checkpoints the load's WAL forces would
    write several times the WAL the events do, for a while.)"""
    connection = await asyncpg.connect(**asyncpg_connect_args(url))
    try:
        started = time.perf_counter()
        while await connection.fetchval("SELECT snapshot IS NULL FROM projection_state"):  # noqa: ASYNC110
            await asyncio.sleep(1)
        print(f"  projection built by the service: {time.perf_counter() - started:.0f} s", file=sys.stderr)
        await connection.execute("VACUUM (FREEZE, ANALYZE)")
        await connection.execute("CHECKPOINT")
    finally:
        await connection.close()


async def database_state(url: str) -> tuple[int, float]:
    """WAL position (bytes) and the projection's lag (seconds)."""
    connection = await asyncpg.connect(**asyncpg_connect_args(url))
    try:
        row = await connection.fetchrow(
            "SELECT pg_current_wal_lsn() - '0/0'::pg_lsn AS wal, "
            "(SELECT extract(epoch FROM statement_timestamp() - complete_at) FROM projection_state) AS lag"
        )
        return int(row["wal"]), float(row["lag"] or 0)
    finally:
        await connection.close()


def slice_of(side: Side, args: argparse.Namespace, prefix: str, pause_ms: int) -> dict[str, float]:
    watch = [side.pid, *(pid for pid in [postmaster_pid(side.data)] if pid)]
    wal_before, _ = asyncio.run(database_state(side.url))
    cpu_before = cpu_seconds(watch)
    result = wrk(side.port, side.env, args.concurrency, args.seconds, prefix, pause_ms)
    cpu = cpu_seconds(watch) - cpu_before
    wal_after, lag = asyncio.run(database_state(side.url))
    if result["non_2xx"] or result["socket_errors"]:
        sys.exit(f"{side.name} failed requests: {result}")
    requests = max(result["requests"], 1)
    return {
        "throughput": requests / (result["duration_us"] / 1e6),
        "p99": result["p99_us"] / 1000,
        "cpu": cpu / requests * 1000,
        "wal": (wal_after - wal_before) / requests,
        "lag": lag,
    }


def drive(sides: list[Side], args: argparse.Namespace, pause_ms: int, label: str) -> None:
    fresh, aged = sides
    for side in sides:
        side.throughput, side.p99, side.cpu, side.wal, side.lag = [], [], [], [], []
    print(f"\n{label}\n")
    print(
        "| pair | fresh events/s | aged events/s | aged/fresh | fresh p99 ms | aged p99 ms | fresh WAL B/event "
        "| aged WAL B/event | fresh lag s | aged lag s |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for n in range(1, args.pairs + 1):
        order = (fresh, aged) if n % 2 else (aged, fresh)
        measured = {
            side.name: slice_of(side, args, f"{label[:4]}{side.name}{n}-{time.time_ns()}", pause_ms) for side in order
        }
        for side in sides:
            for key, value in measured[side.name].items():
                getattr(side, key).append(value)
        f, a = measured["fresh"], measured["aged"]
        print(
            f"| {n} | {f['throughput']:,.0f} | {a['throughput']:,.0f} | {a['throughput'] / f['throughput']:.2f} "
            f"| {f['p99']:.1f} | {a['p99']:.1f} | {f['wal']:,.0f} | {a['wal']:,.0f} | {f['lag']:.2f} "
            f"| {a['lag']:.2f} |",
            flush=True,
        )
    ratios = [a / f for f, a in zip(fresh.throughput, aged.throughput, strict=True)]
    print(
        f"\naged over fresh, throughput: median {statistics.median(ratios):.3f} "
        f"(aged faster in {sum(r > 1 for r in ratios)} of {len(ratios)}); "
        f"p99: fresh {statistics.median(fresh.p99):.1f} ms, aged {statistics.median(aged.p99):.1f} ms "
        f"(ratio {statistics.median(aged.p99) / statistics.median(fresh.p99):.3f}); "
        f"CPU ms/event: fresh {statistics.median(fresh.cpu):.2f}, aged {statistics.median(aged.cpu):.2f}; "
        f"WAL bytes/event: fresh {statistics.median(fresh.wal):,.0f}, aged {statistics.median(aged.wal):,.0f}; "
        f"projection lag at the end of a slice, at most: fresh {max(fresh.lag):.2f} s, aged {max(aged.lag):.2f} s",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=200_000)
    parser.add_argument("--events", type=int, default=2_000_000)
    parser.add_argument("--max-rules", type=int, default=40, help="most rules one customer was exposed to")
    parser.add_argument("--pairs", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=8, help="length of each slice")
    parser.add_argument("--warmup", type=float, default=8)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--pack", choices=("standard", "award-heavy"), default="standard")
    parser.add_argument(
        "--shared-buffers", help="both servers' shared buffers (e.g. 6GB), instead of the embedded default"
    )
    parser.add_argument(
        "--keep",
        type=Path,
        help="keep the aged deployment's data in this directory, and reuse the history found there on the next run",
    )
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("bench/aged.py needs wrk on PATH (Debian: apt-get install wrk)")
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="delight-aged-")))
        rules = write_pack(tmp / "rules", award_heavy=args.pack == "award-heavy")
        sides = []
        for name in ("fresh", "aged"):
            data = tmp / name
            kept = args.keep is not None and name == "aged"
            if kept:
                data = args.keep.resolve()
            had_history = kept and (data / "postgres" / "PG_VERSION").exists()
            postgres = start_postgres(data, database="delight", buffers=args.shared_buffers)
            stack.callback(postgres.stop)
            redis = start_redis(data)
            stack.callback(redis.stop)
            upgrade_database(postgres.url)
            if had_history:
                print(f"reusing the history in {data}", file=sys.stderr)
            elif name == "aged":
                print(f"writing {args.events:,} events of history for {args.customers:,} customers", file=sys.stderr)
                asyncio.run(write_history(postgres.url, args.customers, args.events, args.max_rules))
            env = service_env(postgres.url, redis.url, data, rules, args.customers, "aged")
            side = Side(name, free_port(), postgres.url, data, env)
            command = [str(BIN / "delight"), "serve", "--port", str(side.port), "--workers", str(args.workers)]
            side.pid = stack.enter_context(serving(command, env, side.port, data / "serve.log"))
            asyncio.run(until_built(postgres.url))
            sides.append(side)
        for side in sides:
            wrk(side.port, side.env, args.concurrency, args.warmup, f"warm{side.name}")
        drive(sides, args, 0, "full speed")
        half = statistics.median(sides[0].throughput) / 2
        pause_ms = max(1, round(args.concurrency * 1000 / half - statistics.median(sides[0].p99) / 4))
        drive(sides, args, pause_ms, f"about half the fresh side's maximum (each connection pausing ~{pause_ms} ms)")
    print(f"\nCommand: `.venv/bin/python bench/aged.py {' '.join(sys.argv[1:])}`")


if __name__ == "__main__":
    main()
