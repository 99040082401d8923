"""Surprise controls through the real HTTP stack, with real concurrency against PostgreSQL.

Each test runs its own rule pack in its own app; the requests of one test are
posted at once (``asyncio.gather`` over a pool of database connections), so
budgets, limits and stock are exercised the way a shop full of tills would.
"""

from __future__ import annotations

import datetime as dt
import json
import random
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from service.controls.plan import LOG_LIMIT, LogEntry, log_after
from tests.conftest import AppFactory, interaction, post_all, purchase, truncate


async def scalar(engine: AsyncEngine, sql: str) -> Any:
    async with engine.connect() as connection:
        return (await connection.execute(text(sql))).scalar_one()


BUDGET_100 = """\
campaign: promo
budget: {awards: 100}
rules:
  - id: mug-for-all
    when: type == "purchase"
    award: {gift: mug}
"""


async def test_budget_of_100_awards_gives_exactly_100_to_500_customers_posting_at_once(
    rules_app: AppFactory, keys: dict[str, Any], engine: AsyncEngine
) -> None:
    async with rules_app(BUDGET_100) as client:
        awards = await post_all(client, keys, [purchase(f"e-{i}", f"c-{i}", 50.0) for i in range(500)])
    assert len(awards) == 100
    assert await scalar(engine, "SELECT count(*) FROM awards") == 100
    assert await scalar(engine, "SELECT sum(n) FROM counters WHERE key = 'budget:promo'") == 100


async def test_spent_budget_still_answers_201_and_later_events_win_nothing(
    rules_app: AppFactory, keys: dict[str, Any]
) -> None:
    campaign = BUDGET_100.replace("awards: 100", "awards: 2")
    async with rules_app(campaign) as client:
        first = await post_all(client, keys, [purchase(f"e-{i}", f"c-{i}", 50.0) for i in range(2)])
        later = await client.post("/v1/events", json=purchase("e-9", "c-9", 50.0), headers=keys["events:write"])
    assert len(first) == 2
    assert later.status_code == 201
    assert later.json()["awards"] == []


async def test_one_per_90_days_gives_one_award_to_50_simultaneous_purchases_of_one_customer(
    rules_app: AppFactory, keys: dict[str, Any], engine: AsyncEngine
) -> None:
    campaign = """\
    campaign: once
    rules:
      - id: mug-once
        when: type == "purchase"
        award: {gift: mug}
        limit: {per_customer: 1, every: 90d}
    """
    async with rules_app(campaign) as client:
        awards = await post_all(client, keys, [purchase(f"e-{i}", "c-1", 50.0) for i in range(50)])
    assert len(awards) == 1
    assert await scalar(engine, "SELECT count(*) FROM awards WHERE customer_id = 'c-1'") == 1


async def test_stock_of_10_gives_exactly_10_lamps(
    rules_app: AppFactory, keys: dict[str, Any], engine: AsyncEngine
) -> None:
    campaign = """\
    campaign: lamps
    rules:
      - id: lamp
        when: type == "purchase"
        award: {gift: lamp}
    """
    async with rules_app(campaign) as client:
        awards = await post_all(client, keys, [purchase(f"e-{i}", f"c-{i}", 50.0) for i in range(80)])
    assert len(awards) == 10
    assert await scalar(engine, "SELECT count(*) FROM awards WHERE gift_id = 'lamp'") == 10


async def test_money_budget_is_never_exceeded_by_a_cent_and_is_spent_to_the_last_mug(
    rules_app: AppFactory, keys: dict[str, Any], engine: AsyncEngine
) -> None:
    campaign = """\
    campaign: money
    budget: {cost: 100.00}
    rules:
      - id: mug
        when: type == "purchase"
        award: {gift: mug}
    """
    async with rules_app(campaign) as client:
        awards = await post_all(client, keys, [purchase(f"e-{i}", f"c-{i}", 50.0) for i in range(200)])
    assert len(awards) == 32  # 32 x 3.10 = 99.20; a 33rd would be 102.30
    assert await scalar(engine, "SELECT sum(cost) FROM awards") == Decimal("99.20")


async def test_mixed_costs_never_exceed_the_money_budget(
    rules_app: AppFactory, keys: dict[str, Any], engine: AsyncEngine
) -> None:
    campaign = """\
    campaign: mixed
    budget: {cost: 50.00}
    rules:
      - id: vase-for-big
        when: type == "purchase" and order.total >= 100
        award: {gift: vase}
      - id: mug-for-small
        when: type == "purchase" and order.total < 100
        award: {gift: mug}
    """
    events = [purchase(f"e-{i}", f"c-{i}", 150.0 if i % 2 else 50.0) for i in range(200)]
    async with rules_app(campaign) as client:
        await post_all(client, keys, events)
    spent = await scalar(engine, "SELECT sum(cost) FROM awards")
    assert Decimal("45.50") < spent <= Decimal("50.00")  # within one vase of the budget, never over
    assert await scalar(engine, "SELECT sum(cents) FROM counters WHERE key = 'budget:mixed'") == int(spent * 100)


async def test_daily_pacing_spreads_the_budget_over_shop_local_days(
    rules_app: AppFactory, keys: dict[str, Any]
) -> None:
    campaign = """\
    campaign: paced
    budget: {awards: 100, daily_awards: 5}
    rules:
      - id: mug
        when: type == "purchase"
        award: {gift: mug}
    """
    day_one = [purchase(f"a-{i}", f"c-{i}", 50.0, occurred_at="2026-03-01T22:30:00Z") for i in range(20)]
    day_two = [purchase(f"b-{i}", f"d-{i}", 50.0, occurred_at="2026-03-01T23:30:00Z") for i in range(20)]
    async with rules_app(campaign, settings="seed: x\ntimezone: Europe/Madrid\n") as client:
        first = await post_all(client, keys, day_one)  # 23:30 on 1 March in Madrid
        second = await post_all(client, keys, day_two)  # 00:30 on 2 March in Madrid
    assert (len(first), len(second)) == (5, 5)


async def test_holdout_customers_qualify_are_recorded_as_control_and_get_nothing(
    rules_app: AppFactory, keys: dict[str, Any], engine: AsyncEngine
) -> None:
    campaign = """\
    campaign: held
    holdout: 0.5
    rules:
      - id: mug
        when: type == "purchase"
        award: {gift: mug}
    """
    async with rules_app(campaign) as client:
        awards = await post_all(client, keys, [purchase(f"e-{i}", f"c-{i}", 50.0) for i in range(300)])
        again = await post_all(client, keys, [purchase(f"f-{i}", f"c-{i}", 50.0) for i in range(300)])
    treated = {a["event_id"].removeprefix("e-") for a in awards}
    assert {a["event_id"].removeprefix("f-") for a in again} == treated  # the group sticks to the customer
    control = await scalar(engine, "SELECT count(DISTINCT customer_id) FROM exposures WHERE \"group\" = 'control'")
    assert control + len(treated) == 300
    assert 0.4 < control / 300 < 0.6
    every_award_is_a_treatment_exposure = "SELECT count(*) FROM awards a JOIN exposures x USING (award_id)"
    assert await scalar(engine, every_award_is_a_treatment_exposure) == len(awards) + len(again)
    control_with_award = "SELECT count(*) FROM exposures WHERE \"group\" = 'control' AND award_id IS NOT NULL"
    assert await scalar(engine, control_with_award) == 0


async def test_control_customers_are_not_recorded_once_the_budget_is_spent(
    rules_app: AppFactory, keys: dict[str, Any], engine: AsyncEngine
) -> None:
    campaign = """\
    campaign: held
    holdout: 0.5
    budget: {awards: 3}
    rules:
      - id: mug
        when: type == "purchase"
        award: {gift: mug}
    """
    async with rules_app(campaign) as client:
        for i in range(40):  # one at a time: the budget runs out part-way
            await client.post("/v1/events", json=purchase(f"e-{i}", f"c-{i}", 50.0), headers=keys["events:write"])
        last_exposure = await scalar(engine, "SELECT max(event_id::text) FROM exposures")
    treated = await scalar(engine, "SELECT count(*) FROM exposures WHERE \"group\" = 'treatment'")
    assert treated == 3
    # every control exposure happened while a treated customer could still have been awarded
    after = await scalar(
        engine,
        "SELECT count(*) FROM exposures x WHERE \"group\" = 'control' AND x.occurred_at > "
        "(SELECT max(occurred_at) FROM exposures WHERE \"group\" = 'treatment')",
    )
    assert after == 0
    assert last_exposure is not None


async def test_fatigue_cap_allows_one_surprise_and_the_higher_priority_rule_wins(
    rules_app: AppFactory, keys: dict[str, Any]
) -> None:
    first = """\
    campaign: alpha
    rules:
      - id: mug
        when: type == "purchase"
        award: {gift: mug}
    """
    second = """\
    campaign: beta
    rules:
      - id: vase
        when: type == "purchase"
        award: {gift: vase}
        priority: 5
    """
    settings = "seed: x\nfatigue: {max: 1, every: 30d}\n"
    async with rules_app(first, second, settings=settings) as client:
        [award] = await post_all(client, keys, [purchase("e-1", "c-1", 50.0)])
        later = await post_all(client, keys, [purchase("e-2", "c-1", 50.0, occurred_at="2026-03-20T10:00:00Z")])
        much_later = await post_all(client, keys, [purchase("e-3", "c-1", 50.0, occurred_at="2026-04-15T10:00:00Z")])
    assert award["rule_id"] == "vase"
    assert later == []
    assert [a["rule_id"] for a in much_later] == ["vase"]


async def test_limits_judge_a_late_event_by_when_it_happened(rules_app: AppFactory, keys: dict[str, Any]) -> None:
    campaign = """\
    campaign: once
    rules:
      - id: mug
        when: type == "purchase"
        award: {gift: mug}
        limit: {per_customer: 1, every: 90d}
    """
    async with rules_app(campaign) as client:
        day_100 = await post_all(client, keys, [purchase("e-100", "c-1", 50.0, occurred_at="2026-04-10T10:00:00Z")])
        late_day_50 = await post_all(client, keys, [purchase("e-50", "c-1", 50.0, occurred_at="2026-02-19T10:00:00Z")])
        day_200 = await post_all(client, keys, [purchase("e-200", "c-1", 50.0, occurred_at="2026-07-19T10:00:00Z")])
    assert [len(day_100), len(late_day_50), len(day_200)] == [1, 0, 1]


async def test_campaign_limit_caps_surprises_per_customer_across_its_rules(
    rules_app: AppFactory, keys: dict[str, Any]
) -> None:
    campaign = """\
    campaign: capped
    limit: {per_customer: 2, every: 30d}
    rules:
      - id: mug
        when: type == "purchase"
        award: {gift: mug}
      - id: review
        when: type == "interaction"
        award: {points: 10}
    """
    async with rules_app(campaign) as client:
        won = await post_all(
            client,
            keys,
            [purchase("e-1", "c-1", 50.0), interaction("i-1", "c-1"), purchase("e-2", "c-1", 50.0)],
        )
    assert len(won) == 2


async def test_replaying_the_same_history_on_a_fresh_database_gives_the_same_winners(
    rules_app: AppFactory, keys: dict[str, Any], engine: AsyncEngine
) -> None:
    campaign = """\
    campaign: lucky
    holdout: 0.2
    rules:
      - id: mug
        when: type == "purchase"
        chance: 0.3
        award: {gift: mug}
    """
    events = [purchase(f"e-{i}", f"c-{i % 40}", 50.0) for i in range(120)]
    async with rules_app(campaign) as client:
        first = {a["event_id"] for a in await post_all(client, keys, events)}
        await truncate(engine, ("exposures", "points_ledger", "awards", "events", "event_ids", "customers", "counters"))
        second = {a["event_id"] for a in await post_all(client, keys, events)}
    assert first == second
    assert 15 < len(first) < 45


async def test_rules_endpoint_shows_budget_spent_and_left_stock_left_and_awards_today(
    rules_app: AppFactory, keys: dict[str, Any]
) -> None:
    campaign = """\
    campaign: visible
    budget: {awards: 100, cost: 500.00, daily_awards: 50}
    rules:
      - id: lamp
        when: type == "purchase"
        award: {gift: lamp}
    """
    now = dt.datetime.now(dt.UTC).isoformat()
    async with rules_app(campaign) as client:
        await post_all(client, keys, [purchase(f"e-{i}", f"c-{i}", 50.0, occurred_at=now) for i in range(3)])
        body = (await client.get("/v1/rules", headers=keys["rules:admin"])).json()
    [state] = body["campaigns"]
    assert state["budget"]["awards_spent"] == 3
    assert state["budget"]["awards_left"] == 97
    assert state["budget"]["cost_spent"] == 60.0
    assert state["budget"]["cost_left"] == 440.0
    assert state["budget"]["awards_today"] == 3
    assert state["awards_today"] == 3
    lamp = next(g for g in body["gifts"] if g["id"] == "lamp")
    assert (lamp["stock"], lamp["stock_left"]) == (10, 7)


@pytest.mark.parametrize("budget", ["budget: {awards: 100}", "holdout: 0"], ids=["counters drawn", "no counters"])
async def test_the_surprise_log_stays_in_event_time_and_keeps_its_newest_entries(
    rules_app: AppFactory, keys: dict[str, Any], engine: AsyncEngine, budget: str
) -> None:
    """The statement that writes the awards also writes the log; it must agree with ``log_after``, which the
    back-test and dry-run use: a late event's entries go in at its time, and only the newest are kept."""
    at = dt.datetime(2026, 6, 1, 10, tzinfo=dt.UTC)
    day = 86400
    epoch = int(at.timestamp())
    # a full log, none of it near enough to the event for a limit to apply: older entries and later ones
    planted = [LogEntry(epoch - 40 * day - i * 3600, "old", f"r{i % 3}") for i in range(300)]
    planted += [LogEntry(epoch + 40 * day + i * 3600, "old", "r0", interaction=i % 2 == 0) for i in range(200)]
    assert len(planted) == LOG_LIMIT
    stored_order = random.Random(7).sample(planted, len(planted))  # out of order, as no writer leaves it
    planted.sort(key=lambda e: e.at)
    campaign = f"""\
    campaign: promo
    {budget}
    rules:
      - id: mug
        when: type == "purchase"
        award: {{gift: mug}}
      - id: points
        when: type == "purchase"
        award: {{points: 10}}
    """
    async with rules_app(campaign) as client:
        await post_all(client, keys, [interaction("i-0", "c-1")])  # the customer, with nothing won
        async with engine.begin() as connection:
            await connection.execute(
                text("UPDATE customers SET award_log = CAST(:log AS jsonb) WHERE customer_id = 'c-1'"),
                {"log": json.dumps([e.to_json() for e in stored_order])},
            )
        won = await post_all(client, keys, [purchase("e-1", "c-1", 50.0, occurred_at=at.isoformat())])
    assert [a["rule_id"] for a in won] == ["mug", "points"]
    drawn = await scalar(engine, "SELECT coalesce(sum(n), 0) FROM counters")
    assert drawn == (2 if budget.startswith("budget") else 0)
    expected = log_after(stored_order, [LogEntry(epoch, "promo", "mug"), LogEntry(epoch, "promo", "points")])
    stored = await scalar(engine, "SELECT award_log FROM customers WHERE customer_id = 'c-1'")
    assert stored == expected
    assert len(stored) == LOG_LIMIT
    assert stored[0] == planted[2].to_json()  # the two oldest entries made room
