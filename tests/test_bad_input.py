"""Bad input gets a clear RFC 9457 problem+json answer, never a 500, and never writes anything."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import pytest
from httpx import Response
from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.conftest import interaction, purchase

Client = AsyncTestClient[Litestar]

EVENT_ROUTES = ("/v1/events", "/v1/events/batch")
WRITTEN_TABLES = ("events", "customers", "awards", "points_ledger")


def assert_problem(response: Response, status: int) -> dict[str, Any]:
    """The response is a complete problem+json document with this status, tied to its request id."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert isinstance(body, dict)
    for name in ("type", "title", "status", "detail", "request_id"):
        assert name in body, f"problem document lacks {name!r}: {body}"
    assert body["status"] == status
    assert isinstance(body["type"], str)
    assert body["type"]
    assert isinstance(body["title"], str)
    assert body["title"]
    assert isinstance(body["detail"], str)
    assert body["detail"]
    assert body["request_id"]
    assert response.headers.get("x-request-id") == body["request_id"]
    return body


async def rows_written(engine: AsyncEngine) -> dict[str, int]:
    async with engine.connect() as connection:
        return {
            table: int((await connection.execute(text(f"SELECT count(*) FROM {table}"))).scalar_one())
            for table in WRITTEN_TABLES
        }


async def assert_nothing_written(engine: AsyncEngine) -> None:
    assert await rows_written(engine) == dict.fromkeys(WRITTEN_TABLES, 0)


def error_fields(body: dict[str, Any]) -> set[str]:
    errors = body.get("errors")
    assert isinstance(errors, list), f"a 422 must list its errors: {body}"
    assert errors
    for error in errors:
        assert error["field"]
        assert error["message"]
    return {e["field"] for e in errors}


def as_route_body(path: str, event: Any) -> Any:
    return {"events": [event]} if path.endswith("/batch") else event


def field_prefix(path: str) -> str:
    return "events[0]." if path.endswith("/batch") else ""


# --- not JSON at all ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", EVENT_ROUTES)
@pytest.mark.parametrize(
    ("raw", "says"),
    [
        (b'{"event_id": "e-1", "type": ', ""),
        (b"{'event_id': 'e-1'}", ""),
        (b"not json", ""),
        (b'{"a": 1}}', ""),
        # text that is not UTF-8: decoders raise this of their own, which once made a 500
        (b'{"event_id": "a\xc0\x80b"}', "UTF-8"),
        (b'{"\xff": 1}', "UTF-8"),
        (b'{"event_id": "\xed\xbf\xbf"}', "UTF-8"),
    ],
    ids=["truncated", "single-quotes", "bare-words", "trailing-garbage", "overlong", "key", "surrogate"],
)
async def test_malformed_json_is_a_400_problem_and_stores_nothing(
    client: Client, keys: dict[str, Any], engine: AsyncEngine, path: str, raw: bytes, says: str
) -> None:
    headers = {**keys["events:write"], "Content-Type": "application/json"}
    response = await client.post(path, content=raw, headers=headers)
    body = assert_problem(response, 400)
    assert body["type"] == "urn:delight:problem:malformed-request"
    assert says in body["detail"], body["detail"]
    await assert_nothing_written(engine)


@pytest.mark.parametrize("path", EVENT_ROUTES)
async def test_empty_body_is_a_400_problem_saying_the_body_is_empty(
    client: Client, keys: dict[str, Any], engine: AsyncEngine, path: str
) -> None:
    headers = {**keys["events:write"], "Content-Type": "application/json"}
    response = await client.post(path, content=b"", headers=headers)
    body = assert_problem(response, 400)
    assert body["type"] == "urn:delight:problem:malformed-request"
    assert "empty" in body["detail"]
    await assert_nothing_written(engine)


@pytest.mark.parametrize("path", EVENT_ROUTES)
async def test_whitespace_only_body_is_a_400_problem(
    client: Client, keys: dict[str, Any], engine: AsyncEngine, path: str
) -> None:
    headers = {**keys["events:write"], "Content-Type": "application/json"}
    response = await client.post(path, content=b"  \n\t ", headers=headers)
    body = assert_problem(response, 400)
    assert body["type"] == "urn:delight:problem:malformed-request"
    await assert_nothing_written(engine)


@pytest.mark.parametrize("path", EVENT_ROUTES)
@pytest.mark.parametrize("raw", [b"[]", b"[1, 2]", b'"event"', b"42", b"null", b"true"], ids=bytes.decode)
async def test_json_that_is_not_an_object_is_a_422_problem(
    client: Client, keys: dict[str, Any], engine: AsyncEngine, path: str, raw: bytes
) -> None:
    headers = {**keys["events:write"], "Content-Type": "application/json"}
    response = await client.post(path, content=raw, headers=headers)
    body = assert_problem(response, 422)
    assert body["type"] == "urn:delight:problem:validation-error"
    assert error_fields(body)
    await assert_nothing_written(engine)


# --- schema violations ----------------------------------------------------------------------------------------


def event_with_many_mistakes(occurred_at: str) -> dict[str, Any]:
    event = purchase("e-1", "c-1", 50.0)
    event["customer_id"] = 42  # wrong type
    event["order"]["total"] = -1  # negative money
    event["colour"] = "red"  # unknown field
    event["type"] = "refund"  # not one of the enum values
    event["occurred_at"] = occurred_at
    return event


MANY_MISTAKES = ("customer_id", "order.total", "colour", "type", "occurred_at")


@pytest.mark.parametrize("path", EVENT_ROUTES)
async def test_schema_violations_with_a_date_that_is_not_a_date_are_a_422_naming_every_bad_field(
    client: Client, keys: dict[str, Any], engine: AsyncEngine, path: str
) -> None:
    event = event_with_many_mistakes("next tuesday")
    response = await client.post(path, json=as_route_body(path, event), headers=keys["events:write"])
    body = assert_problem(response, 422)
    assert body["type"] == "urn:delight:problem:validation-error"
    assert error_fields(body) == {field_prefix(path) + f for f in MANY_MISTAKES}
    await assert_nothing_written(engine)


@pytest.mark.parametrize("path", EVENT_ROUTES)
async def test_schema_violations_with_a_time_without_time_zone_are_a_422_naming_every_bad_field(
    client: Client, keys: dict[str, Any], engine: AsyncEngine, path: str
) -> None:
    event = event_with_many_mistakes("2026-03-01T10:15:00")  # no time zone
    response = await client.post(path, json=as_route_body(path, event), headers=keys["events:write"])
    body = assert_problem(response, 422)
    assert body["type"] == "urn:delight:problem:validation-error"
    assert error_fields(body) == {field_prefix(path) + f for f in MANY_MISTAKES}
    await assert_nothing_written(engine)


@pytest.mark.parametrize("path", EVENT_ROUTES)
@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("customer_id", 42),
        ("customer_id", ""),
        ("customer_id", "shop/42"),  # no /v1/customers/{id} route could address it
        ("customer_id", ".."),
        ("customer_id", "."),
        ("event_id", None),
        ("type", "refund"),
        ("occurred_at", "2026-03-01T10:15:00"),
        ("occurred_at", "yesterday"),
        ("occurred_at", "2026-13-45T10:15:00Z"),
        ("occurred_at", 1772360100),
        ("attributes", ["not", "a", "map"]),
        ("unknown_field", "x"),
    ],
    ids=lambda v: repr(v)[:30],
)
async def test_each_single_schema_violation_is_a_422_naming_that_field(
    client: Client, keys: dict[str, Any], engine: AsyncEngine, path: str, field: str, value: Any
) -> None:
    event = purchase("e-1", "c-1", 50.0)
    event[field] = value
    response = await client.post(path, json=as_route_body(path, event), headers=keys["events:write"])
    body = assert_problem(response, 422)
    assert error_fields(body) == {field_prefix(path) + field}
    await assert_nothing_written(engine)


@pytest.mark.parametrize("path", EVENT_ROUTES)
@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda o: o.update(total=-0.01), "order.total"),
        (lambda o: o.update(total="12.50"), "order.total"),
        (lambda o: o.update(currency="euro"), "order.currency"),
        (lambda o: o["items"][0].update(quantity=0), "order.items[0].quantity"),
        (lambda o: o["items"][0].update(colour="red"), "order.items[0].colour"),
        (lambda o: o["items"][0].update(unit_price=-3), "order.items[0].unit_price"),
        (lambda o: o.update(items={"sku": "x"}), "order.items"),
    ],
    ids=[
        "negative-total",
        "string-total",
        "bad-currency",
        "zero-quantity",
        "unknown-item-field",
        "negative-unit-price",
        "items-not-a-list",
    ],
)
async def test_bad_nested_order_field_is_a_422_naming_its_full_path(
    client: Client, keys: dict[str, Any], engine: AsyncEngine, path: str, mutate: Any, field: str
) -> None:
    event = purchase("e-1", "c-1", 50.0)
    mutate(event["order"])
    response = await client.post(path, json=as_route_body(path, event), headers=keys["events:write"])
    body = assert_problem(response, 422)
    assert error_fields(body) == {field_prefix(path) + field}
    await assert_nothing_written(engine)


def names(body: dict[str, Any], field: str) -> bool:
    """A missing field may be reported at itself or at its parent object with its name in the message."""
    parent, _, leaf = field.rpartition(".")
    return any(
        e["field"] == field or (e["field"] == (parent or "(body)") and f"'{leaf}'" in e["message"])
        for e in body["errors"]
    )


@pytest.mark.parametrize("path", EVENT_ROUTES)
async def test_missing_required_fields_are_all_named_at_once(
    client: Client, keys: dict[str, Any], engine: AsyncEngine, path: str
) -> None:
    event = purchase("e-1", "c-1", 50.0)
    del event["event_id"], event["customer_id"], event["occurred_at"], event["order"]["order_id"]
    response = await client.post(path, json=as_route_body(path, event), headers=keys["events:write"])
    body = assert_problem(response, 422)
    p = field_prefix(path).rstrip(".")
    for field in ("event_id", "customer_id", "occurred_at", "order.order_id"):
        assert names(body, f"{p}.{field}" if p else field), (field, body)
    await assert_nothing_written(engine)


@pytest.mark.parametrize("path", EVENT_ROUTES)
async def test_purchase_without_order_is_a_422_naming_order(
    client: Client, keys: dict[str, Any], engine: AsyncEngine, path: str
) -> None:
    event = purchase("e-1", "c-1", 50.0)
    del event["order"]
    response = await client.post(path, json=as_route_body(path, event), headers=keys["events:write"])
    body = assert_problem(response, 422)
    assert error_fields(body) == {field_prefix(path) + "order"}
    await assert_nothing_written(engine)


@pytest.mark.parametrize("path", EVENT_ROUTES)
async def test_return_without_order_is_a_422_naming_order(
    client: Client, keys: dict[str, Any], engine: AsyncEngine, path: str
) -> None:
    event = {"event_id": "r-1", "type": "return", "customer_id": "c-1", "occurred_at": "2026-03-05T10:00:00Z"}
    response = await client.post(path, json=as_route_body(path, event), headers=keys["events:write"])
    body = assert_problem(response, 422)
    assert error_fields(body) == {field_prefix(path) + "order"}
    await assert_nothing_written(engine)


@pytest.mark.parametrize("path", EVENT_ROUTES)
@pytest.mark.parametrize("name", [None, ""], ids=["absent", "empty"])
async def test_interaction_without_name_is_a_422_naming_name(
    client: Client, keys: dict[str, Any], engine: AsyncEngine, path: str, name: str | None
) -> None:
    event = interaction("i-1", "c-1", rating=5)
    if name is None:
        del event["name"]
    else:
        event["name"] = name
    response = await client.post(path, json=as_route_body(path, event), headers=keys["events:write"])
    body = assert_problem(response, 422)
    assert error_fields(body) == {field_prefix(path) + "name"}
    await assert_nothing_written(engine)


# --- batches --------------------------------------------------------------------------------------------------


async def test_batch_with_a_bad_event_at_index_3_names_it_and_stores_nothing(
    client: Client, keys: dict[str, Any], engine: AsyncEngine
) -> None:
    events = [purchase(f"e-{i}", "c-1", 150.0) for i in range(6)]
    events[3]["order"]["total"] = -5
    events[3]["occurred_at"] = "not a date"
    response = await client.post("/v1/events/batch", json={"events": events}, headers=keys["events:write"])
    body = assert_problem(response, 422)
    assert error_fields(body) == {"events[3].order.total", "events[3].occurred_at"}
    await assert_nothing_written(engine)


async def test_batch_with_a_semantic_error_at_index_3_names_it_and_stores_nothing(
    client: Client, keys: dict[str, Any], engine: AsyncEngine
) -> None:
    events = [purchase(f"e-{i}", "c-1", 150.0) for i in range(6)]
    del events[3]["order"]
    response = await client.post("/v1/events/batch", json={"events": events}, headers=keys["events:write"])
    body = assert_problem(response, 422)
    assert error_fields(body) == {"events[3].order"}
    await assert_nothing_written(engine)


@pytest.mark.parametrize(
    ("document", "field"),
    [
        ({"events": []}, "events"),
        ({}, "events"),
        ({"events": "e-1"}, "events"),
        ({"events": [purchase("e-1")], "dry_run": True}, "dry_run"),
    ],
    ids=["empty-list", "no-events", "events-not-a-list", "unknown-top-level-field"],
)
async def test_batch_envelope_errors_are_a_422_naming_the_field(
    client: Client, keys: dict[str, Any], engine: AsyncEngine, document: dict[str, Any], field: str
) -> None:
    response = await client.post("/v1/events/batch", json=document, headers=keys["events:write"])
    body = assert_problem(response, 422)
    fields = error_fields(body)
    messages = " ".join(e["message"] for e in body["errors"])
    assert field in fields or field in messages, body
    await assert_nothing_written(engine)


# --- input that must not reach the database as-is ------------------------------------------------------------


def with_nul(where: str) -> dict[str, Any]:
    if where == "interaction.name":
        return interaction("i-nul", "c-1", name="review\u0000posted")
    event = purchase("e-nul", "c-1", 50.0)
    if where == "customer.first_name":
        event["customer"] = {"first_name": "A\u0000na"}
    elif where == "attributes.value":
        event["attributes"] = {"note": "a\u0000b"}
    elif where == "attributes.key":
        event["attributes"] = {"no\u0000te": 1}
    elif where == "order.items[0].sku":
        event["order"]["items"][0]["sku"] = "SKU\u0000"
    else:
        event[where] = "x\u0000y"
    return event


@pytest.mark.parametrize(
    "where",
    [
        "store_id",
        "channel",
        "customer.first_name",
        "attributes.value",
        "attributes.key",
        "order.items[0].sku",
        "interaction.name",
    ],
)
async def test_nul_character_in_a_text_field_is_a_client_error_not_a_500(
    client: Client, keys: dict[str, Any], engine: AsyncEngine, where: str
) -> None:
    response = await client.post("/v1/events", json=with_nul(where), headers=keys["events:write"])
    assert response.status_code in (400, 422), response.text
    assert_problem(response, response.status_code)
    await assert_nothing_written(engine)


async def test_batch_with_a_nul_character_at_index_2_is_a_client_error_and_stores_nothing(
    client: Client, keys: dict[str, Any], engine: AsyncEngine
) -> None:
    events = [purchase(f"e-{i}", "c-1", 150.0) for i in range(4)]
    events[2]["store_id"] = "madrid\u00001"
    response = await client.post("/v1/events/batch", json={"events": events}, headers=keys["events:write"])
    assert response.status_code in (400, 422), response.text
    body = assert_problem(response, response.status_code)
    if response.status_code == 422:
        assert error_fields(body) == {"events[2].store_id"}
    await assert_nothing_written(engine)


@pytest.mark.parametrize("path", EVENT_ROUTES)
@pytest.mark.parametrize("occurred_at", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"])
async def test_occurred_at_outside_the_storable_range_is_a_422_naming_it_not_a_500(
    client: Client, keys: dict[str, Any], engine: AsyncEngine, path: str, occurred_at: str
) -> None:
    event = purchase("e-1", "c-1", 50.0, occurred_at=occurred_at)
    response = await client.post(path, json=as_route_body(path, event), headers=keys["events:write"])
    body = assert_problem(response, 422)
    assert error_fields(body) == {field_prefix(path) + "occurred_at"}
    await assert_nothing_written(engine)


@pytest.mark.parametrize("path", EVENT_ROUTES)
async def test_absurdly_deep_json_is_a_client_error_not_a_500(
    client: Client, keys: dict[str, Any], engine: AsyncEngine, path: str
) -> None:
    depth = 100_000
    raw = b'{"events": ' + b"[" * depth + b"]" * depth + b"}"
    headers = {**keys["events:write"], "Content-Type": "application/json"}
    response = await client.post(path, content=raw, headers=headers)
    assert response.status_code in (400, 422), response.text
    assert_problem(response, response.status_code)
    await assert_nothing_written(engine)


async def test_customer_id_with_a_nul_character_is_a_client_error_not_a_500(
    client: Client, keys: dict[str, Any]
) -> None:
    response = await client.get("/v1/customers/c%001", headers=keys["customers:read"])
    assert response.status_code in (400, 404), response.text
    assert_problem(response, response.status_code)


async def test_a_customer_id_with_a_slash_is_refused_in_words_not_a_regular_expression(
    client: Client, keys: dict[str, Any]
) -> None:
    response = await client.post("/v1/events", json=purchase("e-1", "shop/42", 5.0), headers=keys["events:write"])
    [error] = assert_problem(response, 422)["errors"]
    assert error == {
        "field": "customer_id",
        "message": "'shop/42' is not allowed: printable ASCII without spaces or `/`, and neither `.` nor `..`, "
        "so that every /v1/customers/{id} route can address it.",
    }


@pytest.mark.parametrize("customer_id", ["odd?id#1", "100%", "a:b@c;d=e&f+g,h", "~'\"*()[]{}|\\^`$!<>", "..."])
async def test_every_customer_route_addresses_every_customer_id_an_event_may_carry(
    client: Client, keys: dict[str, Any], customer_id: str
) -> None:
    response = await client.post("/v1/events", json=purchase("e-odd", customer_id, 50.0), headers=keys["events:write"])
    assert response.status_code == 201, response.text
    path = "/v1/customers/" + quote(customer_id, safe="")
    profile = await client.get(path, headers=keys["customers:read"])
    assert profile.status_code == 200, profile.text
    assert profile.json()["customer_id"] == customer_id
    adjusted = await client.post(
        path + "/points/adjust",
        json={"points": 5, "note": "goodwill", "adjustment_id": "a-1"},
        headers=keys["rules:admin"],
    )
    assert adjusted.status_code in (200, 201), adjusted.text
    ledger = await client.get(path + "/points", headers=keys["customers:read"])
    assert ledger.status_code == 200, ledger.text
    assert (await client.delete(path, headers=keys["customers:erase"])).status_code == 204
    assert_problem(await client.get(path, headers=keys["customers:read"]), 404)


@pytest.mark.parametrize(
    ("method", "url"),
    [
        ("GET", "/v1/reports/uplift?campaign=a%00b"),
        ("GET", "/v1/reports/redemptions?campaign=a%00b"),
        ("GET", "/v1/exports/awards.csv?campaign=a%00b"),
        ("GET", "/v1/exports/exposures.csv?campaign=a%00b"),
        ("GET", "/v1/customers/c%00/points"),
        ("GET", "/v1/audit?action=a%00"),
        ("POST", "/v1/awards/AB%00C/redeem"),
        ("POST", "/v1/events?x=%00"),
    ],
)
async def test_a_nul_anywhere_in_the_url_is_a_400_before_any_route_runs(
    client: Client, keys: dict[str, Any], method: str, url: str
) -> None:
    response = await client.request(method, url, headers=keys["all"], json={} if method == "POST" else None)
    body = assert_problem(response, 400)
    assert body["detail"] == "the URL holds a NUL character (%00), which no id or parameter may contain"
    assert "\x00" not in response.text


@pytest.mark.parametrize("path", EVENT_ROUTES)
async def test_an_attribute_longer_than_1000_characters_is_refused_naming_it(
    client: Client, keys: dict[str, Any], engine: AsyncEngine, path: str
) -> None:
    event = purchase("e-note", "c-1", 50.0, attributes={"note": "x" * 1001, "ok": "y" * 1000})
    response = await client.post(path, json=as_route_body(path, event), headers=keys["events:write"])
    body = assert_problem(response, 422)
    assert error_fields(body) == {field_prefix(path) + "attributes.note"}
    await assert_nothing_written(engine)
    event["attributes"]["note"] = "x" * 1000
    accepted = await client.post(path, json=as_route_body(path, event), headers=keys["events:write"])
    assert accepted.status_code in (200, 201), accepted.text


async def test_a_profile_keeps_at_most_100_categories_however_many_an_event_brings(
    client: Client, keys: dict[str, Any], engine: AsyncEngine
) -> None:
    def many(event_id: str, prefix: str) -> dict[str, Any]:
        event = purchase(event_id, "c-wide", 1000.0)
        event["order"]["items"] = [
            {"sku": f"s{i}", "category": f"{prefix}{i:04d}", "quantity": 1, "unit_price": 1.0} for i in range(1000)
        ]
        return event

    for event_id, prefix in (("wide-1", "b"), ("wide-2", "a")):
        response = await client.post("/v1/events", json=many(event_id, prefix), headers=keys["events:write"])
        assert response.status_code == 201, response.text
    async with engine.connect() as connection:
        kept = (
            await connection.execute(
                text(
                    "SELECT array(SELECT jsonb_object_keys(category_spend)) FROM customers WHERE customer_id = 'c-wide'"
                )
            )
        ).scalar_one()
    assert sorted(kept) == [f"b{i:04d}" for i in range(100)]  # the first event's first 100; none of the second's


async def test_overlong_customer_id_in_the_path_is_a_client_error(client: Client, keys: dict[str, Any]) -> None:
    response = await client.get("/v1/customers/" + "c" * 201, headers=keys["customers:read"])
    assert response.status_code in (400, 404, 422), response.text
    assert_problem(response, response.status_code)


# --- size, routing, methods -----------------------------------------------------------------------------------


@pytest.mark.parametrize("path", EVENT_ROUTES)
async def test_body_over_5_mib_is_a_413_problem_and_stores_nothing(
    client: Client, keys: dict[str, Any], engine: AsyncEngine, path: str
) -> None:
    event = purchase("e-big", "c-1", 50.0, attributes={"note": "x" * (5 * 1024 * 1024 + 1)})
    response = await client.post(path, json=as_route_body(path, event), headers=keys["events:write"])
    body = assert_problem(response, 413)
    assert body["type"] == "urn:delight:problem:payload-too-large"
    assert body["detail"] == (
        "the request body is over 5,242,880 bytes, the most this server accepts (DELIGHT_MAX_BODY_BYTES)"
    )
    await assert_nothing_written(engine)


@pytest.mark.parametrize("path", EVENT_ROUTES)
async def test_body_over_5_mib_without_a_content_length_is_a_413_problem(
    client: Client, keys: dict[str, Any], engine: AsyncEngine, path: str
) -> None:
    event = purchase("e-big", "c-1", 50.0, attributes={"note": "x" * (5 * 1024 * 1024 + 1)})
    headers = {**keys["events:write"], "Content-Type": "application/json"}
    request = client.build_request("POST", path, json=as_route_body(path, event), headers=headers)
    del request.headers["content-length"]  # the server must count what it reads, not trust a header
    response = await client.send(request)
    assert_problem(response, 413)
    await assert_nothing_written(engine)


@pytest.mark.parametrize("path", ["/v1/nothing-here", "/v2/events", "/v1/events/batch/extra", "/"])
async def test_unknown_route_is_a_404_problem(client: Client, keys: dict[str, Any], path: str) -> None:
    response = await client.get(path, headers=keys["all"])
    body = assert_problem(response, 404)
    assert body["type"] == "urn:delight:problem:not-found"


async def test_unknown_route_without_a_key_is_still_a_404_problem(client: Client) -> None:
    assert_problem(await client.post("/v1/nothing-here", json={}), 404)


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/v1/events"), ("DELETE", "/v1/events"), ("PUT", "/v1/events/batch"), ("POST", "/v1/rules")],
)
async def test_wrong_method_is_a_405_problem(client: Client, keys: dict[str, Any], method: str, path: str) -> None:
    response = await client.request(method, path, headers=keys["all"])
    body = assert_problem(response, 405)
    assert body["type"] == "urn:delight:problem:method-not-allowed"


async def test_unknown_customer_is_a_404_problem(client: Client, keys: dict[str, Any], engine: AsyncEngine) -> None:
    response = await client.get("/v1/customers/c-nobody", headers=keys["customers:read"])
    body = assert_problem(response, 404)
    assert body["type"] == "urn:delight:problem:not-found"
    assert "c-nobody" in body["detail"]
    await assert_nothing_written(engine)


# --- request ids ----------------------------------------------------------------------------------------------


async def test_problem_echoes_a_sane_incoming_request_id(client: Client, keys: dict[str, Any]) -> None:
    headers = {**keys["events:write"], "Content-Type": "application/json", "X-Request-ID": "till-7.req_0042-a"}
    response = await client.post("/v1/events", content=b"{", headers=headers)
    body = assert_problem(response, 400)
    assert body["request_id"] == "till-7.req_0042-a"
    assert response.headers["x-request-id"] == "till-7.req_0042-a"


@pytest.mark.parametrize("incoming", ["has spaces in it", "x" * 101, "semi;colon", "<script>"])
async def test_an_insane_incoming_request_id_is_replaced_with_a_fresh_one(
    client: Client, keys: dict[str, Any], incoming: str
) -> None:
    response = await client.get("/v1/customers/c-nobody", headers={**keys["customers:read"], "X-Request-ID": incoming})
    body = assert_problem(response, 404)
    assert body["request_id"] != incoming
    assert response.headers["x-request-id"] == body["request_id"]


async def test_each_request_without_an_id_gets_its_own(client: Client, keys: dict[str, Any]) -> None:
    first = assert_problem(await client.get("/v1/customers/c-nobody", headers=keys["customers:read"]), 404)
    second = assert_problem(await client.get("/v1/customers/c-nobody", headers=keys["customers:read"]), 404)
    assert first["request_id"] != second["request_id"]


async def test_a_successful_response_also_carries_the_request_id(client: Client, keys: dict[str, Any]) -> None:
    headers = {**keys["events:write"], "X-Request-ID": "ok-1"}
    response = await client.post("/v1/events", json=purchase("e-1", "c-1", 10.0), headers=headers)
    assert response.status_code == 201
    assert response.headers["x-request-id"] == "ok-1"
