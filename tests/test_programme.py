"""The programme-wide holdout and its report, through the real HTTP stack.

Simulated customers whose chance of coming back depends on whether the
programme surprises them: a share of them (``programme_holdout``) is kept out
of every campaign, recorded as exposed. The programme report over 30, 90 and
180 days must give back what was simulated, worked out here from the posted
events and the exposures export alone; campaigns' own reports must leave the
programme's held-out customers out; and the share must not go down without
being said.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import random
from collections import defaultdict
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import AppFactory, purchase
from tests.test_uplift_report import iso

SHARE = 0.2
SETTINGS = f"seed: programme-tests\npoint_value: 0.01\nprogramme_holdout: {SHARE}\n"
THANKS = """\
campaign: thanks
holdout: 0.25
rules:
  - id: mug
    when: type == "purchase" and order.total >= 100
    award: {gift: mug}
"""
SPRING = """\
campaign: spring
rules:
  - id: points
    when: type == "purchase" and order.total >= 100
    award: {points: 100}
"""
COST = {"mug": Decimal("3.10"), "points": Decimal("1.00")}  # the mug's unit cost; 100 points at 0.01
BASE = dt.datetime(2026, 1, 5, 9, tzinfo=dt.UTC)
DAY = dt.timedelta(days=1)
CLOCK = BASE + 200 * DAY
Json = dict[str, Any]


async def post(client: Any, keys: Json, events: list[Json]) -> list[Json]:
    results: list[Json] = []
    for start in range(0, len(events), 500):
        chunk = events[start : start + 500]
        response = await client.post("/v1/events/batch", json={"events": chunk}, headers=keys["events:write"])
        assert response.status_code == 200, response.text
        results += response.json()["results"]
    assert [r["status"] for r in results] == [201] * len(events)
    return results


async def get(client: Any, keys: Json, path: str, **headers: str) -> Any:
    response = await client.get(path, headers={**keys["reports:read"], **headers})
    assert response.status_code == 200, response.text
    return response


async def test_the_programme_holdout_gets_nothing_and_the_programme_report_gives_back_the_simulation(
    rules_app: AppFactory, keys: dict[str, Any]
) -> None:
    rng = random.Random(20261207)
    n = 400
    t0 = {f"p{i:03d}": BASE + dt.timedelta(minutes=37 * i) for i in range(n)}
    async with rules_app(THANKS, SPRING, settings=SETTINGS) as app:
        firsts = [purchase(f"{c}-0", c, 150.0, occurred_at=iso(at)) for c, at in t0.items()]
        results = await post(app, keys, firsts)
        awarded = {e["customer_id"]: r.get("awards", []) for e, r in zip(firsts, results, strict=True)}
        exported = await get(app, keys, "/v1/exports/exposures.csv")
        exposures = list(csv.DictReader(io.StringIO(exported.text)))
        held = {x["customer_id"] for x in exposures if x["programme_held"] == "True"}

        # Come back: more often when surprised, at times that fall in different windows.
        later: list[Json] = []
        bought: dict[str, list[tuple[dt.datetime, Decimal]]] = defaultdict(list)
        for c, at in t0.items():
            for k in range(rng.choice([1, 2, 3])):
                if rng.random() < (0.3 if c in held else 0.55):
                    when = at + dt.timedelta(seconds=rng.randint(3600, 170 * 86400))
                    amount = Decimal(rng.randint(1000, 9000)) / 100  # under 100: exposes nobody again
                    bought[c].append((when, amount))
                    later.append(purchase(f"{c}-{k + 1}", c, float(amount), occurred_at=iso(when)))
        later.append(purchase("clock", "clock", 5.0, occurred_at=iso(CLOCK)))
        await post(app, keys, later)

        body = (await get(app, keys, "/v1/reports/programme")).json()
        as_csv = await get(app, keys, "/v1/reports/programme", Accept="text/csv")
        page = await get(app, keys, "/v1/reports/programme?format=html")
        campaign = (await get(app, keys, "/v1/reports/uplift?campaign=thanks&window_days=30")).json()
        held_one = sorted(held)[0]
        simulated = await app.post(
            "/v1/rules/simulate",
            json={"event": purchase("sim", held_one, 150.0, occurred_at=iso(CLOCK))},
            headers=keys["rules:admin"],
        )

    # A stable hash of the customer id holds out about the share asked for, and they get nothing.
    assert 50 <= len(held) <= 110, len(held)
    assert all(not awarded[c] for c in held)
    assert all(len(awarded[c]) == 2 or {a["campaign"] for a in awarded[c]} == {"spring"} for c in t0 if c not in held)
    for c in held:  # recorded as exposed to every rule that would have given them something, as control
        mine = [x for x in exposures if x["customer_id"] == c]
        assert {(x["campaign"], x["group"], x["award_id"]) for x in mine} == {
            ("thanks", "control", ""),
            ("spring", "control", ""),
        }
    assert not any(x["programme_held"] == "True" for x in exposures if x["customer_id"] not in held)

    assert body["holdout"] == SHARE
    assert [w["window_days"] for w in body["windows"]] == [30, 90, 180]
    for window in body["windows"]:
        days, row = window["window_days"], window["result"]
        assert row["rule_id"] == "*"
        assert row["status"] == "ok", row["notes"]
        assert row["expected_control_share"] == pytest.approx(SHARE)
        assert row["srm_mismatch"] is False
        span = dt.timedelta(days=days)
        for name, group in (("treated", [c for c in t0 if c not in held]), ("control", sorted(held))):
            revenue = [sum((a for at, a in bought[c] if t0[c] < at <= t0[c] + span), Decimal(0)) for c in group]
            repeaters = sum(1 for r in revenue if r > 0)
            got = row[name]
            assert (got["customers"], got["repeaters"], got["open"]) == (len(group), repeaters, 0), (days, name)
            assert got["revenue_per_customer"] == pytest.approx(float(sum(revenue)) / len(group), abs=1e-4)
        # Every campaign's awards to the surprised, within the window: here all given at t0.
        cost = sum(COST[a["rule_id"]] for c in t0 if c not in held for a in awarded[c])
        assert row["award_cost"] == pytest.approx(float(cost), abs=1e-9)
        treated_n = row["treated"]["customers"]
        difference = row["treated"]["revenue_per_customer"] - row["control"]["revenue_per_customer"]
        assert row["incremental_revenue"] == pytest.approx(difference * treated_n, abs=0.01 * treated_n)
        assert row["return_on_cost"] == pytest.approx(
            (row["incremental_revenue"] - row["award_cost"]) / row["award_cost"], abs=1e-4
        )
        assert row["uplift"]["absolute"] > 0  # 0.55 against 0.3 a draw, at 400 customers: plainly there
    assert body["windows"][2]["result"]["treated"]["repeaters"] > body["windows"][0]["result"]["treated"]["repeaters"]

    lines = list(csv.DictReader(io.StringIO(as_csv.text)))
    assert [(line["campaign"], line["rule_id"], line["window_days"]) for line in lines] == [
        ("programme", "*", "30"),
        ("programme", "*", "90"),
        ("programme", "*", "180"),
    ]
    for line, window in zip(lines, body["windows"], strict=True):
        assert float(line["treated_repeat_rate"]) == window["result"]["treated"]["repeat_rate"]
        assert float(line["award_cost"]) == window["result"]["award_cost"]
    assert page.headers["content-type"].startswith("text/html")
    assert page.text.count('data-rule="*"') == 3

    # The campaign's own report compares its treated and held-out customers among those the programme surprises.
    total = campaign["campaign_total"]
    assert total["treated"]["customers"] + total["control"]["customers"] == n - len(held)
    assert total["srm_mismatch"] is False
    assert total["expected_control_share"] == pytest.approx(0.25)

    assert simulated.status_code == 200, simulated.text
    outcomes = {r["campaign"]: r for r in simulated.json()["rules"]}
    assert "programme holdout" in outcomes["thanks"]["outcome"]
    assert outcomes["spring"]["group"] == "control"
    assert simulated.json()["awards"] == []


async def test_lowering_the_programme_holdout_is_refused_unless_said(
    rules_app: AppFactory, keys: dict[str, Any], tmp_path: Path
) -> None:
    async with rules_app(THANKS, settings=SETTINGS) as app:
        in_force = (await app.get("/v1/rules", headers=keys["rules:admin"])).json()["version"]
    lower = SETTINGS.replace(f"programme_holdout: {SHARE}", "programme_holdout: 0.05")
    # A process started on a rule set that lowers it runs the set in force instead.
    async with rules_app(THANKS, settings=lower) as app:
        assert (await app.get("/v1/rules", headers=keys["rules:admin"])).json()["version"] == in_force
        # A reload of the same directory is refused, naming the line and what it would do.
        directory = tmp_path / "rules-1"
        refused = await app.post("/v1/rules/reload", headers=keys["rules:admin"])
        assert refused.status_code == 422
        assert refused.headers["content-type"].startswith("application/problem+json")
        errors = {(e["field"], e["message"]) for e in refused.json()["errors"]}
        ((where, message),) = errors
        assert where == f"{directory / 'settings.yaml'}:3"
        assert "programme_holdout goes down from 0.2 to 0.05" in message
        assert "75% of the customers held out" in message
        assert "programme_holdout_release: true" in message
        assert (await app.get("/v1/rules", headers=keys["rules:admin"])).json()["version"] == in_force
        # Said on purpose, it goes through; raising it needs nothing.
        (directory / "settings.yaml").write_text(
            lower + "programme_holdout_release: true\noffline_redemptions: 1000d\n"
        )
        accepted = await app.post("/v1/rules/reload", headers=keys["rules:admin"])
        assert accepted.status_code == 200, accepted.text
        (directory / "settings.yaml").write_text(SETTINGS + "offline_redemptions: 1000d\n")
        assert (await app.post("/v1/rules/reload", headers=keys["rules:admin"])).status_code == 200
