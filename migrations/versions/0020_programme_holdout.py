"""The programme-wide holdout: exposures say when it, not a campaign's holdout, kept an award back.

``exposures.programme_held`` is true for a customer whom ``programme_holdout``
(``settings.yaml``) keeps from every campaign, ``NULL`` otherwise (no space
taken on the rows of a shop without one). The projection keeps a programme row
per customer in ``first_exposures`` (campaign and rule ``*``): their first
exposure to any campaign, in the programme's group, with the cost of every
award after it; the programme-held customers' exposures stay out of the
campaigns' own rows. It is marked unbuilt, so that the first projector to run
(or ``delight reports rebuild``) builds it again with those rows.

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0020"
down_revision: str | None = "0019"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("exposures", sa.Column("programme_held", sa.Boolean(), nullable=True))
    op.execute(
        "UPDATE projection_state SET snapshot = NULL, complete_at = NULL, target = NULL, target_at = NULL, "
        "cursor = NULL WHERE name = 'uplift'"
    )


def downgrade() -> None:
    op.execute("DELETE FROM first_exposures WHERE campaign = '*'")
    op.drop_column("exposures", "programme_held")
