"""The committed OpenAPI document is the contract: the served one must equal it."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from litestar import Litestar
from litestar.testing import AsyncTestClient

COMMITTED = Path(__file__).resolve().parent.parent / "openapi" / "openapi.json"
REGENERATE = "regenerate it with `delight openapi -o openapi/openapi.json` and review the diff"


def _operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(method, path, op) for path, ops in document["paths"].items() for method, op in ops.items()]


async def test_served_openapi_equals_the_committed_contract(client: AsyncTestClient[Litestar]) -> None:
    response = await client.get("/schema/openapi.json")
    assert response.status_code == 200
    served = response.json()
    committed = json.loads(COMMITTED.read_text())
    assert served == committed, f"served OpenAPI differs from openapi/openapi.json; {REGENERATE}"


def test_every_operation_has_an_operation_id_and_documents_its_errors() -> None:
    document = json.loads(COMMITTED.read_text())
    ids = []
    for method, path, op in _operations(document):
        assert op.get("operationId"), f"{method.upper()} {path} has no operationId"
        ids.append(op["operationId"])
        if op.get("security"):
            for status in ("401", "403"):
                content = op["responses"].get(status, {}).get("content", {})
                assert "application/problem+json" in content, f"{method.upper()} {path} lacks a {status} problem"
    assert len(ids) == len(set(ids))


def test_contract_paths_of_v1_are_all_present() -> None:
    document = json.loads(COMMITTED.read_text())
    present = {(method.upper(), path) for method, path, _ in _operations(document)}
    for expected in [
        ("POST", "/v1/events"),
        ("POST", "/v1/events/batch"),
        ("GET", "/v1/customers/{customer_id}"),
        ("GET", "/v1/rules"),
        ("GET", "/health/live"),
        ("GET", "/health/ready"),
    ]:
        assert expected in present


STATIC = Path(__file__).resolve().parent.parent / "service" / "static"
LINK = re.compile(r"""\b(?:src|href|data-url)\s*=\s*["']([^"']*)["']""")


async def test_the_docs_page_loads_nothing_from_elsewhere_and_its_script_is_served(
    client: AsyncTestClient[Litestar],
) -> None:
    page = await client.get("/schema")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    links = LINK.findall(page.text)
    assert "/static/scalar/standalone.js" in links
    assert all(link.startswith(("/", "data:")) and not link.startswith("//") for link in links), links
    assert "://" not in page.text, "the page names no other host: it must work on a network with no way out"

    script = await client.get("/static/scalar/standalone.js")
    assert script.status_code == 200
    assert "javascript" in script.headers["content-type"]
    assert script.content == (STATIC / "scalar" / "standalone.js").read_bytes()
    assert (STATIC / "scalar" / "LICENSE").read_text().count("MIT License") == 1
    assert (await client.get("/static/scalar/missing.js")).status_code == 404
