"""The PL/pgSQL surprise controls (migrations 0002 and 0011) against the real test database.

``delight_take`` draws from a counter split over 16 shards, from the first
shard with room that no other transaction holds (its home shard first), and
must never let the sum pass a cap; ``delight_room`` tells whether a counter
has room without drawing; ``delight_reserve`` must accept exactly the
candidates that ``plan.accept`` accepts with ``MemoryCounters``. Most tests
run in a transaction that is rolled back; the concurrency tests commit, and
the autouse fixture empties ``counters`` before every test.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import bindparam, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from service.controls.plan import SHARDS, Candidate, MemoryCounters, Plan, Take, accept, home_shard, reserve_payload
from service.lib.db import create_engine
from service.lib.settings import DatabaseSettings
from service.rules.engine import Outcome

TAKE = text("SELECT delight_take(:key, :home, :cap_n, :cap_cents, :cents)")
ROOM = text("SELECT delight_room(:key, :cap_n, :cap_cents, :cents)")
RESERVE = text("SELECT delight_reserve(:plan)").bindparams(bindparam("plan", type_=JSONB))
SHARD_CAP = text("SELECT delight_shard_cap(:total, :shard)")
TOTALS = text("SELECT coalesce(sum(n), 0) AS n, coalesce(sum(cents), 0) AS cents FROM counters WHERE key = :key")
SHARD_ROWS = text("SELECT shard, n, cents FROM counters WHERE key = :key ORDER BY shard")


@pytest.fixture
async def db(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """One connection inside a transaction that is rolled back at the end."""
    async with engine.connect() as connection:
        transaction = await connection.begin()
        try:
            yield connection
        finally:
            await transaction.rollback()


async def take(
    db: AsyncConnection, key: str, home: int, cap_n: int | None = None, cap_cents: int | None = None, cents: int = 0
) -> bool:
    params = {"key": key, "home": home, "cap_n": cap_n, "cap_cents": cap_cents, "cents": cents}
    return bool((await db.execute(TAKE, params)).scalar_one())


async def room(
    db: AsyncConnection, key: str, cap_n: int | None = None, cap_cents: int | None = None, cents: int = 0
) -> bool:
    params = {"key": key, "cap_n": cap_n, "cap_cents": cap_cents, "cents": cents}
    return bool((await db.execute(ROOM, params)).scalar_one())


async def totals(db: AsyncConnection, key: str) -> tuple[int, int]:
    row = (await db.execute(TOTALS, {"key": key})).one()
    return int(row.n), int(row.cents)


async def shard_caps(db: AsyncConnection, total: int) -> list[int]:
    return [int((await db.execute(SHARD_CAP, {"total": total, "shard": s})).scalar_one()) for s in range(SHARDS)]


async def assert_within_shard_slices(db: AsyncConnection, key: str, cap_n: int | None, cap_cents: int | None) -> None:
    """No shard holds more than its slice of a cap: the invariant that makes the fast path exact."""
    rows = (await db.execute(SHARD_ROWS, {"key": key})).all()
    assert [r.shard for r in rows] == list(range(SHARDS))
    if cap_n is not None:
        caps = await shard_caps(db, cap_n)
        assert all(r.n <= caps[r.shard] for r in rows), [(r.shard, r.n, caps[r.shard]) for r in rows]
    if cap_cents is not None:
        caps = await shard_caps(db, cap_cents)
        assert all(r.cents <= caps[r.shard] for r in rows), [(r.shard, r.cents, caps[r.shard]) for r in rows]


async def reserve(db: AsyncConnection, payload: dict[str, Any]) -> list[int]:
    return list((await db.execute(RESERVE, {"plan": payload})).scalar_one())


def candidate(campaign: str, group: str, *takes: Take, rule_id: str = "r") -> Candidate:
    return Candidate(Outcome(campaign, rule_id, True, "awarded", None, None), group, tuple(takes), 0)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------- shard slices


async def test_shard_slices_add_up_to_the_cap(db: AsyncConnection) -> None:
    for total in (0, 1, 15, 16, 17, 25, 1000, 123_457):
        caps = await shard_caps(db, total)
        assert sum(caps) == total
        assert max(caps) - min(caps) <= 1


# ---------------------------------------------------------------------------------------------- delight_take: units


async def test_take_gives_the_whole_unit_cap_from_one_home_shard_then_refuses(db: AsyncConnection) -> None:
    """Cap 20: the home shard holds 2, the other 18 come from the shards after it; the 21st take fails."""
    results = [await take(db, "budget:units", 3, cap_n=20) for _ in range(21)]
    assert results == [True] * 20 + [False]
    assert await totals(db, "budget:units") == (20, 0)
    await assert_within_shard_slices(db, "budget:units", 20, None)


@pytest.mark.parametrize("seed", range(5))
async def test_take_never_lets_units_pass_the_cap_with_random_homes(db: AsyncConnection, seed: int) -> None:
    rng = random.Random(seed)
    cap = rng.randint(1, 60)
    key = f"budget:random-{seed}"
    results = [await take(db, key, rng.randrange(SHARDS), cap_n=cap) for _ in range(cap + 25)]
    assert results == [True] * cap + [False] * 25
    assert await totals(db, key) == (cap, 0)
    await assert_within_shard_slices(db, key, cap, None)


async def test_take_with_a_cap_below_the_shard_count_still_gives_every_unit(db: AsyncConnection) -> None:
    """Cap 3: thirteen shards have a slice of 0, so most homes must take from another shard."""
    results = [await take(db, "stock:rare", home, cap_n=3) for home in (15, 14, 13, 12, 0)]
    assert results == [True, True, True, False, False]
    assert await totals(db, "stock:rare") == (3, 0)


async def test_take_with_a_zero_cap_always_refuses(db: AsyncConnection) -> None:
    assert not await take(db, "budget:none", 0, cap_n=0)
    assert not await take(db, "budget:none-money", 7, cap_cents=0, cents=1)
    assert await totals(db, "budget:none") == (0, 0)
    assert await totals(db, "budget:none-money") == (0, 0)


async def test_take_without_caps_always_succeeds_and_counts(db: AsyncConnection) -> None:
    assert all([await take(db, "budget:open", home % SHARDS, cents=250) for home in range(40)])
    assert await totals(db, "budget:open") == (40, 10_000)


# ---------------------------------------------------------------------------------------------- delight_take: money


async def test_take_splits_money_over_shards_when_no_single_shard_has_room(db: AsyncConnection) -> None:
    """Cap 10.00 in 16 slices of about 0.63: three 3.00 draws from one home fit, a fourth does not, 1.00 does."""
    key = "budget:money"
    results = [await take(db, key, 5, cap_cents=1000, cents=300) for _ in range(4)]
    assert results == [True, True, True, False]
    assert await take(db, key, 5, cap_cents=1000, cents=100)
    assert not await take(db, key, 11, cap_cents=1000, cents=1)
    assert await totals(db, key) == (4, 1000)
    await assert_within_shard_slices(db, key, None, 1000)


async def test_take_free_units_still_count_when_the_money_is_spent(db: AsyncConnection) -> None:
    key = "budget:free"
    assert await take(db, key, 2, cap_cents=100, cents=100)
    assert not await take(db, key, 2, cap_cents=100, cents=1)
    assert await take(db, key, 2, cap_cents=100, cents=0)
    assert await totals(db, key) == (2, 100)


@pytest.mark.parametrize("seed", range(5))
async def test_take_never_lets_money_pass_the_cap_with_random_amounts_and_homes(db: AsyncConnection, seed: int) -> None:
    rng = random.Random(1000 + seed)
    cap = rng.randint(0, 5000)
    key = f"budget:money-{seed}"
    memory = MemoryCounters()
    for _ in range(60):
        cents = rng.choice([0, 1, rng.randint(1, 400), rng.randint(300, 1200)])
        expected = memory.take(Take(key, None, cap, cents))
        assert await take(db, key, rng.randrange(SHARDS), cap_cents=cap, cents=cents) == expected
    assert await totals(db, key) == (memory.n.get(key, 0), memory.cents.get(key, 0))
    assert memory.cents.get(key, 0) <= cap
    await assert_within_shard_slices(db, key, None, cap)


@pytest.mark.parametrize("seed", range(5))
async def test_take_with_both_caps_refuses_when_either_is_spent(db: AsyncConnection, seed: int) -> None:
    rng = random.Random(2000 + seed)
    cap_n, cap_cents = rng.randint(1, 40), rng.randint(100, 8000)
    key = f"budget:both-{seed}"
    memory = MemoryCounters()
    for _ in range(80):
        cents = rng.randint(0, 600)
        expected = memory.take(Take(key, cap_n, cap_cents, cents))
        assert await take(db, key, rng.randrange(SHARDS), cap_n=cap_n, cap_cents=cap_cents, cents=cents) == expected
    n, cents_total = await totals(db, key)
    assert (n, cents_total) == (memory.n.get(key, 0), memory.cents.get(key, 0))
    assert n <= cap_n
    assert cents_total <= cap_cents
    await assert_within_shard_slices(db, key, cap_n, cap_cents)


# ---------------------------------------------------------------------------------------------- delight_room


async def test_room_is_true_up_to_the_unit_cap_and_false_at_it(db: AsyncConnection) -> None:
    key = "budget:room"
    assert await room(db, key, cap_n=3)  # a counter never drawn from
    assert not await room(db, key, cap_n=0)
    for _ in range(2):
        assert await take(db, key, 0, cap_n=3)
    assert await room(db, key, cap_n=3)  # 2 + 1 <= 3
    assert await take(db, key, 0, cap_n=3)
    assert not await room(db, key, cap_n=3)  # 3 + 1 > 3
    assert await room(db, key, cap_n=4)  # a raised cap has room again
    assert await room(db, key)  # no cap at all


async def test_room_is_true_up_to_the_money_cap_and_false_one_cent_over(db: AsyncConnection) -> None:
    key = "budget:room-money"
    assert await room(db, key, cap_cents=1000, cents=1000)
    assert not await room(db, key, cap_cents=1000, cents=1001)
    assert await take(db, key, 9, cap_cents=1000, cents=700)
    assert await room(db, key, cap_cents=1000, cents=300)
    assert not await room(db, key, cap_cents=1000, cents=301)
    assert await room(db, key, cap_n=2, cap_cents=1000, cents=300)
    assert not await room(db, key, cap_n=1, cap_cents=1000, cents=300)


async def test_room_draws_nothing(db: AsyncConnection) -> None:
    key = "budget:look"
    assert await take(db, key, 4, cap_n=5, cap_cents=500, cents=100)
    for _ in range(10):
        assert await room(db, key, cap_n=5, cap_cents=500, cents=100)
    assert await totals(db, key) == (1, 100)


# ---------------------------------------------------------------------------------------------- delight_reserve


async def test_reserve_records_a_held_out_candidate_with_room_without_drawing(db: AsyncConnection) -> None:
    budget = Take("budget:held", 5, 1000, 400)
    plan = Plan([candidate("c", "control", budget)], {}, None)
    assert await reserve(db, reserve_payload(plan, "e-1")) == [0]
    assert await totals(db, "budget:held") == (0, 0)
    plan = Plan([candidate("c", "control", Take("budget:held", 5, 1000, 1001))], {}, None)
    assert await reserve(db, reserve_payload(plan, "e-2")) == []


async def test_reserve_draws_neither_counter_when_the_second_is_spent(db: AsyncConnection) -> None:
    budget = Take("budget:pair", 10, 10_000, 450)
    stock = Take("stock:pair", 1, None, 0)
    assert await take(db, "stock:pair", 0, cap_n=1)
    plan = Plan([candidate("c", "treatment", budget, stock), candidate("d", "treatment", budget)], {}, None)
    assert await reserve(db, reserve_payload(plan, "e-1")) == [1]
    assert await totals(db, "budget:pair") == (1, 450)  # only the second candidate's draw
    assert await totals(db, "stock:pair") == (1, 0)


async def test_reserve_applies_campaign_slots_and_fatigue_in_candidate_order(db: AsyncConnection) -> None:
    budget = Take("budget:slots", 2, None, 0)
    plan = Plan(
        [
            candidate("a", "treatment", budget, rule_id="a1"),
            candidate("a", "treatment", rule_id="a2"),  # campaign a has one slot: refused
            candidate("b", "treatment", budget, rule_id="b1"),
            candidate("b", "treatment", budget, rule_id="b2"),  # budget spent: refused, fatigue slot kept
            candidate("c", "control", rule_id="c1"),
            candidate("d", "treatment", rule_id="d1"),  # fatigue spent
        ],
        {"a": 1},
        3,
    )
    assert await reserve(db, reserve_payload(plan, "e-1")) == [0, 2, 4]
    assert await totals(db, "budget:slots") == (2, 0)


# ---------------------------------------------------------------------------------------------- reserve mirrors accept


def _random_scenario(rng: random.Random) -> tuple[dict[str, tuple[int | None, int | None]], list[Any], Plan, str]:
    """Keys with caps, pre-draws ``(key, home, cents)``, a plan of random candidates, and an event id."""
    keys: dict[str, tuple[int | None, int | None]] = {}
    for i in range(rng.randint(1, 4)):
        cap_n = rng.choice([None, 0, 1, 2, 3, 5, 8, 20])
        cap_cents = rng.choice([None, 0, 100, 500, 999, 1500, 3000])
        keys[f"k{i}"] = (cap_n, cap_cents)
    pre_draws = [
        (key, rng.randrange(SHARDS), rng.choice([0, 50, 100, 250, 400, 700]))
        for key in keys
        for _ in range(rng.randint(0, 10))
    ]
    campaigns = ["a", "b", "c"]
    candidates = []
    for j in range(rng.randint(0, 7)):
        chosen = sorted(rng.sample(sorted(keys), rng.randint(0, min(3, len(keys)))))
        takes = tuple(Take(k, *keys[k], rng.choice([0, 50, 100, 250, 400])) for k in chosen)
        group = "control" if rng.random() < 0.3 else "treatment"
        candidates.append(candidate(rng.choice(campaigns), group, *takes, rule_id=f"r{j}"))
    slots = {c: rng.randint(-1, 3) for c in campaigns if rng.random() < 0.5}
    fatigue = rng.choice([None, None, -1, 0, 1, 2, 3, 5])
    return keys, pre_draws, Plan(candidates, slots, fatigue), f"event-{rng.randrange(10**9)}"


async def test_reserve_accepts_exactly_what_accept_accepts_with_memory_counters(db: AsyncConnection) -> None:
    """200 random scenarios: same pre-drawn usage on both sides, then the same candidates.

    Both sides must accept the same positions and leave the same counters.
    """
    disagreements = []
    for seed in range(200):
        rng = random.Random(seed)
        keys, pre_draws, plan, event_id = _random_scenario(rng)
        prefix = f"s{seed}:"
        memory = MemoryCounters()
        for key, home, cents in pre_draws:
            cap_n, cap_cents = keys[key]
            expected = memory.take(Take(prefix + key, cap_n, cap_cents, cents))
            got = await take(db, prefix + key, home, cap_n=cap_n, cap_cents=cap_cents, cents=cents)
            assert got == expected, (seed, "pre-draw", key, home, cents, keys[key])

        prefixed = Plan(
            [
                Candidate(
                    c.outcome, c.group, tuple(Take(prefix + t.key, t.cap_n, t.cap_cents, t.cents) for t in c.takes), 0
                )
                for c in plan.candidates
            ],
            dict(plan.campaign_slots),
            plan.fatigue_slots,
        )
        payload = reserve_payload(prefixed, event_id)
        from_sql = await reserve(db, payload)
        in_memory = accept(prefixed, memory.take, memory.room, memory.give_back)
        state_sql = {prefix + k: await totals(db, prefix + k) for k in keys}
        state_memory = {prefix + k: (memory.n.get(prefix + k, 0), memory.cents.get(prefix + k, 0)) for k in keys}
        if from_sql != in_memory or state_sql != state_memory:
            disagreements.append(
                {
                    "seed": seed,
                    "home": home_shard(event_id),
                    "sql": from_sql,
                    "accept": in_memory,
                    "sql_counters": state_sql,
                    "memory_counters": state_memory,
                    "payload": payload,
                }
            )
    assert disagreements == [], json.dumps(disagreements[:3], indent=1)


def test_the_random_scenarios_exercise_every_branch() -> None:
    """Guards the property test above: its scenarios must include refusals of each kind and all-or-nothing draws."""
    seen = {"control refused": 0, "multi-take refused": 0, "slot refused": 0, "fatigue refused": 0, "accepted": 0}
    for seed in range(200):
        rng = random.Random(seed)
        keys, pre_draws, plan, _ = _random_scenario(rng)
        memory = MemoryCounters()
        for key, _, cents in pre_draws:
            memory.take(Take(key, *keys[key], cents))
        accepted = set(accept(plan, memory.take, memory.room, memory.give_back))
        seen["accepted"] += len(accepted)
        for i, c in enumerate(plan.candidates):
            note = plan.notes.get((c.campaign, c.outcome.rule_id), "")
            if i in accepted:
                continue
            if note.startswith("fatigue"):
                seen["fatigue refused"] += 1
            elif note.startswith("campaign"):
                seen["slot refused"] += 1
            elif c.group == "control":
                seen["control refused"] += 1
            elif len(c.takes) > 1:
                seen["multi-take refused"] += 1
    assert all(count >= 10 for count in seen.values()), seen


# ---------------------------------------------------------------------------------------------- concurrency


@pytest.fixture
async def wide_engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    """An engine whose pool holds 40 connections at once."""
    engine = create_engine(database_url, DatabaseSettings(url=database_url, pool_size=40, max_overflow=5))
    yield engine
    await engine.dispose()


async def _concurrent_takes(
    engine: AsyncEngine, count: int, key: str, *, cap_n: int | None, cap_cents: int | None, cents: int, seed: int
) -> list[bool]:
    """``count`` transactions on separate connections, all started before any draws, each one take then COMMIT."""
    rng = random.Random(seed)
    homes = [rng.randrange(SHARDS) for _ in range(count)]
    ready = asyncio.Barrier(count)

    async def one(home: int) -> bool:
        async with engine.connect() as connection:
            transaction = await connection.begin()
            await connection.execute(text("SELECT 1"))  # the transaction is open on the server
            await ready.wait()
            params = {"key": key, "home": home, "cap_n": cap_n, "cap_cents": cap_cents, "cents": cents}
            result = bool((await connection.execute(TAKE, params)).scalar_one())
            await transaction.commit()
            return result

    return await asyncio.wait_for(asyncio.gather(*(one(h) for h in homes)), timeout=60)


async def test_forty_concurrent_takes_on_a_cap_of_25_give_exactly_25(wide_engine: AsyncEngine) -> None:
    results = await _concurrent_takes(wide_engine, 40, "budget:x", cap_n=25, cap_cents=None, cents=0, seed=7)
    assert results.count(True) == 25
    async with wide_engine.connect() as connection:
        assert await totals(connection, "budget:x") == (25, 0)
        await assert_within_shard_slices(connection, "budget:x", 25, None)


async def test_forty_concurrent_money_takes_never_pass_the_money_cap(wide_engine: AsyncEngine) -> None:
    """Cap 50.00, 3.00 each: exactly 16 fit (48.00), however the homes collide."""
    results = await _concurrent_takes(wide_engine, 40, "budget:y", cap_n=None, cap_cents=5000, cents=300, seed=11)
    assert results.count(True) == 16
    async with wide_engine.connect() as connection:
        assert await totals(connection, "budget:y") == (16, 4800)
        await assert_within_shard_slices(connection, "budget:y", None, 5000)


async def test_concurrent_takes_on_a_counter_that_already_exists_hold_the_cap(wide_engine: AsyncEngine) -> None:
    """The rows already exist (no insert race): 40 takes on a cap of 30 with 12 already drawn give exactly 18."""
    async with wide_engine.begin() as connection:
        for home in range(12):
            assert await take(connection, "budget:z", home, cap_n=30)
    results = await _concurrent_takes(wide_engine, 40, "budget:z", cap_n=30, cap_cents=None, cents=0, seed=13)
    assert results.count(True) == 18
    async with wide_engine.connect() as connection:
        assert await totals(connection, "budget:z") == (30, 0)


@pytest.mark.parametrize("seed", range(4))
async def test_concurrent_takes_filling_a_counter_shard_by_shard_never_deadlock(
    wide_engine: AsyncEngine, seed: int
) -> None:
    """Cap 40 is a slice of 2 or 3 per shard: forty takes fill shards under each other, found full once locked."""
    key = f"budget:filling-{seed}"
    async with wide_engine.begin() as connection:  # the rows exist, so every take starts on the free-shard path
        assert await take(connection, key, 0, cap_n=40)
    results = await _concurrent_takes(wide_engine, 40, key, cap_n=40, cap_cents=None, cents=0, seed=seed)
    assert results.count(True) == 39
    async with wide_engine.connect() as connection:
        assert await totals(connection, key) == (40, 0)
        await assert_within_shard_slices(connection, key, 40, None)


async def _backend_pid(connection: AsyncConnection) -> int:
    return int((await connection.execute(text("SELECT pg_backend_pid()"))).scalar_one())


async def _wait_until_blocked(engine: AsyncEngine, pid: int) -> None:
    """Until backend ``pid`` waits on a lock (a row another transaction holds)."""
    query = text("SELECT wait_event_type FROM pg_stat_activity WHERE pid = :pid")
    for _ in range(500):
        async with engine.connect() as connection:
            if (await connection.execute(query, {"pid": pid})).scalar_one_or_none() == "Lock":
                return
        await asyncio.sleep(0.01)
    raise AssertionError(f"backend {pid} never waited on a lock")


async def test_a_take_skips_a_shard_another_event_holds_instead_of_waiting(wide_engine: AsyncEngine) -> None:
    """A holds its home shard 5 until it commits; B, with the same home, takes shard 6 at once."""
    key = "budget:held"
    async with wide_engine.begin() as connection:  # drawn before: its rows exist
        assert await take(connection, key, 0, cap_n=1000)
    async with wide_engine.connect() as a, wide_engine.connect() as b:
        a_transaction = await a.begin()
        assert await take(a, key, 5, cap_n=1000)
        b_transaction = await b.begin()
        await b.execute(text("SET LOCAL lock_timeout = '2s'"))  # waiting for A would fail the take
        assert await asyncio.wait_for(take(b, key, 5, cap_n=1000), timeout=1)
        await b_transaction.commit()
        await a_transaction.commit()
    async with wide_engine.connect() as connection:
        rows = (await connection.execute(SHARD_ROWS, {"key": key})).all()
    assert [(r.shard, r.n) for r in rows if r.n] == [(0, 1), (5, 1), (6, 1)]


async def test_takes_whose_home_shards_fill_while_they_wait_do_not_deadlock(wide_engine: AsyncEngine) -> None:
    """Two takes fall to the slow path after waiting on their (then spent) home shards: both must succeed.

    Cap 16 gives every shard a slice of 1, and twelve are spent already. A holds
    shard 5 and D holds shard 2 (each took its slice, not yet committed); E and
    F hold the other two with room (9 and 11) and will roll back. With every
    shard that has room held, B waits on its home shard 5 and C on 2. When A and
    D commit, B and C each find their home spent and must take, in shard order,
    from what E and F give back: room for both.
    """
    key = "budget:interleaved"
    async with wide_engine.begin() as connection:  # the counter's rows exist before the race, twelve spent
        await connection.execute(
            text(
                "INSERT INTO counters (key, shard, n) SELECT :key, g, CASE WHEN g IN (2, 5, 9, 11) THEN 0 ELSE 1 END "
                "FROM generate_series(0, 15) AS g"
            ),
            {"key": key},
        )
    connections = [await wide_engine.connect() for _ in range(6)]
    a, b, c, d, e, f = connections
    try:
        transactions = [await conn.begin() for conn in connections]
        assert await take(a, key, 5, cap_n=16)
        assert await take(d, key, 2, cap_n=16)
        holds = text("SELECT 1 FROM counters WHERE key = :key AND shard = :shard FOR UPDATE")
        await e.execute(holds, {"key": key, "shard": 9})
        await f.execute(holds, {"key": key, "shard": 11})

        async def take_and_commit(conn: AsyncConnection, home: int, transaction: Any) -> bool:
            result = await take(conn, key, home, cap_n=16)
            await transaction.commit()
            return result

        b_pid, c_pid = await _backend_pid(b), await _backend_pid(c)
        b_take = asyncio.create_task(take_and_commit(b, 5, transactions[1]))
        await _wait_until_blocked(wide_engine, b_pid)
        c_take = asyncio.create_task(take_and_commit(c, 2, transactions[2]))
        await _wait_until_blocked(wide_engine, c_pid)
        await transactions[0].commit()  # B wakes to a spent home shard and goes to the slow path
        await asyncio.sleep(0.2)
        await transactions[3].commit()  # so does C
        await asyncio.sleep(0.2)
        await transactions[4].rollback()  # shards 9 and 11 are free again
        await transactions[5].rollback()
        results = await asyncio.wait_for(asyncio.gather(b_take, c_take, return_exceptions=True), timeout=30)
    finally:
        for conn in connections:
            await conn.close()
    assert results == [True, True], [repr(r) for r in results]
    async with wide_engine.connect() as connection:
        assert await totals(connection, key) == (16, 0)
        await assert_within_shard_slices(connection, key, 16, None)
