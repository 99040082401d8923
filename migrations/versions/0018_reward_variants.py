"""Reward variants: a rule may give one of several awards, and the awards and exposures say which.

``awards.variant`` and ``exposures.variant`` name the variant given (or, for a
held-out customer, the one they would have been given); ``exposures.variant_drawn``
the one drawn for the customer when it was out of stock and the next was
given instead (``NULL`` otherwise). All three are ``NULL`` for a rule with one
award; ``first_exposures`` keeps the two of each customer's first exposure to
a rule, for the report's per-variant results (existing rows have none: no
rule had variants before). ``delight_reserve`` learns chains: the candidates of one rule's
variants, tried in order while their counters are what fails, at most one
given (``service.controls.plan.accept`` is the same walk in Python).

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

RESERVE = """
CREATE OR REPLACE FUNCTION delight_reserve(p jsonb) RETURNS integer[] LANGUAGE plpgsql AS $$
DECLARE
    accepted integer[] := '{}';
    fatigue integer := (p->>'fatigue')::integer;
    slots jsonb := coalesce(p->'slots', '{}'::jsonb);
    closed integer[] := '{}';  -- chains given a variant, or stopped by a limit
    candidate jsonb;
    position bigint;
    take jsonb;
    campaign text;
    chain integer;
    ok boolean;
BEGIN
    FOR candidate, position IN
        SELECT value, ordinality - 1 FROM jsonb_array_elements(p->'candidates') WITH ORDINALITY
    LOOP
        campaign := candidate->>'campaign';
        chain := (candidate->>'chain')::integer;
        IF chain IS NOT NULL THEN
            CONTINUE WHEN chain = ANY (closed);
            closed := closed || chain;  -- opened again below when its counters are what failed
        END IF;
        CONTINUE WHEN fatigue IS NOT NULL AND fatigue <= 0;
        CONTINUE WHEN slots ? campaign AND (slots->>campaign)::integer <= 0;
        ok := true;
        IF candidate->>'group' = 'control' THEN
            FOR take IN SELECT value FROM jsonb_array_elements(candidate->'takes') LOOP
                IF NOT delight_room(take->>'key', (take->>'cap_n')::bigint, (take->>'cap_cents')::bigint,
                                    (take->>'cents')::bigint) THEN
                    ok := false;
                    EXIT;
                END IF;
            END LOOP;
        ELSIF jsonb_array_length(candidate->'takes') = 1 THEN
            take := candidate->'takes'->0;
            ok := delight_take(take->>'key', (take->>'home')::integer, (take->>'cap_n')::bigint,
                               (take->>'cap_cents')::bigint, (take->>'cents')::bigint);
        ELSIF jsonb_array_length(candidate->'takes') > 1 THEN
            BEGIN
                FOR take IN SELECT value FROM jsonb_array_elements(candidate->'takes') LOOP
                    IF NOT delight_take(take->>'key', (take->>'home')::integer, (take->>'cap_n')::bigint,
                                        (take->>'cap_cents')::bigint, (take->>'cents')::bigint) THEN
                        RAISE EXCEPTION 'counter spent' USING ERRCODE = 'DL001';
                    END IF;
                END LOOP;
            EXCEPTION WHEN SQLSTATE 'DL001' THEN
                ok := false;
            END;
        END IF;
        IF ok THEN
            accepted := accepted || position::integer;
            fatigue := fatigue - 1;
            IF slots ? campaign THEN
                slots := jsonb_set(slots, ARRAY[campaign], to_jsonb((slots->>campaign)::integer - 1));
            END IF;
        ELSIF chain IS NOT NULL THEN
            closed := array_remove(closed, chain);  -- the next variant may be in stock
        END IF;
    END LOOP;
    RETURN accepted;
END
$$
"""


def upgrade() -> None:
    op.add_column("awards", sa.Column("variant", sa.String(length=100), nullable=True))
    op.add_column("exposures", sa.Column("variant", sa.String(length=100), nullable=True))
    op.add_column("exposures", sa.Column("variant_drawn", sa.String(length=100), nullable=True))
    op.add_column("first_exposures", sa.Column("variant", sa.String(length=100), nullable=True))
    op.add_column("first_exposures", sa.Column("variant_drawn", sa.String(length=100), nullable=True))
    op.execute(RESERVE)


def downgrade() -> None:
    # delight_reserve stays: a plan without chains is walked as before.
    op.drop_column("first_exposures", "variant_drawn")
    op.drop_column("first_exposures", "variant")
    op.drop_column("exposures", "variant_drawn")
    op.drop_column("exposures", "variant")
    op.drop_column("awards", "variant")
