"""Awards and the points ledger."""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    Numeric,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column

from service.lib.db import Base


class Award(Base):
    __tablename__ = "awards"
    __table_args__ = (
        UniqueConstraint("event_id", "campaign", "rule_id"),
        CheckConstraint("kind IN ('gift', 'points', 'offer')", name="kind"),
        CheckConstraint("status IN ('issued', 'redeemed', 'expired', 'reversed')", name="status"),
        Index("ix_awards_customer_id_status", "customer_id", "status"),
        Index("ix_awards_campaign_rule_id", "campaign", "rule_id"),
    )

    award_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    code: Mapped[str] = mapped_column(String(20), unique=True)
    event_id: Mapped[str] = mapped_column(String(200))
    customer_id: Mapped[str] = mapped_column(
        String(200), ForeignKey("customers.customer_id", deferrable=True, initially="DEFERRED")
    )
    campaign: Mapped[str] = mapped_column(String(100))
    rule_id: Mapped[str] = mapped_column(String(100))
    position: Mapped[int] = mapped_column(SmallInteger, server_default="0")
    """Order among the awards of one event, so a replay lists them as the first answer did."""
    rule_set_version: Mapped[str] = mapped_column(String(64), ForeignKey("rule_sets.version"))
    kind: Mapped[str] = mapped_column(String(10))
    points: Mapped[int | None] = mapped_column(Integer)
    gift_id: Mapped[str | None] = mapped_column(String(100))
    gift_name: Mapped[str | None] = mapped_column(String(200))
    offer: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    message: Mapped[str | None] = mapped_column(Text)
    cost: Mapped[Decimal] = mapped_column(Numeric(12, 2), server_default="0")
    issued_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    status: Mapped[str] = mapped_column(String(10), server_default="issued")
    status_changed_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    redeemed_order_id: Mapped[str | None] = mapped_column(String(200))
    variant: Mapped[str | None] = mapped_column(String(100))
    """The reward variant given, for a rule with several (``award: {one_of: ...}``)."""
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class PointsEntry(Base):
    """One change of a customer's points balance; the balance is the sum of these.

    Partitioned by month of ``occurred_at`` (migration 0022). A spend and an adjustment are each unique per
    customer and order (``order_id`` holding the adjustment's id): the customer's row lock, taken before the
    check, keeps them so."""

    __tablename__ = "points_ledger"
    __table_args__ = (
        CheckConstraint("reason IN ('earn', 'spend', 'expire', 'reverse', 'adjust')", name="reason"),
        Index("ix_points_ledger_customer_id_entry_id", "customer_id", "entry_id"),
        Index("ix_points_ledger_spend_order", "customer_id", "order_id", postgresql_where=text("reason = 'spend'")),
        Index("ix_points_ledger_adjustment", "customer_id", "order_id", postgresql_where=text("reason = 'adjust'")),
        {"postgresql_partition_by": "RANGE (occurred_at)"},
    )

    entry_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    customer_id: Mapped[str] = mapped_column(String(200))
    delta: Mapped[int] = mapped_column(BigInteger)
    reason: Mapped[str] = mapped_column(String(10))
    shortfall: Mapped[int] = mapped_column(BigInteger, server_default="0")
    """Points a reversal wanted to take back but could not: the customer had already spent them."""
    award_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    event_id: Mapped[str | None] = mapped_column(String(200))
    order_id: Mapped[str | None] = mapped_column(String(200))
    occurred_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), primary_key=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
