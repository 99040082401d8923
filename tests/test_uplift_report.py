"""The uplift report, its CSV and HTML forms, the CSV exports and ``delight report uplift``.

Everything goes through the real HTTP stack against the real PostgreSQL: the
events are posted, the projector builds ``first_exposures`` and
``customer_timelines`` from what committed, and the numbers the report prints
are checked against a hand computation from what was posted. A second kind of
check compares the projection built page by page, in whatever order the
events arrived, with the same projection rebuilt from scratch.
"""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import io
import json
import math
import os
import random
import re
import textwrap
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy.ext.asyncio import AsyncEngine

from service.app import create_app
from tests.conftest import (
    PACK_CATALOG,
    ROOT,
    AppFactory,
    Projection,
    make_settings,
    projected,
    purchase,
    rebuilt,
    truncate,
)

Client = AsyncTestClient[Litestar]
Json = dict[str, Any]

BASE = dt.datetime(2026, 1, 12, 9, 0, tzinfo=dt.UTC)
DAY = dt.timedelta(days=1)
SECOND = dt.timedelta(seconds=1)
Z_975 = 1.959963984540054

# Two rules in one campaign with half the customers held out: a mug on 100 or more, points on 300 or more.
THANKS = """\
campaign: thanks
holdout: 0.5
rules:
  - id: mug
    when: type == "purchase" and order.total >= 100
    award: {gift: mug}
  - id: points
    when: type == "purchase" and order.total >= 300
    award: {points: 150}
"""
# The same rules with nobody held out: every exposed customer is treated, so costs are known in advance.
THANKS_ALL = THANKS.replace("holdout: 0.5", "holdout: 0")
SETTINGS = "seed: uplift-tests\npoint_value: 0.01\n"
THRESHOLDS = {"mug": Decimal(100), "points": Decimal(300)}
COSTS = {"mug": Decimal("3.10"), "points": Decimal("1.50")}  # the mug's unit cost; 150 points at 0.01


# --------------------------------------------------------------------------------------------- posting events


@dataclass(frozen=True)
class Buy:
    event_id: str
    customer: str
    at: dt.datetime
    total: Decimal

    def event(self) -> Json:
        return purchase(self.event_id, self.customer, float(self.total), occurred_at=iso(self.at))

    def qualifies(self, rule: str) -> bool:
        """Whether this purchase exposes its customer to ``rule`` (``*``: to any rule of the campaign)."""
        if rule == "*":
            return any(self.total >= threshold for threshold in THRESHOLDS.values())
        return self.total >= THRESHOLDS[rule]


def iso(at: dt.datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


async def post_batch(client: Client, keys: dict[str, Any], buys: Sequence[Buy]) -> list[Json]:
    """Post through ``/v1/events/batch`` in arrival order; returns every award issued."""
    awards: list[Json] = []
    for start in range(0, len(buys), 1000):
        chunk = [b.event() for b in buys[start : start + 1000]]
        response = await client.post("/v1/events/batch", json={"events": chunk}, headers=keys["events:write"])
        assert response.status_code == 200, response.text
        results = response.json()["results"]
        assert [r["status"] for r in results] == [201] * len(chunk), results
        awards.extend(a for r in results for a in r.get("awards", []))
    return awards


def population(customers: int, seed: int = 20261123) -> list[Buy]:
    """Customers first exposed 10 minutes apart, some with earlier spend, most buying again within 50 days.

    Six more are first exposed 55 days on (their 30-day windows stay open) and a last purchase by
    someone never exposed sets the report's clock at 60 days. Every timestamp is distinct.
    """
    rng = random.Random(seed)
    buys: list[Buy] = []
    taken: set[dt.datetime] = set()

    def add(customer: str, at: dt.datetime, total: str) -> None:
        while at in taken:
            at += SECOND
        taken.add(at)
        buys.append(Buy(f"{customer}-{len(buys)}", customer, at, Decimal(total)))

    for i in range(customers):
        customer = f"u{i:03d}"
        t0 = BASE + dt.timedelta(minutes=10 * i)
        add(customer, t0, rng.choice(["100", "149.90", "300", "120.50"]))
        if i % 3 == 0:
            add(customer, t0 - dt.timedelta(seconds=rng.randint(3600, 20 * 86400)), "45.20")
        for _ in range(rng.choice([0, 0, 1, 1, 2, 3])):
            at = t0 + dt.timedelta(seconds=rng.randint(3600, 50 * 86400))
            add(customer, at, rng.choice(["15.50", "40", "99.99", "120", "350"]))
    for i in range(6):
        add(f"late{i}", BASE + 55 * DAY + dt.timedelta(hours=i), "150")
    add("clock", BASE + 60 * DAY, "5")
    return sorted(buys, key=lambda b: b.at)


# ------------------------------------------------------------------------------------------ hand computation


@dataclass
class Arm:
    exposed: int = 0  # first exposed in the period, window closed or not
    customers: int = 0  # ... with the window closed
    repeaters: int = 0
    revenue: Decimal = Decimal(0)
    cost: Decimal = Decimal(0)
    first_repeat_days: list[int] = field(default_factory=list)  # day after t0 (1, 2, ...) of each repeater's return

    @property
    def open(self) -> int:
        return self.exposed - self.customers


def hand(
    buys: Sequence[Buy],
    awards: Sequence[Json],
    rule: str,
    days: int,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
) -> dict[str, Arm]:
    """The report's numbers for one rule, worked out from the purchases and awards alone."""
    as_of = max(b.at for b in buys)
    window = dt.timedelta(days=days)
    by_id = {b.event_id: b for b in buys}
    treated = {by_id[a["event_id"]].customer for a in awards}
    arms = {"treated": Arm(), "control": Arm()}
    for customer in sorted({b.customer for b in buys}):
        own = [b for b in buys if b.customer == customer]
        exposures = [b.at for b in own if b.qualifies(rule)]
        if not exposures:
            continue
        t0 = min(exposures)
        if (since is not None and t0 < since) or (until is not None and t0 >= until):
            continue
        arm = arms["treated" if customer in treated else "control"]
        arm.exposed += 1
        if t0 + window > as_of:
            continue  # the window is still open
        arm.customers += 1
        within = [b for b in own if t0 < b.at <= t0 + window]
        arm.repeaters += bool(within)
        if within:
            arm.first_repeat_days.append(math.ceil((min(b.at for b in within) - t0) / DAY))
        arm.revenue += sum((b.total for b in within), Decimal(0))
        arm.cost += sum(
            (
                COSTS[a["rule_id"]]
                for a in awards
                if by_id[a["event_id"]].customer == customer
                and rule in ("*", a["rule_id"])
                and t0 <= by_id[a["event_id"]].at <= t0 + window
            ),
            Decimal(0),
        )
    return arms


def check_row(row: Json, arms: dict[str, Arm], holdout: float, days: int) -> None:
    """The report's row for one rule against the hand computation, statistics included."""
    for name, arm in arms.items():
        got = row[name]
        assert (got["customers"], got["repeaters"], got["open"]) == (arm.customers, arm.repeaters, arm.open), (
            row["rule_id"],
            name,
        )
        if arm.customers:
            assert got["repeat_rate"] == pytest.approx(arm.repeaters / arm.customers, abs=1e-6)
            assert got["revenue_per_customer"] == pytest.approx(float(arm.revenue) / arm.customers, abs=1e-4)
            shares = [sum(d <= day for d in arm.first_repeat_days) / arm.customers for day in range(1, days + 1)]
            assert row["repeat_curve"][name] == pytest.approx(shares, abs=1e-6)
        else:
            assert (got["repeat_rate"], got["revenue_per_customer"]) == (None, None)
            assert row["repeat_curve"][name] == []
    assert arms["control"].cost == 0  # nobody held out got anything
    assert row["award_cost"] == pytest.approx(float(arms["treated"].cost), abs=1e-9)
    t, c = arms["treated"], arms["control"]
    exposed = t.exposed + c.exposed
    expected_c = holdout * exposed
    expected_t = exposed - expected_c
    chi2 = (c.exposed - expected_c) ** 2 / expected_c + (t.exposed - expected_t) ** 2 / expected_t
    assert row["srm_p_value"] == pytest.approx(math.erfc(math.sqrt(chi2 / 2)), abs=1e-7)
    assert row["expected_control_share"] == pytest.approx(holdout)
    if row["status"] != "ok":
        assert row["uplift"] is None
        return
    pt, pc = t.repeaters / t.customers, c.repeaters / c.customers
    diff = pt - pc
    half = Z_975 * math.sqrt(pt * (1 - pt) / t.customers + pc * (1 - pc) / c.customers)
    pooled = (t.repeaters + c.repeaters) / (t.customers + c.customers)
    se = math.sqrt(pooled * (1 - pooled) * (1 / t.customers + 1 / c.customers))
    uplift = row["uplift"]
    assert uplift["absolute"] == pytest.approx(diff, abs=1e-6)
    assert uplift["relative"] == pytest.approx(pt / pc - 1, abs=1e-6)
    assert uplift["ci95"] == pytest.approx([diff - half, diff + half], abs=1e-6)
    assert uplift["p_value"] == pytest.approx(math.erfc(abs(diff) / se / math.sqrt(2)), abs=1e-7)
    revenue = row["revenue_uplift"]
    mean_t, mean_c = float(t.revenue) / t.customers, float(c.revenue) / c.customers
    assert revenue["absolute"] == pytest.approx(mean_t - mean_c, abs=1e-4)
    assert row["incremental_revenue"] == pytest.approx(revenue["absolute"] * t.customers, abs=0.01 * t.customers)


# ----------------------------------------------------------------------------------------------- HTTP helpers


async def report(client: Client, keys: dict[str, Any], query: str, **headers: str) -> Json:
    response = await client.get(f"/v1/reports/uplift?{query}", headers={**keys["reports:read"], **headers})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    body: Json = response.json()
    return body


def rows_by_rule(body: Json) -> dict[str, Json]:
    return {r["rule_id"]: r for r in [*body["rules"], body["campaign_total"]]}


def pick(row: Any, path: str) -> Any:
    """``uplift.ci95.0`` of a report row; ``None`` once a step is missing."""
    for part in path.split("."):
        if row is None:
            return None
        row = row[int(part)] if isinstance(row, list) else row[part]
    return row


def same_value(shown: str, value: Any) -> bool:
    """A CSV cell or HTML ``data-value`` against the JSON value it stands for."""
    if value is None:
        return shown == ""
    if isinstance(value, bool):
        return shown == str(value)
    return float(shown) == pytest.approx(value, abs=1e-12)


def write_pack(directory: Path, *campaigns: str, settings: str = SETTINGS) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "catalog.yaml").write_text(PACK_CATALOG)
    (directory / "settings.yaml").write_text(settings)
    for i, campaign in enumerate(campaigns):
        (directory / f"c{i}.yaml").write_text(textwrap.dedent(campaign))
    return directory


# ------------------------------------------------------------------------------------------------- 1. contract


async def test_report_gives_per_rule_and_campaign_outcomes_that_match_a_hand_computation(
    rules_app: AppFactory, keys: dict[str, Any], client: Client
) -> None:
    buys = population(160)
    async with rules_app(THANKS, settings=SETTINGS) as app:
        awards = await post_batch(app, keys, buys)
        body = await report(app, keys, "campaign=thanks&window_days=30")
        week = await report(app, keys, "campaign=thanks&window_days=7")
        since, until = BASE + dt.timedelta(hours=6), BASE + dt.timedelta(hours=20)
        part = await report(app, keys, f"campaign=thanks&window_days=30&from={iso(since)}&to={iso(until)}")

    assert (body["campaign"], body["window_days"], body["holdout"]) == ("thanks", 30, 0.5)
    assert (body["from"], body["to"]) == (None, None)
    assert body["as_of"] == iso(BASE + 60 * DAY)
    assert [r["rule_id"] for r in body["rules"]] == ["mug", "points"]
    assert body["campaign_total"]["rule_id"] == "*"
    total = body["campaign_total"]
    for group in ("treated", "control"):
        assert {"customers", "repeaters", "repeat_rate", "revenue_per_customer", "open"} <= set(total[group])
    assert {"absolute", "relative", "ci95", "p_value"} <= set(total["uplift"])
    assert {"srm_p_value", "award_cost", "status", "notes", "revenue_uplift", "repeat_curve"} <= set(total)
    assert total["status"] == "ok", total["notes"]
    assert rows_by_rule(body)["mug"]["status"] == "ok"
    assert not total["srm_mismatch"]
    assert any("6 customers' 30-day windows are still open" in note for note in total["notes"])
    assert {a["rule_id"] for a in awards} == {"mug", "points"}

    for days, result in ((30, body), (7, week)):
        rows = rows_by_rule(result)
        for rule in ("*", "mug", "points"):
            check_row(rows[rule], hand(buys, awards, rule, days), 0.5, days)
    # The campaign row counts the points awards too, the mug row only its own.
    assert rows_by_rule(body)["*"]["award_cost"] > rows_by_rule(body)["mug"]["award_cost"]
    for rule, row in rows_by_rule(part).items():
        check_row(row, hand(buys, awards, rule, 30, since, until), 0.5, 30)
    assert (part["from"], part["to"]) == (iso(since), iso(until))
    assert part["campaign_total"]["treated"]["customers"] < total["treated"]["customers"]

    # The report stands on what was stored: an app whose rule set lacks the campaign gives the same numbers.
    elsewhere = await report(client, keys, "campaign=thanks&window_days=30")
    assert elsewhere["holdout"] is None
    assert without_freshness({**elsewhere, "holdout": 0.5}) == without_freshness(body)


# ------------------------------------------------------------------------------------------ 2. window semantics


NAMES = ("exact", "late", "tie-first", "tie-last", "before", "none")  # customers first exposed a minute apart


async def test_the_window_is_t0_exclusive_to_t0_plus_n_days_inclusive_and_open_windows_are_not_counted(
    rules_app: AppFactory, keys: dict[str, Any]
) -> None:
    clock = BASE + 30 * DAY
    t = [BASE + dt.timedelta(minutes=m) for m in range(6)]
    opened = clock - 3 * DAY
    exposures = [Buy(f"x-{name}", name, at, Decimal(150)) for name, at in zip(NAMES, t, strict=True)]
    exposures.append(Buy("x-open", "open", opened, Decimal(150)))
    others = {
        "exact": Buy("exact-2", "exact", t[0] + 7 * DAY, Decimal(25)),  # t0 + 7 days to the second
        "late": Buy("late-2", "late", t[1] + 7 * DAY + SECOND, Decimal(35)),  # one second past 7 days
        "tie-first": Buy("tie-first-2", "tie-first", t[2], Decimal(45)),  # same instant as t0, arrives first
        "tie-last": Buy("tie-last-2", "tie-last", t[3], Decimal(45)),  # same instant as t0, arrives last
        "before": Buy("before-2", "before", t[4] - SECOND, Decimal(55)),  # a second before t0
        "open": Buy("open-2", "open", opened + DAY, Decimal(65)),
    }
    clock_buy = Buy("clock", "clock", clock, Decimal(5))
    arrival = [others["tie-first"], *exposures, *(b for k, b in others.items() if k != "tie-first"), clock_buy]
    async with rules_app(THANKS_ALL, settings=SETTINGS) as app:
        await post_batch(app, keys, arrival)
        results = {n: await report(app, keys, f"campaign=thanks&window_days={n}") for n in (1, 2, 3, 4, 7, 8)}
        # first exposed from the second customer up to (not including) the fifth: late, tie-first, tie-last
        part = await report(app, keys, f"campaign=thanks&window_days=8&from={iso(t[1])}&to={iso(t[4])}")

    def treated(n: int) -> Json:
        row: Json = results[n]["rules"][0]
        assert row["rule_id"] == "mug"
        assert row["status"] == "no_control"  # nobody is held out
        assert row["treated"] == results[n]["campaign_total"]["treated"]
        return dict(row["treated"]) | {"award_cost": row["award_cost"], "curve": row["repeat_curve"]["treated"]}

    week = treated(7)
    assert (week["customers"], week["repeaters"], week["open"]) == (6, 1, 1)  # only t0 + 7 days exactly
    assert week["revenue_per_customer"] == round(25 / 6, 4)
    assert week["pre_revenue_per_customer"] == round(55 / 6, 4)  # the purchase a second before t0
    assert week["award_cost"] == round(6 * 3.10, 2)
    assert week["curve"] == [0.0] * 6 + [round(1 / 6, 6)]
    eight = treated(8)
    assert (eight["customers"], eight["repeaters"], eight["open"]) == (6, 2, 1)  # now the one a second later too
    assert eight["revenue_per_customer"] == round(60 / 6, 4)
    assert eight["curve"] == [0.0] * 6 + [round(1 / 6, 6), round(2 / 6, 6)]
    for n in (1, 2, 3):  # the last customer's window has closed (at as_of itself for 3 days); it bought at t0 + 1 day
        closed = treated(n)
        assert (closed["customers"], closed["repeaters"], closed["open"]) == (7, 1, 0), n
        assert closed["revenue_per_customer"] == round(65 / 7, 4)
        assert closed["curve"][0] == round(1 / 7, 6)
    four = treated(4)
    assert (four["customers"], four["repeaters"], four["open"]) == (6, 0, 1)
    assert four["revenue_per_customer"] == 0.0
    assert "1 customer's 4-day window is still open and not counted" in results[4]["rules"][0]["notes"]

    some = part["rules"][0]["treated"]
    assert (some["customers"], some["repeaters"], some["revenue_per_customer"]) == (3, 1, round(35 / 3, 4))


async def test_a_purchase_half_a_second_after_first_exposure_is_a_repeat(
    rules_app: AppFactory, keys: dict[str, Any]
) -> None:
    buys = [
        Buy("x", "c", BASE, Decimal(150)),
        Buy("y", "c", BASE + dt.timedelta(milliseconds=500), Decimal(20)),
        Buy("clock", "clock", BASE + 10 * DAY, Decimal(5)),
    ]
    async with rules_app(THANKS_ALL, settings=SETTINGS) as app:
        await post_batch(app, keys, buys)
        body = await report(app, keys, "campaign=thanks&window_days=1")
    treated = body["campaign_total"]["treated"]
    assert (treated["customers"], treated["repeaters"], treated["revenue_per_customer"]) == (1, 1, 20.0)


async def test_a_purchase_half_a_second_after_the_window_does_not_count(
    rules_app: AppFactory, keys: dict[str, Any]
) -> None:
    buys = [
        Buy("x", "c", BASE, Decimal(150)),
        Buy("y", "c", BASE + DAY + dt.timedelta(milliseconds=500), Decimal(20)),
        Buy("clock", "clock", BASE + 10 * DAY, Decimal(5)),
    ]
    async with rules_app(THANKS_ALL, settings=SETTINGS) as app:
        await post_batch(app, keys, buys)
        body = await report(app, keys, "campaign=thanks&window_days=1")
    treated = body["campaign_total"]["treated"]
    assert (treated["customers"], treated["repeaters"], treated["revenue_per_customer"]) == (1, 0, 0.0)


# ------------------------------------------------------------------------------- 3. late and out-of-order events


async def test_reversed_arrival_gives_the_same_report_and_projection_as_chronological_arrival(
    rules_app: AppFactory, keys: dict[str, Any], engine: AsyncEngine, database_url: str
) -> None:
    buys = population(60, seed=7)
    outcomes: list[tuple[list[Json], Projection]] = []
    async with rules_app(THANKS, settings=SETTINGS) as app:
        for arrival in (buys, buys[::-1]):  # reversed: every repeat purchase arrives before its first exposure
            await truncate(engine)
            await post_batch(app, keys, arrival)
            reports = [await report(app, keys, f"campaign=thanks&window_days={n}") for n in (7, 30, 45)]
            built = await projected(database_url)
            assert await rebuilt(database_url) == built
            outcomes.append((reports, built))
    (chronological, built_a), (reversed_, built_b) = outcomes
    assert [without_freshness(r) for r in reversed_] == [without_freshness(r) for r in chronological]
    assert built_b == built_a
    assert chronological[1]["campaign_total"]["treated"]["repeaters"] > 0


def without_freshness(body: Json) -> Json:
    """A report without the instant up to which it counted events, which differs between two runs."""
    return {k: v for k, v in body.items() if k != "complete_until"}


def settled(text: str) -> str:
    """A CSV or HTML report with that instant taken out (in the CSV, the column before the replica's two)."""
    text = re.sub(r'(data-field="complete_until">)[^<]*', r"\1", text)
    return re.sub(r",[0-9T:.+-]+(,[^,]*,[^,]*)$", r",\1", text, flags=re.MULTILINE)


async def test_an_earlier_first_exposure_arriving_late_takes_the_place_of_the_later_one(
    rules_app: AppFactory, keys: dict[str, Any], database_url: str
) -> None:
    later = Buy("x-later", "x", BASE + 10 * DAY, Decimal(350))  # a mug and points
    earlier = Buy("x-earlier", "x", BASE, Decimal(150))  # a mug
    before = Buy("x-before", "x", BASE - 2 * DAY, Decimal(40))
    clock = Buy("clock", "clock", BASE + 40 * DAY, Decimal(5))
    async with rules_app(THANKS_ALL, settings=SETTINGS) as app:
        await post_batch(app, keys, [later])
        first = {r["rule_id"]: r for r in (await projected(database_url)).firsts}
        assert {rule: (r["event_id"], r["t0"]) for rule, r in first.items()} == {
            rule: ("x-later", later.at) for rule in ("*", "mug", "points")
        }
        await post_batch(app, keys, [before, earlier, clock])
        month = await report(app, keys, "campaign=thanks&window_days=30")
        week = await report(app, keys, "campaign=thanks&window_days=7")
    built = await projected(database_url)
    assert await rebuilt(database_url) == built
    ten_days = 10 * 86400
    # The earlier exposure took the rule's and the campaign's rows whole; the later one is now a repeat purchase.
    assert {r["rule_id"]: {k: r[k] for k in ("event_id", "t0", "cost")} for r in built.firsts} == {
        "*": {"event_id": "x-earlier", "t0": earlier.at, "cost": [(0, 310), (ten_days, 310 + 310 + 150)]},
        "mug": {"event_id": "x-earlier", "t0": earlier.at, "cost": [(0, 310), (ten_days, 620)]},
        "points": {"event_id": "x-later", "t0": later.at, "cost": [(0, 150)]},  # first exposed at the later one
    }
    assert built.timelines["x"] == [(before.at, 4000), (earlier.at, 19000), (later.at, 54000)]

    total = month["campaign_total"]
    assert (total["treated"]["customers"], total["treated"]["repeaters"]) == (1, 1)
    assert total["treated"]["revenue_per_customer"] == 350.0
    assert total["treated"]["pre_revenue_per_customer"] == 40.0
    assert total["award_cost"] == 7.70  # both mugs and the points, within 30 days of the earlier t0
    assert rows_by_rule(month)["mug"]["award_cost"] == 6.20
    assert week["campaign_total"]["treated"]["repeaters"] == 0
    assert week["campaign_total"]["award_cost"] == 3.10  # the later awards fall outside the week


async def test_the_projection_holds_what_was_posted_whatever_the_arrival_order(
    rules_app: AppFactory, keys: dict[str, Any], database_url: str
) -> None:
    rng = random.Random(99)
    taken: set[dt.datetime] = set()
    buys: list[Buy] = []
    for c in range(12):
        for k in range(25):
            at = BASE + dt.timedelta(seconds=rng.randint(-400 * 86400, 400 * 86400))
            while at in taken:
                at += SECOND
            taken.add(at)
            total = rng.choice(["5.25", "30", "80", "99.99", "100", "120", "350", "1200"])
            buys.append(Buy(f"p{c}-{k}", f"p{c}", at, Decimal(total)))
    rng.shuffle(buys)
    async with rules_app(THANKS, settings=SETTINGS) as app:
        awards = await post_batch(app, keys, buys)
    built = await projected(database_url)
    assert await rebuilt(database_url) == built

    by_id = {b.event_id: b for b in buys}
    treated = {by_id[a["event_id"]].customer for a in awards}
    expected = {(b.customer, rule) for b in buys for rule in ("*", "mug", "points") if b.qualifies(rule)}
    firsts = [r for r in built.firsts if r["campaign"] == "thanks"]
    assert {(r["customer_id"], r["rule_id"]) for r in firsts} == expected
    # One campaign and no programme holdout: each customer's programme row (campaign ``*``) is their campaign's
    # row, in the programme's treated group.
    campaign_rows = {r["customer_id"]: r for r in firsts if r["rule_id"] == "*"}
    programme = [r for r in built.firsts if r["campaign"] == "*"]
    assert len(programme) + len(firsts) == len(built.firsts)
    assert {r["customer_id"] for r in programme} == set(campaign_rows)
    for r in programme:
        c = campaign_rows[r["customer_id"]]
        assert (r["rule_id"], r["event_id"], r["t0"], r["cost"]) == ("*", c["event_id"], c["t0"], c["cost"])
        assert r["group"] == "treatment"
    for r in firsts:
        own = [b for b in buys if b.customer == r["customer_id"]]
        first = min((b for b in own if b.qualifies(r["rule_id"])), key=lambda b: b.at)
        assert (r["event_id"], r["t0"], r["channel"], r["store_id"]) == (first.event_id, first.at, "pos", "madrid-1")
        assert r["group"] == ("treatment" if r["customer_id"] in treated else "control")
        if r["group"] == "control":
            assert r["cost"] == []
    for customer, timeline in built.timelines.items():
        own = sorted((b.at, int(b.total * 100)) for b in buys if b.customer == customer)
        assert timeline == [(at, sum(cents for _, cents in own[: i + 1])) for i, (at, _) in enumerate(own)]
    assert set(built.timelines) == {b.customer for b in buys}


@asynccontextmanager
async def concurrent_app(directory: Path, database_url: str, redis_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """The app served in this event loop, so that requests sent together really run together.

    (``AsyncTestClient`` hands each request to its own portal thread and waits for it: requests sent
    with ``asyncio.gather`` through it are handled one after the other.)
    """
    app = create_app(make_settings(database_url, redis_url, directory))
    transport = httpx.ASGITransport(app=cast("Any", app))  # Litestar's ASGI types are narrower than httpx's
    async with app.lifespan(), httpx.AsyncClient(transport=transport, base_url="http://delight", timeout=60) as client:
        yield client


async def test_a_purchase_sent_together_with_the_first_exposure_counts_as_a_repeat(
    tmp_path: Path, database_url: str, redis_url: str, keys: dict[str, Any]
) -> None:
    buys = [
        b
        for i in range(60)
        for b in (
            Buy(f"x{i}", f"c{i}", BASE, Decimal(150)),
            Buy(f"y{i}", f"c{i}", BASE + dt.timedelta(hours=1), Decimal(20)),
        )
    ]
    buys.append(Buy("clock", "clock", BASE + 10 * DAY, Decimal(5)))
    directory = write_pack(tmp_path / "rules", THANKS_ALL)
    async with concurrent_app(directory, database_url, redis_url) as client:
        responses = await asyncio.gather(
            *(client.post("/v1/events", json=b.event(), headers=keys["events:write"]) for b in buys)
        )
        assert {r.status_code for r in responses} == {201}
        response = await client.get("/v1/reports/uplift?campaign=thanks&window_days=7", headers=keys["reports:read"])
    assert await rebuilt(database_url) == await projected(database_url)
    assert response.json()["campaign_total"]["treated"]["repeaters"] == 60


@pytest.mark.parametrize(
    "offsets", [[dt.timedelta(0), dt.timedelta(0)], [dt.timedelta(0), DAY, DAY]], ids=["at-t0", "a-day-after-t0"]
)
async def test_two_awards_at_the_same_instant_cost_what_they_cost(
    rules_app: AppFactory, keys: dict[str, Any], database_url: str, offsets: list[dt.timedelta]
) -> None:
    buys = [Buy(f"m{i}", "c", BASE + offset, Decimal(150)) for i, offset in enumerate(offsets)]
    buys.append(Buy("clock", "clock", BASE + 40 * DAY, Decimal(5)))
    async with rules_app(THANKS_ALL, settings=SETTINGS) as app:
        awards = await post_batch(app, keys, buys)
        body = await report(app, keys, "campaign=thanks&window_days=30")
    assert len(awards) == len(offsets)  # one mug per purchase
    assert rows_by_rule(body)["mug"]["award_cost"] == round(len(offsets) * 3.10, 2)
    assert await rebuilt(database_url) == await projected(database_url)


# ---------------------------------------------------------------------------------------------- 4. bad input


@pytest.mark.parametrize(
    ("query", "status", "named"),
    [
        ("campaign=loyal&window_days=0", 400, "window_days"),
        ("campaign=loyal&window_days=366", 400, "window_days"),
        ("campaign=loyal&window_days=abc", 400, "window_days"),
        ("campaign=loyal&window_days=7.5", 400, "window_days"),
        ("campaign=loyal&from=2026-03-01T00:00:00", 422, "from"),
        ("campaign=loyal&to=2026-03-01T00:00:00", 422, "to"),
        ("campaign=loyal&from=2026-03-02T00:00:00Z&to=2026-03-01T00:00:00Z", 422, "to"),
        ("campaign=loyal&from=2026-03-01T00:00:00Z&to=2026-03-01T00:00:00Z", 422, "to"),
        ("campaign=loyal&from=yesterday", 400, "from"),
        ("campaign=loyal&format=pdf", 400, "format"),
        ("window_days=30", 400, "campaign"),
        ("campaign=", 400, "campaign"),
        ("campaign=nope&window_days=30", 404, "nope"),
    ],
)
async def test_bad_input_is_a_problem_document_naming_the_problem(
    client: Client, keys: dict[str, Any], query: str, status: int, named: str
) -> None:
    response = await client.get(f"/v1/reports/uplift?{query}", headers=keys["reports:read"])
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.json()
    assert problem["status"] == status
    fields = [e["field"] for e in problem.get("errors", [])]
    assert named in fields or named in problem["detail"], problem


async def test_a_campaign_of_the_rule_set_without_exposures_reports_no_customers(
    client: Client, keys: dict[str, Any]
) -> None:
    body = await report(client, keys, "campaign=loyal&window_days=30")
    assert (body["holdout"], body["as_of"]) == (0.0, None)
    assert body["campaign_total"]["status"] == "no_customers"
    assert [r["rule_id"] for r in body["rules"]] == sorted(
        ["mug-over-100", "points-on-third", "review-offer", "vase-sometimes"]
    )
    assert {r["status"] for r in body["rules"]} == {"no_customers"}


@pytest.mark.parametrize(
    "path", ["/v1/reports/uplift?campaign=loyal", "/v1/exports/exposures.csv", "/v1/exports/awards.csv"]
)
async def test_reports_and_exports_need_a_key_with_reports_read(
    client: Client, keys: dict[str, Any], path: str
) -> None:
    anonymous = await client.get(path)
    assert anonymous.status_code == 401
    assert anonymous.headers["content-type"].startswith("application/problem+json")
    for scope in ("events:write", "customers:read", "rules:admin"):
        forbidden = await client.get(path, headers=keys[scope])
        assert forbidden.status_code == 403, scope
        assert forbidden.headers["content-type"].startswith("application/problem+json")
    assert (await client.get(path, headers=keys["reports:read"])).status_code == 200


# ------------------------------------------------------------------------------------------------- 5. formats

CSV_TO_JSON = {
    "treated_customers": "treated.customers",
    "treated_repeaters": "treated.repeaters",
    "treated_repeat_rate": "treated.repeat_rate",
    "treated_revenue_per_customer": "treated.revenue_per_customer",
    "treated_open": "treated.open",
    "control_customers": "control.customers",
    "control_repeaters": "control.repeaters",
    "control_repeat_rate": "control.repeat_rate",
    "control_revenue_per_customer": "control.revenue_per_customer",
    "control_open": "control.open",
    "uplift_absolute": "uplift.absolute",
    "uplift_ci95_low": "uplift.ci95.0",
    "uplift_ci95_high": "uplift.ci95.1",
    "uplift_relative": "uplift.relative",
    "uplift_relative_ci95_low": "uplift.relative_ci95.0",
    "uplift_relative_ci95_high": "uplift.relative_ci95.1",
    "uplift_p_value": "uplift.p_value",
    "uplift_p_adjusted": "uplift.p_adjusted",
    "revenue_uplift_absolute": "revenue_uplift.absolute",
    "revenue_uplift_ci95_low": "revenue_uplift.ci95.0",
    "revenue_uplift_ci95_high": "revenue_uplift.ci95.1",
    "revenue_uplift_p_value": "revenue_uplift.p_value",
    "revenue_uplift_p_adjusted": "revenue_uplift.p_adjusted",
    "revenue_uplift_cuped_absolute": "revenue_uplift_cuped.absolute",
    "revenue_uplift_cuped_ci95_low": "revenue_uplift_cuped.ci95.0",
    "revenue_uplift_cuped_ci95_high": "revenue_uplift_cuped.ci95.1",
    "revenue_cap": "revenue_cap",
    "revenue_uplift_capped_absolute": "revenue_uplift_capped.absolute",
    "revenue_uplift_capped_ci95_low": "revenue_uplift_capped.ci95.0",
    "revenue_uplift_capped_ci95_high": "revenue_uplift_capped.ci95.1",
    "revenue_uplift_capped_p_value": "revenue_uplift_capped.p_value",
    "revenue_uplift_capped_cuped_absolute": "revenue_uplift_capped_cuped.absolute",
    "revenue_uplift_capped_cuped_ci95_low": "revenue_uplift_capped_cuped.ci95.0",
    "revenue_uplift_capped_cuped_ci95_high": "revenue_uplift_capped_cuped.ci95.1",
    "srm_p_value": "srm_p_value",
    "srm_mismatch": "srm_mismatch",
    "award_cost": "award_cost",
    "incremental_revenue": "incremental_revenue",
    "return_on_cost": "return_on_cost",
    "variant": "variant",
    "plan_baseline_repeat_rate": "plan.baseline_repeat_rate",
    "plan_customers_per_day": "plan.customers_per_day",
    "plan_detectable_uplift_30d": "plan.detectable_uplift_30d",
    "plan_detectable_uplift_90d": "plan.detectable_uplift_90d",
    "plan_target_uplift": "plan.target_uplift",
    "plan_days_for_target": "plan.days_for_target",
}
HTML_FIELDS = {
    f"{group}.{name}"
    for group in ("treated", "control")
    for name in ("customers", "repeaters", "repeat_rate", "revenue_per_customer", "open")
} | {"award_cost", "incremental_revenue", "return_on_cost", "srm_p_value"}
UPLIFT_HTML_FIELDS = {
    "uplift.absolute",
    "uplift.ci95.0",
    "uplift.ci95.1",
    "uplift.p_value",
    "uplift.relative",
    "revenue_uplift.absolute",
    "revenue_uplift.p_value",
    "revenue_uplift_capped.absolute",
    "revenue_uplift_capped_cuped.absolute",
}


class DataFields(HTMLParser):
    """The page's ``data-field`` values per ``data-rule`` section, its status badges, body attributes and title."""

    def __init__(self) -> None:
        super().__init__()
        self.body: dict[str, str | None] = {}
        self.sections: list[str] = []
        self.values: dict[str, dict[str, str]] = {}
        self.status: dict[str, str] = {}
        self.title = ""
        self.heading = ""
        self._in: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "body":
            self.body = a
        elif tag in ("title", "h1"):
            self._in = tag
        elif tag == "section" and a.get("data-rule") is not None:
            rule = a["data-rule"] or ""
            self.sections.append(rule)
            self.values[rule] = {}
        field_name = a.get("data-field")
        if field_name and self.sections:
            if field_name == "status":
                self._in = "status"
            else:
                self.values[self.sections[-1]][field_name] = a.get("data-value") or ""

    def handle_endtag(self, tag: str) -> None:
        if tag in ("title", "h1", "span"):
            self._in = None

    def handle_data(self, data: str) -> None:
        if self._in == "title":
            self.title += data
        elif self._in == "h1":
            self.heading += data
        elif self._in == "status":
            self.status[self.sections[-1]] = data


async def test_csv_and_html_carry_the_same_numbers_as_the_json(rules_app: AppFactory, keys: dict[str, Any]) -> None:
    query = "/v1/reports/uplift?campaign=thanks&window_days=30"
    async with rules_app(THANKS, settings=SETTINGS) as app:
        await post_batch(app, keys, population(100, seed=3))
        body = await report(app, keys, "campaign=thanks&window_days=30")
        as_csv = await app.get(query, headers={**keys["reports:read"], "Accept": "text/csv"})
        csv_by_format = await app.get(f"{query}&format=csv", headers=keys["reports:read"])
        json_by_format = await app.get(f"{query}&format=json", headers={**keys["reports:read"], "Accept": "text/csv"})
        as_html = await app.get(f"{query}&format=html", headers=keys["reports:read"])
        browser = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
        html_by_accept = await app.get(query, headers={**keys["reports:read"], "Accept": browser})
    rows = rows_by_rule(body)
    assert rows["*"]["status"] == "ok"
    assert rows["*"]["uplift"] is not None

    assert as_csv.status_code == 200
    assert as_csv.headers["content-type"].startswith("text/csv")
    assert as_csv.headers["content-disposition"] == 'attachment; filename="uplift-thanks-30d.csv"'
    assert settled(csv_by_format.text) == settled(as_csv.text)
    assert without_freshness(json_by_format.json()) == without_freshness(body)
    reader = csv.DictReader(io.StringIO(as_csv.text))
    assert set(reader.fieldnames or []) == {
        "campaign",
        "rule_id",
        "window_days",
        "status",
        "notes",
        "as_of",
        "complete_until",
        "replica_lag_seconds",  # read on a reports replica (empty here: on the primary)
        "replica_lag_bytes",
        "cap_percentile",
        "returns_netted",
        "fallbacks",  # on a variant's row (these rules have one award each)
        "winner",  # on the row of a rule with variants
        "segment",  # on a segment's row, with by=
        "segment_uplift_difference",
        "segment_difference_p_value",
        "segment_difference_p_adjusted",
        "segment_differs",
        *CSV_TO_JSON,
    }
    lines = list(reader)
    assert [line["rule_id"] for line in lines] == ["mug", "points", "*"]
    for line in lines:
        row = rows[line["rule_id"]]
        assert (line["campaign"], line["window_days"], line["status"]) == ("thanks", "30", row["status"])
        assert line["notes"] == "; ".join(row["notes"])
        assert (line["fallbacks"], line["winner"]) == ("", "")
        assert dt.datetime.fromisoformat(line["as_of"]) == dt.datetime.fromisoformat(body["as_of"])
        assert line["complete_until"] >= body["complete_until"].replace("Z", "+00:00")
        for column, path in CSV_TO_JSON.items():
            assert same_value(line[column], pick(row, path)), (line["rule_id"], column, line[column], pick(row, path))

    for page in (as_html, html_by_accept):
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
    assert settled(html_by_accept.text) == settled(as_html.text)
    parsed = DataFields()
    parsed.feed(as_html.text)
    assert (parsed.body["data-campaign"], parsed.body["data-window-days"]) == ("thanks", "30")
    assert "thanks" in parsed.title
    assert "thanks" in parsed.heading
    assert parsed.sections == ["*", "mug", "points"]  # the campaign as a whole first
    for rule, values in parsed.values.items():
        row = rows[rule]
        assert parsed.status[rule] == row["status"]
        assert HTML_FIELDS | (UPLIFT_HTML_FIELDS if row["uplift"] else set()) <= set(values), rule
        for name, shown in values.items():
            assert same_value(shown, pick(row, name)), (rule, name, shown, pick(row, name))


# ------------------------------------------------------------------------------------------------- 6. exports


def read_csv(response: httpx.Response) -> tuple[list[str], list[dict[str, str]]]:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/csv")
    reader = csv.DictReader(io.StringIO(response.text))
    return list(reader.fieldnames or []), list(reader)


EXPOSURE_HEADER = [
    "event_id",
    "campaign",
    "rule_id",
    "customer_id",
    "group",
    "occurred_at",
    "award_id",
    "holdout",
    "rule_set_version",
    "variant",
    "variant_drawn",
    "programme_held",
]
AWARD_HEADER = [
    "award_id",
    "event_id",
    "customer_id",
    "campaign",
    "rule_id",
    "kind",
    "points",
    "gift_id",
    "cost",
    "issued_at",
    "expires_at",
    "status",
    "status_changed_at",
    "redeemed_order_id",
    "rule_set_version",
    "variant",
]


async def test_exports_stream_every_exposure_and_award_as_posted_with_filters(
    rules_app: AppFactory, keys: dict[str, Any]
) -> None:
    buys = population(30, seed=11)
    since, until = BASE + dt.timedelta(hours=2), BASE + dt.timedelta(hours=3)
    async with rules_app(THANKS, settings=SETTINGS) as app:
        awards = await post_batch(app, keys, buys)

        async def get(path: str) -> httpx.Response:
            response: httpx.Response = await app.get(path, headers=keys["reports:read"])
            return response

        exposures = await get("/v1/exports/exposures.csv")
        award_rows = await get("/v1/exports/awards.csv")
        of_thanks = await get("/v1/exports/exposures.csv?campaign=thanks")
        of_other = await get("/v1/exports/exposures.csv?campaign=other")
        awards_of_other = await get("/v1/exports/awards.csv?campaign=other")
        period = f"from={iso(since)}&to={iso(until)}"
        exposures_in = await get(f"/v1/exports/exposures.csv?campaign=thanks&{period}")
        awards_in = await get(f"/v1/exports/awards.csv?{period}")
        exposures_from = await get(f"/v1/exports/exposures.csv?from={iso(since)}")
        exposures_to = await get(f"/v1/exports/exposures.csv?to={iso(since)}")
        no_zone = await get("/v1/exports/awards.csv?from=2026-01-01T00:00:00")
        backwards = await get(f"/v1/exports/exposures.csv?from={iso(until)}&to={iso(since)}")

    assert exposures.headers["content-disposition"] == 'attachment; filename="exposures.csv"'
    header, rows = read_csv(exposures)
    assert header == EXPOSURE_HEADER
    award_of = {(a["event_id"], a["rule_id"]): a for a in awards}
    treated = {b.customer for b in buys if any(k[0] == b.event_id for k in award_of)}
    version = awards[0]["rule_set_version"]
    expected = [
        {
            "event_id": b.event_id,
            "campaign": "thanks",
            "rule_id": rule,
            "customer_id": b.customer,
            "group": "treatment" if b.customer in treated else "control",
            "occurred_at": b.at.isoformat(),
            "award_id": award_of[(b.event_id, rule)]["award_id"] if b.customer in treated else "",
            "holdout": "0.5",
            "rule_set_version": version,
            "variant": "",  # rules with one award
            "variant_drawn": "",
            "programme_held": "False",  # no programme holdout
        }
        for b in buys
        for rule in ("mug", "points")
        if b.qualifies(rule)
    ]
    assert rows == expected  # oldest first
    assert {r["group"] for r in rows} == {"treatment", "control"}
    assert read_csv(of_thanks)[1] == expected
    assert read_csv(of_other) == (EXPOSURE_HEADER, [])
    assert read_csv(exposures_in)[1] == [
        r for r in expected if since.isoformat() <= r["occurred_at"] < until.isoformat()
    ]
    assert 0 < len(read_csv(exposures_in)[1]) < len(expected)
    after, before = read_csv(exposures_from)[1], read_csv(exposures_to)[1]
    assert before + after == expected

    assert award_rows.headers["content-disposition"] == 'attachment; filename="awards.csv"'
    header, rows = read_csv(award_rows)
    assert header == AWARD_HEADER  # no code: codes are bearer tokens for a gift
    assert "code" not in header
    assert not any(a["code"] in award_rows.text for a in awards)
    by_id = {b.event_id: b for b in buys}
    expected_awards = sorted(
        (
            {
                "award_id": a["award_id"],
                "event_id": a["event_id"],
                "customer_id": by_id[a["event_id"]].customer,
                "campaign": "thanks",
                "rule_id": a["rule_id"],
                "kind": a["kind"],
                "points": "150" if a["rule_id"] == "points" else "",
                "gift_id": "mug" if a["rule_id"] == "mug" else "",
                "cost": str(COSTS[a["rule_id"]]),
                "issued_at": by_id[a["event_id"]].at.isoformat(),
                "status": "issued",
                "status_changed_at": "",
                "redeemed_order_id": "",
                "rule_set_version": version,
                "variant": "",
            }
            for a in awards
        ),
        key=lambda r: (r["issued_at"], r["award_id"]),
    )
    assert [{k: r[k] for k in expected_awards[0]} for r in rows] == expected_awards
    for r in rows:  # the mug has the pack's default validity; points do not expire
        expires = dt.datetime.fromisoformat(r["expires_at"]) if r["expires_at"] else None
        assert (expires is not None) == (r["rule_id"] == "mug")
        assert expires is None or expires > dt.datetime.fromisoformat(r["issued_at"])
    assert read_csv(awards_of_other) == (AWARD_HEADER, [])
    in_period = [r for r in expected_awards if since.isoformat() <= r["issued_at"] < until.isoformat()]
    assert [r["award_id"] for r in read_csv(awards_in)[1]] == [r["award_id"] for r in in_period]
    assert in_period

    for bad, field_name in ((no_zone, "from"), (backwards, "to")):
        assert bad.status_code == 422
        assert bad.headers["content-type"].startswith("application/problem+json")
        assert bad.json()["errors"][0]["field"] == field_name


BULK = "campaign: bulk\nrules:\n" + "".join(
    f'  - id: r{i}\n    when: type == "purchase"\n    award: {{points: {i + 1}}}\n' for i in range(10)
)


async def test_a_large_export_comes_back_whole_through_several_chunks(
    rules_app: AppFactory, keys: dict[str, Any]
) -> None:
    events = 450  # ten rules each: 4,500 exposures and awards, three chunks of the server-side cursor
    buys = [Buy(f"b{i:04d}", f"c{i % 97}", BASE + dt.timedelta(minutes=i), Decimal(10)) for i in range(events)]
    async with rules_app(BULK) as app:
        awards = await post_batch(app, keys, buys)
        exposures = await app.get("/v1/exports/exposures.csv?campaign=bulk", headers=keys["reports:read"])
        award_rows = await app.get("/v1/exports/awards.csv", headers=keys["reports:read"])
    assert len(awards) == 10 * events
    _, rows = read_csv(exposures)
    assert len(rows) == 10 * events
    assert {(r["event_id"], r["rule_id"]) for r in rows} == {(b.event_id, f"r{i}") for b in buys for i in range(10)}
    assert [r["event_id"] for r in rows] == sorted(r["event_id"] for r in rows)  # oldest first
    _, rows = read_csv(award_rows)
    assert len(rows) == 10 * events
    assert {r["award_id"] for r in rows} == {a["award_id"] for a in awards}


async def test_an_export_stops_at_its_limit_oldest_first_and_refuses_a_limit_beyond_the_cap(
    rules_app: AppFactory, keys: dict[str, Any]
) -> None:
    buys = [Buy(f"b{i:04d}", f"c{i}", BASE + dt.timedelta(minutes=i), Decimal(10)) for i in range(30)]
    async with rules_app(BULK) as app:
        await post_batch(app, keys, buys)
        first = await app.get("/v1/exports/exposures.csv?limit=25", headers=keys["reports:read"])
        too_many = await app.get("/v1/exports/awards.csv?limit=1000001", headers=keys["reports:read"])
        none = await app.get("/v1/exports/awards.csv?limit=0", headers=keys["reports:read"])
    _, rows = read_csv(first)
    assert len(rows) == 25
    assert [r["event_id"] for r in rows] == ["b0000"] * 10 + ["b0001"] * 10 + ["b0002"] * 5
    for refused in (too_many, none):
        assert refused.status_code == 400, refused.text
        assert refused.headers["content-type"].startswith("application/problem+json")
        assert "limit" in refused.text


# ----------------------------------------------------------------------------------------------------- 7. CLI


async def delight(*args: str, env: dict[str, str]) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        str(ROOT / ".venv" / "bin" / "delight"),
        *args,
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=120)
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()


async def test_cli_report_uplift_gives_the_numbers_of_the_http_report(
    rules_app: AppFactory, keys: dict[str, Any], database_url: str, tmp_path: Path
) -> None:
    async with rules_app(THANKS, settings=SETTINGS) as app:
        await post_batch(app, keys, population(100, seed=5))
        body = await report(app, keys, "campaign=thanks&window_days=21")
        as_csv = await app.get(
            "/v1/reports/uplift?campaign=thanks&window_days=21&format=csv", headers=keys["reports:read"]
        )
    env = {name: value for name, value in os.environ.items() if not name.startswith("DELIGHT_")}
    env |= {
        "DELIGHT_DATABASE_URL": database_url,
        "DELIGHT_RULES_DIR": str(write_pack(tmp_path / "rules", THANKS)),
        "DELIGHT_DATA_DIR": str(tmp_path / "data"),
        "DELIGHT_LOG_LEVEL": "WARNING",
    }
    common = ("report", "uplift", "--campaign", "thanks")
    (
        (json_rc, json_out, json_err),
        (csv_rc, csv_out, _),
        (table_rc, table_out, _),
        (bad_rc, bad_out, bad_err),
    ) = await asyncio.gather(
        delight(*common, "--window-days", "21", "--format", "json", env=env),
        delight(*common, "--window-days", "21", "--format", "csv", env=env),
        delight(*common, "--window-days", "21", "--format", "table", env=env),
        delight(*common, "--window-days", "0", env=env),
    )
    assert (json_rc, csv_rc, table_rc) == (0, 0, 0), json_err
    assert not (tmp_path / "data").exists()  # the given database, not an embedded one
    assert without_freshness(json.loads(json_out)) == without_freshness(body)
    assert json.loads(json_out)["complete_until"] >= body["complete_until"]
    assert settled(csv_out) == settled(as_csv.text)
    lines = table_out.splitlines()
    assert lines[0].startswith("uplift of thanks: repeat purchase within 21 days of first exposure")
    for row in [*body["rules"], body["campaign_total"]]:
        label = "(campaign)" if row["rule_id"] == "*" else row["rule_id"]
        [line] = [line for line in lines if line.startswith(f"{label} ")]
        t, c = row["treated"], row["control"]
        assert f"{t['repeaters']}/{t['customers']} " in line
        assert f"{c['repeaters']}/{c['customers']} " in line
        assert f" {row['award_cost']:.2f} " in line
        if row["uplift"]:
            assert f"{row['uplift']['absolute'] * 100:+.1f}pp" in line
    assert (bad_rc, bad_out) == (2, "")
    assert "--window-days must be between 1 and 365" in bad_err
