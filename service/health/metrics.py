"""``GET /metrics``: the process metrics of ``service.lib.metrics`` plus what the database knows."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Response, get
from litestar.di import NamedDependency
from prometheus_client import CONTENT_TYPE_LATEST
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.lib.db import DATABASE_ERRORS
from service.lib.metrics import registry_text
from service.projection.freshness import freshness
from service.rules.ruleset import RuleSet

BUDGETS = text(
    """
    SELECT key, sum(n) AS n, sum(cents) AS cents FROM counters
    WHERE key LIKE 'budget:%' OR key LIKE 'stock:%' GROUP BY key
    """
)
UP = "# HELP delight_database_up Whether PostgreSQL answered this scrape\n# TYPE delight_database_up gauge\n"
OUTBOX = text(
    """
    SELECT count(*) AS pending, coalesce(extract(epoch FROM now() - min(created_at)), 0) AS oldest
    FROM outbox WHERE delivered_at IS NULL
    """
)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


async def _database_text(session: AsyncSession, rule_set: RuleSet) -> str:
    used = {r.key: r for r in (await session.execute(BUDGETS)).all()}
    lines = [
        "# HELP delight_budget_remaining What a campaign budget or a gift's stock has left, in force now",
        "# TYPE delight_budget_remaining gauge",
    ]
    for campaign in rule_set.campaigns:
        budget = campaign.budget
        row = used.get(f"budget:{campaign.name}")
        n, cents = (int(row.n), int(row.cents)) if row else (0, 0)
        if budget is not None and budget.awards is not None:
            lines.append(
                f'delight_budget_remaining{{campaign="{_escape(campaign.name)}",unit="awards"}} {budget.awards - n}'
            )
        if budget is not None and budget.cost is not None:
            left = float(budget.cost) - cents / 100
            lines.append(f'delight_budget_remaining{{campaign="{_escape(campaign.name)}",unit="cost"}} {left:.2f}')
    for gift in rule_set.gifts.values():
        if gift.stock is not None:
            row = used.get(f"stock:{gift.id}")
            left = gift.stock - (int(row.n) if row else 0)
            lines.append(f'delight_budget_remaining{{gift="{_escape(gift.id)}",unit="stock"}} {left}')
    outbox = (await session.execute(OUTBOX)).one()
    lines += [
        "# HELP delight_outbox_pending Webhook messages not yet delivered",
        "# TYPE delight_outbox_pending gauge",
        f"delight_outbox_pending {int(outbox.pending)}",
        "# HELP delight_outbox_oldest_seconds Age of the oldest undelivered webhook message",
        "# TYPE delight_outbox_oldest_seconds gauge",
        f"delight_outbox_oldest_seconds {float(outbox.oldest):.1f}",
    ]
    projection = await freshness(session)
    if projection.lag_seconds is not None:
        lines += [
            "# HELP delight_projection_lag_seconds How long ago the uplift projection last held every committed event",
            "# TYPE delight_projection_lag_seconds gauge",
            f"delight_projection_lag_seconds {projection.lag_seconds:.3f}",
        ]
    lines += [
        "# HELP delight_projection_events Events applied to the uplift projection",
        "# TYPE delight_projection_events gauge",
        f"delight_projection_events {projection.events}",
    ]
    return "\n".join(lines) + "\n"


class MetricsController(Controller):
    path = "/metrics"
    tags = ["health"]

    @get(
        "/",
        operation_id="getMetrics",
        summary="Prometheus metrics: requests, latency, events, awards, rule evaluation, budgets, webhook backlog",
        media_type=CONTENT_TYPE_LATEST,
        include_in_schema=True,
    )
    async def metrics(
        self, sessionmaker: NamedDependency[async_sessionmaker[AsyncSession]], rule_set: NamedDependency[RuleSet]
    ) -> Any:
        body = registry_text().decode()
        try:
            async with sessionmaker() as session:
                body += await _database_text(session, rule_set) + UP + "delight_database_up 1\n"
        except DATABASE_ERRORS:
            body += UP + "delight_database_up 0\n"
        return Response(body, media_type=CONTENT_TYPE_LATEST)
