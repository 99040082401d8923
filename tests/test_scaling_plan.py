"""What the sharding plan (``docs/scaling.md``) needs of the schema and the event path, checked as the code stands.

The plan distributes the customer's tables by ``customer_id`` so that one
event's work lands on one shard. That holds only while every statement the
event path sends concerns the event's own customer and no table outside the
plan. Every statement is caught at the driver, for each kind of event, and
read: which tables it names, whether it names ``customer_id`` and carries the
event's customer among its arguments.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from service.lib.db import Base
from tests.conftest import interaction, purchase, sent_statements

Client = AsyncTestClient[Litestar]

DISTRIBUTED = {"customers", "events", "awards", "exposures", "points_ledger", "first_exposures", "customer_timelines"}
"""Distributed by ``customer_id`` and co-located (docs/scaling.md)."""
REFERENCE = {"rule_sets", "api_keys"}
"""Small, read-mostly: a copy on every node."""
GAINS_CUSTOMER_ID = {"outbox", "event_ids"}
"""Written by the event's statement, so co-located too: the move gives them a ``customer_id`` column."""
REPLAY_LOOKUP = "WHERE i.event_id = :event_id"
"""The one statement that finds its rows by event alone: the replay's lookup, which the move keys by customer too."""

TABLE_NAMED = re.compile(r"\b(?:FROM|JOIN|INTO|UPDATE)\s+(\w+)", re.IGNORECASE)


def tables_of(query: str) -> set[str]:
    return set(TABLE_NAMED.findall(query)) & set(Base.metadata.tables)


async def _statements(client: Client, app: Litestar, headers: dict[str, str], event: dict[str, Any]) -> list[Any]:
    with sent_statements(app) as statements:
        response = await client.post("/v1/events", json=event, headers=headers)
        assert response.status_code in (200, 201), response.text
        await asyncio.sleep(0)  # asyncpg hands each query to its loggers on the next turn of the loop
        return [q for q in statements if q.query.split(None, 1)[0].upper().rstrip(";") not in ("BEGIN", "COMMIT")]


async def test_every_statement_of_the_event_path_concerns_the_events_customer_and_tables_of_the_plan(
    client: Client, keys: dict[str, Any], app: Litestar
) -> None:
    headers = keys["events:write"]
    await client.post("/v1/events", json={}, headers=headers)  # verifies (and caches) the key first
    kinds = {
        "gift with stock": purchase("p-1", "plan-a", 150.0),
        "no award": purchase("p-2", "plan-b", 5.0),
        "points": purchase("p-3", "plan-b", 5.0),  # the third purchase earns points
        "interaction no rule reads": interaction("i-1", "plan-c", name="store_visit"),
        "return": {**purchase("r-1", "plan-a", 150.0), "type": "return", "order": purchase("p-1", "plan-a")["order"]},
        "replay": purchase("p-2", "plan-b", 5.0),
    }
    await client.post("/v1/events", json=purchase("p-0", "plan-b", 5.0), headers=headers)
    seen: dict[str, set[str]] = {}
    looked_up = False
    for kind, event in kinds.items():
        for statement in await _statements(client, app, headers, event):
            query = statement.query
            tables = tables_of(query)
            seen.setdefault(kind, set()).update(tables)
            assert tables <= DISTRIBUTED | REFERENCE | GAINS_CUSTOMER_ID, (kind, tables, query)
            assert "counters" not in tables  # drawn through delight_reserve alone (docs/scaling.md)
            if not tables & DISTRIBUTED:
                continue
            if REPLAY_LOOKUP in " ".join(query.split()).replace("$1", ":event_id"):
                assert kind == "replay", query
                looked_up = True
                continue
            assert "customer_id" in query, (kind, query)
            assert event["customer_id"] in statement.args, (kind, query, statement.args)
    assert looked_up
    assert all(seen[kind] & DISTRIBUTED for kind in kinds)
    assert seen["gift with stock"] >= {"events", "customers", "awards", "exposures"}
    assert "points_ledger" in seen["points"]


async def test_every_table_the_plan_distributes_has_a_customer_id_that_cannot_be_null(engine: AsyncEngine) -> None:
    async with engine.connect() as connection:
        rows = (
            await connection.execute(
                text(
                    "SELECT table_name, is_nullable FROM information_schema.columns "
                    "WHERE table_schema = current_schema() AND column_name = 'customer_id'"
                )
            )
        ).all()
    nullable = {r.table_name: r.is_nullable for r in rows}
    assert {t: nullable.get(t) for t in DISTRIBUTED} == dict.fromkeys(DISTRIBUTED, "NO")
    assert GAINS_CUSTOMER_ID.isdisjoint(nullable)  # the plan's list of what the move adds stays true
