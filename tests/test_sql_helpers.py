"""The SQL helpers: those rewritten for speed (migration 0009) give what the definitions they replaced gave, and
the projection's timeline merge (migration 0015) gives what a plain Python merge gives.

The replaced definitions are read from the migrations that created them and
installed as temporary functions next to the current ones; both run over the
same generated inputs, edge cases included, and their results must be equal
to the letter (``::text``, so 1.50 and 1.5 differ).
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
import random
from collections.abc import AsyncIterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from service.customers.profile import MAX_PROFILE_KEYS, add_counts, favourite

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations" / "versions"
CASES = 400


def migration(filename: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"migration_{filename[:4]}", MIGRATIONS / filename)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
async def db(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A connection with the replaced definitions as ``pg_temp.old_*``, inside a transaction rolled back after."""
    initial = migration("0001_initial_schema.py")
    async with engine.connect() as connection:
        transaction = await connection.begin()
        try:
            for created, name in ((initial.JSONB_ADD, "delight_jsonb_add"),):
                old = created.replace(f"CREATE FUNCTION {name}(", f"CREATE FUNCTION pg_temp.old_{name}(")
                assert old != created
                await connection.execute(text(old))
            yield connection
        finally:
            await transaction.rollback()


async def both(db: AsyncConnection, call: str, params: dict[str, Any]) -> tuple[str | None, str | None]:
    """``call`` (written with ``{f}`` for the function's name) by the old and the current definition, as text."""
    old = call.format(f="pg_temp.old_delight")
    new = call.format(f="delight")
    row = (await db.execute(text(f"SELECT ({old})::text, ({new})::text"), params)).one()
    return row[0], row[1]


def timeline(rng: random.Random, start: int = 0) -> tuple[list[int], list[int]]:
    """Offsets in order (repeats allowed) and the running total at each, as the projection stores them."""
    offsets = sorted(rng.randint(start, start + 120) for _ in range(rng.randint(0, 7)))
    totals, running = [], 0
    for _ in offsets:
        running += rng.choice([0, 1, 250, 1999, 120_000, -300])
        totals.append(running)
    return offsets, totals


def merged(a: tuple[list[int], list[int]], b: tuple[list[int], list[int]]) -> tuple[list[int], list[int]]:
    """Both timelines' entries in order of offset (``a``'s first at a tie), with running totals again."""
    entries = []
    for rank, (offsets, totals) in enumerate((a, b)):
        previous = 0
        for i, (offset, total) in enumerate(zip(offsets, totals, strict=True)):
            entries.append((offset, rank, i, total - previous))
            previous = total
    entries.sort()
    running, out = 0, []
    for _, _, _, amount in entries:
        running += amount
        out.append(running)
    return [e[0] for e in entries], out


async def test_timeline_merge_gives_both_timelines_entries_in_order_with_running_totals(db: AsyncConnection) -> None:
    rng = random.Random(20261207)
    cases = [(([], []), ([], [])), (([], []), ([5], [10])), (([5], [10]), ([], [])), (([5], [10]), ([5], [7]))]
    cases += [(([1, 9], [10, 30]), ([4], [5])), (([4], [5]), ([1, 9], [10, 30])), (([3, 3], [1, 2]), ([3], [4]))]
    for _ in range(CASES):
        first = timeline(rng)
        later = rng.random() < 0.3  # every new entry at or after the last one: the path events in order take
        cases.append((first, timeline(rng, start=first[0][-1] if later and first[0] else 0)))
    for a, b in cases:
        params = {"a": a[0], "ac": a[1], "b": b[0], "bc": b[1]}
        row = (
            await db.execute(
                text(
                    "SELECT merged_at, merged_cum FROM delight_timeline_merge(CAST(:a AS integer[]), "
                    "CAST(:ac AS bigint[]), CAST(:b AS integer[]), CAST(:bc AS bigint[]))"
                ),
                params,
            )
        ).one()
        assert (list(row.merged_at), list(row.merged_cum)) == merged(a, b), params


async def test_timeline_merge_takes_instants_as_well_as_offsets(db: AsyncConnection) -> None:
    row = (
        await db.execute(
            text(
                "SELECT merged_at, merged_cum FROM delight_timeline_merge("
                "ARRAY['2026-03-01 10:00:00+00', '2026-03-05 10:00:00+00']::timestamptz[], '{100, 350}', "
                "ARRAY['2026-03-02 10:00:00.5+00']::timestamptz[], '{20}')"
            )
        )
    ).one()
    day = dt.datetime(2026, 3, 1, 10, tzinfo=dt.UTC)
    assert list(row.merged_at) == [day, day + dt.timedelta(days=1, seconds=0.5), day + dt.timedelta(days=4)]
    assert list(row.merged_cum) == [100, 120, 370]


def counts(rng: random.Random) -> dict[str, Any] | None:
    """A profile counter object as the service stores it (category -> spend, name -> count), or SQL NULL."""
    if rng.random() < 0.05:
        return None
    keys = rng.sample(["kitchen", "lamps", "garden", "niños", "a b", "x"], rng.randint(0, 4))
    values: list[Any] = [0, 1, 3, 12.5, 19.99, 1234.50, -4.25, 1e-2, 10**12]
    return {key: (None if rng.random() < 0.05 else rng.choice(values)) for key in keys}


async def test_jsonb_add_gives_what_the_sql_definition_gave(db: AsyncConnection) -> None:
    rng = random.Random(99)
    cases = [({}, {}), (None, None), ({"a": 1}, None), (None, {"a": 1}), ({"a": 1.50}, {"a": 1.5}), ({"a": 2}, {})]
    cases += [({"a": None}, {"a": 3}), ({"a": 3}, {"a": None}), ({}, {"a": None}), ({"a": 0.1}, {"a": 0.2})]
    cases += [(counts(rng), counts(rng)) for _ in range(CASES)]
    for a, b in cases:
        params = {"a": None if a is None else json.dumps(a), "b": None if b is None else json.dumps(b)}
        old, new = await both(db, "{f}_jsonb_add(CAST(:a AS jsonb), CAST(:b AS jsonb))", params)
        assert new == old, (a, b)


async def test_the_event_paths_favourite_category_is_the_one_sql_picks(db: AsyncConnection) -> None:
    """The event path picks the favourite category in Python from the spend the upsert returns (read through
    the pool's JSON decoding); ``GET /v1/customers/{id}`` picks it with ``delight_jsonb_top_key``."""
    rng = random.Random(2311)
    ties = [({"b": 5, "B": 5, "a": 5}, None), ({"kitchen": 12.5, "lamps": 12.50}, None), ({"é": 1, "z": 1}, None)]
    cases = [*ties, ({"a": 0.1}, {"a": 0.2, "b": 0.3}), ({"a": -1, "b": 0}, None), ({"a": None}, {"b": None})]
    cases += [(counts(rng), counts(rng)) for _ in range(CASES)]
    for a, b in cases:
        params = {"a": None if a is None else json.dumps(a), "b": None if b is None else json.dumps(b)}
        spend, top = (
            await db.execute(
                text(
                    "SELECT s, delight_jsonb_top_key(s) FROM "
                    "(SELECT coalesce(delight_jsonb_add(CAST(:a AS jsonb), CAST(:b AS jsonb)), '{}') AS s) AS t"
                ),
                params,
            )
        ).one()
        assert favourite(spend) == top, (a, b, spend)


def names(n: int, prefix: str, value: float = 1) -> dict[str, float]:
    return {f"{prefix}{i:03d}": value for i in range(n)}


@pytest.mark.parametrize(
    ("a", "b", "kept"),
    [
        (names(99, "a"), names(5, "b"), 100),  # room for one new key: the first in code point order
        (names(100, "a"), {"b": 1, "a001": 2}, 100),  # full: a known key still counts, a new one is left out
        (names(150, "a"), names(3, "0"), 150),  # a profile over the cap from before keeps all it has
        ({}, names(120, "c"), 100),
        (names(60, "k"), names(60, "j"), 100),  # new keys that sort before the known ones: the first 40
        (names(3, "k"), names(3, "k", 2.5), 3),
    ],
)
async def test_a_profile_map_keeps_its_keys_and_takes_new_ones_while_it_holds_fewer_than_100(
    db: AsyncConnection, a: dict[str, float], b: dict[str, float], kept: int
) -> None:
    row = await db.execute(
        text("SELECT delight_jsonb_add_capped(CAST(:a AS jsonb), CAST(:b AS jsonb))"),
        {"a": json.dumps(a), "b": json.dumps(b)},
    )
    in_sql = {k: float(v) for k, v in row.scalar_one().items()}
    in_python = {k: float(v) for k, v in add_counts(a, b).items()}
    assert in_sql == in_python
    assert len(in_sql) == kept
    assert set(a) <= set(in_sql)
    assert MAX_PROFILE_KEYS == 100
