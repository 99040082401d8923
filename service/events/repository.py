"""SQL for the event store."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from sqlalchemy import bindparam, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncSession

from service.awards.repository import AWARD_COLUMNS

# ON CONFLICT DO NOTHING waits for a concurrent insert of the same id to
# commit or roll back, so two identical events racing each other award once.
INSERT = text(
    """
    INSERT INTO events (
        event_id, content_hash, type, customer_id, occurred_at, channel, store_id, name, order_id, amount,
        rule_set_version, payload
    ) VALUES (
        :event_id, :content_hash, :type, :customer_id, :occurred_at, :channel, :store_id, :name, :order_id, :amount,
        :rule_set_version, :payload
    )
    ON CONFLICT (event_id) DO NOTHING
    RETURNING event_id
    """
).bindparams(bindparam("payload", type_=JSONB))

STORED = text(
    f"""
    SELECT e.content_hash, {AWARD_COLUMNS.replace("a.event_id", "e.event_id")}
    FROM events e LEFT JOIN awards a ON a.event_id = e.event_id
    WHERE e.event_id = :event_id
    ORDER BY a.position
    """
)


async def insert(
    session: AsyncSession,
    *,
    event_id: str,
    content_hash: bytes,
    type: str,
    customer_id: str,
    occurred_at: Any,
    channel: str | None,
    store_id: str | None,
    name: str | None,
    order_id: str | None,
    amount: Decimal | None,
    rule_set_version: str,
    payload: dict[str, Any],
) -> bool:
    """Store a new event; ``False`` when an event with this id already exists."""
    result = await session.execute(
        INSERT,
        {
            "event_id": event_id,
            "content_hash": content_hash,
            "type": type,
            "customer_id": customer_id,
            "occurred_at": occurred_at,
            "channel": channel,
            "store_id": store_id,
            "name": name,
            "order_id": order_id,
            "amount": amount,
            "rule_set_version": rule_set_version,
            "payload": payload,
        },
    )
    return result.first() is not None


async def stored(session: AsyncSession, event_id: str) -> tuple[bytes, list[Row[Any]]]:
    """The content hash of a stored event and its awards, in the order first given."""
    rows = (await session.execute(STORED, {"event_id": event_id})).all()
    return rows[0].content_hash, [r for r in rows if r.award_id is not None]
