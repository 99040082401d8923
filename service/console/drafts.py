"""Try a draft (scope ``rules:admin``): check a draft rule set, run one event through it, back-test it.

A draft is pasted (one campaign file) or uploaded (several files); without
``settings.yaml`` or ``catalog.yaml`` it takes the ones in force, as
``POST /v1/rules/simulate`` does. Nothing is stored on the server: every page
carries the draft back in its form (the uploaded files as textareas named
``file:NAME``), so the next button sends it again and a marketer can edit any
file in place. Nothing is written either: to put a draft in force, its files go
into the rules directory and the rules are reloaded.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
import re
from html import escape
from typing import Any
from zoneinfo import ZoneInfo

import msgspec
from litestar import Controller, Request, Response, get, post
from litestar.datastructures import FormMultiDict, UploadFile
from litestar.di import NamedDependency

from service.console.auth import need, read_form, settings_of
from service.console.page import csrf_field, page
from service.console.sessions import SignedIn
from service.controls import repository as controls_repo
from service.customers import repository as customers_repo
from service.customers.profile import empty_profile
from service.events.schemas import EventIn, semantic_errors
from service.keys.scopes import RULES_ADMIN
from service.lib.db import transaction
from service.lib.errors import ReplicaBehindError, ValidationError
from service.lib.replica import ReportsDatabase
from service.lib.validation import convert
from service.reports.words import plural
from service.rules.backtest import stored_events
from service.rules.impact import impact
from service.rules.loader import RuleError, RuleSetError
from service.rules.ruleset import RuleSet
from service.rules.simulate import (
    DRAFT_NAME,
    MAX_DRAFT_CHARS,
    MAX_DRAFT_FILES,
    AwardPreview,
    CounterOut,
    LimitOut,
    RuleExplanation,
    SimulationOut,
    counter_keys,
    draft_rule_set,
    simulate,
)

DEFAULT_NAME = "draft.yaml"
KEPT = "file:"
"""Prefix of the form fields that carry a draft's files from one page to the next."""
SAMPLE = 20
"""Customer ids shown of those who would gain or lose a surprise."""
DEFAULT_DAYS = 30
NAME = re.compile(DRAFT_NAME)


class Refused(Exception):
    """The form cannot be acted on: each problem said to the marketer, with the page's status."""

    def __init__(self, problems: list[str], status: int = 400) -> None:
        super().__init__(*problems)
        self.problems = problems
        self.status = status


@dataclasses.dataclass(slots=True)
class Entered:
    """What the form holds, to act on and to show again."""

    name: str = DEFAULT_NAME
    text: str = ""
    files: dict[str, str] = dataclasses.field(default_factory=dict)
    event: str = ""
    customer: str = ""
    start: str = ""
    end: str = ""

    def draft(self) -> dict[str, str]:
        pasted = {self.name: self.text} if self.text.strip() else {}
        return {**self.files, **pasted}


def _typed(text: str) -> str:
    """A textarea's text as its file holds it: browsers send textarea lines ended by CRLF."""
    return text.replace("\r\n", "\n")


def _field(form: FormMultiDict, name: str, default: str = "") -> str:
    value = form.get(name)
    return value if isinstance(value, str) else default


async def _uploaded(value: UploadFile) -> tuple[str, str | None]:
    """An uploaded file's text, or why it cannot be part of the draft."""
    data = await value.read()
    try:
        return data.decode("utf-8"), None
    except UnicodeDecodeError:
        return "", f"{value.filename} is not UTF-8 text."


def _name_problem(name: str) -> str | None:
    if NAME.fullmatch(name):
        return None
    return (
        f"“{name}” cannot name a draft file: a name is letters, digits, `_`, `.` and `-`, "
        "begins with a letter or a digit and ends in .yaml or .yml."
    )


def _size_problem(name: str, text: str) -> str | None:
    if len(text) <= MAX_DRAFT_CHARS:
        return None
    return f"{name} is longer than {MAX_DRAFT_CHARS:,} characters."


async def read_entered(form: FormMultiDict) -> tuple[Entered, list[str]]:
    """The form's fields and draft files (kept ones, then uploads, which replace a kept file of the same name),
    with what is wrong with them; a file with a bad name, too long or not text is left out."""
    entered = Entered(
        name=_field(form, "name", DEFAULT_NAME).strip() or DEFAULT_NAME,
        text=_typed(_field(form, "text")),
        event=_typed(_field(form, "event")),
        customer=_field(form, "customer").strip(),
        start=_field(form, "from").strip(),
        end=_field(form, "to").strip(),
    )
    problems: list[str] = []
    given: list[tuple[str, str]] = []
    try:
        for key, value in form.multi_items():
            if key.startswith(KEPT) and isinstance(value, str) and value.strip():
                given.append((key.removeprefix(KEPT), _typed(value)))
            elif key == "upload" and isinstance(value, UploadFile) and value.filename:
                text, problem = await _uploaded(value)
                if problem:
                    problems.append(problem)
                else:
                    given.append((value.filename, text))
    finally:
        await form.close()
    for name, text in given:
        problem = _name_problem(name) or _size_problem(name, text)
        if problem:
            problems.append(problem)
        else:
            entered.files[name] = text
    if entered.text.strip():
        problem = _name_problem(entered.name) or _size_problem(entered.name, entered.text)
        if entered.name in entered.files:
            problem = f"{entered.name} is both pasted and among the files: give the pasted one another name."
        if problem:
            problems.append(problem)
    count = len(entered.draft())
    if count > MAX_DRAFT_FILES:
        problems.append(
            f"A draft has at most {MAX_DRAFT_FILES} files; this one has {count}. Empty the text of those to leave out."
        )
    return entered, problems


def parse_event(text: str, customer: str) -> EventIn:
    """The event the form holds, as ``POST /v1/events`` takes it; ``customer`` (when given) replaces its
    customer, to try it on someone's stored profile."""
    if not text.strip():
        raise Refused(["Enter the event to simulate, as JSON."], 422)
    try:
        raw = msgspec.json.decode(text)
    except msgspec.DecodeError as exc:
        raise Refused([f"The event is not JSON: {exc}."], 422) from None
    if customer and isinstance(raw, dict):
        raw["customer_id"] = customer
    try:
        event = convert(raw, EventIn, prefix="event")
    except ValidationError as exc:
        raise Refused([f"{e.field}: {e.message}" for e in exc.errors or []] or [exc.detail], 422) from None
    errors = semantic_errors(event, "event")
    if errors:
        raise Refused([f"{e.field}: {e.message}" for e in errors], 422)
    return event


def parse_period(first: str, last: str, zone: ZoneInfo) -> tuple[dt.datetime, dt.datetime]:
    """Days in the shop's time zone, both included (as ``delight rules backtest --from --to``): the instants
    from the first's midnight to the one after the last."""
    try:
        a, b = dt.date.fromisoformat(first), dt.date.fromisoformat(last)
        start = dt.datetime(a.year, a.month, a.day, tzinfo=zone)
        end = dt.datetime(b.year, b.month, b.day, tzinfo=zone) + dt.timedelta(days=1)
    except (ValueError, OverflowError):
        raise Refused(["From and to take dates like 2026-03-01."]) from None
    if b < a:
        raise Refused(["“To” is before “from”."])
    return start, end


# --- the page ----------------------------------------------------------------------------------------------------


def _default_event() -> str:
    now = dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")
    event = {
        "event_id": "try-1",
        "type": "purchase",
        "customer_id": "c-42",
        "occurred_at": now,
        "channel": "pos",
        "store_id": "madrid-1",
        "order": {
            "order_id": "o-try-1",
            "total": 120.0,
            "currency": "EUR",
            "items": [{"sku": "TBL-OAK", "category": "handmade", "quantity": 1, "unit_price": 120.0}],
        },
        "customer": {"first_name": "Ana"},
    }
    return json.dumps(event, indent=2, ensure_ascii=False)


def _with_defaults(entered: Entered, zone: ZoneInfo) -> Entered:
    today = dt.datetime.now(zone).date()
    return dataclasses.replace(
        entered,
        event=entered.event or _default_event(),
        start=entered.start or (today - dt.timedelta(days=DEFAULT_DAYS)).isoformat(),
        end=entered.end or today.isoformat(),
    )


def _textarea(id_: str, name: str, text: str, rows: int = 12) -> str:
    # The newline after the tag is dropped by the browser, so a text that begins with one keeps it.
    return f'<textarea id="{id_}" name="{escape(name)}" rows="{rows}" spellcheck="false">\n{escape(text)}</textarea>'


def _form(user: SignedIn, live: RuleSet, entered: Entered, max_body: int) -> str:
    kept = "".join(
        f'<label for="file-{i}">{escape(name)}</label>{_textarea(f"file-{i}", KEPT + name, text)}'
        for i, (name, text) in enumerate(sorted(entered.files.items()))
    )
    if kept:
        kept = f'<h3>Files of the draft</h3><p class="sub">Edit them here; empty one to leave it out.</p>{kept}'
    return (
        '<form method="post" action="/console/drafts" enctype="multipart/form-data">'
        f"{csrf_field(user)}"
        "<h2>The draft</h2>"
        '<p class="sub">Its campaigns replace those in force; without <code>settings.yaml</code> or '
        f"<code>catalog.yaml</code> it uses the ones in force (version <code>{escape(live.version)}</code>).</p>"
        '<label for="draft-name">File name</label>'
        f'<input type="text" id="draft-name" name="name" value="{escape(entered.name)}" spellcheck="false">'
        '<label for="draft-text">A campaign file</label>'
        f"{_textarea('draft-text', 'text', entered.text, 16)}"
        f"{kept}"
        '<label for="upload">Or upload files</label>'
        '<input type="file" id="upload" name="upload" multiple accept=".yaml,.yml" aria-describedby="limits">'
        f'<p class="sub" id="limits">At most {MAX_DRAFT_FILES} files of {MAX_DRAFT_CHARS:,} characters each, '
        f"{max_body / 2**20:g} MB in all; names like <code>autumn.yaml</code>.</p>"
        '<p><button type="submit" name="action" value="check">Check the draft</button></p>'
        "<h2>One event through the draft</h2>"
        '<label for="event">Event, as <code>POST /v1/events</code> takes it (JSON)</label>'
        f"{_textarea('event', 'event', entered.event, 14)}"
        '<label for="customer">Customer id (optional)</label>'
        f'<input type="text" id="customer" name="customer" value="{escape(entered.customer)}" '
        'aria-describedby="customer-note" spellcheck="false">'
        '<p class="sub" id="customer-note">Runs the event as this customer, on their stored profile; empty, as the '
        "event's own <code>customer_id</code>.</p>"
        '<p><button type="submit" name="action" value="simulate">Simulate</button></p>'
        "<h2>Back-test against the rules in force</h2>"
        '<p class="sub">The stored events of these days (shop time, both included) through both rule sets.</p>'
        '<div class="row">'
        f'<div><label for="from">From</label><input type="date" id="from" name="from" '
        f'value="{escape(entered.start)}"></div>'
        f'<div><label for="to">To</label><input type="date" id="to" name="to" value="{escape(entered.end)}"></div>'
        '<div><button type="submit" name="action" value="backtest">Back-test</button></div>'
        "</div></form>"
    )


def _problems(problems: list[str]) -> str:
    items = "".join(f"<li>{escape(p)}</li>" for p in problems)
    return f'<div class="flash" role="alert"><ul data-field="problems">{items}</ul></div>'


def _rule_errors(errors: list[RuleError]) -> str:
    items = "".join(
        f'<li data-error="{i}"><code data-field="where">{escape(e.path)}:{e.line}</code> '
        f'<span data-field="message">{escape(e.message)}</span></li>'
        for i, e in enumerate(errors)
    )
    return (
        f'<div class="flash" role="alert"><p>The draft has {len(errors)} {plural(len(errors), "error")}; '
        f'fix them and check again.</p><ul data-field="errors">{items}</ul></div>'
    )


def _checked(draft: RuleSet) -> str:
    campaigns, rules = len(draft.campaigns), draft.rule_count
    return (
        '<p class="flash good" role="status">OK: '
        f'<span data-field="campaigns">{campaigns}</span> {plural(campaigns, "campaign")}, '
        f'<span data-field="rules">{rules}</span> {plural(rules, "rule")}, '
        f'version <code data-field="version">{escape(draft.version)}</code></p>'
    )


def _yes(value: bool) -> str:
    return "yes" if value else "no"


def _json(value: Any) -> str:
    return escape(json.dumps(value, ensure_ascii=False, sort_keys=True))


def _span(seconds: int) -> str:
    for unit, size in (("week", 7 * 86400), ("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds % size == 0:
            n = seconds // size
            return f"{n} {plural(n, unit)}"
    return f"{seconds} seconds"


def _limit(limit: LimitOut | None) -> str:
    if limit is None:
        return "none"
    room = '<span class="ok">room left</span>' if limit.room else '<span class="error">none left</span>'
    return (
        f'<span data-field="used">{limit.used}</span> of <span data-field="per_customer">{limit.per_customer}</span>'
        f" in {_span(limit.every_seconds)}: {room}"
    )


def _counters(counters: list[CounterOut]) -> str:
    if not counters:
        return "none"

    def cap(value: Any) -> str:
        return "no cap" if value is None else f"{value:,}" if isinstance(value, int) else f"{value:,.2f}"

    rows = "".join(
        f'<tr data-counter="{escape(c.counter)}"><td class="text"><code>{escape(c.counter)}</code></td>'
        f'<td data-field="used_units">{c.used_units:,}</td><td>{cap(c.cap_units)}</td>'
        f'<td data-field="used_cost">{c.used_cost:,.2f}</td><td>{cap(c.cap_cost)}</td>'
        f'<td class="text">{_yes(c.room)}</td></tr>'
        for c in counters
    )
    return (
        '<table><thead><tr><th class="text">counter</th><th>units used</th><th>units cap</th><th>cost used</th>'
        f'<th>cost cap</th><th class="text">room</th></tr></thead><tbody>{rows}</tbody></table>'
    )


def _award(award: AwardPreview | None) -> str:
    if award is None:
        return "none"
    if award.points is not None:
        what = f'<span data-field="points">{award.points:,}</span> points'
    elif award.gift is not None:
        what = f'gift <span data-field="gift">{escape(award.gift.name)}</span> (<code>{escape(award.gift.id)}</code>)'
    elif award.offer is not None:
        what = f'offer <code data-field="offer">{_json(msgspec.to_builtins(award.offer))}</code>'
    else:
        what = escape(award.kind)
    parts = [what]
    if award.variant:
        parts.append(f'variant <code data-field="variant">{escape(award.variant)}</code>')
    parts.append(f'cost <span data-field="cost">{award.cost:,.2f}</span>')
    if award.expires_at:
        parts.append(f"expires {award.expires_at:%Y-%m-%d %H:%M} UTC")
    if award.message:
        parts.append(f'message “<span data-field="message">{escape(award.message)}</span>”')
    return "; ".join(parts)


def _explained(rule: RuleExplanation) -> str:
    clauses = "".join(
        f'<tr data-clause="{i}"><td class="text"><code data-field="text">{escape(c.text)}</code></td>'
        f'<td class="text"><code data-field="value">{_json(c.value)}</code></td>'
        f'<td class="text error" data-field="error">{escape(c.error or "")}</td></tr>'
        for i, c in enumerate(rule.clauses)
    )
    facts = [
        ("Campaign active", f'<span data-field="active">{_yes(rule.active)}</span>'),
        ("Condition matched", f'<span data-field="matched">{_yes(rule.matched)}</span>'),
        ("Chance", f'<span data-field="chance">{rule.chance:g}</span>'),
        ("Draw", "none" if rule.draw is None else f'<span data-field="draw">{rule.draw:.6f}</span>'),
        ("Group", f'<span data-field="group">{escape(rule.group or "none")}</span>'),
        ("Rule limit", f'<span data-limit="limit">{_limit(rule.limit)}</span>'),
        ("Campaign limit", f'<span data-limit="campaign_limit">{_limit(rule.campaign_limit)}</span>'),
        ("Fatigue", f'<span data-limit="fatigue">{_limit(rule.fatigue)}</span>'),
        ("Counters", _counters(rule.counters)),
        ("Award", _award(rule.award)),
    ]
    rows = "".join(
        f'<tr><th class="text" scope="row">{name}</th><td class="text">{value}</td></tr>' for name, value in facts
    )
    given = "ok" if rule.outcome == "awarded" else "note"
    return (
        f'<section data-campaign="{escape(rule.campaign)}" data-rule="{escape(rule.rule_id)}">'
        f"<h3>{escape(rule.campaign)} · {escape(rule.rule_id)}</h3>"
        f'<p class="{given}" data-field="outcome">{escape(rule.outcome)}</p>'
        '<div class="table-wrap"><table><thead><tr>'
        f'<th class="text">clause (joined by <code data-field="operator">{escape(rule.operator)}</code>)</th>'
        f'<th class="text">value</th><th class="text">error</th></tr></thead><tbody>{clauses}</tbody></table></div>'
        f'<div class="table-wrap"><table class="facts"><tbody>{rows}</tbody></table></div></section>'
    )


def _simulation(result: SimulationOut) -> str:
    c = result.customer
    awards = len(result.awards)
    return (
        "<h2>The event through the draft</h2>"
        f'<p>Draft version <code data-field="version">{escape(result.version)}</code>, event '
        f'<code data-field="event_id">{escape(result.event_id)}</code>, customer '
        f'<code data-field="customer_id">{escape(c.customer_id)}</code> after it: '
        f'<span data-field="purchase_count">{c.purchase_count}</span> {plural(c.purchase_count, "purchase")}, '
        f'<span data-field="lifetime_spend">{c.lifetime_spend:,.2f}</span> spent, '
        f'<span data-field="points_balance">{c.points_balance:,}</span> points.</p>'
        f'<p>It would give <strong data-field="awards">{awards}</strong> {plural(awards, "award")}.</p>'
        + "".join(_explained(r) for r in result.rules)
    )


def _money(value: float) -> str:
    return f"{value:,.2f}"


def _side(figures: dict[str, Any] | None, side: str) -> dict[str, str]:
    if figures is None:
        return {k: f'<td data-field="{side}_{k}">—</td>' for k in ("awards", "customers", "cost")}
    return {
        "awards": f'<td data-field="{side}_awards">{figures["awards"]:,}</td>',
        "customers": f'<td data-field="{side}_customers">{figures["customers"]:,}</td>',
        "cost": f'<td data-field="{side}_cost">{_money(figures["cost"])}</td>',
    }


def _figures_cells(live: dict[str, Any] | None, draft: dict[str, Any] | None) -> str:
    was, now = _side(live, "live"), _side(draft, "draft")
    return "".join(was[k] + now[k] for k in ("awards", "customers", "cost"))


def _who(title: str, name: str, group: dict[str, Any]) -> str:
    items = "".join(f'<li><code data-field="customer">{escape(c)}</code></li>' for c in group["sample"])
    shown = f" (the first {len(group['sample'])})" if group["customers"] > len(group["sample"]) else ""
    listed = f'<ul data-group="{name}">{items}</ul>' if items else ""
    return f'<h3>{title}: <span data-field="{name}_count">{group["customers"]:,}</span>{shown}</h3>{listed}'


ROW_CLASS = {"added": ' class="add"', "removed": ' class="del"'}


def _impact(result: dict[str, Any], live: RuleSet, draft: RuleSet, first: str, last: str) -> str:
    rows = "".join(
        f'<tr data-campaign="{escape(r["campaign"])}" data-rule="{escape(r["rule_id"])}"'
        f"{ROW_CLASS.get(r['status'], '')}>"
        f'<td class="text">{escape(r["campaign"])}</td><td class="text">{escape(r["rule_id"])}</td>'
        f'<td class="text"><span class="status" data-field="status">{r["status"]}</span></td>'
        f"{_figures_cells(r['live'], r['draft'])}</tr>"
        for r in result["rules"]
    )
    events = result["events_in_period"]
    return (
        "<h2>Back-test: the draft against the rules in force</h2>"
        f"<p>{escape(first)} to {escape(last)}, shop time: "
        f'<span data-field="events">{events:,}</span> stored {plural(events, "event")} '
        f"through version <code>{escape(live.version)}</code> (in force) and <code>{escape(draft.version)}</code> "
        "(the draft), each with fresh limits, budgets and stock. A rule is <em>changed</em> when it would do "
        "something else on these events, <em>same</em> when not, whatever its text.</p>"
        '<div class="table-wrap"><table class="diff"><thead><tr><th class="text" rowspan="2">campaign</th>'
        '<th class="text" rowspan="2">rule</th><th class="text" rowspan="2">status</th>'
        '<th colspan="2">awards</th><th colspan="2">customers</th><th colspan="2">cost</th></tr>'
        "<tr><th>in force</th><th>draft</th><th>in force</th><th>draft</th><th>in force</th><th>draft</th></tr>"
        f"</thead><tbody>{rows}</tbody>"
        '<tfoot><tr data-total="all"><th class="text" colspan="3">all rules (customers counted once)</th>'
        f"{_figures_cells(result['live'], result['draft'])}</tr></tfoot></table></div>"
        + _who("Customers who would gain a surprise", "gained", result["gained"])
        + _who("Customers who would lose their surprise", "lost", result["lost"])
    )


def _drafts_page(
    request: Request[Any, Any, Any],
    user: SignedIn,
    live: RuleSet,
    entered: Entered,
    result: str = "",
    status: int = 200,
) -> Response[str]:
    body = (
        "<h1>Try a draft</h1>"
        '<p class="sub">Check a draft rule set, run one event through it clause by clause, and back-test it '
        "against the rules in force. Nothing is written, and nothing is put in force.</p>"
        f'<div id="result">{result}</div>'
        + _form(user, live, _with_defaults(entered, live.zone), settings_of(request.app.state).app.max_body_bytes)
    )
    return page("Try a draft", body, user, "drafts", status=status)


async def _simulate(request: Request[Any, Any, Any], draft: RuleSet, entered: Entered) -> str:
    event = parse_event(entered.event, entered.customer)
    async with transaction(request.app.state.sessionmaker) as db:
        profile = await customers_repo.get_profile(db, event.customer_id) or empty_profile(event.customer_id)
        usage = await controls_repo.usage(db, counter_keys(draft, event))
    return _simulation(simulate(draft, event, profile, usage))


BACKTESTS = asyncio.Lock()
"""One back-test at a time in a serving process: it replays every stored event, beside the tills' requests."""


async def _backtest(request: Request[Any, Any, Any], live: RuleSet, draft: RuleSet, entered: Entered) -> str:
    start, end = parse_period(entered.start, entered.end, draft.zone)
    if BACKTESTS.locked():
        raise Refused(["Another back-test is running on this server; try again when it has finished."], 503)
    reports_db: ReportsDatabase = request.app.state.reports_db
    async with BACKTESTS:
        try:
            await reports_db.caught_up()
        except ReplicaBehindError as exc:
            raise Refused([exc.detail], exc.status) from None
        async with reports_db.engine.connect() as connection:
            snapshot = await connection.execution_options(isolation_level="REPEATABLE READ")
            async with snapshot.begin():
                result = await impact(live, draft, stored_events(snapshot), start, end)
    return _impact(result.as_dict(), live, draft, entered.start, entered.end)


class DraftPages(Controller):
    path = "/"

    @get("/drafts")
    async def drafts(
        self, request: Request[Any, Any, Any], user: NamedDependency[SignedIn], rule_set: NamedDependency[RuleSet]
    ) -> Response[str]:
        need(user, RULES_ADMIN)
        return _drafts_page(request, user, rule_set, Entered())

    @post("/drafts", status_code=200)
    async def try_draft(
        self, request: Request[Any, Any, Any], user: NamedDependency[SignedIn], rule_set: NamedDependency[RuleSet]
    ) -> Response[str]:
        need(user, RULES_ADMIN)
        form = await read_form(request, user.csrf)
        action = _field(form, "action")
        entered, problems = await read_entered(form)
        files = entered.draft()
        if not problems and not files:
            problems = ["The draft is empty: paste a campaign file or upload the draft's files."]
        if not problems and action not in ("check", "simulate", "backtest"):
            problems = ["Choose what to do with the draft: check, simulate or back-test."]
        if problems:
            return _drafts_page(request, user, rule_set, entered, _problems(problems), 400)
        try:
            draft = draft_rule_set(rule_set, files)
        except RuleSetError as exc:
            return _drafts_page(request, user, rule_set, entered, _rule_errors(exc.errors), 422)
        try:
            if action == "simulate":
                result = await _simulate(request, draft, entered)
            elif action == "backtest":
                result = await _backtest(request, rule_set, draft, entered)
            else:
                result = _checked(draft)
        except Refused as exc:
            return _drafts_page(request, user, rule_set, entered, _problems(exc.problems), exc.status)
        return _drafts_page(request, user, rule_set, entered, result)
