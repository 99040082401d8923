"""The migrations build the schema the models describe.

A model changed without a migration, or a migration without its model, shows
up here as a difference Alembic's autogenerate would find. The few tables and
indexes that live in migrations only are listed, each with the reason.
"""

from __future__ import annotations

import re
from typing import Any

import asyncpg
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.ext.asyncio import AsyncEngine

from service.lib.db import asyncpg_connect_args
from service.models import Base  # every model, registered on the shared metadata
from tests.conftest import scratch_database

# (operation, table or index name): why the models do not describe it.
IN_MIGRATIONS_ONLY = {
    ("remove_table", "audit_log"): "written and read with SQL only (service/audit/repository.py)",
    ("remove_index", "ix_audit_log_at"): "the audit log's index (migration 0008)",
}
# The monthly and default partitions of events, exposures and points_ledger (migration 0022): made by the jobs,
# each named after its table.
PARTITION = re.compile(r"^(events|exposures|points_ledger)_(default|\d{4}_\d{2})$")


def not_a_partition(name: str | None, kind: str, parents: Any) -> bool:
    table = name if kind == "table" else parents.get("table_name")
    return not (table and PARTITION.match(table))


def describe(difference: Any) -> list[tuple[str, str]]:
    """``(operation, name)`` for each change Alembic found; column changes come as lists of their own."""
    if isinstance(difference, list):
        return [found for change in difference for found in describe(change)]
    operation, subject = difference[0], difference[1]
    if operation.startswith("modify_"):  # (op, schema, table, column, ...)
        return [(operation, f"{difference[2]}.{difference[3]}")]
    return [(operation, str(getattr(subject, "name", subject)))]


async def test_the_migrated_schema_is_the_models_schema(engine: AsyncEngine) -> None:
    async with engine.connect() as connection:
        differences = await connection.run_sync(
            lambda sync: compare_metadata(
                MigrationContext.configure(sync, opts={"include_name": not_a_partition}), Base.metadata
            )
        )
    found = {change for difference in differences for change in describe(difference)}
    assert found - IN_MIGRATIONS_ONLY.keys() == set(), "models and migrations disagree"
    assert IN_MIGRATIONS_ONLY.keys() - found == set(), "now described by a model: take it off the list"


async def test_analyze_skips_the_columns_no_query_filters_by(engine: AsyncEngine) -> None:
    """Whole events, profile counters and timeline arrays are read and written whole, never in a condition:
    ANALYZE spends most of its time on them otherwise (migrations 0014, 0015 and 0019)."""
    async with engine.connect() as connection:
        rows = await connection.exec_driver_sql(
            """
            SELECT c.relname, a.attname FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
            WHERE c.relname IN ('events', 'customers', 'first_exposures', 'customer_timelines') AND a.attnum > 0
              AND NOT a.attisdropped AND a.attstattarget = 0
            """
        )
        skipped = {(table, column) for table, column in rows}
    assert skipped == {
        ("events", "payload"),
        ("customers", "category_spend"),
        ("customers", "interaction_counts"),
        ("customers", "attributes"),
        ("customers", "award_log"),
        ("first_exposures", "cost_s"),
        ("first_exposures", "cost_cents"),
        ("customer_timelines", "at"),
        ("customer_timelines", "cum"),
        ("customer_timelines", "ret_at"),
        ("customer_timelines", "ret_cum"),
    }


async def test_a_customer_loaded_in_bulk_is_updated_on_its_own_page(server_urls: tuple[str, str]) -> None:
    """Every event rewrites its customer's row: the pages keep room for the new version (migration 0023), so that
    it goes in beside the old one, even on a table loaded full in one go."""
    async with scratch_database(server_urls[0], "delight_pages") as url:
        conn = await asyncpg.connect(**asyncpg_connect_args(url))
        try:
            await conn.execute(
                """
                INSERT INTO customers (customer_id, attributes)
                SELECT 'c-' || g, jsonb_build_object('note', repeat('x', 900)) FROM generate_series(1, 200) AS g
                """
            )
            block = "SELECT (ctid::text::point)[0] FROM customers WHERE customer_id = $1"
            moved = []
            for customer in ("c-1", "c-50", "c-100"):  # on full pages: the last one is not
                before = await conn.fetchval(block, customer)
                await conn.execute(
                    "UPDATE customers SET purchase_count = purchase_count + 1, last_event_at = now() "
                    "WHERE customer_id = $1",
                    customer,
                )
                moved.append(await conn.fetchval(block, customer) != before)
        finally:
            await conn.close()
    assert moved == [False, False, False]
