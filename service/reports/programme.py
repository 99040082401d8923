"""The programme report: does the surprise programme as a whole pay for itself?

``settings.yaml`` may hold out a share of all customers from every campaign
(``programme_holdout``); they are recorded as exposed whenever a rule would
have given them something. The projection keeps one programme row per customer
in ``first_exposures`` (campaign and rule ``*``): their first exposure to any
campaign, in the programme's group, with the cost of every award of every
campaign after it. The report reads those rows exactly as the uplift report
reads a campaign's, over 30, 90 and 180 days: repeat rate, revenue per
customer, total award cost, incremental revenue and return on cost of the whole
programme, treated (everyone the programme surprises, whatever each campaign's
own holdout did) against the programme holdout.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from html import escape

from msgspec import Struct, field
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from service.reports import cells
from service.reports.uplift import (
    CAMPAIGN_ROW,
    CSV_COLUMNS,
    SPEND_TIERS,
    Dimension,
    RuleUplift,
    UpliftReport,
    begin_report,
    csv_rows,
    read_report,
)
from service.reports.uplift_html import ReportHtml, _section, document, freshness, read_on
from service.reports.words import plural

WINDOWS = (30, 90, 180)
PROGRAMME = "programme"  # the name the CSV, the page and the CLI give the programme's rows


class ProgrammeWindow(Struct):
    window_days: int
    result: RuleUplift
    """The programme over this window: ``treated`` is everyone the programme surprises, ``control`` its holdout."""


class ProgrammeReport(Struct):
    holdout: float
    """``programme_holdout`` in the rule set in force: the share the sample-ratio check expects held out."""
    since: dt.datetime | None = field(name="from")
    until: dt.datetime | None = field(name="to")
    as_of: dt.datetime | None
    complete_until: dt.datetime | None
    cap_percentile: float
    returns_netted: bool
    currency: str
    """What every amount is in: the shop's ``currency`` from ``settings.yaml`` (ISO 4217)."""
    windows: list[ProgrammeWindow]
    replica_lag_seconds: float | None = None
    """Read on the reports replica: how long it took to replay what the primary had committed when the report was
    asked for (0: it had already); ``null`` when read on the primary."""
    replica_lag_bytes: int | None = None
    """Read on the reports replica: the WAL it had still to replay then; ``null`` when read on the primary."""


async def programme_report(
    db: AsyncSession | AsyncConnection,
    *,
    holdout: float,
    currency: str,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    cap_percentile: float = 99.0,
    net_returns: bool = False,
    target_uplift: float = 0.02,
    by: Dimension | None = None,
    spend_tiers: Sequence[float] = SPEND_TIERS,
) -> ProgrammeReport:
    """The programme over each of ``WINDOWS``, in one snapshot of the projection (``db`` as for ``uplift_report``)."""
    state = await begin_report(db)
    windows = []
    for days in WINDOWS:
        report = await read_report(
            db,
            state,
            campaign=CAMPAIGN_ROW,
            window_days=days,
            holdout=holdout,
            currency=currency,
            since=since,
            until=until,
            target_uplift=target_uplift,
            cap_percentile=cap_percentile,
            net_returns=net_returns,
            by=by,
            spend_tiers=spend_tiers,
        )
        assert report.campaign_total is not None
        windows.append(ProgrammeWindow(window_days=days, result=report.campaign_total))
    return ProgrammeReport(
        holdout=holdout,
        since=since,
        until=until,
        as_of=state.as_of,
        complete_until=state.complete_until,
        cap_percentile=cap_percentile,
        returns_netted=net_returns,
        currency=currency,
        windows=windows,
    )


def as_uplift_reports(report: ProgrammeReport) -> list[UpliftReport]:
    """Each window as an uplift report of the campaign ``programme`` with its one row, for the CSV and the page."""
    return [
        UpliftReport(
            campaign=PROGRAMME,
            window_days=w.window_days,
            since=report.since,
            until=report.until,
            as_of=report.as_of,
            complete_until=report.complete_until,
            holdout=report.holdout,
            cap_percentile=report.cap_percentile,
            returns_netted=report.returns_netted,
            currency=report.currency,
            campaign_total=w.result,
            rules=[],
            replica_lag_seconds=report.replica_lag_seconds,
            replica_lag_bytes=report.replica_lag_bytes,
        )
        for w in report.windows
    ]


def to_csv(report: ProgrammeReport) -> str:
    """One row per window, in the uplift report's columns (``campaign`` is ``programme``, ``rule_id`` ``*``)."""
    return cells.to_csv(CSV_COLUMNS, (row for window in as_uplift_reports(report) for row in csv_rows(window)))


def render_table(report: ProgrammeReport) -> str:
    from service.reports.uplift import render_table as uplift_table

    head = f"the surprise programme against its holdout ({report.holdout:.1%} of customers held out of every campaign)"
    parts = [head, ""]
    for window in as_uplift_reports(report):
        parts.append(uplift_table(window))
        parts.append("")
    return "\n".join(parts)


def programme_page(report: ProgrammeReport) -> ReportHtml:
    """The programme over each window, as the uplift page shows a campaign."""
    sections = "".join(
        _section(
            w.result,
            w.window_days,
            report.currency,
            f"Within {w.window_days} {plural(w.window_days, 'day')} of first exposure",
        )
        for w in report.windows
    )
    latest, complete = freshness(report.as_of, report.complete_until)
    replica = read_on(report.replica_lag_seconds, report.replica_lag_bytes)
    period = (
        f"first exposed from {report.since.date() if report.since else 'the start'} "
        f"to {report.until.date() if report.until else 'now'}"
    )
    body = f"""\
<p class="sub">Everyone the programme surprises against the {report.holdout:.1%} of customers it holds out of every
campaign, from each customer's first exposure to any campaign; {escape(period)}; latest event
{latest}, counting every event committed up to
{complete}.{replica} Award cost is every campaign's, within the window.
Money is in <span data-field="currency">{escape(report.currency)}</span>. Intervals are 95%; a customer counts once
their window has closed.</p>
{sections}"""
    return ReportHtml(
        title="Programme — does it pay?",
        heading="Does the surprise programme pay for itself?",
        attributes=f'data-campaign="{PROGRAMME}"',
        body=body,
    )


def render_html(report: ProgrammeReport) -> str:
    return document(programme_page(report))
