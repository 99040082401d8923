"""Splitting conditions into clauses for ``simulate``, and saying why one could not be evaluated."""

from __future__ import annotations

import datetime as dt

import pytest

from service.rules.clauses import evaluate, split
from service.rules.facts import build_facts


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('type == "purchase"', ("", ['type == "purchase"'])),
        ('type == "purchase" and order.total >= 300', ("and", ['type == "purchase"', "order.total >= 300"])),
        ("a == 1 or b == 2 and c == 3", ("or", ["a == 1", "b == 2 and c == 3"])),
        ("(a == 1 or b == 2) and c == 3", ("and", ["(a == 1 or b == 2)", "c == 3"])),
        ('name == "rock and roll" and x > 1', ("and", ['name == "rock and roll"', "x > 1"])),
        (
            "[i for i in order.items if i.a and i.b].length > 0 and y",
            ("and", ["[i for i in order.items if i.a and i.b].length > 0", "y"]),
        ),
        ('brand == "o\'neill" and x', ("and", ['brand == "o\'neill"', "x"])),
        ("android == 1 and orange == 2", ("and", ["android == 1", "orange == 2"])),
    ],
)
def test_conditions_split_at_their_top_level_only(text: str, expected: tuple[str, list[str]]) -> None:
    assert split(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        'true ? (type == "purchase" and channel == "pos") : false and false',
        'order.total > 100 ? channel == "pos" and type == "purchase" : false',
    ],
)
def test_a_condition_with_a_top_level_ternary_is_one_clause(text: str) -> None:
    assert split(text) == ("", [text])


@pytest.mark.parametrize(
    ("text", "parts"),
    [
        ("(customer.days_since_last_purchase ?? 0) >= 30 and order.total > 5", 2),
        ('customer?.segments?[0] == "vip" and order.total > 5', 2),
        ('name == "what?" and order.total > 5', 2),
        ("[x for x in order.items if (x.quantity > 1 ? true : false)].length > 0 and order.total > 5", 2),
    ],
)
def test_coalescing_safe_navigation_and_question_marks_elsewhere_still_split(text: str, parts: int) -> None:
    operator, clauses = split(text)
    assert operator == "and"
    assert len(clauses) == parts


REVIEW = {
    "event_id": "e-1",
    "type": "interaction",
    "name": "review_posted",
    "customer_id": "c-1",
    "occurred_at": dt.datetime(2026, 3, 1, tzinfo=dt.UTC),
    "attributes": {"comment": "lovely"},
}


@pytest.mark.parametrize(
    ("clause", "why"),
    [
        ("attributes.rating >= 4", "`attributes` has no `rating`"),
        ("attributes&.rating >= 4", "`attributes` has no `rating`"),
        ("attributes.comment.length.x == 1", "`attributes.comment.length` has no `x`"),
        ('attributes["rating"] >= 4', 'there is no key "rating" to read'),
        ('customer.interactions["review_posted"] > 1', 'there is no key "review_posted" to read'),
        ('order.items[2].sku == "x"', "there is no item [2] to read: the list holds 0"),
    ],
)
def test_a_clause_that_cannot_be_evaluated_says_why_in_the_clauses_terms(clause: str, why: str) -> None:
    """Not rule-engine's exception as Python prints it, with its internal type objects and dicts."""
    assert evaluate(clause, build_facts(REVIEW, {"customer_id": "c-1"})) == (None, why)
