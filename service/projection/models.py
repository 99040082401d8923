"""The uplift projection's tables: built from committed events by ``service.projection``, read by the reports."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import BigInteger, CheckConstraint, DateTime, Float, Integer, String, func
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Mapped, mapped_column

from service.lib.db import Base, PgSnapshot, Xid8


class FirstExposure(Base):
    """A customer's first exposure to a rule (or, as rule ``*``, to its campaign) and what its awards cost.

    The cost timeline is offsets in seconds from ``t0`` (ascending) with the
    running total in cents up to each: the awards of that rule (or campaign)
    to that customer from ``t0`` on, within a year.
    """

    __tablename__ = "first_exposures"
    __table_args__ = (CheckConstraint("\"group\" IN ('treatment', 'control')", name="group"),)

    campaign: Mapped[str] = mapped_column(String(100), primary_key=True)
    rule_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    customer_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    event_id: Mapped[str] = mapped_column(String(200))
    t0: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    group: Mapped[str] = mapped_column(String(10))
    holdout: Mapped[float | None] = mapped_column(Float)
    channel: Mapped[str | None] = mapped_column(String(50))
    """The channel and store of the event that exposed the customer first."""
    store_id: Mapped[str | None] = mapped_column(String(100))
    cost_s: Mapped[list[int]] = mapped_column(ARRAY(Integer), server_default="{}")
    cost_cents: Mapped[list[int]] = mapped_column(ARRAY(BigInteger), server_default="{}")
    variant: Mapped[str | None] = mapped_column(String(100))
    """The reward variant of the first exposure (given, or that a held-out customer would have had); ``NULL`` for
    a rule with one award and for the campaign row."""
    variant_drawn: Mapped[str | None] = mapped_column(String(100))
    """The variant drawn for the customer, when it was out of stock and ``variant`` was given instead."""


class CustomerTimeline(Base):
    """Every purchase of one customer: the instants in order and the running total in cents at each; and every
    return, the same way (refunded in cents)."""

    __tablename__ = "customer_timelines"

    customer_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    at: Mapped[list[dt.datetime]] = mapped_column(ARRAY(DateTime(timezone=True)))
    cum: Mapped[list[int]] = mapped_column(ARRAY(BigInteger))
    ret_at: Mapped[list[dt.datetime]] = mapped_column(ARRAY(DateTime(timezone=True)), server_default="{}")
    ret_cum: Mapped[list[int]] = mapped_column(ARRAY(BigInteger), server_default="{}")


class ProjectionState(Base):
    """How far the projection has got: the snapshot of the events applied, and a batch under way."""

    __tablename__ = "projection_state"

    name: Mapped[str] = mapped_column(String(50), primary_key=True)
    snapshot: Mapped[tuple[int, int, tuple[int, ...]] | None] = mapped_column(PgSnapshot)
    """Every event whose transaction is visible in it has been applied; null until first built."""
    complete_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    """When ``snapshot`` was taken: every event committed before then is in the projection."""
    target: Mapped[tuple[int, int, tuple[int, ...]] | None] = mapped_column(PgSnapshot)
    """The snapshot a batch of several pages is applying up to."""
    target_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    cursor: Mapped[int | None] = mapped_column(Xid8)
    """The last transaction of that batch applied so far."""
    as_of: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    """The latest ``occurred_at`` among the events applied."""
    events: Mapped[int] = mapped_column(BigInteger, server_default="0")
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
