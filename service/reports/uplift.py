"""The uplift report: did the surprises bring customers back, measured against the holdout?

The population is every customer first exposed to a rule (or, as rule ``*``,
to the campaign) in the period, in the group the holdout put them in. A
customer *repeats* when they make at least one purchase in ``(t0, t0 + N
days]`` after their first exposure ``t0``; revenue is the total of those
purchases (less the refunds made in that window, with ``net_returns``), and is
also given capped at a percentile of the rule's customers (``cap_percentile``). Only customers whose window has closed
(``t0 + N days`` at or before the latest event seen) are counted; the others
are reported as ``open``. The sample-ratio check uses every first-exposed
customer of the period, closed or not, against the holdout in force when each
was exposed. ``service.reports.stats`` holds the formulas.

The numbers come from the uplift projection (``service.projection``), built
from committed events outside the till's transaction: ``first_exposures``, one
narrow row per customer and rule with its award cost timeline, joined to
``customer_timelines``, each customer's purchases with the running total at
each. A window's revenue is then two binary searches (``width_bucket``) and two
subscripts per row, so the report is one pass over the campaign's rows whatever
the window. The report says how complete the projection was
(``complete_until``) beside the latest event time it saw (``as_of``).
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from typing import Any, Literal

from msgspec import Struct, field
from sqlalchemy import TextClause, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from service.projection.freshness import Freshness, freshness
from service.reports import cells, stats
from service.reports.words import plural

MAX_WINDOW_DAYS = 365  # the timelines hold a year either side of t0
MIN_CUSTOMERS = 30  # per group, with closed windows, before any interval is printed
MIN_OUTCOMES = 5  # repeaters and non-repeaters per group: the normal approximation's n·p >= 5
SRM_ALPHA = 0.001
CAMPAIGN_ROW = "*"


# One pass over the campaign's first exposures (``ROWS``), each joined to its customer's purchases, grouped by rule and
# group and reward variant (``NULL`` for a rule with one award), or by a segment for a breakdown. Revenue ``y`` is what
# the customer spent in (t0, t0 + N days], pre-exposure spend ``x`` what they spent in [t0 - N days, t0): running totals
# read at the right places of the timeline (``width_bucket`` counts the purchases at or before an instant). A customer
# counts (``closed``) once their window has closed; ``day`` is the day of their first purchase after t0 (1..N) when it
# falls in the window. The regr_* aggregates share one transition state, so ``y`` and ``x`` are worked out once per row
# and give every sum the statistics need; the days of first repeat come back as an array per group, for the repeat
# curve. Grouping by plain columns lets PostgreSQL aggregate in parallel workers (an expression over t0 in the GROUP BY
# made it expect as many groups as rows, and aggregate everything in one process); the join is left to the planner,
# which hashes the customers' timelines for a large campaign and looks them up by key for a small one. The window is an
# interval of seconds, never of calendar days, which would move by an hour across a change to summer time.
ROWS = """
        SELECT f.rule_id, f."group" AS grp, {key} AS key{customer}, f.variant_drawn IS NOT NULL AS fallback,
               f.holdout, f.t0, f.t0 <= :cutoff AS closed,
               CASE WHEN t.at[b.upto_t0 + 1] <= b.window_end
                    THEN ceil(date_part('epoch', t.at[b.upto_t0 + 1] - f.t0) / 86400)::integer END AS day,
               (coalesce(t.cum[width_bucket(b.window_end, t.at)], 0) - coalesce(t.cum[b.upto_t0], 0)
                - CASE WHEN :net_returns
                       THEN coalesce(t.ret_cum[width_bucket(b.window_end, t.ret_at)], 0)
                            - coalesce(t.ret_cum[width_bucket(f.t0, t.ret_at)], 0)
                       ELSE 0 END)
                   / 100.0::float8 AS y,
               (coalesce(t.cum[width_bucket(f.t0 - interval '1 microsecond', t.at)], 0)
                - coalesce(t.cum[width_bucket(b.window_start - interval '1 microsecond', t.at)], 0))
                   / 100.0::float8 AS x,
               coalesce(f.cost_cents[width_bucket(:window_s, f.cost_s)], 0) AS cost
        FROM first_exposures f
        LEFT JOIN customer_timelines t ON t.customer_id = f.customer_id
        CROSS JOIN LATERAL (
            SELECT width_bucket(f.t0, t.at) AS upto_t0,
                   f.t0 + CAST(:window_s AS float8) * interval '1 second' AS window_end,
                   f.t0 - CAST(:window_s AS float8) * interval '1 second' AS window_start
        ) AS b
        WHERE {where}
          AND f.t0 >= coalesce(CAST(:since AS timestamptz), '-infinity')
          AND f.t0 < coalesce(CAST(:until AS timestamptz), 'infinity')
"""
# A cheap look at the revenue of a sample of the rows (1% of the table's pages, the same ones every time), for where
# each rule's cap may lie: the pass below then collects every customer above that, and the cap and the capped sums
# are worked out exactly from them (``_cap``), in the same pass as everything else.
SAMPLE = """
    SELECT {cap_by} AS k, count(*) AS n, percentile_cont(CAST(:below AS float8)) WITHIN GROUP (ORDER BY s.y) AS y
    FROM ({rows}) AS s
    WHERE s.closed
    GROUP BY 1
"""
# Customers whose revenue is above their rule's ``tail_from`` (all of them where it is not given) come back as
# (revenue, pre-exposure spend) pairs, ``tail``; ``tail_min``, the lowest of those, spares most rows the lookup.
SUMS = """
    SELECT s.rule_id, s.grp, {final_key} AS key, {cap_by} AS cap_key, count(*) AS exposed,
           coalesce(sum(coalesce(s.holdout, :holdout)), 0) AS expected_control,
           count(*) FILTER (WHERE s.closed AND s.fallback) AS fallbacks,
           count(*) FILTER (WHERE s.closed) AS n, min(s.t0) AS first_t0, max(s.t0) AS last_t0,
           coalesce(regr_avgy(s.y, s.x) FILTER (WHERE s.closed), 0) AS avg_y,
           coalesce(regr_avgx(s.y, s.x) FILTER (WHERE s.closed), 0) AS avg_x,
           coalesce(regr_syy(s.y, s.x) FILTER (WHERE s.closed), 0) AS syy,
           coalesce(regr_sxx(s.y, s.x) FILTER (WHERE s.closed), 0) AS sxx,
           coalesce(regr_sxy(s.y, s.x) FILTER (WHERE s.closed), 0) AS sxy,
           array_agg(ARRAY[s.y, s.x]) FILTER (
               WHERE s.closed AND s.y > CAST(:tail_min AS float8)
                 AND s.y > coalesce(CAST(CAST(:tail_from AS jsonb) ->> {cap_by} AS float8), '-infinity')
           ) AS tail,
           coalesce(sum(s.cost) FILTER (WHERE s.closed), 0) AS cost,
           array_agg(s.day) FILTER (WHERE s.closed AND s.day IS NOT NULL) AS days
    FROM ({rows}) AS s{join}
    GROUP BY 1, 2, 3, 4
"""
SAMPLED = "first_exposures f TABLESAMPLE SYSTEM (1) REPEATABLE (0)"
# The sample's few rows look their customers' timelines up by key, rather than hash the whole table.
SAMPLE_BY_KEY = text("SET LOCAL enable_hashjoin = off")
ANY_JOIN = text("SET LOCAL enable_hashjoin = on")
MIN_SAMPLE = 200  # sampled customers of a rule below which all of its customers come back instead


def _query(
    key: str = "f.variant",
    join: str = "",
    final_key: str = "s.key",
    where: str = "f.campaign = :campaign",
    cap_by: str = "s.rule_id",
) -> Pass:
    """The report's pass over the first exposures ``where`` says, its groups keyed by ``key`` (the reward variant;
    or a segment for a breakdown, worked out per row from ``f`` and ``t``, or through ``join``, which sees
    ``s.customer_id``, as ``final_key``), revenue capped per ``cap_by``; and the sample that goes before it."""
    customer = ", f.customer_id" if join else ""
    rows = ROWS.format(key=key, customer=customer, where=where)
    sampled = rows.replace("FROM first_exposures f", f"FROM {SAMPLED}")
    return Pass(
        sample=text(SAMPLE.format(rows=sampled, cap_by=cap_by)),
        sums=text(SUMS.format(rows=rows, cap_by=cap_by, final_key=final_key, join=join)),
    )


@dataclass(frozen=True, slots=True)
class Pass:
    sample: TextClause
    sums: TextClause


QUERY = _query()

Dimension = Literal["channel", "store", "new_returning", "spend_tier", "segment"]
SPEND_TIERS = (100.0, 500.0)
SPEND_TIERS_RULE = "1 to 10 ascending amounts above 0, comma-separated, like 100,500"
# What the customer had spent before their first exposure, in cents: their timeline's running total just before t0.
PRE_EXPOSURE_CENTS = "coalesce(t.cum[width_bucket(f.t0 - interval '1 microsecond', t.at)], 0)"
# A customer's ``segments`` attribute as it stands now, one row per segment ("(none)" for a customer with none).
SEGMENTS_JOIN = """
    LEFT JOIN customers cu ON cu.customer_id = s.customer_id
    CROSS JOIN LATERAL (
        SELECT DISTINCT e.name FROM jsonb_array_elements_text(
            CASE WHEN jsonb_typeof(cu.attributes -> 'segments') = 'array' THEN cu.attributes -> 'segments' END
        ) AS e(name)
        UNION ALL
        SELECT '(none)'
        WHERE CASE WHEN jsonb_typeof(cu.attributes -> 'segments') = 'array'
                   THEN jsonb_array_length(cu.attributes -> 'segments') = 0 ELSE true END
    ) AS seg"""
SEGMENTS_WARNING = (
    "segments chosen after looking at the results are hypotheses: a segment that differs here is one to test again "
    "in a campaign of its own, not a finding"
)


def parse_spend_tiers(text: str) -> tuple[float, ...]:
    """``100,500`` as the tiers' bounds; ``ValueError`` unless they are ``SPEND_TIERS_RULE``."""
    try:
        bounds = tuple(float(part) for part in text.split(","))
    except ValueError:
        bounds = ()
    if not 1 <= len(bounds) <= 10 or any(not 0 < b < 1e9 for b in bounds) or list(bounds) != sorted(set(bounds)):
        raise ValueError(f"spend tiers are {SPEND_TIERS_RULE}")
    return bounds


def _tiers(bounds: Sequence[float]) -> str:
    """Pre-exposure spend in tiers, as SQL: none, under the first bound, between each two, the last and over."""
    cases = [f"WHEN {PRE_EXPOSURE_CENTS} = 0 THEN 'none'"]
    low: float | None = None
    for bound in bounds:
        label = f"under {bound:g}" if low is None else f"{low:g} to {bound:g}"
        cases.append(f"WHEN {PRE_EXPOSURE_CENTS} < {round(bound * 100)} THEN '{label}'")
        low = bound
    return f"CASE {' '.join(cases)} ELSE '{low:g} and over' END"


def breakdown_query(by: Dimension, spend_tiers: Sequence[float] = SPEND_TIERS) -> Pass:
    """The report's pass with its groups keyed by a segment of ``by`` instead of the reward variant."""
    if by == "segment":
        return _query("NULL", SEGMENTS_JOIN, "seg.name")
    key = {
        "channel": "coalesce(f.channel, '(none)')",
        "store": "coalesce(f.store_id, '(none)')",
        "new_returning": f"CASE WHEN {PRE_EXPOSURE_CENTS} > 0 THEN 'returning' ELSE 'new' END",
        "spend_tier": _tiers(spend_tiers),
    }[by]
    return _query(key)


# For the report's own transaction: the customers' timelines of a large campaign hashed in memory, not in batches
# spilled to disk.
WORK_MEM = text("SET LOCAL work_mem = '256MB'")
REPEATABLE_READ = text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")


class GroupOutcome(Struct):
    customers: int  # first exposed in the period with a closed window
    repeaters: int
    repeat_rate: float | None
    revenue_per_customer: float | None
    revenue_sd: float | None
    pre_revenue_per_customer: float | None  # spend in the N days before t0 (the CUPED covariate)
    open: int  # first exposed in the period, window not closed yet
    revenue_per_customer_capped: float | None = None
    """Revenue per customer with each customer's revenue capped at the rule's ``revenue_cap``."""


class Uplift(Struct):
    absolute: float
    relative: float | None
    ci95: list[float]
    relative_ci95: list[float] | None
    p_value: float
    p_adjusted: float | None = None
    """For a reward variant: ``p_value`` adjusted for the rule's comparisons (Benjamini-Hochberg)."""


class RevenueUplift(Struct):
    absolute: float
    relative: float | None
    ci95: list[float]
    relative_ci95: list[float] | None
    p_value: float
    df: float | None
    p_adjusted: float | None = None
    """For a reward variant: ``p_value`` adjusted for the rule's comparisons (Benjamini-Hochberg)."""


class CupedUplift(Struct):
    absolute: float
    ci95: list[float]
    p_value: float
    theta: float


class RepeatCurve(Struct):
    treated: list[float]  # share of customers repeated by day 1, 2, ... N after t0
    control: list[float]


class PowerPlan(Struct):
    """What this rule's traffic and holdout can show: the smallest uplift in repeat rate (absolute) detected with
    80% power by a two-sided test at 5%, after enrolling customers for 30 or 90 days at the rate seen so far."""

    baseline_repeat_rate: float | None
    """The holdout's repeat rate (everyone's while the holdout is too small to say)."""
    customers_per_day: float | None
    """First-exposed customers per day, from the first to the last first exposure of the period."""
    holdout: float | None
    detectable_uplift_30d: float | None
    detectable_uplift_90d: float | None
    target_uplift: float
    """The uplift asked about (``target_uplift``, default 2 points)."""
    days_for_target: float | None
    """Days of enrolment that detect ``target_uplift`` with 80% power."""


class RuleUplift(Struct):
    rule_id: str  # "*" for the campaign as a whole (each customer's first exposure to any of its rules)
    status: Literal["ok", "insufficient_data", "no_control", "no_treated", "no_customers"]
    notes: list[str]
    treated: GroupOutcome
    control: GroupOutcome
    uplift: Uplift | None
    revenue_uplift: RevenueUplift | None
    revenue_uplift_cuped: CupedUplift | None
    srm_p_value: float | None
    srm_mismatch: bool
    expected_control_share: float | None
    award_cost: float
    incremental_revenue: float | None
    incremental_revenue_ci95: list[float] | None
    return_on_cost: float | None  # (incremental revenue - award cost) / award cost
    repeat_curve: RepeatCurve
    revenue_cap: float | None = None
    """The cap on one customer's revenue in the window: the report's ``cap_percentile`` of the rule's customers with a
    closed window, both groups together (linear interpolation, as numpy's default); ``null`` without customers."""
    revenue_uplift_capped: RevenueUplift | None = None
    """Welch's test on revenue capped at ``revenue_cap``: a few very large baskets move it far less."""
    revenue_uplift_capped_cuped: CupedUplift | None = None
    """CUPED on the capped revenue, adjusted by the pre-exposure spend."""
    variant: str | None = None
    """On a variant's row: the variant, its treated customers against the rule's whole holdout."""
    fallbacks: int = 0
    """On a variant's row: treated customers given this variant because the one drawn for them was out of stock."""
    variants: VariantResults | None = None
    """For a rule with reward variants: each against the holdout, and against each other."""
    plan: PowerPlan | None = None
    """How large an effect this rule's traffic and holdout can detect, and how long a given one takes."""
    segment: str | None = None
    """On a segment's row of a breakdown: the segment, its treated customers against its held-out ones."""
    breakdown: Breakdown | None = None
    """With ``by``: the rule (or campaign) in each segment, and which segments' uplift differs from the rest's."""


class SegmentDifference(Struct):
    """Whether a segment's uplift in repeat rate differs from that of the rule's other customers."""

    segment: str
    uplift_difference: float
    """The segment's uplift minus the rest's (absolute)."""
    ci95: list[float]
    p_value: float
    p_adjusted: float
    """Benjamini-Hochberg over the breakdown's segments."""
    differs: bool
    """``p_adjusted`` below 0.05."""


class Breakdown(Struct):
    by: str
    segments: list[RuleUplift]
    """Each segment's treated against its held-out customers; ``p_adjusted`` over the segments."""
    differences: list[SegmentDifference]
    """Each segment with enough data inside and outside it, against the rest: a z-test of the two uplifts."""
    warning: str = SEGMENTS_WARNING
    adjustment: str = "Benjamini-Hochberg over the breakdown's segments, one family per measure"


class VariantComparison(Struct):
    """One variant's treated customers against another's."""

    variant: str
    against: str
    repeat_rate_difference: float
    ci95: list[float]
    p_value: float
    p_adjusted: float
    revenue_difference: float
    revenue_ci95: list[float]
    revenue_p_value: float
    revenue_p_adjusted: float


class VariantResults(Struct):
    variants: list[RuleUplift]
    comparisons: list[VariantComparison]
    """Every pair of variants with enough data, the better repeat rate first."""
    winner: str | None
    """The variant whose repeat rate beats every other's with an adjusted p below 0.05; ``null`` otherwise."""
    verdict: str
    adjustment: str = "Benjamini-Hochberg over the rule's comparisons: each variant against the holdout and every pair"


class UpliftReport(Struct):
    campaign: str
    window_days: int
    since: dt.datetime | None = field(name="from")
    until: dt.datetime | None = field(name="to")
    as_of: dt.datetime | None  # the latest event time seen: windows ending after it are still open
    complete_until: dt.datetime | None  # every event committed before this is counted; null: not built yet
    holdout: float | None  # in the rule set now active
    cap_percentile: float
    """The percentile each rule's revenue is capped at for the capped figures (99: the 99th)."""
    returns_netted: bool
    """Whether refunds in the window were taken off revenue (``net_returns``)."""
    currency: str
    """What every amount is in: the shop's ``currency`` from ``settings.yaml`` (ISO 4217)."""
    campaign_total: RuleUplift | None
    rules: list[RuleUplift]
    replica_lag_seconds: float | None = None
    """Read on the reports replica: how long it took to replay what the primary had committed when the report was
    asked for (0: it had already); ``null`` when read on the primary."""
    replica_lag_bytes: int | None = None
    """Read on the reports replica: the WAL it had still to replay then; ``null`` when read on the primary."""


@dataclass
class _Group:
    exposed: int = 0
    moments: stats.Moments | None = None
    repeaters: int = 0
    cost: float = 0.0
    expected_control: float = 0.0
    days: dict[int, int] = dataclass_field(default_factory=dict)  # day of first repeat -> customers
    fallbacks: int = 0
    first_t0: dt.datetime | None = None
    last_t0: dt.datetime | None = None
    capped: stats.Moments | None = None  # the same sums, revenue capped
    cap: float | None = None

    def add(self, other: _Group) -> None:
        """Count ``other``'s customers in too (the variants of a rule make up its groups)."""
        self.exposed += other.exposed
        self.repeaters += other.repeaters
        self.cost += other.cost
        self.expected_control += other.expected_control
        self.fallbacks += other.fallbacks
        for day, n in other.days.items():
            self.days[day] = self.days.get(day, 0) + n
        if other.moments is not None:
            self.moments = other.moments if self.moments is None else self.moments + other.moments
        if other.capped is not None:
            self.capped = other.capped if self.capped is None else self.capped + other.capped
        self.cap = self.cap if other.cap is None else other.cap
        self.first_t0 = min(filter(None, (self.first_t0, other.first_t0)), default=None)
        self.last_t0 = max(filter(None, (self.last_t0, other.last_t0)), default=None)


def _r(value: float | None, digits: int = 6) -> float | None:
    return None if value is None or math.isnan(value) else round(value, digits)


def _pair(pair: tuple[float, float] | None, digits: int = 6) -> list[float] | None:
    return None if pair is None else [round(pair[0], digits), round(pair[1], digits)]


def _outcome(g: _Group) -> GroupOutcome:
    m = g.moments
    n = m.n if m else 0
    return GroupOutcome(
        customers=n,
        repeaters=g.repeaters,
        repeat_rate=_r(g.repeaters / n) if m and n else None,
        revenue_per_customer=_r(m.mean, 4) if m and n else None,
        revenue_sd=_r(math.sqrt(m.variance), 4) if m and n > 1 else None,
        pre_revenue_per_customer=_r(m.sum_x / n, 4) if m and n else None,
        revenue_per_customer_capped=_r(g.capped.mean, 4) if g.capped and g.capped.n else None,
        open=g.exposed - n,
    )


def _curve(g: _Group, days: int) -> list[float]:
    n = g.moments.n if g.moments else 0
    if not n:
        return []
    out, running = [], 0
    for day in range(1, days + 1):
        running += g.days.get(day, 0)
        out.append(round(running / n, 6))
    return out


def _judge(rule_id: str, treated: _Group, control: _Group, days: int, *, variant: str | None = None) -> RuleUplift:
    """A rule (or the campaign) against its holdout; with ``variant``, that variant's treated customers against
    the rule's whole holdout (no sample-ratio check: the split is the rule's)."""
    t, c = treated.moments, control.moments
    nt, nc = (t.n if t else 0), (c.n if c else 0)
    exposed = treated.exposed + control.exposed
    expected_control = treated.expected_control + control.expected_control
    srm = stats.sample_ratio_p(treated.exposed, control.exposed, expected_control) if exposed and not variant else None
    notes: list[str] = []
    status: Literal["ok", "insufficient_data", "no_control", "no_treated", "no_customers"] = "ok"
    if exposed == 0:
        status = "no_customers"
        notes.append("no customer was first exposed in this period")
    elif control.exposed == 0 and expected_control == 0:
        status = "no_control"
        notes.append("the campaign holds nobody out, so there is nothing to compare with")
    elif treated.exposed == 0:
        status = "no_treated"
        notes.append("every exposed customer was held out")
    else:
        for name, n, g in (("treated", nt, treated), ("control", nc, control)):
            if n < MIN_CUSTOMERS:
                notes.append(
                    f"{name}: {n} {plural(n, 'customer')} with a closed window; at least {MIN_CUSTOMERS} are needed"
                )
            elif min(g.repeaters, n - g.repeaters) < MIN_OUTCOMES:
                notes.append(
                    f"{name}: {g.repeaters} of {n} repeated; at least {MIN_OUTCOMES} repeaters and "
                    f"{MIN_OUTCOMES} non-repeaters are needed for a normal-approximation interval"
                )
        if notes:
            status = "insufficient_data"
    open_customers = exposed - nt - nc
    if open_customers:
        whose, windows = ("customer's", "window is") if open_customers == 1 else ("customers'", "windows are")
        notes.append(f"{open_customers} {whose} {days}-day {windows} still open and not counted")
    if srm is not None and srm < SRM_ALPHA:
        notes.append(
            f"sample-ratio mismatch (p = {srm:.2g}): the split differs from the holdout; "
            "exposures may be lost or the assignment broken, so the comparison is not trustworthy"
        )
    uplift = revenue = cuped = None
    capped: RevenueUplift | None = None
    capped_cuped: CupedUplift | None = None
    incremental = incremental_ci = roc = None
    cost = treated.cost
    if status == "ok" and t and c:
        p = stats.proportions(treated.repeaters, nt, control.repeaters, nc)
        uplift = Uplift(
            absolute=round(p.absolute, 6),
            relative=_r(p.relative),
            ci95=_pair(p.ci95) or [],
            relative_ci95=_pair(p.relative_ci95),
            p_value=_r(p.p_value, 8) or 0.0,
        )
        w = stats.welch(t, c)
        revenue = _revenue(w)
        cuped = _cuped(t, c)
        if treated.capped is not None and control.capped is not None:
            capped = _revenue(stats.welch(treated.capped, control.capped))
            capped_cuped = _cuped(treated.capped, control.capped)
        incremental = round(w.absolute * nt, 2)
        incremental_ci = [round(w.ci95[0] * nt, 2), round(w.ci95[1] * nt, 2)]
        roc = round((incremental - cost) / cost, 4) if cost > 0 else None
    return RuleUplift(
        rule_id=rule_id,
        status=status,
        notes=notes,
        treated=_outcome(treated),
        control=_outcome(control),
        uplift=uplift,
        revenue_uplift=revenue,
        revenue_uplift_cuped=cuped,
        srm_p_value=_r(srm, 8),
        srm_mismatch=srm is not None and srm < SRM_ALPHA,
        expected_control_share=_r(expected_control / exposed) if exposed and not variant else None,
        award_cost=round(cost, 2),
        incremental_revenue=incremental,
        incremental_revenue_ci95=incremental_ci,
        return_on_cost=roc,
        repeat_curve=RepeatCurve(treated=_curve(treated, days), control=_curve(control, days)),
        revenue_cap=_r(treated.cap if treated.cap is not None else control.cap, 4),
        revenue_uplift_capped=capped,
        revenue_uplift_capped_cuped=capped_cuped,
        variant=variant,
        fallbacks=treated.fallbacks if variant else 0,
    )


def _revenue(w: stats.Comparison) -> RevenueUplift:
    return RevenueUplift(
        absolute=round(w.absolute, 4),
        relative=_r(w.relative),
        ci95=_pair(w.ci95, 4) or [],
        relative_ci95=_pair(w.relative_ci95),
        p_value=_r(w.p_value, 8) or 0.0,
        df=_r(w.df, 2),
    )


def _cuped(t: stats.Moments, c: stats.Moments) -> CupedUplift | None:
    adjusted = stats.cuped(t, c)
    if adjusted is None:
        return None
    a, theta = adjusted
    return CupedUplift(
        absolute=round(a.absolute, 4),
        ci95=_pair(a.ci95, 4) or [],
        p_value=_r(a.p_value, 8) or 0.0,
        theta=round(theta, 6),
    )


ALPHA = 0.05


def _plan(treated: _Group, control: _Group, target: float) -> PowerPlan:
    """The detectable uplift at 80% power (two-sided, 5%) for 30 and 90 days of enrolment, and the days a
    ``target`` uplift needs, by the normal approximation for two proportions at the baseline rate."""
    exposed = treated.exposed + control.exposed
    expected_control = treated.expected_control + control.expected_control
    h = expected_control / exposed if exposed else None
    nc = control.moments.n if control.moments else 0
    everyone = (treated.moments.n if treated.moments else 0) + nc
    if nc >= MIN_CUSTOMERS:
        p: float | None = control.repeaters / nc
    elif everyone:
        p = (treated.repeaters + control.repeaters) / everyone
    else:
        p = None
    both = _Group()
    both.add(treated)
    both.add(control)
    per_day = stats.per_day(exposed, both.first_t0, both.last_t0)
    mde = stats.enrolment_plan(p, h, per_day)
    days_for_target = None
    if p is not None and h is not None and per_day and mde[30] is not None:
        days_for_target = round(stats.days_to_detect(p, h, per_day, target), 1)
    return PowerPlan(
        baseline_repeat_rate=_r(p),
        customers_per_day=_r(per_day, 2),
        holdout=_r(h),
        detectable_uplift_30d=mde[30],
        detectable_uplift_90d=mde[90],
        target_uplift=target,
        days_for_target=days_for_target,
    )


def _enough(g: _Group) -> bool:
    n = g.moments.n if g.moments else 0
    return n >= MIN_CUSTOMERS and min(g.repeaters, n - g.repeaters) >= MIN_OUTCOMES


def _rate(g: _Group) -> float:
    n = g.moments.n if g.moments else 0
    return g.repeaters / n if n else 0.0


def _variant_results(rule_id: str, treated: dict[str, _Group], control: _Group, days: int) -> VariantResults:
    """Each variant against the rule's holdout, every pair against each other, adjusted together (one family for
    the repeat rate, one for revenue), and a winner only when the adjusted evidence says so."""
    names = sorted(treated)
    rows = [_judge(rule_id, treated[v], control, days, variant=v) for v in names]
    pairs = []
    for i, first in enumerate(names):
        for second in names[i + 1 :]:
            a, b = sorted((first, second), key=lambda v: -_rate(treated[v]))  # the better repeat rate first
            ga, gb = treated[a], treated[b]
            if not (_enough(ga) and _enough(gb)) or ga.moments is None or gb.moments is None:
                continue
            proportions = stats.proportions(ga.repeaters, ga.moments.n, gb.repeaters, gb.moments.n)
            pairs.append((a, b, proportions, stats.welch(ga.moments, gb.moments)))
    judged = [r for r in rows if r.uplift is not None and r.revenue_uplift is not None]
    repeat_p = stats.benjamini_hochberg(
        [r.uplift.p_value for r in judged if r.uplift] + [p.p_value for _, _, p, _ in pairs]
    )
    revenue_p = stats.benjamini_hochberg(
        [r.revenue_uplift.p_value for r in judged if r.revenue_uplift] + [w.p_value for _, _, _, w in pairs]
    )
    for k, r in enumerate(judged):
        if r.uplift is not None and r.revenue_uplift is not None:
            r.uplift.p_adjusted = _r(repeat_p[k], 8)
            r.revenue_uplift.p_adjusted = _r(revenue_p[k], 8)
    comparisons = [
        VariantComparison(
            variant=a,
            against=b,
            repeat_rate_difference=round(p.absolute, 6),
            ci95=_pair(p.ci95) or [],
            p_value=_r(p.p_value, 8) or 0.0,
            p_adjusted=_r(repeat_p[len(judged) + k], 8) or 0.0,
            revenue_difference=round(w.absolute, 4),
            revenue_ci95=_pair(w.ci95, 4) or [],
            revenue_p_value=_r(w.p_value, 8) or 0.0,
            revenue_p_adjusted=_r(revenue_p[len(judged) + k], 8) or 0.0,
        )
        for k, (a, b, p, w) in enumerate(pairs)
    ]
    ready = [v for v in names if _enough(treated[v])]
    winner, verdict = None, ""
    if len(ready) < len(names):
        verdict = (
            f"no winner yet: {', '.join(v for v in names if v not in ready)} "
            f"{'has' if len(names) - len(ready) == 1 else 'have'} too few customers with a closed window"
        )
    else:
        best = max(ready, key=lambda v: _rate(treated[v]))
        beaten = {c.against for c in comparisons if c.variant == best and c.p_adjusted < ALPHA}
        if beaten == set(ready) - {best}:
            winner = best
            verdict = (
                f"{best} brings customers back more often than every other variant (adjusted p < {ALPHA} against each)"
            )
        else:
            verdict = (
                f"no winner: {best} has the highest repeat rate, but not by more than chance explains "
                f"against {', '.join(sorted(set(ready) - {best} - beaten))} once adjusted for "
                f"{len(repeat_p)} {plural(len(repeat_p), 'comparison')}"
            )
    return VariantResults(variants=rows, comparisons=comparisons, winner=winner, verdict=verdict)


def _moments(n: int, my: float, mx: float, syy: float, sxx: float, sxy: float) -> stats.Moments:
    """Back from means and centred sums to plain sums: n, Σy, Σy², Σx, Σx², Σxy."""
    return stats.Moments(
        n=n, sum_y=n * my, sum_y2=syy + n * my * my, sum_x=n * mx, sum_x2=sxx + n * mx * mx, sum_xy=sxy + n * mx * my
    )


async def uplift_report(
    db: AsyncSession | AsyncConnection,
    *,
    campaign: str,
    window_days: int,
    holdout: float | None,
    currency: str,
    rule_ids: Sequence[str] = (),
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    target_uplift: float = 0.02,
    cap_percentile: float = 99.0,
    net_returns: bool = False,
    by: Dimension | None = None,
    spend_tiers: Sequence[float] = SPEND_TIERS,
) -> UpliftReport:
    """The report for one campaign, from the projection as it stands; ``holdout`` and ``rule_ids`` come from the
    active rule set.

    ``db`` must have run nothing in its transaction yet: the report reads the
    projection's state and rows in one snapshot (REPEATABLE READ), so that
    ``as_of`` and the rows agree. A caller that wants every event committed
    before it counted waits first (``freshness.wait_for_commits_before_now``).
    """
    state = await begin_report(db)
    return await read_report(
        db,
        state,
        campaign=campaign,
        window_days=window_days,
        holdout=holdout,
        currency=currency,
        rule_ids=rule_ids,
        since=since,
        until=until,
        target_uplift=target_uplift,
        cap_percentile=cap_percentile,
        net_returns=net_returns,
        by=by,
        spend_tiers=spend_tiers,
    )


async def _read_groups(
    db: AsyncSession | AsyncConnection, query: Pass, params: dict[str, Any], caps: dict[str, float] | None = None
) -> tuple[list[tuple[str, str, str | None, _Group]], dict[str, float]]:
    """The pass's rows as (rule, group, key, its customers' sums), revenue capped at ``caps`` (by rule, or what the
    pass caps by) or, without them, at the ``cap`` percentile of each; and the caps."""
    if caps is None:
        below = max(0.0, params["cap"] - 0.02)
        await db.execute(SAMPLE_BY_KEY)
        sampled = (await db.execute(query.sample, {**params, "below": below})).all()
        await db.execute(ANY_JOIN)
        tail_from = {r.k: r.y for r in sampled if r.n >= MIN_SAMPLE and r.y is not None}
        everyone = len(tail_from) < len(sampled)  # a rule too small to sample: all of its customers come back
    else:
        tail_from, everyone = caps, False
    rows = (await db.execute(query.sums, {**params, **_tail(tail_from, everyone)})).all()
    if caps is None:
        found = _caps(rows, params["cap"])
        if found is None:  # the sample put a cap's neighbours below where the pass looked: look at everyone
            rows = (await db.execute(query.sums, {**params, **_tail({}, True)})).all()
            found = _caps(rows, params["cap"])
            assert found is not None
        caps = found
    out = []
    for row in rows:
        g = _Group(
            exposed=row.exposed,
            expected_control=float(row.expected_control),
            repeaters=len(row.days or ()),
            fallbacks=row.fallbacks,
            first_t0=row.first_t0,
            last_t0=row.last_t0,
        )
        for day in row.days or ():
            g.days[day] = g.days.get(day, 0) + 1
        if row.n:
            if row.grp == "treatment":
                g.cost = float(row.cost) / 100.0
            g.moments = _moments(row.n, row.avg_y, row.avg_x, row.syy, row.sxx, row.sxy)
            g.cap = caps.get(row.cap_key)
            g.capped = _capped(g.moments, row.tail or (), g.cap)
        out.append((row.rule_id, row.grp, row.key, g))
    return out, caps


def _tail(tail_from: dict[str, float], everyone: bool) -> dict[str, Any]:
    """The pass's parameters for collecting the customers above ``tail_from``; for a key not in it, those above
    the lowest of ``tail_from`` (a key the sample missed: ``_caps`` tells if that was not enough), or everyone."""
    lowest = -math.inf if everyone else min(tail_from.values(), default=-math.inf)
    return {"tail_from": json.dumps(tail_from), "tail_min": lowest}


def _caps(rows: Sequence[Any], q: float) -> dict[str, float] | None:
    """Each cap key's ``q`` percentile of revenue (linear interpolation, as ``percentile_cont``), from its
    customers' count and the revenue of those above where the pass looked; ``None`` if those do not reach it."""
    counts: dict[str, int] = {}
    tails: dict[str, list[float]] = {}
    for row in rows:
        counts[row.cap_key] = counts.get(row.cap_key, 0) + row.n
        tails.setdefault(row.cap_key, []).extend(pair[0] for pair in row.tail or ())
    caps = {}
    for key, n in counts.items():
        if not n:
            continue
        values = sorted(tails[key])
        position = q * (n - 1)
        low, high = math.floor(position), math.ceil(position)
        first = n - len(values)  # the rank of the smallest value collected
        if low < first:
            return None
        v_low, v_high = values[low - first], values[high - first]
        caps[key] = v_low + (position - low) * (v_high - v_low)
    return caps


def _capped(m: stats.Moments, tail: Sequence[Sequence[float]], cap: float | None) -> stats.Moments:
    """The sums with every revenue above ``cap`` counted as ``cap`` (pre-exposure spend as it is), from the sums
    and the customers above where the pass looked."""
    if cap is None:
        return m
    sum_y, sum_y2, sum_xy = m.sum_y, m.sum_y2, m.sum_xy
    for y, x in tail:
        if y > cap:
            sum_y -= y - cap
            sum_y2 -= y * y - cap * cap
            sum_xy -= (y - cap) * x
    return stats.Moments(m.n, sum_y, sum_y2, m.sum_x, m.sum_x2, sum_xy)


def _rest(total: _Group, part: _Group) -> tuple[int, int]:
    """Customers with a closed window, and repeaters among them, in ``total`` but not in ``part``."""
    n = (total.moments.n if total.moments else 0) - (part.moments.n if part.moments else 0)
    return n, total.repeaters - part.repeaters


def _breakdown(
    by: str,
    rule_id: str,
    whole: tuple[_Group, _Group],
    parts: tuple[dict[str, _Group], dict[str, _Group]],
    days: int,
) -> Breakdown:
    """Each segment judged on its own, and against the rest of the rule's customers: the difference of the two
    uplifts in repeat rate, with its interval and a z-test (independent groups: a customer in the segment is not
    in the rest), every family of p-values adjusted over the segments."""
    names = sorted(set(parts[0]) | set(parts[1]))
    rows = []
    for name in names:
        row = _judge(rule_id, parts[0].get(name, _Group()), parts[1].get(name, _Group()), days)
        row.segment = name
        rows.append(row)
    judged = [r for r in rows if r.uplift is not None and r.revenue_uplift is not None]
    repeat_p = stats.benjamini_hochberg([r.uplift.p_value for r in judged if r.uplift])
    revenue_p = stats.benjamini_hochberg([r.revenue_uplift.p_value for r in judged if r.revenue_uplift])
    for k, r in enumerate(judged):
        if r.uplift is not None and r.revenue_uplift is not None:
            r.uplift.p_adjusted = _r(repeat_p[k], 8)
            r.revenue_uplift.p_adjusted = _r(revenue_p[k], 8)
    tested = []
    for name in names:
        inside = [parts[g].get(name, _Group()) for g in (0, 1)]
        outside = [_rest(whole[g], inside[g]) for g in (0, 1)]
        counts = [((m.moments.n if m.moments else 0), m.repeaters) for m in inside]
        if not all(n >= MIN_CUSTOMERS and min(r, n - r) >= MIN_OUTCOMES for n, r in counts + outside):
            continue
        (nt, rt), (nc, rc) = counts
        (ot, st), (oc, sc) = outside
        diff, se = stats.difference_of_uplifts((rt, nt, rc, nc), (st, ot, sc, oc))
        tested.append((name, diff, se, 2 * stats.normal_sf(abs(diff) / se) if se > 0 else 1.0))
    adjusted = stats.benjamini_hochberg([p for *_, p in tested])
    differences = [
        SegmentDifference(
            segment=name,
            uplift_difference=round(diff, 6),
            ci95=[round(diff - stats.Z_975 * se, 6), round(diff + stats.Z_975 * se, 6)],
            p_value=_r(p, 8) or 0.0,
            p_adjusted=_r(adjusted[k], 8) or 0.0,
            differs=adjusted[k] < ALPHA,
        )
        for k, (name, diff, se, p) in enumerate(tested)
    ]
    return Breakdown(by=by, segments=rows, differences=differences)


async def begin_report(db: AsyncSession | AsyncConnection) -> Freshness:
    """Start a report's transaction (nothing may have run in it yet): one snapshot for the projection's state and
    rows, and memory to hash a large campaign's timelines in; the projection's state."""
    await db.execute(REPEATABLE_READ)
    state = await freshness(db)
    await db.execute(WORK_MEM)
    return state


async def read_report(
    db: AsyncSession | AsyncConnection,
    state: Freshness,
    *,
    campaign: str,
    window_days: int,
    holdout: float | None,
    currency: str,
    rule_ids: Sequence[str] = (),
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    target_uplift: float = 0.02,
    cap_percentile: float = 99.0,
    net_returns: bool = False,
    by: Dimension | None = None,
    spend_tiers: Sequence[float] = SPEND_TIERS,
) -> UpliftReport:
    """One campaign's report (``*``: the programme's) in the transaction ``begin_report`` started."""
    as_of = state.as_of
    params: dict[str, Any] = {
        "campaign": campaign,
        "window_s": window_days * 86400,
        "holdout": holdout or 0.0,
        "since": since,
        "until": until,
        "cap": cap_percentile / 100.0,
        "net_returns": net_returns,
        "cutoff": (as_of - dt.timedelta(days=window_days)) if as_of else dt.datetime.min.replace(tzinfo=dt.UTC),
    }
    groups: dict[tuple[str, str], _Group] = {}
    by_variant: dict[tuple[str, str], dict[str, _Group]] = {}  # (rule, group) -> variant -> its customers
    read, caps = await _read_groups(db, QUERY, params)
    for rule_id, grp, variant, g in read:
        if variant is None:  # the rule's one group, as it came
            groups[(rule_id, grp)] = g
        else:  # one variant's: the rule's group is the sum of its variants'
            by_variant.setdefault((rule_id, grp), {})[variant] = g
            groups.setdefault((rule_id, grp), _Group()).add(g)
    known = sorted({rule for rule, _ in groups} | set(rule_ids) - {CAMPAIGN_ROW})
    per_rule = [
        _judge(rule, groups.get((rule, "treatment"), _Group()), groups.get((rule, "control"), _Group()), window_days)
        for rule in known
        if rule != CAMPAIGN_ROW
    ]
    for r in per_rule:
        r.plan = _plan(
            groups.get((r.rule_id, "treatment"), _Group()), groups.get((r.rule_id, "control"), _Group()), target_uplift
        )
        treated = by_variant.get((r.rule_id, "treatment"))
        if treated:
            r.variants = _variant_results(r.rule_id, treated, groups.get((r.rule_id, "control"), _Group()), window_days)
    campaign_groups = groups.get((CAMPAIGN_ROW, "treatment"), _Group()), groups.get((CAMPAIGN_ROW, "control"), _Group())
    total = _judge(CAMPAIGN_ROW, *campaign_groups, window_days)
    total.plan = _plan(*campaign_groups, target_uplift)
    if by is not None:
        by_segment: dict[tuple[str, str], dict[str, _Group]] = {}  # (rule, group) -> segment -> its customers
        in_segments, _ = await _read_groups(db, breakdown_query(by, spend_tiers), params, caps)
        for rule_id, grp, segment, g in in_segments:
            by_segment.setdefault((rule_id, grp), {})[segment or "(none)"] = g
        for r in [*per_rule, total]:
            r.breakdown = _breakdown(
                by,
                r.rule_id,
                (groups.get((r.rule_id, "treatment"), _Group()), groups.get((r.rule_id, "control"), _Group())),
                (by_segment.get((r.rule_id, "treatment"), {}), by_segment.get((r.rule_id, "control"), {})),
                window_days,
            )
    return UpliftReport(
        campaign=campaign,
        window_days=window_days,
        since=since,
        until=until,
        as_of=as_of,
        complete_until=state.complete_until,
        holdout=holdout,
        cap_percentile=cap_percentile,
        returns_netted=net_returns,
        currency=currency,
        campaign_total=total,
        rules=per_rule,
    )


CSV_COLUMNS = (
    "campaign",
    "rule_id",
    "variant",
    "segment",
    "window_days",
    "status",
    "treated_customers",
    "treated_repeaters",
    "treated_repeat_rate",
    "treated_revenue_per_customer",
    "treated_open",
    "control_customers",
    "control_repeaters",
    "control_repeat_rate",
    "control_revenue_per_customer",
    "control_open",
    "uplift_absolute",
    "uplift_ci95_low",
    "uplift_ci95_high",
    "uplift_relative",
    "uplift_relative_ci95_low",
    "uplift_relative_ci95_high",
    "uplift_p_value",
    "uplift_p_adjusted",
    "revenue_uplift_absolute",
    "revenue_uplift_ci95_low",
    "revenue_uplift_ci95_high",
    "revenue_uplift_p_value",
    "revenue_uplift_p_adjusted",
    "revenue_uplift_cuped_absolute",
    "revenue_uplift_cuped_ci95_low",
    "revenue_uplift_cuped_ci95_high",
    "revenue_cap",
    "revenue_uplift_capped_absolute",
    "revenue_uplift_capped_ci95_low",
    "revenue_uplift_capped_ci95_high",
    "revenue_uplift_capped_p_value",
    "revenue_uplift_capped_cuped_absolute",
    "revenue_uplift_capped_cuped_ci95_low",
    "revenue_uplift_capped_cuped_ci95_high",
    "srm_p_value",
    "srm_mismatch",
    "award_cost",
    "incremental_revenue",
    "return_on_cost",
    "fallbacks",
    "winner",
    "segment_uplift_difference",
    "segment_difference_p_value",
    "segment_difference_p_adjusted",
    "segment_differs",
    "plan_baseline_repeat_rate",
    "plan_customers_per_day",
    "plan_detectable_uplift_30d",
    "plan_detectable_uplift_90d",
    "plan_target_uplift",
    "plan_days_for_target",
    "notes",
    "cap_percentile",
    "returns_netted",
    "as_of",
    "complete_until",
    "replica_lag_seconds",
    "replica_lag_bytes",
)


def _rows(report: UpliftReport) -> list[RuleUplift]:
    """Each rule, followed by its variants (against the same holdout) and its segments, then the campaign as a
    whole and its segments."""
    rows = []
    for r in [*report.rules, *([report.campaign_total] if report.campaign_total else [])]:
        rows.append(r)
        rows.extend(r.variants.variants if r.variants else [])
        rows.extend(r.breakdown.segments if r.breakdown else [])
    return rows


def csv_rows(report: UpliftReport) -> list[dict[str, Any]]:
    """One flat row per rule, per variant of a rule with several (``variant`` set), and one for the campaign as a
    whole (rule ``*``), in ``CSV_COLUMNS``. Comparisons between variants are in the JSON and the page."""
    out = []
    winners = {r.rule_id: r.variants.winner for r in report.rules if r.variants}
    tops = [*report.rules, *([report.campaign_total] if report.campaign_total else [])]
    differences = {(r.rule_id, d.segment): d for r in tops if r.breakdown for d in r.breakdown.differences}
    for r in _rows(report):
        d = differences.get((r.rule_id, r.segment)) if r.segment is not None else None
        u, v, cu = r.uplift, r.revenue_uplift, r.revenue_uplift_cuped
        vc, cc = r.revenue_uplift_capped, r.revenue_uplift_capped_cuped
        out.append(
            {
                "campaign": report.campaign,
                "rule_id": r.rule_id,
                "variant": r.variant,
                "segment": r.segment,
                "window_days": report.window_days,
                "status": r.status,
                "treated_customers": r.treated.customers,
                "treated_repeaters": r.treated.repeaters,
                "treated_repeat_rate": r.treated.repeat_rate,
                "treated_revenue_per_customer": r.treated.revenue_per_customer,
                "treated_open": r.treated.open,
                "control_customers": r.control.customers,
                "control_repeaters": r.control.repeaters,
                "control_repeat_rate": r.control.repeat_rate,
                "control_revenue_per_customer": r.control.revenue_per_customer,
                "control_open": r.control.open,
                "uplift_absolute": u.absolute if u else None,
                "uplift_ci95_low": u.ci95[0] if u else None,
                "uplift_ci95_high": u.ci95[1] if u else None,
                "uplift_relative": u.relative if u else None,
                "uplift_relative_ci95_low": u.relative_ci95[0] if u and u.relative_ci95 else None,
                "uplift_relative_ci95_high": u.relative_ci95[1] if u and u.relative_ci95 else None,
                "uplift_p_value": u.p_value if u else None,
                "uplift_p_adjusted": u.p_adjusted if u else None,
                "revenue_uplift_absolute": v.absolute if v else None,
                "revenue_uplift_ci95_low": v.ci95[0] if v else None,
                "revenue_uplift_ci95_high": v.ci95[1] if v else None,
                "revenue_uplift_p_value": v.p_value if v else None,
                "revenue_uplift_p_adjusted": v.p_adjusted if v else None,
                "revenue_uplift_cuped_absolute": cu.absolute if cu else None,
                "revenue_uplift_cuped_ci95_low": cu.ci95[0] if cu else None,
                "revenue_uplift_cuped_ci95_high": cu.ci95[1] if cu else None,
                "revenue_cap": r.revenue_cap,
                "revenue_uplift_capped_absolute": vc.absolute if vc else None,
                "revenue_uplift_capped_ci95_low": vc.ci95[0] if vc else None,
                "revenue_uplift_capped_ci95_high": vc.ci95[1] if vc else None,
                "revenue_uplift_capped_p_value": vc.p_value if vc else None,
                "revenue_uplift_capped_cuped_absolute": cc.absolute if cc else None,
                "revenue_uplift_capped_cuped_ci95_low": cc.ci95[0] if cc else None,
                "revenue_uplift_capped_cuped_ci95_high": cc.ci95[1] if cc else None,
                "srm_p_value": r.srm_p_value,
                "srm_mismatch": r.srm_mismatch,
                "award_cost": r.award_cost,
                "incremental_revenue": r.incremental_revenue,
                "return_on_cost": r.return_on_cost,
                "fallbacks": r.fallbacks if r.variant else None,
                "winner": winners.get(r.rule_id) if r.variant is None and r.rule_id in winners else None,
                "segment_uplift_difference": d.uplift_difference if d else None,
                "segment_difference_p_value": d.p_value if d else None,
                "segment_difference_p_adjusted": d.p_adjusted if d else None,
                "segment_differs": d.differs if d else None,
                "plan_baseline_repeat_rate": r.plan.baseline_repeat_rate if r.plan else None,
                "plan_customers_per_day": r.plan.customers_per_day if r.plan else None,
                "plan_detectable_uplift_30d": r.plan.detectable_uplift_30d if r.plan else None,
                "plan_detectable_uplift_90d": r.plan.detectable_uplift_90d if r.plan else None,
                "plan_target_uplift": r.plan.target_uplift if r.plan else None,
                "plan_days_for_target": r.plan.days_for_target if r.plan else None,
                "notes": "; ".join(r.notes),
                "cap_percentile": report.cap_percentile,
                "returns_netted": report.returns_netted,
                "as_of": report.as_of.isoformat() if report.as_of else None,
                "complete_until": report.complete_until.isoformat() if report.complete_until else None,
                "replica_lag_seconds": report.replica_lag_seconds,
                "replica_lag_bytes": report.replica_lag_bytes,
            }
        )
    return out


def to_csv(report: UpliftReport) -> str:
    return cells.to_csv(CSV_COLUMNS, csv_rows(report))


def _when(at: dt.datetime | None) -> str:
    return at.isoformat(timespec="seconds") if at else "(not built yet)"


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.1f}%"


def read_on_lines(seconds: float | None, lag_bytes: int | None) -> list[str]:
    """Where a report was read, for the terminal: nothing for the primary; for the reports replica, how far
    behind it was."""
    if seconds is None or lag_bytes is None:
        return []
    return [
        f"read on the reports replica: {lag_bytes:,} bytes of WAL behind the primary when asked, "
        f"caught up in {seconds:g} s"
    ]


def render_table(report: UpliftReport) -> str:
    """A plain-text summary for the terminal."""
    lines = [
        f"uplift of {report.campaign}: repeat purchase within {report.window_days} "
        f"{plural(report.window_days, 'day')} of first exposure; money in {report.currency}",
        f"latest event {report.as_of.isoformat() if report.as_of else '(none)'}; "
        f"events committed up to {_when(report.complete_until)} counted",
        *read_on_lines(report.replica_lag_seconds, report.replica_lag_bytes),
        "",
        f"{'rule':<24} {'treated':>16} {'control':>16} {'uplift':>9} {'95% CI':>19} {'p':>8} {'SRM p':>8} "
        f"{'cost':>10} {'return':>8}",
    ]
    for r in _rows(report):
        t, c, u = r.treated, r.control, r.uplift
        ci = f"[{u.ci95[0] * 100:+.1f}, {u.ci95[1] * 100:+.1f}] pp" if u else r.status
        name = (
            f"  segment {r.segment}"
            if r.segment is not None
            else "(campaign)"
            if r.rule_id == CAMPAIGN_ROW
            else f"  variant {r.variant}"
            if r.variant
            else r.rule_id
        )
        lines.append(
            f"{name:<24} "
            f"{f'{t.repeaters}/{t.customers} {_pct(t.repeat_rate)}':>16} "
            f"{f'{c.repeaters}/{c.customers} {_pct(c.repeat_rate)}':>16} "
            f"{(f'{u.absolute * 100:+.1f}pp' if u else '—'):>9} {ci:>19} "
            f"{(f'{u.p_value:.3g}' if u else '—'):>8} "
            f"{(f'{r.srm_p_value:.3g}' if r.srm_p_value is not None else '—'):>8} "
            f"{r.award_cost:>10.2f} "
            f"{(f'{r.return_on_cost:+.2f}' if r.return_on_cost is not None else '—'):>8}"
        )
        for note in r.notes:
            lines.append(f"    note: {note}")
        if r.variants:
            lines.append(f"    variants: {r.variants.verdict}")
        if r.breakdown:
            lines.append(f"    by {r.breakdown.by}: {breakdown_sentence(r.breakdown)}")
        if r.plan is not None and r.plan.detectable_uplift_30d is not None:
            lines.append(f"    plan: {plan_sentence(r.plan)}")
    return "\n".join(lines)


def breakdown_sentence(breakdown: Breakdown) -> str:
    """Which segments' uplift differs from the rest's, in words, with the warning."""
    differing = [d for d in breakdown.differences if d.differs]
    if not breakdown.differences:
        found = "no segment has enough customers inside and outside it to test whether its uplift differs"
    elif not differing:
        found = "no segment's uplift differs from the rest's once adjusted for the segments tested"
    else:
        found = "; ".join(
            f"{d.segment}'s uplift differs from the rest's by {d.uplift_difference * 100:+.1f} points "
            f"(adjusted p = {d.p_adjusted:.2g})"
            for d in differing
        )
    return f"{found}. Note: {breakdown.warning}."


def plan_sentence(plan: PowerPlan) -> str:
    """The power plan in words, for the terminal and the page."""
    if plan.detectable_uplift_30d is None or plan.detectable_uplift_90d is None:
        return "not enough traffic or holdout yet to say what this can detect"
    per_day, target, days = plan.customers_per_day or 0.0, plan.target_uplift * 100, plan.days_for_target or 0.0
    return (
        f"at {per_day:g} {plural(per_day, 'customer')} a day with {_pct(plan.holdout)} held out, 30 days of "
        f"enrolment detect an uplift of {plan.detectable_uplift_30d * 100:.1f} points in repeat rate with 80% power "
        f"(90 days: {plan.detectable_uplift_90d * 100:.1f}); {target:g} {plural(target, 'point takes', 'points take')} "
        f"{days:g} {plural(days, 'day')}"
    )
