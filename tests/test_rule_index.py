"""The rule index (``index.py``) and shared clauses (``compiled.compile_clauses``) change no decision. No database.

``evaluate(..., matched_only=True)`` evaluates only the rules an event's
(type, channel, name) admits, and every evaluation tests each top-level
``and`` clause once per event, however many rules share it. Both must give
what ``rule-engine`` itself gives when every rule's condition is evaluated in
full, an exception in ``compiled.ERRORS`` counting as "does not hold".

Property tests (hypothesis) over generated conditions, rule sets and events,
then hand-written cases for what ``requirements`` reads and how conditions
split into clauses.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import json
import textwrap
from collections import Counter
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import pytest
import rule_engine
from hypothesis import given, settings
from hypothesis import strategies as st

from service.rules.compiled import ERRORS
from service.rules.engine import Outcome, awarding, draw, evaluate
from service.rules.facts import build_facts, rule_context
from service.rules.index import INDEXED, admits, requirements
from service.rules.loader import load_rule_set
from service.rules.ruleset import Campaign, Rule, RuleSet
from tests.conftest import TEST_RULES

CATALOG = """\
gifts:
  - id: mug
    name: Branded mug
    unit_cost: 3.10
"""
SETTINGS = """\
seed: rule-index-tests
default_valid_days: 45
point_value: 0.01
"""

# Small pools, so that pins and events meet often: the literals a condition pins
# to are mostly values events carry ("" is what an absent channel or name reads as).
TYPES = ("purchase", "interaction", "return")
CHANNELS = ("pos", "web", "app")
NAMES = ("review_posted", "app_visit", "rock and roll")
PINNED: dict[str, tuple[str, ...]] = {
    "type": (*TYPES, "nowhere"),
    "channel": (*CHANNELS, ""),
    "name": (*NAMES, ""),
}
CATEGORIES = ("handmade", "lamps", "")
TOTALS = (0.0, 49.99, 50, 150.0, 300)
MOMENTS = (
    dt.datetime(2026, 3, 1, 10, 15, tzinfo=dt.UTC),
    dt.datetime(2026, 12, 31, 23, 30, tzinfo=dt.UTC),
    dt.datetime(2027, 6, 15, 8, 0, tzinfo=dt.UTC),
)
WINDOWS: tuple[tuple[str, str] | None, ...] = (
    None,
    None,
    ("2026-01-01", "2026-12-31"),
    ("2026-03-02", "2027-12-31"),
    ("2027-01-01", "2027-12-31"),
)

# Clauses that pin none of the indexed fields: numbers, segments, a rating that
# cannot be read when absent or a string, comprehensions (one with a variable
# named like an indexed field), substring tests, `and` inside a string literal.
OTHER_ATOMS = (
    "order.total >= 50",
    "order.total < 100",
    "customer.purchase_count == 2",
    "customer.purchase_count >= 1",
    '"vip" in customer.segments',
    "attributes.rating >= 4",
    "attributes.rating == 5",
    '[x for x in order.items if x.category == "handmade"].length > 0',
    '[x for x in order.items if x.category == "lamps"].length == 0',
    '[name for name in customer.segments if name == "vip"].length > 0',
    '[type for type in customer.segments if type == "new"] == ["new"]',
    '"o" in channel',
    '"and" in name',
    "name.length > 9",
    'type != "return"',
    'channel != "web"',
    'store_id == "madrid-1"',
)
CONSTANTS = ("true", "false")

TERNARY, OR, AND, NOT, ATOM = range(5)
"""Precedences, loosest first: an operand looser than its operator is parenthesized."""


# --------------------------------------------------------------------------- strategies


def literal(value: str) -> str:
    return json.dumps(value)


@st.composite
def pins(draw: st.DrawFn, field: str, nested: bool = True) -> str:
    """A clause that pins ``field`` to literal strings (or, with ``or``, to either side's)."""
    values = st.sampled_from(PINNED[field]).map(literal)
    form = draw(st.integers(0, 4 if nested else 3))
    if form == 0:
        return f"{field} == {draw(values)}"
    if form == 1:
        return f"{draw(values)} == {field}"
    if form in (2, 3):
        members = ", ".join(draw(st.lists(values, min_size=1, max_size=3)))
        return f"{field} in [{members}]" if form == 2 else f"{field} in {{{members}}}"
    return f"({draw(pins(field, nested=False))} or {draw(pins(field, nested=False))})"


def atoms(constants: bool = True) -> st.SearchStrategy[str]:
    pinned = st.sampled_from(INDEXED).flatmap(pins)
    other = st.sampled_from(OTHER_ATOMS + (CONSTANTS if constants else ()))
    return st.one_of(pinned, pinned, other)


def wrap(text: str, precedence: int, least: int) -> str:
    return f"({text})" if precedence < least else text


@st.composite
def ternary_conditions(draw: st.DrawFn) -> str:
    """A ternary's condition, constants included: rule-engine folds ``true ? x : y`` to ``x`` when it parses."""
    first = draw(atoms())
    return f"{first} and {draw(atoms())}" if draw(st.booleans()) else first


@st.composite
def expressions(draw: st.DrawFn, depth: int) -> tuple[str, int]:
    """``(text, precedence)`` of a well-typed condition, ``and`` / ``or`` / ``not`` / ``? :`` nested to ``depth``."""
    if depth <= 0 or draw(st.integers(0, 9)) < 3:
        return draw(atoms()), ATOM
    form = draw(st.sampled_from(("and", "and", "and", "or", "or", "not", "ternary", "paren")))
    if form == "and":
        parts = draw(st.lists(expressions(depth - 1), min_size=2, max_size=3))
        # an `and` operand is sometimes parenthesized needlessly: `(a and b) and c`
        operands = [wrap(t, p, AND + int(p == AND and draw(st.booleans()))) for t, p in parts]
        return " and ".join(operands), AND
    if form == "or":
        parts = draw(st.lists(expressions(depth - 1), min_size=2, max_size=3))
        return " or ".join(wrap(t, p, OR) for t, p in parts), OR
    if form == "not":
        return f"not ({draw(expressions(depth - 1))[0]})", NOT
    if form == "ternary":
        condition = draw(ternary_conditions())
        (yes, p_yes), (no, p_no) = draw(expressions(depth - 1)), draw(expressions(depth - 1))
        return f"{condition} ? {wrap(yes, p_yes, OR)} : {wrap(no, p_no, OR)}", TERNARY
    return f"({draw(expressions(depth - 1))[0]})", ATOM


def conditions(depth: int = 3) -> st.SearchStrategy[str]:
    return expressions(depth).map(lambda found: found[0])


@st.composite
def events(draw: st.DrawFn) -> dict[str, Any]:
    """An event in the v1 wire shape, except that ``occurred_at`` is already a tz-aware datetime."""
    kind = draw(st.sampled_from(TYPES))
    event: dict[str, Any] = {
        "event_id": f"e-{draw(st.integers(0, 99))}",
        "type": kind,
        "customer_id": "c-1",
        "occurred_at": draw(st.sampled_from(MOMENTS)),
    }
    channel = draw(st.sampled_from((*CHANNELS, None)))
    if channel is not None:
        event["channel"] = channel
    if draw(st.booleans()):
        event["store_id"] = "madrid-1"
    if kind == "interaction":
        event["name"] = draw(st.sampled_from(NAMES))
        rating = draw(st.sampled_from((None, 3, 4, 5, "5")))  # absent or "5": `attributes.rating >= 4` errors
        event["attributes"] = {} if rating is None else {"rating": rating}
    else:
        categories = draw(st.lists(st.sampled_from(CATEGORIES), max_size=3))
        event["order"] = {
            "order_id": "o-1",
            "total": draw(st.sampled_from(TOTALS)),
            "currency": "EUR",
            "items": [
                {"sku": f"s-{i}", "category": category, "quantity": 1, "unit_price": 10.0}
                for i, category in enumerate(categories)
            ],
        }
    return event


@st.composite
def profiles(draw: st.DrawFn) -> dict[str, Any]:
    """The customer after the event was counted."""
    return {
        "customer_id": "c-1",
        "purchase_count": draw(st.sampled_from((0, 1, 2, 3))),
        "return_count": 0,
        "lifetime_spend": Decimal("150.00"),
        "favourite_category": "lamps",
        "interaction_counts": {"review_posted": 2},
        "points_balance": 0,
        "attributes": {
            "first_name": "Ana",
            "segments": draw(st.lists(st.sampled_from(("vip", "new")), unique=True, max_size=2)),
        },
    }


def fact_sets() -> st.SearchStrategy[dict[str, Any]]:
    return st.builds(build_facts, events(), profiles())


CampaignPlan = tuple[tuple[str, str] | None, list[str]]


def rule_conditions(depth: int = 2) -> st.SearchStrategy[str]:
    """Any condition, or (as rules are mostly written) a top-level ``and`` of a few, sharing clauses."""
    chains = st.lists(expressions(depth - 1), min_size=2, max_size=4).map(
        lambda parts: " and ".join(wrap(text, precedence, AND) for text, precedence in parts)
    )
    return st.one_of(conditions(depth), chains)


def campaign_plans() -> st.SearchStrategy[CampaignPlan]:
    return st.tuples(st.sampled_from(WINDOWS), st.lists(rule_conditions(), min_size=1, max_size=5))


# --------------------------------------------------------------------------- helpers


def key(facts: dict[str, Any]) -> tuple[str, str, str]:
    return facts["type"], facts["channel"], facts["name"]


def holds(condition: Any, facts: dict[str, Any]) -> bool | Exception:
    """``rule-engine``'s own answer: ``True``, ``False`` or the error that kept it from answering."""
    try:
        return bool(condition.matches(facts))
    except ERRORS as exc:
        return exc


def yaml_string(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def write_rule_set(directory: Path, plans: list[CampaignPlan]) -> RuleSet:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "catalog.yaml").write_text(CATALOG)
    (directory / "settings.yaml").write_text(SETTINGS)
    for i, (window, whens) in enumerate(plans):
        lines = [f"campaign: c{i}"]
        if window is not None:
            lines.append(f"active: {{from: {window[0]}, until: {window[1]}}}")
        lines.append("rules:")
        for j, when in enumerate(whens):
            lines += [f"  - id: r{j}", f"    when: {yaml_string(when)}", "    award: {points: 10}"]
        (directory / f"c{i}.yaml").write_text("\n".join(lines) + "\n")
    return load_rule_set(directory)


def load(directory: Path, campaign: str) -> RuleSet:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "catalog.yaml").write_text(CATALOG)
    (directory / "settings.yaml").write_text(SETTINGS)
    (directory / "c.yaml").write_text(textwrap.dedent(campaign))
    return load_rule_set(directory)


def every_rule(rule_set: RuleSet) -> Iterator[tuple[Campaign, Rule]]:
    for campaign in rule_set.campaigns:
        for rule in campaign.rules:
            yield campaign, rule


def counting(rule_set: RuleSet, calls: Counter[int]) -> RuleSet:
    """The same rule set with every clause test counting its calls in ``calls``, by clause id."""

    def count(clause_id: int, test: Callable[[dict[str, Any]], bool]) -> Callable[[dict[str, Any]], bool]:
        def counted(facts: dict[str, Any]) -> bool:
            calls[clause_id] += 1
            return test(facts)

        return counted

    campaigns = tuple(
        dataclasses.replace(
            campaign,
            rules=tuple(
                dataclasses.replace(rule, clauses=tuple((i, count(i, test)) for i, test in rule.clauses))
                for rule in campaign.rules
            ),
        )
        for campaign in rule_set.campaigns
    )
    return dataclasses.replace(rule_set, campaigns=campaigns)


def with_chances(rule_set: RuleSet) -> RuleSet:
    """The same rule set with chance draws: one rule in three always wins, the others win 70% or 30% of events."""
    campaigns = tuple(
        dataclasses.replace(
            campaign,
            rules=tuple(
                dataclasses.replace(rule, chance=(1.0, 0.7, 0.3)[i % 3]) for i, rule in enumerate(campaign.rules)
            ),
        )
        for campaign in rule_set.campaigns
    )
    return dataclasses.replace(rule_set, campaigns=campaigns)


@functools.cache
def fixture_rule_set() -> RuleSet:
    return load_rule_set(TEST_RULES)


@given(st.text(max_size=20), st.text(max_size=20), st.text(max_size=20), st.text(max_size=40))
def test_a_rule_sets_draw_is_the_engines_draw(seed: str, campaign: str, rule_id: str, event_id: str) -> None:
    demo = fixture_rule_set()
    rule_set = dataclasses.replace(demo, settings=msgspec.structs.replace(demo.settings, seed=seed))
    rule = dataclasses.replace(demo.campaigns[0].rules[0], campaign=campaign, id=rule_id)
    assert rule_set.draw(rule, event_id) == draw(seed, campaign, rule_id, event_id)
    assert rule_set.draw(rule, event_id) == draw(seed, campaign, rule_id, event_id)  # the kept prefix is unchanged


def matched(outcomes: list[Outcome]) -> list[tuple[str, str]]:
    return [(o.campaign, o.rule_id) for o in outcomes if o.matched]


PURCHASE: dict[str, Any] = {
    "event_id": "e-1",
    "type": "purchase",
    "customer_id": "c-1",
    "occurred_at": MOMENTS[0],
    "channel": "pos",
    "order": {"order_id": "o-1", "total": 150.0, "currency": "EUR", "items": [{"sku": "A", "category": "handmade"}]},
}
PROFILE: dict[str, Any] = {"customer_id": "c-1", "purchase_count": 2, "attributes": {"segments": ["vip"]}}


def interaction(name: str, **attributes: Any) -> dict[str, Any]:
    return {
        "event_id": "e-2",
        "type": "interaction",
        "customer_id": "c-1",
        "occurred_at": MOMENTS[0],
        "channel": "web",
        "name": name,
        "attributes": attributes,
    }


def facts_of(event: dict[str, Any], **changes: Any) -> dict[str, Any]:
    return build_facts({**event, **changes}, PROFILE)


# --------------------------------------------------------------------------- A: requirements are sound


def test_an_event_the_index_rules_out_never_matches() -> None:
    """Whenever ``admits`` says no, ``rule-engine`` says the condition does not hold (or cannot be evaluated)."""
    seen: Counter[str] = Counter()
    context = rule_context()

    @settings(max_examples=400, deadline=None, derandomize=True)
    @given(text=rule_conditions(depth=3), cases=st.lists(fact_sets(), min_size=6, max_size=6))
    def check(text: str, cases: list[dict[str, Any]]) -> None:
        rule = rule_engine.Rule(text, context=context)
        required = requirements(rule.statement.expression)
        assert set(required) <= set(INDEXED)
        seen["pinned"] += bool(required)
        for facts in cases:
            answer = holds(rule, facts)
            if not admits(required, key(facts)):
                seen["ruled out"] += 1
                assert answer is not True, f"{text!r} holds on {key(facts)} but requires {required}"
            elif answer is True:
                seen["matched"] += 1
            seen["error"] += isinstance(answer, Exception)

    check()
    # not vacuous: conditions pin fields, events get ruled out, and others do match
    assert seen["pinned"] >= 120, seen
    assert seen["ruled out"] >= 500, seen
    assert seen["matched"] >= 250, seen
    assert seen["error"] >= 40, seen


# --------------------------------------------------------------------------- B: the engine agrees with rule-engine


def test_engine_agrees_with_rule_engine_on_generated_rule_sets(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Both ways of evaluating match exactly the rules ``rule-engine`` says hold, in active campaigns."""
    seen: Counter[str] = Counter()

    @settings(max_examples=150, deadline=None, derandomize=True)
    @given(
        plans=st.lists(campaign_plans(), min_size=1, max_size=3),
        cases=st.lists(fact_sets(), min_size=6, max_size=6),
    )
    def check(plans: list[CampaignPlan], cases: list[dict[str, Any]]) -> None:
        rule_set = write_rule_set(tmp_path_factory.mktemp("rules"), plans)
        order = [(c.name, r.id) for c, r in every_rule(rule_set)]
        assert len(order) == sum(len(whens) for _, whens in plans)
        ids = Counter(i for _, r in every_rule(rule_set) for i, _ in set(r.clauses))
        seen["shared clauses"] += sum(1 for n in ids.values() if n > 1)
        seen["split rules"] += sum(1 for _, r in every_rule(rule_set) if len(r.clauses) > 1)
        calls: Counter[int] = Counter()
        counted = counting(rule_set, calls)
        for facts in cases:
            active = {c.name: c.is_active(facts["occurred_at"]) for c in rule_set.campaigns}
            answers = {(c.name, r.id): holds(r.condition, facts) for c, r in every_rule(rule_set)}
            expected = [k for k in order if active[k[0]] and answers[k] is True]

            # matched_only: only the candidates, only matches, in rule-set order
            candidates = rule_set.candidates(key(facts))
            assert [(c.name, r.id) for c, r in candidates] == [
                (c.name, r.id) for c, r in every_rule(rule_set) if admits(r.requires, key(facts))
            ]
            fast = evaluate(rule_set, facts, matched_only=True)
            assert all(o.matched and o.reason == "awarded" for o in fast), fast
            assert matched(fast) == expected, (plans, facts)

            # every rule, with its reason
            full = evaluate(rule_set, facts)
            assert [(o.campaign, o.rule_id) for o in full] == order
            for o in full:
                answer = answers[o.campaign, o.rule_id]
                if not active[o.campaign]:
                    assert (o.matched, o.reason) == (False, "campaign not active on this date")
                elif answer is True:
                    assert (o.matched, o.reason) == (True, "awarded"), (o, facts)
                elif answer is False:
                    assert (o.matched, o.reason) == (False, "condition is false"), (o, facts)
                else:
                    assert not o.matched, (o, answer, facts)
                    assert o.reason.startswith("condition could not be evaluated"), (o, answer, facts)
            assert matched(full) == expected
            assert [o.decision for o in fast] == [o.decision for o in full if o.matched]

            # the event path: only what awards, each rule's chance drawn before its condition is tested
            chancy = with_chances(rule_set)
            deciding = [o for o in evaluate(chancy, facts, matched_only=True) if o.decision is not None]
            assert awarding(chancy, facts) == deciding
            assert awarding(rule_set, facts) == fast
            seen["awarded after a draw"] += sum(1 for o in deciding if o.draw is not None)

            # each clause is tested at most once per event, in either mode
            for only in (True, False):
                calls.clear()
                assert matched(evaluate(counted, facts, matched_only=only)) == expected
                assert max(calls.values(), default=0) <= 1, calls

            seen["matched"] += len(expected)
            seen["skipped"] += len(order) - len(candidates)
            seen["skipped in active campaigns"] += sum(
                1 for k in order if active[k[0]] and k not in {(c.name, r.id) for c, r in candidates}
            )
            seen["not evaluable"] += sum(1 for a in answers.values() if isinstance(a, Exception))
            seen["inactive"] += sum(1 for k in order if not active[k[0]])

    check()
    assert seen["matched"] >= 400, seen
    assert seen["awarded after a draw"] >= 100, seen
    assert seen["skipped in active campaigns"] >= 800, seen
    assert seen["not evaluable"] >= 50, seen
    assert seen["inactive"] >= 500, seen
    assert seen["shared clauses"] >= 100, seen
    assert seen["split rules"] >= 200, seen


# --------------------------------------------------------------------------- C: what requirements reads


REQUIREMENTS: list[tuple[str, dict[str, set[str]]]] = [
    ('type == "purchase" and channel in ["web", "app"]', {"type": {"purchase"}, "channel": {"web", "app"}}),
    ('(name == "a" or name == "b") and type == "interaction"', {"name": {"a", "b"}, "type": {"interaction"}}),
    ('type == "purchase" or channel == "pos"', {}),
    ('"purchase" == type', {"type": {"purchase"}}),
    ('"web" in channel', {}),
    ('not (type == "purchase")', {}),
    ('type not in ["purchase"]', {}),
    ('type != "purchase"', {}),
    ('[x for x in order.items if x.category == "a"].length > 0 and type == "purchase"', {"type": {"purchase"}}),
    ('[name for name in customer.segments if name == "vip"].length > 0', {}),
    ('type == "purchase" ? channel == "pos" : channel == "web"', {}),
    ('order.total >= 50 ? type == "purchase" : type == "purchase"', {}),
    ('channel in {"pos", "web"}', {"channel": {"pos", "web"}}),
    ('name in ["a", "b"] or name == "c"', {"name": {"a", "b", "c"}}),
    ('type == "interaction" and (name == "a" or type == "purchase")', {"type": {"interaction"}}),
    (
        '(type == "purchase" and channel == "pos") or (type == "return" and name == "x")',
        {"type": {"purchase", "return"}},
    ),
    (
        'type == "purchase" and order.total >= 50 and (channel == "pos" and name == "")',
        {
            "type": {"purchase"},
            "channel": {"pos"},
            "name": {""},
        },
    ),
    ('type == "purchase" and type in ["purchase", "return"]', {"type": {"purchase"}}),
    ('type == "purchase" and type == "return"', {"type": set()}),
    ('name == "rock and roll"', {"name": {"rock and roll"}}),
    ('store_id == "madrid-1"', {}),
    ('channel in ["web", store_id]', {}),
    ("type == channel", {}),
    ('type == "purchase" and not (channel == "pos")', {"type": {"purchase"}}),
]


@pytest.mark.parametrize(("text", "expected"), REQUIREMENTS)
def test_requirements(text: str, expected: dict[str, set[str]]) -> None:
    rule = rule_engine.Rule(text, context=rule_context())
    assert requirements(rule.statement.expression) == {k: frozenset(v) for k, v in expected.items()}


def test_admits() -> None:
    assert admits({}, ("purchase", "", ""))
    assert admits({"type": frozenset({"purchase"}), "channel": frozenset({"pos", "web"})}, ("purchase", "web", ""))
    assert not admits({"type": frozenset({"purchase"}), "channel": frozenset({"pos"})}, ("purchase", "web", ""))
    assert not admits({"name": frozenset({"a"})}, ("interaction", "web", ""))
    assert admits({"name": frozenset({""})}, ("purchase", "pos", ""))
    assert not admits({"type": frozenset()}, ("purchase", "pos", ""))


def test_candidates_are_the_admitted_rules_in_rule_set_order(tmp_path: Path) -> None:
    rule_set = write_rule_set(
        tmp_path,
        [
            (None, ['type == "purchase" and channel == "pos"', "order.total >= 50", 'type == "interaction"']),
            (None, ['channel in ["pos", "web"]', 'name == "app_visit" or name == "review_posted"']),
        ],
    )

    def ids(candidates: tuple[tuple[Campaign, Rule], ...]) -> list[str]:
        return [f"{c.name}/{r.id}" for c, r in candidates]

    assert ids(rule_set.candidates(("purchase", "pos", ""))) == ["c0/r0", "c0/r1", "c1/r0"]
    assert ids(rule_set.candidates(("purchase", "app", ""))) == ["c0/r1"]
    assert ids(rule_set.candidates(("interaction", "web", "app_visit"))) == ["c0/r1", "c0/r2", "c1/r0", "c1/r1"]
    assert ids(rule_set.candidates(("purchase", "pos", ""))) == ["c0/r0", "c0/r1", "c1/r0"]  # kept, same answer
    assert rule_set.rules_by_key["c0", "r0"].requires == {"type": {"purchase"}, "channel": {"pos"}}


# --------------------------------------------------------------------------- C: shared clauses


def test_identical_clauses_share_an_id_and_are_tested_once_per_event(tmp_path: Path) -> None:
    rule_set = write_rule_set(
        tmp_path,
        [
            (None, ['type == "purchase" and order.total >= 50', 'type == "purchase" and customer.purchase_count == 2']),
            (None, ['type == "purchase"', 'order.total >= 50 and type == "purchase"']),
        ],
    )
    a, b = rule_set.rules_by_key["c0", "r0"], rule_set.rules_by_key["c0", "r1"]
    c, d = rule_set.rules_by_key["c1", "r0"], rule_set.rules_by_key["c1", "r1"]
    assert (len(a.clauses), len(b.clauses), len(c.clauses), len(d.clauses)) == (2, 2, 1, 2)
    purchase_type = a.clauses[0][0]
    assert b.clauses[0][0] == c.clauses[0][0] == d.clauses[1][0] == purchase_type
    assert a.clauses[1][0] == d.clauses[0][0] != b.clauses[1][0]

    calls: Counter[int] = Counter()
    counted = counting(rule_set, calls)
    for only in (True, False):
        for event, wanted in ((PURCHASE, 4), ({**PURCHASE, "type": "return"}, 0)):
            calls.clear()
            facts = facts_of(event)
            assert len(matched(evaluate(counted, facts, matched_only=only))) == wanted
            assert matched(evaluate(counted, facts, matched_only=only)) == matched(evaluate(rule_set, facts))
            if only and event["type"] == "return":
                assert calls[purchase_type] == 0  # no candidate at all: nothing is tested
            else:
                assert calls[purchase_type] == 2  # once per evaluate call, for four rules
    calls.clear()
    evaluate(counted, facts_of(PURCHASE, type="return"))
    assert calls[purchase_type] == 1
    assert calls[a.clauses[1][0]] == 1  # `order.total >= 50` comes first in c1/r1: tested there, once
    assert calls[b.clauses[1][0]] == 0  # after a false clause, nothing more is tested


def test_evaluation_stops_at_a_clause_that_cannot_be_evaluated(tmp_path: Path) -> None:
    rule_set = load(
        tmp_path,
        """\
        campaign: c
        rules:
          - id: r
            when: attributes.rating >= 4 and type == "interaction"
            award: {points: 10}
          - id: s
            when: type == "interaction" and attributes.rating >= 4
            award: {points: 10}
        """,
    )
    r = rule_set.rules_by_key["c", "r"]
    calls: Counter[int] = Counter()
    outcomes = evaluate(counting(rule_set, calls), facts_of(interaction("review_posted")))
    assert [(o.matched, o.reason.split(":")[0]) for o in outcomes] == [
        (False, "condition could not be evaluated"),
        (False, "condition could not be evaluated"),
    ]
    assert calls[r.clauses[0][0]] == 1
    assert calls[r.clauses[1][0]] == 1  # by rule s, which tests it first
    assert matched(evaluate(rule_set, facts_of(interaction("review_posted", rating=5)), matched_only=True)) == [
        ("c", "r"),
        ("c", "s"),
    ]


SPLITS: list[tuple[str, int]] = [
    ('name == "rock and roll"', 1),
    ('name == "rock and roll" and type == "interaction"', 2),
    ('type == "interaction" and "and" in name and name != "x and y"', 3),
    ('order.total >= 50 ? type == "purchase" and channel == "pos" : name == "rock and roll"', 1),
    ('type == "interaction" and name == "rock and roll" ? true : false', 1),
    ('(type == "purchase" and channel == "pos") and order.total >= 50', 1),
    ('type == "purchase" and channel == "pos" or name == "rock and roll" and type == "interaction"', 1),
    ('[x for x in order.items if x.category == "handmade" and x.quantity > 0].length > 0 and type == "purchase"', 2),
    ('false ? order.total >= 50 : type == "purchase" and channel == "pos"', 1),
]
SPLIT_FACTS = [
    facts_of(PURCHASE),
    facts_of(PURCHASE, channel="web"),
    facts_of(PURCHASE, order={"order_id": "o-2", "total": 10.0, "items": []}),
    facts_of(interaction("rock and roll")),
    facts_of(interaction("rock")),
    facts_of(interaction("x and y")),
]


@pytest.mark.parametrize(("text", "clause_count"), SPLITS)
def test_and_inside_strings_brackets_and_ternaries(tmp_path: Path, text: str, clause_count: int) -> None:
    """A condition splits only at its own top-level ``and``s; whatever the split, the answers are rule-engine's."""
    rule_set = write_rule_set(tmp_path, [(None, [text])])
    rule = rule_set.rules_by_key["c0", "r0"]
    assert len(rule.clauses) == clause_count
    answers = []
    for facts in SPLIT_FACTS:
        expected = holds(rule.condition, facts) is True
        answers.append(expected)
        assert bool(matched(evaluate(rule_set, facts, matched_only=True))) is expected, facts
        assert bool(matched(evaluate(rule_set, facts))) is expected, facts
    assert any(answers), "no case matches: the test would prove nothing"


def test_a_top_level_ternary_is_one_clause_even_when_its_branches_hold_and(tmp_path: Path) -> None:
    """`c ? x : y and z` is one ternary whose branches hold the `and`: splitting it at `and` would change it."""
    text = 'true ? (type == "purchase" and channel == "pos") : false and false'
    rule_set = write_rule_set(tmp_path, [(None, [text])])
    rule = rule_set.rules_by_key["c0", "r0"]
    facts = facts_of(PURCHASE)  # a purchase at the till
    assert holds(rule.condition, facts) is True
    assert matched(evaluate(rule_set, facts)) == [("c0", "r0")]
    assert matched(evaluate(rule_set, facts, matched_only=True)) == [("c0", "r0")]
