"""Customer profiles as integrators see them."""

from __future__ import annotations

import datetime as dt

from msgspec import Struct

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
    created_at: dt.datetime
    updated_at: dt.datetime
