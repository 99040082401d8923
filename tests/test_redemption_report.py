"""The redemption report: per rule, what was issued, redeemed, expired, reversed, and the cost."""

from __future__ import annotations

import csv
import io
from typing import Any

from litestar import Litestar
from litestar.testing import AsyncTestClient

from tests.conftest import purchase

Client = AsyncTestClient[Litestar]


async def story(client: Client, keys: dict[str, Any]) -> None:
    """Four mugs: one redeemed, one reversed by a full return, one expired, one still active; 200 points."""
    dates = ["2026-03-01", "2026-03-02", "2026-03-03", "2026-11-20"]
    codes = []
    for i, day in enumerate(dates):
        event = purchase(f"e-{i}", "c-1", 150.0, occurred_at=f"{day}T10:00:00Z")
        response = await client.post("/v1/events", json=event, headers=keys["events:write"])
        codes.append(next(a["code"] for a in response.json()["awards"] if a["kind"] == "gift"))
    redeemed = await client.post(
        f"/v1/awards/{codes[0]}/redeem",
        json={"order_id": "till-1", "redeemed_at": "2026-03-05T10:00:00Z"},
        headers=keys["awards:redeem"],
    )
    assert redeemed.status_code == 200
    returned = {
        "event_id": "r-1",
        "type": "return",
        "customer_id": "c-1",
        "occurred_at": "2026-03-06T10:00:00Z",
        "order": {"order_id": "o-e-1", "total": 150.0},
    }
    assert (await client.post("/v1/events", json=returned, headers=keys["events:write"])).status_code == 201


async def test_report_counts_each_fate_per_rule_with_rate_and_cost(client: Client, keys: dict[str, Any]) -> None:
    await story(client, keys)
    response = await client.get(
        "/v1/reports/redemptions?campaign=loyal&as_of=2026-11-23T00:00:00Z", headers=keys["reports:read"]
    )
    assert response.status_code == 200
    rows = {r["rule_id"]: r for r in response.json()["rules"]}
    mug = rows["mug-over-100"]
    assert (mug["issued"], mug["redeemed"], mug["reversed"], mug["expired"], mug["active"]) == (4, 1, 1, 1, 1)
    assert mug["redemption_rate"] == round(1 / 3, 4)
    assert mug["cost"] == 9.30  # three mugs at 3.10; the reversed one costs nothing
    points = rows["points-on-third"]
    assert (points["issued"], points["redemption_rate"], points["cost"]) == (1, None, 2.0)


async def test_report_as_csv_has_one_row_per_rule(client: Client, keys: dict[str, Any]) -> None:
    await story(client, keys)
    response = await client.get("/v1/reports/redemptions", headers={**keys["reports:read"], "Accept": "text/csv"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert [r["rule_id"] for r in rows] == ["mug-over-100", "points-on-third"]
    assert rows[0]["issued"] == "4"
    assert rows[1]["redemption_rate"] == ""


async def test_report_needs_the_reports_scope(client: Client, keys: dict[str, Any]) -> None:
    assert (await client.get("/v1/reports/redemptions", headers=keys["events:write"])).status_code == 403


async def test_an_as_of_time_without_a_zone_is_a_422(client: Client, keys: dict[str, Any]) -> None:
    response = await client.get("/v1/reports/redemptions?as_of=2026-11-23T00:00:00", headers=keys["reports:read"])
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "as_of"
