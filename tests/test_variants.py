"""Reward variants: ``award: {one_of: [...]}`` gives each customer one variant, the same every time, by weight;
the next one in the list when the drawn gift is out of stock; and every record of the award names it."""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import io
import random
import textwrap
from collections import Counter
from pathlib import Path
from typing import Any

import msgspec
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from service.events.schemas import EventIn
from service.reports import stats
from service.rules.backtest import backtest
from service.rules.loader import RuleSetError, load_rule_set
from tests.conftest import PACK_CATALOG, AppFactory, post_all, purchase

VARIANTS = """\
campaign: thanks
rules:
  - id: gift
    when: type == "purchase"
    award:
      one_of:
        - {gift: mug}
        - {gift: vase, weight: 3}
        - {points: 150}
"""

# Nearly everyone draws the lamp (10 in stock); the rest get a mug instead.
LAMP_FIRST = """\
campaign: lamps
holdout: 0.0
rules:
  - id: lamp
    when: type == "purchase"
    award:
      one_of:
        - {gift: lamp, weight: 1000000}
        - {gift: mug}
"""


def pack(directory: Path, campaign: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "catalog.yaml").write_text(PACK_CATALOG)
    (directory / "settings.yaml").write_text("seed: variant-tests\n")
    (directory / "c.yaml").write_text(textwrap.dedent(campaign))
    return directory


# --- the rule file ------------------------------------------------------------------------------------------------


def test_variants_load_with_their_names_weights_and_costs(tmp_path: Path) -> None:
    rule = load_rule_set(pack(tmp_path, VARIANTS)).by_name["thanks"].rules[0]
    assert rule.kind == "one_of"
    assert [(v.variant, v.kind, v.weight, str(v.cost)) for v in rule.variants] == [
        ("mug", "gift", 1.0, "3.10"),
        ("vase", "gift", 3.0, "4.50"),
        ("points-150", "points", 1.0, "0.00"),  # point_value is 0 in this pack
    ]


def refusals(directory: Path, campaign: str) -> list[tuple[int, str]]:
    with pytest.raises(RuleSetError) as refused:
        load_rule_set(pack(directory, campaign))
    return sorted((e.line, e.message) for e in refused.value.errors)


def test_two_variants_of_one_name_are_refused_at_the_second(tmp_path: Path) -> None:
    campaign = VARIANTS.replace("- {points: 150}", "- {gift: mug, weight: 2}")
    assert refusals(tmp_path, campaign) == [(9, "two variants of this rule are named `mug`; give each its own `id`")]


def test_a_variant_with_two_awards_or_an_unknown_gift_is_refused_at_its_line(tmp_path: Path) -> None:
    campaign = VARIANTS.replace("- {points: 150}", "- {points: 150, gift: mug, id: both}").replace(
        "- {gift: vase, weight: 3}", "- {gift: teapot}"
    )
    assert refusals(tmp_path, campaign) == [
        (8, "gift `teapot` is not in catalog.yaml"),
        (9, "a variant needs exactly one of `points`, `gift` or `offer`"),
    ]


@pytest.mark.parametrize(
    ("change", "complaint"),
    [
        (("        - {gift: vase, weight: 3}\n        - {points: 150}\n", ""), "of length >= 2"),
        (("    award:\n", "    award:\n      points: 5\n"), "exactly one of"),
        (("- {gift: mug}", "- {gift: mug, weight: 0}"), "Expected `float` > 0.0"),
    ],
    ids=["one-variant", "plain-award-too", "zero-weight"],
)
def test_a_malformed_one_of_is_refused(tmp_path: Path, change: tuple[str, str], complaint: str) -> None:
    [(_, message)] = refusals(tmp_path, VARIANTS.replace(*change))
    assert complaint in message, message


# --- the draw -----------------------------------------------------------------------------------------------------


def test_each_customer_always_gets_the_same_variant_and_the_shares_follow_the_weights(tmp_path: Path) -> None:
    rule_set = load_rule_set(pack(tmp_path, VARIANTS))
    rule = rule_set.by_name["thanks"].rules[0]
    seed = rule_set.settings.seed
    drawn = {f"c-{n}": rule.variant_order(seed, f"c-{n}")[0].variant for n in range(5000)}
    assert all(rule.variant_order(seed, c)[0].variant == v for c, v in list(drawn.items())[:200])
    shares = {k: n / len(drawn) for k, n in Counter(drawn.values()).items()}
    assert abs(shares["vase"] - 0.6) < 0.03  # weight 3 of 5
    assert abs(shares["mug"] - 0.2) < 0.03
    assert abs(shares["points-150"] - 0.2) < 0.03
    # the fallback order: the drawn one, then the rest of the list round to its start
    orders = {tuple(v.variant for v in rule.variant_order(seed, c)) for c in drawn}
    assert orders == {("mug", "vase", "points-150"), ("vase", "points-150", "mug"), ("points-150", "mug", "vase")}


# --- the event path -----------------------------------------------------------------------------------------------


async def test_the_award_its_exposure_webhook_message_and_exports_name_the_variant(
    rules_app: AppFactory,
    keys: dict[str, Any],
    engine: AsyncEngine,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("WEBHOOK_SECRET_TEST", "s3cret")
    rule = load_rule_set(pack(tmp_path / "p", VARIANTS)).by_name["thanks"].rules[0]
    settings = (
        "seed: variant-tests\nwebhooks:\n"
        "  - {id: crm, url: 'https://crm.example/hooks', secret_env: WEBHOOK_SECRET_TEST, events: [award.issued]}\n"
    )
    async with rules_app(VARIANTS, settings=settings) as client:
        first = await post_all(client, keys, [purchase(f"e-{n}", f"c-{n}", 50.0) for n in range(40)])
        again = await post_all(client, keys, [purchase(f"f-{n}", f"c-{n}", 60.0) for n in range(40)])
        awards_csv = await client.get("/v1/exports/awards.csv", headers=keys["reports:read"])
        exposures_csv = await client.get("/v1/exports/exposures.csv", headers=keys["reports:read"])
    expected = {f"c-{n}": rule.variant_order("variant-tests", f"c-{n}")[0].variant for n in range(40)}
    assert len(set(expected.values())) == 3
    by_customer = {a["event_id"].split("-")[1]: a for a in first}
    assert {f"c-{n}": by_customer[str(n)]["variant"] for n in range(40)} == expected
    assert {f"c-{a['event_id'].split('-')[1]}": a["variant"] for a in again} == expected  # the same each time
    assert all((a["kind"] == "points") == (a["variant"] == "points-150") for a in first)
    async with engine.connect() as conn:
        exposures = dict(
            (await conn.execute(text("SELECT customer_id, variant FROM exposures WHERE event_id LIKE 'e-%'"))).all()
        )
        messages = (
            (await conn.execute(text("SELECT payload FROM outbox WHERE payload->'data'->>'event_id' LIKE 'e-%'")))
            .scalars()
            .all()
        )
    assert exposures == expected
    assert {(m["data"]["event_id"].replace("e-", "c-"), m["data"]["variant"]) for m in messages} == set(
        expected.items()
    )
    awards_rows = list(csv.DictReader(io.StringIO(awards_csv.text)))
    assert {(r["customer_id"], r["variant"]) for r in awards_rows} == set(expected.items())
    exposure_rows = list(csv.DictReader(io.StringIO(exposures_csv.text)))
    assert {(r["customer_id"], r["variant"], r["variant_drawn"]) for r in exposure_rows} == {
        (c, v, "") for c, v in expected.items()
    }


async def test_when_the_drawn_gift_runs_out_the_next_variant_is_given_and_recorded_as_such(
    rules_app: AppFactory, keys: dict[str, Any], engine: AsyncEngine
) -> None:
    async with rules_app(LAMP_FIRST) as client:
        awards = await post_all(client, keys, [purchase(f"e-{n}", f"c-{n}", 50.0) for n in range(30)])
    assert Counter(a["variant"] for a in awards) == {"lamp": 10, "mug": 20}
    async with engine.connect() as conn:
        rows = (await conn.execute(text("SELECT variant, variant_drawn, count(*) FROM exposures GROUP BY 1, 2"))).all()
        stock = (await conn.execute(text("SELECT sum(n) FROM counters WHERE key = 'stock:lamp'"))).scalar()
    assert sorted(tuple(r) for r in rows) == [("lamp", None, 10), ("mug", "lamp", 20)]
    assert stock == 10


async def test_simulate_names_the_variant_the_live_event_then_gets(rules_app: AppFactory, keys: dict[str, Any]) -> None:
    async with rules_app(LAMP_FIRST) as client:
        await post_all(client, keys, [purchase(f"e-{n}", f"c-{n}", 50.0) for n in range(10)])  # the lamps go
        event = purchase("e-next", "c-next", 50.0)
        simulated = await client.post("/v1/rules/simulate", json={"event": event}, headers=keys["rules:admin"])
        live = await client.post("/v1/events", json=event, headers=keys["events:write"])
    assert simulated.status_code == 200, simulated.text
    [preview] = simulated.json()["awards"]
    [award] = live.json()["awards"]
    assert (preview["variant"], award["variant"]) == ("mug", "mug")


async def test_held_out_customers_are_recorded_with_the_variant_they_would_have_had(
    rules_app: AppFactory, keys: dict[str, Any], engine: AsyncEngine, tmp_path: Path
) -> None:
    campaign = VARIANTS.replace("campaign: thanks\n", "campaign: thanks\nholdout: 0.5\n")
    rule = load_rule_set(pack(tmp_path / "p", campaign)).by_name["thanks"].rules[0]
    async with rules_app(campaign, settings="seed: variant-tests\n") as client:
        await post_all(client, keys, [purchase(f"e-{n}", f"c-{n}", 50.0) for n in range(60)])
    async with engine.connect() as conn:
        rows = (await conn.execute(text('SELECT customer_id, "group", variant FROM exposures'))).all()
    assert {g for _, g, _ in rows} == {"treatment", "control"}
    assert all(v == rule.variant_order("variant-tests", c)[0].variant for c, _, v in rows)


async def test_the_back_test_counts_awards_per_variant(tmp_path: Path) -> None:
    rule_set = load_rule_set(pack(tmp_path, VARIANTS))
    rule = rule_set.by_name["thanks"].rules[0]

    async def events() -> Any:
        for n in range(300):
            yield msgspec.convert(purchase(f"e-{n}", f"c-{n}", 50.0), EventIn, strict=False)

    report = await backtest(
        rule_set, events(), dt.datetime(2026, 1, 1, tzinfo=dt.UTC), dt.datetime(2027, 1, 1, tzinfo=dt.UTC)
    )
    [row] = [t.as_row() for t in report.rules]
    expected = Counter(rule.variant_order(rule_set.settings.seed, f"c-{n}")[0].variant for n in range(300))
    assert row["variants"] == dict(sorted(expected.items()))
    assert row["awards"] == 300


# --- the report ---------------------------------------------------------------------------------------------------


def test_benjamini_hochberg_agrees_with_statsmodels() -> None:
    from statsmodels.stats.multitest import multipletests

    rng = random.Random(7)
    for size in (1, 2, 3, 6, 15):
        p_values = [rng.random() ** 3 for _ in range(size)]
        expected = multipletests(p_values, method="fdr_bh")[1]
        assert stats.benjamini_hochberg(p_values) == pytest.approx(list(expected), abs=1e-12)


HELD_OUT = VARIANTS.replace("campaign: thanks\n", "campaign: thanks\nholdout: 0.3\n")


async def run_variants(
    rules_app: AppFactory, keys: dict[str, Any], tmp_path: Path, repeat_chance: dict[str, float], seed: int
) -> tuple[dict[str, Any], dict[tuple[str, str], tuple[int, int]]]:
    """900 customers buy on 1 March; each comes back on 10 March with the chance of their variant (or of the
    holdout, ``"control"``). The report's rule row, and the true (customers, repeaters) per (group, variant)."""
    rule = load_rule_set(pack(tmp_path / "p", HELD_OUT)).by_name["thanks"].rules[0]
    rng = random.Random(seed)
    customers = [f"v-{n}" for n in range(900)]
    truth: dict[tuple[str, str], list[int]] = {}
    async with rules_app(HELD_OUT, settings="seed: variant-tests\n") as client:
        first = [purchase(f"{c}-a", c, 50.0, occurred_at="2026-03-01T10:00:00Z") for c in customers]
        answers = await asyncio.gather(
            *(client.post("/v1/events", json=e, headers=keys["events:write"]) for e in first)
        )
        again = []
        for c, answer in zip(customers, answers, strict=True):
            given = answer.json()["awards"]
            group = "treatment" if given else "control"
            variant = given[0]["variant"] if given else rule.variant_order("variant-tests", c)[0].variant
            comes_back = rng.random() < repeat_chance["control" if group == "control" else variant]
            tally = truth.setdefault((group, variant), [0, 0])
            tally[0] += 1
            tally[1] += comes_back
            if comes_back:
                again.append(purchase(f"{c}-b", c, 80.0, occurred_at="2026-03-10T10:00:00Z"))
        again.append(purchase("clock", "clock", 10.0, occurred_at="2026-05-01T10:00:00Z"))  # the windows close
        await post_all(client, keys, again)
        report = await client.get(
            "/v1/reports/uplift", params={"campaign": "thanks", "window_days": 30}, headers=keys["reports:read"]
        )
    assert report.status_code == 200, report.text
    [row] = report.json()["rules"]
    return row, {k: (v[0], v[1]) for k, v in truth.items()}


async def test_the_report_gives_each_variant_against_the_holdout_and_names_the_true_winner(
    rules_app: AppFactory, keys: dict[str, Any], tmp_path: Path
) -> None:
    chance = {"control": 0.3, "mug": 0.3, "points-150": 0.3, "vase": 0.7}
    row, truth = await run_variants(rules_app, keys, tmp_path, chance, seed=1)
    results = row["variants"]
    shown = {v["variant"]: (v["treated"]["customers"], v["treated"]["repeaters"]) for v in results["variants"]}
    assert shown == {v: n for (g, v), n in truth.items() if g == "treatment"}
    control = [
        sum(n for (g, _), (n, _) in truth.items() if g == "control"),
        sum(r for (g, _), (_, r) in truth.items() if g == "control"),
    ]
    assert all([v["control"]["customers"], v["control"]["repeaters"]] == control for v in results["variants"])
    assert [row["treated"]["customers"], row["control"]["customers"]] == [
        sum(n for (g, _), (n, _) in truth.items() if g == "treatment"),
        control[0],
    ]
    assert results["winner"] == "vase"
    assert results["verdict"].startswith("vase brings customers back more often than every other variant")
    # one family: each variant against the holdout, then every pair
    raw = [v["uplift"]["p_value"] for v in results["variants"]] + [c["p_value"] for c in results["comparisons"]]
    adjusted = [v["uplift"]["p_adjusted"] for v in results["variants"]] + [
        c["p_adjusted"] for c in results["comparisons"]
    ]
    assert adjusted == pytest.approx(stats.benjamini_hochberg(raw), abs=1e-7)
    assert {(c["variant"], c["against"]) for c in results["comparisons"]} == {
        ("vase", "mug"),
        ("vase", "points-150"),
        tuple(sorted(("mug", "points-150"), key=lambda v: -truth[("treatment", v)][1] / truth[("treatment", v)][0])),
    }


async def test_the_report_names_no_winner_when_the_variants_do_the_same(
    rules_app: AppFactory, keys: dict[str, Any], tmp_path: Path
) -> None:
    chance = {"control": 0.3, "mug": 0.4, "points-150": 0.4, "vase": 0.4}
    row, _ = await run_variants(rules_app, keys, tmp_path, chance, seed=2)
    results = row["variants"]
    assert results["winner"] is None
    assert results["verdict"].startswith("no winner:")
    assert all(c["p_adjusted"] >= 0.05 for c in results["comparisons"])


async def test_the_report_counts_the_customers_given_a_variant_because_theirs_ran_out(
    rules_app: AppFactory, keys: dict[str, Any]
) -> None:
    async with rules_app(LAMP_FIRST) as client:
        await post_all(client, keys, [purchase(f"e-{n}", f"c-{n}", 50.0) for n in range(30)])
        await post_all(client, keys, [purchase("clock", "clock", 10.0, occurred_at="2026-05-01T10:00:00Z")])
        report = await client.get(
            "/v1/reports/uplift", params={"campaign": "lamps", "window_days": 30}, headers=keys["reports:read"]
        )
        as_csv = await client.get(
            "/v1/reports/uplift",
            params={"campaign": "lamps", "window_days": 30, "format": "csv"},
            headers=keys["reports:read"],
        )
    [row] = report.json()["rules"]
    variants = {v["variant"]: (v["treated"]["customers"], v["fallbacks"]) for v in row["variants"]["variants"]}
    assert variants == {"lamp": (10, 0), "mug": (20, 20)}
    lines = list(csv.DictReader(io.StringIO(as_csv.text)))
    assert [(r["rule_id"], r["variant"], r["fallbacks"]) for r in lines] == [
        ("lamp", "", ""),
        ("lamp", "lamp", "0"),
        ("lamp", "mug", "20"),
        ("*", "", ""),
    ]
