"""Schemathesis against the committed OpenAPI contract: no 5xx, and every response matches the schema.

The operations come from ``openapi/openapi.json`` as committed (``test_openapi.py`` checks that the
served document equals it), so this fuzzes the contract integrators code against. The requests go
to the real app: ``create_app`` on the test database and Redis (rate limit off, as in every test
app), served by uvicorn on a free loopback port in a thread of this process, with an API key that
holds every scope.

Each operation is its own test: 30 generated cases (Hypothesis, derandomized, so a run repeats
itself) plus Schemathesis' coverage phase (boundary values, missing and wrongly typed fields,
methods the path does not have). Every response goes through Schemathesis' checks: not a server
error, a documented status code, a documented content type, a body and headers that match their
schema, and a 401 once the key is taken away.

Random ids only ever meet 404s and random request bodies carry fields the service refuses, so
before each operation is fuzzed a customer is seeded (a purchase: gift codes and points), and
generated parameters and bodies are sometimes swapped for known ids (that customer, its codes, a
key to revoke, the rule pack's campaigns, real scopes) with unknown body fields dropped. That way
the success answers of the write routes (events, batch, redemptions, keys, adjustments, erasure)
are checked against the schema too; `test_fuzzing_reached_a_success_of_every_operation` checks
that they were.

Deviations the fuzzing found have their own tests at the end (paging past a bigint, the uplift
report's formats, OPTIONS on paths with two methods, date-time query parameters, unknown fields).
"""

from __future__ import annotations

import collections
import datetime as dt
import functools
import json
import socket
import textwrap
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import hypothesis.strategies as st
import pytest
import requests
import schemathesis
import uvicorn
from hypothesis import HealthCheck, settings
from sqlalchemy.ext.asyncio import AsyncEngine

from service.app import create_app
from service.keys import scopes
from service.lib.db import create_engine, create_sessionmaker
from tests.conftest import make_settings, new_key, purchase, scratch_database, truncate

COMMITTED = Path(__file__).resolve().parent.parent / "openapi" / "openapi.json"
DOCUMENT: dict[str, Any] = json.loads(COMMITTED.read_text())
START_TIMEOUT = 30
SEED_CUSTOMER = "fuzz-customer-1"
CAMPAIGNS = ("fuzz-gifts", "fuzz-trial")

# The fuzzer's own rule pack: awards that stay redeemable for years and campaigns with no end date,
# so the seeded codes work whatever day the suite runs.
RULE_PACK = {
    "catalog.yaml": """\
        gifts:
          - id: mug
            name: Branded mug
            unit_cost: 3.10
            stock: 100000
          - id: vase
            name: Small vase
            unit_cost: 4.50
        """,
    "settings.yaml": """\
        seed: fuzz
        default_valid_days: 3650
        point_value: 0.01
        """,
    "gifts.yaml": f"""\
        campaign: {CAMPAIGNS[0]}
        rules:
          - id: mug-on-purchase
            when: type == "purchase"
            award: {{gift: mug}}
          - id: vase-on-purchase
            when: type == "purchase"
            award: {{gift: vase}}
          - id: points-on-purchase
            when: type == "purchase"
            award: {{points: 1500}}
        """,
    "trial.yaml": f"""\
        campaign: {CAMPAIGNS[1]}
        holdout: 0.5
        rules:
          - id: offer-on-review
            when: type == "interaction" and name == "review_posted"
            award: {{offer: {{percent: 10, valid_days: 30}}}}
        """,
}

# Schemathesis' default checks, but for three that do not apply as they stand:
CONFIG = schemathesis.Config.from_dict(
    {
        "checks": {
            # "A request the schema allows was rejected". Rules JSON Schema cannot state are the service's,
            # answered with a documented 422 problem (a return needs an order, a campaign must exist, a key's
            # scopes come from a fixed list, ...).
            "positive_data_acceptance": {"enabled": False},
            # "A request the schema forbids was accepted". Query parameters the service does not know are
            # ignored, as HTTP APIs commonly do, and the document has no way to forbid them. The check also
            # finds date-time query parameters taking plain numbers: `test_date_time_query_parameters_...`.
            "negative_data_rejection": {"enabled": False},
        }
    }
)
schema = schemathesis.openapi.from_path(COMMITTED, config=CONFIG)

BIGINT_MAX = 2**63 - 1
PAGED_BY_ID = ("GET /v1/audit", "GET /v1/customers/{customer_id}/points")
UPLIFT = "GET /v1/reports/uplift"


def _beyond_bigint(value: object) -> bool:
    try:
        return int(str(value)) > BIGINT_MAX
    except ValueError:
        return False


def known_deviation(case: schemathesis.Case[Any]) -> list[schemathesis.CheckFunction]:
    """The checks this case cannot pass because of a deviation pinned below; none are left that need one."""
    return []


# --- known values for the generated requests ----------------------------------------------------------------------

# Filled by `seeded` before each operation is fuzzed; read by the hooks as cases are drawn.
KNOWN: dict[str, list[Any]] = {}
# The status codes each operation answered to its own method, every one checked against the schema.
ANSWERED: dict[str, collections.Counter[int]] = collections.defaultdict(collections.Counter)


def _merged(values: dict[str, Any], chosen: dict[str, Any]) -> dict[str, Any]:
    return {**values, **chosen}


def _with_known_values(values: Any, declared: set[str] | None = None) -> st.SearchStrategy[Any]:
    """The generated values as they are, or with known values swapped in (and only the ``declared`` fields kept)."""
    if not isinstance(values, dict):
        return st.just(values)
    kept = values if declared is None else {name: value for name, value in values.items() if name in declared}
    names = [name for name in kept if KNOWN.get(name)]
    if kept == values and not names:
        return st.just(values)
    known = st.fixed_dictionaries({name: st.sampled_from(KNOWN[name]) for name in names})
    return st.one_of(st.just(values), known.map(functools.partial(_merged, kept)))


def _body_fields(operation: schemathesis.APIOperation[Any, Any, Any, Any]) -> set[str]:
    body = DOCUMENT["paths"][operation.path][operation.method.lower()]["requestBody"]
    name = body["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]
    return set(DOCUMENT["components"]["schemas"][name]["properties"])


@schema.hook
def flatmap_path_parameters(context: schemathesis.HookContext, path_parameters: Any) -> st.SearchStrategy[Any]:
    return _with_known_values(path_parameters)


@schema.hook
def flatmap_query(context: schemathesis.HookContext, query: Any) -> st.SearchStrategy[Any]:
    return _with_known_values(query)


@schema.hook
def flatmap_body(context: schemathesis.HookContext, body: Any) -> st.SearchStrategy[Any]:
    assert context.operation is not None
    return _with_known_values(body, _body_fields(context.operation))


# --- the app on a loopback port ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
async def fuzz_database(server_urls: tuple[str, str]) -> AsyncIterator[str]:
    """This module's own database. The requests here are sent synchronously, so the test loop does not run while
    one waits: a projector of the session's app left in the middle of a page by the test before (its transaction
    holding the projection's lock) would hold up, in the same database, an erasure waiting for that lock."""
    async with scratch_database(server_urls[0], "delight_fuzz") as url:
        yield url


@pytest.fixture(scope="module")
async def fuzz_engine(fuzz_database: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(fuzz_database)
    yield engine
    await engine.dispose()


@pytest.fixture
async def fuzz_clean(fuzz_engine: AsyncEngine) -> None:
    """Every test here starts with no customers, events or awards, as the database tests' own do."""
    await truncate(fuzz_engine)


@pytest.fixture(scope="module")
def base_url(fuzz_database: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The real app served by uvicorn in a thread, on the fuzzer's rule pack; its base URL."""
    rules = tmp_path_factory.mktemp("fuzz-rules")
    for name, text in RULE_PACK.items():
        (rules / name).write_text(textwrap.dedent(text))
    app = create_app(make_settings(fuzz_database, redis_url, rules))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=False, lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="fuzz-uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + START_TIMEOUT
    while not server.started:
        assert thread.is_alive(), "uvicorn stopped while starting the app"
        assert time.monotonic() < deadline, "uvicorn did not start the app"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(START_TIMEOUT)


@pytest.fixture(scope="module")
def http() -> Iterator[requests.Session]:
    """One keep-alive session for every request sent."""
    with requests.Session() as session:
        yield session


@pytest.fixture(scope="module")
async def auth(fuzz_engine: AsyncEngine) -> dict[str, str]:
    """A key with every scope, this module's own: the fuzzer revokes keys and must not reach the shared ones."""
    return {"Authorization": f"Bearer {await new_key(create_sessionmaker(fuzz_engine), *scopes.ALL)}"}


@pytest.fixture(scope="module")
async def spare_key_id(fuzz_engine: AsyncEngine) -> str:
    """The id of a key nobody uses, for ``DELETE /v1/keys/{key_id}`` to revoke."""
    key = await new_key(create_sessionmaker(fuzz_engine), scopes.REPORTS_READ)
    return key.split("_")[1]  # dlk_<key id>_<secret>


@pytest.fixture
def seeded(base_url: str, http: requests.Session, auth: dict[str, str], spare_key_id: str, fuzz_clean: None) -> None:
    """A customer with a purchase (two gift codes, 1500 points), made after the per-test truncation;
    and the known values the generated requests are sometimes given."""
    event = purchase("fuzz-seed", SEED_CUSTOMER, 150.0, occurred_at=dt.datetime.now(dt.UTC).isoformat())
    response = http.post(f"{base_url}/v1/events", json=event, headers=auth, timeout=10)
    assert response.status_code == 201, response.text
    codes = [award["code"] for award in response.json()["awards"] if award["kind"] == "gift"]
    assert len(codes) == 2, response.text
    KNOWN.clear()
    KNOWN.update(
        customer_id=[SEED_CUSTOMER],
        code=codes,
        key_id=[spare_key_id],
        campaign=list(CAMPAIGNS),
        scopes=[[scope] for scope in scopes.ALL] + [list(scopes.ALL)],
        points=[1, 25, -1],  # adjustments and spends the seeded balance covers
        # Redeemed now: a generated instant is almost never within the offline window, and an operation whose
        # every answer is a 422 for it has its success contract unchecked.
        redeemed_at=[None],
    )


# --- the fuzzing --------------------------------------------------------------------------------------------------


@schema.parametrize()
@settings(
    max_examples=30,
    deadline=None,
    derandomize=True,
    database=None,
    # A real app over HTTP is slow by Hypothesis' measure; `seeded` is meant to run once per operation.
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
def test_operation_honours_the_contract(
    case: schemathesis.Case[Any], base_url: str, http: requests.Session, auth: dict[str, str], seeded: None
) -> None:
    secured = DOCUMENT["paths"][case.operation.path][case.operation.method.lower()].get("security")
    response = case.call_and_validate(
        base_url=base_url,
        session=http,
        headers=auth if secured else None,  # health and metrics are called without a key, as probes call them
        timeout=30,
        excluded_checks=known_deviation(case),
    )
    if case.method.upper() == case.operation.method.upper():  # not one of the coverage phase's other methods
        ANSWERED[case.operation.label][response.status_code] += 1


def test_fuzzing_reached_a_success_of_every_operation(request: pytest.FixtureRequest) -> None:
    """Every operation fuzzed in this run answered a 2xx at least once, and that answer met the schema.

    Success bodies hold most of the response schemas: an operation that only ever met 4xx problems
    (a seed or a known-value swap that stopped working) would have had its contract barely checked.
    """
    fuzzed = [item.name for item in request.session.items if item.name.startswith("test_operation_honours")]
    labels = [
        f"{method.upper()} {path}"
        for path, operations in DOCUMENT["paths"].items()
        for method in operations
        if f"test_operation_honours_the_contract[{method.upper()} {path}]" in fuzzed
    ]
    if not labels:
        pytest.skip("no operation was fuzzed in this run")
    without_success = {
        label: dict(ANSWERED[label]) for label in labels if not any(200 <= s < 300 for s in ANSWERED[label])
    }
    assert not without_success, f"no 2xx among the fuzzed answers: {without_success}"


# --- deviations found, and fixed ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [path for path in ("/v1/audit", "/v1/customers/{customer_id}/points")],
)
def test_paging_past_the_largest_id_is_a_client_error(
    path: str, base_url: str, http: requests.Session, auth: dict[str, str], seeded: None
) -> None:
    """``before`` is any integer >= 1 by the contract; one past a bigint must be a 400, not a 500."""
    url = base_url + path.replace("{customer_id}", SEED_CUSTOMER)
    assert http.get(url, params={"before": BIGINT_MAX}, headers=auth, timeout=10).status_code == 200
    response = http.get(url, params={"before": BIGINT_MAX + 1}, headers=auth, timeout=10)
    assert response.status_code == 400, response.text


@pytest.mark.parametrize(
    "answer_format",
    [
        "json",
        "csv",
        "html",
    ],
)
def test_uplift_report_documents_every_format_it_answers_in(
    answer_format: str, base_url: str, http: requests.Session, auth: dict[str, str]
) -> None:
    response = http.get(
        f"{base_url}/v1/reports/uplift",
        params={"campaign": CAMPAIGNS[1], "format": answer_format},
        headers=auth,
        timeout=10,
    )
    assert response.status_code == 200, response.text
    media_type = response.headers["content-type"].split(";")[0].strip()
    documented = DOCUMENT["paths"]["/v1/reports/uplift"]["get"]["responses"]["200"]["content"]
    assert media_type in documented, f"{media_type} is not among {sorted(documented)}"


@pytest.mark.parametrize("path", list(DOCUMENT["paths"]))
def test_options_allows_every_documented_method(
    path: str, base_url: str, http: requests.Session, auth: dict[str, str]
) -> None:
    concrete = path.replace("{customer_id}", SEED_CUSTOMER).replace("{code}", "ABCD").replace("{key_id}", "0" * 16)
    response = http.options(base_url + concrete, headers=auth, timeout=10)
    assert response.status_code in (200, 204)
    allowed = {method.strip().lower() for method in response.headers.get("allow", "").split(",")}
    assert set(DOCUMENT["paths"][path]) <= allowed, f"Allow: {response.headers.get('allow')}"


DATE_TIME_QUERY_PARAMETERS = [
    (path, parameter["name"])
    for path, operations in DOCUMENT["paths"].items()
    for operation in operations.values()
    for parameter in operation.get("parameters", [])
    if parameter["in"] == "query" and '"date-time"' in json.dumps(parameter["schema"])
]


@pytest.mark.parametrize(("path", "name"), DATE_TIME_QUERY_PARAMETERS)
def test_date_time_query_parameters_take_rfc_3339_only(
    path: str, name: str, base_url: str, http: requests.Session, auth: dict[str, str]
) -> None:
    params = {"campaign": CAMPAIGNS[1], name: "2026-03-01T10:00:00Z"}
    assert http.get(base_url + path, params=params, headers=auth, timeout=10).status_code == 200
    response = http.get(base_url + path, params={**params, name: "1700000000"}, headers=auth, timeout=10)
    assert response.status_code == 400, f"{name}=1700000000 answered {response.status_code}: {response.text[:200]}"


def _input_schemas() -> set[str]:
    """The component schemas request bodies are made of, nested ones included."""
    found: set[str] = set()
    pending = [
        operation["requestBody"]["content"]["application/json"]["schema"]
        for operations in DOCUMENT["paths"].values()
        for operation in operations.values()
        if "requestBody" in operation
    ]
    while pending:
        node = pending.pop()
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.rsplit("/", 1)[-1] not in found:
                found.add(ref.rsplit("/", 1)[-1])
                pending.append(DOCUMENT["components"]["schemas"][ref.rsplit("/", 1)[-1]])
            pending.extend(node.values())
        elif isinstance(node, list):
            pending.extend(node)
    return found


def test_request_bodies_and_their_schemas_agree_on_unknown_fields(
    base_url: str, http: requests.Session, auth: dict[str, str]
) -> None:
    body: dict[str, Any] = {"name": "fuzz-unknown-field", "scopes": [scopes.REPORTS_READ], "unknown": 1}
    refused = http.post(f"{base_url}/v1/keys", json=body, headers=auth, timeout=10).status_code == 422
    open_schemas = sorted(
        name
        for name in _input_schemas()
        if DOCUMENT["components"]["schemas"][name].get("additionalProperties") is not False
    )
    assert refused == (not open_schemas), f"unknown fields refused: {refused}; schemas allowing them: {open_schemas}"
