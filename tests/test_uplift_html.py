"""The uplift report's HTML page, checked in a real headless Chromium against the JSON.

A real ``delight serve`` (on the test database and Redis, serving the same rule
pack as the in-process app) answers the browser; the data is built through the
API with ``rules_app``. Chromium loads the page with a ``reports:read`` key and
its own ``Accept`` header, and the tests read what it rendered: the text a
person sees next to every ``data-field`` against the JSON report, the bars'
drawn widths against the repeat rates and the curves' points against
``repeat_curve``.

Chromium and ``delight serve`` are started as ``tests.browsing`` says.
"""

from __future__ import annotations

import datetime as dt
import itertools
import re
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from playwright.async_api import (
    Browser,
    ConsoleMessage,
    Locator,
    Page,
    Request,
    Response,
    Route,
)

from service.reports.uplift import CAMPAIGN_ROW
from service.reports.uplift_html import render_html
from tests.browsing import chromium, delight_serve
from tests.conftest import PACK_CATALOG, AppFactory, interaction, purchase
from tests.test_report_pages import group as closed_windows
from tests.test_report_pages import judged, uplift_report

Client = AsyncTestClient[Litestar]

CAMPAIGN = "uplift-demo"
TINY = "tiny-trial"
WINDOW_DAYS = 14
CURRENCY = "GBP"
SETTINGS = f"seed: http-tests\ncurrency: {CURRENCY}\n"
MAIN_YAML = f"""\
campaign: {CAMPAIGN}
holdout: 0.5
rules:
  - id: first-mug
    when: type == "purchase" and channel == "pos" and customer.purchase_count == 1
    award: {{gift: mug}}
  - id: big-first-vase
    when: type == "purchase" and channel == "pos" and customer.purchase_count == 1 and order.total >= 100
    award: {{gift: vase}}
"""
TINY_YAML = f"""\
campaign: {TINY}
holdout: 0.5
rules:
  - id: tiny-mug
    when: type == "purchase" and channel == "web"
    award: {{gift: mug}}
  - id: never
    when: type == "purchase" and channel == "web" and order.total > 100000
    award: {{gift: lamp}}
"""
START = dt.datetime(2026, 3, 1, 10, 0, tzinfo=dt.UTC)
CLOCK = dt.datetime(2026, 5, 1, 12, 0, tzinfo=dt.UTC)  # the latest event: every window of March has closed
CUSTOMERS = 200
OPEN_CUSTOMERS = 6  # first exposed a week before the clock: their 14-day windows are still open


def _iso(moment: dt.datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


# --- a real server and a real browser --------------------------------------------------------------------------


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as launched:
        yield launched


@pytest.fixture(scope="module")
def served(
    browser: Browser, database_url: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """``delight serve`` on the test database and Redis with the rule pack ``rules_app`` gets; its base URL."""
    rules = tmp_path_factory.mktemp("uplift-rules")
    (rules / "catalog.yaml").write_text(PACK_CATALOG)
    (rules / "settings.yaml").write_text(SETTINGS)
    (rules / "c0.yaml").write_text(MAIN_YAML)
    (rules / "c1.yaml").write_text(TINY_YAML)
    with delight_serve(database_url, redis_url, rules, tmp_path_factory.mktemp("uplift-data")) as base:
        yield base


@dataclass
class Loaded:
    page: Page
    response: Response
    problems: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)


@asynccontextmanager
async def open_report(browser: Browser, url: str, headers: dict[str, str]) -> AsyncIterator[Loaded]:
    """Chromium at ``url`` with the API key on every request; console errors and failed requests collected."""
    context = await browser.new_context(extra_http_headers=headers, viewport={"width": 1280, "height": 900})
    try:
        page = await context.new_page()
        problems: list[str] = []
        requests: list[str] = []

        def on_console(message: ConsoleMessage) -> None:
            # The browser itself asks for /favicon.ico, which Delight does not serve (the page names no icon):
            # that 404 is the browser's, not the page's.
            if message.type in ("error", "warning") and not message.location["url"].endswith("/favicon.ico"):
                problems.append(f"console {message.type}: {message.text} ({message.location['url']})")

        def on_failed(request: Request) -> None:
            problems.append(f"request failed: {request.url} {request.failure}")

        page.on("console", on_console)
        page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
        page.on("requestfailed", on_failed)
        page.on("request", lambda request: requests.append(request.url))
        response = await page.goto(url, wait_until="load")
        assert response is not None
        yield Loaded(page, response, problems, requests)
    finally:
        await context.close()


def report_url(base: str, campaign: str, **extra: str) -> str:
    return f"{base}/v1/reports/uplift?" + urlencode({"campaign": campaign, "window_days": WINDOW_DAYS, **extra})


async def assert_renders(loaded: Loaded, campaign: str, screenshot: Path) -> None:
    page = loaded.page
    assert loaded.response.status == 200, await loaded.response.text()
    assert loaded.response.headers["content-type"].startswith("text/html")
    assert campaign in await page.title()
    assert campaign in await page.locator("h1").inner_text()
    assert await page.locator("body").get_attribute("data-campaign") == campaign
    assert await page.locator("body").get_attribute("data-window-days") == str(WINDOW_DAYS)
    png = await page.screenshot(full_page=True, path=screenshot)  # kept under the test's tmp_path to look at
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    assert len(png) > 10_000, "a page with tables and charts should not be a near-empty image"
    assert loaded.problems == []
    assert loaded.requests == [loaded.response.url], "the page is self-contained: no scripts, styles or images"


# --- what the page should say for a JSON value ------------------------------------------------------------------


def _count(v: Any) -> str:
    return f"{v:,}"


def _pct(v: Any) -> str:
    return "—" if v is None else f"{v * 100:.1f}%"


def _pct0(v: Any) -> str:
    return "—" if v is None else f"{v * 100:.0f}%"


def _pp(v: Any) -> str:
    return "—" if v is None else f"{v * 100:+.1f} pp"


def _money(v: Any) -> str:
    return "—" if v is None else f"{v:,.2f} {CURRENCY}"


def _g3(v: Any) -> str:
    return "—" if v is None else f"{v:.3g}"


GROUP_FIELDS: dict[str, Callable[[Any], str]] = {
    "customers": _count,
    "repeaters": _count,
    "repeat_rate": _pct,
    "revenue_per_customer": _money,
    "open": _count,
}
UPLIFT_FIELDS: dict[str, Callable[[Any], str]] = {
    "uplift.absolute": _pp,
    "uplift.ci95.0": _pp,
    "uplift.ci95.1": _pp,
    "uplift.p_value": _g3,
    "uplift.relative": _pct,
}
REVENUE_FIELDS: dict[str, Callable[[Any], str]] = {
    "revenue_uplift.absolute": _money,
    "revenue_uplift.p_value": _g3,
}
COST_FIELDS: dict[str, Callable[[Any], str]] = {
    "award_cost": _money,
    "incremental_revenue": _money,
    "return_on_cost": _pct0,
}


def json_value(rule: dict[str, Any], path: str) -> Any:
    value: Any = rule
    for part in path.split("."):
        value = value[int(part)] if part.isdigit() else value[part]
    return value


def expected_fields(rule: dict[str, Any]) -> dict[str, tuple[Any, str]]:
    """Every ``data-field`` (but ``status``) the section should carry: ``field -> (JSON value, text shown)``."""
    formats: dict[str, Callable[[Any], str]] = {
        f"{group}.{name}": fmt for group in ("treated", "control") for name, fmt in GROUP_FIELDS.items()
    }
    if rule["uplift"] is not None:
        formats.update(UPLIFT_FIELDS)
    if rule["revenue_uplift"] is not None:
        formats.update(REVENUE_FIELDS)
    if rule["revenue_uplift_cuped"] is not None:
        formats["revenue_uplift_cuped.absolute"] = _money
    for capped in ("revenue_uplift_capped", "revenue_uplift_capped_cuped"):
        if rule[capped] is not None:
            formats[f"{capped}.absolute"] = _money
    formats.update(COST_FIELDS)
    out = {name: (json_value(rule, name), fmt(json_value(rule, name))) for name, fmt in formats.items()}
    srm = rule["srm_p_value"]
    out["srm_p_value"] = (srm, _g3(srm) + (" — mismatch" if rule["srm_mismatch"] else ""))
    return out


def section(page: Page, rule_id: str) -> Locator:
    return page.locator(f'section[data-rule="{rule_id}"]')


async def assert_section_matches(page: Page, rule: dict[str, Any]) -> None:
    where = section(page, rule["rule_id"])
    assert await where.count() == 1, f"one section for rule {rule['rule_id']!r}"
    assert await where.is_visible()
    status = where.locator('[data-field="status"]')
    assert await status.inner_text() == rule["status"]
    expected = expected_fields(rule)
    shown = await where.locator("[data-value]").evaluate_all("els => els.map(e => e.dataset.field)")
    assert sorted(shown) == sorted(expected), f"rule {rule['rule_id']!r}: numbers on the page"
    for name, (value, text) in expected.items():
        element = where.locator(f'[data-field="{name}"]')
        context = f"rule {rule['rule_id']!r}, {name}"
        assert await element.is_visible(), context
        raw = await element.get_attribute("data-value")
        if value is None:
            assert raw == "", context
        else:
            assert raw is not None, context
            assert float(raw) == value, context  # the same number, to the last digit the JSON carries
            assert type(value)(raw) == value, context
        assert (await element.inner_text()).strip() == text, context


async def assert_bars_match(page: Page, rule: dict[str, Any]) -> None:
    """The two bars' drawn widths are in the ratio of the repeat rates."""
    where = section(page, rule["rule_id"])
    context = f"rule {rule['rule_id']!r}"
    widths = {}
    for group in ("treated", "control"):
        bar = where.locator(f'svg.bars rect[data-group="{group}"]')
        assert await bar.count() == 1, context
        assert await bar.locator("title").text_content() == f"{group}: {_pct(rule[group]['repeat_rate'])}"
        box = await bar.bounding_box()
        assert box is not None, context
        widths[group] = box["width"]
    rate_t, rate_c = rule["treated"]["repeat_rate"], rule["control"]["repeat_rate"]
    assert rate_t > 0, f"{context}: the test data should give both groups repeaters"
    assert rate_c > 0, f"{context}: the test data should give both groups repeaters"
    assert min(widths.values()) > 10, widths
    expected_treated = widths["control"] * rate_t / rate_c
    assert abs(widths["treated"] - expected_treated) <= max(1.0, 0.02 * expected_treated), (context, widths)
    svg_box = await where.locator("svg.bars").bounding_box()
    section_box = await where.bounding_box()
    assert svg_box is not None
    assert section_box is not None
    assert svg_box["x"] + svg_box["width"] <= section_box["x"] + section_box["width"], "bars overflow the section"


def _points(raw: str | None) -> list[tuple[float, float]]:
    assert raw
    return [(float(x), float(y)) for x, y in (pair.split(",") for pair in raw.split())]


async def assert_curves_match(page: Page, rule: dict[str, Any]) -> None:
    """One polyline per group with day 0 and days 1..N, heights in proportion to ``repeat_curve``."""
    where = section(page, rule["rule_id"])
    context = f"rule {rule['rule_id']!r}"
    points = {}
    for group in ("treated", "control"):
        curve = rule["repeat_curve"][group]
        assert len(curve) == WINDOW_DAYS, context
        assert curve == sorted(curve), f"{context}: a cumulative share never falls"
        assert curve[-1] == rule[group]["repeat_rate"], f"{context}: by day N the curve reaches the repeat rate"
        line = where.locator(f'svg.curves polyline[data-group="{group}"]')
        assert await line.count() == 1, context
        assert await line.is_visible(), context
        points[group] = _points(await line.get_attribute("points"))
        assert len(points[group]) == WINDOW_DAYS + 1, context
        xs = [x for x, _ in points[group]]
        assert all(a < b for a, b in itertools.pairwise(xs)), f"{context}: days run left to right"
    baseline = points["treated"][0][1]
    assert points["control"][0] == points["treated"][0], "both curves start at day 0, at zero"
    # one scale for both groups: the height above the baseline over the share
    top = max(max(rule["repeat_curve"][g]) for g in ("treated", "control"))
    top_y = min(y for g in ("treated", "control") for _, y in points[g])
    scale = (baseline - top_y) / top
    for group in ("treated", "control"):
        for (_, y), share in zip(points[group][1:], rule["repeat_curve"][group], strict=True):
            assert abs((baseline - y) - share * scale) <= 0.15, (context, group, share, y)
    # and as Chromium lays them out: the heights of the lines' geometry are in the ratio of the final shares
    # (getBBox, not bounding_box(): Chromium's client rect of a stroked polyline includes the stroke's miters)
    heights: dict[str, float] = {}
    for group in ("treated", "control"):
        line = where.locator(f'svg.curves polyline[data-group="{group}"]')
        heights[group] = await line.evaluate("el => el.getBBox().height")
    rate_t, rate_c = rule["treated"]["repeat_rate"], rule["control"]["repeat_rate"]
    expected_treated = heights["control"] * rate_t / rate_c
    assert abs(heights["treated"] - expected_treated) <= max(1.0, 0.02 * expected_treated), (context, heights)


# --- the data ------------------------------------------------------------------------------------------------


@dataclass
class History:
    treated: set[int]
    control: set[int]
    repeaters: set[int]


def repeats_within_window(i: int, treated: bool) -> bool:
    """Treated customers come back about twice as often: 2 in 5 against 1 in 5."""
    return i % 5 in ((0, 1) if treated else (0,))


async def post_batch(client: Client, keys: dict[str, Any], events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    response = await client.post("/v1/events/batch", json={"events": events}, headers=keys["events:write"])
    assert response.status_code == 200, response.text
    results: list[dict[str, Any]] = response.json()["results"]
    assert [r["status"] for r in results] == [201] * len(events), [r for r in results if r["status"] != 201][:3]
    return results


async def build_history(client: Client, keys: dict[str, Any]) -> History:
    """200 first purchases in March, a repeat within 14 days for some, later ones for others, then the clock."""
    firsts = [
        purchase(
            f"first-{i}",
            f"c-{i}",
            150.0 if i % 2 == 0 else 60.0,
            occurred_at=_iso(START + dt.timedelta(days=i % 20, minutes=i)),
        )
        for i in range(CUSTOMERS)
    ]
    results = await post_batch(client, keys, firsts)
    treated = {i for i, r in enumerate(results) if r.get("awards")}  # awards are left out when empty
    control = set(range(CUSTOMERS)) - treated
    later: list[dict[str, Any]] = []
    repeaters = set()
    for i in range(CUSTOMERS):
        t0 = START + dt.timedelta(days=i % 20, minutes=i)
        if repeats_within_window(i, i in treated):
            repeaters.add(i)
            day = 1 + (i * 3) % WINDOW_DAYS
            at = t0 + dt.timedelta(days=day, hours=-2)
            later.append(purchase(f"repeat-{i}", f"c-{i}", 40.0 + i % 30, occurred_at=_iso(at)))
        elif i % 5 == 2:  # comes back, but only after the window
            at = t0 + dt.timedelta(days=WINDOW_DAYS + 10)
            later.append(purchase(f"late-{i}", f"c-{i}", 55.0, occurred_at=_iso(at)))
    for k in range(OPEN_CUSTOMERS):
        at = CLOCK - dt.timedelta(days=7, minutes=k)
        later.append(purchase(f"open-{k}", f"open-{k}", 150.0, occurred_at=_iso(at)))
    later.append({**interaction("clock", "clock-customer"), "occurred_at": _iso(CLOCK)})
    await post_batch(client, keys, later)
    assert 70 <= len(treated) <= 130, "a 0.5 holdout splits 200 customers roughly in half"
    return History(treated, control, repeaters)


async def get_json(client: Client, keys: dict[str, Any], campaign: str) -> dict[str, Any]:
    response = await client.get(
        "/v1/reports/uplift", params={"campaign": campaign, "window_days": WINDOW_DAYS}, headers=keys["reports:read"]
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    report: dict[str, Any] = response.json()
    return report


def check_report_against_history(report: dict[str, Any], history: History) -> None:
    """The JSON is the reference for the page; first make sure it describes the data posted."""
    assert report["as_of"].startswith("2026-05-01T12:00:00")
    rules = {r["rule_id"]: r for r in [report["campaign_total"], *report["rules"]]}
    assert list(rules) == ["*", "big-first-vase", "first-mug"]
    everyone = set(range(CUSTOMERS))
    big = {i for i in everyone if i % 2 == 0}  # first purchases of 150 (the others are 60)
    for rule_id, people in (("*", everyone), ("first-mug", everyone), ("big-first-vase", big)):
        rule = rules[rule_id]
        assert rule["status"] == "ok", rule["notes"]
        for group, members in (("treated", history.treated), ("control", history.control)):
            assert rule[group]["customers"] == len(people & members), (rule_id, group)
            assert rule[group]["repeaters"] == len(people & members & history.repeaters), (rule_id, group)
        assert rule["treated"]["open"] + rule["control"]["open"] == OPEN_CUSTOMERS
        assert rule["uplift"]["absolute"] > 0
    assert rules["first-mug"]["award_cost"] == pytest.approx(3.10 * len(history.treated))
    assert rules["big-first-vase"]["award_cost"] == pytest.approx(4.50 * len(big & history.treated))


# --- the tests -----------------------------------------------------------------------------------------------


@pytest.fixture
async def main_report(rules_app: AppFactory, keys: dict[str, Any], served: str) -> tuple[dict[str, Any], History]:
    async with rules_app(MAIN_YAML, TINY_YAML, settings=SETTINGS) as client:
        history = await build_history(client, keys)
        report = await get_json(client, keys, CAMPAIGN)
    check_report_against_history(report, history)
    async with httpx.AsyncClient(base_url=served, timeout=30) as http:
        again = await http.get(
            "/v1/reports/uplift", params={"campaign": CAMPAIGN, "window_days": WINDOW_DAYS}, headers=keys["all"]
        )
    # the same data, complete up to a moment no earlier: the served process's projector kept the projection fresh
    served_report = again.json()
    assert served_report.pop("complete_until") >= report["complete_until"]
    assert served_report == {k: v for k, v in report.items() if k != "complete_until"}, (
        "the served process reports the same data as the in-process app"
    )
    return report, history


async def test_page_renders_in_chromium_and_every_number_matches_the_json(
    browser: Browser,
    served: str,
    keys: dict[str, Any],
    main_report: tuple[dict[str, Any], History],
    tmp_path: Path,
) -> None:
    report, _ = main_report
    # no format parameter: Chromium's own Accept header (text/html first) asks for the page
    async with open_report(browser, report_url(served, CAMPAIGN), keys["reports:read"]) as loaded:
        await assert_renders(loaded, CAMPAIGN, tmp_path / "uplift.png")
        page = loaded.page
        order = await page.locator("section[data-rule]").evaluate_all("els => els.map(e => e.dataset.rule)")
        assert order == ["*", *[r["rule_id"] for r in report["rules"]]]
        assert await page.locator('[data-field="currency"]').inner_text() == report["currency"] == CURRENCY
        assert (await section(page, "*").locator("h2").inner_text()).startswith("The campaign as a whole")
        for rule in [report["campaign_total"], *report["rules"]]:
            await assert_section_matches(page, rule)
            notes = await section(page, rule["rule_id"]).locator("p.note").all_inner_texts()
            assert notes == rule["notes"]
            assert any("windows are still open" in n for n in notes)
            verdict = await section(page, rule["rule_id"]).locator("p.verdict").inner_text()
            if rule["uplift"]["ci95"][0] > 0:
                assert verdict.startswith("Surprises bring customers back")
            else:
                assert verdict.startswith("Not distinguishable from no effect yet")


async def test_bars_and_curves_are_drawn_to_the_json(
    browser: Browser,
    served: str,
    keys: dict[str, Any],
    main_report: tuple[dict[str, Any], History],
    tmp_path: Path,
) -> None:
    report, _ = main_report
    url = report_url(served, CAMPAIGN, format="html")
    async with open_report(browser, url, keys["reports:read"]) as loaded:
        await assert_renders(loaded, CAMPAIGN, tmp_path / "uplift-charts.png")
        for rule in [report["campaign_total"], *report["rules"]]:
            await assert_bars_match(loaded.page, rule)
            await assert_curves_match(loaded.page, rule)


async def test_bar_labels_stay_inside_the_drawing_up_to_a_repeat_rate_of_100_percent(browser: Browser) -> None:
    everyone, most = closed_windows(200, 200), closed_windows(200, 190)  # 100.0% and 95.0%, whiskers reaching 100% too
    total = judged(CAMPAIGN_ROW, everyone, most)
    rules = [judged("all-back", everyone, most), judged("most-back", most, everyone)]
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        page = await context.new_page()
        await page.set_content(render_html(uplift_report(rules, total)))
        charts = page.locator("svg.bars")
        assert await charts.count() == 3
        for k in range(3):
            chart = charts.nth(k)
            width = float(await chart.get_attribute("width") or 0)
            labels = chart.locator("text")
            assert await labels.count() == 4  # the two groups' names and rates
            for box in await labels.evaluate_all(
                "els => els.map(e => { const b = e.getBBox(); return [b.x, b.width]; })"
            ):
                x, w = box
                assert x >= 0, (k, x, w)
                assert x + w <= width, (k, x, w, width)
            shown = await labels.all_text_contents()
            assert "100.0%" in shown
    finally:
        await context.close()


async def test_the_api_docs_page_renders_from_this_server_alone(browser: Browser, served: str) -> None:
    """``/schema`` in Chromium with every request to another host refused: Scalar still draws the API."""
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    elsewhere: list[str] = []

    async def only_this_server(route: Route) -> None:
        if route.request.url.startswith(served) or route.request.url.startswith("data:"):
            await route.continue_()
        else:
            elsewhere.append(route.request.url)
            await route.abort()

    try:
        await context.route("**/*", only_this_server)
        page = await context.new_page()
        response = await page.goto(f"{served}/schema", wait_until="load")
        assert response is not None
        assert response.status == 200
        # Scalar draws the document's description once its script has run and read /schema/openapi.json
        await page.get_by_text("The surprise-and-delight loyalty engine").first.wait_for(timeout=30_000)
        await page.wait_for_load_state("networkidle")
    finally:
        await context.close()
    assert elsewhere == []


async def test_the_page_needs_a_reports_key(browser: Browser, served: str, keys: dict[str, Any]) -> None:
    async with open_report(browser, report_url(served, CAMPAIGN, format="html"), keys["events:write"]) as loaded:
        assert loaded.response.status == 403
        assert "Did the surprises" not in await loaded.page.content()


async def test_insufficient_data_renders_its_status_and_no_uplift(
    rules_app: AppFactory, browser: Browser, served: str, keys: dict[str, Any], tmp_path: Path
) -> None:
    events = [
        purchase(f"tiny-{i}", f"t-{i}", 30.0, channel="web", occurred_at=_iso(START + dt.timedelta(hours=i)))
        for i in range(12)
    ]
    events += [
        purchase(f"tiny-again-{i}", f"t-{i}", 20.0, channel="web", occurred_at=_iso(START + dt.timedelta(days=3)))
        for i in range(0, 12, 3)
    ]
    events.append({**interaction("tiny-clock", "clock-customer"), "occurred_at": _iso(CLOCK)})
    async with rules_app(MAIN_YAML, TINY_YAML, settings=SETTINGS) as client:
        await post_batch(client, keys, events)
        report = await get_json(client, keys, TINY)
    rules = {r["rule_id"]: r for r in [report["campaign_total"], *report["rules"]]}
    assert [rules[r]["status"] for r in ("*", "tiny-mug", "never")] == [
        "insufficient_data",
        "insufficient_data",
        "no_customers",
    ]
    assert rules["*"]["treated"]["customers"] + rules["*"]["control"]["customers"] == 12

    async with open_report(browser, report_url(served, TINY, format="html"), keys["reports:read"]) as loaded:
        await assert_renders(loaded, TINY, tmp_path / "uplift-tiny.png")
        page = loaded.page
        assert await page.locator('[data-field^="uplift."]').count() == 0
        assert await page.locator('[data-field^="revenue_uplift"]').count() == 0
        for rule in rules.values():
            await assert_section_matches(page, rule)
            where = section(page, rule["rule_id"])
            assert await where.locator("p.verdict").inner_text() == "No verdict yet."
            assert await where.locator("p.note").all_inner_texts() == rule["notes"]
            assert await where.locator('svg.bars rect[data-group="treated"]').count() == 1
            assert await where.locator('svg.bars rect[data-group="control"]').count() == 1
        for rule_id in ("*", "tiny-mug"):
            notes = " ".join(rules[rule_id]["notes"])
            assert "at least 30 are needed" in notes
            lines = section(page, rule_id).locator("svg.curves polyline")
            assert await lines.count() == 2
            for raw in await lines.evaluate_all("els => els.map(e => e.getAttribute('points'))"):
                assert len(_points(raw)) == WINDOW_DAYS + 1
        never = section(page, "never")
        assert await never.locator("svg.curves polyline").count() == 0, "no customers, no curve"
        assert await never.locator('[data-field="treated.repeat_rate"]').inner_text() == "—"
        text = await page.locator("body").inner_text()
        assert not re.search(r"\b(None|nan|NaN|inf)\b", text), "a Python value leaked onto the page"
