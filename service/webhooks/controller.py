"""``GET /v1/webhooks``: every subscriber's delivery state, for an operator."""

from __future__ import annotations

import datetime as dt

from litestar import Controller, get
from litestar.di import NamedDependency
from msgspec import Struct
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from service.keys.guards import requires
from service.keys.scopes import RULES_ADMIN
from service.lib.openapi import API_KEY, problem_responses
from service.rules.ruleset import RuleSet

STATE = text(
    """
    SELECT subscription,
           count(*) FILTER (WHERE delivered_at IS NOT NULL) AS delivered,
           count(*) FILTER (WHERE delivered_at IS NULL) AS pending,
           count(*) FILTER (WHERE delivered_at IS NULL AND attempts > 0) AS failing,
           min(created_at) FILTER (WHERE delivered_at IS NULL) AS oldest_pending_at,
           (array_agg(last_error ORDER BY next_attempt_at DESC) FILTER (WHERE delivered_at IS NULL AND attempts > 0))[1]
               AS last_error
    FROM outbox GROUP BY subscription
    """
)


class SubscriptionState(Struct):
    id: str
    url: str | None
    events: list[str]
    delivered: int
    pending: int
    failing: int
    oldest_pending_at: dt.datetime | None
    last_error: str | None


class WebhooksOut(Struct):
    subscriptions: list[SubscriptionState]


class WebhooksController(Controller):
    path = "/v1/webhooks"
    tags = ["webhooks"]
    security = [API_KEY]
    guards = [requires(RULES_ADMIN)]

    @get(
        "/",
        operation_id="getWebhooks",
        summary="Webhook subscribers and their delivery state",
        responses=problem_responses(401, 403, 503),
    )
    async def state(self, rule_set: NamedDependency[RuleSet], db_session: NamedDependency[AsyncSession]) -> WebhooksOut:
        rows = {row.subscription: row for row in (await db_session.execute(STATE)).all()}
        hooks = {w.id: w for w in rule_set.settings.webhooks}
        out = []
        for name in sorted(set(rows) | set(hooks)):
            row, hook = rows.get(name), hooks.get(name)
            out.append(
                SubscriptionState(
                    id=name,
                    url=hook.url if hook else None,
                    events=list(hook.events) if hook else [],
                    delivered=row.delivered if row else 0,
                    pending=row.pending if row else 0,
                    failing=row.failing if row else 0,
                    oldest_pending_at=row.oldest_pending_at if row else None,
                    last_error=row.last_error if row else None,
                )
            )
        return WebhooksOut(subscriptions=out)
