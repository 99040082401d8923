"""The customer profile table."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from sqlalchemy import BigInteger, CheckConstraint, DateTime, Integer, Numeric, String, func
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from service.lib.db import Base


class Customer(Base):
    __tablename__ = "customers"
    __table_args__ = (CheckConstraint("points_balance >= 0", name="points_balance_non_negative"),)

    customer_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    purchase_count: Mapped[int] = mapped_column(Integer, server_default="0")
    return_count: Mapped[int] = mapped_column(Integer, server_default="0")
    lifetime_spend: Mapped[Decimal] = mapped_column(Numeric, server_default="0")
    first_purchase_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    last_purchase_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    last_event_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    category_spend: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default="{}")
    interaction_counts: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default="{}")
    points_balance: Mapped[int] = mapped_column(BigInteger, server_default="0")
    attributes: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default="{}")
    award_log: Mapped[list[Any]] = mapped_column(JSONB, server_default="[]")
    """Recent surprises, real or held out, as ``[epoch seconds, campaign, rule]``: what limits are judged on."""
    refunds_ahead: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    """Per order returned before it was paid in full, what was refunded beyond what was paid (0 once a purchase
    netted it off); ``NULL`` for almost everyone. See ``service.customers.profile.refund_effect``."""
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
