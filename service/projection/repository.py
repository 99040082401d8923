"""SQL for the uplift projection: which events are new, and how a set of them is folded in.

A batch reads what committed since the snapshot the projection last applied
(``projection_state.snapshot``) up to a newer one (``target``): the events
whose transaction is visible in ``target`` and was not in the old snapshot.
Those are the transactions the old snapshot listed as in progress, and those
at or past its ``xmax``, so both are looked up by ``ix_events_xid`` rather than
scanned from the oldest transaction still open. A large batch is applied in
pages of whole transactions, ``cursor`` being the last one applied.

The fold statements take the page's event ids (``:ids``) and are the same for
a page and for a build from scratch (``FOR_ALL``): a build reads every event
in one snapshot, where a page reads only its own, so the few reads of other
rows (the awards that make up a new first exposure's cost) keep to the events
already applied or in this page (``APPLIED``).
"""

from __future__ import annotations

from service.lib.pg import Sql

STATE = Sql(
    """
    SELECT snapshot, complete_at, target, target_at, cursor, as_of, events
    FROM projection_state WHERE name = 'uplift' FOR UPDATE
    """
)
# statement_timestamp() is set before the statement's snapshot is taken: every transaction committed before
# it is visible in the snapshot.
NOW = Sql("SELECT pg_current_snapshot() AS snapshot, statement_timestamp() AS at")

# A page: the next transactions, in order, then their events. The events are read by the transactions' list
# (``THEIR_EVENTS``), never joined to this query: joined, the planner estimates the rows per transaction from
# the column's statistics, and where many events share one (a bulk load written in one transaction) it took every
# partition to match and scanned them all, for every page (0.4-0.9 s a page on a year's history). Given the list,
# and a plan made for it (``apply.PAGE_SETTINGS``: never a generic plan), it looks the values up in the
# statistics and finds them rare. It still probes every month's ``xid`` index: a page costs a little more with
# each month kept.
NEXT_TRANSACTIONS = Sql(
    """
    SELECT DISTINCT xid
    FROM (
        SELECT xid FROM events WHERE xid = ANY(CAST(:in_progress AS xid8[]))
        UNION ALL
        SELECT xid FROM events WHERE xid >= :from_xid AND xid < :to_xid
    ) AS candidates
    WHERE xid > :after AND pg_visible_in_snapshot(xid, CAST(:target AS pg_snapshot))
    ORDER BY xid
    LIMIT :limit
    """
)
THEIR_EVENTS = Sql("SELECT event_id, xid, occurred_at FROM events WHERE xid = ANY(CAST(:xids AS xid8[]))")

SAVE = Sql(
    """
    UPDATE projection_state SET
        snapshot = CAST(:snapshot AS pg_snapshot), complete_at = :complete_at,
        target = CAST(:target AS pg_snapshot), target_at = :target_at, cursor = CAST(:cursor AS xid8),
        as_of = greatest(as_of, :as_of), events = events + :events, updated_at = now()
    WHERE name = 'uplift'
    """
)
RESET = Sql(
    """
    INSERT INTO projection_state AS p (name, snapshot, complete_at, as_of, events)
    VALUES ('uplift', CAST(:snapshot AS pg_snapshot), :complete_at, (SELECT max(occurred_at) FROM events),
            (SELECT count(*) FROM events))
    ON CONFLICT (name) DO UPDATE SET
        snapshot = EXCLUDED.snapshot, complete_at = EXCLUDED.complete_at, target = NULL, target_at = NULL,
        cursor = NULL, as_of = EXCLUDED.as_of, events = EXCLUDED.events, updated_at = now()
    """
)
# DELETE, not TRUNCATE: reports go on reading the old rows while a rebuild runs, where TRUNCATE would hold them up
# until it commits.
FORGET = Sql("WITH firsts AS (DELETE FROM first_exposures) DELETE FROM customer_timelines")

# The page's rows, found by id; the bounds of its events' times keep the scans of the partitioned events and
# exposures to the months the page has (pages are planned for their own values: ``apply.PAGE_SETTINGS``). An
# award carries its event's time as ``issued_at``.
PAGE_EVENTS = "event_id = ANY(CAST(:ids AS text[])) AND occurred_at BETWEEN :first AND :last"
PAGE_AWARDS = "event_id = ANY(CAST(:ids AS text[])) AND issued_at BETWEEN :first AND :last"
# The same bounds on a join's events (``e``): a restriction the planner estimates apart from the join. Joined on
# ``occurred_at`` too, the join would be estimated at one row (the two equalities taken as independent), and a
# rebuild's nested loops over millions of rows planned on that estimate never finish.
PAGE_JOINED = "e.occurred_at BETWEEN :first AND :last"
FOR_ALL = "true"
# An award counts towards a cost timeline once its event is applied: applied before, or in this batch up to
# this page. A build reads one snapshot whole and passes no snapshot here.
APPLIED = """(CAST(:applied AS pg_snapshot) IS NULL
              OR pg_visible_in_snapshot(ae.xid, CAST(:applied AS pg_snapshot))
              OR (ae.xid <= CAST(:bound AS xid8) AND pg_visible_in_snapshot(ae.xid, CAST(:target AS pg_snapshot))))"""


def timelines(events: str, kind: str = "purchase") -> Sql:
    """Fold the purchases (or, with ``kind`` return, the returns) among ``events`` into their customers'
    timelines: one row per customer."""
    at, cum = ("at", "cum") if kind == "purchase" else ("ret_at", "ret_cum")
    folded = "array_agg(occurred_at ORDER BY occurred_at, event_id), array_agg(running ORDER BY occurred_at, event_id)"
    empty = "'{}', '{}'"
    columns = f"{folded}, {empty}" if kind == "purchase" else f"{empty}, {folded}"
    return Sql(
        f"""
        INSERT INTO customer_timelines AS t (customer_id, at, cum, ret_at, ret_cum)
        SELECT customer_id, {columns}
        FROM (
            SELECT customer_id, occurred_at, event_id,
                   sum(round(amount * 100)::bigint) OVER (
                       PARTITION BY customer_id ORDER BY occurred_at, event_id
                   )::bigint AS running
            FROM events
            WHERE {events} AND type = '{kind}' AND amount IS NOT NULL
        ) AS bought
        GROUP BY customer_id
        ON CONFLICT (customer_id) DO UPDATE SET ({at}, {cum}) = (
            SELECT m.merged_at, m.merged_cum
            FROM delight_timeline_merge(t.{at}, t.{cum}, EXCLUDED.{at}, EXCLUDED.{cum}) AS m
        )
        """
    )


def first_exposures(events: str, awards: str, bounds: str) -> Sql:
    """Record the first exposures among ``events``: per rule and per campaign (rule ``*``), the earliest; and per
    customer, their first exposure to the programme (campaign and rule ``*``), in the programme holdout's group.

    The exposures the programme holdout kept back count for the programme only: a campaign's rows compare its own
    treated and held-out customers among those the programme surprises.

    A key seen before keeps its row unless this exposure is earlier (a late
    event), which then takes its place whole, its cost timeline worked out
    from the awards applied so far. Ties go to the smaller event id, so that
    the order events arrive in does not matter.

    A key never seen before has no award applied before this page (an award
    comes with its exposure, which would have recorded the key), so its cost
    timeline is made from the page's own awards, whatever the customer's
    history; only a late first exposure taking an older one's place reads the
    customer's awards.
    """
    return Sql(
        f"""
        WITH exposed AS (
            SELECT campaign, rule_id, customer_id, occurred_at AS t0, event_id, "group", holdout, variant,
                   variant_drawn, programme_held
            FROM exposures WHERE {events}
        ), keyed AS (
            SELECT campaign, rule_id, customer_id, t0, event_id, "group", holdout, variant, variant_drawn
            FROM exposed WHERE programme_held IS NULL
            UNION ALL
            SELECT campaign, '*', customer_id, t0, event_id, min("group"), min(holdout), NULL, NULL
            FROM exposed WHERE programme_held IS NULL GROUP BY campaign, customer_id, t0, event_id
            UNION ALL
            SELECT '*', '*', customer_id, t0, event_id,
                   CASE WHEN bool_or(programme_held) THEN 'control' ELSE 'treatment' END, NULL, NULL, NULL
            FROM exposed GROUP BY customer_id, t0, event_id
        ), firsts AS (
            SELECT DISTINCT ON (campaign, rule_id, customer_id) *
            FROM keyed ORDER BY campaign, rule_id, customer_id, t0, event_id
        ), candidates AS MATERIALIZED (
            -- new keys, and earlier first exposures than those recorded (which they replace)
            SELECT k.*, o.t0 IS NOT NULL AS replacing
            FROM firsts k
            LEFT JOIN first_exposures o
                   ON o.campaign = k.campaign AND o.rule_id = k.rule_id AND o.customer_id = k.customer_id
            WHERE o.t0 IS NULL OR (o.t0, o.event_id) > (k.t0, k.event_id)
        ), given AS MATERIALIZED (
            SELECT campaign, rule_id, customer_id, issued_at, round(cost * 100)::bigint AS cents, award_id
            FROM awards WHERE {awards} AND cost > 0
        ), given_keyed AS (
            SELECT * FROM given
            UNION ALL
            SELECT campaign, '*', customer_id, issued_at, cents, award_id FROM given
            UNION ALL
            SELECT '*', '*', customer_id, issued_at, cents, award_id FROM given
        ), new_costs AS MATERIALIZED (  -- computed once, whatever a misestimate makes of the join below
            SELECT campaign, rule_id, customer_id, array_agg(o ORDER BY o, award_id) AS s,
                   array_agg(running ORDER BY o, award_id) AS cents
            FROM (
                SELECT c.campaign, c.rule_id, c.customer_id, x.o, g.award_id,
                       sum(g.cents) OVER (
                           PARTITION BY c.campaign, c.rule_id, c.customer_id ORDER BY x.o, g.award_id
                       )::bigint AS running
                FROM candidates c
                JOIN given_keyed g USING (campaign, rule_id, customer_id)
                CROSS JOIN LATERAL (SELECT delight_offset(g.issued_at - c.t0) AS o) AS x
                WHERE NOT c.replacing AND g.issued_at >= c.t0 AND x.o <= 31536000
            ) AS within
            GROUP BY campaign, rule_id, customer_id
        )
        INSERT INTO first_exposures AS f (
            campaign, rule_id, customer_id, event_id, t0, "group", holdout, channel, store_id, cost_s, cost_cents,
            variant, variant_drawn
        )
        SELECT c.campaign, c.rule_id, c.customer_id, c.event_id, c.t0, c."group", c.holdout, e.channel, e.store_id,
               coalesce(CASE WHEN c.replacing THEN recomputed.s ELSE n.s END, '{{}}'),
               coalesce(CASE WHEN c.replacing THEN recomputed.cents ELSE n.cents END, '{{}}'),
               c.variant, c.variant_drawn
        FROM candidates c
        JOIN events e ON e.event_id = c.event_id AND {bounds}
        LEFT JOIN new_costs n ON n.campaign = c.campaign AND n.rule_id = c.rule_id AND n.customer_id = c.customer_id
        LEFT JOIN LATERAL (
            SELECT array_agg(o ORDER BY o, award_id) AS s, array_agg(running ORDER BY o, award_id) AS cents
            FROM (
                SELECT o, award_id, sum(v) OVER (ORDER BY o, award_id)::bigint AS running
                FROM (
                    SELECT delight_offset(a.issued_at - c.t0) AS o, round(a.cost * 100)::bigint AS v, a.award_id
                    FROM awards a JOIN events ae ON ae.event_id = a.event_id AND ae.occurred_at = a.issued_at
                    WHERE c.replacing AND a.customer_id = c.customer_id
                      AND (c.campaign = '*' OR a.campaign = c.campaign)
                      AND (c.rule_id = '*' OR a.rule_id = c.rule_id) AND a.cost > 0
                      AND a.issued_at >= c.t0 AND a.issued_at < c.t0 + interval '366 days'
                      AND {APPLIED}
                ) AS given
                WHERE o <= 31536000
            ) AS running
        ) AS recomputed ON c.replacing
        ON CONFLICT (campaign, rule_id, customer_id) DO UPDATE SET
            event_id = EXCLUDED.event_id, t0 = EXCLUDED.t0, "group" = EXCLUDED."group",
            holdout = EXCLUDED.holdout, channel = EXCLUDED.channel, store_id = EXCLUDED.store_id,
            cost_s = EXCLUDED.cost_s, cost_cents = EXCLUDED.cost_cents, variant = EXCLUDED.variant,
            variant_drawn = EXCLUDED.variant_drawn
        """
    )


# The page's awards join the cost timelines of first exposures recorded before this page (a row recorded by
# this page, its event among :ids, counted them already), within a year of t0.
COSTS = Sql(
    f"""
    WITH given AS (
        SELECT campaign, rule_id, customer_id, issued_at, round(cost * 100)::bigint AS cents, award_id
        FROM awards WHERE {PAGE_AWARDS} AND cost > 0
    ), keyed AS (
        SELECT * FROM given
        UNION ALL
        SELECT campaign, '*', customer_id, issued_at, cents, award_id FROM given
        UNION ALL
        SELECT '*', '*', customer_id, issued_at, cents, award_id FROM given
    ), added AS (
        SELECT campaign, rule_id, customer_id, array_agg(o ORDER BY o, award_id) AS s,
               array_agg(running ORDER BY o, award_id) AS cents
        FROM (
            SELECT f.campaign, f.rule_id, f.customer_id, x.o, k.award_id,
                   sum(k.cents) OVER (
                       PARTITION BY f.campaign, f.rule_id, f.customer_id ORDER BY x.o, k.award_id
                   )::bigint AS running
            FROM keyed k
            JOIN first_exposures f USING (campaign, rule_id, customer_id)
            CROSS JOIN LATERAL (SELECT delight_offset(k.issued_at - f.t0) AS o) AS x
            WHERE f.event_id <> ALL(CAST(:ids AS text[])) AND k.issued_at >= f.t0 AND x.o <= 31536000
        ) AS within
        GROUP BY campaign, rule_id, customer_id
    )
    UPDATE first_exposures f SET (cost_s, cost_cents) = (
        SELECT m.merged_at, m.merged_cum FROM delight_timeline_merge(f.cost_s, f.cost_cents, added.s, added.cents) AS m
    )
    FROM added
    WHERE f.campaign = added.campaign AND f.rule_id = added.rule_id AND f.customer_id = added.customer_id
    """
)

PAGE_TIMELINES = timelines(PAGE_EVENTS)
PAGE_RETURNS = timelines(PAGE_EVENTS, "return")
PAGE_FIRST_EXPOSURES = first_exposures(PAGE_EVENTS, PAGE_AWARDS, PAGE_JOINED)
ALL_TIMELINES = timelines(FOR_ALL)
ALL_RETURNS = timelines(FOR_ALL, "return")
ALL_FIRST_EXPOSURES = first_exposures(FOR_ALL, FOR_ALL, FOR_ALL)
