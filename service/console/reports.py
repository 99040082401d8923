"""The reports in the browser (scope ``reports:read``): every campaign at a glance, each campaign's uplift, the
programme and the redemptions, each with its CSV.

A page reads its report through the function the API's handler calls, with
the query parameters the API takes (the same names, bounds and messages), and
shows the body of the API's own page inside the console's. Its CSV link
answers, with the session cookie, exactly what the API's CSV does for the same
parameters. A query the API would refuse gives the form back with the API's
words and status.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from html import escape
from typing import Annotated, Any, Literal, get_args
from urllib.parse import parse_qsl, urlencode

from litestar import Controller, Request, Response, get
from litestar.di import NamedDependency, Provide
from litestar.exceptions import ValidationException
from litestar.types import ExceptionHandlersMap

from service.console.auth import need
from service.console.page import csv_download, page, redirect
from service.console.sessions import SignedIn
from service.keys.scopes import REPORTS_READ
from service.lib.errors import DelightError, FieldError, MalformedRequestError
from service.lib.http import refused_parameters
from service.lib.replica import ReportsDatabase
from service.lib.validation import date_time_query
from service.reports import overview, programme, redemptions, uplift
from service.reports.controller import (
    CAMPAIGN,
    PROGRAMME_FILE,
    By,
    CapPercentile,
    NetReturns,
    ProgrammeQuery,
    Since,
    SpendTiers,
    TargetUplift,
    Until,
    UpliftQuery,
    WindowDays,
    overview_filename,
    read_overview,
    read_programme,
    read_uplift,
)
from service.reports.redemptions import AsOf, OneCampaign, read_redemptions, redemptions_page
from service.reports.uplift_html import ReportHtml, uplift_page
from service.rules.ruleset import RuleSet

READER = "console_reader"


@dataclass(frozen=True, slots=True)
class Reader:
    """Who is reading, and the rule set in force, whose campaigns the forms offer."""

    user: SignedIn
    rule_set: RuleSet


async def provide_reader(
    request: Request[Any, Any, Any], user: NamedDependency[SignedIn], rule_set: NamedDependency[RuleSet]
) -> Reader:
    """The signed-in reader, once their key may read reports and the query's times are written as the API wants.

    Both are checked before any parameter is parsed: a key without the scope
    learns nothing of them, and a time such as ``from=yesterday`` gets the
    API's words. The reader stays on the request for the page a refused query
    is answered with.
    """
    need(user, REPORTS_READ)
    reader = Reader(user, rule_set)
    request.state[READER] = reader
    await date_time_query(request)
    return reader


async def without_empty_fields(request: Request[Any, Any, Any]) -> Response[str] | None:
    """Send a query with empty fields (a GET form sends ``from=&by=``) to the same page without them.

    The API refuses an empty value; on a form it means "not given". The page's
    address, and its CSV link, then hold only what was chosen.
    """
    pairs = parse_qsl(request.url.query, keep_blank_values=True)
    kept = [(name, value) for name, value in pairs if value != ""]
    if len(kept) == len(pairs):
        return None
    return redirect(f"{request.url.path}?{urlencode(kept)}" if kept else request.url.path)


def uplift_query(
    reader: NamedDependency[Reader],
    campaign: Annotated[str | None, CAMPAIGN] = None,
    window_days: WindowDays = 30,
    since: Since = None,
    until: Until = None,
    target_uplift: TargetUplift = 0.02,
    cap_percentile: CapPercentile = 99.0,
    net_returns: NetReturns = False,
    by: By = None,
    spend_tiers: SpendTiers = None,
) -> UpliftQuery | None:
    """The uplift report's parameters as the API reads them; ``None`` until a campaign is chosen.

    (``reader`` is resolved first: the scope is checked before the parameters.)
    """
    if campaign is None:
        return None
    return UpliftQuery(
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


def programme_query(
    reader: NamedDependency[Reader],
    since: Since = None,
    until: Until = None,
    cap_percentile: CapPercentile = 99.0,
    net_returns: NetReturns = False,
    by: By = None,
    spend_tiers: SpendTiers = None,
) -> ProgrammeQuery:
    """The programme report's parameters as the API reads them (after the scope, as ``uplift_query``)."""
    return ProgrammeQuery(
        since=since, until=until, cap_percentile=cap_percentile, net_returns=net_returns, by=by, spend_tiers=spend_tiers
    )


# --- the forms ------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Field:
    """One input of a report's form: a query parameter of the API's."""

    name: str
    label: str
    kind: Literal["number", "text", "checkbox", "campaign", "any campaign", "by"]
    """``campaign``: one of the rule set's campaigns; ``any campaign``: one, or every; ``by``: a breakdown."""
    default: str = ""
    attributes: str = ""


TIME_HINT = 'placeholder="2026-03-01T00:00:00Z" spellcheck="false" autocomplete="off"'
WINDOW = Field("window_days", "Window (days)", "number", "30", 'min="1" max="365" step="1" required')
SINCE = Field("from", "First exposed from", "text", attributes=TIME_HINT)
UNTIL = Field("to", "to (not included)", "text", attributes=TIME_HINT)
CAP = Field("cap_percentile", "Cap revenue at percentile", "number", "99", 'min="50" max="100" step="any" required')
NET = Field("net_returns", "Net of refunds", "checkbox")
BY = Field("by", "Break down by", "by")
TIERS = Field("spend_tiers", "Spend tiers", "text", attributes='placeholder="100,500" spellcheck="false"')
TARGET = Field("target_uplift", "Uplift to plan for", "number", "0.02", 'min="0.001" max="1" step="any" required')


@dataclass(frozen=True, slots=True)
class Kind:
    """One report of the console: its page, its CSV and its form."""

    title: str
    path: str
    csv: str
    fields: tuple[Field, ...]


OVERVIEW = Kind("Campaigns at a glance", "/console/reports", "/console/reports/campaigns.csv", (WINDOW,))
UPLIFT = Kind(
    "Uplift of a campaign",
    "/console/reports/uplift",
    "/console/reports/uplift.csv",
    (Field("campaign", "Campaign", "campaign"), WINDOW, SINCE, UNTIL, CAP, NET, BY, TIERS, TARGET),
)
PROGRAMME = Kind(
    "The programme", "/console/reports/programme", "/console/reports/programme.csv", (SINCE, UNTIL, CAP, NET, BY, TIERS)
)
REDEMPTIONS = Kind(
    "Redemptions",
    "/console/reports/redemptions",
    "/console/reports/redemptions.csv",
    (
        Field("campaign", "Campaign", "any campaign"),
        Field("as_of", "Expiry judged as of", "text", attributes=TIME_HINT),
    ),
)
SUBNAV = (("Campaigns", OVERVIEW), ("Programme", PROGRAMME), ("Redemptions", REDEMPTIONS))


def _options(chosen: str, choices: list[tuple[str, str]]) -> str:
    return "".join(
        f'<option value="{escape(value)}"{" selected" if value == chosen else ""}>{escape(label)}</option>'
        for value, label in choices
    )


def _input(field: Field, value: str, rule_set: RuleSet, invalid: bool) -> str:
    common = f'id="{field.name}" name="{field.name}"' + (' aria-invalid="true"' if invalid else "")
    label = f'<label for="{field.name}">{escape(field.label)}</label>'
    if field.kind == "checkbox":
        checked = " checked" if value.lower() in ("true", "1") else ""
        return f'<div class="check"><input {common} type="checkbox" value="true"{checked}>{label}</div>'
    if field.kind in ("campaign", "any campaign", "by"):
        if field.kind == "by":
            choices = [("", "nothing")] + [(d, d.replace("_", " ")) for d in get_args(uplift.Dimension)]
        else:
            names = [c.name for c in rule_set.campaigns]
            if value and value not in names:
                names.append(value)  # one with history only, as the overview lists it
            choices = [(n, n) for n in names]
            if field.kind == "any campaign":
                choices.insert(0, ("", "every campaign"))
        return f"<div>{label}<select {common}>{_options(value, choices)}</select></div>"
    return f'<div>{label}<input {common} type="{field.kind}" value="{escape(value)}" {field.attributes}></div>'


def _form(kind: Kind, values: Mapping[str, str], rule_set: RuleSet, invalid: set[str]) -> str:
    inputs = "".join(_input(f, values.get(f.name, f.default), rule_set, f.name in invalid) for f in kind.fields)
    return (
        f'<form method="get" action="{kind.path}" class="row report-form">{inputs}'
        '<div><button type="submit">Show</button></div></form>'
    )


def _problem(problem: DelightError, from_litestar: bool) -> str:
    """The API's message: its field errors, and its detail unless that only repeats the address."""
    detail = "" if from_litestar and problem.errors else f"<p>{escape(problem.detail)}</p>"
    errors = "".join(f"<li><code>{escape(e.field)}</code>: {escape(e.message)}</li>" for e in problem.errors or [])
    return f'<div class="flash" role="alert">{detail}{f"<ul>{errors}</ul>" if errors else ""}</div>'


def _page(
    reader: Reader,
    kind: Kind,
    values: Mapping[str, str],
    *,
    title: str | None = None,
    heading: str | None = None,
    content: str = "",
    csv: str | None = None,
    problem: str = "",
    invalid: set[str] | None = None,
    status: int = 200,
) -> Response[str]:
    subnav = " ".join(f'<a href="{k.path}"{" aria-current=page" if k is kind else ""}>{name}</a>' for name, k in SUBNAV)
    download = f'<p><a href="{escape(csv)}" download>Download CSV</a></p>' if csv else ""
    body = (
        f'<nav class="subnav" aria-label="Reports">{subnav}</nav>'
        f"<h1>{heading or escape(kind.title)}</h1>{problem}"
        f"{_form(kind, values, reader.rule_set, invalid or set())}{download}{content}"
    )
    return page(title or kind.title, body, reader.user, "reports", status=status)


def _shown(reader: Reader, kind: Kind, request: Request[Any, Any, Any], report: ReportHtml) -> Response[str]:
    """The report's own body inside the console's page, under its form, with the CSV of the same query."""
    query = request.url.query
    return _page(
        reader,
        kind,
        request.query_params,
        title=report.title,
        heading=report.heading,
        content=f'<div class="report" {report.attributes}>{report.body}</div>',
        csv=f"{kind.csv}?{query}" if query else kind.csv,
    )


def _refusal(request: Request[Any, Any, Any], kind: Kind, problem: DelightError, from_litestar: bool) -> Response[str]:
    said = _problem(problem, from_litestar)
    reader: Reader | None = request.state.get(READER)
    if reader is None:  # refused before the reader was known: no rule set loaded
        return page(kind.title, f"<h1>{escape(kind.title)}</h1>{said}", None, status=problem.status)
    invalid = {e.field for e in problem.errors or []}
    return _page(reader, kind, request.query_params, problem=said, invalid=invalid, status=problem.status)


def _refused(kind: Kind) -> ExceptionHandlersMap:
    """Answer a query the API would refuse with the form, the API's message and its status."""

    def by_litestar(request: Request[Any, Any, Any], exc: ValidationException) -> Response[str]:
        return _refusal(request, kind, refused_parameters(exc), from_litestar=True)

    def by_report(request: Request[Any, Any, Any], exc: DelightError) -> Response[str]:
        return _refusal(request, kind, exc, from_litestar=False)

    return {ValidationException: by_litestar, DelightError: by_report}


def _uplift_link(window_days: int) -> Callable[[overview.CampaignGlance], str]:
    return lambda c: f"{UPLIFT.path}?{urlencode({'campaign': c.campaign, 'window_days': window_days})}"


ReportsDb = NamedDependency[ReportsDatabase]
UPLIFT_QUERY = {"asked": Provide(uplift_query, sync_to_thread=False)}
PROGRAMME_QUERY = {"asked": Provide(programme_query, sync_to_thread=False)}


class ReportPages(Controller):
    path = "/reports"
    dependencies = {"reader": Provide(provide_reader)}
    before_request = staticmethod(without_empty_fields)

    @get("/", exception_handlers=_refused(OVERVIEW))
    async def show_campaigns(
        self,
        request: Request[Any, Any, Any],
        reader: NamedDependency[Reader],
        reports_db: ReportsDb,
        window_days: WindowDays = 30,
    ) -> Response[str]:
        report = await read_overview(reports_db, reader.rule_set, window_days)
        html = overview.overview_page(report, link=_uplift_link(window_days), programme=PROGRAMME.path)
        return _shown(reader, OVERVIEW, request, html)

    @get("/campaigns.csv", exception_handlers=_refused(OVERVIEW))
    async def campaigns_csv(
        self,
        request: Request[Any, Any, Any],
        reader: NamedDependency[Reader],
        reports_db: ReportsDb,
        window_days: WindowDays = 30,
    ) -> Response[str]:
        report = await read_overview(reports_db, reader.rule_set, window_days)
        return csv_download(overview.to_csv(report), f"{overview_filename(window_days)}.csv")

    @get("/uplift", dependencies=UPLIFT_QUERY, exception_handlers=_refused(UPLIFT))
    async def show_uplift(
        self,
        request: Request[Any, Any, Any],
        reader: NamedDependency[Reader],
        asked: NamedDependency[UpliftQuery | None],
        reports_db: ReportsDb,
    ) -> Response[str]:
        if asked is None:
            return _page(reader, UPLIFT, request.query_params, content="<p>Choose a campaign, then Show.</p>")
        report = await read_uplift(reports_db, reader.rule_set, asked)
        return _shown(reader, UPLIFT, request, uplift_page(report))

    @get("/uplift.csv", dependencies=UPLIFT_QUERY, exception_handlers=_refused(UPLIFT))
    async def uplift_csv(
        self,
        request: Request[Any, Any, Any],
        reader: NamedDependency[Reader],
        asked: NamedDependency[UpliftQuery | None],
        reports_db: ReportsDb,
    ) -> Response[str]:
        if asked is None:
            raise MalformedRequestError(
                "the uplift report needs a campaign", errors=[FieldError("campaign", "is required")]
            )
        report = await read_uplift(reports_db, reader.rule_set, asked)
        return csv_download(uplift.to_csv(report), f"{asked.filename}.csv")

    @get("/programme", dependencies=PROGRAMME_QUERY, exception_handlers=_refused(PROGRAMME))
    async def show_programme(
        self,
        request: Request[Any, Any, Any],
        reader: NamedDependency[Reader],
        asked: NamedDependency[ProgrammeQuery],
        reports_db: ReportsDb,
    ) -> Response[str]:
        report = await read_programme(reports_db, reader.rule_set, asked)
        return _shown(reader, PROGRAMME, request, programme.programme_page(report))

    @get("/programme.csv", dependencies=PROGRAMME_QUERY, exception_handlers=_refused(PROGRAMME))
    async def programme_csv(
        self,
        request: Request[Any, Any, Any],
        reader: NamedDependency[Reader],
        asked: NamedDependency[ProgrammeQuery],
        reports_db: ReportsDb,
    ) -> Response[str]:
        report = await read_programme(reports_db, reader.rule_set, asked)
        return csv_download(programme.to_csv(report), f"{PROGRAMME_FILE}.csv")

    @get("/redemptions", exception_handlers=_refused(REDEMPTIONS))
    async def show_redemptions(
        self,
        request: Request[Any, Any, Any],
        reader: NamedDependency[Reader],
        reports_db: ReportsDb,
        campaign: OneCampaign = None,
        as_of: AsOf = None,
    ) -> Response[str]:
        report = await read_redemptions(reports_db, campaign=campaign, as_of=as_of)
        return _shown(reader, REDEMPTIONS, request, redemptions_page(report))

    @get("/redemptions.csv", exception_handlers=_refused(REDEMPTIONS))
    async def redemptions_csv(
        self,
        reader: NamedDependency[Reader],
        reports_db: ReportsDb,
        campaign: OneCampaign = None,
        as_of: AsOf = None,
    ) -> Response[str]:
        report = await read_redemptions(reports_db, campaign=campaign, as_of=as_of)
        return csv_download(redemptions.to_csv(report), redemptions.FILENAME)
