"""SQL for the audit log. Entries are written in the same transaction as the change they describe."""

from __future__ import annotations

from typing import Any

from sqlalchemy import bindparam, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

RECORD = text(
    "INSERT INTO audit_log (actor, action, subject, details) VALUES (:actor, :action, :subject, :details)"
).bindparams(bindparam("details", type_=JSONB))

PAGE = text(
    """
    SELECT entry_id, at, actor, action, subject, details FROM audit_log
    WHERE (CAST(:before AS bigint) IS NULL OR entry_id < :before)
      AND (CAST(:action AS text) IS NULL OR action = :action)
    ORDER BY entry_id DESC
    LIMIT :limit
    """
)


async def record(
    db: AsyncSession | AsyncConnection, actor: str, action: str, subject: str | None, details: dict[str, Any]
) -> None:
    await db.execute(RECORD, {"actor": actor, "action": action, "subject": subject, "details": details})


async def page(session: AsyncSession, *, before: int | None, action: str | None, limit: int) -> list[Row[Any]]:
    rows = await session.execute(PAGE, {"before": before, "action": action, "limit": limit})
    return list(rows.all())
