"""The reports in the console: the API's own figures, freshness and CSV, read with the session cookie.

Events go in through the API; the console's pages are read with a session
signed in with a ``reports:read`` key and compared with the API's JSON, its
own HTML page and its CSV for the same parameters. While they are compared no
page of the projection is applied (``frozen``), so that two reports read one
after the other say the same ``complete_until``.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from html import escape
from html.parser import HTMLParser
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from service.keys.scopes import REPORTS_READ, RULES_ADMIN
from service.projection.apply import BATCH_LOCK
from tests.conftest import AppFactory, new_key, projected, sign_in
from tests.test_redemption_report import story
from tests.test_uplift_report import SETTINGS, THANKS, pick, population, post_batch, same_value

Client = AsyncTestClient[Litestar]
Json = dict[str, Any]

SPRING = """\
campaign: spring
holdout: 0.3
rules:
  - id: big
    when: type == "purchase" and order.total >= 300
    award: {points: 50}
"""


@asynccontextmanager
async def frozen(engine: AsyncEngine) -> AsyncIterator[None]:
    """No page of the projection is applied inside the block: every report read in it counts the same events."""
    async with engine.connect() as connection:
        await connection.execute(text("SELECT pg_advisory_lock(:lock)"), {"lock": BATCH_LOCK})
        try:
            yield
        finally:
            await connection.execute(text("SELECT pg_advisory_unlock(:lock)"), {"lock": BATCH_LOCK})


class Shown(HTMLParser):
    """A page's numbers: each ``data-rule`` section's ``data-field`` values in order, each ``data-campaign`` row's
    (and ``data-rule`` row's) with its link, the freshness, and the CSV link."""

    def __init__(self, page: str) -> None:
        super().__init__()
        self.sections: list[tuple[dict[str, str | None], dict[str, str]]] = []
        self.rows: dict[str, dict[str, str]] = {}
        self.links: dict[str, str] = {}
        self.freshness: dict[str, str] = {}
        self.csv: str | None = None
        self._row: str | None = None
        self._fresh: str | None = None
        self.feed(page)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        name = a.get("data-field")
        if tag == "section" and a.get("data-rule") is not None:
            self.sections.append((a, {}))
            self._row = None
        elif tag == "tr" and a.get("data-campaign") is not None:
            self._row = "/".join(v or "" for k, v in a.items() if k in ("data-campaign", "data-rule"))
            self.rows[self._row] = {}
        elif tag == "a" and "download" in a:
            self.csv = a.get("href")
        elif tag == "a" and self._row is not None:
            self.links[self._row] = a.get("href") or ""
        elif name in ("as_of", "complete_until") and not self.sections:
            self._fresh = name
        elif name and self._row is not None:
            self.rows[self._row][name] = a.get("data-value") or ""
        elif name and self.sections and name != "status":
            self.sections[-1][1][name] = a.get("data-value") or ""

    def handle_endtag(self, tag: str) -> None:
        if tag == "tr":
            self._row = None
        if tag == "span":
            self._fresh = None

    def handle_data(self, data: str) -> None:
        if self._fresh:
            self.freshness[self._fresh] = data


def body_of(api_page: str) -> str:
    """What the API's page holds under its heading: the part the console shows whole."""
    match = re.search(r"<body ([^>]*)>\n<h1>.*?</h1>\n(.*)\n</body></html>\n$", api_page, re.DOTALL)
    assert match, "not a report page"
    return f'<div class="report" {match.group(1)}>{match.group(2)}</div>'


def same_freshness(shown: dict[str, str], report: Json) -> None:
    """The page's freshness is the report's: its latest event, and when the projection was complete up to."""
    assert dt.datetime.fromisoformat(shown["as_of"]) == dt.datetime.fromisoformat(report["as_of"])
    complete = dt.datetime.fromisoformat(report["complete_until"]).replace(microsecond=0)
    assert dt.datetime.fromisoformat(shown["complete_until"]) == complete


async def api(app: Any, headers: dict[str, str], path: str, **more: str) -> httpx.Response:
    response = await app.get(path, headers={**headers, **more})
    assert response.status_code == 200, response.text
    return response


async def page(http: httpx.AsyncClient, path: str) -> httpx.Response:
    response = await http.get(path)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/html")
    assert "<script" not in response.text
    assert 'href="/console/reports" aria-current=page' in response.text
    return response


async def test_the_uplift_page_shows_the_apis_report_and_its_csv_is_the_apis_csv(
    rules_app: AppFactory,
    keys: dict[str, Any],
    sessionmaker: async_sessionmaker[AsyncSession],
    engine: AsyncEngine,
    database_url: str,
) -> None:
    queries = [
        "campaign=thanks&window_days=30",
        "campaign=thanks&window_days=14&cap_percentile=95&net_returns=true&by=new_returning"
        "&from=2026-01-12T00:00:00Z&to=2026-02-20T00:00:00%2B01:00&target_uplift=0.05",
    ]
    reader = keys["reports:read"]
    async with rules_app(THANKS, settings=SETTINGS) as app:
        await post_batch(app, keys, population(120, seed=7))
        await sign_in(app, await new_key(sessionmaker, REPORTS_READ))
        await projected(database_url)
        async with frozen(engine):
            for query in queries:
                report = (await api(app, reader, f"/v1/reports/uplift?{query}")).json()
                api_page = (await api(app, reader, f"/v1/reports/uplift?{query}&format=html")).text
                api_csv = await api(app, reader, f"/v1/reports/uplift?{query}", Accept="text/csv")
                console = await page(app, f"/console/reports/uplift?{query}")
                console_csv = await app.get(f"/console/reports/uplift.csv?{query}")

                assert body_of(api_page) in console.text
                shown = Shown(console.text)
                rows = {r["rule_id"]: r for r in [report["campaign_total"], *report["rules"]]}
                assert [s[0]["data-rule"] for s in shown.sections] == ["*", "mug", "points"]
                for attributes, values in shown.sections:
                    row = rows[attributes["data-rule"] or ""]
                    assert len(values) >= 14
                    for name, value in values.items():
                        assert same_value(value, pick(row, name)), (query, row["rule_id"], name, value)
                same_freshness(shown.freshness, report)
                assert shown.csv == f"/console/reports/uplift.csv?{query}"

                assert console_csv.status_code == 200
                assert console_csv.content == api_csv.content
                assert console_csv.headers["content-disposition"] == api_csv.headers["content-disposition"]
                assert console_csv.headers["content-type"].startswith("text/csv")
        assert report["campaign_total"]["status"] == "ok"
        assert report["campaign_total"]["breakdown"] is not None


async def test_the_overview_links_to_console_pages_and_gives_the_apis_figures_and_csv(
    rules_app: AppFactory,
    keys: dict[str, Any],
    sessionmaker: async_sessionmaker[AsyncSession],
    engine: AsyncEngine,
    database_url: str,
) -> None:
    reader = keys["reports:read"]
    async with rules_app(THANKS, SPRING, settings=SETTINGS) as app:
        await post_batch(app, keys, population(120, seed=11))
        await sign_in(app, await new_key(sessionmaker, REPORTS_READ))
        await projected(database_url)
        async with frozen(engine):
            glance = (await api(app, reader, "/v1/reports/campaigns?window_days=14")).json()
            overview = await page(app, "/console/reports?window_days=14")
            overview_csv = await app.get("/console/reports/campaigns.csv?window_days=14")
            api_overview_csv = await api(app, reader, "/v1/reports/campaigns?window_days=14", Accept="text/csv")
            followed = await page(app, Shown(overview.text).links["spring"])
            spring = (await api(app, reader, "/v1/reports/uplift?campaign=spring&window_days=14")).json()

            query = "cap_percentile=95&net_returns=true&from=2026-01-01T00:00:00Z"
            whole = (await api(app, reader, f"/v1/reports/programme?{query}")).json()
            whole_page = (await api(app, reader, f"/v1/reports/programme?{query}&format=html")).text
            programme = await page(app, f"/console/reports/programme?{query}")
            programme_csv = await app.get(f"/console/reports/programme.csv?{query}")
            api_programme_csv = await api(app, reader, f"/v1/reports/programme?{query}", Accept="text/csv")

    shown = Shown(overview.text)
    assert shown.links == {
        c["campaign"]: f"/console/reports/uplift?campaign={c['campaign']}&window_days=14" for c in glance["campaigns"]
    }
    assert 'href="/console/reports/programme"' in overview.text
    assert 'href="/console/reports/redemptions"' in overview.text
    assert "/v1/" not in overview.text.split('<div class="report"')[1]
    for c in glance["campaigns"]:
        values = shown.rows[c["campaign"]]
        uplift = {"uplift.absolute"} if c["result"]["uplift"] else set()
        assert set(values) == {"customers", "award_cost", "return_on_cost"} | uplift
        assert same_value(values.pop("customers"), c["customers"])
        for name, value in values.items():
            assert same_value(value, pick(c["result"], name)), (c["campaign"], name)
    same_freshness(shown.freshness, glance)
    assert overview_csv.content == api_overview_csv.content
    assert overview_csv.headers["content-disposition"] == 'attachment; filename="campaigns-14d.csv"'

    assert "Did the surprises of spring pay?" in followed.text
    assert [s[0]["data-rule"] for s in Shown(followed.text).sections] == ["big"]  # one rule: one section for both
    assert same_value(Shown(followed.text).sections[0][1]["award_cost"], spring["campaign_total"]["award_cost"])

    assert body_of(whole_page) in programme.text
    shown = Shown(programme.text)
    assert [s[0]["data-window-days"] for s in shown.sections] == ["30", "90", "180"]
    for (_, values), window in zip(shown.sections, whole["windows"], strict=True):
        for name, value in values.items():
            assert same_value(value, pick(window["result"], name)), (window["window_days"], name)
    same_freshness(shown.freshness, whole)
    assert shown.csv == f"/console/reports/programme.csv?{query}"
    assert programme_csv.content == api_programme_csv.content
    assert programme_csv.headers["content-disposition"] == 'attachment; filename="programme.csv"'


async def test_the_redemptions_page_gives_the_apis_counts_and_csv(
    client: Client, browser: httpx.AsyncClient, keys: dict[str, Any], sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    await story(client, keys)
    await sign_in(browser, await new_key(sessionmaker, REPORTS_READ))
    query = "campaign=loyal&as_of=2026-11-23T00:00:00Z"
    report = (await api(client, keys["reports:read"], f"/v1/reports/redemptions?{query}")).json()
    api_csv = await api(client, keys["reports:read"], f"/v1/reports/redemptions?{query}", Accept="text/csv")
    console = await page(browser, f"/console/reports/redemptions?{query}")
    console_csv = await browser.get(f"/console/reports/redemptions.csv?{query}")

    shown = Shown(console.text)
    assert [r["rule_id"] for r in report["rules"]] == ["mug-over-100", "points-on-third"]
    assert set(shown.rows) == {"loyal/mug-over-100", "loyal/points-on-third"}
    for row in report["rules"]:
        values = shown.rows[f"loyal/{row['rule_id']}"]
        assert set(values) == {"issued", "redeemed", "expired", "reversed", "active", "redemption_rate", "cost"}
        for name, value in values.items():
            assert same_value(value, row[name]), (row["rule_id"], name)
    assert shown.freshness["as_of"] == "2026-11-23T00:00:00+00:00"
    assert shown.csv == f"/console/reports/redemptions.csv?{query}"
    assert console_csv.content == api_csv.content
    assert console_csv.headers["content-disposition"] == 'attachment; filename="redemptions.csv"'


@pytest.mark.parametrize(
    ("console_path", "api_path", "field"),
    [
        (
            "/console/reports/uplift?campaign=loyal&window_days=0",
            "/v1/reports/uplift?campaign=loyal&window_days=0",
            "window_days",
        ),
        ("/console/reports/uplift?campaign=loyal&by=weekday", "/v1/reports/uplift?campaign=loyal&by=weekday", "by"),
        ("/console/reports/uplift?campaign=nope", "/v1/reports/uplift?campaign=nope", None),
        (
            "/console/reports/uplift?campaign=loyal&from=yesterday",
            "/v1/reports/uplift?campaign=loyal&from=yesterday",
            "from",
        ),
        (
            "/console/reports/uplift?campaign=loyal&from=2026-03-01T00:00:00",
            "/v1/reports/uplift?campaign=loyal&from=2026-03-01T00:00:00",
            "from",
        ),
        (
            "/console/reports/uplift.csv?campaign=loyal&spend_tiers=500,100&by=spend_tier",
            "/v1/reports/uplift?campaign=loyal&spend_tiers=500,100&by=spend_tier",
            "spend_tiers",
        ),
        ("/console/reports?window_days=366", "/v1/reports/campaigns?window_days=366", "window_days"),
        ("/console/reports/campaigns.csv?window_days=x", "/v1/reports/campaigns?window_days=x", "window_days"),
        ("/console/reports/programme?cap_percentile=20", "/v1/reports/programme?cap_percentile=20", "cap_percentile"),
        (
            "/console/reports/programme.csv?from=2026-03-02T00:00:00Z&to=2026-03-01T00:00:00Z",
            "/v1/reports/programme?from=2026-03-02T00:00:00Z&to=2026-03-01T00:00:00Z",
            "to",
        ),
        (
            "/console/reports/redemptions?as_of=2026-11-23T00:00:00",
            "/v1/reports/redemptions?as_of=2026-11-23T00:00:00",
            "as_of",
        ),
    ],
)
async def test_a_parameter_the_api_refuses_gives_the_form_back_with_the_apis_message_and_status(
    client: Client,
    browser: httpx.AsyncClient,
    keys: dict[str, Any],
    sessionmaker: async_sessionmaker[AsyncSession],
    console_path: str,
    api_path: str,
    field: str | None,
) -> None:
    await sign_in(browser, await new_key(sessionmaker, REPORTS_READ))
    problem = (await client.get(api_path, headers=keys["reports:read"])).json()
    refused = await browser.get(console_path)

    assert refused.status_code == problem["status"] in (400, 404, 422)
    assert refused.headers["content-type"].startswith("text/html")
    assert '<form method="get"' in refused.text
    assert 'role="alert"' in refused.text
    for error in problem.get("errors", []):
        assert f"<code>{escape(error['field'])}</code>: {escape(error['message'])}" in refused.text
    if not problem.get("errors") or not problem["detail"].startswith("Validation failed"):
        assert escape(problem["detail"]) in refused.text
    if field is not None:
        assert f'id="{field}" name="{field}" aria-invalid="true"' in refused.text
    assert "Download CSV" not in refused.text


async def test_the_uplift_page_asks_for_a_campaign_and_a_form_s_empty_fields_are_dropped(
    browser: httpx.AsyncClient, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    await sign_in(browser, await new_key(sessionmaker, REPORTS_READ))
    empty = await page(browser, "/console/reports/uplift")
    assert '<select id="campaign" name="campaign"><option value="loyal">loyal</option></select>' in empty.text
    for label in ("campaign", "window_days", "from", "to", "cap_percentile", "net_returns", "by", "spend_tiers"):
        assert f'<label for="{label}">' in empty.text
        assert f'id="{label}" name="{label}"' in empty.text
    assert "Download CSV" not in empty.text
    no_campaign = await browser.get("/console/reports/uplift.csv?window_days=7")
    assert no_campaign.status_code == 400
    assert "<code>campaign</code>: is required" in no_campaign.text

    sent = await browser.get("/console/reports/uplift?campaign=loyal&window_days=7&from=&to=&by=&spend_tiers=")
    assert sent.status_code == 303
    assert sent.headers["location"] == "/console/reports/uplift?campaign=loyal&window_days=7"
    shown = await page(browser, sent.headers["location"])
    assert '<input id="window_days" name="window_days" type="number" value="7"' in shown.text
    assert 'href="/console/reports/uplift.csv?campaign=loyal&amp;window_days=7" download' in shown.text


@pytest.mark.parametrize(
    "path",
    [
        "/console/reports",
        "/console/reports/uplift?campaign=loyal",
        "/console/reports/uplift.csv?campaign=loyal&window_days=0",
        "/console/reports/programme?from=yesterday",
        "/console/reports/redemptions.csv",
    ],
)
async def test_reports_need_reports_read_and_a_session(
    browser: httpx.AsyncClient, sessionmaker: async_sessionmaker[AsyncSession], path: str
) -> None:
    signed_out = await browser.get(path)
    assert signed_out.status_code == 303
    assert signed_out.headers["location"] == f"/console/login?next={quote(path, safe='')}"

    await sign_in(browser, await new_key(sessionmaker, RULES_ADMIN))
    refused = await browser.get(path)
    assert refused.status_code == 403
    assert "reports:read" in refused.text
    home = await browser.get("/console")
    assert 'href="/console/reports"' not in home.text
