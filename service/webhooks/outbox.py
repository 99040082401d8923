"""Writing webhook messages to the outbox, in the caller's transaction.

A message is the award as the API shows it, with an id receivers can
deduplicate on; there is one outbox row per message and subscriber, so each
subscriber's delivery is tracked on its own.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable
from typing import Any

import msgspec
from sqlalchemy.ext.asyncio import AsyncSession

from service.awards.schemas import AwardOut
from service.lib.pg import Sql
from service.rules.spec import WebhookSpec

INSERT = Sql(
    """
    INSERT INTO outbox (message_id, subscription, type, payload)
    SELECT x.message_id, x.subscription, x.type, x.payload
    FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS x(message_id uuid, subscription text, type text, payload jsonb)
    ON CONFLICT DO NOTHING
    """
)
_INSERT = INSERT.clause()


def messages(
    webhooks: Iterable[WebhookSpec], kind: str, awards: Iterable[AwardOut], at: dt.datetime
) -> list[dict[str, Any]]:
    """Outbox rows telling every subscriber of ``kind`` (e.g. ``award.issued``) about each award."""
    subscribers = [w.id for w in webhooks if kind in w.events]
    rows: list[dict[str, Any]] = []
    if not subscribers:
        return rows
    for award in awards:
        message_id = str(uuid.uuid4())
        payload = {
            "id": message_id,
            "type": kind,
            "created_at": at.astimezone(dt.UTC).isoformat(),
            "data": msgspec.to_builtins(award),
        }
        rows.extend(
            {"message_id": message_id, "subscription": s, "type": kind, "payload": payload} for s in subscribers
        )
    return rows


async def write(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    if rows:
        await session.execute(_INSERT, {"rows": rows})
