"""SQL for the event store."""

from __future__ import annotations

from typing import Any

from service.awards.repository import AWARD_COLUMNS
from service.customers.profile import ProfileDelta, favourite
from service.customers.repository import PROFILE_FIELDS, UPSERT_CONFLICT
from service.lib.pg import Connection, Record, Sql

# A new event and its count into the customer's profile, in one round trip:
# the event and its count are only stored when its id was new in
# ``event_ids``, so a replay (no row back) changes nothing. ON CONFLICT DO
# NOTHING waits for a concurrent insert of the same id to commit or roll back,
# so two identical events racing each other award once. Nothing here depends
# on the customer's history: the uplift report's data is built from the
# stored events afterwards (``service.projection``).
RECORD = Sql(
    f"""
    WITH new_id AS (
        INSERT INTO event_ids (event_id, occurred_at) VALUES (:event_id, :occurred_at)
        ON CONFLICT (event_id) DO NOTHING
        RETURNING event_id
    ), new_event AS (
        INSERT INTO events (
            event_id, content_hash, type, customer_id, occurred_at, channel, store_id, name, order_id, amount,
            rule_set_version, payload
        )
        SELECT :event_id, :content_hash, :type, :customer_id, :occurred_at, :channel, :store_id, :name, :order_id,
               :amount, :rule_set_version, CAST(:payload AS jsonb)
        FROM new_id
        RETURNING event_id
    )
    INSERT INTO customers AS c (
        customer_id, purchase_count, return_count, lifetime_spend, first_purchase_at, last_purchase_at,
        last_event_at, category_spend, interaction_counts, attributes
    )
    SELECT :customer_id, :purchases, :returns, GREATEST(CAST(:spend AS numeric), 0), :purchase_at, :purchase_at,
           :occurred_at, CAST(:category_spend AS jsonb), CAST(:interactions AS jsonb),
           CAST(:attributes AS jsonb)
    FROM new_event
    {UPSERT_CONFLICT}
    RETURNING {PROFILE_FIELDS}
    """
)

STORED = Sql(
    f"""
    SELECT e.content_hash, {AWARD_COLUMNS.replace("a.event_id", "e.event_id")}
    FROM event_ids i
    JOIN events e ON e.event_id = i.event_id AND e.occurred_at = i.occurred_at
    LEFT JOIN awards a ON a.event_id = e.event_id
    WHERE i.event_id = :event_id
    ORDER BY a.position
    """
)


async def record(conn: Connection, event: dict[str, Any], delta: ProfileDelta) -> dict[str, Any] | None:
    """Store a new event and count it into the profile; the profile as it now stands, ``None`` for a replay.

    ``event`` holds the ``events`` row's columns.
    """
    row = await RECORD.fetchrow(
        conn,
        {
            **event,
            "purchases": delta.purchases,
            "returns": delta.returns,
            "spend": delta.spend,
            "purchase_at": delta.purchase_at,
            "category_spend": delta.category_spend,
            "interactions": delta.interactions,
            "attributes": delta.attributes,
        },
    )
    if row is None:
        return None
    profile = dict(row)
    profile["favourite_category"] = favourite(profile["category_spend"])
    return profile


async def stored(conn: Connection, event_id: str) -> tuple[bytes, list[Record]]:
    """The content hash of a stored event and its awards, in the order first given."""
    rows = await STORED.fetch(conn, {"event_id": event_id})
    return rows[0]["content_hash"], [r for r in rows if r["award_id"] is not None]
