"""The event path's SQL helpers, rewritten for speed (migration 0009), give what the definitions they replaced gave.

The replaced definitions are read from the migrations that created them and
installed as temporary functions next to the current ones; both run over the
same generated inputs, edge cases included, and their results must be equal
to the letter (``::text``, so 1.50 and 1.5 differ). The timeline functions
keep their bodies word for word (only how they return changed); the uplift
tests check what they compute.
"""

from __future__ import annotations

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

from service.customers.profile import favourite

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
    initial, first_exposures = migration("0001_initial_schema.py"), migration("0007_first_exposures.py")
    async with engine.connect() as connection:
        transaction = await connection.begin()
        try:
            for created, name in (
                (initial.JSONB_ADD, "delight_jsonb_add"),
                (first_exposures.CUMULATIVE_ADD, "delight_cumulative_add"),
                (first_exposures.OFFSETS_ADD, "delight_offsets_add"),
            ):
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


def timeline(rng: random.Random) -> tuple[list[int], list[int]]:
    """Offsets (ascending, distinct) and running totals, as stored on a first exposure."""
    offsets = sorted(rng.sample(range(1, 120), rng.randint(0, 7)))
    totals, running = [], 0
    for _ in offsets:
        running += rng.choice([0, 1, 250, 1999, 120_000])
        totals.append(running)
    return offsets, totals


async def test_cumulative_add_gives_what_the_sql_definition_gave(db: AsyncConnection) -> None:
    rng = random.Random(20261123)
    cases = [([], [], 0, 5), ([], [], 7, 0), ([10], [300], 10, 20), ([10], [300], 9, 20), ([10], [300], 11, -5)]
    for _ in range(CASES):
        offsets, totals = timeline(rng)
        at = rng.choice([*offsets, 0, rng.randint(0, 130)])
        cases.append((offsets, totals, at, rng.choice([0, 1, 499, -300, 9_000_000])))
    for offsets, totals, at, amount in cases:
        params = {"s": offsets, "c": totals, "o": at, "v": amount}
        old, new = await both(db, "{f}_cumulative_add(CAST(:s AS integer[]), CAST(:c AS bigint[]), :o, :v)", params)
        assert new == old, params


async def test_offsets_add_gives_what_the_sql_definition_gave(db: AsyncConnection) -> None:
    rng = random.Random(7)
    for _ in range(CASES):
        offsets, _ = timeline(rng)
        params = {"s": offsets, "o": rng.choice([*offsets, 0, rng.randint(0, 130)])}
        old, new = await both(db, "{f}_offsets_add(CAST(:s AS integer[]), :o)", params)
        assert new == old, params


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
