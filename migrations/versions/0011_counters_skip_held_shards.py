"""A counter draw takes a shard no other event holds, instead of queueing for its home shard.

``delight_take`` drew every limited counter from the event's home shard
(one of 16, from its id) and, when another event in flight held that row,
waited for it to commit. Gift stock and campaign budgets are drawn by many
events, each holding its shard from the draw to its commit, so two events in
flight at once can share a home shard of the same counter; the longer
transactions hold their shards (a slower database, a network between it and
the service), the more often the second one waits. The draw now first locks
the home shard or, failing that, the first shard after it that has room and
that no one holds (``SKIP LOCKED``); only when every shard with room is held
does it fall back to waiting as before. Each shard's slice of the cap is
kept exactly as before.

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-24
"""

import importlib.util
from collections.abc import Sequence
from pathlib import Path

from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_path = Path(__file__).with_name("0002_surprise_controls.py")
_spec = importlib.util.spec_from_file_location("delight_migration_0002", _path)
assert _spec is not None
assert _spec.loader is not None
_controls = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_controls)
TAKE_0002: str = _controls.TAKE

DECLARED = "    row record;\nBEGIN\n"
FREE_SHARD = """    row record;
    free integer;
BEGIN
    -- Any shard with room that no event in flight holds, the home shard first: events drawing the same
    -- counter at the same moment take different rows rather than queue for one. In a sub-transaction:
    -- a row that another event filled since this statement began is locked before it is found full,
    -- and when no shard is taken here such locks are let go, so that this take waits below holding
    -- no row it did not draw from.
    BEGIN
        SELECT shard INTO free FROM counters
        WHERE key = p_key AND shard = p_home
          AND (p_cap_n IS NULL OR n + 1 <= delight_shard_cap(p_cap_n, shard))
          AND (p_cap_cents IS NULL OR cents + p_cents <= delight_shard_cap(p_cap_cents, shard))
        FOR UPDATE SKIP LOCKED;
        IF NOT FOUND THEN
            SELECT shard INTO free FROM counters
            WHERE key = p_key AND shard <> p_home
              AND (p_cap_n IS NULL OR n + 1 <= delight_shard_cap(p_cap_n, shard))
              AND (p_cap_cents IS NULL OR cents + p_cents <= delight_shard_cap(p_cap_cents, shard))
            ORDER BY (shard - p_home + 16) % 16
            LIMIT 1
            FOR UPDATE SKIP LOCKED;
        END IF;
        IF FOUND THEN
            UPDATE counters SET n = n + 1, cents = cents + p_cents WHERE key = p_key AND shard = free;
            RETURN true;
        END IF;
        RAISE EXCEPTION 'no free shard with room' USING ERRCODE = 'DL003';
    EXCEPTION WHEN SQLSTATE 'DL003' THEN
        NULL;
    END;
"""
assert DECLARED in TAKE_0002, "0002's delight_take no longer reads as expected"
TAKE = TAKE_0002.replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION").replace(DECLARED, FREE_SHARD)


def upgrade() -> None:
    op.execute(TAKE)


def downgrade() -> None:
    op.execute(TAKE_0002.replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION"))
