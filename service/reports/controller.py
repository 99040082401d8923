"""``GET /v1/reports/uplift``, ``/programme`` and ``/campaigns`` (JSON, CSV or HTML), and the CSV exports analysts
join in their warehouse."""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal, TypeVar, cast

from litestar import Controller, Request, Response, get
from litestar.datastructures import ResponseHeader
from litestar.di import NamedDependency
from litestar.params import Parameter, QueryParameter
from litestar.response import Stream
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.keys.guards import requires
from service.keys.scopes import REPORTS_READ
from service.lib.errors import FieldError, NotFoundError, ValidationError
from service.lib.openapi import API_KEY, problem_responses
from service.lib.replica import ReplicaLag, ReportsDatabase, with_lag
from service.lib.validation import date_time_query
from service.projection.freshness import catch_up_to_now
from service.reports.cells import cell
from service.reports.overview import Overview, overview
from service.reports.overview import render_html as overview_html
from service.reports.overview import to_csv as overview_csv
from service.reports.programme import ProgrammeReport, programme_report
from service.reports.programme import render_html as programme_html
from service.reports.programme import to_csv as programme_csv
from service.reports.uplift import (
    MAX_WINDOW_DAYS,
    SPEND_TIERS,
    SPEND_TIERS_RULE,
    Dimension,
    UpliftReport,
    parse_spend_tiers,
    to_csv,
    uplift_report,
)
from service.reports.uplift_html import render_html
from service.rules.ruleset import RuleSet

Format = Literal["json", "csv", "html"]
FormatParam = Annotated[Format | None, Parameter(description="Overrides the Accept header (handy for links).")]
R = TypeVar("R")

Since = Annotated[
    dt.datetime | None,
    QueryParameter(name="from", description="Only customers first exposed at or after this time (with a time zone)."),
]
Until = Annotated[
    dt.datetime | None, QueryParameter(name="to", description="Only customers first exposed before this time.")
]

CapPercentile = Annotated[
    float,
    Parameter(
        ge=50,
        le=100,
        description="The percentile at which each customer's revenue is capped for the capped figures "
        "(`revenue_cap`, `revenue_uplift_capped`): 99 caps at the rule's 99th percentile; 100 caps nothing.",
    ),
]
By = Annotated[
    Dimension | None,
    Parameter(
        description="Break every row down by `channel`, `store`, `new_returning` (purchases before the first "
        "exposure or none), `spend_tier` (spend before the first exposure, in `spend_tiers`) or `segment` (the "
        "customer's `segments` attribute as it is now): each segment judged, and tested against the rest."
    ),
]
SpendTiers = Annotated[
    str | None,
    Parameter(
        description="With `by=spend_tier`: the tiers' bounds in the shop's currency, ascending, comma-separated "
        "(default `100,500`: none, under 100, 100 to 500, 500 and over).",
        max_length=200,
    ),
]
NetReturns = Annotated[
    bool, Parameter(description="Take refunds made in each customer's window off their revenue in it.")
]
CAMPAIGN = Parameter(min_length=1, max_length=100, description="The campaign.")
Campaign = Annotated[str, CAMPAIGN]
WindowDays = Annotated[int, Parameter(ge=1, le=MAX_WINDOW_DAYS, description="Days after first exposure that count.")]
TargetUplift = Annotated[
    float,
    Parameter(
        ge=0.001,
        le=1,
        description="An uplift in repeat rate (absolute: 0.02 is 2 points) for `plan.days_for_target`: "
        "the days of enrolment that detect it with 80% power.",
    ),
]


@dataclass(frozen=True, slots=True)
class UpliftQuery:
    """The uplift report's parameters, as parsed from a query (the API's or the console's)."""

    campaign: str
    window_days: int = 30
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    target_uplift: float = 0.02
    cap_percentile: float = 99.0
    net_returns: bool = False
    by: Dimension | None = None
    spend_tiers: str | None = None

    @property
    def filename(self) -> str:
        return f"uplift-{self.campaign}-{self.window_days}d"


@dataclass(frozen=True, slots=True)
class ProgrammeQuery:
    """The programme report's parameters."""

    since: dt.datetime | None = None
    until: dt.datetime | None = None
    cap_percentile: float = 99.0
    net_returns: bool = False
    by: Dimension | None = None
    spend_tiers: str | None = None


PROGRAMME_FILE = "programme"


def overview_filename(window_days: int) -> str:
    return f"campaigns-{window_days}d"


def _tiers(spend_tiers: str | None) -> tuple[float, ...]:
    if spend_tiers is None:
        return SPEND_TIERS
    try:
        return parse_spend_tiers(spend_tiers)
    except ValueError:
        raise ValidationError(
            f"spend_tiers takes {SPEND_TIERS_RULE}",
            errors=[FieldError("spend_tiers", "must be ascending amounts above 0, like 100,500")],
        ) from None


def _period(since: dt.datetime | None, until: dt.datetime | None) -> None:
    errors = [
        FieldError(name, "needs a time zone")
        for name, value in (("from", since), ("to", until))
        if value is not None and value.tzinfo is None
    ]
    if errors:
        raise ValidationError("times need a time zone, like 2026-03-01T00:00:00Z", errors=errors)
    if since is not None and until is not None and until <= since:
        raise ValidationError("'to' must be after 'from'", errors=[FieldError("to", "must be after 'from'")])


async def _up_to_now(reports_db: ReportsDatabase) -> ReplicaLag | None:
    """Bring the projection up to every event committed before now, on the primary, and wait until the database
    reports read holds it too; how far behind that was, when it is a replica."""
    await catch_up_to_now(reports_db.primary)
    return await reports_db.caught_up()


async def read_uplift(reports_db: ReportsDatabase, rule_set: RuleSet, query: UpliftQuery) -> UpliftReport:
    """The uplift report ``query`` asks for, once the projection holds every event committed before it.

    ``ValidationError`` for a period or tiers the report cannot take, ``NotFoundError`` for a campaign nobody knows,
    ``ReplicaBehindError`` when the reports replica does not catch up with the primary in time.
    """
    _period(query.since, query.until)
    tiers = _tiers(query.spend_tiers)
    active = rule_set.by_name.get(query.campaign)
    lag = await _up_to_now(reports_db)
    async with reports_db.sessionmaker() as session, session.begin():
        report = await uplift_report(
            session,
            campaign=query.campaign,
            window_days=query.window_days,
            holdout=active.holdout if active else None,
            currency=rule_set.settings.currency,
            rule_ids=[r.id for r in active.rules] if active else (),
            since=query.since,
            until=query.until,
            target_uplift=query.target_uplift,
            cap_percentile=query.cap_percentile,
            net_returns=query.net_returns,
            by=query.by,
            spend_tiers=tiers,
        )
    if active is None and report.campaign_total is not None and report.campaign_total.status == "no_customers":
        raise NotFoundError(f"no campaign {query.campaign!r} in the active rule set and no exposures recorded for it")
    return with_lag(report, lag)


async def read_programme(reports_db: ReportsDatabase, rule_set: RuleSet, query: ProgrammeQuery) -> ProgrammeReport:
    """The programme report ``query`` asks for, as fresh as ``read_uplift``'s."""
    _period(query.since, query.until)
    tiers = _tiers(query.spend_tiers)
    lag = await _up_to_now(reports_db)
    async with reports_db.sessionmaker() as session, session.begin():
        report = await programme_report(
            session,
            holdout=rule_set.settings.programme_holdout,
            currency=rule_set.settings.currency,
            since=query.since,
            until=query.until,
            cap_percentile=query.cap_percentile,
            net_returns=query.net_returns,
            by=query.by,
            spend_tiers=tiers,
        )
    return with_lag(report, lag)


async def read_overview(reports_db: ReportsDatabase, rule_set: RuleSet, window_days: int) -> Overview:
    """Every campaign over ``window_days``, as fresh as ``read_uplift``'s."""
    lag = await _up_to_now(reports_db)
    async with reports_db.sessionmaker() as session, session.begin():
        report = await overview(session, rule_set, window_days=window_days)
    return with_lag(report, lag)


def _wanted(request: Request[Any, Any, Any], format: Format | None) -> Format:
    if format is not None:
        return format
    accept = request.headers.get("accept", "")
    if "text/csv" in accept:
        return "csv"
    if "text/html" in accept and "application/json" not in accept:
        return "html"
    return "json"


def _answer(
    request: Request[Any, Any, Any],
    format: Format | None,
    report: R,
    as_csv: Callable[[R], str],
    as_html: Callable[[R], str],
    filename: str,
) -> Response[R]:
    """The report as JSON, or as the CSV download or the page the request asks for (``format``, else Accept)."""
    wanted = _wanted(request, format)
    if wanted == "json":
        return Response(report)
    other: Any = (
        Response(
            as_csv(report),
            media_type="text/csv",
            headers={"Content-Disposition": f'attachment; filename="{filename}.csv"'},
        )
        if wanted == "csv"
        else Response(as_html(report), media_type="text/html; charset=utf-8")
    )
    return cast("Response[R]", other)


class UpliftController(Controller):
    path = "/v1/reports"
    tags = ["reports"]
    security = [API_KEY]
    guards = [requires(REPORTS_READ)]
    before_request = staticmethod(date_time_query)

    @get(
        "/uplift",
        operation_id="getUpliftReport",
        summary="Did the surprises bring customers back? Treated against the holdout, per rule; JSON, CSV or HTML",
        description=(
            "For each rule of the campaign (and, as rule `*`, the campaign as a whole): customers first exposed "
            "in the period, by group; the share who bought again within `window_days` of their first exposure "
            "and their revenue in that window; the absolute and relative uplift with 95% intervals and p-values "
            "(two-proportion z-test; Welch's t-test for revenue, also CUPED-adjusted by pre-exposure spend); a "
            "sample-ratio-mismatch check against the holdout; award cost and return on it. Only customers whose "
            "window has closed count; `status` and `notes` say when there is too little data for an interval. "
            "The figures come from a projection of the committed events, built outside the till's transaction: "
            "the report first brings it up to every event committed before the request (trying for up to 5 s), "
            "and says up to "
            "when it counted events (`complete_until`) beside the latest event time it saw (`as_of`). "
            "With a reports replica, it reads there once the replica has replayed everything the primary had "
            "committed before the request, and says how far behind it was (`replica_lag_seconds`, "
            "`replica_lag_bytes`); a replica that has not caught up within the limit set is answered 503 "
            "(`replica-behind`) rather than read. "
            "Send `Accept: text/csv` for CSV or `Accept: text/html` (or `format=html`) for a page with charts."
        ),
        responses=problem_responses(400, 401, 403, 404, 422, 503),
    )
    async def uplift(
        self,
        request: Request[Any, Any, Any],
        reports_db: NamedDependency[ReportsDatabase],
        rule_set: NamedDependency[RuleSet],
        campaign: Campaign,
        window_days: WindowDays = 30,
        since: Since = None,
        until: Until = None,
        target_uplift: TargetUplift = 0.02,
        cap_percentile: CapPercentile = 99.0,
        net_returns: NetReturns = False,
        by: By = None,
        spend_tiers: SpendTiers = None,
        format: FormatParam = None,
    ) -> Response[UpliftReport]:
        query = UpliftQuery(
            campaign=campaign,
            window_days=window_days,
            since=since,
            until=until,
            target_uplift=target_uplift,
            cap_percentile=cap_percentile,
            net_returns=net_returns,
            by=by,
            spend_tiers=spend_tiers,
        )
        report = await read_uplift(reports_db, rule_set, query)
        return _answer(request, format, report, to_csv, render_html, query.filename)

    @get(
        "/programme",
        operation_id="getProgrammeReport",
        summary="Does the surprise programme as a whole pay? Everyone surprised against the programme holdout",
        description=(
            "Customers whom `programme_holdout` (`settings.yaml`) keeps out of every campaign against everyone "
            "else, from each customer's first exposure to any campaign, over 30, 90 and 180 days: repeat rate, "
            "revenue per customer (raw and capped), award cost of every campaign, incremental revenue and return "
            "on cost, with the same statistics, freshness and formats as the uplift report."
        ),
        responses=problem_responses(400, 401, 403, 422, 503),
    )
    async def programme(
        self,
        request: Request[Any, Any, Any],
        reports_db: NamedDependency[ReportsDatabase],
        rule_set: NamedDependency[RuleSet],
        since: Since = None,
        until: Until = None,
        cap_percentile: CapPercentile = 99.0,
        net_returns: NetReturns = False,
        by: By = None,
        spend_tiers: SpendTiers = None,
        format: FormatParam = None,
    ) -> Response[ProgrammeReport]:
        query = ProgrammeQuery(
            since=since,
            until=until,
            cap_percentile=cap_percentile,
            net_returns=net_returns,
            by=by,
            spend_tiers=spend_tiers,
        )
        report = await read_programme(reports_db, rule_set, query)
        return _answer(request, format, report, programme_csv, programme_html, PROGRAMME_FILE)

    @get(
        "/campaigns",
        operation_id="getCampaignsOverview",
        summary="Every campaign at a glance: status, customers, uplift, cost and return, with links to each report",
        description=(
            "Each campaign of the rule set in force (and any other with recorded exposures) as a whole, treated "
            "against its holdout over `window_days`, as its uplift report's `campaign_total` gives it, with its "
            "status today and a link to its report page. JSON, CSV or HTML, like the uplift report."
        ),
        responses=problem_responses(400, 401, 403, 503),
    )
    async def campaigns(
        self,
        request: Request[Any, Any, Any],
        reports_db: NamedDependency[ReportsDatabase],
        rule_set: NamedDependency[RuleSet],
        window_days: WindowDays = 30,
        format: FormatParam = None,
    ) -> Response[Overview]:
        report = await read_overview(reports_db, rule_set, window_days)
        return _answer(request, format, report, overview_csv, overview_html, overview_filename(window_days))


EXPOSURES = """
    SELECT event_id, campaign, rule_id, customer_id, "group", occurred_at, award_id, holdout, rule_set_version,
           variant, variant_drawn, coalesce(programme_held, false) AS programme_held
    FROM exposures
    WHERE (CAST(:campaign AS text) IS NULL OR campaign = :campaign)
      AND occurred_at >= coalesce(CAST(:since AS timestamptz), '-infinity')
      AND occurred_at < coalesce(CAST(:until AS timestamptz), 'infinity')
    ORDER BY occurred_at, event_id, campaign, rule_id
    LIMIT :limit
"""
EXPOSURE_COLUMNS = (
    "event_id",
    "campaign",
    "rule_id",
    "customer_id",
    "group",
    "occurred_at",
    "award_id",
    "holdout",
    "rule_set_version",
    "variant",
    "variant_drawn",
    "programme_held",
)
# Codes are left out on purpose: they are bearer tokens for a gift.
AWARDS = """
    SELECT award_id, event_id, customer_id, campaign, rule_id, kind, points, gift_id, cost, issued_at, expires_at,
           status, status_changed_at, redeemed_order_id, rule_set_version, variant
    FROM awards
    WHERE (CAST(:campaign AS text) IS NULL OR campaign = :campaign)
      AND issued_at >= coalesce(CAST(:since AS timestamptz), '-infinity')
      AND issued_at < coalesce(CAST(:until AS timestamptz), 'infinity')
    ORDER BY issued_at, award_id
    LIMIT :limit
"""
AWARD_COLUMNS = (
    "award_id",
    "event_id",
    "customer_id",
    "campaign",
    "rule_id",
    "kind",
    "points",
    "gift_id",
    "cost",
    "issued_at",
    "expires_at",
    "status",
    "status_changed_at",
    "redeemed_order_id",
    "rule_set_version",
    "variant",
)
CHUNK = 2000
MAX_EXPORT_ROWS = 1_000_000
Limit = Annotated[
    int,
    Parameter(
        ge=1,
        le=MAX_EXPORT_ROWS,
        description="At most this many rows, oldest first (1,000,000 at most); ask again `from` the last one for more.",
    ),
]


async def stream_csv(
    sessionmaker: async_sessionmaker[AsyncSession], sql: str, columns: Sequence[str], params: dict[str, Any]
) -> AsyncIterator[bytes]:
    """Rows of ``sql`` as CSV, read through a server-side cursor a chunk at a time."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    yield buffer.getvalue().encode()
    async with sessionmaker() as session, session.begin():
        result = await session.stream(text(sql), params)
        async for chunk in result.partitions(CHUNK):
            buffer.seek(0)
            buffer.truncate()
            writer.writerows([cell(v) for v in row] for row in chunk)
            yield buffer.getvalue().encode()


CampaignFilter = Annotated[str | None, Parameter(max_length=100, description="One campaign; all if left out.")]


LAG_SECONDS_HEADER = "Delight-Replica-Lag-Seconds"
LAG_BYTES_HEADER = "Delight-Replica-Lag-Bytes"
# An export's rows are the data alone: where they were read is said in its headers.
READ_ON_HEADERS = [
    ResponseHeader(
        name=LAG_SECONDS_HEADER,
        documentation_only=True,
        description="Read on the reports replica: how long it took to replay what the primary had committed when "
        "the export was asked for (0: it had already). Absent when read on the primary.",
    ),
    ResponseHeader(
        name=LAG_BYTES_HEADER,
        documentation_only=True,
        description="Read on the reports replica: the bytes of WAL it had still to replay then. Absent when read on "
        "the primary.",
    ),
]


def _read_on_headers(lag: ReplicaLag | None) -> dict[str, str]:
    return {} if lag is None else {LAG_SECONDS_HEADER: f"{lag.seconds:g}", LAG_BYTES_HEADER: str(lag.bytes)}


async def _export(
    reports_db: ReportsDatabase,
    name: str,
    sql: str,
    columns: Sequence[str],
    params: dict[str, Any],
) -> Stream:
    _period(params["since"], params["until"])
    lag = await reports_db.caught_up()
    # A database that cannot answer is an error answer (503), not a stream cut short after its header. The stream
    # reads on a session of its own, opened only once the answer is under way.
    async with reports_db.sessionmaker() as session:
        await session.execute(text("SELECT 1"))
    return Stream(
        stream_csv(reports_db.sessionmaker, sql, columns, params),
        media_type="text/csv",
        headers={"Content-Disposition": f'attachment; filename="{name}.csv"', **_read_on_headers(lag)},
    )


class ExportsController(Controller):
    path = "/v1/exports"
    tags = ["reports"]
    security = [API_KEY]
    guards = [requires(REPORTS_READ)]
    before_request = staticmethod(date_time_query)

    @get(
        "/exposures.csv",
        operation_id="exportExposures",
        summary="Every exposure (treated and held out) as CSV, streamed",
        description="One row per customer, rule and qualifying event, oldest first. Filter by campaign and time.",
        responses=problem_responses(400, 401, 403, 422, 503),
        response_headers=READ_ON_HEADERS,
        media_type="text/csv",
    )
    async def exposures(
        self,
        reports_db: NamedDependency[ReportsDatabase],
        campaign: CampaignFilter = None,
        since: Since = None,
        until: Until = None,
        limit: Limit = MAX_EXPORT_ROWS,
    ) -> Stream:
        params = {"campaign": campaign, "since": since, "until": until, "limit": limit}
        return await _export(reports_db, "exposures", EXPOSURES, EXPOSURE_COLUMNS, params)

    @get(
        "/awards.csv",
        operation_id="exportAwards",
        summary="Every award as CSV, streamed (without codes)",
        description="One row per award, oldest first, with its status and cost. Filter by campaign and time.",
        responses=problem_responses(400, 401, 403, 422, 503),
        response_headers=READ_ON_HEADERS,
        media_type="text/csv",
    )
    async def awards(
        self,
        reports_db: NamedDependency[ReportsDatabase],
        campaign: CampaignFilter = None,
        since: Since = None,
        until: Until = None,
        limit: Limit = MAX_EXPORT_ROWS,
    ) -> Stream:
        params = {"campaign": campaign, "since": since, "until": until, "limit": limit}
        return await _export(reports_db, "awards", AWARDS, AWARD_COLUMNS, params)
