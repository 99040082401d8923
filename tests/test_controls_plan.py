"""The surprise controls as pure logic: limits, slots, holdout, counters to draw, the log, and file errors.

No database: rule sets are built in temporary directories and ``accept`` runs
against ``MemoryCounters``.
"""

from __future__ import annotations

import datetime as dt
import textwrap
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from service.controls.plan import (
    LOG_LIMIT,
    SHARDS,
    Candidate,
    LogEntry,
    MemoryCounters,
    Plan,
    Take,
    accept,
    holdout_group,
    home_shard,
    log_after,
    plan,
    reserve_payload,
    takes_for,
    used,
)
from service.rules.engine import Outcome, evaluate
from service.rules.facts import build_facts
from service.rules.loader import RuleError, RuleSetError, load_rule_set
from service.rules.ruleset import Budget, Campaign, Limit, Rule, RuleSet, duration_seconds

UTC = dt.UTC
MARCH_1 = dt.datetime(2026, 3, 1, 10, 15, tzinfo=UTC)
DAY = 86400

CATALOG = """\
gifts:
  - id: mug
    name: Branded mug
    unit_cost: 3.10
    stock: 40
  - id: vase
    name: Small vase
    unit_cost: 4.50
"""
SETTINGS = """\
seed: controls-tests
point_value: 0.01
"""
ALWAYS = 'type == "purchase"'


# ---------------------------------------------------------------------------------------------- helpers


def write(directory: Path, name: str, text: str) -> str:
    directory.mkdir(parents=True, exist_ok=True)
    text = textwrap.dedent(text)
    (directory / name).write_text(text)
    return text


def load(directory: Path, *campaigns: str, settings: str = SETTINGS, catalog: str = CATALOG) -> RuleSet:
    write(directory, "catalog.yaml", catalog)
    write(directory, "settings.yaml", settings)
    for i, text in enumerate(campaigns):
        write(directory, f"campaign-{i}.yaml", text)
    return load_rule_set(directory)


def purchase(event_id: str = "e-1", *, at: dt.datetime = MARCH_1, customer_id: str = "c-1") -> dict[str, Any]:
    return {
        "event_id": event_id,
        "type": "purchase",
        "customer_id": customer_id,
        "occurred_at": at,
        "channel": "pos",
        "store_id": "madrid-1",
        "order": {
            "order_id": f"o-{event_id}",
            "total": 150.0,
            "currency": "EUR",
            "items": [{"sku": "TBL-OAK", "category": "handmade", "quantity": 1, "unit_price": 150.0}],
        },
        "attributes": {},
    }


def profile(customer_id: str = "c-1") -> dict[str, Any]:
    return {"customer_id": customer_id, "purchase_count": 1, "attributes": {"first_name": "Ana"}}


def facts_for(rule_set: RuleSet, event: dict[str, Any]) -> dict[str, Any]:
    return build_facts(event, profile(event["customer_id"]), rule_set.zone)


def plan_for(
    rule_set: RuleSet, log: list[LogEntry] | None = None, *, event: dict[str, Any] | None = None
) -> tuple[Plan, dict[str, Any]]:
    facts = facts_for(rule_set, event or purchase())
    return plan(rule_set, facts, evaluate(rule_set, facts), log or []), facts


def entry(at: dt.datetime, campaign: str = "c", rule_id: str = "r") -> LogEntry:
    return LogEntry(int(at.timestamp()), campaign, rule_id)


def names(p: Plan, positions: list[int] | None = None) -> list[tuple[str, str]]:
    chosen = p.candidates if positions is None else [p.candidates[i] for i in positions]
    return [(c.campaign, c.outcome.rule_id) for c in chosen]


def accept_in_memory(p: Plan, counters: MemoryCounters | None = None) -> list[int]:
    counters = counters or MemoryCounters()
    return accept(p, counters.take, counters.room, counters.give_back)


def campaign_file(name: str, rules: list[tuple[str, str]], header: str = "") -> str:
    """A campaign whose rules all match a purchase; each rule is ``(id, extra YAML lines)``."""
    text = f"campaign: {name}\n{textwrap.dedent(header)}rules:\n"
    for rule_id, extra in rules:
        text += f"  - id: {rule_id}\n    when: '{ALWAYS}'\n    award: {{points: 10}}\n"
        text += "".join(f"    {line}\n" for line in textwrap.dedent(extra).splitlines())
    return text


def candidate(campaign: str, rule_id: str, group: str = "treatment", *takes: Take) -> Candidate:
    outcome = Outcome(campaign, rule_id, True, "awarded", None, None)
    return Candidate(outcome, group, tuple(takes), 0)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------- durations


@pytest.mark.parametrize(
    ("text", "seconds"), [("30m", 1800), ("12h", 12 * 3600), ("90d", 90 * DAY), ("2w", 14 * DAY), ("1d", DAY)]
)
def test_duration_seconds_reads_minutes_hours_days_and_weeks(text: str, seconds: int) -> None:
    assert duration_seconds(text) == seconds


def test_limits_in_files_become_counts_over_seconds(tmp_path: Path) -> None:
    rule_set = load(
        tmp_path,
        campaign_file(
            "c",
            [("r", "limit: {per_customer: 2, every: 12h}")],
            header="limit: {per_customer: 3, every: 2w}\n",
        ),
        settings=SETTINGS + "fatigue: {max: 4, every: 30m}\n",
    )
    [campaign] = rule_set.campaigns
    assert campaign.limit == Limit(3, 14 * DAY)
    assert campaign.rules[0].limit == Limit(2, 12 * 3600)
    assert rule_set.fatigue == Limit(4, 1800)


# ---------------------------------------------------------------------------------------------- limits in event time


LIMITED = campaign_file("c", [("r", "limit: {per_customer: 1, every: 90d}")])


def test_used_counts_logged_surprises_on_both_sides_of_the_event_within_the_span() -> None:
    limit = Limit(1, 90 * DAY)
    at = int(MARCH_1.timestamp())
    log = [
        LogEntry(at - 89 * DAY, "c", "r"),
        LogEntry(at + 89 * DAY, "c", "r"),
        LogEntry(at - 90 * DAY, "c", "r"),  # exactly one span away: outside
        LogEntry(at + 90 * DAY, "c", "r"),
        LogEntry(at, "c", "other"),
        LogEntry(at, "d", "r"),
    ]
    assert used(log, at, limit, campaign="c", rule_id="r") == 2
    assert used(log, at, limit, campaign="c") == 3
    assert used(log, at, limit) == 4


def test_rule_limit_blocks_when_a_surprise_was_logged_50_days_after_the_event(tmp_path: Path) -> None:
    rule_set = load(tmp_path, LIMITED)
    p, _ = plan_for(rule_set, [entry(MARCH_1 + dt.timedelta(days=50))])
    assert p.candidates == []
    assert p.notes == {("c", "r"): "rule limit reached for this customer"}


def test_rule_limit_blocks_when_a_surprise_was_logged_50_days_before_the_event(tmp_path: Path) -> None:
    rule_set = load(tmp_path, LIMITED)
    p, _ = plan_for(rule_set, [entry(MARCH_1 - dt.timedelta(days=50))])
    assert p.candidates == []
    assert p.notes[("c", "r")] == "rule limit reached for this customer"


@pytest.mark.parametrize("days", [90, -90])
def test_rule_limit_does_not_count_a_surprise_exactly_one_span_away(tmp_path: Path, days: int) -> None:
    rule_set = load(tmp_path, LIMITED)
    p, _ = plan_for(rule_set, [entry(MARCH_1 + dt.timedelta(days=days))])
    assert names(p) == [("c", "r")]
    assert p.notes == {}


def test_rule_limit_counts_only_the_same_rule_of_the_same_campaign(tmp_path: Path) -> None:
    rule_set = load(tmp_path, LIMITED)
    log = [entry(MARCH_1, "c", "other-rule"), entry(MARCH_1, "other-campaign", "r")]
    p, _ = plan_for(rule_set, log)
    assert names(p) == [("c", "r")]


def test_rule_limit_of_two_allows_a_second_surprise_and_blocks_a_third(tmp_path: Path) -> None:
    rule_set = load(tmp_path, campaign_file("c", [("r", "limit: {per_customer: 2, every: 7d}")]))
    one = [entry(MARCH_1 + dt.timedelta(days=3))]
    two = [*one, entry(MARCH_1 - dt.timedelta(days=6))]
    assert names(plan_for(rule_set, one)[0]) == [("c", "r")]
    blocked, _ = plan_for(rule_set, two)
    assert blocked.candidates == []
    assert blocked.notes[("c", "r")] == "rule limit reached for this customer"


def test_held_out_surprises_count_towards_the_rule_limit(tmp_path: Path) -> None:
    """The log holds control entries too; the rule limit does not look at the group."""
    rule_set = load(tmp_path, LIMITED.replace("rules:", "holdout: 0.99\nrules:", 1))
    p, _ = plan_for(rule_set, [entry(MARCH_1 + dt.timedelta(days=1))])
    assert p.candidates == []


# ---------------------------------------------------------------------------------------------- order and slots


def test_candidates_run_highest_priority_first_and_ties_keep_campaign_then_file_order(tmp_path: Path) -> None:
    rule_set = load(
        tmp_path,
        campaign_file("beta", [("b-low", "priority: -5"), ("b-first", ""), ("b-second", ""), ("b-top", "priority: 9")]),
        campaign_file("alpha", [("a-first", ""), ("a-mid", "priority: 3"), ("a-second", "")]),
    )
    p, _ = plan_for(rule_set)
    assert names(p) == [
        ("beta", "b-top"),
        ("alpha", "a-mid"),
        ("alpha", "a-first"),
        ("alpha", "a-second"),
        ("beta", "b-first"),
        ("beta", "b-second"),
        ("beta", "b-low"),
    ]
    assert [c.priority for c in p.candidates] == [9, 3, 0, 0, 0, 0, -5]


def test_campaign_limit_gives_its_slots_to_the_highest_priority_candidates(tmp_path: Path) -> None:
    rule_set = load(
        tmp_path,
        campaign_file(
            "c",
            [("first", ""), ("urgent", "priority: 10"), ("second", "priority: 1")],
            header="limit: {per_customer: 3, every: 30d}\n",
        ),
    )
    log = [entry(MARCH_1 + dt.timedelta(days=20), "c", "first")]  # a later surprise takes one of the 3 slots
    p, _ = plan_for(rule_set, log)
    assert p.campaign_slots == {"c": 2}
    positions = accept_in_memory(p)
    assert names(p, positions) == [("c", "urgent"), ("c", "second")]
    assert p.notes == {("c", "first"): "campaign limit reached for this customer"}


def test_campaign_limit_with_no_slot_left_refuses_every_candidate_of_that_campaign_only(tmp_path: Path) -> None:
    rule_set = load(
        tmp_path,
        campaign_file("c", [("r1", ""), ("r2", "")], header="limit: {per_customer: 1, every: 30d}\n"),
        campaign_file("free", [("r", "")]),
    )
    p, _ = plan_for(rule_set, [entry(MARCH_1 - dt.timedelta(days=29), "c", "r2")])
    assert p.campaign_slots == {"c": 0}
    positions = accept_in_memory(p)
    assert names(p, positions) == [("free", "r")]
    assert p.notes[("c", "r1")] == "campaign limit reached for this customer"
    assert p.notes[("c", "r2")] == "campaign limit reached for this customer"


def test_fatigue_cap_spans_campaigns_and_serves_candidates_in_priority_order(tmp_path: Path) -> None:
    rule_set = load(
        tmp_path,
        campaign_file("a", [("a1", ""), ("a2", "")]),
        campaign_file("b", [("b1", "priority: 2")]),
        campaign_file("c", [("c1", "priority: 1")]),
        settings=SETTINGS + "fatigue: {max: 3, every: 7d}\n",
    )
    log = [
        entry(MARCH_1 - dt.timedelta(days=6), "elsewhere", "x"),  # within 7 days: counts
        entry(MARCH_1 + dt.timedelta(days=7), "elsewhere", "y"),  # exactly 7 days later: does not
    ]
    p, _ = plan_for(rule_set, log)
    assert p.fatigue_slots == 2
    positions = accept_in_memory(p)
    assert names(p, positions) == [("b", "b1"), ("c", "c1")]
    assert p.notes == {
        ("a", "a1"): "fatigue cap reached for this customer",
        ("a", "a2"): "fatigue cap reached for this customer",
    }


def test_no_fatigue_setting_means_no_cross_campaign_cap(tmp_path: Path) -> None:
    rule_set = load(tmp_path, campaign_file("a", [("a1", ""), ("a2", ""), ("a3", "")]))
    p, _ = plan_for(rule_set, [entry(MARCH_1, "a", "a1")] * 50)
    assert p.fatigue_slots is None
    assert accept_in_memory(p) == [0, 1, 2]


def test_a_candidate_refused_for_its_budget_leaves_its_slot_to_the_next(tmp_path: Path) -> None:
    rule_set = load(
        tmp_path,
        campaign_file(
            "c", [("mug", "priority: 5"), ("points", "")], header="limit: {per_customer: 1, every: 30d}\n"
        ).replace("award: {points: 10}\n    priority: 5", "award: {gift: mug}\n    priority: 5"),
        settings=SETTINGS + "fatigue: {max: 1, every: 30d}\n",
    )
    p, _ = plan_for(rule_set)
    assert names(p) == [("c", "mug"), ("c", "points")]
    counters = MemoryCounters(n={"stock:mug": 40})  # the mug is out of stock
    positions = accept_in_memory(p, counters)
    assert names(p, positions) == [("c", "points")]
    assert p.notes == {("c", "mug"): "budget, daily pacing or stock spent"}


def test_a_held_out_candidate_uses_slots_like_a_treated_one() -> None:
    p = Plan(
        [candidate("c", "r1", "control"), candidate("c", "r2"), candidate("d", "r3")],
        campaign_slots={"c": 1},
        fatigue_slots=2,
    )
    assert accept_in_memory(p) == [0, 2]
    assert p.notes == {("c", "r2"): "campaign limit reached for this customer"}


def test_negative_slots_from_an_over_full_log_refuse_like_zero() -> None:
    p = Plan([candidate("c", "r1"), candidate("d", "r2")], campaign_slots={"c": -2}, fatigue_slots=None)
    assert accept_in_memory(p) == [1]
    p = Plan([candidate("c", "r1")], campaign_slots={}, fatigue_slots=-1)
    assert accept_in_memory(p) == []


def test_rules_that_did_not_fire_are_not_candidates(tmp_path: Path) -> None:
    rule_set = load(
        tmp_path,
        'campaign: c\nrules:\n  - id: fires\n    when: type == "purchase"\n    award: {points: 1}\n'
        '  - id: other-type\n    when: type == "return"\n    award: {points: 1}\n'
        '  - id: never\n    when: type == "purchase"\n    chance: 0.0\n    award: {points: 1}\n',
    )
    p, _ = plan_for(rule_set)
    assert names(p) == [("c", "fires")]
    assert not p.needs_counters


# ---------------------------------------------------------------------------------------------- holdout


def _holdout_rule_set(directory: Path, share: float, *names: str) -> RuleSet:
    return load(directory, *(campaign_file(n, [("r", "")], header=f"holdout: {share}\n") for n in names))


def test_holdout_group_is_sticky_per_customer_and_campaign_whatever_the_event(tmp_path: Path) -> None:
    rule_set = _holdout_rule_set(tmp_path, 0.5, "c")
    events = [
        ("e-1", MARCH_1),
        ("pos-77", MARCH_1 + dt.timedelta(days=40, hours=3)),
        ("web-x", MARCH_1 - dt.timedelta(days=300)),
    ]
    groups_seen: set[str] = set()
    for i in range(100):
        customer = f"c-{i}"
        groups = {
            plan_for(rule_set, event=purchase(event_id, at=at, customer_id=customer))[0].candidates[0].group
            for event_id, at in events
        }
        assert len(groups) == 1, customer
        [group] = groups
        assert group == holdout_group(rule_set, rule_set.campaigns[0], customer)
        groups_seen.add(group)
    assert groups_seen == {"control", "treatment"}


def test_holdout_groups_are_drawn_independently_per_campaign(tmp_path: Path) -> None:
    rule_set = _holdout_rule_set(tmp_path, 0.5, "a", "b")
    a, b = rule_set.campaigns
    differ = sum(holdout_group(rule_set, a, f"c-{i}") != holdout_group(rule_set, b, f"c-{i}") for i in range(400))
    assert 140 <= differ <= 260  # about half, not always the same group


def test_holdout_of_0_2_puts_between_18_and_22_percent_of_4000_customers_in_control(tmp_path: Path) -> None:
    rule_set = _holdout_rule_set(tmp_path, 0.2, "c")
    [campaign] = rule_set.campaigns
    control = sum(holdout_group(rule_set, campaign, f"customer-{i}") == "control" for i in range(4000))
    assert 0.18 * 4000 <= control <= 0.22 * 4000


def test_no_holdout_puts_every_customer_in_treatment(tmp_path: Path) -> None:
    rule_set = _holdout_rule_set(tmp_path, 0.0, "c")
    [campaign] = rule_set.campaigns
    assert {holdout_group(rule_set, campaign, f"c-{i}") for i in range(500)} == {"treatment"}


def test_holdout_draw_depends_on_the_seed(tmp_path: Path) -> None:
    one = _holdout_rule_set(tmp_path / "one", 0.5, "c")
    two = load(tmp_path / "two", campaign_file("c", [("r", "")], header="holdout: 0.5\n"), settings="seed: other\n")
    groups_one = [holdout_group(one, one.campaigns[0], f"c-{i}") for i in range(200)]
    groups_two = [holdout_group(two, two.campaigns[0], f"c-{i}") for i in range(200)]
    assert groups_one != groups_two


# ---------------------------------------------------------------------------------------------- all or nothing


def test_a_held_out_candidate_needs_room_but_draws_nothing() -> None:
    budget = Take("budget:c", 2, 1000, 300)
    stock = Take("stock:mug", 5, None, 0)
    counters = MemoryCounters(n={"budget:c": 1, "stock:mug": 4}, cents={"budget:c": 600})
    p = Plan([candidate("c", "r", "control", budget, stock)], {}, None)
    assert accept_in_memory(p, counters) == [0]
    assert counters.n == {"budget:c": 1, "stock:mug": 4}
    assert counters.cents == {"budget:c": 600}


def test_a_held_out_candidate_is_refused_when_a_counter_has_no_room() -> None:
    budget = Take("budget:c", 2, 1000, 300)
    counters = MemoryCounters(n={"budget:c": 1}, cents={"budget:c": 701})  # 701 + 300 > 1000
    p = Plan([candidate("c", "r", "control", budget)], {}, 3)
    assert accept_in_memory(p, counters) == []
    assert p.notes == {("c", "r"): "budget, daily pacing or stock spent"}
    assert counters.n == {"budget:c": 1}


def test_a_treated_candidate_whose_second_counter_is_spent_draws_neither() -> None:
    budget = Take("budget:c", 10, 10_000, 450)
    stock = Take("stock:vase", 3, None, 0)
    counters = MemoryCounters(n={"budget:c": 4, "stock:vase": 3}, cents={"budget:c": 1800, "stock:vase": 0})
    p = Plan([candidate("c", "r", "treatment", budget, stock)], {}, None)
    assert accept_in_memory(p, counters) == []
    assert counters.n == {"budget:c": 4, "stock:vase": 3}
    assert counters.cents == {"budget:c": 1800, "stock:vase": 0}


def test_a_treated_candidate_draws_every_counter_it_needs() -> None:
    budget = Take("budget:c", 10, 10_000, 450)
    stock = Take("stock:vase", 3, None, 0)
    counters = MemoryCounters()
    p = Plan([candidate("c", "r", "treatment", budget, stock), candidate("c", "r2", "treatment", budget)], {}, None)
    assert accept_in_memory(p, counters) == [0, 1]
    assert counters.n == {"budget:c": 2, "stock:vase": 1}
    assert counters.cents == {"budget:c": 900, "stock:vase": 0}


def test_memory_counters_hold_unit_and_money_caps_exactly() -> None:
    counters = MemoryCounters()
    units = Take("k", 3, None, 0)
    assert [counters.take(units) for _ in range(4)] == [True, True, True, False]
    money = Take("m", None, 1000, 300)
    assert [counters.take(money) for _ in range(4)] == [True, True, True, False]
    assert counters.take(Take("m", None, 1000, 100))
    assert not counters.take(Take("m", None, 1000, 1))
    assert counters.take(Take("m", None, 1000, 0))
    assert (counters.n["m"], counters.cents["m"]) == (5, 1000)


def test_cost_budget_refuses_what_would_go_over_but_a_cheaper_rule_still_fits(tmp_path: Path) -> None:
    """A cost budget of 9.50, a 4.50 vase before a 1.00 offer: the vase stops fitting first, the offer later."""
    rule_set = load(
        tmp_path,
        """\
        campaign: c
        budget: {cost: 9.50}
        rules:
          - id: vase
            when: type == "purchase"
            award: {gift: vase}
          - id: offer
            when: type == "purchase"
            award: {offer: {amount: 5, cost: 1.00}}
        """,
    )
    counters = MemoryCounters()
    given = []
    for i in range(6):
        p, _ = plan_for(rule_set, event=purchase(f"e-{i}", customer_id=f"c-{i}"))
        given.append([rule_id for _, rule_id in names(p, accept_in_memory(p, counters))])
    assert given == [["vase", "offer"], ["offer"], ["offer"], ["offer"], ["offer"], []]
    assert (counters.n, counters.cents) == ({"budget:c": 6}, {"budget:c": 950})


def test_award_budget_gives_exactly_its_count(tmp_path: Path) -> None:
    rule_set = load(tmp_path, campaign_file("c", [("r", "")], header="budget: {awards: 3}\n"))
    counters = MemoryCounters()
    wins = 0
    for i in range(10):
        p, _ = plan_for(rule_set, event=purchase(f"e-{i}", customer_id=f"c-{i}"))
        wins += len(accept_in_memory(p, counters))
    assert wins == 3
    assert counters.n == {"budget:c": 3}


def test_gift_stock_is_shared_by_every_campaign_giving_that_gift(tmp_path: Path) -> None:
    catalog = CATALOG.replace("stock: 40", "stock: 2")
    rule_set = load(
        tmp_path,
        "campaign: a\nrules:\n  - id: r\n    when: 'type == \"purchase\"'\n    award: {gift: mug}\n",
        "campaign: b\nrules:\n  - id: r\n    when: 'type == \"purchase\"'\n    award: {gift: mug}\n",
        catalog=catalog,
    )
    p, _ = plan_for(rule_set)
    assert [c.takes for c in p.candidates] == [(Take("stock:mug", 2, None, 0),)] * 2
    counters = MemoryCounters()
    assert accept_in_memory(p, counters) == [0, 1]
    p, _ = plan_for(rule_set, event=purchase("e-2", customer_id="c-2"))
    assert accept_in_memory(p, counters) == []
    assert counters.n == {"stock:mug": 2}


# ---------------------------------------------------------------------------------------------- takes


BUDGETED = """\
campaign: shop
budget: {awards: 500, cost: 2500.00, daily_awards: 20, daily_cost: 100.50}
rules:
  - id: mug
    when: type == "purchase"
    award: {gift: mug}
  - id: vase
    when: type == "purchase"
    award: {gift: vase}
  - id: points
    when: type == "purchase"
    award: {points: 250}
  - id: priced-offer
    when: type == "purchase"
    award: {offer: {percent: 15, cost: 2.75}}
  - id: default-offer
    when: type == "purchase"
    award: {offer: {amount: 5}}
"""


def test_takes_carry_budget_and_daily_caps_in_cents_and_the_rule_cost_in_cents(tmp_path: Path) -> None:
    rule_set = load(tmp_path, BUDGETED, settings=SETTINGS + "offer_cost: 1.25\n")
    p, _ = plan_for(rule_set)
    takes = {c.outcome.rule_id: c.takes for c in p.candidates}

    def money_takes(cents: int) -> tuple[Take, ...]:
        return (
            Take("budget:shop", 500, 250_000, cents),
            Take("daily:shop:2026-03-01", 20, 10_050, cents),
        )

    assert takes["mug"] == (*money_takes(310), Take("stock:mug", 40, None, 0))
    assert takes["vase"] == money_takes(450)  # the vase has no stock limit
    assert takes["points"] == money_takes(250)  # 250 points at 0.01
    assert takes["priced-offer"] == money_takes(275)
    assert takes["default-offer"] == money_takes(125)  # settings.offer_cost


def test_rule_cost_comes_from_gift_points_offer_or_settings(tmp_path: Path) -> None:
    rule_set = load(tmp_path, BUDGETED, settings="point_value: 0.004\noffer_cost: 0.30\n")
    costs = {r.id: r.cost for r in rule_set.campaigns[0].rules}
    assert costs == {
        "mug": Decimal("3.1"),
        "vase": Decimal("4.5"),
        "points": Decimal("1.00"),
        "priced-offer": Decimal("2.75"),
        "default-offer": Decimal("0.30"),
    }


def test_daily_pacing_is_keyed_by_the_shop_local_day(tmp_path: Path) -> None:
    campaign = "campaign: c\nbudget: {daily_awards: 5}\nrules:\n  - id: r\n    when: 'type == \"purchase\"'\n"
    campaign += "    award: {points: 10}\n"
    late_utc = dt.datetime(2026, 3, 1, 23, 30, tzinfo=UTC)
    madrid = load(tmp_path / "madrid", campaign, settings=SETTINGS + "timezone: Europe/Madrid\n")
    p, _ = plan_for(madrid, event=purchase(at=late_utc))
    assert p.candidates[0].takes == (Take("daily:c:2026-03-02", 5, None, 10),)

    utc = load(tmp_path / "utc", campaign)
    p, _ = plan_for(utc, event=purchase(at=late_utc))
    assert p.candidates[0].takes == (Take("daily:c:2026-03-01", 5, None, 10),)

    early_utc = dt.datetime(2026, 3, 1, 5, 0, tzinfo=UTC)
    la = load(tmp_path / "la", campaign, settings=SETTINGS + "timezone: America/Los_Angeles\n")
    p, _ = plan_for(la, event=purchase(at=early_utc))
    assert p.candidates[0].takes == (Take("daily:c:2026-02-28", 5, None, 10),)


def test_only_configured_counters_are_drawn(tmp_path: Path) -> None:
    rule_set = load(
        tmp_path,
        "campaign: a\nbudget: {awards: 7}\nrules:\n  - id: r\n    when: 'type == \"purchase\"'\n"
        "    award: {points: 10}\n",
        "campaign: b\nbudget: {daily_cost: 3.00}\nrules:\n  - id: r\n    when: 'type == \"purchase\"'\n"
        "    award: {points: 10}\n",
        "campaign: c\nrules:\n  - id: r\n    when: 'type == \"purchase\"'\n    award: {gift: vase}\n",
        "campaign: d\nbudget: {}\nrules:\n  - id: r\n    when: 'type == \"purchase\"'\n    award: {gift: mug}\n",
    )
    p, _ = plan_for(rule_set)
    takes = {c.campaign: c.takes for c in p.candidates}
    assert takes == {
        "a": (Take("budget:a", 7, None, 10),),
        "b": (Take("daily:b:2026-03-01", None, 300, 10),),
        "c": (),
        "d": (Take("stock:mug", 40, None, 0),),
    }


def test_takes_for_lists_counters_sorted_by_key(tmp_path: Path) -> None:
    rule_set = load(tmp_path, BUDGETED)
    campaign: Campaign = rule_set.campaigns[0]
    rule: Rule = campaign.rules[0]
    keys = [t.key for t in takes_for(rule, campaign, dt.date(2026, 12, 31))]
    assert keys == ["budget:shop", "daily:shop:2026-12-31", "stock:mug"]
    assert keys == sorted(keys)


def test_a_budget_of_zero_awards_refuses_everything(tmp_path: Path) -> None:
    rule_set = load(
        tmp_path,
        "campaign: c\nbudget: {awards: 0}\nrules:\n  - id: r\n    when: 'type == \"purchase\"'\n"
        "    award: {points: 10}\n",
    )
    p, _ = plan_for(rule_set)
    assert p.candidates[0].takes == (Take("budget:c", 0, None, 10),)
    assert accept_in_memory(p) == []


def test_reserve_payload_sends_every_take_from_the_event_home_shard(tmp_path: Path) -> None:
    rule_set = load(tmp_path, BUDGETED, settings=SETTINGS + "fatigue: {max: 2, every: 1d}\n")
    p, _ = plan_for(rule_set)
    payload = reserve_payload(p, "pos-madrid1-000123")
    home = home_shard("pos-madrid1-000123")
    assert 0 <= home < SHARDS
    assert payload["fatigue"] == 2
    assert payload["slots"] == {}
    assert [c["campaign"] for c in payload["candidates"]] == ["shop"] * 5
    mug = payload["candidates"][0]["takes"]
    assert mug[0] == {"key": "budget:shop", "home": home, "cap_n": 500, "cap_cents": 250_000, "cents": 310}
    assert {t["home"] for c in payload["candidates"] for t in c["takes"]} == {home}


def test_home_shards_spread_over_all_shards() -> None:
    assert {home_shard(f"pos-{i}") for i in range(500)} == set(range(SHARDS))


# ---------------------------------------------------------------------------------------------- the log


def test_log_after_keeps_the_newest_500_entries_in_time_order() -> None:
    base = int(MARCH_1.timestamp())
    old = [LogEntry(base + ((i * 7919) % 600) * 60, "c", f"r{i}") for i in range(600)]  # shuffled times
    added = [LogEntry(base - 10 * DAY, "c", "late-event"), LogEntry(base + 1000 * 60, "c", "newest")]
    merged = log_after(old, added)
    assert len(merged) == LOG_LIMIT == 500
    times = [m[0] for m in merged]
    assert times == sorted(times)
    everything = sorted([*old, *added], key=lambda e: e.at)
    assert merged == [e.to_json() for e in everything[-500:]]
    assert merged[-1] == [base + 1000 * 60, "c", "newest"]
    assert [base - 10 * DAY, "c", "late-event"] not in merged  # older than all kept entries


def test_log_after_keeps_a_short_log_whole_and_round_trips() -> None:
    log = [LogEntry(300, "a", "x"), LogEntry(100, "b", "y")]
    merged = log_after(log, [LogEntry(200, "c", "z")])
    assert merged == [[100, "b", "y"], [200, "c", "z"], [300, "a", "x"]]
    assert [LogEntry.from_json(m) for m in merged] == sorted([*log, LogEntry(200, "c", "z")], key=lambda e: e.at)


# ---------------------------------------------------------------------------------------------- file errors


def line_of(text: str, needle: str) -> int:
    [line] = [n for n, line in enumerate(text.splitlines(), start=1) if needle in line]
    return line


def errors_of(directory: Path) -> list[RuleError]:
    with pytest.raises(RuleSetError) as caught:
        load_rule_set(directory)
    return caught.value.errors


def campaign_errors(tmp_path: Path, text: str, *, catalog: str = CATALOG) -> tuple[str, list[RuleError]]:
    write(tmp_path, "catalog.yaml", catalog)
    text = write(tmp_path, "c.yaml", text)
    return text, errors_of(tmp_path)


@pytest.mark.parametrize("every", ["90 days", "0d", "90", "1.5d", "90D", "-3d", "1y"])
def test_a_bad_rule_limit_duration_is_an_error_at_its_line(tmp_path: Path, every: str) -> None:
    text, errors = campaign_errors(
        tmp_path,
        f"""\
        campaign: c
        rules:
          - id: r
            when: type == "purchase"
            award: {{points: 1}}
            limit:
              per_customer: 1
              every: {every}
        """,
    )
    [error] = errors
    assert error.path == str(tmp_path / "c.yaml")
    assert error.line == line_of(text, "every:")
    assert "`rules[0].limit.every`" in error.message


def test_a_bad_fatigue_duration_is_an_error_in_settings_at_its_line(tmp_path: Path) -> None:
    write(tmp_path, "c.yaml", campaign_file("c", [("r", "")]))
    text = write(tmp_path, "settings.yaml", "seed: s\nfatigue:\n  max: 3\n  every: 90 days\n")
    [error] = errors_of(tmp_path)
    assert (error.path, error.line) == (str(tmp_path / "settings.yaml"), line_of(text, "every:"))
    assert "`fatigue.every`" in error.message


def test_a_bad_campaign_limit_duration_is_an_error_at_its_line(tmp_path: Path) -> None:
    text, errors = campaign_errors(
        tmp_path, campaign_file("c", [("r", "")], header="limit:\n  per_customer: 2\n  every: 0d\n")
    )
    [error] = errors
    assert (error.path, error.line) == (str(tmp_path / "c.yaml"), line_of(text, "every:"))
    assert "`limit.every`" in error.message


@pytest.mark.parametrize("holdout", ["1.0", "1", "-0.1", "1.5"])
def test_a_holdout_of_one_or_more_or_negative_is_an_error_at_its_line(tmp_path: Path, holdout: str) -> None:
    text, errors = campaign_errors(tmp_path, campaign_file("c", [("r", "")], header=f"holdout: {holdout}\n"))
    [error] = errors
    assert (error.path, error.line) == (str(tmp_path / "c.yaml"), line_of(text, "holdout:"))
    assert "`holdout`" in error.message


def test_a_holdout_just_below_one_loads(tmp_path: Path) -> None:
    rule_set = load(tmp_path, campaign_file("c", [("r", "")], header="holdout: 0.99\n"))
    assert rule_set.campaigns[0].holdout == 0.99


def test_daily_awards_above_total_awards_is_an_error_at_the_daily_line(tmp_path: Path) -> None:
    text, errors = campaign_errors(
        tmp_path,
        campaign_file("c", [("r", "")], header="budget:\n  awards: 100\n  daily_awards: 101\n"),
    )
    [error] = errors
    assert (error.path, error.line) == (str(tmp_path / "c.yaml"), line_of(text, "daily_awards:"))
    assert "`budget.daily_awards` (101) is more than `budget.awards` (100)" in error.message


def test_daily_cost_above_total_cost_is_an_error_at_the_daily_line(tmp_path: Path) -> None:
    text, errors = campaign_errors(
        tmp_path,
        campaign_file("c", [("r", "")], header="budget:\n  cost: 100.00\n  daily_cost: 100.01\n"),
    )
    [error] = errors
    assert (error.path, error.line) == (str(tmp_path / "c.yaml"), line_of(text, "daily_cost:"))
    assert "`budget.daily_cost` (100.01) is more than `budget.cost` (100.0)" in error.message


def test_daily_caps_equal_to_the_totals_or_without_totals_load(tmp_path: Path) -> None:
    rule_set = load(
        tmp_path,
        campaign_file("a", [("r", "")], header="budget: {awards: 10, daily_awards: 10, cost: 5, daily_cost: 5}\n"),
        campaign_file("b", [("r", "")], header="budget: {daily_awards: 1000, daily_cost: 9999}\n"),
    )
    a, b = rule_set.campaigns
    assert a.budget == Budget(awards=10, cost=Decimal("5.00"), daily_awards=10, daily_cost=Decimal("5.00"))
    assert b.budget == Budget(awards=None, cost=None, daily_awards=1000, daily_cost=Decimal("9999.00"))


def test_negative_gift_stock_is_an_error_in_the_catalogue_at_its_line(tmp_path: Path) -> None:
    catalog = "gifts:\n  - id: mug\n    name: Mug\n    stock: 5\n  - id: vase\n    name: Vase\n    stock: -1\n"
    write(tmp_path, "catalog.yaml", catalog)
    write(tmp_path, "c.yaml", campaign_file("c", [("r", "")]))
    [error] = errors_of(tmp_path)
    assert (error.path, error.line) == (str(tmp_path / "catalog.yaml"), line_of(catalog, "stock: -1"))
    assert "`gifts[1].stock`" in error.message


@pytest.mark.parametrize("priority", ["1001", "-1001", "1.5", "high"])
def test_a_priority_out_of_range_is_an_error_at_its_line(tmp_path: Path, priority: str) -> None:
    text, errors = campaign_errors(
        tmp_path, campaign_file("c", [("ok", "priority: 1000"), ("r", f"priority: {priority}")])
    )
    [error] = errors
    assert (error.path, error.line) == (str(tmp_path / "c.yaml"), line_of(text, f"priority: {priority}"))
    assert "`rules[1].priority`" in error.message


@pytest.mark.parametrize("where", ["rule", "campaign"])
def test_an_unknown_key_inside_limit_is_an_error_at_its_line(tmp_path: Path, where: str) -> None:
    limit = "limit:\n  per_customer: 1\n  every: 90d\n  per_order: 1\n"
    if where == "rule":
        text = campaign_file("c", [("r", limit)])
        at = "rules[0].limit"
    else:
        text = campaign_file("c", [("r", "")], header=limit)
        at = "limit"
    text, errors = campaign_errors(tmp_path, text)
    [error] = errors
    assert (error.path, error.line) == (str(tmp_path / "c.yaml"), line_of(text, "per_order:"))
    assert f"unknown key `per_order` in {at}" in error.message


def test_a_limit_without_every_is_an_error(tmp_path: Path) -> None:
    text, errors = campaign_errors(tmp_path, campaign_file("c", [("r", "limit: {per_customer: 1}")]))
    [error] = errors
    assert error.line == line_of(text, "limit:")
    assert "missing key `every`" in error.message


def test_an_unknown_budget_key_is_an_error_at_its_line(tmp_path: Path) -> None:
    text, errors = campaign_errors(
        tmp_path, campaign_file("c", [("r", "")], header="budget:\n  awards: 10\n  monthly_cost: 5\n")
    )
    [error] = errors
    assert error.line == line_of(text, "monthly_cost:")
    assert "unknown key `monthly_cost` in budget" in error.message
