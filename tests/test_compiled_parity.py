"""The compiled conditions (``compiled.py``) agree with ``rule-engine`` itself. No database.

A property test: random well-typed conditions over the facts schema, random
events and profiles built with ``build_facts``, and for every pair the compiled
closure and ``rule.matches`` must give the same boolean, or both fail. Failing
means an exception in ``compiled.ERRORS`` for the compiled closure (what the
engine catches) and any exception for ``rule-engine``; anything else the
compiled closure raises is a crash and never agrees. Then a few hand-written
cases for the corners of ``rule-engine``'s semantics.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import pprint
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import pytest
import rule_engine

from service.rules.compiled import ERRORS, compile_condition
from service.rules.facts import build_facts, rule_context

SEEDS = (11, 23, 42, 1009, 31337)
EXPRESSIONS_PER_SEED = 110
FACTS_PER_SEED = 12
MIN_PAIRS = 1500
MIN_PARSED = 0.70
MIN_COMPILED = 0.90
SHOWN = 6  # disagreements spelled out in a failure message

# Values the facts are drawn from; the expressions compare against the same
# values (so that comparisons are sometimes true) and against a few that never occur.
CATEGORIES = ("handmade", "lamps", "textiles", "")
SKUS = ("A", "B", "TBL-OAK", "x")
SEGMENTS = ("vip", "new", "staff", "x")
INTERACTIONS = ("review_posted", "app_visit", "newsletter_signup", "x")
CHANNELS = ("pos", "web", "app", "")
STORES = ("madrid-1", "lisbon-2")
FIRST_NAMES = ("Ana", "Émile", "Bo", "")
CURRENCIES = ("EUR", "USD")
ATTRIBUTE_KEYS = ("rating", "source", "score", "flag", "x", "s", "i")
ATTRIBUTE_VALUES: tuple[Any, ...] = (0, 1, 4, 5, -1, 4.5, 3.0, 0.1, "5", "", "web", "vip", True, False, None)
ZONES = (dt.UTC, dt.timezone(dt.timedelta(hours=2)), dt.timezone(dt.timedelta(hours=-5)))
START = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)

NUMERIC_FIELDS = (
    "order.total",
    "customer.purchase_count",
    "customer.lifetime_spend",
    "customer.points_balance",
    "occurred_at.hour",
    "order.items.length",
    "customer.interactions.length",
    "customer.return_count",
    "occurred_at.month",
    "customer.segments.length",
    "name.length",
)
STRING_FIELDS = (
    "type",
    "channel",
    "name",
    "store_id",
    "customer.first_name",
    "customer.favourite_category",
    "order.currency",
)
STRING_LITERALS = (
    "",
    "purchase",
    "return",
    "interaction",
    *CHANNELS[:3],
    *STORES,
    *INTERACTIONS,
    *FIRST_NAMES[:3],
    *CATEGORIES[:3],
    *CURRENCIES,
    "vip",
    "a",
    "Monday",
    "nowhere",
)
NUMERIC_LITERALS = ("0", "1", "2", "3", "4", "5", "10", "99.5", "100", "120", "150", "0.5", "2.25", "-1", "-5", "-0.5")
COMPARISONS = ("==", "!=", "<", "<=", ">", ">=")
ARITHMETIC = ("+", "-", "*", "/", "//", "%")
VARIABLES = ("i", "s", "x", "v")


# --------------------------------------------------------------------------- facts


def random_item(rng: random.Random) -> dict[str, Any]:
    item: dict[str, Any] = {"sku": rng.choice(SKUS)}
    if rng.random() < 0.85:
        item["category"] = rng.choice(CATEGORIES)
    if rng.random() < 0.3:
        item["name"] = rng.choice(("Oak table", "Lamp", ""))
    if rng.random() < 0.7:
        item["quantity"] = rng.choice((1, 2, 3, 0.5, 1.5, 1.0))
    if rng.random() < 0.8:
        item["unit_price"] = rng.choice((0, 10, 99.5, 12.25, 150.0, round(rng.uniform(0.01, 200), 2)))
    return item


def random_attributes(rng: random.Random, most: int) -> dict[str, Any]:
    keys = rng.sample(ATTRIBUTE_KEYS, rng.randint(0, most))
    return {key: rng.choice(ATTRIBUTE_VALUES) for key in keys}


def random_event(rng: random.Random, index: int) -> dict[str, Any]:
    """An event in the v1 wire shape as decoded builtins, ``occurred_at`` a tz-aware datetime."""
    kind = rng.choice(("purchase", "return", "interaction"))
    occurred_at = START + dt.timedelta(minutes=rng.randrange(365 * 24 * 60))
    event: dict[str, Any] = {
        "event_id": f"e-{index}",
        "type": kind,
        "customer_id": "c-1",
        "occurred_at": occurred_at.astimezone(rng.choice(ZONES)),
    }
    if rng.random() < 0.8:
        event["channel"] = rng.choice(CHANNELS)
    if rng.random() < 0.5:
        event["store_id"] = rng.choice(STORES)
    if kind == "interaction":
        event["name"] = rng.choice(INTERACTIONS)
        event["attributes"] = random_attributes(rng, 2)
    else:
        items = [random_item(rng) for _ in range(rng.randint(0, 3 if kind == "purchase" else 2))]
        order: dict[str, Any] = {
            "order_id": f"o-{index}",
            "total": rng.choice((0.0, 99.5, 100.0, 150.0, 300, round(rng.uniform(0.01, 500), 2))),
            "items": items,
        }
        if rng.random() < 0.8:  # the wire default "EUR" is omitted when re-encoded
            order["currency"] = rng.choice(CURRENCIES)
        event["order"] = order
        if rng.random() < 0.2:
            event["attributes"] = random_attributes(rng, 1)
    return event


def random_profile(rng: random.Random, occurred_at: dt.datetime) -> dict[str, Any]:
    """The customer after the event was counted, as the repository returns it."""
    last = None if rng.random() < 0.3 else occurred_at - dt.timedelta(days=rng.uniform(0, 400))
    first = None if last is None else last - dt.timedelta(days=rng.uniform(0, 700))
    attributes: dict[str, Any] = {}
    if rng.random() < 0.7:
        attributes["first_name"] = rng.choice(FIRST_NAMES)
    if rng.random() < 0.5:
        birthday = dt.date(rng.randint(1950, 2005), rng.randint(1, 12), rng.randint(1, 28))
        attributes["birthday"] = birthday if rng.random() < 0.5 else birthday.isoformat()
    if rng.random() < 0.6:
        attributes["segments"] = rng.sample(SEGMENTS, rng.randint(0, 3))
    if rng.random() < 0.3:
        attributes["language"] = rng.choice(("es", "en"))
    if rng.random() < 0.3:
        attributes["consent"] = {"email": rng.random() < 0.5, "sms": rng.random() < 0.5}
    counts = {name: rng.randint(1, 3) for name in rng.sample(INTERACTIONS, rng.randint(0, 3))}
    return {
        "customer_id": "c-1",
        "purchase_count": rng.choice((0, 1, 2, 3, 7, 12)),
        "return_count": rng.randint(0, 3),
        "lifetime_spend": Decimal(rng.choice(("0", "99.50", "150.00", "1234.56"))),
        "first_purchase_at": first,
        "last_purchase_at": last,
        "favourite_category": rng.choice((*CATEGORIES[:3], None)),
        "interaction_counts": counts,
        "points_balance": rng.choice((0, 5, 120, 1000)),
        "attributes": attributes,
    }


def random_facts(rng: random.Random, index: int) -> dict[str, Any]:
    event = random_event(rng, index)
    return build_facts(event, random_profile(rng, event["occurred_at"]), rng.choice(ZONES))


# --------------------------------------------------------------------------- expressions


def string_literal(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)


def paren(text: str) -> str:
    return f"({text})"


class ExpressionGenerator:
    """Random conditions, well typed by construction except for a small share meant to be rejected.

    ``scope`` maps the comprehension variables in reach to what they hold:
    ``"item"`` (an order item) or ``"str"`` (a segment or an interaction name).
    """

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def pick(self, options: tuple[Any, ...] | list[Any]) -> Any:
        return self.rng.choice(options)

    def chance(self, p: float) -> bool:
        return self.rng.random() < p

    # ----- booleans

    def condition(self) -> str:
        if self.chance(0.04):
            return self.ill_typed()
        return self.boolean(3, {})

    def boolean(self, depth: int, scope: dict[str, str]) -> str:
        if depth > 0 and self.chance(0.5):
            form = self.pick(("and", "and", "or", "or", "not", "ternary", "paren"))
            if form in ("and", "or"):
                return f"{paren(self.boolean(depth - 1, scope))} {form} {paren(self.boolean(depth - 1, scope))}"
            if form == "not":
                return f"not {paren(self.boolean(depth - 1, scope))}"
            if form == "ternary":
                return paren(
                    f"{paren(self.boolean(depth - 1, scope))} ? {paren(self.boolean(depth - 1, scope))}"
                    f" : {paren(self.boolean(depth - 1, scope))}"
                )
            return paren(self.boolean(depth - 1, scope))
        return self.atom(depth, scope)

    def atom(self, depth: int, scope: dict[str, str]) -> str:
        makers: list[Callable[[int, dict[str, str]], str]] = [
            self.numeric_comparison,
            self.numeric_comparison,
            self.numeric_comparison,
            self.string_comparison,
            self.string_comparison,
            self.mixed_equality,
            self.containment,
            self.containment,
            self.nullable,
            self.mapping,
            self.mapping,
            self.comprehension,
            self.comprehension,
            self.array_comparison,
            self.datetime_comparison,
            self.boolean_leaf,
        ]
        if scope:
            makers += [self.scoped, self.scoped]
        return self.pick(makers)(depth, scope)

    def numeric_comparison(self, depth: int, scope: dict[str, str]) -> str:
        return f"{self.number(2, scope)} {self.pick(COMPARISONS)} {self.number(1, scope)}"

    def string_comparison(self, depth: int, scope: dict[str, str]) -> str:
        operator = self.pick(("==", "==", "!=", "<", ">="))
        right = self.string(scope) if self.chance(0.2) else string_literal(self.pick(STRING_LITERALS))
        return f"{self.string(scope)} {operator} {right}"

    def mixed_equality(self, depth: int, scope: dict[str, str]) -> str:
        """``==`` / ``!=`` across types: never an error, never equal."""
        left, right = self.number(1, scope), string_literal(self.pick((*STRING_LITERALS, "5", "150")))
        if self.chance(0.3):
            right = self.pick(("true", "false", "null", "[]", "{}"))
        if self.chance(0.5):
            left, right = right, left
        return f"{left} {self.pick(('==', '!='))} {right}"

    def containment(self, depth: int, scope: dict[str, str]) -> str:
        negate = " not" if self.chance(0.2) else ""
        form = self.rng.randrange(9)
        if form == 0:
            return f"{string_literal(self.pick((*SEGMENTS, '')))}{negate} in customer.segments"
        if form == 1:
            return f"{string_literal(self.pick(('x', 'a', 'An', '', 'view', 'pos')))}{negate} in {self.string(scope)}"
        if form == 2:
            return f"{string_literal(self.pick(INTERACTIONS))}{negate} in customer.interactions"
        if form == 3:
            return f"{string_literal(self.pick(ATTRIBUTE_KEYS))}{negate} in attributes"
        if form == 4:
            choices = ", ".join(string_literal(self.pick(STRING_LITERALS)) for _ in range(self.rng.randint(0, 3)))
            return f"{self.string(scope)}{negate} in [{choices}]"
        if form == 5:
            choices = ", ".join(self.pick(NUMERIC_LITERALS) for _ in range(self.rng.randint(1, 3)))
            return f"{self.number(1, scope)}{negate} in [{choices}]"
        if form == 6:
            member = self.pick(("true", "false", "1", "0", "2", "null"))
            return f"{member}{negate} in {self.array_of_numbers_or_booleans(scope)}"
        if form == 7:
            member = self.pick((*NUMERIC_LITERALS[:6], "true"))
            return f"{member}{negate} in {self.array_of_numbers_or_booleans(scope)}"
        return f"{string_literal(self.pick(CATEGORIES + SEGMENTS))}{negate} in {self.array_of_strings(scope)}"

    def nullable(self, depth: int, scope: dict[str, str]) -> str:
        form = self.rng.randrange(8)
        if form == 0:
            return f"(customer.days_since_last_purchase ?? 0) {self.pick(COMPARISONS)} {self.pick(('120', '30', '0'))}"
        if form == 1:
            return f"customer.birthday&.month {self.pick(('==', '!='))} {self.pick(('1', '3', '12', 'null'))}"
        if form == 2:
            return f"(customer.birthday&.month ?? 0) {self.pick(COMPARISONS)} {self.pick(('0', '3', '6'))}"
        if form == 3:
            return f"customer.last_purchase_at&.year {self.pick(('==', '!='))} {self.pick(('2025', '2026', 'null'))}"
        if form == 4:
            field_ = self.pick(("customer.birthday", "customer.last_purchase_at", "customer.first_purchase_at"))
            return f"{field_} {self.pick(('==', '!='))} null"
        if form == 5:
            return f"(customer.last_purchase_at ?? occurred_at) {self.pick(COMPARISONS)} occurred_at"
        if form == 6:
            return "(customer.birthday&.day ?? occurred_at.day) == occurred_at.day"
        return f"(customer.first_purchase_at&.year ?? 0) {self.pick(COMPARISONS)} 2025"

    def mapping(self, depth: int, scope: dict[str, str]) -> str:
        key = self.pick(ATTRIBUTE_KEYS)
        interaction = self.pick(INTERACTIONS)
        form = self.rng.randrange(10)
        if form == 0:
            return f"attributes.{key} {self.pick(COMPARISONS)} {self.pick(NUMERIC_LITERALS[:7])}"
        if form == 1:
            return f'attributes["{key}"] {self.pick(COMPARISONS)} {self.pick(NUMERIC_LITERALS[:7])}'
        if form == 2:
            value = self.pick(("null", "true", "false", '"5"', '"web"', '""', "5", "4.5"))
            return f"attributes.{key} {self.pick(('==', '!='))} {value}"
        if form == 3:
            return f'customer.interactions["{interaction}"] {self.pick(COMPARISONS)} {self.pick(("0", "1", "2", "5"))}'
        if form == 4:
            return f'(customer.interactions&["{interaction}"] ?? 0) {self.pick(COMPARISONS)} {self.pick(("0", "2"))}'
        if form == 5:
            return f'(attributes&["{key}"] ?? 0) {self.pick(COMPARISONS)} {self.pick(("0", "4", "5"))}'
        if form == 6:
            other = self.pick(ATTRIBUTE_KEYS)
            return f"attributes.{key} {self.pick(COMPARISONS)} attributes.{other}"
        if form == 7:
            return f'customer.consent&["{self.pick(("email", "sms", "post"))}"] {self.pick(("==", "!="))} true'
        if form == 8:
            # rule-engine holds mappings as OrderedDicts: equal only with the keys in the same order
            channels = self.rng.sample(("email", "sms"), 2)
            entries = ", ".join(f'"{channel}": {self.pick(("true", "false"))}' for channel in channels)
            return self.pick(
                (
                    f"customer.consent {self.pick(('==', '!='))} {{{entries}}}",
                    f"[customer.consent] {self.pick(('==', '!='))} [{{{entries}}}]",
                    f"customer.consent{self.pick(('', ' not'))} in [{{{entries}}}]",
                )
            )
        entries = ", ".join(
            f"{string_literal(name)}: {self.rng.randint(1, 3)}" for name in self.rng.sample(INTERACTIONS, 2)
        )
        return f"customer.interactions {self.pick(('==', '!='))} {{{entries}}}"

    def comprehension(self, depth: int, scope: dict[str, str]) -> str:
        form = self.rng.randrange(8)  # forms 5 to 7: segments filtered with the variable in reach
        if form == 0:
            return f"{self.items_where(scope)}.length {self.pick(COMPARISONS)} {self.pick(('0', '1', '2'))}"
        if form == 1:
            return f"{self.array_of_numbers(scope)} {self.pick(('==', '!='))} [{self.number_list()}]"
        if form == 2:
            return f"{self.array_of_numbers(scope)}.length {self.pick(COMPARISONS)} {self.pick(('0', '1', '2'))}"
        if form == 3:
            return f"{self.array_of_strings(scope)}.length {self.pick(COMPARISONS)} {self.pick(('0', '1'))}"
        if form == 4:
            return f"{self.items_where(scope)} == []"
        var = self.variable(scope)
        inner_scope = {**scope, var: "str"}
        inner = self.scoped(0, inner_scope) if form < 7 else self.boolean(min(depth, 1), inner_scope)
        return f"[{var} for {var} in customer.segments if {inner}].length {self.pick(('>', '=='))} 0"

    def array_comparison(self, depth: int, scope: dict[str, str]) -> str:
        # ordering an array against the empty literal `[]` is rejected (ARRAY(STRING) vs ARRAY(UNDEFINED))
        if self.chance(0.5):
            return f"{self.array_of_numbers(scope)} {self.pick(COMPARISONS[2:])} [{self.number_list(1)}]"
        choices = ", ".join(string_literal(self.pick(SEGMENTS)) for _ in range(self.rng.randint(1, 2)))
        return f"customer.segments {self.pick(COMPARISONS)} [{choices}]"

    def datetime_comparison(self, depth: int, scope: dict[str, str]) -> str:
        form = self.rng.randrange(3)
        if form == 0:
            moment = self.pick(('d"2026-03-01"', 'd"2026-06-15T12:00:00Z"', 'd"2025-12-31"'))
            return f"occurred_at {self.pick(COMPARISONS)} {moment}"
        if form == 1:
            return f"occurred_at.weekday {self.pick(('==', '!='))} {string_literal(self.pick(('Monday', 'Sunday')))}"
        return f"occurred_at.date {self.pick(('==', '<=', '>'))} occurred_at"

    def boolean_leaf(self, depth: int, scope: dict[str, str]) -> str:
        return self.pick(
            (
                "true",
                "false",
                "1 == true",
                "order.items.is_empty",
                "customer.segments.is_empty",
                "attributes.is_empty",
                "name.is_empty",
            )
        )

    def scoped(self, depth: int, scope: dict[str, str]) -> str:
        var = self.pick(list(scope))
        if scope[var] == "item":
            field_ = self.pick(("category", "sku", "name"))
            if self.chance(0.5):
                return f"{var}.{field_} {self.pick(('==', '!='))} {string_literal(self.pick(CATEGORIES + SKUS))}"
            number = self.pick(("quantity", "unit_price"))
            return f"{var}.{number} {self.pick(COMPARISONS)} {self.pick(('1', '1.5', '10', '99.5'))}"
        roll = self.rng.random()
        # rule-engine reads `mapping.<name>` as the comprehension variable <name> when one is in reach
        if roll < 0.15:
            return f"attributes.{var} {self.pick(('==', '!='))} {var}"
        if roll < 0.3:
            return f"{var} in {{attributes.{var}}}"
        if roll < 0.4:
            return f'{{"k": attributes.{var}}}["k"] == {var}'
        return f"{var} {self.pick(('==', '!=', '<'))} {string_literal(self.pick(SEGMENTS + INTERACTIONS))}"

    def ill_typed(self) -> str:
        """Conditions ``rule-engine`` rejects when it loads them: these are skipped, not counted."""
        return self.pick(
            (
                "name > 5",
                "order.total + name > 1",
                "customer.birthday.month == 1",
                "customer.days_since_last_purchase > 120",
                "5 in name",
                "customer.nickname == 1",
                "order.items[0] > 1",
                "customer.purchase_count ?? name",
                "-name == 1",
            )
        )

    # ----- values

    def variable(self, scope: dict[str, str]) -> str:
        # the pool is small on purpose: nested comprehensions sometimes reuse a name
        return self.pick(VARIABLES)

    def number_list(self, least: int = 0) -> str:
        return ", ".join(self.pick(NUMERIC_LITERALS[:10]) for _ in range(self.rng.randint(least, 3)))

    def number(self, depth: int, scope: dict[str, str]) -> str:
        if depth > 0 and self.chance(0.35):
            form = self.rng.randrange(8)
            if form < 4:
                operator = self.pick(ARITHMETIC)
                return paren(f"{self.number(depth - 1, scope)} {operator} {self.number(depth - 1, scope)}")
            if form == 4:
                return paren(f"{self.number(depth - 1, scope)} ** {self.pick(('0', '1', '2', '0.5', '-1'))}")
            if form == 5:
                return paren(f"-{self.numeric_leaf(scope)}")
            if form == 6:
                zero = self.pick(("0", "(customer.return_count - customer.return_count)", "(order.total * 0)"))
                return paren(f"{self.numeric_leaf(scope)} {self.pick(('/', '//', '%'))} {zero}")
            return paren(
                f"{paren(self.boolean(0, scope))} ? {self.number(depth - 1, scope)} : {self.number(depth - 1, scope)}"
            )
        return self.numeric_leaf(scope)

    def numeric_leaf(self, scope: dict[str, str]) -> str:
        items = [v for v, kind in scope.items() if kind == "item"]
        strings = [v for v, kind in scope.items() if kind == "str"]
        roll = self.rng.random()
        if items and roll < 0.2:
            return f"{self.pick(items)}.{self.pick(('quantity', 'unit_price'))}"
        if strings and roll < 0.2:
            return f"{self.pick(strings)}.length"
        if roll < 0.40:
            return self.pick(NUMERIC_FIELDS)
        if roll < 0.62:
            literal = self.pick(NUMERIC_LITERALS)
            return paren(literal) if literal.startswith("-") else literal
        key = self.pick(ATTRIBUTE_KEYS)
        return self.pick(
            (
                f"attributes.{key}",
                f'attributes["{key}"]',
                f'(attributes&["{key}"] ?? 0)',
                "(customer.days_since_last_purchase ?? 0)",
                "(customer.birthday&.month ?? 0)",
                "(customer.last_purchase_at&.year ?? 0)",
                f'(customer.interactions&["{self.pick(INTERACTIONS)}"] ?? 0)',
                f'customer.interactions["{self.pick(INTERACTIONS)}"]',
                f"order.items[{self.pick(('0', '1', '-1'))}].{self.pick(('quantity', 'unit_price'))}",
                f"(order.items&[{self.pick(('0', '2'))}]&.unit_price ?? 0)",
                f"{self.array_of_numbers(scope)}.length",
                # rule-engine's own attributes of numbers and strings
                f"{self.pick(NUMERIC_FIELDS[:4])}.{self.pick(('floor', 'ceiling', 'to_flt'))}",
                f"attributes.{key}.{self.pick(('floor', 'to_flt'))}",
            )
        )

    def string(self, scope: dict[str, str]) -> str:
        strings = [v for v, kind in scope.items() if kind == "str"]
        items = [v for v, kind in scope.items() if kind == "item"]
        roll = self.rng.random()
        if strings and roll < 0.2:
            return self.pick(strings)
        if items and roll < 0.2:
            return f"{self.pick(items)}.{self.pick(('category', 'sku'))}"
        if roll < 0.75:
            return self.pick(STRING_FIELDS)
        return self.pick(
            (
                "name.as_lower",
                "customer.first_name.as_upper",
                "order.items[0].category",
                '(order.items&[0]&.category ?? "")',
                "occurred_at.weekday",
                f"{self.pick(NUMERIC_FIELDS[:4])}.to_str",
                f"attributes.{self.pick(ATTRIBUTE_KEYS)}",
                f"customer.segments[{self.pick(('0', '-1'))}]",
                '(customer.segments&[1] ?? "")',
            )
        )

    def items_where(self, scope: dict[str, str]) -> str:
        var = self.variable(scope)
        inner = {**scope, var: "item"}
        condition = self.pick(
            (
                f"{var}.category == {string_literal(self.pick(CATEGORIES))}",
                f"{var}.quantity > 1",
                f"{var}.unit_price >= {self.pick(('10', '99.5'))}",
                None,
            )
        )
        if condition is None:
            condition = self.boolean(1, inner)
        return f"[{var} for {var} in order.items if {condition}]"

    def array_of_numbers(self, scope: dict[str, str]) -> str:
        var = self.variable(scope)
        form = self.rng.randrange(4)
        if form == 0:
            return f"[{var}.unit_price for {var} in order.items if {var}.quantity > 1]"
        if form == 1:
            return f"[{var}.quantity for {var} in order.items]"
        if form == 2:
            return f"[{var}.length for {var} in customer.segments]"
        return f"[customer.interactions[{var}] for {var} in customer.interactions]"

    def array_of_numbers_or_booleans(self, scope: dict[str, str]) -> str:
        if self.chance(0.5):
            return self.array_of_numbers(scope)
        var = self.variable(scope)
        return f"[{var}.quantity {self.pick(COMPARISONS)} {self.pick(('1', '2'))} for {var} in order.items]"

    def array_of_strings(self, scope: dict[str, str]) -> str:
        var = self.variable(scope)
        form = self.rng.randrange(4)
        if form == 0:
            return f"[{var}.category for {var} in order.items]"
        if form == 1:
            return f'[{var} for {var} in customer.segments if {var} != ""]'
        if form == 2:
            return f"[{var} for {var} in customer.interactions]"
        inner = self.boolean(0, {**scope, var: "str"})
        return f"[{var} for {var} in customer.segments if {inner}]"


# --------------------------------------------------------------------------- running both


@dataclass(frozen=True)
class Result:
    kind: str  # "true", "false", "error" or "crash" (the compiled closure raised outside ERRORS)
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.kind}: {self.detail}" if self.detail else self.kind


def run_compiled(fn: Callable[[dict[str, Any]], bool], facts: dict[str, Any]) -> Result:
    try:
        value = fn(facts)
    except ERRORS as exc:
        return Result("error", f"{type(exc).__name__}: {exc}")
    except Exception as exc:
        return Result("crash", f"{type(exc).__name__}: {exc}")
    if not isinstance(value, bool):
        return Result("crash", f"returned {value!r}, not a bool")
    return Result(str(value).lower())


def run_rule_engine(rule: rule_engine.Rule, facts: dict[str, Any]) -> Result:
    try:
        return Result(str(bool(rule.matches(facts))).lower())
    except Exception as exc:
        return Result("error", f"{type(exc).__name__}: {exc}")


@dataclass
class Disagreement:
    expression: str
    facts: dict[str, Any]
    compiled: Result
    expected: Result

    def __repr__(self) -> str:
        return f"Disagreement({self.expression!r}, compiled={self.compiled}, rule-engine={self.expected})"

    def describe(self) -> str:
        return (
            f"expression:  {self.expression}\n"
            f"compiled:    {self.compiled}\n"
            f"rule-engine: {self.expected}\n"
            f"facts:\n{pprint.pformat(self.facts, width=110, sort_dicts=False)}"
        )


def compare(
    expression: str, rule: rule_engine.Rule, fn: Callable[..., bool], facts: dict[str, Any]
) -> Disagreement | None:
    compiled, expected = run_compiled(fn, facts), run_rule_engine(rule, facts)
    if compiled.kind == expected.kind:
        return None
    return Disagreement(expression, facts, compiled, expected)


def report(disagreements: list[Disagreement], pairs: int) -> str:
    by_expression: dict[str, list[Disagreement]] = {}
    for found in disagreements:
        by_expression.setdefault(found.expression, []).append(found)
    lines = [
        f"{len(disagreements)} of {pairs} (expression, facts) pairs disagree, "
        f"over {len(by_expression)} distinct expressions:"
    ]
    lines += [f"  [{len(found)} facts] {expression}" for expression, found in by_expression.items()]
    for found in list(by_expression.values())[:SHOWN]:
        lines += ["", found[0].describe()]
    return "\n".join(lines)


@dataclass
class Corpus:
    seed: int
    generated: int = 0
    rejected: list[tuple[str, str]] = field(default_factory=list)
    rules: list[tuple[str, rule_engine.Rule, Callable[..., bool]]] = field(default_factory=list)
    facts: list[dict[str, Any]] = field(default_factory=list)

    @property
    def compiled(self) -> int:
        return sum(1 for _, _, fn in self.rules if getattr(fn, "compiled", False))


@functools.cache
def corpus(seed: int) -> Corpus:
    rng = random.Random(seed)
    generator = ExpressionGenerator(rng)
    context = rule_context()  # one per rule set, as the loader does
    found = Corpus(seed)
    for _ in range(EXPRESSIONS_PER_SEED):
        text = generator.condition()
        found.generated += 1
        try:
            rule = rule_engine.Rule(text, context=context)
        except Exception as exc:  # rejected while parsing or type-checking: not counted
            found.rejected.append((text, f"{type(exc).__name__}: {exc}"))
            continue
        found.rules.append((text, rule, compile_condition(rule)))
    found.facts = [random_facts(rng, index) for index in range(FACTS_PER_SEED)]
    return found


# --------------------------------------------------------------------------- the property


def test_generated_conditions_have_teeth() -> None:
    """Most generated conditions load, nearly all of those are compiled, and there are enough pairs."""
    corpora = [corpus(seed) for seed in SEEDS]
    generated = sum(c.generated for c in corpora)
    parsed = sum(len(c.rules) for c in corpora)
    compiled = sum(c.compiled for c in corpora)
    pairs = sum(len(c.rules) * len(c.facts) for c in corpora)
    rejected = [text for c in corpora for text, _ in c.rejected]
    assert parsed >= MIN_PARSED * generated, f"only {parsed} of {generated} conditions parse; rejected: {rejected}"
    fallback = [text for c in corpora for text, _, fn in c.rules if not getattr(fn, "compiled", False)]
    assert compiled >= MIN_COMPILED * parsed, f"only {compiled} of {parsed} compiled; fell back: {fallback}"
    assert pairs >= MIN_PAIRS


@pytest.mark.parametrize("seed", SEEDS)
def test_compiled_agrees_with_rule_engine(seed: int) -> None:
    found = corpus(seed)
    disagreements = [
        disagreement
        for text, rule, fn in found.rules
        for facts in found.facts
        if (disagreement := compare(text, rule, fn, facts)) is not None
    ]
    pairs = len(found.rules) * len(found.facts)
    assert pairs >= MIN_PAIRS // len(SEEDS)
    assert not disagreements, report(disagreements, pairs)


# --------------------------------------------------------------------------- hand-written corners


def purchase(*items: dict[str, Any], total: float = 150.0) -> dict[str, Any]:
    return {
        "event_id": "e-1",
        "type": "purchase",
        "customer_id": "c-1",
        "occurred_at": dt.datetime(2026, 3, 1, 10, 15, tzinfo=dt.UTC),
        "channel": "pos",
        "order": {"order_id": "o-1", "total": total, "currency": "EUR", "items": list(items)},
    }


def interaction(**attributes: Any) -> dict[str, Any]:
    return {
        "event_id": "e-2",
        "type": "interaction",
        "customer_id": "c-1",
        "occurred_at": dt.datetime(2026, 3, 1, 10, 15, tzinfo=dt.UTC),
        "channel": "web",
        "name": "review_posted",
        "attributes": attributes,
    }


def profile(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "customer_id": "c-1",
        "purchase_count": 3,
        "return_count": 0,
        "lifetime_spend": Decimal("150.00"),
        "favourite_category": "lamps",
        "interaction_counts": {"review_posted": 2, "app_visit": 1},
        "points_balance": 7,
        "attributes": {"first_name": "Ana", "birthday": "1990-03-01", "segments": ["vip", "newbie"]},
    }
    base.update(overrides)
    return base


ONE = {"sku": "A", "category": "handmade", "quantity": 1, "unit_price": 10.0}
TWO = {"sku": "B", "category": "lamps", "quantity": 2.5, "unit_price": 3}

CORNERS: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    ("1 == true", purchase(ONE), profile()),
    ("customer.purchase_count == 3", purchase(ONE), profile(purchase_count=3)),
    ("customer.purchase_count >= 3", purchase(ONE), profile(purchase_count=3)),
    ("attributes.source < 5", interaction(source="web"), profile()),
    ("attributes.source < attributes.rating", interaction(source="web", rating=5), profile()),
    ('order.total == "150"', purchase(ONE), profile()),
    ('attributes.rating == "5"', interaction(rating=5), profile()),
    ('attributes.rating != "5"', interaction(rating=5), profile()),
    ("attributes.a <= attributes.b", interaction(a=None, b=None), profile()),
    ("attributes.a < attributes.b", interaction(a=None, b=None), profile()),
    ("attributes.a < 1", interaction(a=None), profile()),
    ("null <= null", purchase(), profile()),
    ("[i.quantity for i in order.items] < [2]", purchase(ONE, TWO), profile()),
    ("[i.quantity for i in order.items] <= [1, 2.5]", purchase(ONE, TWO), profile()),
    ("[i.quantity for i in order.items] > [1]", purchase(ONE, TWO), profile()),
    ('customer.segments < ["vip", "zz"]', purchase(), profile()),
    ("[attributes.a] < [attributes.b]", interaction(a="x", b=1), profile()),
    ("[[attributes.flag]] < [[attributes.rating]]", interaction(flag=True, rating=1), profile()),
    ('"a" in "abc"', purchase(), profile()),
    ('"An" in customer.first_name', purchase(), profile()),
    ('order.items[0].sku == "A"', purchase(), profile()),
    ("order.items&[0] == null", purchase(), profile()),
    ('(order.items&[0]&.sku ?? "") == ""', purchase(), profile()),
    ('order.items[-1].sku == "B"', purchase(ONE, TWO), profile()),
    ('name[-1] == "d"', interaction(), profile()),
    ("-order.total < 0", purchase(ONE), profile()),
    ("-order.total < 0", purchase(total=0.0), profile()),
    # containment is Python's `in`: a number finds a boolean that equals it
    ("true in [i.quantity for i in order.items]", purchase(ONE), profile()),
    ("1 in [i.quantity < 2 for i in order.items]", purchase(ONE), profile()),
    # built-in attributes of numbers see them coerced (an int count is a Decimal)
    ('customer.purchase_count.to_str == "3"', purchase(ONE), profile(purchase_count=3)),
    ("customer.points_balance.floor == 7", purchase(ONE), profile(points_balance=7)),
    ("attributes.rating.floor >= 4", interaction(rating=4.5), profile()),
    # mappings are OrderedDicts in rule-engine: equality depends on key order, also inside arrays
    (
        'customer.interactions == {"app_visit": 1, "review_posted": 2}',
        purchase(),
        profile(interaction_counts={"review_posted": 2, "app_visit": 1}),
    ),
    (
        '[customer.interactions] == [{"app_visit": 1, "review_posted": 2}]',
        purchase(),
        profile(interaction_counts={"review_posted": 2, "app_visit": 1}),
    ),
    (
        'customer.interactions in [{"app_visit": 1, "review_posted": 2}]',
        purchase(),
        profile(interaction_counts={"review_posted": 2, "app_visit": 1}),
    ),
    (
        'order.items == [{"category": "handmade", "sku": "A", "name": "", "quantity": 1, "unit_price": 10}]',
        purchase(ONE),
        profile(),
    ),
]

# rule-engine resolves a name to the OUTERMOST comprehension variable of that name, and reads
# `mapping.<name>` as the comprehension variable <name> when one is in reach. The compiler may
# leave such conditions to rule-engine; either way the answers must agree.
SCOPING: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    ("[s for s in customer.segments if attributes.s == s].length > 0", interaction(s="zzz"), profile()),
    ("[s for s in customer.segments if [attributes.s][0] == s].length > 0", interaction(s="zzz"), profile()),
    ("[s for s in customer.segments if s in {attributes.s}].length > 0", interaction(s="zzz"), profile()),
    ('[s for s in customer.segments if {"k": attributes.s}["k"] == s].length > 0', interaction(s="zzz"), profile()),
    (
        "[[s.length for s in customer.segments] for s in customer.segments] == [[3, 6], [3, 6]]",
        purchase(),
        profile(),
    ),
    (
        '[s for s in customer.segments if {"k": [s for s in customer.segments if s == "newbie"]}["k"] == ["newbie"]]'
        ".length == 2",
        purchase(),
        profile(),
    ),
]


@pytest.mark.parametrize(("expression", "event", "customer"), CORNERS)
def test_corner_cases_agree(expression: str, event: dict[str, Any], customer: dict[str, Any]) -> None:
    rule = rule_engine.Rule(expression, context=rule_context())
    fn = compile_condition(rule)
    assert getattr(fn, "compiled", False), f"{expression} was not compiled"
    disagreement = compare(expression, rule, fn, build_facts(event, customer))
    assert disagreement is None, disagreement.describe()


@pytest.mark.parametrize(("expression", "event", "customer"), SCOPING)
def test_scoping_corners_agree(expression: str, event: dict[str, Any], customer: dict[str, Any]) -> None:
    rule = rule_engine.Rule(expression, context=rule_context())
    disagreement = compare(expression, rule, compile_condition(rule), build_facts(event, customer))
    assert disagreement is None, disagreement.describe()
