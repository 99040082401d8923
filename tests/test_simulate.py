"""``POST /v1/rules/simulate`` through the real HTTP stack: it explains, it predicts, and it writes nothing.

Most tests run on the default test pack (``tests/fixtures/rules``); the ones
about holdout, limits, budgets and the agreement with the live path run their
own pack in a temporary directory, the way ``test_controls_http`` does.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import random
import textwrap
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from service.app import create_app
from service.controls.plan import holdout_group
from service.customers.repository import get_profile
from service.rules.engine import draw
from service.rules.loader import load_rule_set
from service.rules.ruleset import RuleSet
from tests.conftest import interaction, make_settings, purchase

Client = AsyncTestClient[Litestar]

CATALOG = """\
gifts:
  - id: mug
    name: Branded mug
    unit_cost: 3.10
  - id: vase
    name: Small vase
    unit_cost: 4.50
  - id: lamp
    name: Desk lamp
    unit_cost: 20.00
    stock: 3
"""

TABLES = ("events", "customers", "awards", "exposures", "points_ledger", "counters")


class Pack:
    """A rule pack in a directory: ``rule_set`` is it loaded, ``app()`` serves it."""

    def __init__(self, directory: Path, database_url: str, redis_url: str) -> None:
        self.directory = directory
        self.rule_set: RuleSet = load_rule_set(directory)
        self._settings = make_settings(database_url, redis_url, directory)

    @asynccontextmanager
    async def app(self) -> AsyncIterator[Client]:
        async with AsyncTestClient(app=create_app(self._settings), timeout=60) as client:
            yield client


@pytest.fixture
def make_pack(tmp_path: Path, database_url: str, redis_url: str) -> Callable[..., Pack]:
    """``make_pack(campaign_yaml, ..., settings=...)`` — a rule pack written to its own directory."""
    counter = itertools.count()

    def make(*campaigns: str, settings: str = "seed: simulate-tests\n") -> Pack:
        directory = tmp_path / f"rules-{next(counter)}"
        directory.mkdir()
        (directory / "catalog.yaml").write_text(CATALOG)
        (directory / "settings.yaml").write_text(textwrap.dedent(settings))
        for i, campaign in enumerate(campaigns):
            (directory / f"c{i}.yaml").write_text(textwrap.dedent(campaign))
        return Pack(directory, database_url, redis_url)

    return make


async def simulate(client: Client, keys: dict[str, Any], event: dict[str, Any], **body: Any) -> dict[str, Any]:
    response = await client.post("/v1/rules/simulate", json={"event": event, **body}, headers=keys["rules:admin"])
    assert response.status_code == 200, response.text
    return response.json()


async def post_event(client: Client, keys: dict[str, Any], event: dict[str, Any]) -> list[dict[str, Any]]:
    response = await client.post("/v1/events", json=event, headers=keys["events:write"])
    assert response.status_code == 201, response.text
    return response.json()["awards"]


def rule(result: dict[str, Any], rule_id: str) -> dict[str, Any]:
    [found] = [r for r in result["rules"] if r["rule_id"] == rule_id]
    return found


async def snapshot(engine: AsyncEngine) -> dict[str, Any]:
    """Row counts of every table an event writes, and the counters' totals."""
    async with engine.connect() as connection:
        counts = {t: (await connection.execute(text(f"SELECT count(*) FROM {t}"))).scalar_one() for t in TABLES}
        counts["counter_totals"] = (
            await connection.execute(text("SELECT coalesce(sum(n), 0), coalesce(sum(cents), 0) FROM counters"))
        ).one()
    return counts


async def stored_profile(sessionmaker: async_sessionmaker[AsyncSession], customer_id: str) -> dict[str, Any] | None:
    async with sessionmaker() as session:
        return await get_profile(session, customer_id)


# --- explaining one rule -------------------------------------------------------------------------------


async def test_simulate_explains_a_miss_clause_by_clause_with_the_false_clause_named(
    client: Client, keys: dict[str, Any]
) -> None:
    result = await simulate(client, keys, purchase("sim-1", "c-1", 50.0))

    mug = rule(result, "mug-over-100")
    assert mug["campaign"] == "loyal"
    assert mug["active"] is True
    assert mug["matched"] is False
    assert mug["operator"] == "and"
    assert [(c["text"], c["value"], c["error"]) for c in mug["clauses"]] == [
        ('type == "purchase"', True, None),
        ("order.total >= 100", False, None),
    ]
    assert mug["outcome"] == "condition is false"
    assert mug["award"] is None
    assert mug["draw"] is None
    assert result["awards"] == []
    assert result["event_id"] == "sim-1"
    assert result["customer"]["purchase_count"] == 1  # the profile as it would be after this event


async def test_simulate_shows_a_clause_that_cannot_be_evaluated_with_its_error(
    client: Client, keys: dict[str, Any]
) -> None:
    review = interaction("sim-i", "c-1", name="review_posted")  # no rating attribute
    result = await simulate(client, keys, review)

    offer = rule(result, "review-offer")
    assert offer["matched"] is False
    texts = {c["text"]: c for c in offer["clauses"]}
    assert texts['type == "interaction"']["value"] is True
    assert texts['name == "review_posted"']["value"] is True
    assert texts["attributes.rating >= 4"]["value"] is None
    assert texts["attributes.rating >= 4"]["error"] == "`attributes` has no `rating`"
    assert offer["outcome"].startswith("condition could not be evaluated")


async def test_simulate_renders_the_message_and_shows_the_award_it_would_give(
    client: Client, keys: dict[str, Any]
) -> None:
    event = purchase("sim-2", "c-2", 120.0, customer={"first_name": "Lucía"})
    result = await simulate(client, keys, event)

    mug = rule(result, "mug-over-100")
    assert mug["matched"] is True
    assert [c["value"] for c in mug["clauses"]] == [True, True]
    assert mug["outcome"] == "awarded"
    assert mug["group"] == "treatment"
    expected = {
        "kind": "gift",
        "points": None,
        "gift": {"id": "mug", "name": "Branded mug"},
        "offer": None,
        "message": "Enjoy your mug, Lucía!",
        "expires_at": "2026-04-15T10:15:00Z",  # occurred_at + default_valid_days (45)
        "cost": 3.1,
        "variant": None,  # a rule with one award
    }
    assert mug["award"] == expected
    assert result["awards"] == [expected]
    [stock] = mug["counters"]
    assert (stock["counter"], stock["cap_units"], stock["used_units"], stock["room"]) == ("stock:mug", 100, 0, True)


async def test_simulate_writes_nothing_and_leaves_an_existing_customer_unchanged(
    client: Client,
    keys: dict[str, Any],
    engine: AsyncEngine,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    [award] = await post_event(client, keys, purchase("live-1", "c-1", 150.0, customer={"first_name": "Ana"}))
    assert award["rule_id"] == "mug-over-100"
    before = await snapshot(engine)
    profile_before = await stored_profile(sessionmaker, "c-1")
    assert (before["events"], before["awards"], before["counter_totals"][0]) == (1, 1, 1)

    tries = [
        purchase("sim-a", "c-1", 150.0, occurred_at="2026-03-05T10:00:00Z", customer={"first_name": "Bea"}),
        purchase("sim-b", "c-1", 1500.0, occurred_at="2026-02-01T10:00:00Z"),
        {**purchase("sim-c", "c-1", 30.0), "type": "return"},
        interaction("sim-d", "c-1", name="review_posted", rating=5),
        purchase("sim-e", "c-new", 200.0),
        purchase("live-1", "c-1", 150.0, customer={"first_name": "Ana"}),  # the very event already stored
    ]
    for event in tries:
        result = await simulate(client, keys, event)
        assert result["rules"]
    shown = await simulate(client, keys, tries[0])
    assert shown["customer"]["purchase_count"] == 2  # it did read the stored profile
    assert [a["message"] for a in shown["awards"]] == ["Enjoy your mug, Bea!"]

    assert await snapshot(engine) == before
    assert await stored_profile(sessionmaker, "c-1") == profile_before
    assert await stored_profile(sessionmaker, "c-new") is None


async def test_supplied_customer_profile_is_used_instead_of_the_stored_one(
    client: Client, keys: dict[str, Any]
) -> None:
    await post_event(client, keys, purchase("live-1", "c-1", 20.0))  # stored: one purchase
    event = purchase("sim-1", "c-1", 20.0, occurred_at="2026-03-03T10:00:00Z")

    on_stored = await simulate(client, keys, event)
    assert on_stored["customer"]["purchase_count"] == 2
    assert rule(on_stored, "points-on-third")["matched"] is False

    supplied = {"purchase_count": 2, "lifetime_spend": 80.0, "attributes": {"first_name": "Eva"}}
    on_supplied = await simulate(client, keys, event, customer=supplied)
    assert on_supplied["customer"]["purchase_count"] == 3
    assert on_supplied["customer"]["lifetime_spend"] == 100.0
    assert on_supplied["customer"]["attributes"] == {"first_name": "Eva"}
    third = rule(on_supplied, "points-on-third")
    assert third["matched"] is True
    assert [c["value"] for c in third["clauses"]] == [True, True]
    assert third["outcome"] == "awarded"
    assert third["award"]["kind"] == "points"
    assert third["award"]["points"] == 200
    assert third["award"]["message"] == "3 visits: 200 points."
    assert [a["points"] for a in on_supplied["awards"]] == [200]


async def test_supplied_profile_works_for_a_customer_who_does_not_exist(
    client: Client, keys: dict[str, Any], sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    result = await simulate(
        client, keys, purchase("sim-1", "nobody", 20.0), customer={"purchase_count": 2, "return_count": 1}
    )
    assert result["customer"]["customer_id"] == "nobody"
    assert (result["customer"]["purchase_count"], result["customer"]["return_count"]) == (3, 1)
    assert rule(result, "points-on-third")["outcome"] == "awarded"
    assert await stored_profile(sessionmaker, "nobody") is None


# --- the controls as they stand ---------------------------------------------------------------------------

HELD = """\
campaign: held
holdout: 0.5
rules:
  - id: mug
    when: type == "purchase"
    award: {gift: mug}
"""


def customers_in(rule_set: RuleSet, campaign_name: str, group: str, n: int = 1) -> list[str]:
    [campaign] = [c for c in rule_set.campaigns if c.name == campaign_name]
    found = [f"c-{i}" for i in range(1000) if holdout_group(rule_set, campaign, f"c-{i}") == group]
    assert len(found) >= n
    return found[:n]


async def test_held_out_customer_shows_the_control_group_and_the_outcome_says_held_out(
    make_pack: Callable[..., Pack], keys: dict[str, Any]
) -> None:
    pack = make_pack(HELD)
    [control] = customers_in(pack.rule_set, "held", "control")
    [treated] = customers_in(pack.rule_set, "held", "treatment")
    async with pack.app() as client:
        held = await simulate(client, keys, purchase("sim-1", control, 50.0))
        given = await simulate(client, keys, purchase("sim-2", treated, 50.0))
        live_held = await post_event(client, keys, purchase("sim-1", control, 50.0))

    mug = rule(held, "mug")
    assert mug["group"] == "control"
    assert mug["matched"] is True
    assert mug["outcome"].startswith("held out")
    assert mug["award"] is not None  # what a treated customer would have had
    assert held["awards"] == []
    assert live_held == []
    assert rule(given, "mug")["group"] == "treatment"
    assert rule(given, "mug")["outcome"] == "awarded"
    assert len(given["awards"]) == 1


async def test_rule_limit_already_used_shows_used_one_no_room_and_limit_reached(
    make_pack: Callable[..., Pack], keys: dict[str, Any]
) -> None:
    pack = make_pack(
        """\
        campaign: once
        rules:
          - id: mug-once
            when: type == "purchase"
            award: {gift: mug}
            limit: {per_customer: 1, every: 90d}
        """
    )
    async with pack.app() as client:
        fresh = await simulate(client, keys, purchase("e-1", "c-1", 50.0))
        assert len(await post_event(client, keys, purchase("e-1", "c-1", 50.0))) == 1
        soon = await simulate(client, keys, purchase("e-2", "c-1", 50.0, occurred_at="2026-03-20T10:00:00Z"))
        later = await simulate(client, keys, purchase("e-3", "c-1", 50.0, occurred_at="2026-07-01T10:00:00Z"))
        live_soon = await post_event(client, keys, purchase("e-2", "c-1", 50.0, occurred_at="2026-03-20T10:00:00Z"))

    assert rule(fresh, "mug-once")["limit"] == {"per_customer": 1, "every_seconds": 90 * 86400, "used": 0, "room": True}
    once = rule(soon, "mug-once")
    assert once["limit"] == {"per_customer": 1, "every_seconds": 90 * 86400, "used": 1, "room": False}
    assert once["matched"] is True
    assert once["outcome"] == "rule limit reached for this customer"
    assert soon["awards"] == []
    assert live_soon == []
    assert rule(later, "mug-once")["limit"]["used"] == 0  # 122 days on: the span has passed
    assert rule(later, "mug-once")["outcome"] == "awarded"


async def test_campaign_limit_and_fatigue_are_shown_with_what_they_have_used(
    make_pack: Callable[..., Pack], keys: dict[str, Any]
) -> None:
    pack = make_pack(
        """\
        campaign: capped
        limit: {per_customer: 1, every: 30d}
        rules:
          - id: mug
            when: type == "purchase"
            award: {gift: mug}
        """,
        settings="seed: x\nfatigue: {max: 5, every: 7d}\n",
    )
    async with pack.app() as client:
        await post_event(client, keys, purchase("e-1", "c-1", 50.0))
        result = await simulate(client, keys, purchase("e-2", "c-1", 50.0, occurred_at="2026-03-04T10:00:00Z"))
    mug = rule(result, "mug")
    assert mug["campaign_limit"] == {"per_customer": 1, "every_seconds": 30 * 86400, "used": 1, "room": False}
    assert mug["fatigue"] == {"per_customer": 5, "every_seconds": 7 * 86400, "used": 1, "room": True}
    assert mug["limit"] is None
    assert mug["outcome"] == "campaign limit reached for this customer"
    assert result["awards"] == []


async def test_budget_counter_shows_units_used_after_real_awards_and_no_room_once_spent(
    make_pack: Callable[..., Pack], keys: dict[str, Any]
) -> None:
    pack = make_pack(
        """\
        campaign: promo
        budget: {awards: 3, cost: 100.00}
        rules:
          - id: mug-for-all
            when: type == "purchase"
            award: {gift: mug}
        """
    )
    seen = []
    async with pack.app() as client:
        for i in range(4):
            before = await simulate(client, keys, purchase(f"e-{i}", f"c-{i}", 50.0))
            live = await post_event(client, keys, purchase(f"e-{i}", f"c-{i}", 50.0))
            seen.append((before, live))
        spent = await simulate(client, keys, purchase("e-9", "c-9", 50.0))

    for i, (before, live) in enumerate(seen):
        [counter] = rule(before, "mug-for-all")["counters"]
        assert counter["counter"] == "budget:promo"
        assert (counter["cap_units"], counter["cap_cost"]) == (3, 100.0)
        assert counter["used_units"] == i
        assert counter["used_cost"] == pytest.approx(3.10 * i)
        assert counter["room"] is (i < 3)
        assert len(before["awards"]) == len(live) == (1 if i < 3 else 0)
    promo = rule(spent, "mug-for-all")
    [counter] = promo["counters"]
    assert (counter["used_units"], counter["used_cost"], counter["room"]) == (3, 9.3, False)
    assert promo["matched"] is True
    assert promo["outcome"] == "budget, daily pacing or stock spent"
    assert spent["awards"] == []


async def test_daily_pacing_counter_is_the_one_of_the_shops_local_day(
    make_pack: Callable[..., Pack], keys: dict[str, Any]
) -> None:
    pack = make_pack(
        """\
        campaign: paced
        budget: {daily_awards: 1}
        rules:
          - id: mug
            when: type == "purchase"
            award: {gift: mug}
        """,
        settings="seed: x\ntimezone: Europe/Madrid\n",
    )
    async with pack.app() as client:
        await post_event(client, keys, purchase("e-1", "c-1", 50.0, occurred_at="2026-03-01T22:30:00Z"))
        same_day = await simulate(client, keys, purchase("e-2", "c-2", 50.0, occurred_at="2026-03-01T22:50:00Z"))
        next_day = await simulate(client, keys, purchase("e-3", "c-3", 50.0, occurred_at="2026-03-01T23:10:00Z"))
    [today] = rule(same_day, "mug")["counters"]
    assert (today["counter"], today["used_units"], today["room"]) == ("daily:paced:2026-03-01", 1, False)
    assert same_day["awards"] == []
    [tomorrow] = rule(next_day, "mug")["counters"]  # 00:10 on 2 March in Madrid
    assert (tomorrow["counter"], tomorrow["used_units"], tomorrow["room"]) == ("daily:paced:2026-03-02", 0, True)
    assert len(next_day["awards"]) == 1


async def test_chance_draw_shown_is_the_engines_keyed_draw_and_is_the_same_every_time(
    client: Client, keys: dict[str, Any]
) -> None:
    outcomes = set()
    for i in range(12):
        event = purchase(f"big-{i}", "c-1", 1500.0)
        first = await simulate(client, keys, event)
        second = await simulate(client, keys, event)
        vase = rule(first, "vase-sometimes")
        expected = draw("test-seed", "loyal", "vase-sometimes", f"big-{i}")
        assert vase["draw"] == expected
        assert rule(second, "vase-sometimes")["draw"] == expected
        assert vase["chance"] == 0.5
        if expected < 0.5:
            assert vase["outcome"] == "awarded"
            assert "vase-sometimes" in [r["rule_id"] for r in first["rules"] if r["outcome"] == "awarded"]
            assert any(a["gift"] == {"id": "vase", "name": "Small vase"} for a in first["awards"])
        else:
            assert vase["outcome"] == f"chance draw {expected:.4f} >= 0.5"
            assert all(a["gift"] != {"id": "vase", "name": "Small vase"} for a in first["awards"])
        outcomes.add(vase["outcome"] == "awarded")
        assert rule(first, "mug-over-100")["draw"] is None  # no chance, no draw
    assert outcomes == {True, False}  # both sides of the draw were seen


# --- simulate agrees with the live path ------------------------------------------------------------------

PARITY_SETTINGS = """\
seed: parity
timezone: Europe/Madrid
point_value: 0.01
fatigue: {max: 3, every: 14d}
"""

PARITY_CAMPAIGNS = (
    """\
    campaign: lucky
    holdout: 0.3
    limit: {per_customer: 2, every: 30d}
    rules:
      - id: mug-maybe
        when: type == "purchase"
        chance: 0.5
        award: {gift: mug}
        limit: {per_customer: 1, every: 10d}
        message: "A mug for you, {{ customer.first_name }}"
      - id: points-third
        when: type == "purchase" and customer.purchase_count == 3
        award: {points: 100}
        message: "{{ customer.purchase_count }} visits"
    """,
    """\
    campaign: big
    budget: {awards: 4, daily_awards: 2}
    rules:
      - id: lamp-big
        when: type == "purchase" and order.total >= 80
        chance: 0.7
        priority: 5
        award: {gift: lamp}
      - id: vase-big
        when: type == "purchase" and order.total >= 60
        award: {gift: vase}
        limit: {per_customer: 1, every: 20d}
    """,
    """\
    campaign: engage
    holdout: 0.5
    rules:
      - id: review-offer
        when: type == "interaction" and name == "review_posted"
        chance: 0.8
        award:
          offer: {percent: 10, category: "{{ customer.favourite_category }}", valid_days: 20}
      - id: comeback-points
        when: type == "return" and customer.return_count >= 1
        chance: 0.6
        award: {points: 50}
    """,
)


def parity_events(seed: int, n: int) -> list[dict[str, Any]]:
    """``n`` varied events of five customers, with event times out of order and in several offsets."""
    rng = random.Random(seed)
    base = dt.datetime(2026, 3, 1, 8, 0, tzinfo=dt.UTC)
    events = []
    for i in range(n):
        customer = f"p-{rng.randrange(5)}"
        when = base + dt.timedelta(days=rng.randrange(40), hours=rng.randrange(16))
        offset = dt.timezone(dt.timedelta(hours=rng.choice([0, 0, 2, -5])))
        at = when.astimezone(offset).isoformat()
        kind = rng.choices(["purchase", "interaction", "return"], weights=[6, 3, 2])[0]
        if kind == "interaction":
            event = interaction(f"ev-{i}", customer, name=rng.choice(["review_posted", "visit"]))
            event["occurred_at"] = at
        else:
            total = rng.choice([20.0, 65.0, 85.0, 120.0])
            event = purchase(f"ev-{i}", customer, total, occurred_at=at, category=rng.choice(["home", "toys", "art"]))
            event["type"] = kind
        if rng.random() < 0.3:
            event["customer"] = {"first_name": rng.choice(["Ana", "Luis", "Marta"])}
        events.append(event)
    return events


def comparable(award: dict[str, Any], *, named: bool = True) -> str:
    """An award as JSON, for sorting and comparing: who gives it (when ``named``) and what it is."""
    fields = ("kind", "points", "gift", "offer", "message", "expires_at")
    shown = {k: award[k] for k in (("campaign", "rule_id", *fields) if named else fields)}
    return json.dumps(shown, sort_keys=True)


async def test_simulating_each_event_before_posting_it_predicts_exactly_the_awards_the_live_post_returns(
    make_pack: Callable[..., Pack], keys: dict[str, Any]
) -> None:
    pack = make_pack(*PARITY_CAMPAIGNS, settings=PARITY_SETTINGS)
    events = parity_events(seed=11, n=30)
    mismatches = []
    outcomes: list[str] = []
    async with pack.app() as client:
        for event in events:
            result = await simulate(client, keys, event)
            predicted_by_rule = {(r["campaign"], r["rule_id"]): r for r in result["rules"]}
            awarded = [r for r in result["rules"] if r["outcome"] == "awarded"]
            predicted = sorted(
                comparable({**r["award"], "campaign": r["campaign"], "rule_id": r["rule_id"]}) for r in awarded
            )
            # the summary list holds the same awards as the per-rule verdicts
            assert sorted(comparable(a, named=False) for a in result["awards"]) == sorted(
                comparable(r["award"], named=False) for r in awarded
            )
            live = sorted(comparable(a) for a in await post_event(client, keys, event))
            if predicted != live:
                mismatches.append((event, predicted, live))
            outcomes += [r["outcome"] for r in predicted_by_rule.values()]

    assert mismatches == []
    # the run really went through the controls it is meant to check
    assert outcomes.count("awarded") >= 5
    assert any(o.startswith("held out") for o in outcomes)
    assert any(o.startswith("chance draw") for o in outcomes)
    assert any(o == "rule limit reached for this customer" for o in outcomes)
    assert any(
        o in ("fatigue cap reached for this customer", "campaign limit reached for this customer") for o in outcomes
    )
    assert any(o == "budget, daily pacing or stock spent" for o in outcomes)


async def test_simulate_and_live_agree_on_a_rule_over_lifetime_spend_with_cents(
    make_pack: Callable[..., Pack], keys: dict[str, Any], sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    pack = make_pack(
        """\
        campaign: spenders
        rules:
          - id: big-spender
            when: type == "purchase" and customer.lifetime_spend >= 99.5
            award: {points: 10}
        """
    )
    event = purchase("e-1", "c-1", 99.99)
    async with pack.app() as client:
        predicted = await simulate(client, keys, event)
        live = await post_event(client, keys, event)
    assert predicted["customer"]["lifetime_spend"] == 99.99
    assert [a["points"] for a in predicted["awards"]] == [10]
    assert [(a["rule_id"], a["points"]) for a in live] == [("big-spender", 10)]
    stored = await stored_profile(sessionmaker, "c-1")
    assert stored is not None
    assert stored["lifetime_spend"] == Decimal("99.99")


# --- bad input and access ------------------------------------------------------------------------------------


def problem_fields(response: Any) -> set[str]:
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    return {e["field"] for e in response.json()["errors"]}


async def test_purchase_without_an_order_is_a_422_problem_naming_event_order(
    client: Client, keys: dict[str, Any], engine: AsyncEngine
) -> None:
    event = purchase("sim-1", "c-1", 50.0)
    del event["order"]
    response = await client.post("/v1/rules/simulate", json={"event": event}, headers=keys["rules:admin"])
    assert problem_fields(response) == {"event.order"}
    assert (await snapshot(engine))["events"] == 0


async def test_order_without_or_with_a_negative_total_is_a_422_problem_naming_event_order_total(
    client: Client, keys: dict[str, Any]
) -> None:
    missing = purchase("sim-1", "c-1", 50.0)
    del missing["order"]["total"]
    negative = purchase("sim-2", "c-1", -5.0)
    for event in (missing, negative):
        response = await client.post("/v1/rules/simulate", json={"event": event}, headers=keys["rules:admin"])
        assert "event.order.total" in problem_fields(response)


async def test_unknown_field_in_the_supplied_customer_is_a_422_problem(client: Client, keys: dict[str, Any]) -> None:
    body = {"event": purchase("sim-1", "c-1", 50.0), "customer": {"purchase_count": 2, "vip": True}}
    response = await client.post("/v1/rules/simulate", json=body, headers=keys["rules:admin"])
    assert any(f.startswith("customer") for f in problem_fields(response))


async def test_simulate_needs_the_rules_admin_scope(client: Client, keys: dict[str, Any]) -> None:
    body = {"event": purchase("sim-1", "c-1", 50.0)}
    assert (await client.post("/v1/rules/simulate", json=body, headers=keys["events:write"])).status_code == 403
    assert (await client.post("/v1/rules/simulate", json=body)).status_code == 401
    assert (await client.post("/v1/rules/simulate", json=body, headers=keys["rules:admin"])).status_code == 200


# --- a draft ----------------------------------------------------------------------------------------------------

DRAFT = """\
campaign: autumn
rules:
  - id: vase-over-40
    when: type == "purchase" and order.total >= 40
    award: {gift: vase}
"""


async def test_simulate_runs_the_event_through_a_draft_with_the_settings_and_catalog_in_force(
    client: Client, keys: dict[str, Any], engine: AsyncEngine
) -> None:
    before = await snapshot(engine)
    result = await simulate(client, keys, purchase("sim-draft", "c-draft", 50.0), draft={"autumn.yaml": DRAFT})
    assert {r["campaign"] for r in result["rules"]} == {"autumn"}  # the draft's campaigns replace those in force
    vase = rule(result, "vase-over-40")
    assert (vase["matched"], vase["outcome"]) == (True, "awarded")
    assert [a["gift"]["id"] for a in result["awards"]] == ["vase"]  # from the catalogue in force
    assert result["version"] != (await client.get("/v1/rules", headers=keys["rules:admin"])).json()["version"]
    assert await snapshot(engine) == before
    # The set in force is untouched: the same event without the draft meets its own rules.
    live = await simulate(client, keys, purchase("sim-draft", "c-draft", 50.0))
    assert "autumn" not in {r["campaign"] for r in live["rules"]}


async def test_a_draft_with_errors_is_answered_with_each_file_and_line(client: Client, keys: dict[str, Any]) -> None:
    broken = DRAFT.replace("order.total >= 40", "order.totl >= 40").replace("gift: vase", "gift: teapot")
    response = await client.post(
        "/v1/rules/simulate",
        json={"event": purchase("sim-bad", "c-1", 50.0), "draft": {"autumn.yaml": broken}},
        headers=keys["rules:admin"],
    )
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    errors = {(e["field"], e["message"]) for e in response.json()["errors"]}
    assert ("draft/autumn.yaml:4", "`when` names an unknown field `totl`") in errors
    assert ("draft/autumn.yaml:5", "gift `teapot` is not in catalog.yaml") in errors
    bad_name = await client.post(
        "/v1/rules/simulate",
        json={"event": purchase("sim-bad", "c-1", 50.0), "draft": {"../etc/passwd": DRAFT}},
        headers=keys["rules:admin"],
    )
    assert bad_name.status_code in (400, 422), bad_name.text
    assert "draft" in bad_name.text


async def test_a_draft_with_a_control_character_is_a_422_at_its_line(client: Client, keys: dict[str, Any]) -> None:
    response = await client.post(
        "/v1/rules/simulate",
        json={
            "event": purchase("sim-bad", "c-1", 50.0),
            "draft": {"autumn.yaml": DRAFT.replace("vase-over", "vase\x01")},
        },
        headers=keys["rules:admin"],
    )
    assert response.status_code == 422, response.text
    assert [(e["field"], e["message"]) for e in response.json()["errors"]] == [
        ("draft/autumn.yaml:3", "YAML cannot hold the character U+0001")
    ]
