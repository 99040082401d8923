"""Every campaign at a glance: the same figures as each campaign's own report, in JSON, CSV and HTML."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from tests.conftest import AppFactory
from tests.test_uplift_report import (
    SETTINGS,
    THANKS,
    delight,
    population,
    post_batch,
    report,
    without_freshness,
    write_pack,
)

LATER = """\
campaign: autumn
description: Not yet
active: {from: 2099-09-01, until: 2099-11-30}
rules:
  - id: candle
    when: type == "purchase"
    award: {gift: mug}
"""
SPRING = """\
campaign: spring
holdout: 0.3
rules:
  - id: big
    when: type == "purchase" and order.total >= 300
    award: {points: 50}
"""
OVER = """\
campaign: over
active: {from: 2020-01-01, until: 2020-12-31}
holdout: 0.1
rules:
  - id: candle
    when: type == "purchase"
    award: {gift: mug}
"""


class Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: dict[str, str] = {}
        self.values: dict[str, dict[str, str]] = {}
        self._row: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "tr" and a.get("data-campaign"):
            self._row = a["data-campaign"] or ""
            self.values[self._row] = {}
        elif tag == "a" and self._row is not None:
            self.links[self._row] = a.get("href") or ""
        elif a.get("data-field") and self._row is not None:
            self.values[self._row][a["data-field"] or ""] = a.get("data-value") or ""


async def test_the_overview_lists_every_campaign_with_its_own_reports_figures(
    rules_app: AppFactory, keys: dict[str, Any]
) -> None:
    async with rules_app(THANKS, LATER, OVER, SPRING, settings=SETTINGS) as app:
        await post_batch(app, keys, population(120))
        thanks = await report(app, keys, "campaign=thanks&window_days=30")
        spring = await report(app, keys, "campaign=spring&window_days=30")
        body = await report_of(app, keys, "/v1/reports/campaigns")
        week = await report_of(app, keys, "/v1/reports/campaigns?window_days=7")
        thanks_week = await report(app, keys, "campaign=thanks&window_days=7")
        as_csv = await app.get("/v1/reports/campaigns", headers={**keys["reports:read"], "Accept": "text/csv"})
        page = await app.get("/v1/reports/campaigns?format=html", headers=keys["reports:read"])
        bad = await app.get("/v1/reports/campaigns?window_days=0", headers=keys["reports:read"])
        anonymous = await app.get("/v1/reports/campaigns")

    rows = {c["campaign"]: c for c in body["campaigns"]}
    assert list(rows) == ["autumn", "over", "spring", "thanks"]
    assert (rows["thanks"]["status"], rows["autumn"]["status"], rows["over"]["status"]) == (
        "running",
        "scheduled",
        "ended",
    )
    assert rows["autumn"]["description"] == "Not yet"
    assert rows["autumn"]["customers"] == 0
    assert rows["autumn"]["result"]["status"] == "no_customers"
    # The campaign's own report, as a whole (its power plan aside: the overview plans nothing).
    total = thanks["campaign_total"]
    assert rows["thanks"]["result"] == {**total, "plan": None}
    assert rows["spring"]["result"] == {**spring["campaign_total"], "plan": None}
    assert rows["spring"]["result"]["revenue_cap"] != total["revenue_cap"]  # each campaign capped at its own
    assert {**week["campaigns"][3]["result"], "plan": None} == {**thanks_week["campaign_total"], "plan": None}
    assert rows["thanks"]["customers"] == sum(total[g]["customers"] + total[g]["open"] for g in ("treated", "control"))
    assert rows["thanks"]["holdout"] == 0.5
    assert rows["thanks"]["report"] == "/v1/reports/uplift?campaign=thanks&window_days=30&format=html"
    assert (body["as_of"], body["window_days"]) == (thanks["as_of"], 30)

    lines = {line["campaign"]: line for line in csv.DictReader(io.StringIO(as_csv.text))}
    assert set(lines) == set(rows)
    assert float(lines["thanks"]["uplift_absolute"]) == total["uplift"]["absolute"]
    assert float(lines["thanks"]["award_cost"]) == total["award_cost"]
    assert lines["autumn"]["uplift_absolute"] == ""

    parsed = Links()
    parsed.feed(page.text)
    assert parsed.links == {c: rows[c]["report"] for c in rows}
    assert float(parsed.values["thanks"]["uplift.absolute"]) == total["uplift"]["absolute"]
    assert float(parsed.values["thanks"]["return_on_cost"]) == total["return_on_cost"]

    assert bad.status_code == 400
    assert bad.headers["content-type"].startswith("application/problem+json")
    assert anonymous.status_code == 401


async def report_of(app: Any, keys: dict[str, Any], path: str) -> Any:
    response = await app.get(path, headers=keys["reports:read"])
    assert response.status_code == 200, response.text
    return response.json()


async def test_the_command_line_gives_the_overview_and_the_programme_report_the_api_gives(
    rules_app: AppFactory, keys: dict[str, Any], database_url: str, tmp_path: Path
) -> None:
    async with rules_app(THANKS, SPRING, settings=SETTINGS) as app:
        await post_batch(app, keys, population(60))
        overview = await report_of(app, keys, "/v1/reports/campaigns?window_days=14")
        programme = await report_of(app, keys, "/v1/reports/programme")
    env = {name: value for name, value in os.environ.items() if not name.startswith("DELIGHT_")}
    env |= {
        "DELIGHT_DATABASE_URL": database_url,
        "DELIGHT_RULES_DIR": str(write_pack(tmp_path / "rules", THANKS, SPRING)),
        "DELIGHT_DATA_DIR": str(tmp_path / "data"),
        "DELIGHT_LOG_LEVEL": "WARNING",
    }
    (glance_rc, glance, _), (table_rc, table, _), (whole_rc, whole, _), (bad_rc, _, bad_err) = await asyncio.gather(
        delight("report", "campaigns", "--window-days", "14", "--format", "json", env=env),
        delight("report", "campaigns", "--window-days", "14", env=env),
        delight("report", "programme", "--format", "json", env=env),
        delight("report", "campaigns", "--window-days", "0", env=env),
    )
    assert (glance_rc, table_rc, whole_rc, bad_rc) == (0, 0, 0, 2)
    assert without_freshness(json.loads(glance)) == without_freshness(overview)
    assert without_freshness(json.loads(whole)) == without_freshness(programme)
    for c in overview["campaigns"]:
        [line] = [line for line in table.splitlines() if line.startswith(f"{c['campaign']} ")]
        assert f" {c['customers']:,} " in line
        assert f" {c['result']['award_cost']:,.2f} " in line
    assert "--window-days must be between 1 and 365" in bad_err
