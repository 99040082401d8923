"""The wire format of events (v1 contract) and of the answers to them."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

from msgspec import Meta, Struct

from service.awards.schemas import AwardOut
from service.lib.errors import FieldError, Problem

Id = Annotated[str, Meta(min_length=1, max_length=200, pattern=r"^[\x21-\x7e]+$")]
CustomerIdIn = Annotated[
    str,
    Meta(
        min_length=1,
        max_length=200,
        pattern=r"^[\x21-\x2e\x30-\x7e]+$",
        description="printable ASCII without spaces or `/`, and neither `.` nor `..`, so that every "
        "/v1/customers/{id} route can address it.",
    ),
]
ShortText = Annotated[str, Meta(min_length=1, max_length=200)]
Money = Annotated[float, Meta(ge=0, le=1_000_000_000)]
MAX_ATTRIBUTE_TEXT = 1000
AttributeValue = Annotated[str, Meta(max_length=MAX_ATTRIBUTE_TEXT)] | int | float | bool | None

EventType = Literal["purchase", "return", "interaction"]


class OrderItem(Struct, forbid_unknown_fields=True, omit_defaults=True):
    sku: Annotated[ShortText, Meta(description="The product's stock-keeping unit.")]
    quantity: Annotated[float, Meta(gt=0, le=1_000_000)] = 1
    unit_price: Money = 0
    category: Annotated[str, Meta(max_length=100)] | None = None
    name: Annotated[str, Meta(max_length=200)] | None = None


class Order(Struct, forbid_unknown_fields=True, omit_defaults=True):
    order_id: Id
    total: Annotated[Money, Meta(description="What the customer paid (or, for a return, what was refunded).")]
    currency: Annotated[str, Meta(pattern="^[A-Z]{3}$", description="ISO 4217 code.")] = "EUR"
    items: Annotated[list[OrderItem], Meta(max_length=1000)] = []


class CustomerAttributes(Struct, forbid_unknown_fields=True, omit_defaults=True):
    """What the sender knows about the customer; merged into the profile."""

    first_name: Annotated[str, Meta(max_length=100)] | None = None
    last_name: Annotated[str, Meta(max_length=100)] | None = None
    email: Annotated[str, Meta(max_length=254)] | None = None
    birthday: dt.date | None = None
    language: Annotated[str, Meta(max_length=35)] | None = None
    segments: Annotated[list[Annotated[str, Meta(max_length=100)]], Meta(max_length=100)] | None = None
    consent: Annotated[dict[Annotated[str, Meta(max_length=100)], bool], Meta(max_length=50)] | None = None


class EventIn(Struct, forbid_unknown_fields=True, omit_defaults=True):
    """A purchase, a return or a named interaction, with the sender's stable ``event_id``."""

    event_id: Annotated[Id, Meta(description="Stable id from the sender; a retry must reuse it.")]
    type: EventType
    customer_id: CustomerIdIn
    occurred_at: Annotated[
        dt.datetime, Meta(tz=True, description="When it happened, with a time zone; all rules use this time.")
    ]
    channel: Annotated[str, Meta(max_length=50)] | None = None
    store_id: Annotated[str, Meta(max_length=100)] | None = None
    name: (
        Annotated[
            str, Meta(min_length=1, max_length=100, description="The interaction's name; required for interactions.")
        ]
        | None
    ) = None
    order: Annotated[Order, Meta(description="Required for purchases and returns.")] | None = None
    customer: CustomerAttributes | None = None
    attributes: Annotated[dict[Annotated[str, Meta(max_length=100)], AttributeValue], Meta(max_length=50)] = {}


MAX_BATCH_EVENTS = 1000


class EventBatchIn(Struct, forbid_unknown_fields=True):
    events: Annotated[list[EventIn], Meta(min_length=1, max_length=MAX_BATCH_EVENTS)]


EARLIEST = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
LATEST = dt.datetime(2999, 12, 31, tzinfo=dt.UTC)


def semantic_errors(event: EventIn, prefix: str = "") -> list[FieldError]:
    """Rules between fields that a JSON Schema for one field cannot express."""
    where = f"{prefix}." if prefix else ""
    errors = []
    if event.type in ("purchase", "return") and event.order is None:
        errors.append(FieldError(field=f"{where}order", message=f"a {event.type} needs an order"))
    if event.type == "interaction" and not event.name:
        errors.append(FieldError(field=f"{where}name", message="an interaction needs a name"))
    if event.type == "interaction" and event.order is not None:
        errors.append(FieldError(field=f"{where}order", message="an interaction carries no order"))
    if event.customer_id in (".", ".."):  # a URL path cannot hold them: clients resolve them away
        errors.append(FieldError(field=f"{where}customer_id", message="`.` and `..` cannot be customer ids"))
    if not EARLIEST <= event.occurred_at <= LATEST:
        errors.append(FieldError(field=f"{where}occurred_at", message="must be between 1970 and 2999"))
    return errors


class EventResult(Struct):
    event_id: str
    duplicate: bool
    awards: list[AwardOut]


class BatchItemResult(Struct, omit_defaults=True):
    event_id: str | None
    status: Annotated[
        int, Meta(description="The status this event would get alone: 201, 200 (replay), 409, 422 or 503.")
    ]
    duplicate: bool = False
    awards: list[AwardOut] = []
    error: Problem | None = None


class BatchResult(Struct):
    results: list[BatchItemResult]
