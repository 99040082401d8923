"""Sharded counters (budgets, pacing, stock) and the exposures the event path records (treated and held out)."""

from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy import BigInteger, Boolean, CheckConstraint, DateTime, Float, Index, SmallInteger, String
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.orm import Mapped, mapped_column

from service.lib.db import Base


class Counter(Base):
    """One of the 16 shards of a budget, a daily pacing limit or a gift's stock."""

    __tablename__ = "counters"

    key: Mapped[str] = mapped_column(String(300), primary_key=True)
    shard: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    n: Mapped[int] = mapped_column(BigInteger, server_default="0")
    cents: Mapped[int] = mapped_column(BigInteger, server_default="0")


class Exposure(Base):
    """A customer who qualified for a rule and would really have been awarded, in either group.

    Partitioned by month of ``occurred_at``, its event's (migration 0022)."""

    __tablename__ = "exposures"
    __table_args__ = (
        CheckConstraint("\"group\" IN ('treatment', 'control')", name="group"),
        Index("ix_exposures_campaign_customer_id_occurred_at", "campaign", "customer_id", "occurred_at"),
        {"postgresql_partition_by": "RANGE (occurred_at)"},
    )

    event_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    campaign: Mapped[str] = mapped_column(String(100), primary_key=True)
    rule_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    customer_id: Mapped[str] = mapped_column(String(200))
    group: Mapped[str] = mapped_column(String(10))
    occurred_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), primary_key=True)
    award_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    rule_set_version: Mapped[str] = mapped_column(String(64))
    holdout: Mapped[float | None] = mapped_column(Float)
    variant: Mapped[str | None] = mapped_column(String(100))
    """The reward variant given, or that a held-out customer would have been given; ``NULL`` for a rule with one
    award."""
    variant_drawn: Mapped[str | None] = mapped_column(String(100))
    """The variant drawn for the customer, when it was out of stock and ``variant`` was given instead."""
    programme_held: Mapped[bool | None] = mapped_column(Boolean)
    """True when the programme-wide holdout kept the award back (``group`` is control); ``NULL`` otherwise."""
