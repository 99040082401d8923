"""The event store: every event accepted, exactly once per ``event_id``."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from sqlalchemy import DateTime, Index, LargeBinary, Numeric, String, func, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from service.lib.db import Base, Xid8


class EventId(Base):
    """Every stored event's id, once: what makes ``event_id`` unique across the partitions of ``events``."""

    __tablename__ = "event_ids"

    event_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    occurred_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    """Where the event is: the partition of ``events`` that holds it."""


class Event(Base):
    """Partitioned by month of ``occurred_at`` (migration 0022); its id is unique through ``event_ids``."""

    __tablename__ = "events"
    __table_args__ = (
        Index("ix_events_customer_id_order_id", "customer_id", "order_id"),
        Index("ix_events_xid", "xid"),
        {"postgresql_partition_by": "RANGE (occurred_at)"},
    )

    event_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    content_hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    type: Mapped[str] = mapped_column(String(20))
    customer_id: Mapped[str] = mapped_column(String(200))
    occurred_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), primary_key=True)
    received_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    channel: Mapped[str | None] = mapped_column(String(50))
    store_id: Mapped[str | None] = mapped_column(String(100))
    name: Mapped[str | None] = mapped_column(String(100))
    order_id: Mapped[str | None] = mapped_column(String(200))
    amount: Mapped[Decimal | None] = mapped_column(Numeric(14, 2))
    rule_set_version: Mapped[str | None] = mapped_column(String(64))
    payload: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    """The event as received; ``NULL`` once its month is archived (``DELIGHT_RETENTION_DAYS``)."""
    xid: Mapped[int] = mapped_column(Xid8, server_default=text("pg_current_xact_id()"))
    """The transaction that stored the event: how the uplift projection finds what committed since it last ran."""
