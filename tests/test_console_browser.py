"""The console in a real headless Chromium, used as a person uses it: by keyboard, on a phone, offline.

A real ``delight serve`` on the test database and Redis answers; Chromium and
the server are started as ``tests.browsing`` says. Every browser context the
tests open is watched (``Watch``): when a test is done with it, it must have
asked nothing of another origin, logged no error (a refused style or script is
one), and shown the API key in no page, cookie or address.

Sections land one at a time: a page that exists joins ``WALKED_PAGES`` and is
walked like the others, by Tab from its first control to its last, at a
phone's width. What a page shows is read in the browser, from its
``data-field`` elements, and compared with what the API (and, for a back-test,
``impact``) gives for the same state.
"""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import io
import json
import shutil
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Page,
    Request,
    Response,
    Route,
    ViewportSize,
    expect,
)
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from service.console import sessions
from service.keys.scopes import EVENTS_WRITE, REPORTS_READ, RULES_ADMIN
from service.keys.service import create_key
from service.lib.db import transaction
from service.rules.backtest import stored_events
from service.rules.impact import impact
from service.rules.loader import load_rule_set
from service.rules.simulate import draft_rule_set
from tests.browsing import chromium as system_chromium
from tests.browsing import delight_serve
from tests.conftest import TEST_RULES, interaction, projected, purchase
from tests.test_console_campaigns import same
from tests.test_console_drafts import AUTUMN, DRAFT, number
from tests.test_console_reports import frozen, same_freshness
from tests.test_uplift_report import pick, population, post_batch, same_value

WALKED_PAGES = (
    "/console",
    "/console/campaigns",
    "/console/campaigns/loyal",
    "/console/rules",
    "/console/drafts",
    "/console/reports",
    "/console/reports/uplift?campaign=loyal",
    "/console/reports/programme",
    "/console/reports/redemptions",
    "/console/audit",
)
"""Every signed-in page there is, each walked by keyboard at a phone's width."""
SIGNED_OUT_PAGES = {"/console/login": ("input #key", "button Sign in")}
"""The pages before sign-in, with the controls each must have."""

THANKS = """\
campaign: thanks
description: Points for a big basket, with half the customers held out to measure what they bring
holdout: 0.5
budget: {awards: 5000, cost: 4000.00, daily_awards: 4000}
rules:
  - id: points-over-100
    when: type == "purchase" and order.total >= 100
    award: {points: 100}
  - id: points-over-300
    when: type == "purchase" and order.total >= 300
    award: {points: 150}
"""
"""Served beside the tests' rule pack: a campaign with a holdout, so its uplift report has treated and control
customers, and with a budget to show spent and left."""
BROKEN_DRAFT = DRAFT.replace("order.total >= 50\n", "order.total >= = 50\n").replace(
    ">= 500\n    award: {gift: vase}", ">= 500\n    award: {gift: lamp}"
)
"""The draft of ``tests.test_console_drafts`` with a condition that does not parse and a gift not in the catalogue."""
THANKS_DRAFT = THANKS.replace(">= 300", ">= 200")
HISTORY = [
    purchase("h-1", "c-1", 150.0, occurred_at="2026-03-01T10:00:00Z"),  # a mug either way
    purchase("h-2", "c-3", 20.0, occurred_at="2026-03-02T10:00:00Z"),
    purchase("h-3", "c-3", 20.0, occurred_at="2026-03-03T10:00:00Z"),
    purchase("h-4", "c-3", 20.0, occurred_at="2026-03-04T10:00:00Z"),  # a third visit: points in force only
    purchase("h-5", "c-4", 60.0, occurred_at="2026-03-05T10:00:00Z"),  # a mug in the draft only
    purchase("h-6", "c-5", 700.0, occurred_at="2026-03-06T10:00:00Z"),  # the added vase, and a mug either way
    {**interaction("h-7", "c-6", rating=5), "occurred_at": "2026-03-07T10:00:00Z"},  # the same review offer
    purchase("h-8", "c-42", 30.0, occurred_at="2026-03-08T10:00:00Z"),  # the customer of the page's own event
    purchase("h-9", "c-7", 60.0, occurred_at="2026-04-02T10:00:00Z"),  # after the period back-tested
]
"""Events back-tested from 2026-03-01 to 2026-03-31 (as the drafts' own test does), against ``DRAFT``."""

KEY_NAME = 'Ana <b>&</b> "co"'
"""Markup in the key's name, which every page must show as text."""
DESKTOP = ViewportSize(width=1280, height=900)
PHONE = ViewportSize(width=360, height=740)
SMALLEST_TEXT_PX = 12

CONTROLS = (
    "a[href], button:not(:disabled), input:not([type=hidden]):not(:disabled), select:not(:disabled), "
    "textarea:not(:disabled), summary"
)
MARK_CONTROLS = """els => els.filter(e => e.checkVisibility()).map((e, i) => {
    e.dataset.tabStop = i;
    const what = e.getAttribute('href') ?? (e.id ? '#' + e.id : e.textContent.trim());
    return e.tagName.toLowerCase() + ' ' + what;
})"""
FOCUSED_STOP = "() => document.activeElement?.dataset.tabStop ?? null"
READ_FIELDS = """scopes => [...document.querySelectorAll('main [data-field]')].map(e => [
    scopes.map(s => e.closest(`[data-${s}]`)?.getAttribute(`data-${s}`) ?? ''),
    e.dataset.field,
    e.dataset.value ?? e.textContent,
])"""
SMALL_TEXT = """smallest => {
    const small = [];
    const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
    for (let node = walker.nextNode(); node; node = walker.nextNode()) {
        const parent = node.parentElement;
        if (!node.textContent.trim() || !parent.checkVisibility()) continue;
        const size = parseFloat(getComputedStyle(parent).fontSize);
        if (size < smallest) small.push([node.textContent.trim().slice(0, 40), size]);
    }
    return small;
}"""


@dataclass(frozen=True)
class Key:
    key_id: str
    key: str

    @property
    def secret(self) -> str:
        return self.key.split("_", 2)[2]

    @property
    def bearer(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


@dataclass(frozen=True)
class Shown:
    """The ``data-field`` values of the page the browser shows (``data-value`` where there is one, else the text),
    each with the ``data-`` attributes named by ``scopes`` of the nearest element around it that has them."""

    scopes: tuple[str, ...]
    found: list[tuple[tuple[str, ...], str, str]]

    def _where(self, where: dict[str, str]) -> tuple[str, ...]:
        assert set(where) <= set(self.scopes)
        return tuple(where.get(scope, "") for scope in self.scopes)

    def at(self, **where: str) -> dict[str, str]:
        """The fields in exactly this scope (no other around them), by name."""
        scope = self._where(where)
        return {name: value for at, name, value in self.found if at == scope}

    def all(self, name: str, **where: str) -> list[str]:
        scope = self._where(where)
        return [value for at, field_, value in self.found if field_ == name and at == scope]

    def scoped(self, *scopes: str) -> list[tuple[str, ...]]:
        """The values of these ``data-`` attributes around fields (all of them there), in page order, once each."""
        where = [self.scopes.index(scope) for scope in scopes]
        held = (tuple(at[i] for i in where) for at, _, _ in self.found)
        return list(dict.fromkeys(values for values in held if all(values)))


async def shown(page: Page, *scopes: str) -> Shown:
    found = await page.evaluate(READ_FIELDS, list(scopes))
    return Shown(scopes, [(tuple(at), name, value) for at, name, value in found])


# --- a real server and a real browser --------------------------------------------------------------------------


@pytest.fixture(scope="module")
async def chromium() -> AsyncIterator[Browser]:
    async with system_chromium() as launched:
        yield launched


@pytest.fixture(scope="module")
def served_rules(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The rules directory served: the tests' rule pack and ``THANKS``."""
    rules = tmp_path_factory.mktemp("console-rules") / "rules"
    shutil.copytree(TEST_RULES, rules)
    (rules / "thanks.yaml").write_text(THANKS)
    return rules


@pytest.fixture(scope="module")
def served(
    chromium: Browser, database_url: str, redis_url: str, served_rules: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """``delight serve`` on the test database and Redis with ``served_rules``; its base URL."""
    with delight_serve(database_url, redis_url, served_rules, tmp_path_factory.mktemp("console-data")) as base:
        yield base


@pytest.fixture(scope="module")
async def console_key(sessionmaker: async_sessionmaker[AsyncSession]) -> Key:
    """A key that opens every section of the console."""
    async with transaction(sessionmaker) as db:
        key_id, key = await create_key(db, KEY_NAME, [RULES_ADMIN, REPORTS_READ])
    return Key(key_id, key)


@pytest.fixture(scope="module")
async def till_key(sessionmaker: async_sessionmaker[AsyncSession]) -> Key:
    """A key that posts events, as a till does."""
    async with transaction(sessionmaker) as db:
        key_id, key = await create_key(db, "till", [EVENTS_WRITE])
    return Key(key_id, key)


@dataclass
class Watch:
    """What one browser context asked for and showed, and what went wrong in it."""

    origin: str
    urls: list[str] = field(default_factory=list)
    elsewhere: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    documents: set[str] = field(default_factory=set)
    reading: list[asyncio.Task[str]] = field(default_factory=list)

    async def route(self, route: Route) -> None:
        """Only the served origin answers: the console must work with no network beyond it."""
        url = route.request.url
        self.urls.append(url)
        if url.startswith(self.origin + "/"):
            await route.continue_()
        else:
            self.elsewhere.append(url)
            await route.abort()

    def follow(self, page: Page) -> None:
        page.on("request", self._on_request)
        page.on("response", self._on_response)
        page.on("console", self._on_console)
        page.on("pageerror", lambda error: self.problems.append(f"page error: {error}"))

    def _on_request(self, request: Request) -> None:
        if request.resource_type == "document":
            self.documents.add(request.url)

    def _on_response(self, response: Response) -> None:
        if response.request.resource_type != "document" and response.status >= 400:
            self.problems.append(f"{response.status} for {response.url}")
        html = response.headers.get("content-type", "").startswith("text/html")
        if html and not 300 <= response.status < 400:
            self.reading.append(asyncio.ensure_future(response.text()))

    def _on_console(self, message: ConsoleMessage) -> None:
        if message.type not in ("error", "warning"):
            return
        url = message.location["url"]
        # A page the test opened may answer 401 or 404 on purpose, and Chromium says so; and it asks for
        # /favicon.ico by itself, which Delight does not serve (the pages name no icon).
        if message.text.startswith("Failed to load resource") and (
            url in self.documents or url.endswith("/favicon.ico")
        ):
            return
        self.problems.append(f"console {message.type}: {message.text} ({url})")

    async def pages_html(self) -> list[str]:
        return list(await asyncio.gather(*self.reading))


@asynccontextmanager
async def console(chromium: Browser, served: str, key: Key, *, phone: bool = False) -> AsyncIterator[Page]:
    """A fresh browser context on the console (a phone's, or a desktop's); once the test is done with it, checked
    for requests elsewhere, errors, and the key anywhere it could leak."""
    context = await chromium.new_context(
        base_url=served, viewport=PHONE if phone else DESKTOP, is_mobile=phone, has_touch=phone
    )
    watch = Watch(served)
    try:
        await context.route("**/*", watch.route)
        page = await context.new_page()
        watch.follow(page)
        yield page
        await assert_kept_to_itself(context, watch, key)
    finally:
        await asyncio.gather(*watch.reading, return_exceptions=True)
        await context.close()


async def assert_kept_to_itself(context: BrowserContext, watch: Watch, key: Key) -> None:
    assert watch.elsewhere == [], "the console asked another origin for something"
    assert watch.problems == []
    for secret in (key.key, key.secret):
        assert not any(secret in url for url in watch.urls), "the key in an address"
        assert not any(secret in html for html in await watch.pages_html()), "the key in a page"
        assert not any(secret in c["value"] for c in await context.cookies()), "the key in a cookie"


# --- what a person does -----------------------------------------------------------------------------------------


async def enter_key(page: Page, key: str, *, paste: bool = False) -> Response:
    """Once the page has put the focus in its key field, type ``key`` (or paste it, as one often does) and press
    Enter: the response of the page the form leads to."""
    await expect(page.locator("#key")).to_be_focused()
    if paste:
        await page.keyboard.insert_text(key)
    else:
        await page.keyboard.type(key)
    async with page.expect_navigation() as navigated:
        await page.keyboard.press("Enter")
    response = await navigated.value
    assert response is not None
    return response


async def sign_in(page: Page, key: str) -> None:
    await page.goto("/console/login")
    home = await enter_key(page, key, paste=True)
    assert home.status == 200
    assert page.url.endswith("/console"), page.url


async def press_by_keyboard(page: Page, button: str, key: str) -> Response:
    """From the control that has the focus, Tab to the button named ``button`` and press ``key`` on it: the
    response of the page the form leads to."""
    target = page.get_by_role("button", name=button, exact=True)
    for _ in range(5):
        await page.keyboard.press("Tab")
        if await target.evaluate("button => button === document.activeElement"):
            break
    else:
        raise AssertionError(f"Tab does not reach the button {button!r}")
    async with page.expect_navigation() as navigated:
        await page.keyboard.press(key)
    response = await navigated.value
    assert response is not None
    return response


async def press(page: Page, button: str) -> Response:
    """Click the button named ``button``: the response of the page the form leads to."""
    async with page.expect_navigation() as navigated:
        await page.get_by_role("button", name=button, exact=True).click()
    response = await navigated.value
    assert response is not None
    return response


async def tab_walk(page: Page) -> tuple[list[str], list[str]]:
    """The page's controls in document order, and the same controls in the order Tab reaches them (from the first
    one it reaches, round the page once)."""
    controls: list[str] = await page.locator(CONTROLS).evaluate_all(MARK_CONTROLS)
    stops: list[int] = []
    for _ in range(4 * len(controls) + 4):  # once round, from wherever focus starts, past the page's own end
        await page.keyboard.press("Tab")
        stop = await page.evaluate(FOCUSED_STOP)
        if stop is not None and (not stops or stops[-1] != int(stop)):  # a date field is a stop per part
            stops.append(int(stop))
        if 0 in stops and len(stops) - stops.index(0) == len(controls):
            break
    if 0 not in stops:
        return controls, [controls[s] for s in stops]
    first = stops.index(0)
    return controls, [controls[s] for s in stops[first : first + len(controls)]]


async def assert_fits_a_phone(page: Page) -> None:
    """No sideways scrolling of the page itself (wide tables scroll in their ``.table-wrap``), no tiny text."""
    scroll_width, inner_width = await page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    assert inner_width == PHONE["width"], "laid out at the phone's width, not zoomed out to fit something wider"
    assert scroll_width <= inner_width, f"{page.url} is {scroll_width} px wide on a {inner_width} px phone"
    assert await page.evaluate(SMALL_TEXT, SMALLEST_TEXT_PX) == [], f"text under {SMALLEST_TEXT_PX} px on {page.url}"


# --- the tests -----------------------------------------------------------------------------------------------


async def test_signing_in_by_keyboard_alone_lands_on_the_console(
    chromium: Browser, served: str, console_key: Key
) -> None:
    async with console(chromium, served, console_key) as page:
        await page.goto("/console/login")
        wrong = await enter_key(page, console_key.key[:-1] + ("x" if console_key.key[-1] != "x" else "y"))
        assert wrong.status == 401
        assert await page.get_by_role("alert").inner_text() == "That API key is not valid."
        assert await page.locator("#key").input_value() == ""

        home = await enter_key(page, console_key.key)  # focused again, and usable
        assert home.status == 200
        assert page.url == f"{served}/console"
        assert await page.locator('header [data-field="key_name"]').inner_text() == KEY_NAME
        assert KEY_NAME in await page.locator("main").inner_text()
        assert await page.locator("header .who b").count() == 0, "the key's name is text, not markup"
        cookies = {c["name"]: c for c in await page.context.cookies()}
        assert list(cookies) == ["delight_session"], "the sign-in form's cookie went with the form"
        session = cookies["delight_session"]
        assert session["httpOnly"] is True
        assert session["sameSite"] == "Strict"
        assert session["path"] == "/console"
        assert session["secure"] is False  # plain HTTP here; over TLS it is Secure (test_console_sign_in)


@pytest.mark.parametrize("path", SIGNED_OUT_PAGES)
async def test_a_signed_out_page_is_reached_by_tab_and_fits_a_phone(
    chromium: Browser, served: str, console_key: Key, path: str
) -> None:
    async with console(chromium, served, console_key, phone=True) as page:
        response = await page.goto(path)
        assert response is not None
        assert response.status == 200
        controls, reached = await tab_walk(page)
        assert reached == controls, "every control, by Tab, in the order they are on the page"
        assert set(SIGNED_OUT_PAGES[path]) <= set(controls)
        await assert_fits_a_phone(page)


@pytest.mark.parametrize("path", WALKED_PAGES)
async def test_a_page_is_reached_by_tab_fits_a_phone_and_needs_nothing_from_elsewhere(
    chromium: Browser, served: str, console_key: Key, path: str
) -> None:
    async with console(chromium, served, console_key, phone=True) as page:
        await sign_in(page, console_key.key)
        response = await page.goto(path)
        assert response is not None
        assert response.status == 200
        assert page.url == served + path
        sections = await page.locator("header nav a").evaluate_all("els => els.map(e => e.getAttribute('href'))")
        assert sections == [
            "/console/campaigns",
            "/console/rules",
            "/console/drafts",
            "/console/reports",
            "/console/audit",
        ]
        controls, reached = await tab_walk(page)
        assert reached == controls, "every control, by Tab, in the order they are on the page"
        assert {f"a {s}" for s in sections} | {"button Sign out"} <= set(controls)
        await assert_fits_a_phone(page)
        assert await page.evaluate("document.styleSheets[0].cssRules.length") > 0, "styled, from this server"


async def test_the_audit_page_and_its_csv_show_what_the_api_does(
    chromium: Browser, served: str, console_key: Key, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    async with transaction(sessionmaker) as db:
        await sessions.new_link(db, console_key.key_id, actor="=cli")  # an actor a spreadsheet would run
    async with console(chromium, served, console_key) as page:
        await sign_in(page, console_key.key)
        await page.goto("/console/audit")
        async with httpx.AsyncClient(base_url=served, timeout=30) as http:
            api = await http.get("/v1/audit", headers=console_key.bearer)
        assert api.status_code == 200, api.text
        entries: list[dict[str, Any]] = api.json()["entries"]
        assert [(e["actor"], e["action"], e["subject"]) for e in entries] == [
            (f"key {console_key.key_id}", "console.signed_in", console_key.key_id),
            ("=cli", "console.link_created", console_key.key_id),
        ]

        rows = page.locator("tr[data-entry]")
        shown = await rows.evaluate_all(
            "rows => rows.map(r => [Number(r.dataset.entry), ...[...r.cells].slice(1, 4).map(c => c.innerText)])"
        )
        assert shown == [[e["entry_id"], e["actor"], e["action"], e["subject"] or ""] for e in entries]

        async with page.expect_download() as downloading:
            await page.get_by_role("link", name="Download as CSV").click()
        download = await downloading.value
        assert download.suggested_filename == "audit.csv"
        saved = (await download.path()).read_text()  # while the context, which holds the file, is open
    lines = list(csv.DictReader(io.StringIO(saved, newline="")))
    assert [
        {
            "entry_id": int(line["entry_id"]),
            "at": dt.datetime.fromisoformat(line["at"]),
            "actor": line["actor"].removeprefix("'"),
            "action": line["action"],
            "subject": line["subject"] or None,
            "details": json.loads(line["details"]),
        }
        for line in lines
    ] == [{**e, "at": dt.datetime.fromisoformat(e["at"])} for e in entries]
    assert lines[1]["actor"] == "'=cli", "a formula made inert"


async def test_a_one_time_link_signs_in_by_its_button_once(
    chromium: Browser, served: str, console_key: Key, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    async with transaction(sessionmaker) as db:
        token = await sessions.new_link(db, console_key.key_id)
    async with console(chromium, served, console_key) as page:
        opened = await page.goto(f"/console/link/{token}")
        assert opened is not None
        assert opened.status == 200
        assert KEY_NAME in await page.locator("main").inner_text()
        async with page.expect_navigation():
            await page.get_by_role("button", name="Sign in").press("Enter")
        assert page.url == f"{served}/console"
        assert await page.locator('header [data-field="key_name"]').inner_text() == KEY_NAME

        again = await page.goto(f"/console/link/{token}")
        assert again is not None
        assert again.status == 404
        assert await page.locator("h1").inner_text() == "This link cannot be used"
        assert await page.get_by_role("button").count() == 0, "nothing to sign in with"


async def test_signing_out_by_its_button_ends_the_session_for_good(
    chromium: Browser, served: str, console_key: Key
) -> None:
    async with console(chromium, served, console_key) as page:
        await sign_in(page, console_key.key)
        (kept,) = [c for c in await page.context.cookies() if c["name"] == "delight_session"]
        async with page.expect_navigation():
            await page.get_by_role("button", name="Sign out").press("Enter")
        assert page.url == f"{served}/console/login"
        assert [c["name"] for c in await page.context.cookies()] == ["delight_form"]
        await page.goto("/console")
        assert page.url == f"{served}/console/login"

    async with console(chromium, served, console_key) as page:
        await page.context.add_cookies(  # kept by someone: it signs no one in
            [{"name": kept["name"], "value": kept["value"], "domain": kept["domain"], "path": kept["path"]}]
        )
        await page.goto("/console/audit")
        assert page.url == f"{served}/console/login?next=%2Fconsole%2Faudit"
        assert await page.locator("#key").count() == 1


# --- the pages against the API ----------------------------------------------------------------------------------


async def post_events(http: httpx.AsyncClient, till: Key, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Post one at a time, in this order (the order the engine judges them in); every award given."""
    awards: list[dict[str, Any]] = []
    for event in events:
        response = await http.post("/v1/events", json=event, headers=till.bearer)
        assert response.status_code == 201, response.text
        awards += response.json()["awards"]
    return awards


async def simulate_api(
    http: httpx.AsyncClient, key: Key, event: dict[str, Any], draft: dict[str, str], status: int = 200
) -> dict[str, Any]:
    response = await http.post("/v1/rules/simulate", json={"event": event, "draft": draft}, headers=key.bearer)
    assert response.status_code == status, response.text
    answer: dict[str, Any] = response.json()
    return answer


def yes(value: bool) -> str:
    return "yes" if value else "no"


async def assert_shows_simulation(page: Page, api: dict[str, Any]) -> None:
    """The page's run of one event through the draft is the API's: the customer after it, and for every rule its
    outcome, each clause's value, the draw, the limits, the counters and the award."""
    fields = await shown(page, "campaign", "rule", "clause", "limit", "counter")
    top = fields.at()
    customer = api["customer"]
    assert (top["version"], top["event_id"], top["customer_id"]) == (
        api["version"],
        api["event_id"],
        customer["customer_id"],
    )
    for name in ("purchase_count", "lifetime_spend", "points_balance"):
        assert number(top[name]) == customer[name], name
    assert number(top["awards"]) == len(api["awards"])
    assert fields.scoped("campaign", "rule") == [(r["campaign"], r["rule_id"]) for r in api["rules"]]
    for rule in api["rules"]:
        where = {"campaign": rule["campaign"], "rule": rule["rule_id"]}
        facts = fields.at(**where)
        assert facts["outcome"] == rule["outcome"]
        assert facts["operator"] == rule["operator"]
        assert (facts["active"], facts["matched"]) == (yes(rule["active"]), yes(rule["matched"]))
        assert float(facts["chance"]) == rule["chance"]
        if rule["draw"] is None:
            assert "draw" not in facts
        else:
            assert float(facts["draw"]) == pytest.approx(rule["draw"], abs=1e-6)
        assert facts["group"] == (rule["group"] or "none")
        clauses = [fields.at(**where, clause=str(i)) for i in range(len(rule["clauses"]))]
        assert [(c["text"], json.loads(c["value"]), c["error"]) for c in clauses] == [
            (c["text"], c["value"], c["error"] or "") for c in rule["clauses"]
        ]
        for name in ("limit", "campaign_limit", "fatigue"):
            limit, held = rule[name], fields.at(**where, limit=name)
            assert held == (
                {} if limit is None else {"used": str(limit["used"]), "per_customer": str(limit["per_customer"])}
            )
        for counter in rule["counters"]:
            used = fields.at(**where, counter=counter["counter"])
            assert (number(used["used_units"]), number(used["used_cost"])) == (
                counter["used_units"],
                counter["used_cost"],
            )
        award = rule["award"]
        if award is None:
            assert "cost" not in facts
            continue
        assert number(facts["cost"]) == award["cost"]
        assert facts.get("message") == award["message"]
        assert facts.get("points") == (None if award["points"] is None else f"{award['points']:,}")
        assert facts.get("gift") == (None if award["gift"] is None else award["gift"]["name"])


async def test_a_draft_is_checked_simulated_and_back_tested_in_the_browser_as_the_api_and_impact_say(
    chromium: Browser, served: str, served_rules: Path, console_key: Key, till_key: Key, engine: AsyncEngine
) -> None:
    async with console(chromium, served, console_key) as page, httpx.AsyncClient(base_url=served, timeout=30) as http:
        await post_events(http, till_key, HISTORY)
        await sign_in(page, console_key.key)
        await page.goto("/console/drafts")
        await page.locator("#draft-name").fill("loyal.yaml")
        pasted = page.locator("#draft-text")
        await pasted.fill(BROKEN_DRAFT)
        # The page's own event, moved to a day the draft's campaign runs, after its customer's stored purchase.
        api_event = json.loads(await page.locator("#event").input_value())
        api_event["occurred_at"] = "2026-03-09T10:00:00Z"
        await page.locator("#event").fill(json.dumps(api_event, indent=2))

        await pasted.focus()
        refused = await press_by_keyboard(page, "Check the draft", "Enter")
        assert refused.status == 422
        problem = await simulate_api(http, console_key, api_event, {"loyal.yaml": BROKEN_DRAFT}, status=422)
        errors = await shown(page, "error")
        said = [errors.at(error=str(i)) for i in range(len(problem["errors"]))]
        assert [(e["where"], e["message"]) for e in said] == [(e["field"], e["message"]) for e in problem["errors"]]
        assert [e["where"] for e in said] == ["draft/loyal.yaml:7", "draft/loyal.yaml:20"]
        assert await pasted.input_value() == BROKEN_DRAFT, "kept, to be fixed"

        await pasted.fill(DRAFT)  # the focus stays in it
        checked = await press_by_keyboard(page, "Check the draft", "Space")
        assert checked.status == 200
        simulated = await simulate_api(http, console_key, api_event, {"loyal.yaml": DRAFT})
        ok = (await shown(page)).at()
        assert (ok["campaigns"], ok["rules"], ok["version"]) == ("1", "4", simulated["version"])
        assert await page.get_by_role("status").inner_text() == f"OK: 1 campaign, 4 rules, version {ok['version']}"

        assert (await press(page, "Simulate")).status == 200
        await assert_shows_simulation(page, simulated)
        assert simulated["customer"]["purchase_count"] == 2, "on the stored profile of the event's customer"
        awarded = [r["rule_id"] for r in simulated["rules"] if r["outcome"] == "awarded"]
        assert awarded == ["mug-over-100"]  # 120 ≥ 50 in the draft

        await page.locator("#from").fill("2026-03-01")
        await page.locator("#to").fill("2026-03-31")
        assert (await press(page, "Back-test")).status == 200
        live = load_rule_set(served_rules)
        assert live.version == (await http.get("/v1/rules", headers=console_key.bearer)).json()["version"]
        draft = draft_rule_set(live, {"loyal.yaml": DRAFT})
        start, end = dt.datetime(2026, 3, 1, tzinfo=live.zone), dt.datetime(2026, 4, 1, tzinfo=live.zone)
        async with engine.connect() as connection:
            expected = (await impact(live, draft, stored_events(connection), start, end)).as_dict()
        backtested = await shown(page, "campaign", "rule", "total", "group")
        rows = [(r["campaign"], r["rule_id"]) for r in expected["rules"]]
        assert backtested.scoped("campaign", "rule") == rows
        for row in [*expected["rules"], {**expected, "campaign": "", "rule_id": "", "total": "all"}]:
            cells = backtested.at(campaign=row["campaign"], rule=row["rule_id"], total=row.get("total", ""))
            for side in ("live", "draft"):
                figures = row[side]
                for name in ("awards", "customers", "cost"):
                    cell = cells[f"{side}_{name}"]
                    if figures is None:  # a rule the side has not
                        assert cell == "—", (row, side, name)
                    else:
                        assert number(cell) == round(figures[name], 2), (row, side, name)
        statuses = {r["rule_id"]: r["status"] for r in expected["rules"]}
        assert {rule: backtested.at(campaign=c, rule=rule)["status"] for c, rule in rows} == statuses
        assert statuses == {  # what the posted events make of the draft, worked out by hand
            "mug-over-100": "changed",
            "points-on-third": "removed",
            "review-offer": "same",
            "vase-sometimes": "same",
            "vase-over-500": "added",
            "points-over-100": "removed",
            "points-over-300": "removed",
        }
        top = backtested.at()
        assert number(top["events"]) == expected["events_in_period"] == 8
        assert (number(top["gained_count"]), number(top["lost_count"])) == (1, 1)
        assert backtested.all("customer", group="gained") == expected["gained"]["sample"] == ["c-4"]
        assert backtested.all("customer", group="lost") == expected["lost"]["sample"] == ["c-3"]

        uploads = {"autumn.yaml": AUTUMN, "thanks.yaml": THANKS_DRAFT}
        await page.locator("#upload").set_input_files(
            [{"name": n, "mimeType": "application/x-yaml", "buffer": t.encode()} for n, t in uploads.items()]
        )
        assert (await press(page, "Check the draft")).status == 200
        every = {"loyal.yaml": DRAFT, **uploads}
        simulated = await simulate_api(http, console_key, api_event, every)
        assert (await shown(page)).at()["version"] == simulated["version"] == draft_rule_set(live, every).version
        for name, text in uploads.items():
            assert await page.locator(f'textarea[name="file:{name}"]').input_value() == text
        assert await page.locator("#upload").evaluate("input => input.files.length") == 0

        assert (await press(page, "Simulate")).status == 200  # the files go with the next step
        await assert_shows_simulation(page, simulated)
        assert {r["campaign"] for r in simulated["rules"]} == {"loyal", "autumn", "thanks"}
        for name, text in uploads.items():
            assert await page.locator(f'textarea[name="file:{name}"]').input_value() == text
        assert await pasted.input_value() == DRAFT


async def test_the_campaign_pages_show_what_get_v1_rules_says(
    chromium: Browser, served: str, console_key: Key, till_key: Key
) -> None:
    now = (dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)).isoformat()
    totals = (150.0, 350.0, 50.0, 120.0, 400.0, 99.0, 310.0, 101.0)
    events = [purchase(f"t-{i}", f"n-{i}", total, occurred_at=now) for i, total in enumerate(totals)]
    async with console(chromium, served, console_key) as page, httpx.AsyncClient(base_url=served, timeout=30) as http:
        awards = await post_events(http, till_key, events)
        api = (await http.get("/v1/rules", headers=console_key.bearer)).json()
        await sign_in(page, console_key.key)
        await page.goto("/console/campaigns")
        index = await shown(page, "campaign", "gift")
        detail: dict[str, Shown] = {}
        for name in ("loyal", "thanks"):
            await page.goto(f"/console/campaigns/{name}")
            detail[name] = await shown(page, "rule", "day")
    given = {c: sum(1 for a in awards if a["campaign"] == c) for c in ("loyal", "thanks")}
    assert given["loyal"] > 0
    assert given["thanks"] > 0
    gifts = {g["id"]: g for g in api["gifts"]}

    top = index.at()
    assert (top["version"], top["timezone"], top["last_reload"]) == (api["version"], api["timezone"], "ok")
    assert index.scoped("campaign") == [(c["campaign"],) for c in api["campaigns"]]
    assert index.scoped("gift") == [(g,) for g in gifts]
    for campaign in api["campaigns"]:
        for figures in (index.at(campaign=campaign["campaign"]), detail[campaign["campaign"]].at()):
            for name in ("holdout", "active_from", "active_until", "awards_today"):
                assert same(figures.get(name, ""), campaign[name]), (campaign["campaign"], name)
            budget = {k.removeprefix("budget."): v for k, v in figures.items() if k.startswith("budget.")}
            assert budget.keys() == {k for k, v in (campaign["budget"] or {}).items() if v is not None}
            for name, value in budget.items():
                assert same(value, campaign["budget"][name]), (campaign["campaign"], name)
            assert figures["status"] == "running"
            assert int(figures["awards_7d"]) == int(figures["awards_today"]) == given[campaign["campaign"]]
        for rule in campaign["rules"]:
            row = detail[campaign["campaign"]].at(rule=rule["id"])
            for name in ("chance", "priority", "cost"):
                assert same(row[name], rule[name]), (rule["id"], name)
    for gift in gifts.values():
        row = index.at(gift=gift["id"])
        for name in ("unit_cost", "stock", "stock_left"):
            assert same(row[name], gift[name]), (gift["id"], name)

    (thanks,) = [c for c in api["campaigns"] if c["campaign"] == "thanks"]
    budget = thanks["budget"]
    today = detail["thanks"].at(day=detail["thanks"].scoped("day")[0][0])  # newest first
    assert int(today["cumulative_awards"]) == int(today["awards"]) == budget["awards_spent"] == given["thanks"]
    assert float(today["cumulative_cost"]) == pytest.approx(budget["cost_spent"])
    assert int(today["awards_left"]) == budget["awards_left"]
    assert float(today["cost_left"]) == pytest.approx(budget["cost_left"])
    today = detail["loyal"].at(day=detail["loyal"].scoped("day")[0][0])
    assert int(today["stock_left.mug"]) == gifts["mug"]["stock_left"] == 100 - given["loyal"]
    assert int(today["cumulative_awards"]) == given["loyal"]


async def test_the_uplift_page_and_its_csv_download_show_what_the_api_says(
    chromium: Browser, served: str, console_key: Key, till_key: Key, engine: AsyncEngine, database_url: str
) -> None:
    async with httpx.AsyncClient(base_url=served, timeout=30) as http:
        await post_batch(http, {"events:write": till_key.bearer}, population(80, seed=5))
        await projected(database_url)
        async with frozen(engine), console(chromium, served, console_key) as page:
            await sign_in(page, console_key.key)
            await page.goto("/console/reports/uplift?campaign=thanks")
            fields = await shown(page, "rule")
            async with page.expect_download() as downloading:
                await page.get_by_role("link", name="Download CSV").click()
            download = await downloading.value
            saved = (await download.path()).read_bytes()  # while the context, which holds the file, is open
            report = (await http.get("/v1/reports/uplift?campaign=thanks", headers=console_key.bearer)).json()
            api_csv = await http.get(
                "/v1/reports/uplift?campaign=thanks", headers={**console_key.bearer, "Accept": "text/csv"}
            )
    assert api_csv.status_code == 200, api_csv.text

    total = report["campaign_total"]
    assert total["treated"]["customers"] > 0
    assert total["control"]["customers"] > 0
    rows = {r["rule_id"]: r for r in [total, *report["rules"]]}
    assert [r for (r,) in fields.scoped("rule")] == list(rows) == ["*", "points-over-100", "points-over-300"]
    for rule, row in rows.items():
        values = fields.at(rule=rule)
        assert len(values) >= 14
        assert values.pop("status") == row["status"]
        for name, value in values.items():
            assert same_value(value, pick(row, name)), (rule, name, value)
    top = fields.at()
    assert top.keys() == {"as_of", "complete_until", "currency"}
    assert top["currency"] == report["currency"]
    same_freshness(top, report)

    assert saved == api_csv.content
    disposition = api_csv.headers["content-disposition"]
    assert disposition == f'attachment; filename="{download.suggested_filename}"'
