"""Delivering outbox messages: at least once, signed, with exponential back-off.

Each run claims due messages with ``FOR UPDATE SKIP LOCKED`` and leases them
for a minute (replicas share the work without sending one message twice at
once, and no transaction is open while receivers answer), POSTs them, each
within ``TIMEOUT`` seconds in all, and records the outcome: delivered, or the
attempt count, status and error with the next attempt 1, 2, 4 … seconds
later, at most ``MAX_BACKOFF`` — so a receiver that was down for an hour has
everything within minutes of coming back.

A request carries ``X-Delight-Id`` (the message id, the same on every retry:
deduplicate on it), ``X-Delight-Event``, ``X-Delight-Timestamp`` and
``X-Delight-Signature: v1=<hex>``, the HMAC-SHA256 of ``"<timestamp>." + body``
with the subscriber's secret. Receivers should refuse stale timestamps.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import hmac
import os
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

import httpx
import msgspec
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.lib.db import DATABASE_ERRORS, transaction
from service.lib.logging import get_logger
from service.lib.tasks import stop_if_cancelled
from service.rules.ruleset import RuleSet
from service.rules.spec import WebhookSpec
from service.webhooks import destinations

log = get_logger(__name__)

MAX_BACKOFF = 300
TIMEOUT = 5.0
"""Seconds one delivery may take in all, connecting and the receiver's answer included."""
LEASE = dt.timedelta(seconds=60)
BATCH = 50

# Claimed messages are leased, not locked: the claim commits at once, so no transaction waits on a receiver. A
# message whose sender died mid-way is claimed again when its lease runs out (delivered at least once).
CLAIM = text(
    """
    UPDATE outbox o SET next_attempt_at = :lease_until
    FROM (
        SELECT message_id, subscription FROM outbox
        WHERE delivered_at IS NULL AND next_attempt_at <= :now
        ORDER BY created_at
        LIMIT :limit
        FOR UPDATE SKIP LOCKED
    ) AS due
    WHERE o.message_id = due.message_id AND o.subscription = due.subscription
    RETURNING o.message_id, o.subscription, o.type, o.payload, o.attempts
    """
)
RECORD = text(
    """
    UPDATE outbox SET attempts = attempts + 1, delivered_at = :delivered_at, next_attempt_at = :next_attempt_at,
                      last_status = :status, last_error = :error
    WHERE message_id = :message_id AND subscription = :subscription
    """
)


def sign(secret: str, timestamp: int, body: bytes) -> str:
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"v1={digest}"


def backoff(attempts: int) -> dt.timedelta:
    """The wait after the ``attempts``-th failed attempt."""
    return dt.timedelta(seconds=min(2 ** max(attempts - 1, 0), MAX_BACKOFF))


async def _send(
    client: httpx.AsyncClient,
    row: Any,
    hooks: Mapping[str, WebhookSpec],
    env: Mapping[str, str],
    allow: list[destinations.Network],
    now: dt.datetime,
) -> tuple[int | None, str | None]:
    hook = hooks.get(row.subscription)
    if hook is None:
        return None, "the subscription is no longer in settings.yaml"
    secret = env.get(hook.secret_env)
    if not secret:
        return None, f"environment variable {hook.secret_env} (the signing secret) is not set"
    body = msgspec.json.encode(row.payload)
    timestamp = int(now.timestamp())
    headers = {
        "Content-Type": "application/json",
        "X-Delight-Id": str(row.message_id),
        "X-Delight-Event": row.type,
        "X-Delight-Timestamp": str(timestamp),
        "X-Delight-Signature": sign(secret, timestamp, body),
    }
    try:
        target, host = await destinations.resolve(hook.url, allow)
    except destinations.Refused as exc:
        return None, f"refused: {exc}"
    headers["Host"] = host if urlsplit(hook.url).port is None else f"{host}:{urlsplit(hook.url).port}"
    extensions = {"sni_hostname": host} if target.startswith("https:") else {}
    try:
        # A deadline for the whole delivery (httpx's own timeouts start again with every byte a receiver sends),
        # and only the status is read: whatever body a receiver sends back is dropped unread with the connection.
        async with asyncio.timeout(TIMEOUT):
            request = client.build_request(
                "POST", target, content=body, headers=headers, timeout=TIMEOUT, extensions=extensions
            )
            async with contextlib.aclosing(await client.send(request, stream=True)) as response:
                status = response.status_code
    except TimeoutError:
        return None, f"no answer within {TIMEOUT:g} s"
    except httpx.HTTPError as exc:
        return None, f"{type(exc).__name__}: {exc}"[:500]
    if 200 <= status < 300:
        return status, None
    return status, f"the receiver answered {status}"


async def deliver_due(
    sessions: async_sessionmaker[AsyncSession],
    webhooks: list[WebhookSpec],
    client: httpx.AsyncClient,
    *,
    now: dt.datetime | None = None,
    env: Mapping[str, str] | None = None,
) -> int:
    """Send what is due once; returns how many messages were delivered."""
    now = now or dt.datetime.now(dt.UTC)
    env = os.environ if env is None else env
    hooks = {w.id: w for w in webhooks}
    async with transaction(sessions) as session:
        rows = (await session.execute(CLAIM, {"now": now, "lease_until": now + LEASE, "limit": BATCH})).all()
    if not rows:
        return 0
    try:
        allow = destinations.allowed_networks(env)
    except ValueError:
        allow = []  # refused at start-up already (``Settings.from_env``); nothing internal is allowed meanwhile
    outcomes = await asyncio.gather(*(_send(client, row, hooks, env, allow, now) for row in rows))
    records = []
    for row, (status, error) in zip(rows, outcomes, strict=True):
        delivered = error is None
        records.append(
            {
                "message_id": row.message_id,
                "subscription": row.subscription,
                "delivered_at": now if delivered else None,
                "next_attempt_at": now if delivered else now + backoff(row.attempts + 1),
                "status": status,
                "error": error,
            }
        )
    async with transaction(sessions) as session:
        await session.execute(RECORD, records)
    delivered_count = sum(1 for r in records if r["delivered_at"] is not None)
    if delivered_count < len(records):
        log.warning("webhooks_failed", failed=len(records) - delivered_count, delivered=delivered_count)
    return delivered_count


async def run_delivery(
    sessions: async_sessionmaker[AsyncSession], current: Callable[[], RuleSet], every: float = 1.0
) -> None:
    """Deliver due messages every ``every`` seconds, inside the service."""
    async with httpx.AsyncClient() as client:
        while True:
            stop_if_cancelled()  # a cancellation some library swallowed still ends the loop
            await asyncio.sleep(every)
            webhooks = current().settings.webhooks
            if not webhooks:
                continue
            try:
                while await deliver_due(sessions, webhooks, client) >= BATCH:
                    pass
            except DATABASE_ERRORS as exc:
                stop_if_cancelled()
                log.warning("webhook_delivery_failed", error=type(exc).__name__)
