"""Every rule set that was ever active, by content hash, with its source text."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import DateTime, String, func
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from service.lib.db import Base


class RuleSetRecord(Base):
    __tablename__ = "rule_sets"

    version: Mapped[str] = mapped_column(String(64), primary_key=True)
    files: Mapped[dict[str, Any]] = mapped_column(JSONB)
    first_loaded_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    activated_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), index=True)
    """When this version last became the one in force; the newest is active on every replica."""
    activated_by: Mapped[str | None] = mapped_column(String(200))
