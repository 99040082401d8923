"""``GET /v1/reports/redemptions``: per rule, what was issued, redeemed, expired and reversed, and the cost.

An award past its ``expires_at`` counts as expired even before the expiry
job has marked it. Points awards are credited to the balance, not redeemed
with a code, so they have no redemption rate. Cost counts every award that
was not reversed.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from html import escape
from typing import Annotated, Any, cast

from litestar import Controller, Request, Response, get
from litestar.di import NamedDependency
from litestar.params import Parameter
from msgspec import Meta, Struct
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from service.keys.guards import requires
from service.keys.scopes import REPORTS_READ
from service.lib.errors import FieldError, ValidationError
from service.lib.openapi import API_KEY, problem_responses
from service.lib.replica import ReportsDatabase, with_lag
from service.lib.validation import date_time_query
from service.reports.cells import cell
from service.reports.uplift_html import ReportHtml, _num, _pct, read_on

QUERY = text(
    """
    SELECT campaign, rule_id, min(kind) AS kind,
           count(*) AS issued,
           count(*) FILTER (WHERE status = 'redeemed') AS redeemed,
           count(*) FILTER (WHERE status = 'expired' OR (status = 'issued' AND expires_at <= :now)) AS expired,
           count(*) FILTER (WHERE status = 'reversed') AS reversed,
           count(*) FILTER (WHERE status = 'issued' AND (expires_at IS NULL OR expires_at > :now)) AS active,
           coalesce(sum(cost) FILTER (WHERE status <> 'reversed'), 0) AS cost
    FROM awards
    WHERE CAST(:campaign AS text) IS NULL OR campaign = :campaign
    GROUP BY campaign, rule_id
    ORDER BY campaign, rule_id
    """
)
FILENAME = "redemptions.csv"
OneCampaign = Annotated[str | None, Parameter(max_length=100, description="One campaign; all when left out.")]
AsOf = Annotated[dt.datetime | None, Parameter(description="Judge expiry as of this time; default now.")]
COUNTS = ("issued", "redeemed", "expired", "reversed", "active")
COLUMNS = (
    "campaign",
    "rule_id",
    "kind",
    "issued",
    "redeemed",
    "expired",
    "reversed",
    "active",
    "redemption_rate",
    "cost",
)
READ_ON = ("replica_lag_seconds", "replica_lag_bytes")  # the report's, on every row


class RedemptionRow(Struct):
    campaign: str
    rule_id: str
    kind: str
    issued: int
    redeemed: int
    expired: int
    reversed: int
    active: int
    redemption_rate: Annotated[
        float | None,
        Meta(description="redeemed / (issued - reversed); null for points, which are credited, not redeemed"),
    ]
    cost: float


class RedemptionReport(Struct):
    as_of: dt.datetime
    campaign: str | None
    rules: list[RedemptionRow]
    replica_lag_seconds: float | None = None
    """Read on the reports replica: how long it took to replay what the primary had committed when the report was
    asked for (0: it had already); ``null`` when read on the primary."""
    replica_lag_bytes: int | None = None
    """Read on the reports replica: the WAL it had still to replay then; ``null`` when read on the primary."""


def _row(row: Any) -> RedemptionRow:
    redeemable = row.issued - row.reversed
    rate = None if row.kind == "points" or redeemable == 0 else round(row.redeemed / redeemable, 4)
    return RedemptionRow(
        campaign=row.campaign,
        rule_id=row.rule_id,
        kind=row.kind,
        issued=row.issued,
        redeemed=row.redeemed,
        expired=row.expired,
        reversed=row.reversed,
        active=row.active,
        redemption_rate=rate,
        cost=float(row.cost),
    )


async def redemption_report(db: AsyncSession, *, campaign: str | None, as_of: dt.datetime | None) -> RedemptionReport:
    """Every rule's awards (``campaign``'s alone when given), expiry judged as of ``as_of`` (now when not given)."""
    now = as_of or dt.datetime.now(dt.UTC)
    if now.tzinfo is None:
        raise ValidationError("as_of needs a time zone", errors=[FieldError("as_of", "needs a time zone")])
    rows = (await db.execute(QUERY, {"now": now, "campaign": campaign})).all()
    return RedemptionReport(as_of=now, campaign=campaign, rules=[_row(r) for r in rows])


async def read_redemptions(
    reports_db: ReportsDatabase, *, campaign: str | None, as_of: dt.datetime | None
) -> RedemptionReport:
    """The report, read where reports read once that holds every award the primary had committed before."""
    lag = await reports_db.caught_up()
    async with reports_db.sessionmaker() as session, session.begin():
        report = await redemption_report(session, campaign=campaign, as_of=as_of)
    return with_lag(report, lag)


def to_csv(report: RedemptionReport) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS + READ_ON)
    lag = [cell(getattr(report, c)) for c in READ_ON]
    for r in report.rules:
        writer.writerow([cell(getattr(r, c)) for c in COLUMNS] + lag)
    return out.getvalue()


def redemptions_page(report: RedemptionReport) -> ReportHtml:
    """The report as a page of the console (the API answers JSON or CSV), each number a ``data-field``."""
    rows = "".join(
        f'<tr data-campaign="{escape(r.campaign)}" data-rule="{escape(r.rule_id)}">'
        f'<td class="text">{escape(r.campaign)}</td><td class="text">{escape(r.rule_id)}</td>'
        f'<td class="text">{escape(r.kind)}</td>'
        + "".join(f"<td>{_num(name, f'{getattr(r, name):,}', getattr(r, name))}</td>" for name in COUNTS)
        + f"<td>{_num('redemption_rate', _pct(r.redemption_rate), r.redemption_rate)}</td>"
        f"<td>{_num('cost', f'{r.cost:,.2f}', r.cost)}</td></tr>"
        for r in report.rules
    )
    table = (
        '<div class="table-wrap"><table><tr><th class="text">campaign</th><th class="text">rule</th>'
        '<th class="text">kind</th>' + "".join(f"<th>{name}</th>" for name in COUNTS) + "<th>redemption rate</th>"
        f"<th>cost</th></tr>{rows}</table></div>"
        if rows
        else "<p>No awards.</p>"
    )
    body = (
        '<p class="sub">Per rule: the awards issued, redeemed, expired, reversed and still active, the share of codes '
        "redeemed (points are credited, not redeemed) and the cost of every award not reversed. Read from the awards "
        "themselves, so as fresh as the last event; an award past its expiry counts as expired as of "
        f'<span data-field="as_of">{escape(report.as_of.isoformat())}</span>.'
        f"{read_on(report.replica_lag_seconds, report.replica_lag_bytes)}</p>{table}"
    )
    return ReportHtml(
        title="Redemptions",
        heading="What became of the awards",
        attributes=f'data-campaign="{escape(report.campaign or "")}"',
        body=body,
    )


class ReportsController(Controller):
    path = "/v1/reports"
    tags = ["reports"]
    security = [API_KEY]
    guards = [requires(REPORTS_READ)]
    before_request = staticmethod(date_time_query)

    @get(
        "/redemptions",
        operation_id="getRedemptionReport",
        summary="Issued, redeemed, expired and reversed awards per rule, with cost; JSON or CSV",
        description="Send `Accept: text/csv` for CSV with one row per rule.",
        responses=problem_responses(400, 401, 403, 422, 503),
    )
    async def redemptions(
        self,
        request: Request[Any, Any, Any],
        reports_db: NamedDependency[ReportsDatabase],
        campaign: OneCampaign = None,
        as_of: AsOf = None,
    ) -> Response[RedemptionReport]:
        report = await read_redemptions(reports_db, campaign=campaign, as_of=as_of)
        if "text/csv" in request.headers.get("accept", ""):
            csv_response: Any = Response(
                to_csv(report),
                media_type="text/csv",
                headers={"Content-Disposition": f'attachment; filename="{FILENAME}"'},
            )
            return cast("Response[RedemptionReport]", csv_response)
        return Response(report)
