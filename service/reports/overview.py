"""Every campaign at a glance: status, customers, uplift, cost and return, each linking to its report.

One pass over the campaign rows of the projection (rule ``*``), grouped by
campaign, read and judged as the uplift report judges a campaign as a whole;
campaigns of the rule set in force with no customer yet are listed too.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from html import escape
from typing import Any, Literal
from urllib.parse import quote

from msgspec import Struct
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from service.reports import cells
from service.reports.uplift import (
    CAMPAIGN_ROW,
    RuleUplift,
    _Group,
    _judge,
    _query,
    _read_groups,
    begin_report,
    read_on_lines,
)
from service.reports.uplift_html import ReportHtml, _money, _num, _pct, _pp, document, freshness, read_on
from service.reports.words import plural
from service.rules.ruleset import RuleSet

# Every campaign's row; the programme's (campaign ``*``) has a report of its own.
QUERY = _query("f.campaign", where="f.rule_id = '*' AND f.campaign <> '*'", cap_by="s.key")

PROGRAMME_PAGE = "/v1/reports/programme?format=html"

Status = Literal["running", "scheduled", "ended", "not in the rule set"]


class CampaignGlance(Struct):
    campaign: str
    status: Status
    """Whether the rule set in force runs it today; ``not in the rule set`` for one that only has history."""
    description: str | None
    holdout: float | None
    customers: int
    """First exposed, in either group, windows closed or not."""
    result: RuleUplift
    """The campaign as a whole, as its uplift report gives it (rule ``*``)."""
    report: str
    """The campaign's uplift page."""


class Overview(Struct):
    window_days: int
    currency: str
    """What every amount is in: the shop's ``currency`` from ``settings.yaml`` (ISO 4217)."""
    as_of: dt.datetime | None
    complete_until: dt.datetime | None
    campaigns: list[CampaignGlance]
    replica_lag_seconds: float | None = None
    """Read on the reports replica: how long it took to replay what the primary had committed when the report was
    asked for (0: it had already); ``null`` when read on the primary."""
    replica_lag_bytes: int | None = None
    """Read on the reports replica: the WAL it had still to replay then; ``null`` when read on the primary."""


def _status(rule_set: RuleSet, name: str, today: dt.date) -> Status:
    campaign = rule_set.by_name.get(name)
    return "not in the rule set" if campaign is None else campaign.status_on(today)


async def overview(db: AsyncSession | AsyncConnection, rule_set: RuleSet, *, window_days: int = 30) -> Overview:
    """Every campaign (``db`` as for ``uplift_report``)."""
    state = await begin_report(db)
    as_of = state.as_of
    params: dict[str, Any] = {
        "window_s": window_days * 86400,
        "holdout": 0.0,
        "since": None,
        "until": None,
        "cap": 0.99,
        "net_returns": False,
        "cutoff": (as_of - dt.timedelta(days=window_days)) if as_of else dt.datetime.min.replace(tzinfo=dt.UTC),
    }
    groups: dict[str, dict[str, _Group]] = {}
    read, _ = await _read_groups(db, QUERY, params)
    for _, grp, name, g in read:
        groups.setdefault(name or "", {})[grp] = g
    today = dt.datetime.now(rule_set.zone).date()
    names = sorted(set(groups) | {c.name for c in rule_set.campaigns})
    rows = []
    for name in names:
        treated, control = (
            groups.get(name, {}).get("treatment", _Group()),
            groups.get(name, {}).get("control", _Group()),
        )
        active = rule_set.by_name.get(name)
        rows.append(
            CampaignGlance(
                campaign=name,
                status=_status(rule_set, name, today),
                description=active.description if active else None,
                holdout=active.holdout if active else None,
                customers=treated.exposed + control.exposed,
                result=_judge(CAMPAIGN_ROW, treated, control, window_days),
                report=f"/v1/reports/uplift?campaign={quote(name)}&window_days={window_days}&format=html",
            )
        )
    return Overview(
        window_days=window_days,
        currency=rule_set.settings.currency,
        as_of=as_of,
        complete_until=state.complete_until,
        campaigns=rows,
    )


CSV_COLUMNS = (
    "campaign",
    "status",
    "holdout",
    "customers",
    "treated_repeat_rate",
    "control_repeat_rate",
    "uplift_absolute",
    "uplift_ci95_low",
    "uplift_ci95_high",
    "uplift_p_value",
    "revenue_uplift_absolute",
    "award_cost",
    "incremental_revenue",
    "return_on_cost",
    "report_status",
    "report",
    "window_days",
    "as_of",
    "complete_until",
    "replica_lag_seconds",
    "replica_lag_bytes",
)


def to_csv(report: Overview) -> str:
    return cells.to_csv(CSV_COLUMNS, (_csv_row(report, c) for c in report.campaigns))


def _csv_row(report: Overview, c: CampaignGlance) -> dict[str, Any]:
    r, u, v = c.result, c.result.uplift, c.result.revenue_uplift
    return {
        "campaign": c.campaign,
        "status": c.status,
        "holdout": c.holdout,
        "customers": c.customers,
        "treated_repeat_rate": r.treated.repeat_rate,
        "control_repeat_rate": r.control.repeat_rate,
        "uplift_absolute": u.absolute if u else None,
        "uplift_ci95_low": u.ci95[0] if u else None,
        "uplift_ci95_high": u.ci95[1] if u else None,
        "uplift_p_value": u.p_value if u else None,
        "revenue_uplift_absolute": v.absolute if v else None,
        "award_cost": r.award_cost,
        "incremental_revenue": r.incremental_revenue,
        "return_on_cost": r.return_on_cost,
        "report_status": r.status,
        "report": c.report,
        "window_days": report.window_days,
        "as_of": report.as_of,
        "complete_until": report.complete_until,
        "replica_lag_seconds": report.replica_lag_seconds,
        "replica_lag_bytes": report.replica_lag_bytes,
    }


def render_table(report: Overview) -> str:
    """A plain-text summary for the terminal."""
    lines = [
        f"every campaign: repeat purchase within {report.window_days} days of first exposure, treated against held out",
        *read_on_lines(report.replica_lag_seconds, report.replica_lag_bytes),
        "",
        f"{'campaign':<24} {'status':<20} {'customers':>10} {'uplift':>9} {'95% CI':>19} {'cost':>12} {'return':>8}",
    ]
    for c in report.campaigns:
        r, u = c.result, c.result.uplift
        ci = f"[{u.ci95[0] * 100:+.1f}, {u.ci95[1] * 100:+.1f}] pp" if u else r.status
        lines.append(
            f"{c.campaign:<24} {c.status:<20} {c.customers:>10,} "
            f"{(f'{u.absolute * 100:+.1f}pp' if u else '—'):>9} {ci:>19} {r.award_cost:>12,.2f} "
            f"{(f'{r.return_on_cost:+.2f}' if r.return_on_cost is not None else '—'):>8}"
        )
    return "\n".join(lines)


def overview_page(
    report: Overview, link: Callable[[CampaignGlance], str] = lambda c: c.report, programme: str = PROGRAMME_PAGE
) -> ReportHtml:
    """The page, each campaign linking to ``link(campaign)``, and the programme report at ``programme``."""
    rows = []
    for c in report.campaigns:
        r, u = c.result, c.result.uplift
        interval = f"{_pp(u.ci95[0])} to {_pp(u.ci95[1])}" if u else escape(r.status.replace("_", " "))
        rows.append(
            f'<tr data-campaign="{escape(c.campaign)}"><td><a href="{escape(link(c))}">{escape(c.campaign)}</a></td>'
            f"<td>{escape(c.status)}</td><td>{_pct(c.holdout, 0) if c.holdout is not None else '—'}</td>"
            f"<td>{_num('customers', f'{c.customers:,}', c.customers)}</td>"
            f"<td>{_num('uplift.absolute', _pp(u.absolute), u.absolute) if u else '—'}</td><td>{interval}</td>"
            f"<td>{_num('award_cost', _money(r.award_cost, report.currency), r.award_cost)}</td>"
            f"<td>{_num('return_on_cost', _pct(r.return_on_cost, 0), r.return_on_cost)}</td></tr>"
        )
    latest, complete = freshness(report.as_of, report.complete_until)
    replica = read_on(report.replica_lag_seconds, report.replica_lag_bytes)
    body = f"""\
<p class="sub">Each campaign as a whole, treated against its holdout: repeat purchase within {report.window_days}
{plural(report.window_days, "day")} of each customer's first exposure, award cost (in
<span data-field="currency">{escape(report.currency)}</span>) and return on it; latest event
{latest}, counting every event committed up to
{complete}.{replica} Each name opens the campaign's report;
the <a href="{escape(programme)}">programme report</a> asks whether all of them together pay.</p>
<table><tr><th>campaign</th><th>status</th><th>holdout</th><th>customers</th><th>uplift in repeat rate</th>
<th>95% interval</th><th>award cost</th><th>return on cost</th></tr>
{"".join(rows)}</table>"""
    return ReportHtml(
        title="Campaigns at a glance",
        heading="Campaigns at a glance",
        attributes=f'data-window-days="{report.window_days}"',
        body=body,
    )


def render_html(report: Overview) -> str:
    return document(overview_page(report))
