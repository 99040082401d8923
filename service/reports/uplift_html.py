"""The uplift report as one self-contained HTML page: inline CSS and SVG, no scripts.

Every number on the page carries ``data-field`` (and the rule's section
``data-rule``) so that what people read can be checked against the JSON.
Each report page (this one, the overview's and the programme's) is built in
parts (``ReportHtml``): the API serves them as one document, the console
shows the same body inside its own pages.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from html import escape

from service.reports.stats import Z_975
from service.reports.uplift import (
    CAMPAIGN_ROW,
    GroupOutcome,
    RuleUplift,
    UpliftReport,
    breakdown_sentence,
    plan_sentence,
)
from service.reports.words import plural

TREATED, CONTROL = "#1b7f5b", "#8a8f98"
LABEL_EM = 0.7  # a generous width of one character of a label, in ems: what decides where it goes

STYLE = """
body{font:15px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1100px;
color:#1d2330;padding:0 1rem}
h1{font-size:1.5rem;margin-bottom:.2rem}h2{font-size:1.15rem;margin:0 0 .4rem}
.sub{color:#5b6372;margin-top:0}.rule{border:1px solid #dde1e7;border-radius:8px;padding:1rem 1.2rem;margin:1.2rem 0}
.grid{display:grid;grid-template-columns:1fr 1fr;gap:1rem}table{border-collapse:collapse;width:100%}
td,th{padding:.25rem .5rem;text-align:right;border-bottom:1px solid #eef0f3}
td:first-child,th:first-child{text-align:left}
.verdict{font-weight:600}.note{color:#8a4b00;margin:.2rem 0}.plan,.adjustment{color:#555;font-size:.9rem}
.status{font-size:.8rem;padding:.1rem .45rem;border-radius:4px;background:#eef0f3;margin-left:.5rem}
.legend span{display:inline-block;width:.8rem;height:.8rem;margin:0 .3rem 0 .8rem;vertical-align:middle}
"""


@dataclass(frozen=True, slots=True)
class ReportHtml:
    """A report's page in parts: the API serves it whole (``document``); the console puts it inside its own."""

    title: str
    heading: str
    """The ``h1``'s HTML."""
    attributes: str
    """The ``data-`` attributes of the element holding the body."""
    body: str
    """Everything under the heading: the freshness and the sections, tables and charts, each number a ``data-field``."""


def document(page: ReportHtml) -> str:
    """The page as one self-contained document, with its own style."""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{escape(page.title)}</title>
<meta name="viewport" content="width=device-width, initial-scale=1"><link rel="icon" href="data:,">
<style>{STYLE}</style></head>
<body {page.attributes}>
<h1>{page.heading}</h1>
{page.body}
</body></html>
"""


def freshness(as_of: dt.datetime | None, complete_until: dt.datetime | None) -> tuple[str, str]:
    """The latest event time and the instant up to which the projection counted events, as every page shows them."""
    latest = as_of.isoformat() if as_of else "no events yet"
    complete = complete_until.isoformat(timespec="seconds") if complete_until else "not built yet"
    return (
        f'<span data-field="as_of">{escape(latest)}</span>',
        f'<span data-field="complete_until">{escape(complete)}</span>',
    )


def read_on(seconds: float | None, lag_bytes: int | None) -> str:
    """Where the figures were read, as every page says it: nothing for the primary; for the reports replica, a
    sentence with how far behind it was (``replica_lag_bytes``, ``replica_lag_seconds``)."""
    if seconds is None or lag_bytes is None:
        return ""
    return (
        f" Read on the reports replica, which was {_num('replica_lag_bytes', f'{lag_bytes:,} bytes', lag_bytes)} of "
        f"WAL behind the primary when asked and caught up in {_num('replica_lag_seconds', f'{seconds:g} s', seconds)}."
    )


def _pct(value: float | None, digits: int = 1) -> str:
    return "—" if value is None else f"{value * 100:.{digits}f}%"


def _pp(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:+.1f} pp"


def _money(value: float | None, currency: str) -> str:
    return "—" if value is None else f"{value:,.2f} {currency}"


def _num(field: str, shown: str, raw: object) -> str:
    value = "" if raw is None else escape(str(raw))
    return f'<span data-field="{field}" data-value="{value}">{escape(shown)}</span>'


def _rate_interval(g: GroupOutcome) -> tuple[float, float] | None:
    if g.repeat_rate is None or not g.customers:
        return None
    p, n = g.repeat_rate, g.customers
    half = Z_975 * (p * (1 - p) / n) ** 0.5
    return max(0.0, p - half), min(1.0, p + half)


def _bars(rule: RuleUplift) -> str:
    """Repeat rate by group, with each group's 95% interval as a whisker."""
    width, height, left, bar_h = 460, 120, 80, 28
    groups = [("treated", rule.treated, TREATED), ("control", rule.control, CONTROL)]
    top = max([(_rate_interval(g) or (0.0, g.repeat_rate or 0.0))[1] for _, g, _ in groups] + [0.05])
    scale = (width - left - 20) / top
    parts = [f'<svg role="img" aria-label="repeat rate by group" width="{width}" height="{height}" class="bars">']
    for i, (name, g, colour) in enumerate(groups):
        y = 15 + i * (bar_h + 22)
        rate = g.repeat_rate or 0.0
        parts.append(f'<text x="0" y="{y + 19}" font-size="13">{name}</text>')
        parts.append(
            f'<rect data-group="{name}" x="{left}" y="{y}" width="{rate * scale:.1f}" height="{bar_h}" '
            f'fill="{colour}"><title>{name}: {_pct(g.repeat_rate)}</title></rect>'
        )
        interval = _rate_interval(g)
        if interval:
            x0, x1, mid = left + interval[0] * scale, left + interval[1] * scale, y + bar_h / 2
            parts.append(
                f'<path d="M{x0:.1f},{mid}H{x1:.1f}M{x0:.1f},{mid - 7}V{mid + 7}M{x1:.1f},{mid - 7}V{mid + 7}" '
                'stroke="#1d2330" stroke-width="1.5"/>'
            )
        # After the bar's end when it fits; otherwise ending at the drawing's right edge.
        label, x = _pct(g.repeat_rate), left + rate * scale + 6
        anchor = "start"
        if x + LABEL_EM * 12 * len(label) > width:
            x, anchor = width - 2, "end"
        parts.append(f'<text x="{x:.1f}" y="{y + bar_h + 14}" font-size="12" text-anchor="{anchor}">{label}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _curves(rule: RuleUplift, days: int) -> str:
    """Cumulative share repeated by days since first exposure, one line per group."""
    width, height, pad = 460, 200, 36
    curves = [("treated", rule.repeat_curve.treated, TREATED), ("control", rule.repeat_curve.control, CONTROL)]
    top = max([max(c, default=0.0) for _, c, _ in curves] + [0.05])
    sx, sy = (width - 2 * pad) / max(days, 1), (height - 2 * pad) / top
    parts = [
        f'<svg role="img" aria-label="cumulative repeat rate by days since exposure" width="{width}" '
        f'height="{height}" class="curves">',
        f'<path d="M{pad},{pad}V{height - pad}H{width - pad}" stroke="#b8bec8" fill="none"/>',
        f'<text x="{pad}" y="{height - 8}" font-size="12">day 0</text>',
        f'<text x="{width - pad - 40}" y="{height - 8}" font-size="12">day {days}</text>',
        f'<text x="2" y="{pad + 4}" font-size="12">{_pct(top, 0)}</text>',
    ]
    for name, curve, colour in curves:
        if not curve:
            continue
        points = [f"{pad},{height - pad}"] + [
            f"{pad + (d + 1) * sx:.1f},{height - pad - v * sy:.1f}" for d, v in enumerate(curve)
        ]
        parts.append(
            f'<polyline data-group="{name}" points="{" ".join(points)}" fill="none" stroke="{colour}" '
            'stroke-width="2"/>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _group_row(name: str, g: GroupOutcome, key: str, currency: str) -> str:
    revenue = _money(g.revenue_per_customer, currency)
    return (
        f"<tr><td>{name}</td>"
        f"<td>{_num(f'{key}.customers', f'{g.customers:,}', g.customers)}</td>"
        f"<td>{_num(f'{key}.repeaters', f'{g.repeaters:,}', g.repeaters)}</td>"
        f"<td>{_num(f'{key}.repeat_rate', _pct(g.repeat_rate), g.repeat_rate)}</td>"
        f"<td>{_num(f'{key}.revenue_per_customer', revenue, g.revenue_per_customer)}</td>"
        f"<td>{_num(f'{key}.open', f'{g.open:,}', g.open)}</td></tr>"
    )


def _verdict(rule: RuleUplift) -> str:
    u = rule.uplift
    if u is None:
        return "No verdict yet."
    if rule.srm_mismatch:
        return "Do not trust this comparison: the split differs from the holdout (sample-ratio mismatch)."
    low, high = u.ci95
    interval = f"the uplift in repeat rate is between {low * 100:+.1f} and {high * 100:+.1f} points (95% interval)"
    if low > 0:
        absolute = f"Surprises bring customers back: {interval}, all of it above zero."
    elif high < 0:
        absolute = f"Surprised customers come back less: {interval}, all of it below zero."
    else:
        absolute = f"Not distinguishable from no effect yet: {interval}, which includes zero."
    if u.relative_ci95 is None:
        return f"{absolute} No relative uplift can be given: no held-out customer repeated."
    low, high = u.relative_ci95
    relative = f"Relative to the holdout's repeat rate it is between {low * 100:+.1f}% and {high * 100:+.1f}%"
    if low <= 0 <= high:
        return f"{absolute} {relative}, which includes no change."
    return f"{absolute} {relative}."


def _variants(rule: RuleUplift, currency: str) -> str:
    """Each reward variant against the holdout, every pair against each other, and the verdict."""
    results = rule.variants
    if results is None:
        return ""
    rows = "".join(
        f'<tr data-variant="{escape(v.variant or "")}"><td>{escape(v.variant or "")}</td>'
        f"<td>{v.treated.customers:,}</td><td>{_pct(v.treated.repeat_rate)}</td>"
        f"<td>{_pp(v.uplift.absolute) if v.uplift else '—'}</td>"
        f"<td>{f'{_pp(v.uplift.ci95[0])} to {_pp(v.uplift.ci95[1])}' if v.uplift else escape(v.status)}</td>"
        f"<td>{f'{v.uplift.p_value:.3g}' if v.uplift else '—'}</td>"
        f"<td>{f'{v.uplift.p_adjusted:.3g}' if v.uplift and v.uplift.p_adjusted is not None else '—'}</td>"
        f"<td>{_money(v.treated.revenue_per_customer, currency)}</td><td>{_money(v.award_cost, currency)}</td>"
        f"<td>{_pct(v.return_on_cost, 0)}</td><td>{v.fallbacks:,}</td></tr>"
        for v in results.variants
    )
    pairs = "".join(
        f"<tr><td>{escape(c.variant)} over {escape(c.against)}</td><td>{_pp(c.repeat_rate_difference)}</td>"
        f"<td>{_pp(c.ci95[0])} to {_pp(c.ci95[1])}</td><td>{c.p_value:.3g}</td><td>{c.p_adjusted:.3g}</td>"
        f"<td>{_money(c.revenue_difference, currency)}</td><td>{c.revenue_p_adjusted:.3g}</td></tr>"
        for c in results.comparisons
    )
    comparisons = (
        "<table><tr><th>variants</th><th>repeat rate difference</th><th>95% interval</th><th>p-value</th>"
        "<th>adjusted p</th><th>revenue / customer difference</th><th>adjusted p</th></tr>"
        f"{pairs}</table>"
        if pairs
        else ""
    )
    return f"""
<h3>Reward variants</h3>
<p class="verdict variants">{escape(results.verdict)}</p>
<table><tr><th>variant</th><th>treated</th><th>repeat rate</th><th>uplift over the holdout</th><th>95% interval</th>
<th>p-value</th><th>adjusted p</th><th>revenue / customer</th><th>award cost</th><th>return on cost</th>
<th>given instead of one out of stock</th></tr>{rows}</table>
{comparisons}
<p class="adjustment">p-values adjusted by {escape(results.adjustment)}.</p>"""


def _breakdown(rule: RuleUplift) -> str:
    """The rule in each segment, and the test of each segment's uplift against the rest's."""
    b = rule.breakdown
    if b is None:
        return ""
    differences = {d.segment: d for d in b.differences}
    rows = []
    for r in b.segments:
        u, d = r.uplift, differences.get(r.segment or "")
        rows.append(
            f'<tr data-segment="{escape(r.segment or "")}"><td>{escape(r.segment or "")}</td>'
            f"<td>{r.treated.customers:,}</td><td>{_pct(r.treated.repeat_rate)}</td>"
            f"<td>{r.control.customers:,}</td><td>{_pct(r.control.repeat_rate)}</td>"
            f"<td>{_pp(u.absolute) if u else escape(r.status)}</td>"
            f"<td>{f'{_pp(u.ci95[0])} to {_pp(u.ci95[1])}' if u else '—'}</td>"
            f"<td>{f'{u.p_adjusted:.3g}' if u and u.p_adjusted is not None else '—'}</td>"
            f"<td>{_pp(d.uplift_difference) if d else '—'}</td>"
            f"<td>{f'{d.p_adjusted:.3g}' if d else '—'}</td>"
            f"<td>{('differs' if d.differs else 'no') if d else '—'}</td></tr>"
        )
    return f"""
<h3>By {escape(b.by.replace("_", " "))}</h3>
<p class="verdict segments">{escape(breakdown_sentence(b))}</p>
<table><tr><th>segment</th><th>treated</th><th>repeat rate</th><th>control</th><th>repeat rate</th>
<th>uplift</th><th>95% interval</th><th>adjusted p</th><th>uplift minus the rest's</th><th>adjusted p</th>
<th>differs</th></tr>{"".join(rows)}</table>
<p class="adjustment">p-values adjusted by {escape(b.adjustment)}.</p>"""


def _section(rule: RuleUplift, days: int, currency: str, title: str | None = None, lead: str = "") -> str:
    if title is None:
        title = "The campaign as a whole" if rule.rule_id == CAMPAIGN_ROW else f"Rule {escape(rule.rule_id)}"
    u, v, cu = rule.uplift, rule.revenue_uplift, rule.revenue_uplift_cuped
    notes = "".join(f'<p class="note">{escape(n)}</p>' for n in rule.notes)
    uplift_rows = ""
    if u:
        uplift_rows += (
            "<tr><td>repeat rate, absolute</td>"
            f"<td>{_num('uplift.absolute', _pp(u.absolute), u.absolute)}</td>"
            f"<td>{_num('uplift.ci95.0', _pp(u.ci95[0]), u.ci95[0])} to "
            f"{_num('uplift.ci95.1', _pp(u.ci95[1]), u.ci95[1])}</td>"
            f"<td>{_num('uplift.p_value', f'{u.p_value:.3g}', u.p_value)}</td></tr>"
            "<tr><td>repeat rate, relative</td>"
            f"<td>{_num('uplift.relative', _pct(u.relative), u.relative)}</td>"
            f"<td>{_pct(u.relative_ci95[0]) if u.relative_ci95 else '—'} to "
            f"{_pct(u.relative_ci95[1]) if u.relative_ci95 else '—'}</td><td></td></tr>"
        )
    if v:
        uplift_rows += (
            "<tr><td>revenue per customer (Welch)</td>"
            f"<td>{_num('revenue_uplift.absolute', _money(v.absolute, currency), v.absolute)}</td>"
            f"<td>{_money(v.ci95[0], currency)} to {_money(v.ci95[1], currency)}</td>"
            f"<td>{_num('revenue_uplift.p_value', f'{v.p_value:.3g}', v.p_value)}</td></tr>"
        )
    if cu:
        uplift_rows += (
            "<tr><td>revenue per customer, CUPED</td>"
            f"<td>{_num('revenue_uplift_cuped.absolute', _money(cu.absolute, currency), cu.absolute)}</td>"
            f"<td>{_money(cu.ci95[0], currency)} to {_money(cu.ci95[1], currency)}</td><td>{cu.p_value:.3g}</td></tr>"
        )
    for label, field, w in (
        (
            f"revenue per customer, capped at {_money(rule.revenue_cap, currency)}",
            "revenue_uplift_capped",
            rule.revenue_uplift_capped,
        ),
        ("capped revenue per customer, CUPED", "revenue_uplift_capped_cuped", rule.revenue_uplift_capped_cuped),
    ):
        if w is not None:
            uplift_rows += (
                f"<tr><td>{label}</td><td>{_num(f'{field}.absolute', _money(w.absolute, currency), w.absolute)}</td>"
                f"<td>{_money(w.ci95[0], currency)} to {_money(w.ci95[1], currency)}</td><td>{w.p_value:.3g}</td></tr>"
            )
    uplift_table = (
        f"<table><tr><th>uplift</th><th>estimate</th><th>95% interval</th><th>p-value</th></tr>{uplift_rows}</table>"
        if uplift_rows
        else ""
    )
    srm = "—" if rule.srm_p_value is None else f"{rule.srm_p_value:.3g}" + (" — mismatch" if rule.srm_mismatch else "")
    return f"""
<section class="rule" data-rule="{escape(rule.rule_id)}" data-window-days="{days}">
<h2>{title}<span class="status" data-field="status">{escape(rule.status)}</span></h2>{lead}
<p class="verdict">{_verdict(rule)}</p>{notes}
<div class="grid"><div>{_bars(rule)}</div><div>{_curves(rule, days)}
<div class="legend"><span style="background:{TREATED}"></span>treated<span style="background:{CONTROL}"></span>control
</div></div></div>
<table><tr><th>group</th><th>customers</th><th>repeaters</th><th>repeat rate</th><th>revenue / customer</th>
<th>window open</th></tr>
{_group_row("treated", rule.treated, "treated", currency)}{_group_row("control", rule.control, "control", currency)}
</table>
{uplift_table}{_variants(rule, currency)}{_breakdown(rule)}
<p class="plan">Planning: {escape(plan_sentence(rule.plan)) if rule.plan else "—"}.</p>
<table><tr><th>cost and return</th><th></th></tr>
<tr><td>award cost</td><td>{_num("award_cost", _money(rule.award_cost, currency), rule.award_cost)}</td></tr>
<tr><td>incremental revenue</td>
<td>{_num("incremental_revenue", _money(rule.incremental_revenue, currency), rule.incremental_revenue)}</td></tr>
<tr><td>return on cost</td><td>{_num("return_on_cost", _pct(rule.return_on_cost, 0), rule.return_on_cost)}</td></tr>
<tr><td>sample-ratio check p-value</td><td>{_num("srm_p_value", srm, rule.srm_p_value)}</td></tr></table>
</section>"""


def _same_customers(total: RuleUplift, rule: RuleUplift) -> bool:
    """Whether the campaign as a whole counts exactly the rule's customers, purchases and awards."""
    return (total.treated, total.control, total.award_cost) == (rule.treated, rule.control, rule.award_cost)


def uplift_page(report: UpliftReport) -> ReportHtml:
    period = (
        f"first exposed from {report.since.date() if report.since else 'the start'} "
        f"to {report.until.date() if report.until else 'now'}"
    )
    days, currency, total = report.window_days, report.currency, report.campaign_total
    sections = [_section(r, days, currency) for r in report.rules]
    if total is not None and len(report.rules) == 1 and _same_customers(total, report.rules[0]):
        (rule,) = report.rules
        lead = (
            f'<p class="sub whole">The campaign has this one rule, so the campaign as a whole is rule '
            f"{escape(rule.rule_id)}: one section says it for both.</p>"
        )
        sections = [_section(rule, days, currency, f"Rule {escape(rule.rule_id)}, the whole campaign", lead)]
    elif total is not None:
        sections.insert(0, _section(total, days, currency))
    latest, complete = freshness(report.as_of, report.complete_until)
    replica = read_on(report.replica_lag_seconds, report.replica_lag_bytes)
    body = f"""\
<p class="sub">Repeat purchase within {days} {plural(days, "day")} of each customer's first exposure, treated
against the randomised holdout; {period}; latest event {latest}, counting
every event committed up to {complete}.{replica} Intervals are 95%; a
customer counts once their window has closed. Money is in <span data-field="currency">{escape(currency)}</span>.
Revenue is {"net of refunds made in the window" if report.returns_netted else "what was paid, refunds not taken off"};
capped figures cap each customer's at the rule's {report.cap_percentile:g}th percentile. Rules share customers, so
add up the campaign's own figures, not the rules'.</p>
{"".join(sections)}"""
    return ReportHtml(
        title=f"Uplift — {report.campaign}",
        heading=f"Did the surprises of {escape(report.campaign)} pay?",
        attributes=f'data-campaign="{escape(report.campaign)}" data-window-days="{report.window_days}"',
        body=body,
    )


def render_html(report: UpliftReport) -> str:
    return document(uplift_page(report))
