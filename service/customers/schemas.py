"""Customer profiles as integrators see them."""

from __future__ import annotations

import datetime as dt

from msgspec import Struct

from service.awards.redemption import LedgerEntryOut
from service.awards.schemas import AwardOut
from service.events.schemas import CustomerAttributes


class CustomerOut(Struct):
    customer_id: str
    purchase_count: int
    return_count: int
    lifetime_spend: float
    first_purchase_at: dt.datetime | None
    last_purchase_at: dt.datetime | None
    last_event_at: dt.datetime | None
    favourite_category: str | None
    interaction_counts: dict[str, int]
    points_balance: int
    attributes: CustomerAttributes
    awards: list[AwardOut]
    ledger: list[LedgerEntryOut]
    """The newest points-ledger entries; the balance is the sum of all of them."""
    ledger_next: int | None
    """Pass as ``before`` to ``GET /v1/customers/{id}/points`` for older entries; ``null`` at the end."""
    created_at: dt.datetime
    updated_at: dt.datetime


class LedgerPage(Struct):
    customer_id: str
    points_balance: int
    entries: list[LedgerEntryOut]
    next: int | None
