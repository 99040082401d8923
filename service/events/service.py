"""Where a purchase becomes an award: one event, one transaction.

The event is stored (or recognised as a replay), the customer profile is
updated, the rule core decides, and the awards with their ledger entries are
written, all in the caller's transaction and in a fixed number of round
trips: store the event and count it into the profile (one statement), then,
only when a rule matched, draw the limited counters and write what the
candidates accepted give (one statement). An event that wins no rule's
chance draw is that first statement alone, in its own implicit transaction.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import time
from decimal import Decimal
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import msgspec
import structlog
from sqlalchemy.ext.asyncio import AsyncEngine

from service.awards import repository as awards_repo
from service.awards.codes import new_award_id, new_code
from service.awards.returns import reverse_order
from service.awards.schemas import AwardOut, GiftRef, OfferTerms, award_from_row
from service.controls import plan as controls
from service.controls.plan import LogEntry, Take
from service.customers.erasure import ERASED_HASH
from service.customers.profile import delta_for, money
from service.events import repository as events_repo
from service.events.schemas import EventIn, EventResult
from service.lib import metrics, pg
from service.lib.errors import EventConflictError, FieldError, ValidationError
from service.lib.logging import get_logger
from service.rules import engine
from service.rules.engine import Decision, drawn
from service.rules.facts import build_facts
from service.rules.ruleset import Rule, RuleSet
from service.webhooks import outbox

log = get_logger(__name__)


# What an event came to, bound for the request's log line once committed (a batch unbinds them per event).
EVENT_LOG_FIELDS = ("event_id", "event_type", "awards", "held_out", "replay")

RETRYABLE_SQLSTATES = {"40P01", "40001"}  # deadlock detected, serialization failure
ATTEMPTS = 3


def refuse_if_archived(event: EventIn, retention_days: int) -> None:
    """An event older than the retention cannot be recorded: its month may be archived already, its id gone
    from ``event_ids``, so a retry of it would be counted again."""
    if retention_days and event.occurred_at < dt.datetime.now(dt.UTC) - dt.timedelta(days=retention_days):
        raise _too_old(event, f"is older than the retention of {retention_days} days (DELIGHT_RETENTION_DAYS)")


def _too_old(event: EventIn, why: str) -> ValidationError:
    return ValidationError(f"event {event.event_id!r} is too old to record", errors=[FieldError("occurred_at", why)])


async def record_event_retrying(
    engine: AsyncEngine, rule_set: RuleSet, event: EventIn, retention_days: int = 0
) -> tuple[EventResult, bool]:
    """``record_event`` in its own transaction, retried when PostgreSQL breaks a lock cycle.

    Two events drawing the same counters in different orders can deadlock;
    PostgreSQL aborts one of them, which is safe to run again from the start.

    The chance draws come first, before anything is read: they depend on the
    event alone. An event that wins none (and is not a return) can be given
    nothing, so storing it is the whole of its work, one statement, which
    commits by itself, without ``BEGIN`` and ``COMMIT`` around it.
    """
    refuse_if_archived(event, retention_days)
    started = time.perf_counter()
    won = won_draws(rule_set, event)
    drawing = time.perf_counter() - started
    alone = not won and event.type != "return"
    for attempt in range(1, ATTEMPTS + 1):
        try:
            async with pg.pooled(engine) if alone else pg.transaction(engine) as conn:
                result, is_new, held_out = await record_event(conn, rule_set, event, won, drawing)
        except asyncpg.CheckViolationError as exc:
            if not (exc.constraint_name or "").endswith("_archived"):
                raise
            # its month was archived by a process that keeps a shorter retention than this one
            raise _too_old(event, "falls in a month already archived (DELIGHT_RETENTION_DAYS)") from None
        except asyncpg.PostgresError as exc:
            sqlstate = exc.sqlstate
            if sqlstate not in RETRYABLE_SQLSTATES or attempt == ATTEMPTS:
                raise
            log.warning("event_retried", event_id=event.event_id, sqlstate=sqlstate, attempt=attempt)
            continue
        # Counted, and told to the request's log line (a batch writes a line per event), once committed.
        if is_new:
            metrics.EVENTS.labels(event.type).inc()
            for award in result.awards:
                metrics.AWARDS.labels(award.campaign, award.kind).inc()
            outcome = {"awards": len(result.awards), "held_out": held_out}
        else:
            outcome = {"replay": True}
        structlog.contextvars.bind_contextvars(event_id=event.event_id, event_type=event.type, **outcome)
        return result, is_new
    raise AssertionError("unreachable")  # pragma: no cover


def won_draws(rule_set: RuleSet, event: EventIn) -> list[tuple[Rule, float | None]]:
    """``engine.drawn`` for an event as received, given what ``build_facts`` would give it."""
    key = (event.type, event.channel or "", event.name or "")
    return drawn(rule_set, event.event_id, key, event.occurred_at.astimezone(rule_set.zone))


def content_hash(event: EventIn) -> bytes:
    """A hash of what the event says, independent of key order and whitespace."""
    return hashlib.sha256(msgspec.json.encode(event, order="sorted")).digest()


async def record_event(
    conn: pg.Connection,
    rule_set: RuleSet,
    event: EventIn,
    won: list[tuple[Rule, float | None]],
    drawing: float,
) -> tuple[EventResult, bool, int]:
    """Store one event and its consequences; returns the result, whether the event was new and how many
    awards the holdout kept back.

    ``won`` is ``engine.drawn`` for this event, worked out in ``drawing`` seconds.
    """
    # One instant, one spelling: 11:15+01:00 and 10:15Z are the same event.
    event = msgspec.structs.replace(event, occurred_at=event.occurred_at.astimezone(dt.UTC))
    digest = content_hash(event)
    order = event.order
    attributes = msgspec.to_builtins(event.customer) if event.customer else {}
    profile = await events_repo.record(
        conn,
        {
            "event_id": event.event_id,
            "content_hash": digest,
            "type": event.type,
            "customer_id": event.customer_id,
            "occurred_at": event.occurred_at,
            "channel": event.channel,
            "store_id": event.store_id,
            "name": event.name,
            "order_id": order.order_id if order else None,
            "amount": money(order.total) if order else None,
            "rule_set_version": rule_set.version,
            "payload": msgspec.to_builtins(event),
        },
        delta_for(event, attributes),
    )
    if profile is None:
        stored_digest, rows = await events_repo.stored(conn, event.event_id)
        if stored_digest == ERASED_HASH:  # whatever it says now: neither its awards nor a conflict tell whose it was
            return EventResult(event_id=event.event_id, duplicate=True, awards=[]), False, 0
        if stored_digest != digest:
            raise EventConflictError(
                f"event {event.event_id!r} was already received with different content; "
                "a new event needs a new event_id"
            )
        awards = [award_from_row(r) for r in rows]
        return EventResult(event_id=event.event_id, duplicate=True, awards=awards), False, 0

    if event.type == "return" and order is not None:
        await reverse_order(
            conn,
            customer_id=event.customer_id,
            order_id=order.order_id,
            event_id=event.event_id,
            occurred_at=event.occurred_at,
            webhooks=rule_set.settings.webhooks,
            refund=money(order.total),
        )
    if not won:  # no rule drew this event: nothing to evaluate, plan or write
        metrics.RULE_EVALUATION.observe(drawing)
        return EventResult(event_id=event.event_id, duplicate=False, awards=[]), True, 0
    event_data = msgspec.to_builtins(event, builtin_types=(dt.datetime, dt.date))
    facts = build_facts(event_data, profile, rule_set.zone)
    started = time.perf_counter()
    awarding = engine.awarding(rule_set, facts, won)
    metrics.RULE_EVALUATION.observe(drawing + time.perf_counter() - started)
    if not awarding:  # most events: nothing to plan, draw or write
        return EventResult(event_id=event.event_id, duplicate=False, awards=[]), True, 0
    history = [LogEntry.from_json(e) for e in profile["award_log"]]
    plan = controls.plan(rule_set, facts, awarding, history)
    if plan.needs_counters:  # drawn in PostgreSQL, by the statement that stores what they give
        accepted = None
    else:
        accepted = controls.accept(plan, take=_unlimited, room=_unlimited, give_back=_nothing)
        if not accepted:
            return EventResult(event_id=event.event_id, duplicate=False, awards=[]), True, 0
    # Every candidate's rows, tagged with its position: the statement keeps those of the candidates accepted.
    candidates = list(enumerate(plan.candidates))
    treated = {p: c.outcome.decision for p, c in candidates if c.group == "treatment" and c.outcome.decision}
    offered = {p: _award(d, event, rule_set.version) for p, d in treated.items()}
    at = int(event.occurred_at.timestamp())
    history.sort(key=lambda e: e.at)  # as ``log_after`` would: the new entries go after every one not later
    positions = await awards_repo.issue(
        conn,
        event_id=event.event_id,
        customer_id=event.customer_id,
        order_id=order.order_id if order else None,
        issued_at=event.occurred_at,
        version=rule_set.version,
        plan=None if accepted is not None else controls.reserve_payload(plan, event.event_id),
        accepted=accepted,
        awards=[{**_award_row(offered[p], d), "candidate": p} for p, d in treated.items()],
        exposures=[
            {
                "candidate": p,
                "campaign": c.campaign,
                "rule_id": c.outcome.rule_id,
                "group": c.group,
                "award_id": offered[p].award_id if p in offered else None,
                "holdout": rule_set.by_name[c.campaign].holdout,
                "variant": c.outcome.decision.variant if c.outcome.decision else None,
                "variant_drawn": c.drawn if c.outcome.decision and c.drawn != c.outcome.decision.variant else None,
                **({"programme_held": True} if c.programme else {}),
            }
            for p, c in candidates
        ],
        log=(
            [e.to_json() for e in history if e.at <= at],
            [
                {
                    "candidate": p,
                    "entry": LogEntry(at, c.campaign, c.outcome.rule_id, event.type == "interaction").to_json(),
                }
                for p, c in candidates
            ],
            [e.to_json() for e in history if e.at > at],
        ),
        outbox=[
            {**message, "candidate": p}
            for p, award in offered.items()
            for message in outbox.messages(rule_set.settings.webhooks, "award.issued", [award], event.occurred_at)
        ],
    )
    given = [offered[p] for p in positions if p in offered]
    if given and order is not None and order.order_id in (profile["refunds_ahead"] or {}):
        # A return of this order came first: what it would have taken back from these awards goes now.
        voided = await reverse_order(
            conn,
            customer_id=event.customer_id,
            order_id=order.order_id,
            event_id=event.event_id,
            occurred_at=event.occurred_at,
            webhooks=rule_set.settings.webhooks,
            refund=Decimal(0),
        )
        given = [msgspec.structs.replace(a, status="reversed") if a.award_id in voided else a for a in given]
    return EventResult(event_id=event.event_id, duplicate=False, awards=given), True, len(positions) - len(given)


def _unlimited(_: Take) -> bool:
    return True


def _nothing(_: Take) -> None:
    return None


def _award(decision: Decision, event: EventIn, version: str) -> AwardOut:
    return AwardOut(
        award_id=str(new_award_id()),
        code=new_code(),
        campaign=decision.campaign,
        rule_id=decision.rule_id,
        kind=decision.kind,  # type: ignore[arg-type]
        points=decision.points,
        gift=GiftRef(id=decision.gift_id, name=decision.gift_name or "") if decision.gift_id else None,
        offer=OfferTerms(**decision.offer) if decision.offer else None,
        message=decision.message,
        issued_at=event.occurred_at,
        expires_at=decision.expires_at,
        status="issued",
        rule_set_version=version,
        event_id=event.event_id,
        variant=decision.variant,
    )


def _award_row(award: AwardOut, decision: Decision) -> dict[str, Any]:
    return {
        "award_id": award.award_id,
        "code": award.code,
        "campaign": decision.campaign,
        "rule_id": decision.rule_id,
        "kind": decision.kind,
        "points": decision.points,
        "gift_id": decision.gift_id,
        "gift_name": decision.gift_name,
        "offer": decision.offer,
        "message": decision.message,
        "cost": str(decision.cost),
        "expires_at": decision.expires_at.isoformat() if decision.expires_at else None,
        "variant": decision.variant,
    }
