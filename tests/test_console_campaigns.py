"""The console's Campaigns and Rule sets sections: the figures of ``GET /v1/rules``, a burn-down that adds up to the
awards, every stored version with a diff between any two, and the last refused reload."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from html import unescape
from html.parser import HTMLParser
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast
from zoneinfo import ZoneInfo

import httpx
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from service.console.campaigns import BURN_DOWN_DAYS, burn_down
from service.keys.scopes import REPORTS_READ, RULES_ADMIN
from service.rules.ruleset import Campaign
from tests.conftest import AppFactory, new_key, post_all, purchase, sign_in

SCOPES = ("data-campaign", "data-gift", "data-day", "data-rule", "data-version", "data-file")
VOID = {"br", "input", "meta", "link", "img", "hr"}

SPRING = """\
campaign: spring
description: "Lamps & mugs <script>alert(1)</script>"
holdout: 0.2
budget: {awards: 40, cost: 500, daily_awards: 30}
rules:
  - id: lamp-big
    when: type == "purchase" and order.total >= 200
    award: {gift: lamp}
  - id: mug-small
    when: type == "purchase" and order.total < 200
    award: {gift: mug}
"""
SUMMER = """\
campaign: summer
active: {from: 2099-06-01, until: 2099-08-31}
rules:
  - id: points
    when: type == "purchase"
    award: {points: 10}
"""


class Page(HTMLParser):
    """The ``data-field`` values of a console page, by the row or card they are in (``(attribute, id)``, ``None``
    outside any), every one in page order, and the text of each ``<pre>``."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.fields: dict[tuple[str, str] | None, dict[str, str]] = {None: {}}
        self.all: list[tuple[str, str]] = []
        self.pres: list[str] = []
        self._open: list[tuple[str, str] | None] = []
        self._pre: list[str] | None = None
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        scope = next(((k, a[k]) for k in SCOPES if k in a), self._open[-1] if self._open else None)
        self.fields.setdefault(scope, {})
        if "data-field" in a:
            self.fields.setdefault(scope, {})[a["data-field"]] = a.get("data-value", "")
            self.all.append((a["data-field"], a.get("data-value", "")))
        if tag not in VOID:
            self._open.append(scope)
        if tag == "pre":
            self._pre = []

    def handle_endtag(self, tag: str) -> None:
        if tag not in VOID:
            self._open.pop()
        if tag == "pre" and self._pre is not None:
            self.pres.append("".join(self._pre))
            self._pre = None

    def handle_data(self, data: str) -> None:
        if self._pre is not None:
            self._pre.append(data)


def same(shown: str, api: Any) -> bool:
    """Whether a page's ``data-value`` is the value the API gives."""
    if api is None:
        return shown == ""
    if isinstance(api, int | float):
        return float(shown) == pytest.approx(api)
    return shown == str(api)


@asynccontextmanager
async def browser_on(app: AsyncTestClient[Litestar], key: str) -> AsyncIterator[httpx.AsyncClient]:
    """A browser of its own on ``app``, signed in to the console with ``key``."""
    transport = httpx.ASGITransport(app=cast("Any", app.app))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver", timeout=60) as http:
        await sign_in(http, key)
        yield http


def at(days_ago: int) -> str:
    """An event time ``days_ago`` days before now, a minute back so it is never ahead of the server's clock."""
    return (dt.datetime.now(dt.UTC) - dt.timedelta(days=days_ago, minutes=1)).isoformat()


async def scalar(engine: AsyncEngine, sql: str, **params: Any) -> Any:
    async with engine.connect() as connection:
        return (await connection.execute(text(sql), params)).scalar_one()


async def test_the_campaigns_page_gives_the_figures_of_get_v1_rules_and_the_awards_of_today_and_the_week(
    rules_app: AppFactory, keys: dict[str, Any], sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    async with rules_app(SPRING, SUMMER) as app:
        events = [
            purchase(f"e-{i}", f"c-{i}", 250.0 if i % 2 else 50.0, occurred_at=at(days))
            for i, days in enumerate([0] * 6 + [3] * 4 + [10] * 4)
        ]
        awards = await post_all(app, keys, events)
        rules = (await app.get("/v1/rules", headers=keys["rules:admin"])).json()
        async with browser_on(app, await new_key(sessionmaker, RULES_ADMIN)) as browser:
            response = await browser.get("/console/campaigns")
    assert response.status_code == 200, response.text
    shown = Page(response.text)
    zone = ZoneInfo(rules["timezone"])
    today = dt.datetime.now(zone).date()
    days = [dt.datetime.fromisoformat(a["issued_at"]).astimezone(zone).date() for a in awards]
    assert {a["campaign"] for a in awards} == {"spring"}
    assert 0 < len(awards) < len(events)  # a holdout got nothing

    assert shown.fields[None]["version"] == rules["version"]
    assert shown.fields[None]["timezone"] == rules["timezone"]
    for campaign in rules["campaigns"]:
        card = shown.fields[("data-campaign", campaign["campaign"])]
        for name in ("holdout", "active_from", "active_until", "awards_today"):
            assert same(card.get(name, ""), campaign[name]), (name, card.get(name), campaign[name])
        for name, value in (campaign["budget"] or {}).items():  # a cap not set is not shown
            assert same(card.get(f"budget.{name}", ""), value), (name, card.get(f"budget.{name}"), value)
    spring = shown.fields[("data-campaign", "spring")]
    assert spring["status"] == "running"
    assert int(spring["awards_today"]) == days.count(today)
    assert int(spring["awards_7d"]) == sum(1 for d in days if (today - d).days < 7)
    assert int(spring["awards_7d"]) < len(awards)  # those of ten days ago are not in the week
    assert float(spring["budget.cost_spent"]) > 0
    assert shown.fields[("data-campaign", "summer")]["status"] == "scheduled"
    assert "budget.awards" not in shown.fields[("data-campaign", "summer")]  # it has no budget
    for gift in rules["gifts"]:
        row = shown.fields[("data-gift", gift["id"])]
        for name in ("unit_cost", "stock", "stock_left"):
            assert same(row[name], gift[name]), (gift["id"], name)
    assert 'href="/console/campaigns/spring"' in response.text
    assert "<script" not in response.text
    assert "Lamps &amp; mugs &lt;script&gt;alert(1)&lt;/script&gt;" in response.text


async def test_a_campaign_page_shows_its_rules_its_file_and_a_burn_down_that_adds_up_to_its_awards(
    rules_app: AppFactory, keys: dict[str, Any], sessionmaker: async_sessionmaker[AsyncSession], engine: AsyncEngine
) -> None:
    async with rules_app(SPRING, SUMMER) as app:
        events = [
            purchase(f"e-{i}", f"c-{i}", 250.0 if i % 3 else 50.0, occurred_at=at(days))
            for i, days in enumerate([0] * 5 + [2] * 5 + [6] * 5)
        ]
        awards = await post_all(app, keys, events)
        rules = (await app.get("/v1/rules", headers=keys["rules:admin"])).json()
        async with browser_on(app, await new_key(sessionmaker, RULES_ADMIN)) as browser:
            response = await browser.get("/console/campaigns/spring")
            scheduled = await browser.get("/console/campaigns/summer")
    assert response.status_code == 200, response.text
    shown = Page(response.text)
    (spring,) = [c for c in rules["campaigns"] if c["campaign"] == "spring"]
    (lamp,) = [g for g in rules["gifts"] if g["id"] == "lamp"]

    days = sorted((k, v) for k, v in shown.fields.items() if k and k[0] == "data-day")
    assert len(days) == 7  # from the first award, six days ago, to today
    last = days[-1][1]
    total = await scalar(engine, "SELECT sum(cost) FROM awards WHERE campaign = 'spring'")
    assert Decimal(last["cumulative_cost"]) == total
    assert float(last["cumulative_cost"]) == pytest.approx(spring["budget"]["cost_spent"])
    assert int(last["cumulative_awards"]) == len(awards) == sum(int(d["awards"]) for _, d in days)
    assert sum(Decimal(d["cost"]) for _, d in days) == total
    assert Decimal(last["cost_left"]) == Decimal(500) - total
    assert int(last["stock_left.lamp"]) == lamp["stock_left"]
    assert int(days[0][1]["stock_left.lamp"]) >= int(last["stock_left.lamp"])
    assert "<svg" in response.text

    for rule in spring["rules"]:
        row = shown.fields[("data-rule", rule["id"])]
        for name in ("chance", "priority", "cost"):
            assert same(row[name], rule[name])
    assert SPRING in shown.pres
    assert 'href="/console/reports/uplift?campaign=spring"' in response.text
    assert "<script" not in response.text

    assert scheduled.status_code == 200
    assert "starts on 2099-06-01" in scheduled.text


async def test_an_unknown_campaign_or_version_is_a_page_saying_so(
    browser: httpx.AsyncClient, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    await sign_in(browser, await new_key(sessionmaker, RULES_ADMIN))
    for path in ("/console/campaigns/nope", "/console/campaigns/%3Cscript%3E", "/console/rules/0123456789abcdef"):
        response = await browser.get(path)
        assert response.status_code == 404, path
        assert response.headers["content-type"].startswith("text/html")
        assert "Not found" in response.text
        assert "<script>" not in response.text
    assert "&lt;script&gt;" in (await browser.get("/console/campaigns/%3Cscript%3E")).text


async def test_a_key_that_may_only_read_reports_cannot_open_these_pages(
    browser: httpx.AsyncClient, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    await sign_in(browser, await new_key(sessionmaker, REPORTS_READ))
    for path in ("/console/campaigns", "/console/campaigns/loyal", "/console/rules", "/console/rules/x"):
        response = await browser.get(path)
        assert response.status_code == 403, path
        assert "rules:admin" in response.text


async def test_the_session_apps_campaign_matches_the_api(
    browser: httpx.AsyncClient,
    client: AsyncTestClient[Litestar],
    keys: dict[str, Any],
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    await post_all(client, keys, [purchase(f"s-{i}", f"c-{i}", 150.0, occurred_at=at(0)) for i in range(3)])
    rules = (await client.get("/v1/rules", headers=keys["rules:admin"])).json()
    await sign_in(browser, await new_key(sessionmaker, RULES_ADMIN))
    shown = Page((await browser.get("/console/campaigns")).text)
    (loyal,) = rules["campaigns"]
    assert loyal["awards_today"] == 3
    assert shown.fields[("data-campaign", "loyal")]["awards_today"] == "3"
    assert shown.fields[("data-campaign", "loyal")]["awards_7d"] == "3"
    assert shown.fields[("data-gift", "mug")]["stock_left"] == str(rules["gifts"][0]["stock_left"]) == "97"
    page = await browser.get("/console/campaigns/loyal")
    assert Page(page.text).fields[("data-rule", "vase-sometimes")]["chance"] == "0.5"


async def test_the_rule_sets_page_lists_the_versions_and_shows_a_diff_between_any_two(
    rules_app: AppFactory, keys: dict[str, Any], sessionmaker: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    async with rules_app(SPRING) as app:
        first = (await app.get("/v1/rules", headers=keys["rules:admin"])).json()["version"]
        source = tmp_path / "rules-0" / "c0.yaml"
        source.write_text(source.read_text().replace(">= 200", ">= 300"))
        reloaded = await app.post("/v1/rules/reload", headers=keys["rules:admin"])
        assert reloaded.status_code == 200, reloaded.text
        second = reloaded.json()["version"]
        async with browser_on(app, await new_key(sessionmaker, RULES_ADMIN)) as browser:
            listed = await browser.get("/console/rules")
            compared = await browser.get("/console/rules", params={"from": first, "to": second})
            files = await browser.get(f"/console/rules/{first}")
            same_version = await browser.get("/console/rules", params={"from": second, "to": second})
            unknown = await browser.get("/console/rules", params={"from": first, "to": "<b>nope</b>"})

    assert listed.status_code == 200
    page = Page(listed.text)
    assert page.fields[None]["version"] == second
    versions = [k[1] for k in page.fields if k and k[0] == "data-version"]
    assert versions[:2] == [second, first]
    assert f'<option value="{first}" selected>' in listed.text  # the form compares the last two by default
    assert re.search(rf'<td class="text">{re.escape(f"key {key_id(keys)}")}</td>', listed.text)

    assert compared.status_code == 200
    [diff] = re.findall(r'<pre class="diff">(.*?)</pre>', compared.text, re.S)
    removed = re.findall(r'<span class="del">(.*?)</span>', diff)
    added = re.findall(r'<span class="add">(.*?)</span>', diff)
    assert [unescape(line) for line in removed] == ['-    when: type == "purchase" and order.total >= 200']
    assert [unescape(line) for line in added] == ['+    when: type == "purchase" and order.total >= 300']
    assert re.search(r'<span class="hunk">@@ ', diff)
    assert '<h3 data-file="c0.yaml">' in compared.text
    assert "catalog.yaml" in compared.text  # named among the unchanged

    assert files.status_code == 200
    assert ">= 200" in unescape(files.text)
    assert "settings.yaml" in files.text
    assert "same files" in same_version.text
    assert unknown.status_code == 422
    assert "&lt;b&gt;nope&lt;/b&gt;" in unknown.text


async def test_a_refused_reload_is_audited_and_shown_until_a_reload_goes_through(
    rules_app: AppFactory, keys: dict[str, Any], sessionmaker: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    async with rules_app(SPRING) as app:
        in_force = (await app.get("/v1/rules", headers=keys["rules:admin"])).json()["version"]
        broken = tmp_path / "rules-0" / "broken.yaml"
        broken.write_text("campaign: broken\nrules:\n  - id: a\n    when: order.totl > 3\n    award: {gift: teapot}\n")
        refused = await app.post("/v1/rules/reload", headers=keys["rules:admin"])
        assert refused.status_code == 422
        entries = (await app.get("/v1/audit?action=rules.refused", headers=keys["rules:admin"])).json()["entries"]
        async with browser_on(app, await new_key(sessionmaker, RULES_ADMIN)) as browser:
            rules_page = await browser.get("/console/rules")
            campaigns_page = await browser.get("/console/campaigns")
            broken.unlink()  # back to the version in force: the reload goes through without a new version
            again = await app.post("/v1/rules/reload", headers=keys["rules:admin"])
            assert again.status_code == 200
            assert again.json()["changed"] is False
            after = await browser.get("/console/rules")

    [entry] = entries
    assert entry["actor"] == f"key {key_id(keys)}"
    assert entry["details"]["version_in_force"] == in_force
    messages = [f"{e['field']}: {e['message']}" for e in refused.json()["errors"]]
    assert entry["details"]["errors"] == messages
    assert len(messages) == 2
    for page in (rules_page, campaigns_page):
        shown = Page(page.text)
        assert shown.fields[None]["last_reload"] == "refused"
        assert [v for f, v in shown.all if f == "error"] == messages
        assert shown.fields[None]["refused_by"] == f"key {key_id(keys)}"
    assert Page(after.text).fields[None]["last_reload"] == "ok"
    assert "teapot" not in after.text


async def test_a_rule_set_refused_at_start_up_is_audited_as_the_startup_s(
    rules_app: AppFactory, keys: dict[str, Any], sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    settings = "seed: console\nprogramme_holdout: 0.2\n"
    async with rules_app(SPRING, settings=settings) as app:
        in_force = (await app.get("/v1/rules", headers=keys["rules:admin"])).json()["version"]
    async with rules_app(SPRING, settings=settings.replace("0.2", "0.1")) as app:
        entries = (await app.get("/v1/audit?action=rules.refused", headers=keys["rules:admin"])).json()["entries"]
        async with browser_on(app, await new_key(sessionmaker, RULES_ADMIN)) as browser:
            page = await browser.get("/console/rules")
    [entry] = entries
    assert entry["actor"] == "startup"
    assert entry["details"]["version_in_force"] == in_force
    assert "programme_holdout goes down from 0.2 to 0.1" in entry["details"]["errors"][0]
    assert Page(page.text).fields[None]["refused_by"] == "startup"
    assert [v for f, v in Page(page.text).all if f == "error"] == entry["details"]["errors"]


def key_id(keys: dict[str, Any]) -> str:
    return str(keys["rules:admin"]["Authorization"].split("_")[1])


# --- the burn-down, day by day ---------------------------------------------------------------------------------


def campaign(starts: dt.date | None = None, until: dt.date | None = None) -> Campaign:
    return Campaign("c", None, starts, until, (), "c.yaml")


def rows(*days: tuple[dt.date, int, str]) -> list[Any]:
    return [SimpleNamespace(day=d, awards=n, cost=Decimal(c)) for d, n, c in days]


TODAY = dt.date(2026, 12, 7)


def test_a_burn_down_runs_from_the_start_to_today_with_every_day_and_the_stock_left() -> None:
    days = rows((dt.date(2026, 12, 3), 2, "6.20"), (dt.date(2026, 12, 6), 1, "20.00"))
    gifts = [
        SimpleNamespace(day=dt.date(2026, 11, 1), gift_id="lamp", awards=3),  # by another campaign, earlier
        SimpleNamespace(day=dt.date(2026, 12, 6), gift_id="lamp", awards=2),
    ]
    burnt = burn_down(campaign(starts=dt.date(2026, 12, 1)), TODAY, days, gifts, {"lamp": 10})
    assert [d.day for d in burnt] == [dt.date(2026, 12, i) for i in range(1, 8)]
    assert [d.cumulative_cost for d in burnt] == [0, 0, Decimal("6.20"), Decimal("6.20"), Decimal("6.20")] + [
        Decimal("26.20")
    ] * 2
    assert [d.stock_left["lamp"] for d in burnt] == [7] * 5 + [5] * 2


def test_a_burn_down_of_a_campaign_not_started_is_empty_and_one_that_ended_stops_on_its_last_day() -> None:
    assert burn_down(campaign(starts=TODAY + dt.timedelta(days=1)), TODAY, [], [], {}) == []
    ended = burn_down(campaign(dt.date(2026, 11, 1), dt.date(2026, 11, 3)), TODAY, [], [], {})
    assert [d.day for d in ended] == [dt.date(2026, 11, 1), dt.date(2026, 11, 2), dt.date(2026, 11, 3)]
    assert [d.day for d in burn_down(campaign(), TODAY, [], [], {})] == [TODAY]


def test_a_long_burn_down_adds_up_its_oldest_days_in_an_opening_row() -> None:
    start = TODAY - dt.timedelta(days=BURN_DOWN_DAYS + 9)
    days = rows((start, 4, "8.00"), (TODAY, 1, "2.00"))
    burnt = burn_down(campaign(starts=start), TODAY, days, [], {})
    assert len(burnt) == BURN_DOWN_DAYS + 1
    opening, first = burnt[0], burnt[1]
    assert (opening.day, opening.awards, opening.cumulative_cost) == (None, 4, Decimal("8.00"))
    assert first.day == TODAY - dt.timedelta(days=BURN_DOWN_DAYS - 1)
    assert burnt[-1].cumulative_cost == Decimal("10.00")
    assert burnt[-1].cumulative_awards == 5
