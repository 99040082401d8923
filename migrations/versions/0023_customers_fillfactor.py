"""Customers' pages keep room for a new version of their rows.

Every event rewrites its customer's row (the profile's counts), and an event
that awards rewrites it again (the balance and the surprise log). A new version
that fits on the row's own page is a heap-only update: no index entry, and no
other page written. Packed full, as a table loaded in bulk is, the first update
of each row went to another page and put a new entry in the primary key: on a
year of history (200,000 customers), 30% of updates, and a quarter of the
customers' pages written whole to the WAL after each checkpoint. With 15% of
each page free, a row's first update stays on its page; the second of an
awarding event still may not, until the first's old version is pruned away.

The setting applies to the pages written from now on; ``VACUUM FULL customers``
repacks the existing ones (it locks the table while it runs).

Revision ID: 0023
Revises: 0022
Create Date: 2026-12-08
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0023"
down_revision: str | None = "0022"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("ALTER TABLE customers SET (fillfactor = 85)")


def downgrade() -> None:
    op.execute("ALTER TABLE customers RESET (fillfactor)")
