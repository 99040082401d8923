"""Alembic environment: runs migrations over asyncpg, one migrator at a time.

A PostgreSQL advisory lock serialises migrators, so several replicas starting
together apply each migration exactly once.
"""

import asyncio

from alembic import context
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from service.lib.logging import get_logger
from service.models import metadata

log = get_logger("migrations")

MIGRATION_LOCK_ID = 0x64656C69  # "deli"

config = context.config
target_metadata = metadata


def _run(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata, compare_type=True)
    # One transaction for the lock and every migration: a failure leaves nothing behind.
    with context.begin_transaction():
        connection.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": MIGRATION_LOCK_ID})
        migrations = context.get_context()
        before = migrations.get_current_heads()
        context.run_migrations()
        after = migrations.get_current_heads()
    if after != before:
        log.info("database_migrated", revision_from=",".join(before) or None, revision_to=",".join(after))


async def _run_async() -> None:
    engine = create_async_engine(config.get_main_option("sqlalchemy.url") or "")
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run)
    finally:
        await engine.dispose()


if context.is_offline_mode():
    context.configure(url=config.get_main_option("sqlalchemy.url"), target_metadata=target_metadata)
    with context.begin_transaction():
        context.run_migrations()
else:
    asyncio.run(_run_async())
