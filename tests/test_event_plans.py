"""The event path reads its tables by index, even where its plans were made while the tables were empty.

PostgreSQL keeps a generic plan until the next ANALYZE of a table it reads.
Made while a table is analysed and a few pages long (a new deployment, a
table emptied), the cheapest plan is a sequential scan, and it goes on
scanning the whole table on every event as the table grows. Each test here
analyses the emptied tables first, so that is the plan PostgreSQL would make
without the event path's settings; the statements must find their rows by
index all the same.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from service.awards import repository as awards
from service.awards import returns
from service.events import repository as events
from service.lib import pg
from service.webhooks import outbox
from tests.conftest import TABLES_RESET_PER_TEST

STATEMENTS = {
    "record": events.RECORD,
    "stored": events.STORED,
    "issue": awards.ISSUE,
    "order state": returns.ORDER_STATE,
    "apply a return": returns.APPLY,
    "outbox": outbox.INSERT,
}
ANALYZE_EMPTY = f"ANALYZE {', '.join(TABLES_RESET_PER_TEST)}"


def scans(plan: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(node type, table) for every node of a JSON plan that reads a table."""
    if "Relation Name" in plan:
        yield plan["Node Type"], plan["Relation Name"]
    for child in plan.get("Plans", []):
        yield from scans(child)


@pytest.mark.parametrize("name", list(STATEMENTS))
async def test_each_statement_of_the_event_path_has_a_generic_plan_without_sequential_scans(
    engine: AsyncEngine, name: str
) -> None:
    statement = STATEMENTS[name]
    async with pg.transaction(engine) as conn:
        await conn.execute(ANALYZE_EMPTY)
        await conn.execute(f"PREPARE planned AS {statement.text}")
        try:
            nulls = ", ".join(["NULL"] * len(statement.names))
            [plan] = await conn.fetchval(f"EXPLAIN (FORMAT JSON) EXECUTE planned({nulls})")  # decoded by the pool
        finally:
            await conn.execute("DEALLOCATE planned")
    read = list(scans(plan["Plan"]))
    assert read, "the plan reads no table: the check below would prove nothing"
    assert [(node, table) for node, table in read if node == "Seq Scan"] == []
