"""What a rule can see: the event and the customer, typed for ``rule-engine``.

Every rule condition and message template is checked against these types when
the rule set loads, so an unknown field or a type mismatch is an error with a
file and line, not a surprise at the till. Absent strings are ``""`` and absent
numbers ``0`` so that ``order.total >= 300`` works on any event; only dates that
may truly be unknown (birthday, first purchase) are nullable.
"""

from __future__ import annotations

import datetime as dt
import warnings
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

import rule_engine
from rule_engine import DataType as T

# `attributes.rating` (dot access into the free-form attributes mapping) is the
# documented way to read an interaction's attributes; rule-engine 5 warns that
# it prefers `attributes["rating"]`, and we accept both.
warnings.filterwarnings("ignore", category=rule_engine.errors.MappingAttributeLookupDeprecation)


def _get(value: Any, name: str) -> Any:
    return value[name]


ITEM = T.OBJECT(
    "OrderItem",
    attributes={"sku": T.STRING, "category": T.STRING, "name": T.STRING, "quantity": T.FLOAT, "unit_price": T.FLOAT},
    accessor=_get,
)
ORDER = T.OBJECT(
    "Order",
    attributes={"order_id": T.STRING, "total": T.FLOAT, "currency": T.STRING, "items": T.ARRAY(ITEM)},
    accessor=_get,
)
CUSTOMER = T.OBJECT(
    "Customer",
    attributes={
        "customer_id": T.STRING,
        "purchase_count": T.FLOAT,
        "return_count": T.FLOAT,
        "lifetime_spend": T.FLOAT,
        "first_purchase_at": T.NULLABLE(T.DATETIME),
        "last_purchase_at": T.NULLABLE(T.DATETIME),
        "days_since_last_purchase": T.NULLABLE(T.FLOAT),
        "favourite_category": T.STRING,
        "interactions": T.MAPPING(T.STRING, T.FLOAT),
        "points_balance": T.FLOAT,
        "first_name": T.STRING,
        "last_name": T.STRING,
        "language": T.STRING,
        "birthday": T.NULLABLE(T.DATETIME),
        "segments": T.ARRAY(T.STRING),
        "consent": T.MAPPING(T.STRING, T.BOOLEAN),
    },
    accessor=_get,
)
FACT_TYPES: dict[str, Any] = {
    "event_id": T.STRING,
    "type": T.STRING,
    "customer_id": T.STRING,
    "occurred_at": T.DATETIME,
    "channel": T.STRING,
    "store_id": T.STRING,
    "name": T.STRING,
    "order": ORDER,
    "attributes": T.MAPPING(T.STRING),
    "customer": CUSTOMER,
}


def rule_context() -> rule_engine.Context:
    return rule_engine.Context(
        type_resolver=rule_engine.type_resolver_from_dict(FACT_TYPES),
        resolver=rule_engine.resolve_item,
        default_timezone=dt.UTC,
    )


def template_field_exists(path: tuple[str, ...]) -> bool:
    """Whether ``a.b.c`` names a scalar a message template may print."""
    current: Any = FACT_TYPES.get(path[0])
    for part in path[1:]:
        if current is None:
            return False
        if T.is_type(current, T.NULLABLE):
            current = current.inner_type
        if T.is_type(current, T.OBJECT):
            current = current.attributes.get(part)
        elif T.is_type(current, T.MAPPING):
            current = current.value_type
        else:
            return False
    if current is None:
        return False
    if T.is_type(current, T.NULLABLE):
        current = current.inner_type
    if T.is_type(current, T.ARRAY):  # a list of plain values prints joined by commas
        current = current.value_type
    return not any(T.is_type(current, kind) for kind in (T.OBJECT, T.MAPPING, T.ARRAY))


def _money(value: float | Decimal | None) -> Decimal:
    if value is None:
        return Decimal(0)
    return value if isinstance(value, Decimal) else Decimal(repr(value))


def _midnight(value: dt.date | None) -> dt.datetime | None:
    return None if value is None else dt.datetime(value.year, value.month, value.day, tzinfo=dt.UTC)


def build_facts(event: Mapping[str, Any], profile: Mapping[str, Any], zone: dt.tzinfo = dt.UTC) -> dict[str, Any]:
    """The plain-data view of an event and a customer that rules and templates read.

    ``event`` is the event as decoded builtins (the v1 wire shape);
    ``profile`` is the customer after this event was counted; times are
    shown in ``zone``, the shop's time zone.
    """
    order = event.get("order") or {}
    attributes = profile.get("attributes") or {}
    items = tuple(
        {
            "sku": item.get("sku", ""),
            "category": item.get("category") or "",
            "name": item.get("name") or "",
            "quantity": _money(item.get("quantity", 1)),
            "unit_price": _money(item.get("unit_price", 0)),
        }
        for item in order.get("items", ())
    )
    return {
        "event_id": event["event_id"],
        "type": event["type"],
        "customer_id": event["customer_id"],
        "occurred_at": event["occurred_at"].astimezone(zone),
        "channel": event.get("channel") or "",
        "store_id": event.get("store_id") or "",
        "name": event.get("name") or "",
        "order": {
            "order_id": order.get("order_id", ""),
            "total": _money(order.get("total", 0)),
            "currency": order.get("currency", ""),
            "items": items,
        },
        "attributes": dict(event.get("attributes") or {}),
        "customer": {
            "customer_id": profile["customer_id"],
            "purchase_count": profile.get("purchase_count", 0),
            "return_count": profile.get("return_count", 0),
            "lifetime_spend": _money(profile.get("lifetime_spend")),
            "first_purchase_at": profile.get("first_purchase_at"),
            "last_purchase_at": profile.get("last_purchase_at"),
            "days_since_last_purchase": _days_between(profile.get("last_purchase_at"), event["occurred_at"]),
            "favourite_category": profile.get("favourite_category") or "",
            "interactions": {k: Decimal(v) for k, v in (profile.get("interaction_counts") or {}).items()},
            "points_balance": profile.get("points_balance", 0),
            "first_name": attributes.get("first_name") or "",
            "last_name": attributes.get("last_name") or "",
            "language": attributes.get("language") or "",
            "birthday": _midnight(_date(attributes.get("birthday"))),
            "segments": tuple(attributes.get("segments") or ()),
            "consent": dict(attributes.get("consent") or {}),
        },
    }


def _days_between(earlier: dt.datetime | None, later: dt.datetime) -> Decimal | None:
    if earlier is None:
        return None
    return Decimal(str(round((later - earlier).total_seconds() / 86400, 4)))


def _date(value: Any) -> dt.date | None:
    if value is None or isinstance(value, dt.date):
        return value
    return dt.date.fromisoformat(str(value))
