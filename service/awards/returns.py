"""What a return takes back: spend, points in proportion to the refund, gifts and offers when all is returned.

Runs inside the return event's transaction, after the profile upsert has
locked the customer, so two returns of one order are judged one after the
other. Points are taken back cumulatively: each return brings the reversed
share of an award up to the refunded share of the order. The balance never
goes below zero; what could not be taken back (already spent) is recorded on
the ledger entry as ``shortfall``. A return of an order Delight has not seen
takes nothing back, and is remembered: when the purchase arrives, its awards
are given and at once taken back as they would have been had the purchase
come first (``reverse_order`` after the purchase's awards), so that the
outcome does not depend on which of the two arrived first.
"""

from __future__ import annotations

import datetime as dt
import math
from decimal import Decimal
from typing import Any

from service.awards.repository import AWARD_COLUMNS
from service.awards.schemas import award_from_row
from service.customers.profile import refund_effect, refunds_by_order
from service.lib.pg import Connection, Sql
from service.rules.spec import WebhookSpec
from service.webhooks import outbox

# The reversals already recorded are found through the customer's ledger (it has no index on award_id).
ORDER_STATE = Sql(
    """
    SELECT
        (SELECT sum(amount) FROM events
         WHERE customer_id = :customer_id AND order_id = :order_id AND type = 'purchase') AS paid,
        (SELECT sum(amount) FROM events
         WHERE customer_id = :customer_id AND order_id = :order_id AND type = 'return') AS refunded,
        (SELECT points_balance FROM customers WHERE customer_id = :customer_id) AS balance,
        (SELECT refunds_ahead FROM customers WHERE customer_id = :customer_id) AS refunds_ahead,
        (SELECT coalesce(jsonb_agg(jsonb_build_object(
                    'award_id', a.award_id, 'kind', a.kind, 'points', a.points, 'status', a.status,
                    'reversed', coalesce((SELECT -sum(l.delta - l.shortfall) FROM points_ledger l
                                          WHERE l.customer_id = :customer_id AND l.award_id = a.award_id
                                            AND l.reason = 'reverse'), 0))), '[]')
         FROM awards a JOIN events e ON e.event_id = a.event_id AND e.occurred_at = a.issued_at
         WHERE e.customer_id = :customer_id AND e.order_id = :order_id AND e.type = 'purchase') AS awards
    """
)

APPLY = Sql(
    f"""
    WITH entries AS (
        INSERT INTO points_ledger (customer_id, delta, shortfall, reason, award_id, event_id, order_id, occurred_at)
        SELECT :customer_id, -x.applied, x.shortfall, 'reverse', x.award_id, :event_id, :order_id, :occurred_at
        FROM jsonb_to_recordset(CAST(:entries AS jsonb)) AS x(award_id uuid, applied bigint, shortfall bigint)
        RETURNING delta
    ), voided AS (
        UPDATE awards a SET status = 'reversed', status_changed_at = :occurred_at
        WHERE a.award_id = ANY(CAST(:voided AS uuid[])) AND a.status = 'issued'
        RETURNING {AWARD_COLUMNS}, a.position
    ), balance AS (
        UPDATE customers SET points_balance = points_balance + (SELECT coalesce(sum(delta), 0) FROM entries),
                             lifetime_spend = lifetime_spend + :spend, refunds_ahead = CAST(:refunds_ahead AS jsonb)
        WHERE customer_id = :customer_id
    )
    SELECT * FROM voided ORDER BY issued_at, position
    """
)


def plan_reversal(
    paid: Decimal, refunded: Decimal, balance: int, awards: list[dict[str, Any]]
) -> tuple[list[dict[str, Any]], list[str]]:
    """``(ledger entries, awards to void)`` for the order's awards, as plain data."""
    share = min(refunded / paid, Decimal(1)) if paid > 0 else Decimal(0)
    entries = []
    voided = []
    left = balance
    for award in awards:
        if award["kind"] == "points" and award["points"]:
            target = math.floor(Decimal(award["points"]) * share)
            wanted = target - int(award["reversed"])
            if wanted > 0:
                applied = min(wanted, left)
                left -= applied
                entries.append({"award_id": award["award_id"], "applied": applied, "shortfall": wanted - applied})
        if share >= 1 and award["status"] == "issued":
            voided.append(award["award_id"])
    return entries, voided


async def reverse_order(
    conn: Connection,
    *,
    customer_id: str,
    order_id: str,
    event_id: str,
    occurred_at: dt.datetime,
    webhooks: list[WebhookSpec],
    refund: Decimal,
) -> set[str]:
    """Count a return of ``refund`` into the order (0: recount it after a purchase that a return came before)
    and take back what the refunded share of the order earned; the ids of the awards voided."""
    params = {"customer_id": customer_id, "order_id": order_id}
    state = await ORDER_STATE.fetchrow(conn, params)
    assert state is not None  # one row of subqueries
    paid, refunded = Decimal(state["paid"] or 0), Decimal(state["refunded"] or 0)
    spend, ahead = refund_effect(paid, refunded, refund, order_id, state["refunds_ahead"])
    entries: list[dict[str, Any]] = []
    voided: list[str] = []
    if paid > 0 and state["awards"]:
        entries, voided = plan_reversal(paid, refunded, int(state["balance"]), list(state["awards"]))
    if not entries and not voided and not spend and ahead == refunds_by_order(state["refunds_ahead"]):
        return set()
    reversed_awards = await APPLY.fetch(
        conn,
        {
            **params,
            "event_id": event_id,
            "occurred_at": occurred_at,
            "entries": entries,
            "voided": voided,
            "spend": spend,
            "refunds_ahead": ahead,
        },
    )
    awards = [award_from_row(r) for r in reversed_awards]
    messages = outbox.messages(webhooks, "award.reversed", awards, occurred_at)
    if messages:
        await outbox.INSERT.execute(conn, {"rows": messages})
    return {a.award_id for a in awards}
