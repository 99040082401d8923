"""The event → rule → award loop over HTTP, against real PostgreSQL."""

from __future__ import annotations

import asyncio
import datetime as dt
import re
from pathlib import Path
from typing import Any

import msgspec
from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from service.events.schemas import EventIn
from service.events.service import record_event, won_draws
from service.lib import pg
from service.rules.engine import drawn
from service.rules.facts import build_facts
from service.rules.loader import load_rule_set
from tests.conftest import TEST_RULES, a_return, interaction, post_all, purchase, sent_statements

Client = AsyncTestClient[Litestar]


async def post(client: Client, keys: dict[str, Any], event: dict[str, Any]) -> Any:
    return await client.post("/v1/events", json=event, headers=keys["events:write"])


async def count(engine: AsyncEngine, sql: str, **params: Any) -> int:
    async with engine.connect() as connection:
        return int((await connection.execute(text(sql), params)).scalar_one())


async def test_purchase_over_100_wins_the_mug_with_a_rendered_message(client: Client, keys: dict[str, Any]) -> None:
    event = purchase("e-1", "c-1", 150.0, customer={"first_name": "Ana"})
    response = await post(client, keys, event)
    assert response.status_code == 201
    body = response.json()
    assert body["event_id"] == "e-1"
    assert body["duplicate"] is False
    [award] = body["awards"]
    assert award["campaign"] == "loyal"
    assert award["rule_id"] == "mug-over-100"
    assert award["kind"] == "gift"
    assert award["gift"] == {"id": "mug", "name": "Branded mug"}
    assert award["message"] == "Enjoy your mug, Ana!"
    assert award["status"] == "issued"
    assert award["issued_at"] == "2026-03-01T10:15:00Z"
    assert award["expires_at"] == "2026-04-15T10:15:00Z"  # occurred_at + default_valid_days (45)
    assert len(award["code"].replace("-", "")) == 13


async def test_small_purchase_wins_nothing_but_still_counts(client: Client, keys: dict[str, Any]) -> None:
    response = await post(client, keys, purchase("e-1", "c-1", 20.0))
    assert response.status_code == 201
    assert response.json()["awards"] == []
    profile = (await client.get("/v1/customers/c-1", headers=keys["customers:read"])).json()
    assert profile["purchase_count"] == 1
    assert profile["lifetime_spend"] == 20.0


async def test_exact_replay_returns_200_with_the_same_awards_and_awards_nothing_new(
    client: Client, keys: dict[str, Any], engine: AsyncEngine
) -> None:
    event = purchase("e-1", "c-1", 150.0)
    first = await post(client, keys, event)
    again = await post(client, keys, dict(reversed(list(event.items()))))  # key order does not matter
    assert first.status_code == 201
    assert again.status_code == 200
    assert again.json()["duplicate"] is True
    assert again.json()["awards"] == first.json()["awards"]
    assert await count(engine, "SELECT count(*) FROM awards") == 1
    profile = (await client.get("/v1/customers/c-1", headers=keys["customers:read"])).json()
    assert profile["purchase_count"] == 1


async def test_same_event_id_with_other_content_is_a_409_conflict_and_changes_nothing(
    client: Client, keys: dict[str, Any], engine: AsyncEngine
) -> None:
    assert (await post(client, keys, purchase("e-1", "c-1", 150.0))).status_code == 201
    response = await post(client, keys, purchase("e-1", "c-1", 151.0))
    assert response.status_code == 409
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["type"] == "urn:delight:problem:event-conflict"
    assert await count(engine, "SELECT count(*) FROM events") == 1
    profile = (await client.get("/v1/customers/c-1", headers=keys["customers:read"])).json()
    assert profile["lifetime_spend"] == 150.0


async def test_identical_events_posted_concurrently_award_exactly_once(
    client: Client, keys: dict[str, Any], engine: AsyncEngine
) -> None:
    event = purchase("e-race", "c-race", 150.0)
    responses = await asyncio.gather(*(post(client, keys, event) for _ in range(20)))
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] * 19 + [201]
    codes = {r.json()["awards"][0]["code"] for r in responses}
    assert len(codes) == 1
    assert await count(engine, "SELECT count(*) FROM awards") == 1
    assert await count(engine, "SELECT purchase_count FROM customers WHERE customer_id = 'c-race'") == 1


async def test_identical_events_that_win_no_draw_posted_concurrently_are_stored_and_counted_once(
    client: Client, keys: dict[str, Any], engine: AsyncEngine
) -> None:
    """No rule can match a store visit here, so each of these is one statement committing by itself."""
    event = interaction("i-race", "c-race", name="store_visit")
    responses = await asyncio.gather(*(post(client, keys, event) for _ in range(20)))
    assert sorted(r.status_code for r in responses) == [200] * 19 + [201]
    assert {r.json()["duplicate"] for r in responses if r.status_code == 200} == {True}
    assert await count(engine, "SELECT count(*) FROM events") == 1
    profile = (await client.get("/v1/customers/c-race", headers=keys["customers:read"])).json()
    assert profile["interaction_counts"] == {"store_visit": 1}
    changed = {**event, "attributes": {"note": "another"}}
    response = await post(client, keys, changed)
    assert response.status_code == 409
    assert response.json()["type"] == "urn:delight:problem:event-conflict"


async def test_concurrent_distinct_purchases_of_one_customer_are_all_counted(
    client: Client, keys: dict[str, Any]
) -> None:
    events = [purchase(f"e-{i}", "c-busy", 10.0) for i in range(25)]
    responses = await asyncio.gather(*(post(client, keys, e) for e in events))
    assert all(r.status_code == 201 for r in responses)
    profile = (await client.get("/v1/customers/c-busy", headers=keys["customers:read"])).json()
    assert profile["purchase_count"] == 25
    assert profile["lifetime_spend"] == 250.0
    # exactly one of them was the third purchase, whatever order they committed in
    third = [a for r in responses for a in r.json()["awards"] if a["rule_id"] == "points-on-third"]
    assert len(third) == 1
    assert profile["points_balance"] == 200


async def test_third_purchase_sees_itself_counted_and_earns_points_into_the_ledger(
    client: Client, keys: dict[str, Any], engine: AsyncEngine
) -> None:
    for i in range(1, 4):
        response = await post(client, keys, purchase(f"e-{i}", "c-1", 10.0))
    [award] = response.json()["awards"]
    assert award["kind"] == "points"
    assert award["points"] == 200
    assert award["message"] == "3 visits: 200 points."
    assert award["expires_at"] is None
    profile = (await client.get("/v1/customers/c-1", headers=keys["customers:read"])).json()
    assert profile["points_balance"] == 200
    ledger = await count(engine, "SELECT sum(delta) FROM points_ledger WHERE customer_id = 'c-1' AND reason = 'earn'")
    assert ledger == 200


async def test_review_offer_names_the_favourite_category_from_the_profile(client: Client, keys: dict[str, Any]) -> None:
    await post(client, keys, purchase("e-1", "c-1", 50.0, category="lamps"))
    await post(client, keys, purchase("e-2", "c-1", 20.0, category="rugs"))
    response = await post(client, keys, interaction("i-1", "c-1", rating=5))
    assert response.status_code == 201
    [award] = response.json()["awards"]
    assert award["kind"] == "offer"
    assert award["offer"] == {"percent": 15.0, "category": "lamps", "valid_days": 30}
    assert award["expires_at"] == "2026-04-01T09:00:00Z"


async def test_interaction_without_the_attribute_a_rule_reads_simply_does_not_match(
    client: Client, keys: dict[str, Any]
) -> None:
    response = await post(client, keys, interaction("i-1", "c-1"))
    assert response.status_code == 201
    assert response.json()["awards"] == []
    profile = (await client.get("/v1/customers/c-1", headers=keys["customers:read"])).json()
    assert profile["interaction_counts"] == {"review_posted": 1}


async def test_return_reduces_lifetime_spend_and_counts_as_a_return(client: Client, keys: dict[str, Any]) -> None:
    await post(client, keys, purchase("e-1", "c-1", 80.0))
    ret = {
        "event_id": "r-1",
        "type": "return",
        "customer_id": "c-1",
        "occurred_at": "2026-03-05T10:00:00Z",
        "order": {"order_id": "o-e-1", "total": 30.0, "currency": "EUR"},
    }
    response = await post(client, keys, ret)
    assert response.status_code == 201
    assert response.json()["awards"] == []
    profile = (await client.get("/v1/customers/c-1", headers=keys["customers:read"])).json()
    assert profile["lifetime_spend"] == 50.0
    assert profile["return_count"] == 1
    assert profile["purchase_count"] == 1


async def test_late_event_keeps_first_and_last_purchase_in_event_time(client: Client, keys: dict[str, Any]) -> None:
    await post(client, keys, purchase("e-2", "c-1", 10.0, occurred_at="2026-03-10T10:00:00Z"))
    await post(client, keys, purchase("e-1", "c-1", 10.0, occurred_at="2026-03-01T10:00:00Z"))
    profile = (await client.get("/v1/customers/c-1", headers=keys["customers:read"])).json()
    assert profile["first_purchase_at"] == "2026-03-01T10:00:00Z"
    assert profile["last_purchase_at"] == "2026-03-10T10:00:00Z"


async def test_campaign_outside_its_active_window_awards_nothing(client: Client, keys: dict[str, Any]) -> None:
    response = await post(client, keys, purchase("e-1", "c-1", 500.0, occurred_at="2100-01-02T10:00:00Z"))
    assert response.status_code == 201
    assert response.json()["awards"] == []


async def test_sender_attributes_merge_into_the_profile(client: Client, keys: dict[str, Any]) -> None:
    await post(client, keys, purchase("e-1", "c-1", 10.0, customer={"first_name": "Ana", "segments": ["vip"]}))
    await post(client, keys, purchase("e-2", "c-1", 10.0, customer={"birthday": "1990-03-01"}))
    profile = (await client.get("/v1/customers/c-1", headers=keys["customers:read"])).json()
    assert profile["attributes"] == {"first_name": "Ana", "birthday": "1990-03-01", "segments": ["vip"]}


async def test_batch_returns_one_result_per_event_in_order(client: Client, keys: dict[str, Any]) -> None:
    await post(client, keys, purchase("e-0", "c-1", 5.0))
    events = [
        purchase("e-1", "c-1", 150.0),
        purchase("e-0", "c-1", 5.0),  # exact replay of an earlier event
        purchase("e-0", "c-1", 6.0),  # conflict
        purchase("e-1", "c-1", 150.0),  # replay within the batch
    ]
    response = await client.post("/v1/events/batch", json={"events": events}, headers=keys["events:write"])
    assert response.status_code == 200
    results = response.json()["results"]
    assert [r["status"] for r in results] == [201, 200, 409, 200]
    assert [r["event_id"] for r in results] == ["e-1", "e-0", "e-0", "e-1"]
    assert results[0]["awards"][0]["rule_id"] == "mug-over-100"
    assert results[3]["awards"] == results[0]["awards"]
    assert results[2]["error"]["type"] == "urn:delight:problem:event-conflict"


async def test_batch_with_one_bad_event_stores_nothing_and_names_the_field(
    client: Client, keys: dict[str, Any], engine: AsyncEngine
) -> None:
    bad = purchase("e-2", "c-1", 10.0)
    bad["order"]["total"] = -5
    response = await client.post(
        "/v1/events/batch", json={"events": [purchase("e-1", "c-1", 10.0), bad]}, headers=keys["events:write"]
    )
    assert response.status_code == 422
    fields = [e["field"] for e in response.json()["errors"]]
    assert fields == ["events[1].order.total"]
    assert await count(engine, "SELECT count(*) FROM events") == 0


async def test_batch_over_1000_events_is_refused(client: Client, keys: dict[str, Any]) -> None:
    events = [purchase(f"e-{i}", "c-1", 1.0) for i in range(1001)]
    response = await client.post("/v1/events/batch", json={"events": events}, headers=keys["events:write"])
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "events"


async def test_award_records_the_rule_set_version_that_produced_it(
    client: Client, keys: dict[str, Any], engine: AsyncEngine, app: Litestar
) -> None:
    response = await post(client, keys, purchase("e-1", "c-1", 150.0))
    [award] = response.json()["awards"]
    assert award["rule_set_version"] == app.state.registry.current.version
    stored = await count(
        engine,
        "SELECT count(*) FROM awards a JOIN rule_sets r ON r.version = a.rule_set_version WHERE a.code = :code",
        code=award["code"],
    )
    assert stored == 1


def event_path_only(queries: list[Any]) -> list[Any]:
    """``queries`` of the pool checkouts that did the event's work: each sent a statement naming an event.

    Others share the pool while an event is counted, and may straddle two events: the transaction that records a
    key's use (once a minute per key, whatever the request) and the background copy of recent revocations (each
    second)."""
    events = {q.checkout for q in queries if "event" in q.query}
    return [q for q in queries if q.checkout in events]


async def test_an_event_costs_a_fixed_number_of_round_trips_whatever_it_wins(
    client: Client, keys: dict[str, Any], app: Litestar
) -> None:
    """Counted at the driver: every query asyncpg sends on a connection of the service's pool, BEGIN and COMMIT too."""
    await post(client, keys, {})  # verifies (and caches) the API key before counting

    with sent_statements(app) as statements:

        async def sent_for(event: dict[str, Any]) -> list[str]:
            await post(client, keys, event)
            await asyncio.sleep(0)  # asyncpg hands each query to its loggers on the next turn of the loop
            sent = [q.query.split(None, 1)[0].upper().rstrip(";") for q in event_path_only(statements)]
            statements.clear()
            return sent

        with_award = await sent_for(purchase("e-1", "c-1", 150.0))  # wins the mug
        without_award = await sent_for(purchase("e-2", "c-2", 5.0))  # wins nothing
        replay = await sent_for(purchase("e-2", "c-2", 5.0))  # replay
        exposed_before = await sent_for(purchase("e-3", "c-1", 5.0))  # wins nothing, but c-1 was exposed
        undrawn = await sent_for(interaction("i-1", "c-3", name="store_visit"))  # no rule can match it
        undrawn_replay = await sent_for(interaction("i-1", "c-3", name="store_visit"))
    # store the event and count it into the profile; then one statement draws the counters (the mug has a stock)
    # and writes the awards, exposures, ledger entries and balance; the purchase of a customer exposed before
    # joins the timelines the uplift report reads inside the first statement
    assert with_award == ["BEGIN", "WITH", "WITH", "COMMIT"]
    assert without_award == ["BEGIN", "WITH", "COMMIT"]
    assert replay == ["BEGIN", "WITH", "SELECT", "COMMIT"]
    assert exposed_before == ["BEGIN", "WITH", "COMMIT"]
    # an event that wins no rule's chance draw is its first statement alone, committing by itself
    assert undrawn == ["WITH"]
    assert undrawn_replay == ["WITH", "SELECT"]


async def test_review_offer_for_a_customer_without_a_favourite_category_is_not_a_store_wide_discount(
    client: Client, keys: dict[str, Any]
) -> None:
    response = await post(client, keys, interaction("i-1", "c-new", rating=5))
    assert response.status_code == 201
    assert response.json()["awards"] == []


async def test_same_instant_written_with_another_offset_is_a_replay_with_identical_timestamps(
    client: Client, keys: dict[str, Any]
) -> None:
    first = await post(client, keys, purchase("e-1", "c-1", 150.0, occurred_at="2026-03-01T10:15:00Z"))
    again = await post(client, keys, purchase("e-1", "c-1", 150.0, occurred_at="2026-03-01T05:15:00-05:00"))
    assert first.status_code == 201
    assert again.status_code == 200
    assert again.json()["awards"] == first.json()["awards"]
    assert first.json()["awards"][0]["expires_at"] == "2026-04-15T10:15:00Z"


async def test_late_event_fills_missing_attributes_but_never_overwrites_newer_ones(
    client: Client, keys: dict[str, Any]
) -> None:
    newer = purchase(
        "e-2",
        "c-1",
        10.0,
        occurred_at="2026-03-05T10:00:00Z",
        customer={"first_name": "New", "consent": {"email": True}},
    )
    older = purchase(
        "e-1",
        "c-1",
        10.0,
        occurred_at="2026-03-01T10:00:00Z",
        customer={"first_name": "Old", "language": "es", "consent": {"sms": False, "email": False}},
    )
    await post(client, keys, newer)
    await post(client, keys, older)
    profile = (await client.get("/v1/customers/c-1", headers=keys["customers:read"])).json()
    assert profile["attributes"] == {"first_name": "New", "language": "es", "consent": {"email": True, "sms": False}}


async def test_newer_event_updates_attributes_and_merges_consent_per_channel(
    client: Client, keys: dict[str, Any]
) -> None:
    await post(client, keys, purchase("e-1", "c-1", 10.0, customer={"first_name": "Ana", "consent": {"sms": True}}))
    later = purchase(
        "e-2",
        "c-1",
        10.0,
        occurred_at="2026-03-09T10:00:00Z",
        customer={"first_name": "Anna", "consent": {"email": True}},
    )
    await post(client, keys, later)
    profile = (await client.get("/v1/customers/c-1", headers=keys["customers:read"])).json()
    assert profile["attributes"] == {"first_name": "Anna", "consent": {"sms": True, "email": True}}


async def test_refunds_never_take_lifetime_spend_below_zero(client: Client, keys: dict[str, Any]) -> None:
    ret = {
        "event_id": "r-1",
        "type": "return",
        "customer_id": "c-1",
        "occurred_at": "2026-03-05T10:00:00Z",
        "order": {"order_id": "unknown-order", "total": 500.0},
    }
    assert (await post(client, keys, ret)).status_code == 201
    profile = (await client.get("/v1/customers/c-1", headers=keys["customers:read"])).json()
    assert profile["lifetime_spend"] == 0.0
    assert profile["return_count"] == 1


def test_the_draws_taken_before_the_database_are_those_the_facts_give(tmp_path: Path) -> None:
    """``won_draws`` reads the event as received; the rule core reads ``build_facts``. They must agree on
    every draw, or an event could be stored alone that a rule would have awarded: across the shop's zone
    (a campaign that starts at local midnight), with and without a channel, for both event types."""
    (tmp_path / "settings.yaml").write_text("seed: draws\ntimezone: Pacific/Auckland\n")
    rules = "\n".join(
        f"""  - id: r{i}
    when: type == "{kind}"{f' and channel == "{channel}"' if channel else ""}{f' and name == "{name}"' if name else ""}
    chance: 0.3
    award: {{points: 1}}"""
        for i, (kind, channel, name) in enumerate(
            [
                ("purchase", "pos", None),
                ("purchase", None, None),
                ("interaction", None, "store_visit"),
                ("interaction", "app", None),
                ("purchase", "web", None),
            ]
        )
    )
    (tmp_path / "c.yaml").write_text(f"campaign: c\nactive: {{from: 2026-03-02, until: 2026-03-31}}\nrules:\n{rules}\n")
    rule_set = load_rule_set(tmp_path)
    profile = {"customer_id": "c-1", "purchase_count": 1, "attributes": {}}
    seen = set()
    for i in range(400):
        base = interaction(f"i-{i}", name="store_visit") if i % 2 else purchase(f"e-{i}", "c-1", 10.0)
        offset = dt.timezone(dt.timedelta(hours=(i % 27) - 12))
        at = dt.datetime(2026, 3, 1, 11, tzinfo=dt.UTC) + dt.timedelta(minutes=7 * i)  # 2 March begins at 11:00Z
        channel = [None, "pos", "app", "web"][i % 4]
        event = msgspec.convert(
            {**base, "occurred_at": at.astimezone(offset).isoformat(), "channel": channel}, EventIn, strict=False
        )
        facts = build_facts(msgspec.to_builtins(event, builtin_types=(dt.datetime, dt.date)), profile, rule_set.zone)
        expected = drawn(
            rule_set, facts["event_id"], (facts["type"], facts["channel"], facts["name"]), facts["occurred_at"]
        )
        won = won_draws(rule_set, event)
        assert won == expected, event
        seen.add(bool(won))
    assert seen == {True, False}


# What one event writes, per table: rows inserted, updated and deleted, read from PostgreSQL's own counters for the
# transaction the event runs in (``pg_stat_xact_user_tables``), before it commits. Those counters also hold what
# earlier transactions of the same connection have not reported yet, so the connection reports them first.
PARTITION = re.compile(r"_(default|\d{4}_\d{2})$")
WRITTEN = """
    SELECT relname, n_tup_ins + n_tup_upd + n_tup_del AS rows FROM pg_stat_xact_user_tables
    WHERE n_tup_ins + n_tup_upd + n_tup_del > 0
"""


async def rows_written(engine: AsyncEngine, event: dict[str, Any]) -> dict[str, int]:
    """The rows the event path writes for ``event``, in its own transaction, by table."""
    rule_set = load_rule_set(TEST_RULES)
    decoded = msgspec.json.decode(msgspec.json.encode(event), type=EventIn)
    async with pg.pooled(engine) as conn:
        await conn.execute("SELECT pg_stat_force_next_flush()")  # reported once the connection is idle
        await conn.execute(pg.BEGIN)
        await record_event(conn, rule_set, decoded, won_draws(rule_set, decoded), 0.0)
        rows = await conn.fetch(WRITTEN)
        await conn.execute("COMMIT")
    written: dict[str, int] = {}
    for row in rows:  # a partition's rows count as its table's
        table = PARTITION.sub("", row["relname"])
        written[table] = written.get(table, 0) + int(row["rows"])
    return written


async def test_an_event_writes_the_same_rows_whatever_the_customers_history(
    client: Client, keys: dict[str, Any], engine: AsyncEngine
) -> None:
    """The rows each kind of event writes, for a new customer and for one with a long history of purchases,
    awards and exposures: the same, because nothing on the event path keeps anything per past exposure."""
    history = [
        purchase(f"v-{i}", "veteran", 150.0 + i, occurred_at=f"2026-02-{1 + i % 27:02d}T{8 + i % 10:02d}:00:00Z")
        for i in range(40)
    ]
    assert len(await post_all(client, keys, history)) == 41  # a mug each, and 200 points on the third
    assert await count(engine, "SELECT count(*) FROM exposures WHERE customer_id = 'veteran'") == 41

    written: dict[str, dict[str, dict[str, int]]] = {}
    for customer in ("newcomer", "veteran"):
        when = "2026-03-10T10:00:00Z"
        written[customer] = {
            "no award": await rows_written(engine, purchase(f"{customer}-small", customer, 20.0, occurred_at=when)),
            "award": await rows_written(engine, purchase(f"{customer}-mug", customer, 150.0, occurred_at=when)),
            "return": await rows_written(
                engine, a_return(f"{customer}-back", customer, f"o-{customer}-mug", 150.0, "2026-03-11T10:00:00Z")
            ),
        }
    assert written["veteran"] == written["newcomer"]
    assert written["newcomer"] == {
        # the event's id, the event, and the profile counting it
        "no award": {"event_ids": 1, "events": 1, "customers": 1},
        # and: the award, its exposure, the gift's stock counter, and the profile again (its surprise log)
        "award": {"event_ids": 1, "events": 1, "customers": 2, "awards": 1, "exposures": 1, "counters": 1},
        # and: the order's gift voided, the profile again (its points balance)
        "return": {"event_ids": 1, "events": 1, "customers": 2, "awards": 1},
    }
