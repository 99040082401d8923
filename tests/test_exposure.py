"""Exposing the service safely.

* Every operation of the committed OpenAPI document, against every kind of key: none, garbage, unknown,
  revoked, and a key of each single scope. The list of routes comes from the document, not from this file,
  so a new route that nobody maps here fails the test instead of going unchecked.
* No personal data and no API key in any log entry during a full flow, and one canonical line per request.
* ``GET /metrics``: open, readable by Prometheus, and counting what really happened.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import re
import secrets
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import structlog
from httpx import Response
from jsonschema import Draft202012Validator
from litestar import Litestar
from litestar.testing import AsyncTestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from service.keys import scopes
from tests.conftest import interaction, new_key, purchase

Client = AsyncTestClient[Litestar]
Headers = dict[str, str]

OPENAPI = Path(__file__).resolve().parent.parent / "openapi" / "openapi.json"
DOCUMENT: dict[str, Any] = json.loads(OPENAPI.read_text())
HTTP_METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")
KEY_SHAPE = re.compile(r"dlk_[0-9a-f]{16}_[A-Za-z0-9_-]{43}")


@dataclass(frozen=True)
class Operation:
    operation_id: str
    method: str
    path: str
    spec: Mapping[str, Any]

    @property
    def secured(self) -> bool:
        return bool(self.spec.get("security"))

    def __str__(self) -> str:
        return f"{self.method} {self.path} ({self.operation_id})"


def document_operations(document: Mapping[str, Any]) -> list[Operation]:
    return [
        Operation(str(spec.get("operationId")), method.upper(), path, spec)
        for path, item in document["paths"].items()
        for method, spec in item.items()
        if method in HTTP_METHODS
    ]


OPERATIONS = document_operations(DOCUMENT)
SECURED = [op for op in OPERATIONS if op.secured]
OPEN = [op for op in OPERATIONS if not op.secured]

# The scope each secured operation needs. Kept by hand on purpose: it is the claim the tests check the service
# against, and test_the_scope_map_covers_exactly_the_secured_operations_of_the_document keeps it complete.
SCOPE_BY_OPERATION: dict[str, str] = {
    "postEvent": scopes.EVENTS_WRITE,
    "postEventBatch": scopes.EVENTS_WRITE,
    "getCustomer": scopes.CUSTOMERS_READ,
    "getPointsLedger": scopes.CUSTOMERS_READ,
    "redeemAward": scopes.AWARDS_REDEEM,
    "redeemPoints": scopes.AWARDS_REDEEM,
    "adjustPoints": scopes.RULES_ADMIN,
    "getRules": scopes.RULES_ADMIN,
    "reloadRules": scopes.RULES_ADMIN,
    "simulateRules": scopes.RULES_ADMIN,
    "getAuditLog": scopes.RULES_ADMIN,
    "getWebhooks": scopes.RULES_ADMIN,
    "getRedemptionReport": scopes.REPORTS_READ,
    "getUpliftReport": scopes.REPORTS_READ,
    "getProgrammeReport": scopes.REPORTS_READ,
    "getCampaignsOverview": scopes.REPORTS_READ,
    "exportAwards": scopes.REPORTS_READ,
    "exportExposures": scopes.REPORTS_READ,
    "listKeys": scopes.KEYS_ADMIN,
    "createKey": scopes.KEYS_ADMIN,
    "revokeKey": scopes.KEYS_ADMIN,
    "eraseCustomer": scopes.CUSTOMERS_ERASE,
}
OPEN_OPERATIONS = {"getLiveness", "getReadiness", "getMetrics"}

CUSTOMER = "c-1"
# Times inside the test campaign (2026); redemptions carry their own time so awards are never judged expired.
SEEDED_AT = "2026-03-0{day}T10:00:00Z"
REDEEMED_AT = "2026-03-05T10:00:00Z"

# A minimal valid body for each operation that takes one (checked against the document's schema too).
BODY_BY_OPERATION: dict[str, Any] = {
    "postEvent": purchase("exp-new", CUSTOMER, 10.0, occurred_at="2026-03-04T10:00:00Z"),
    "postEventBatch": {"events": [purchase("exp-batch", CUSTOMER, 10.0, occurred_at="2026-03-04T11:00:00Z")]},
    "redeemAward": {"order_id": "o-exp-redeem", "redeemed_at": REDEEMED_AT},
    "redeemPoints": {"order_id": "o-exp-points", "points": 50, "redeemed_at": REDEEMED_AT},
    "adjustPoints": {"adjustment_id": "adj-exp", "note": "goodwill", "points": 10},
    "createKey": {"name": "exposure-test", "scopes": [scopes.REPORTS_READ]},
    "simulateRules": {"event": purchase("exp-sim", CUSTOMER, 120.0, occurred_at="2026-03-04T12:00:00Z")},
}
# Values for the query parameters an operation requires (optional ones are left out).
QUERY_VALUES: dict[str, str] = {"campaign": "loyal"}


@dataclass(frozen=True)
class World:
    """What the path parameters point at: a customer with a gift award and points, and a key to revoke."""

    customer_id: str
    award_code: str
    key_id: str


PATH_VALUES: dict[str, Callable[[World], str]] = {
    "customer_id": lambda world: world.customer_id,
    "code": lambda world: world.award_code,
    "key_id": lambda world: world.key_id,
}


@dataclass(frozen=True)
class Call:
    method: str
    url: str
    params: dict[str, str]
    body: Any


def call_for(operation: Operation, world: World) -> Call:
    url, params = operation.path, {}
    for parameter in operation.spec.get("parameters", []):
        name, where = parameter["name"], parameter["in"]
        if where == "path":
            assert name in PATH_VALUES, f"{operation}: no value for the path parameter {name!r} in PATH_VALUES"
            url = url.replace("{" + name + "}", quote(PATH_VALUES[name](world), safe=""))
        elif where == "query" and parameter.get("required"):
            assert name in QUERY_VALUES, f"{operation}: no value for the required query parameter {name!r}"
            params[name] = QUERY_VALUES[name]
        elif parameter.get("required"):
            pytest.fail(f"{operation}: the required {where} parameter {name!r} is not handled by this test")
    assert "{" not in url, f"{operation}: a path parameter is not declared in the document"
    body = None
    if "requestBody" in operation.spec:
        assert operation.operation_id in BODY_BY_OPERATION, f"{operation} takes a body; add it to BODY_BY_OPERATION"
        body = BODY_BY_OPERATION[operation.operation_id]
    return Call(operation.method, url, params, body)


def body_schema(operation: Operation) -> dict[str, Any]:
    schema = operation.spec["requestBody"]["content"]["application/json"]["schema"]
    return {**schema, "components": DOCUMENT["components"]}  # so "#/components/..." resolves against it


def bearer(key: str) -> Headers:
    return {"Authorization": f"Bearer {key}"}


def raw_key(headers: Headers) -> str:
    return headers["Authorization"].removeprefix("Bearer ")


def unknown_key() -> str:
    """Well formed (``dlk_<16 hex>_<43 url-safe>``), never issued."""
    return f"dlk_{secrets.token_hex(8)}_{secrets.token_urlsafe(32)}"


def problem_mismatch(response: Response, status: int) -> str | None:
    """Why ``response`` is not an RFC 9457 problem with ``status``; ``None`` when it is."""
    if response.status_code != status:
        return f"status {response.status_code}, expected {status}: {response.text[:300]}"
    content_type = response.headers.get("content-type", "")
    if not content_type.startswith("application/problem+json"):
        return f"content type {content_type!r} for a {status}"
    body = response.json()
    if body.get("status") != status:
        return f"problem status {body.get('status')!r} in a {status} response"
    if not (body.get("type") and body.get("title") and body.get("detail")):
        return f"incomplete problem document {body!r}"
    return None


def assert_problem(response: Response, status: int) -> dict[str, Any]:
    mismatch = problem_mismatch(response, status)
    assert mismatch is None, mismatch
    body: dict[str, Any] = response.json()
    return body


# --- the maps agree with the document and with the app ---------------------------------------------------------


def test_the_document_lists_operations_and_each_has_a_unique_id() -> None:
    ids = [op.operation_id for op in OPERATIONS]
    assert len(SECURED) >= 20, "the document has suspiciously few secured operations"
    assert "None" not in ids
    assert len(ids) == len(set(ids))


def test_the_scope_map_covers_exactly_the_secured_operations_of_the_document() -> None:
    secured = {op.operation_id for op in SECURED}
    assert secured - set(SCOPE_BY_OPERATION) == set(), "secured operations without a scope in SCOPE_BY_OPERATION"
    assert set(SCOPE_BY_OPERATION) - secured == set(), "SCOPE_BY_OPERATION names operations the document lacks"
    assert set(SCOPE_BY_OPERATION.values()) == set(scopes.ALL), "every scope guards at least one operation"


def test_only_health_and_metrics_are_open() -> None:
    assert {op.operation_id for op in OPEN} == OPEN_OPERATIONS


def test_a_scope_named_in_an_operations_description_is_the_one_in_the_map() -> None:
    for op in SECURED:
        for named in re.findall(r"[Ss]cope `([a-z]+:[a-z]+)`", op.spec.get("description", "")):
            assert named == SCOPE_BY_OPERATION[op.operation_id], op


def test_every_body_is_mapped_and_matches_the_documents_schema() -> None:
    with_body = {op.operation_id: op for op in OPERATIONS if "requestBody" in op.spec}
    assert set(with_body) == set(BODY_BY_OPERATION), "BODY_BY_OPERATION must cover exactly the operations with a body"
    for operation_id, op in with_body.items():
        errors = sorted(Draft202012Validator(body_schema(op)).iter_errors(BODY_BY_OPERATION[operation_id]), key=str)
        assert not errors, f"{op}: {[e.message for e in errors]}"


def test_the_scope_map_matches_the_guards_the_app_runs(app: Litestar) -> None:
    guards_by_operation: dict[str, set[str]] = {}
    for route in app.routes:
        for handler in getattr(route, "route_handlers", []):
            operation_id = handler.operation_id
            if isinstance(operation_id, str):
                guards_by_operation[operation_id] = {g.__name__ for g in handler.resolve_guards()}
    for op in OPERATIONS:
        assert op.operation_id in guards_by_operation, f"{op} is documented but the app has no such handler"
        guards = guards_by_operation[op.operation_id]
        if op.secured:
            expected = "requires_" + SCOPE_BY_OPERATION[op.operation_id].replace(":", "_")
            assert guards == {expected}, f"{op}: guards {guards}, expected {expected}"
        else:
            assert guards == set(), f"{op} is documented without security but is guarded by {guards}"
    documented = {op.operation_id for op in OPERATIONS}
    for operation_id, guards in guards_by_operation.items():
        if guards:
            assert operation_id in documented, f"{operation_id} is guarded but missing from openapi.json"


# --- every secured route x every kind of key -------------------------------------------------------------------


@pytest.fixture
async def world(client: Client, keys: dict[str, Headers], sessionmaker: async_sessionmaker[AsyncSession]) -> World:
    """Customer ``c-1`` with three purchases: a mug on the first, 200 points on the third; and a key to revoke."""
    awards: list[dict[str, Any]] = []
    for day, total in ((1, 120.0), (2, 20.0), (3, 30.0)):
        event = purchase(f"exp-seed-{day}", CUSTOMER, total, occurred_at=SEEDED_AT.format(day=day))
        response = await client.post("/v1/events", json=event, headers=keys[scopes.EVENTS_WRITE])
        assert response.status_code == 201, response.text
        awards += response.json()["awards"]
    assert sorted(a["kind"] for a in awards) == ["gift", "points"], awards
    gift = next(a for a in awards if a["kind"] == "gift")
    victim = await new_key(sessionmaker, scopes.REPORTS_READ)
    return World(customer_id=CUSTOMER, award_code=gift["code"], key_id=victim.split("_")[1])


async def revoked_key(client: Client, keys: dict[str, Headers], sessionmaker: async_sessionmaker[AsyncSession]) -> str:
    """A key with every scope, used once (so it sits in the verifier's cache), then revoked over HTTP."""
    key = await new_key(sessionmaker, *scopes.ALL)
    assert (await client.get("/v1/keys", headers=bearer(key))).status_code == 200
    key_id = key.split("_")[1]
    response = await client.delete(f"/v1/keys/{key_id}", headers=keys[scopes.KEYS_ADMIN])
    assert response.status_code == 200, response.text
    assert response.json()["revoked_at"] is not None
    return key


@pytest.mark.parametrize("operation", SECURED, ids=lambda op: op.operation_id)
async def test_a_secured_operation_admits_exactly_the_keys_with_its_scope(
    client: Client,
    keys: dict[str, Headers],
    sessionmaker: async_sessionmaker[AsyncSession],
    world: World,
    operation: Operation,
) -> None:
    scope = SCOPE_BY_OPERATION.get(operation.operation_id)
    assert scope is not None, f"{operation} is secured in openapi.json; add the scope it needs to SCOPE_BY_OPERATION"
    request = call_for(operation, world)

    async def send(headers: Headers) -> Response:
        return await client.request(
            request.method, request.url, params=request.params, json=request.body, headers=headers
        )

    failures: list[str] = []

    def expect_problem(case: str, response: Response, status: int, problem_type: str) -> None:
        mismatch = problem_mismatch(response, status)
        if mismatch is None and response.json()["type"] != f"urn:delight:problem:{problem_type}":
            mismatch = f"problem type {response.json()['type']!r}"
        if mismatch is None and status == 401 and not response.headers.get("www-authenticate", "").startswith("Bearer"):
            mismatch = "no 'WWW-Authenticate: Bearer' header"
        if mismatch is not None:
            failures.append(f"{case}: {mismatch}")

    expect_problem("no Authorization header", await send({}), 401, "unauthorized")
    expect_problem("Bearer garbage", await send({"Authorization": "Bearer garbage"}), 401, "unauthorized")
    expect_problem("an unknown key", await send(bearer(unknown_key())), 401, "unauthorized")
    revoked = await revoked_key(client, keys, sessionmaker)
    expect_problem("a revoked key", await send(bearer(revoked)), 401, "unauthorized")

    for held in scopes.ALL:
        response = await send(keys[held])
        if held != scope:
            expect_problem(f"a key with only {held}", response, 403, "forbidden")
            if response.status_code == 403 and scope not in response.json()["detail"]:
                failures.append(f"a key with only {held}: the 403 does not name {scope!r}")
            continue
        status = response.status_code
        if status in (401, 403):
            failures.append(f"a key with {scope}, the scope it needs, got {status}: {response.text[:300]}")
        elif not 200 <= status < 300 or str(status) not in operation.spec["responses"]:
            failures.append(f"a key with {scope}: status {status} (not a documented success): {response.text[:300]}")
    assert not failures, f"{operation}:\n  " + "\n  ".join(failures)


@pytest.mark.parametrize("operation", OPEN, ids=lambda op: op.operation_id)
async def test_an_open_operation_answers_without_a_key(client: Client, operation: Operation) -> None:
    assert not [p for p in operation.spec.get("parameters", []) if p.get("required")]
    for headers in ({}, {"Authorization": "Bearer garbage"}):
        response = await client.request(operation.method, operation.path, headers=headers)
        assert response.status_code == 200, response.text
        assert str(response.status_code) in operation.spec["responses"]


async def test_the_schema_is_served_without_a_key(client: Client) -> None:
    response = await client.get("/schema/openapi.json")
    assert response.status_code == 200
    assert response.json()["paths"].keys() == DOCUMENT["paths"].keys()


# --- no personal data in the logs ------------------------------------------------------------------------------

FIRST_NAME = "Zoraida"
LAST_NAME = "Etxeberria-Quintanilla"
EMAIL = "zoraida@example.org"
BIRTHDAY = "1990-03-01"
PERSON = {"first_name": FIRST_NAME, "last_name": LAST_NAME, "email": EMAIL, "birthday": BIRTHDAY, "language": "es"}
TEST_CLIENT_LOGGERS = ("httpx", "httpcore")  # the test's own HTTP client, not the service


@contextmanager
def capture() -> Iterator[list[dict[str, Any]]]:
    """Every log entry the service writes while active, as an event dict (request context merged, tracebacks
    rendered to text).

    ``structlog.testing.capture_logs`` sees the loggers built from the current structlog configuration; loggers
    cached earlier still end in the standard library's logging, so a handler on the root logger collects those
    and any third-party library's lines (the approach of tests/test_logging.py).
    """
    order = itertools.count()
    stamped: list[tuple[int, dict[str, Any]]] = []

    def stamp(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        event_dict["_seq"] = next(order)
        return event_dict

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.name.startswith(TEST_CLIENT_LOGGERS):
                return
            if isinstance(record.msg, dict):  # a structlog entry on its way to the formatter
                entry = dict(structlog.processors.format_exc_info(None, "", dict(record.msg)))
            else:
                entry = {"event": record.getMessage(), "logger": record.name, "args": repr(record.args)}
                if record.exc_info:
                    entry["exception"] = logging.Formatter().formatException(record.exc_info)
            entry.setdefault("log_level", record.levelname.lower())
            stamped.append((next(order), entry))

    root = logging.getLogger()
    handler, level = Keep(), root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)  # more than the service's default INFO: nothing may leak at any level
    entries: list[dict[str, Any]] = []
    try:
        with structlog.testing.capture_logs(
            processors=[structlog.contextvars.merge_contextvars, structlog.processors.format_exc_info, stamp]
        ) as direct:
            yield entries
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
    stamped.extend((int(e.pop("_seq")), dict(e)) for e in direct)
    entries.extend(e for _, e in sorted(stamped, key=lambda pair: pair[0]))


def renderings(entry: Mapping[str, Any]) -> tuple[str, str]:
    """The entry as ``repr`` and as the JSON renderer would write it (dates as ISO text)."""
    return repr(entry), json.dumps(entry, default=str, ensure_ascii=False)


@dataclass(frozen=True)
class Sent:
    response: Response
    method: str
    route: str


async def test_a_full_flow_logs_no_personal_data_nor_any_key_and_one_request_line_per_request(
    client: Client, keys: dict[str, Headers], sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    sent: list[Sent] = []

    async def call(method: str, url: str, route: str, headers: Headers, **kwargs: Any) -> Response:
        response = await client.request(method, url, headers=headers, **kwargs)
        sent.append(Sent(response, method, route))
        return response

    used_keys = [raw_key(h) for h in keys.values()]
    wrong_secret = f"dlk_{raw_key(keys['all']).split('_')[1]}_{secrets.token_urlsafe(32)}"
    stranger = unknown_key()
    event = purchase("pii-1", "c-pii", 150.0, occurred_at="2026-03-01T10:00:00Z", customer=PERSON)
    with capture() as entries:
        # a winning event whose award message names the customer, its replay and a conflicting replay
        first = await call("POST", "/v1/events", "/v1/events", keys[scopes.EVENTS_WRITE], json=event)
        replay = await call("POST", "/v1/events", "/v1/events", keys[scopes.EVENTS_WRITE], json=event)
        conflict = await call(
            "POST", "/v1/events", "/v1/events", keys[scopes.EVENTS_WRITE], json={**event, "store_id": "other"}
        )
        batch = await call(
            "POST",
            "/v1/events/batch",
            "/v1/events/batch",
            keys[scopes.EVENTS_WRITE],
            json={"events": [purchase("pii-2", "c-pii", 20.0, occurred_at="2026-03-02T10:00:00Z", customer=PERSON)]},
        )
        # redemption, then the same code for another order, then a code that does not exist
        code = first.json()["awards"][0]["code"]
        redeem_route = "/v1/awards/{code}/redeem"
        redeemed = await call(
            "POST",
            f"/v1/awards/{code}/redeem",
            redeem_route,
            keys[scopes.AWARDS_REDEEM],
            json={"order_id": "o-pii-1", "redeemed_at": REDEEMED_AT},
        )
        taken = await call(
            "POST",
            f"/v1/awards/{code}/redeem",
            redeem_route,
            keys[scopes.AWARDS_REDEEM],
            json={"order_id": "o-pii-2", "redeemed_at": REDEEMED_AT},
        )
        no_award = await call(
            "POST",
            "/v1/awards/AAAA-AAAA-AAAA-A/redeem",
            redeem_route,
            keys[scopes.AWARDS_REDEEM],
            json={"order_id": "x"},
        )
        # reads
        profile = await call("GET", "/v1/customers/c-pii", "/v1/customers/{customer_id}", keys[scopes.CUSTOMERS_READ])
        ledger = await call(
            "GET", "/v1/customers/c-pii/points", "/v1/customers/{customer_id}/points", keys[scopes.CUSTOMERS_READ]
        )
        nobody = await call("GET", "/v1/customers/c-nobody", "/v1/customers/{customer_id}", keys[scopes.CUSTOMERS_READ])
        # bad bodies that carry the e-mail: one that does not match the schema, one that is not JSON at all
        bad = {**purchase("pii-bad", "c-pii", -1.0, customer=PERSON), "unexpected": EMAIL}
        invalid = await call("POST", "/v1/events", "/v1/events", keys[scopes.EVENTS_WRITE], json=bad)
        broken = await call(
            "POST",
            "/v1/events",
            "/v1/events",
            {**keys[scopes.EVENTS_WRITE], "Content-Type": "application/json"},
            content=f'{{"customer": {{"email": "{EMAIL}", "first_name": "{FIRST_NAME}"'.encode(),
        )
        # the personal data once more through the simulator and a hand adjustment's note
        simulated = await call(
            "POST",
            "/v1/rules/simulate",
            "/v1/rules/simulate",
            keys[scopes.RULES_ADMIN],
            json={
                "event": purchase("pii-sim", "c-pii", 150.0, occurred_at="2026-03-03T10:00:00Z", customer=PERSON),
                "customer": {"attributes": PERSON},
            },
        )
        adjusted = await call(
            "POST",
            "/v1/customers/c-pii/points/adjust",
            "/v1/customers/{customer_id}/points/adjust",
            keys[scopes.RULES_ADMIN],
            json={"adjustment_id": "pii-adj", "note": f"goodwill for {FIRST_NAME} <{EMAIL}>", "points": 5},
        )
        # keys: create one over HTTP, use it, use it with a wrong secret, revoke it, use it again
        created = await call(
            "POST",
            "/v1/keys",
            "/v1/keys",
            keys[scopes.KEYS_ADMIN],
            json={"name": "exposure-logs", "scopes": [scopes.CUSTOMERS_READ]},
        )
        new = created.json()["key"]
        used_keys.append(new)
        as_new = await call("GET", "/v1/customers/c-pii", "/v1/customers/{customer_id}", bearer(new))
        new_wrong = f"{'_'.join(new.split('_', 2)[:2])}_{secrets.token_urlsafe(32)}"
        wrong_new = await call("GET", "/v1/customers/c-pii", "/v1/customers/{customer_id}", bearer(new_wrong))
        wrong_all = await call("GET", "/v1/rules", "/v1/rules", bearer(wrong_secret))
        unknown = await call("GET", "/v1/rules", "/v1/rules", bearer(stranger))
        revoked = await call(
            "DELETE", f"/v1/keys/{created.json()['key_id']}", "/v1/keys/{key_id}", keys[scopes.KEYS_ADMIN]
        )
        after_revoke = await call("GET", "/v1/customers/c-pii", "/v1/customers/{customer_id}", bearer(new))
        forbidden = await call("GET", "/v1/customers/c-pii", "/v1/customers/{customer_id}", keys[scopes.EVENTS_WRITE])
        # erasure, and the profile gone afterwards
        erased = await call(
            "DELETE", "/v1/customers/c-pii", "/v1/customers/{customer_id}", keys[scopes.CUSTOMERS_ERASE]
        )
        gone = await call("GET", "/v1/customers/c-pii", "/v1/customers/{customer_id}", keys[scopes.CUSTOMERS_READ])

    statuses = {
        "first": (first, 201),
        "replay": (replay, 200),
        "conflict": (conflict, 409),
        "batch": (batch, 200),
        "redeemed": (redeemed, 200),
        "taken": (taken, 409),
        "no_award": (no_award, 404),
        "profile": (profile, 200),
        "ledger": (ledger, 200),
        "nobody": (nobody, 404),
        "invalid": (invalid, 422),
        "broken": (broken, 400),
        "simulated": (simulated, 200),
        "adjusted": (adjusted, 200),
        "created": (created, 201),
        "as_new": (as_new, 200),
        "wrong_new": (wrong_new, 401),
        "wrong_all": (wrong_all, 401),
        "unknown": (unknown, 401),
        "revoked": (revoked, 200),
        "after_revoke": (after_revoke, 401),
        "forbidden": (forbidden, 403),
        "erased": (erased, 204),
        "gone": (gone, 404),
    }
    assert {name: r.status_code for name, (r, _) in statuses.items()} == {
        name: status for name, (_, status) in statuses.items()
    }
    for response, status in statuses.values():
        if status >= 400:
            assert_problem(response, status)
    assert batch.json()["results"][0]["status"] == 201
    # the personal data did reach the service: it is in the award message and the stored profile
    assert FIRST_NAME in first.json()["awards"][0]["message"]
    attributes = profile.json()["attributes"]
    assert (attributes["first_name"], attributes["email"], attributes["birthday"]) == (FIRST_NAME, EMAIL, BIRTHDAY)

    # nothing went wrong inside the service along the way
    assert entries, "nothing was logged at all; the test would prove nothing"
    assert not [e for e in entries if e.get("log_level") in ("error", "critical")], "an error was logged"

    forbidden_text = {FIRST_NAME, LAST_NAME, EMAIL, BIRTHDAY, wrong_secret, stranger, new_wrong}
    for key in [*used_keys, wrong_secret, stranger, new_wrong]:
        forbidden_text |= {key, key.split("_", 2)[2]}  # the key and its secret part (which may hold "_")
    leaks = []
    for entry in entries:
        for rendered in renderings(entry):
            leaks += [(entry.get("event"), s) for s in forbidden_text if s in rendered]
            leaks += [(entry.get("event"), m) for m in KEY_SHAPE.findall(rendered)]
    assert not leaks, f"personal data or API keys in the logs: {sorted(set(leaks))}"

    # one canonical request line per request, carrying method, route template, status and duration
    lines = [e for e in entries if e.get("event") == "request"]
    assert len(lines) == len(sent), f"{len(lines)} request lines for {len(sent)} requests"
    by_id = Counter(line.get("request_id") for line in lines)
    for item in sent:
        request_id = item.response.headers["x-request-id"]
        assert by_id[request_id] == 1, f"{by_id[request_id]} request lines for {item.method} {item.route}"
        [line] = [line for line in lines if line.get("request_id") == request_id]
        assert line["method"] == item.method
        assert line["route"] == item.route
        assert line["status"] == item.response.status_code
        assert isinstance(line["duration_ms"], int | float)
        assert 0 <= line["duration_ms"] < 60_000


# --- /metrics ---------------------------------------------------------------------------------------------------

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@dataclass(frozen=True)
class Scrape:
    families: dict[str, Any]
    samples: Samples

    def value(self, name: str, **labels: str) -> float:
        """One sample's value; 0 when the series does not exist yet (a counter never incremented)."""
        return self.samples.get((name, frozenset(labels.items())), 0.0)

    def require(self, name: str, **labels: str) -> float:
        key = (name, frozenset(labels.items()))
        assert key in self.samples, f"no sample {name}{labels}"
        return self.samples[key]

    def label_values(self, name: str, label: str) -> set[str]:
        return {dict(labels)[label] for sample, labels in self.samples if sample == name and label in dict(labels)}


async def scrape(client: Client) -> Scrape:
    response = await client.get("/metrics")  # no key
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    families = {family.name: family for family in text_string_to_metric_families(response.text)}
    samples: Samples = {}
    for family in families.values():
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return Scrape(families, samples)


def deltas(before: Scrape, after: Scrape, name: str, label: str) -> dict[str, float]:
    """How much each series of ``name``, told apart by ``label``, grew between the scrapes."""
    grown: dict[str, float] = {}
    for (sample, labels), value in after.samples.items():
        if sample == name:
            change = value - before.samples.get((sample, labels), 0.0)
            if change:
                grown[dict(labels)[label]] = grown.get(dict(labels)[label], 0.0) + change
    return grown


async def test_metrics_are_open_parseable_and_count_what_happened(
    client: Client, keys: dict[str, Headers], engine: AsyncEngine
) -> None:
    before = await scrape(client)
    assert before.require("delight_budget_remaining", gift="mug", unit="stock") == 100  # counters start afresh

    events = [
        purchase("met-1", "c-met", 150.0, occurred_at="2026-03-01T10:00:00Z"),  # mug
        purchase("met-2", "c-met", 20.0, occurred_at="2026-03-02T10:00:00Z"),  # nothing
        purchase("met-3", "c-met", 120.0, occurred_at="2026-03-03T10:00:00Z"),  # mug, and points on the third
        interaction("met-4", "c-met", rating=5),  # the review offer
        purchase("met-5", "c-met-2", 130.0, occurred_at="2026-03-04T10:00:00Z"),  # mug
    ]
    awards: list[dict[str, Any]] = []
    for event in events:
        response = await client.post("/v1/events", json=event, headers=keys[scopes.EVENTS_WRITE])
        assert response.status_code == 201, response.text
        awards += response.json()["awards"]
    replay = await client.post("/v1/events", json=events[0], headers=keys[scopes.EVENTS_WRITE])
    assert replay.status_code == 200  # not a new event: counted as a request, not as an event
    invalid = await client.post("/v1/events", json={"event_id": "met-bad"}, headers=keys[scopes.EVENTS_WRITE])
    assert invalid.status_code == 422
    assert (await client.get("/v1/customers/c-met", headers=keys[scopes.CUSTOMERS_READ])).status_code == 200
    assert (await client.get("/v1/no-such-thing/c-met")).status_code == 404
    issued = Counter((a["campaign"], a["kind"]) for a in awards)
    assert issued == {("loyal", "gift"): 3, ("loyal", "points"): 1, ("loyal", "offer"): 1}, issued
    mugs = sum(1 for a in awards if a["gift"] and a["gift"]["id"] == "mug")

    after = await scrape(client)

    # requests, by route template and status
    assert after.families["delight_http_requests"].type == "counter"

    def requests(scrape: Scrape, status: str) -> float:
        return scrape.value("delight_http_requests_total", method="POST", route="/v1/events", status=status)

    assert requests(after, "201") - requests(before, "201") == len(events)
    assert requests(after, "200") - requests(before, "200") == 1
    assert requests(after, "422") - requests(before, "422") == 1
    customer_route = {"method": "GET", "route": "/v1/customers/{customer_id}", "status": "200"}
    assert after.value("delight_http_requests_total", **customer_route) > before.value(
        "delight_http_requests_total", **customer_route
    )
    routes = after.label_values("delight_http_requests_total", "route")
    assert not [r for r in routes if "c-met" in r], f"a concrete path became a route label: {routes}"
    assert "unmatched" in routes
    documented = set(DOCUMENT["paths"])
    assert {"/v1/events", "/v1/customers/{customer_id}", "/metrics"} <= routes & documented

    # latency, a histogram per route
    latency = after.families["delight_http_request_duration_seconds"]
    assert latency.type == "histogram"
    route = {"method": "POST", "route": "/v1/events"}
    count = after.require("delight_http_request_duration_seconds_count", **route)
    assert count - before.value("delight_http_request_duration_seconds_count", **route) == len(events) + 2
    assert after.require("delight_http_request_duration_seconds_bucket", le="+Inf", **route) == count
    assert after.require("delight_http_request_duration_seconds_sum", **route) > 0

    # events and awards
    assert deltas(before, after, "delight_events_total", "type") == {"purchase": 4, "interaction": 1}
    awarded = {
        (dict(labels)["campaign"], dict(labels)["kind"]): value - before.samples.get((name, labels), 0.0)
        for (name, labels), value in after.samples.items()
        if name == "delight_awards_total"
    }
    assert {k: v for k, v in awarded.items() if v} == dict(issued)

    # rule evaluation: once per new event at least
    evaluation = after.families["delight_rule_evaluation_seconds"]
    assert evaluation.type == "histogram"
    evaluated = after.require("delight_rule_evaluation_seconds_count") - before.value(
        "delight_rule_evaluation_seconds_count"
    )
    assert evaluated >= len(events)

    # what the database knows, read at scrape time
    assert after.families["delight_budget_remaining"].type == "gauge"
    assert after.require("delight_budget_remaining", gift="mug", unit="stock") == 100 - mugs
    async with engine.connect() as connection:
        pending = (
            await connection.execute(text("SELECT count(*) FROM outbox WHERE delivered_at IS NULL"))
        ).scalar_one()
    assert after.require("delight_outbox_pending") == pending
    assert not math.isnan(after.require("delight_outbox_oldest_seconds"))
    assert after.require("delight_database_up") == 1


async def test_metrics_need_no_key_and_ignore_a_bad_one(client: Client) -> None:
    response = await client.get("/metrics", headers={"Authorization": "Bearer garbage"})
    assert response.status_code == 200
    assert "delight_database_up 1" in response.text
