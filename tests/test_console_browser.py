"""The console in a real headless Chromium, used as a person uses it: by keyboard, on a phone, offline.

A real ``delight serve`` on the test database and Redis answers; Chromium and
the server are started as ``tests.browsing`` says. Every browser context the
tests open is watched (``Watch``): when a test is done with it, it must have
asked nothing of another origin, logged no error (a refused style or script is
one), and shown the API key in no page, cookie or address.

Sections land one at a time: a page that exists joins ``WALKED_PAGES`` and is
walked like the others, by Tab from its first control to its last, at a
phone's width.
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
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.console import sessions
from service.keys.scopes import REPORTS_READ, RULES_ADMIN
from service.keys.service import create_key
from service.lib.db import transaction
from tests.browsing import chromium as system_chromium
from tests.browsing import delight_serve
from tests.conftest import TEST_RULES

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


# --- a real server and a real browser --------------------------------------------------------------------------


@pytest.fixture(scope="module")
async def chromium() -> AsyncIterator[Browser]:
    async with system_chromium() as launched:
        yield launched


@pytest.fixture(scope="module")
def served(
    chromium: Browser, database_url: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """``delight serve`` on the test database and Redis with the tests' rule pack; its base URL."""
    rules = tmp_path_factory.mktemp("console-rules") / "rules"
    shutil.copytree(TEST_RULES, rules)
    with delight_serve(database_url, redis_url, rules, tmp_path_factory.mktemp("console-data")) as base:
        yield base


@pytest.fixture(scope="module")
async def console_key(sessionmaker: async_sessionmaker[AsyncSession]) -> Key:
    """A key that opens every section of the console."""
    async with transaction(sessionmaker) as db:
        key_id, key = await create_key(db, KEY_NAME, [RULES_ADMIN, REPORTS_READ])
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
