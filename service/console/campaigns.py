"""The Campaigns and Rule sets sections (scope ``rules:admin``): what runs, what it has spent, and how it changed.

A campaign's figures are those of ``GET /v1/rules`` (``rule_set_overview``);
its burn-down adds up its awards day by day in the shop's time zone. The rule
sets are the versions stored with every activation, compared file by file,
and the last refused reload is the one the registry wrote to the audit log.
"""

from __future__ import annotations

import datetime as dt
import difflib
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from html import escape
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, urlencode
from zoneinfo import ZoneInfo

from litestar import Controller, Request, Response, get
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, QueryParameter
from sqlalchemy.ext.asyncio import AsyncSession

from service.audit import repository as audit
from service.console.auth import need
from service.console.page import page
from service.console.sessions import SignedIn
from service.keys.scopes import RULES_ADMIN
from service.rules import repository as rules_repo
from service.rules.controller import BudgetOut, CampaignOut, LimitOut, RuleOut, RuleSetOut, rule_set_overview
from service.rules.ruleset import Campaign, RuleSet

WEEK = 7
"""Awards "over 7 days" are those of today and the six days before it."""
BURN_DOWN_DAYS = 366
"""A burn-down shows at most this many days; the days before them are added up in one opening row."""
VERSIONS_LISTED = 200
ACTIVATIONS_LISTED = 50


def _raw(value: object) -> str:
    if value is None:
        return ""
    return value.isoformat() if isinstance(value, dt.date) else str(value)


def _field(name: str, shown: str, raw: object) -> str:
    """A figure as the page shows it, with the value a program would read (``data-value``) under its API name."""
    return f'<span data-field="{escape(name)}" data-value="{escape(_raw(raw))}">{escape(shown)}</span>'


def _money(value: float | Decimal | None, currency: str = "") -> str:
    return "—" if value is None else f"{value:,.2f} {currency}".rstrip()


def _when(at: dt.datetime, zone: ZoneInfo) -> str:
    local = at.astimezone(zone)
    return f'<time datetime="{at.isoformat()}">{local:%Y-%m-%d %H:%M:%S %Z}</time>'


def _every(seconds: int) -> str:
    for unit, size in (("week", 7 * 86400), ("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds % size == 0:
            n = seconds // size
            return unit if n == 1 else f"{n} {unit}s"
    return f"{seconds} seconds"


def _limit(limit: LimitOut | None) -> str:
    return "none" if limit is None else f"{limit.per_customer:,} per customer every {_every(limit.every_seconds)}"


def _not_found(user: SignedIn, section: str, what: str, back: str) -> Response[str]:
    return page(
        "Not found", f'<h1>Not found</h1><p>{what}</p><p><a href="{back}">Back</a></p>', user, section, status=404
    )


# --- the last refused reload -------------------------------------------------------------------------------------


async def _last_reload(db: AsyncSession, zone: ZoneInfo) -> str:
    """The errors of the last refused reload while no reload has gone through since; otherwise that one did."""
    refused = await audit.page(db, before=None, action="rules.refused", limit=1)
    activated = await rules_repo.last_activated_at(db)
    if refused and (activated is None or refused[0].at > activated):
        entry = refused[0]
        errors = [str(e) for e in entry.details.get("errors", [])]
        items = "".join(
            f'<li data-field="error" data-value="{escape(e)}"><code>{escape(e)}</code></li>' for e in errors
        )
        stays = escape(str(entry.details.get("version_in_force", "")))
        return (
            '<section class="flash" role="alert" data-field="last_reload" data-value="refused">'
            f"<h2>The last reload was refused</h2><p>{_when(entry.at, zone)}, asked by "
            f"{_field('refused_by', entry.actor, entry.actor)}: {len(errors):,} "
            f"error{'' if len(errors) == 1 else 's'}; version <code>{stays}</code> stays in force. "
            "Fix the rule files and reload again.</p>"
            f"<ul>{items}</ul></section>"
        )
    since = f" ({_when(activated, zone)})" if activated else ""
    return f'<p class="ok" data-field="last_reload" data-value="ok">The last reload went through{since}.</p>'


# --- campaigns ---------------------------------------------------------------------------------------------------


def _schedule(c: CampaignOut) -> str:
    start = _field("active_from", str(c.active_from), c.active_from) if c.active_from else ""
    end = _field("active_until", str(c.active_until), c.active_until) if c.active_until else ""
    if start and end:
        return f"{start} to {end}"
    return f"from {start}" if start else f"until {end}" if end else "every day"


def _budget(b: BudgetOut | None, currency: str) -> str:
    """What is spent, and against the caps there are: a cap not set is not shown."""
    if b is None:
        return "none"

    def f(name: str, shown: str, raw: object) -> str:
        return _field(f"budget.{name}", shown, raw)

    awards = f"{f('awards_spent', f'{b.awards_spent:,}', b.awards_spent)} awards given"
    if b.awards is not None:
        awards += f" of {f('awards', f'{b.awards:,}', b.awards)}, "
        awards += f"{f('awards_left', f'{b.awards_left:,}', b.awards_left)} left"
    cost = f"{f('cost_spent', _money(b.cost_spent, currency), b.cost_spent)} spent"
    if b.cost is not None:
        cost += f" of {f('cost', _money(b.cost, currency), b.cost)}, "
        cost += f"{f('cost_left', _money(b.cost_left, currency), b.cost_left)} left"
    daily = [
        f(name, shown, cap)
        for name, cap, shown in (
            ("daily_awards", b.daily_awards, f"{b.daily_awards:,} awards"),
            ("daily_cost", b.daily_cost, _money(b.daily_cost, currency)),
        )
        if cap is not None
    ]
    today = (
        f"today {f('awards_today', f'{b.awards_today:,}', b.awards_today)} awards, "
        f"{f('cost_today', _money(b.cost_today, currency), b.cost_today)}"
        + (f" (at most {' and '.join(daily)} a day)" if daily else "")
    )
    return f"<div>{awards}</div><div>{cost}</div><div>{today}</div>"


def _facts(c: CampaignOut, week: int, currency: str) -> str:
    holdout = (
        f"{_field('holdout', f'{c.holdout:.0%}', c.holdout)} of customers get nothing"
        if c.holdout
        else _field("holdout", "none", c.holdout)
    )
    return (
        '<dl class="facts">'
        f"<dt>Runs</dt><dd>{_schedule(c)}</dd>"
        f"<dt>Holdout</dt><dd>{holdout}</dd>"
        f"<dt>Awards</dt><dd>{_field('awards_today', f'{c.awards_today:,}', c.awards_today)} today, "
        f"{_field('awards_7d', f'{week:,}', week)} over the last {WEEK} days</dd>"
        f"<dt>Budget</dt><dd>{_budget(c.budget, currency)}</dd>"
        "</dl>"
    )


def _status(status: str) -> str:
    return f'<span class="status" data-field="status" data-value="{status}">{status}</span>'


def _campaign_card(c: CampaignOut, campaign: Campaign, today: dt.date, week: int, currency: str) -> str:
    status = campaign.status_on(today)
    description = f'<p class="sub">{escape(c.description)}</p>' if c.description else ""
    return (
        f'<article class="card" data-campaign="{escape(c.campaign)}">'
        f'<h2><a href="/console/campaigns/{quote(c.campaign)}">{escape(c.campaign)}</a> {_status(status)}</h2>'
        f"{description}{_facts(c, week, currency)}</article>"
    )


def _gifts_table(state: RuleSetOut, currency: str) -> str:
    if not state.gifts:
        return "<p>The catalogue has no gifts.</p>"
    rows = "".join(
        f'<tr data-gift="{escape(g.id)}"><td class="text">{escape(g.name)} <code>{escape(g.id)}</code></td>'
        f"<td>{_field('unit_cost', _money(g.unit_cost, currency), g.unit_cost)}</td>"
        f"<td>{_field('stock', 'unlimited' if g.stock is None else f'{g.stock:,}', g.stock)}</td>"
        f"<td>{_field('stock_left', 'unlimited' if g.stock_left is None else f'{g.stock_left:,}', g.stock_left)}</td>"
        "</tr>"
        for g in state.gifts
    )
    return (
        '<div class="table-wrap"><table><thead><tr><th class="text">gift</th><th>unit cost</th><th>stock</th>'
        f"<th>stock left</th></tr></thead><tbody>{rows}</tbody></table></div>"
    )


def _rules_table(rules: Sequence[RuleOut], currency: str) -> str:
    def variants(r: RuleOut) -> str:
        if not r.variants:
            return ""
        return "<br>".join(
            f"{escape(v.id)}: {escape(v.kind)}, weight {v.weight:g}, {_money(v.cost, currency)}" for v in r.variants
        )

    rows = "".join(
        f'<tr data-rule="{escape(r.id)}"><td class="text"><code>{escape(r.id)}</code></td>'
        f'<td class="text"><code>{escape(r.when)}</code></td><td class="text">{escape(r.kind)}</td>'
        f"<td>{_field('chance', f'{r.chance:.0%}', r.chance)}</td>"
        f"<td>{_field('priority', str(r.priority), r.priority)}</td>"
        f"<td>{_field('cost', _money(r.cost, currency), r.cost)}</td>"
        f'<td class="text">{_limit(r.limit)}</td><td class="text">{variants(r)}</td>'
        f'<td class="text"><code>{escape(Path(r.source).name)}:{r.line}</code></td></tr>'
        for r in rules
    )
    return (
        '<div class="table-wrap"><table><thead><tr><th class="text">rule</th><th class="text">when</th>'
        '<th class="text">award</th><th>chance</th><th>priority</th><th>cost</th><th class="text">limit</th>'
        f'<th class="text">variants</th><th class="text">source</th></tr></thead><tbody>{rows}</tbody></table></div>'
    )


@dataclass(frozen=True, slots=True)
class Day:
    """One row of a burn-down: the campaign's awards and their cost that day, and what is spent and left after it."""

    day: dt.date | None
    """``None`` for the opening row: every day before the first one shown."""
    awards: int
    cost: Decimal
    cumulative_awards: int
    cumulative_cost: Decimal
    stock_left: dict[str, int]
    """Of each gift with a stock the campaign gives, given by any campaign."""


def _span(campaign: Campaign, given: Sequence[dt.date], today: dt.date) -> tuple[dt.date, dt.date] | None:
    """The days a burn-down covers: from the campaign's start or first award, whichever is earlier, up to today
    (or its last day, once it has ended); ``None`` for a campaign that has not started and given nothing."""
    starts = [d for d in (campaign.starts, min(given, default=None)) if d is not None]
    first = min(starts, default=today)
    if first > today:
        return None
    last = today if campaign.until is None else min(today, campaign.until)
    return first, max(last, max(given, default=last), first)


def burn_down(
    campaign: Campaign,
    today: dt.date,
    days: Sequence[Any],
    gift_days: Sequence[Any],
    stocks: dict[str, int],
) -> list[Day]:
    """Day by day, what the campaign gave and spent, from ``days`` (``campaign_days`` rows), and how much of each
    gift in ``stocks`` (id → stock) was left, from ``gift_days`` (``gift_days`` rows)."""
    given = {r.day: (int(r.awards), Decimal(r.cost or 0)) for r in days}
    span = _span(campaign, list(given), today)
    if span is None:
        return []
    first, last = span
    shown_from = max(first, last - dt.timedelta(days=BURN_DOWN_DAYS - 1))
    taken: dict[dt.date, dict[str, int]] = {}
    for r in gift_days:
        taken.setdefault(r.day, {})[r.gift_id] = int(r.awards)
    used = dict.fromkeys(stocks, 0)

    def take(day: dt.date) -> None:
        for gift, n in taken.get(day, {}).items():
            if gift in used:
                used[gift] += n

    def left() -> dict[str, int]:
        return {gift: max(stock - used[gift], 0) for gift, stock in stocks.items()}

    awards, cost = 0, Decimal(0)
    for day in sorted(set(given) | set(taken)):
        if day < shown_from:
            n, c = given.get(day, (0, Decimal(0)))
            awards, cost = awards + n, cost + c
            take(day)
    rows = [Day(None, awards, cost, awards, cost, left())] if shown_from > first else []
    day = shown_from
    while day <= last:
        n, c = given.get(day, (0, Decimal(0)))
        awards, cost = awards + n, cost + c
        take(day)
        rows.append(Day(day, n, c, awards, cost, left()))
        day += dt.timedelta(days=1)
    return rows


CHART_W, CHART_H, LEFT, BOTTOM, TOP, RIGHT = 640, 220, 70, 26, 20, 14


def _chart(caption: str, points: Sequence[tuple[dt.date, float]], cap: float | None, cap_label: str) -> str:
    """A line of ``points`` over the days, against ``cap`` when there is one: an inline SVG, no script."""
    top = max([v for _, v in points] + [cap or 0.0]) or 1.0
    span = max(len(points) - 1, 1)

    def x(i: int) -> float:
        return LEFT + (CHART_W - LEFT - RIGHT) * i / span

    def y(v: float) -> float:
        return TOP + (CHART_H - TOP - BOTTOM) * (1 - v / top)

    line = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, (_, v) in enumerate(points))
    limit = (
        f'<line x1="{LEFT}" x2="{CHART_W - RIGHT}" y1="{y(cap):.1f}" y2="{y(cap):.1f}" stroke="#a01b1b" '
        f'stroke-dasharray="6 4"/><text x="{CHART_W - RIGHT}" y="{y(cap) - 5:.1f}" text-anchor="end" '
        f'fill="#a01b1b">{escape(cap_label)}</text>'
        if cap is not None
        else ""
    )
    return (
        f'<figure><svg class="chart" viewBox="0 0 {CHART_W} {CHART_H}" role="img" aria-label="{escape(caption)}" '
        'font-size="15" font-family="system-ui, sans-serif" fill="#1d2330">'
        f'<line x1="{LEFT}" x2="{LEFT}" y1="{TOP}" y2="{CHART_H - BOTTOM}" stroke="#aab1bd"/>'
        f'<line x1="{LEFT}" x2="{CHART_W - RIGHT}" y1="{CHART_H - BOTTOM}" y2="{CHART_H - BOTTOM}" stroke="#aab1bd"/>'
        f'<text x="{LEFT - 6}" y="{TOP + 5}" text-anchor="end">{top:,.0f}</text>'
        f'<text x="{LEFT - 6}" y="{CHART_H - BOTTOM}" text-anchor="end">0</text>'
        f'<text x="{LEFT}" y="{CHART_H - 6}">{points[0][0]}</text>'
        f'<text x="{CHART_W - RIGHT}" y="{CHART_H - 6}" text-anchor="end">{points[-1][0]}</text>'
        f'{limit}<polyline points="{line}" fill="none" stroke="#0b5cad" stroke-width="2.5"/>'
        f'<circle cx="{x(len(points) - 1):.1f}" cy="{y(points[-1][1]):.1f}" r="4" fill="#0b5cad"/></svg>'
        f"<figcaption>{escape(caption)}</figcaption></figure>"
    )


def _burn_down_html(
    rows: list[Day],
    campaign: Campaign,
    c: CampaignOut,
    stocks: dict[str, int],
    gift_names: dict[str, str],
    currency: str,
) -> str:
    if not rows:
        return f"<p>Nothing yet: the campaign starts on {campaign.starts}.</p>"
    cost_cap = None if c.budget is None or c.budget.cost is None else Decimal(str(c.budget.cost))
    awards_cap = None if c.budget is None else c.budget.awards
    days = [(r.day, r) for r in rows if r.day is not None]
    if awards_cap is not None and cost_cap is None:
        charts = [
            _chart(
                f"Awards to date, against the budget of {awards_cap:,}",
                [(day, float(r.cumulative_awards)) for day, r in days],
                awards_cap,
                f"budget {awards_cap:,}",
            )
        ]
    else:
        against = f", against the budget of {_money(cost_cap, currency)}" if cost_cap is not None else ""
        charts = [
            _chart(
                f"Cost to date in {currency}{against}",
                [(day, float(r.cumulative_cost)) for day, r in days],
                None if cost_cap is None else float(cost_cap),
                f"budget {_money(cost_cap)}",
            )
        ]
    charts += [
        _chart(
            f"{gift_names[gift]}: stock left of {stock:,}",
            [(day, float(r.stock_left[gift])) for day, r in days],
            stock,
            f"stock {stock:,}",
        )
        for gift, stock in stocks.items()
    ]
    heads = ["awards", f"cost ({escape(currency)})", "awards to date", "cost to date"]
    heads += ["awards left"] if awards_cap is not None else []
    heads += ["budget left"] if cost_cap is not None else []
    heads += [f"{escape(gift_names[g])} left" for g in stocks]

    def row(d: Day) -> str:
        cells = [
            _field("awards", f"{d.awards:,}", d.awards),
            _field("cost", _money(d.cost), d.cost),
            _field("cumulative_awards", f"{d.cumulative_awards:,}", d.cumulative_awards),
            _field("cumulative_cost", _money(d.cumulative_cost), d.cumulative_cost),
        ]
        if awards_cap is not None:
            left = max(awards_cap - d.cumulative_awards, 0)
            cells.append(_field("awards_left", f"{left:,}", left))
        if cost_cap is not None:
            money_left = max(cost_cap - d.cumulative_cost, Decimal(0))
            cells.append(_field("cost_left", _money(money_left), money_left))
        cells += [_field(f"stock_left.{g}", f"{d.stock_left[g]:,}", d.stock_left[g]) for g in stocks]
        label = str(d.day) if d.day is not None else f"before {days[0][0]}"
        return (
            f'<tr data-day="{_raw(d.day) or "before"}"><td class="text">{label}</td>'
            + "".join(f"<td>{cell}</td>" for cell in cells)
            + "</tr>"
        )

    return (
        '<div class="charts">' + "".join(charts) + "</div>"
        '<div class="table-wrap"><table class="burn-down"><thead><tr><th class="text">day</th>'
        + "".join(f"<th>{h}</th>" for h in heads)
        + f"</tr></thead><tbody>{''.join(row(d) for d in reversed(rows))}</tbody></table></div>"
    )


def _stocks(campaign: Campaign) -> tuple[dict[str, int], dict[str, str]]:
    """The gifts with a stock the campaign gives (id → stock), and their names."""
    gifts = [
        g
        for rule in campaign.rules
        for option in (rule.variants or (rule,))
        if (g := option.gift) is not None and g.stock is not None
    ]
    return {g.id: g.stock for g in gifts if g.stock is not None}, {g.id: g.name for g in gifts}


class CampaignPages(Controller):
    path = "/campaigns"

    @get("/")
    async def campaigns(
        self, request: Request[Any, Any, Any], user: NamedDependency[SignedIn], rule_set: NamedDependency[RuleSet]
    ) -> Response[str]:
        need(user, RULES_ADMIN)
        today = dt.datetime.now(rule_set.zone).date()
        async with request.app.state.reports_db.reading() as db:
            state = await rule_set_overview(db, rule_set)
            week = await rules_repo.awards_between(db, today - dt.timedelta(days=WEEK - 1), today, rule_set.zone)
            last_reload = await _last_reload(db, rule_set.zone)
        currency = rule_set.settings.currency
        cards = "".join(
            _campaign_card(c, rule_set.by_name[c.campaign], today, week.get(c.campaign, 0), currency)
            for c in state.campaigns
        )
        body = (
            "<h1>Campaigns</h1>"
            f'<p class="sub">Rule set <a href="/console/rules/{quote(state.version)}">'
            f"<code>{_field('version', state.version, state.version)}</code></a>, loaded "
            f"{_when(state.loaded_at, rule_set.zone)}; days are counted in "
            f"{_field('timezone', state.timezone, state.timezone)}, where it is {today} today. "
            f"Money is in {escape(currency)}.</p>"
            f"{last_reload}"
            f'<div class="cards">{cards or "<p>The rule set has no campaign.</p>"}</div>'
            f"<h2>Gifts</h2>{_gifts_table(state, currency)}"
        )
        return page("Campaigns", body, user, "campaigns")

    @get("/{name:str}")
    async def campaign(
        self,
        request: Request[Any, Any, Any],
        user: NamedDependency[SignedIn],
        rule_set: NamedDependency[RuleSet],
        name: FromPath[str],
    ) -> Response[str]:
        need(user, RULES_ADMIN)
        campaign = rule_set.by_name.get(name)
        if campaign is None:
            return _not_found(
                user,
                "campaigns",
                f"No campaign <code>{escape(name)}</code> in the rule set in force.",
                "/console/campaigns",
            )
        today = dt.datetime.now(rule_set.zone).date()
        stocks, gift_names = _stocks(campaign)
        async with request.app.state.reports_db.reading() as db:
            state = await rule_set_overview(db, rule_set)
            week = await rules_repo.awards_between(db, today - dt.timedelta(days=WEEK - 1), today, rule_set.zone)
            days = await rules_repo.campaign_days(db, name, rule_set.settings.timezone)
            gifts = await rules_repo.gift_days(db, list(stocks), rule_set.settings.timezone)
        c = next(c for c in state.campaigns if c.campaign == name)
        currency = rule_set.settings.currency
        status = campaign.status_on(today)
        rows = burn_down(campaign, today, days, gifts, stocks)
        source = rule_set.files.get(Path(campaign.source).name, "")
        description = f'<p class="sub">{escape(c.description)}</p>' if c.description else ""
        body = (
            f'<p><a href="/console/campaigns">All campaigns</a></p>'
            f'<h1 data-campaign="{escape(name)}">{escape(name)} {_status(status)}</h1>{description}'
            f'<p><a href="/console/reports/uplift?{urlencode({"campaign": name})}">Its uplift report</a>: '
            "does it bring customers back, against its holdout?</p>"
            f"{_facts(c, week.get(name, 0), currency)}"
            f"<p>Limit per customer: {_limit(c.limit)}.</p>"
            f"<h2>Rules</h2>{_rules_table(c.rules, currency)}"
            f"<h2>Burn-down</h2>"
            '<p class="sub">Each day in the shop\'s time zone since the campaign started or first gave something: '
            "its awards and their cost, and what is spent and left after the day, newest first.</p>"
            f"{_burn_down_html(rows, campaign, c, stocks, gift_names, currency)}"
            f"<h2>Its file: <code>{escape(Path(campaign.source).name)}</code></h2>"
            f"<pre>{escape(source)}</pre>"
        )
        return page(name, body, user, "campaigns")


# --- rule sets ---------------------------------------------------------------------------------------------------


def _diff_line(line: str) -> str:
    kind = "hunk" if line.startswith("@@") else "add" if line[:1] == "+" else "del" if line[:1] == "-" else ""
    return f'<span class="{kind}">{escape(line)}</span>' if kind else escape(line)


def diff(old: dict[str, str], new: dict[str, str]) -> str:
    """Every file that differs between two versions, as a unified diff; the unchanged ones named."""
    parts, same = [], []
    for name in sorted(old.keys() | new.keys()):
        before, after = old.get(name), new.get(name)
        if before == after:
            same.append(name)
            continue
        change = "added" if before is None else "removed" if after is None else "changed"
        lines = difflib.unified_diff((before or "").splitlines(), (after or "").splitlines(), lineterm="")
        text = "\n".join(_diff_line(line) for line in list(lines)[2:])  # without the ---/+++ file names
        parts.append(
            f'<h3 data-file="{escape(name)}"><code>{escape(name)}</code> <span class="status">{change}</span></h3>'
            f'<pre class="diff">{text}</pre>'
        )
    if not parts:
        parts.append("<p>The two versions have the same files.</p>")
    if same:
        parts.append(f'<p class="sub">Unchanged: {", ".join(f"<code>{escape(n)}</code>" for n in same)}.</p>')
    return "".join(parts)


def _version_link(version: str | None) -> str:
    if not version:
        return "—"
    return f'<a href="/console/rules/{quote(version)}"><code>{escape(version)}</code></a>'


def _diff_form(versions: Sequence[Any], chosen: tuple[str | None, str | None], zone: ZoneInfo) -> str:
    def options(selected: str | None) -> str:
        return "".join(
            f'<option value="{escape(v.version)}"{" selected" if v.version == selected else ""}>{escape(v.version)}'
            f"{f' — put in force {v.activated_at.astimezone(zone):%Y-%m-%d %H:%M}' if v.activated_at else ''}</option>"
            for v in versions
        )

    return (
        '<form method="get" action="/console/rules" class="row">'
        f'<div><label for="from">From version</label><select id="from" name="from">{options(chosen[0])}</select></div>'
        f'<div><label for="to">To version</label><select id="to" name="to">{options(chosen[1])}</select></div>'
        '<div><button type="submit">Show the differences</button></div></form>'
    )


class RuleSetPages(Controller):
    path = "/rules"

    @get("/")
    async def rule_sets(
        self,
        request: Request[Any, Any, Any],
        user: NamedDependency[SignedIn],
        rule_set: NamedDependency[RuleSet],
        from_: Annotated[str | None, QueryParameter(name="from")] = None,
        to: FromQuery[str | None] = None,
    ) -> Response[str]:
        need(user, RULES_ADMIN)
        zone = rule_set.zone
        async with request.app.state.reports_db.reading() as db:
            versions = await rules_repo.history(db, VERSIONS_LISTED)
            activations = await audit.page(db, before=None, action="rules.activated", limit=ACTIVATIONS_LISTED)
            last_reload = await _last_reload(db, zone)
            old = await rules_repo.stored(db, from_) if from_ else None
            new = await rules_repo.stored(db, to) if to else None
        status, compared = 200, ""
        if from_ or to:
            if old is None or new is None:
                status = 422
                compared = (
                    '<p class="flash" role="alert">Choose two stored versions to compare: '
                    f"<code>{escape((from_ if old is None else to) or 'none')}</code> is not one.</p>"
                )
            else:
                compared = f"<h2>From {_version_link(old.version)} to {_version_link(new.version)}</h2>" + diff(
                    old.files, new.files
                )
        default = (versions[1].version if len(versions) > 1 else rule_set.version, rule_set.version)
        in_force = next((v for v in versions if v.version == rule_set.version), None)
        since = (
            f", put in force {_when(in_force.activated_at, zone)} by {escape(in_force.activated_by or '—')}"
            if in_force is not None and in_force.activated_at
            else ""
        )
        body = [
            "<h1>Rule sets</h1>",
            f'<p class="sub">In force: <a href="/console/rules/{quote(rule_set.version)}">'
            f"<code>{_field('version', rule_set.version, rule_set.version)}</code></a>{since}. "
            "Each version is stored with its files when it is put in force; a version is the hash of its files.</p>",
            last_reload,
            "<h2>Compare two versions</h2>",
            _diff_form(versions, (from_ or default[0], to or default[1]), zone),
            compared,
            "<h2>Versions</h2>",
            _versions_table(versions, rule_set.version, zone),
            "<h2>Who put which version in force</h2>",
            _activations_table(activations, zone),
        ]
        return page("Rule sets", "".join(body), user, "rules", status=status)

    @get("/{version:str}")
    async def version(
        self,
        request: Request[Any, Any, Any],
        user: NamedDependency[SignedIn],
        rule_set: NamedDependency[RuleSet],
        version: FromPath[str],
    ) -> Response[str]:
        need(user, RULES_ADMIN)
        async with request.app.state.reports_db.reading() as db:
            stored = await rules_repo.stored(db, version)
        if stored is None:
            return _not_found(user, "rules", f"No stored rule set <code>{escape(version)}</code>.", "/console/rules")
        files = "".join(
            f'<h2 id="{escape(name)}"><code>{escape(name)}</code></h2><pre data-file="{escape(name)}">'
            f"{escape(text)}</pre>"
            for name, text in sorted(stored.files.items())
        )
        when = (
            f"Last put in force {_when(stored.activated_at, rule_set.zone)} by {escape(stored.activated_by or '—')}"
            if stored.activated_at
            else "Not put in force since it was first loaded"
        )
        compare = urlencode({"from": version, "to": rule_set.version})
        body = (
            '<p><a href="/console/rules">All rule sets</a></p>'
            f"<h1>Rule set <code>{_field('version', version, version)}</code>"
            f"{' <span class=status>in force</span>' if version == rule_set.version else ''}</h1>"
            f'<p class="sub">{when}. <a href="/console/rules?{compare}">Compare with the version in force</a>.</p>'
            f"{files}"
        )
        return page(f"Rule set {version}", body, user, "rules")


def _versions_table(versions: Sequence[Any], current: str, zone: ZoneInfo) -> str:
    if not versions:
        return "<p>No version stored yet.</p>"
    rows = "".join(
        f'<tr data-version="{escape(v.version)}"><td class="text">{_version_link(v.version)}'
        f"{' <span class=status>in force</span>' if v.version == current else ''}</td>"
        f'<td class="text">{_when(v.activated_at, zone) if v.activated_at else "—"}</td>'
        f'<td class="text">{escape(v.activated_by or "—")}</td>'
        f'<td class="text">{_when(v.first_loaded_at, zone)}</td></tr>'
        for v in versions
    )
    more = f'<p class="sub">The newest {VERSIONS_LISTED} versions.</p>' if len(versions) == VERSIONS_LISTED else ""
    return (
        '<div class="table-wrap"><table><thead><tr><th class="text">version</th>'
        '<th class="text">last put in force</th><th class="text">by</th><th class="text">first loaded</th></tr>'
        f"</thead><tbody>{rows}</tbody></table></div>{more}"
    )


def _activations_table(entries: Sequence[Any], zone: ZoneInfo) -> str:
    if not entries:
        return "<p>No activation in the audit log.</p>"
    rows = "".join(
        f'<tr data-entry="{e.entry_id}"><td class="text">{_when(e.at, zone)}</td>'
        f'<td class="text">{escape(e.actor)}</td><td class="text">{_version_link(e.subject)}</td>'
        f'<td class="text">{_version_link(e.details.get("previous_version"))}</td></tr>'
        for e in entries
    )
    return (
        '<div class="table-wrap"><table><thead><tr><th class="text">when</th><th class="text">who</th>'
        '<th class="text">version</th><th class="text">replaced</th></tr></thead>'
        f"<tbody>{rows}</tbody></table></div>"
        '<p><a href="/console/audit?action=rules.activated">In the audit log</a></p>'
    )
