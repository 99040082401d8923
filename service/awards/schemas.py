"""Awards as integrators see them (v1 contract)."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from msgspec import Struct

AwardKind = Literal["gift", "points", "offer"]
AwardStatus = Literal["issued", "redeemed", "expired", "reversed"]


class GiftRef(Struct):
    id: str
    name: str


class OfferTerms(Struct, omit_defaults=True):
    percent: float | None = None
    amount: float | None = None
    category: str | None = None
    description: str | None = None
    valid_days: int | None = None


class AwardOut(Struct):
    award_id: str
    code: str
    campaign: str
    rule_id: str
    kind: AwardKind
    points: int | None
    gift: GiftRef | None
    offer: OfferTerms | None
    message: str | None
    issued_at: dt.datetime
    expires_at: dt.datetime | None
    status: AwardStatus
    rule_set_version: str
    event_id: str
    variant: str | None = None
    """Which of the rule's reward variants this is (``award: {one_of: ...}``); ``null`` for a rule with one award."""


def award_from_row(row: Any) -> AwardOut:
    """An award as stored: a SQLAlchemy row or an asyncpg record with ``AWARD_COLUMNS``."""
    row = getattr(row, "_mapping", row)
    offer = row["offer"]
    return AwardOut(
        award_id=str(row["award_id"]),
        code=row["code"],
        campaign=row["campaign"],
        rule_id=row["rule_id"],
        kind=row["kind"],
        points=row["points"],
        gift=GiftRef(id=row["gift_id"], name=row["gift_name"]) if row["gift_id"] else None,
        offer=OfferTerms(**offer) if offer else None,
        message=row["message"],
        issued_at=row["issued_at"],
        expires_at=row["expires_at"],
        status=row["status"],
        rule_set_version=row["rule_set_version"],
        event_id=row["event_id"],
        variant=row["variant"],
    )
