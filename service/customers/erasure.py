"""Erasing a customer on request while keeping the numbers right.

The customer's id is replaced everywhere by a random pseudonym that links to
nothing, and what could identify a person is dropped: the profile's
attributes (names, birthdays, segments); the ``customer`` block and the
free-form ``attributes`` of every stored event; each event's content hash, a
hash of the original event that anyone holding the original (or guessing at
it) could check against, for which ``ERASED_HASH`` stands from then on; award
messages (they may greet the customer by name, also in webhook messages);
and the notes of manual point adjustments. Amounts, times, groups and awards
stay, so reports, budgets and uplift are unchanged. The customer's row is
locked first, so no event of theirs is half-counted under the old id, and so
is the uplift projection's batch lock, so that no batch is half way through
their rows: an event of theirs the projection has not applied yet is applied
under the pseudonym.
"""

from __future__ import annotations

import uuid

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from service.audit import repository as audit
from service.projection.apply import BATCH_LOCK

ERASED_HASH = bytes(32)
"""The content hash of an erased customer's events: no SHA-256 of any event. A retry of such an event, whatever
its content, is answered as a replay with no awards (``service.events.service``): never awarded twice, and never
telling whose it was."""
LOCK = text("SELECT customer_id FROM customers WHERE customer_id = :customer_id FOR UPDATE")
PROJECTION_LOCK = text("SELECT pg_advisory_xact_lock(:lock)")
ERASE = text(
    """
    WITH events_done AS (
        UPDATE events
        SET customer_id = CAST(:pseudonym AS text), content_hash = CAST(:erased_hash AS bytea),
            payload = (payload - 'customer' - 'attributes')
                      || jsonb_build_object('customer_id', CAST(:pseudonym AS text))
        WHERE customer_id = CAST(:customer_id AS text)
    ), awards_done AS (
        UPDATE awards SET customer_id = CAST(:pseudonym AS text), message = NULL
        WHERE customer_id = CAST(:customer_id AS text)
        RETURNING award_id
    ), outbox_done AS (
        UPDATE outbox SET payload = jsonb_set(payload, '{data,message}', 'null'::jsonb)
        WHERE payload #>> '{data,award_id}' IN (SELECT award_id::text FROM awards_done)
    ), exposures_done AS (
        UPDATE exposures SET customer_id = CAST(:pseudonym AS text) WHERE customer_id = CAST(:customer_id AS text)
    ), firsts_done AS (
        UPDATE first_exposures SET customer_id = CAST(:pseudonym AS text) WHERE customer_id = CAST(:customer_id AS text)
    ), timeline_done AS (
        UPDATE customer_timelines SET customer_id = CAST(:pseudonym AS text)
        WHERE customer_id = CAST(:customer_id AS text)
    ), ledger_done AS (
        UPDATE points_ledger SET customer_id = CAST(:pseudonym AS text) WHERE customer_id = CAST(:customer_id AS text)
    ), audit_done AS (
        UPDATE audit_log SET subject = CAST(:pseudonym AS text), details = details - 'note'
        WHERE subject = CAST(:customer_id AS text) AND action = 'points.adjusted'
    )
    UPDATE customers SET customer_id = CAST(:pseudonym AS text), attributes = '{}'::jsonb, updated_at = now()
    WHERE customer_id = CAST(:customer_id AS text)
    """
)


async def erase_customer(session: AsyncSession, customer_id: str, actor: str) -> bool:
    """Erase the customer; ``False`` when there is no such customer."""
    if (await session.execute(LOCK, {"customer_id": customer_id})).one_or_none() is None:
        return False
    await session.execute(PROJECTION_LOCK, {"lock": BATCH_LOCK})
    pseudonym = f"erased-{uuid.uuid4().hex}"
    await session.execute(ERASE, {"customer_id": customer_id, "pseudonym": pseudonym, "erased_hash": ERASED_HASH})
    await audit.record(session, actor, "customer.erased", pseudonym, {})
    return True
