"""``GET /metrics``: the process metrics of ``service.lib.metrics`` plus what the database knows."""

from __future__ import annotations

import datetime as dt
from typing import Any

from litestar import Controller, Request, Response, get
from litestar.di import NamedDependency
from prometheus_client import CONTENT_TYPE_LATEST
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.events.history import PARTITIONED, first_of_month, stray_window
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

# Rows a default partition holds that the jobs will give a month (a late event; a run moves them), counted up
# to a bound so that a scrape stays cheap whatever the jobs left behind.
DEFAULT_ROWS = text(
    " UNION ALL ".join(
        f"SELECT '{table}' AS table_name, (SELECT count(*) FROM (SELECT 1 FROM {table}_default"
        " WHERE occurred_at >= :since AND occurred_at < :until LIMIT 100000) AS d) AS n"
        for table in PARTITIONED
    )
)
# The month partitions each table has, as YYYY_MM.
MONTHS = text(
    """
    SELECT p.relname AS table_name, right(c.relname, 7) AS month
    FROM pg_class p JOIN pg_inherits i ON i.inhparent = p.oid JOIN pg_class c ON c.oid = i.inhrelid
    WHERE p.relname IN ('events', 'exposures', 'points_ledger') AND pg_table_is_visible(p.oid)
      AND c.relname ~ '_[0-9]{4}_[0-9]{2}$'
    """
)


def _months_ahead(months: set[str], now: dt.datetime) -> int:
    """The months made beyond the current one without a gap; -1 when the current month has none."""
    ahead = -1
    while f"{first_of_month(now, ahead + 1):%Y_%m}" in months:
        ahead += 1
    return ahead


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


async def _database_text(session: AsyncSession, rule_set: RuleSet, retention_days: int) -> str:
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
    now = dt.datetime.now(dt.UTC)
    since, until = stray_window(now, retention_days)
    waiting = (await session.execute(DEFAULT_ROWS, {"since": since, "until": until})).all()
    months: dict[str, set[str]] = {table: set() for table in PARTITIONED}
    for table, month in (await session.execute(MONTHS)).tuples():
        months[table].add(month)
    lines += [
        "# HELP delight_history_default_rows Rows in a table's default partition waiting for the jobs to make "
        "their month (counted up to 100000)",
        "# TYPE delight_history_default_rows gauge",
        *(f'delight_history_default_rows{{table="{r.table_name}"}} {r.n}' for r in waiting),
        "# HELP delight_history_months_ahead Month partitions made beyond the current month (the jobs keep 3)",
        "# TYPE delight_history_months_ahead gauge",
        *(f'delight_history_months_ahead{{table="{t}"}} {_months_ahead(months[t], now)}' for t in PARTITIONED),
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
        self,
        request: Request[Any, Any, Any],
        sessionmaker: NamedDependency[async_sessionmaker[AsyncSession]],
        rule_set: NamedDependency[RuleSet],
    ) -> Any:
        body = registry_text().decode()
        retention_days = request.app.state.settings.app.retention_days
        try:
            async with sessionmaker() as session:
                body += await _database_text(session, rule_set, retention_days) + UP + "delight_database_up 1\n"
        except DATABASE_ERRORS:
            body += UP + "delight_database_up 0\n"
        return Response(body, media_type=CONTENT_TYPE_LATEST)
