"""Is one version of the code faster than another? Both served side by side, driven in alternating slices.

``load.py`` measures the baseline and Delight minutes apart, and this
machine's own speed drifts by more than many changes are worth: in three
one-round runs of the same code, minutes apart, Delight's share of the
baseline was 28%, 27% and 20%, while the baseline alone went from 3,106 to
4,801 events/s. Here two
checkouts of Delight (``git worktree add /tmp/old HEAD~1``, say) are each
served as production runs them (``delight serve --workers N``, each with its
own embedded PostgreSQL and Redis, the same rule pack, the same seeded
customers) and driven by turns: a few seconds on one, then on the other, in
the order A B, B A, A B, ... Drift then falls on both alike, and so does the
slowing down of a database as its customers collect exposures. It prints
each pair of slices and the median ratio of B's throughput (and CPU per
event) to A's.

    .venv/bin/python bench/ab.py /tmp/old . [--pairs 10] [--seconds 8] [--workers 2] [--concurrency 32]

With ``--pause-ms`` every connection pauses before each request, as in
``load.py``'s half-rate runs, so both are driven at about one rate and the
p99s are what to compare: 32 connections pausing 55 ms between answers of
about 3 ms send about 550 events a second, half of what one side takes at
full speed here.
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
from dataclasses import dataclass
from pathlib import Path

import asyncpg
from load import BIN, cpu_seconds, free_port, postmaster_pid, seed, serving, wrk
from rulepack import write_pack


@dataclass
class Side:
    name: str
    code: Path
    port: int
    data: Path
    env: dict[str, str]
    pid: int = 0

    def socket_dir(self) -> Path:
        return self.data / "postgres"


def start(side: Side, stack: contextlib.ExitStack, customers: int) -> None:
    """Serve ``side.code`` on ``side.port`` with its own embedded servers, a key and seeded customers."""
    created = subprocess.run(
        [str(BIN / "python"), "-m", "service.cli", "keys", "create", "--name", "ab", "--scopes", "events:write"],
        env=side.env,
        cwd=side.code,
        capture_output=True,
        text=True,
        check=True,
        timeout=180,
    )
    side.env["BENCH_KEY"] = created.stdout.strip().splitlines()[-1]
    command = [str(BIN / "python"), "-m", "service.cli", "serve", "--port", str(side.port)]
    command += ["--workers", side.env["AB_WORKERS"]]
    side.pid = stack.enter_context(serving(command, side.env, side.port, side.data.parent / "serve.log", side.code))
    url = f"postgresql://postgres@/delight?host={side.socket_dir()}"
    asyncio.run(seed(url, customers))
    asyncio.run(_analyze(str(side.socket_dir())))


async def _analyze(host: str) -> None:
    connection = await asyncpg.connect(host=host, user="postgres", database="delight")
    try:
        await connection.execute("ANALYZE")
    finally:
        await connection.close()


def slice_of(side: Side, args: argparse.Namespace, prefix: str) -> tuple[float, float, float]:
    """Drive ``side`` for ``args.seconds``: events a second, CPU per event (ms) of its server and databases,
    and the 99th percentile of latency (ms)."""
    watch = [side.pid, *(pid for pid in [postmaster_pid(side.data)] if pid)]
    before = cpu_seconds(watch)
    result = wrk(side.port, side.env, args.concurrency, args.seconds, prefix, args.pause_ms)
    cpu = cpu_seconds(watch) - before
    if result["non_2xx"] or result["socket_errors"]:
        sys.exit(f"{side.name} failed requests: {result}")
    requests = max(result["requests"], 1)
    return requests / (result["duration_us"] / 1e6), cpu / requests * 1000, result["p99_us"] / 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("a", type=Path, help="checkout A (the reference)")
    parser.add_argument("b", type=Path, help="checkout B (the change)")
    parser.add_argument("--pairs", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=8, help="length of each slice")
    parser.add_argument("--warmup", type=float, default=5)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--customers", type=int, default=10_000)
    parser.add_argument("--campaigns", type=int, default=20)
    parser.add_argument("--rules-per-campaign", type=int, default=5)
    parser.add_argument(
        "--pause-ms",
        type=int,
        default=0,
        help="each connection's pause before a request (as load.py's half-rate runs), to compare both at one "
        "rate: the p99s are what to read then",
    )
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("bench/ab.py needs wrk on PATH (Debian: apt-get install wrk)")
    with tempfile.TemporaryDirectory(prefix="delight-ab-") as tmp_name, contextlib.ExitStack() as stack:
        tmp = Path(tmp_name)
        rules = write_pack(tmp / "rules", args.campaigns, args.rules_per_campaign)
        sides = []
        for name, code in (("A", args.a), ("B", args.b)):
            data = tmp / name / "data"
            data.mkdir(parents=True)
            env = {
                **{k: v for k, v in os.environ.items() if not k.startswith("DELIGHT_")},
                "PYTHONPATH": str(code.resolve()),
                "DELIGHT_DATA_DIR": str(data),
                "DELIGHT_RULES_DIR": str(rules),
                "DELIGHT_RATE_LIMIT": "1000000000",  # the limiter runs, but never refuses the load
                "BENCH_CUSTOMERS": str(args.customers),
                "AB_WORKERS": str(args.workers),
            }
            sides.append(Side(name, code.resolve(), free_port(), data, env))
        for side in sides:
            start(side, stack, args.customers)
        a, b = sides
        for side in sides:
            wrk(side.port, side.env, args.concurrency, args.warmup, f"warm{side.name}")
        print("| pair | A events/s | B events/s | B/A | A CPU ms/event | B CPU ms/event | A p99 ms | B p99 ms |")
        print("|---:|---:|---:|---:|---:|---:|---:|---:|")
        ratios, cpu_ratios, a_cpu, b_cpu, a_p99, b_p99 = [], [], [], [], [], []
        for n in range(1, args.pairs + 1):
            order = (a, b) if n % 2 else (b, a)
            measured = {side.name: slice_of(side, args, f"{side.name}{n}-{time.time_ns()}") for side in order}
            (ra, ca, pa), (rb, cb, pb) = measured["A"], measured["B"]
            ratios.append(rb / ra)
            cpu_ratios.append(cb / ca)
            a_cpu.append(ca)
            b_cpu.append(cb)
            a_p99.append(pa)
            b_p99.append(pb)
            print(
                f"| {n} | {ra:,.0f} | {rb:,.0f} | {rb / ra:.2f} | {ca:.2f} | {cb:.2f} | {pa:.1f} | {pb:.1f} |",
                flush=True,
            )
    faster = sum(r > 1 for r in ratios)
    lower = sum(pb < pa for pa, pb in zip(a_p99, b_p99, strict=True))
    print(
        f"\nB's throughput over A's: median {statistics.median(ratios):.3f} "
        f"(B faster in {faster} of {len(ratios)} pairs); "
        f"CPU per event, B over A: median {statistics.median(cpu_ratios):.3f} "
        f"(A {statistics.median(a_cpu):.2f} ms, B {statistics.median(b_cpu):.2f} ms); "
        f"p99, median of the slices: A {statistics.median(a_p99):.1f} ms, B {statistics.median(b_p99):.1f} ms "
        f"(B lower in {lower} of {len(ratios)} pairs)."
    )
    print(f"Command: `.venv/bin/python bench/ab.py {' '.join(sys.argv[1:])}`")


if __name__ == "__main__":
    main()
