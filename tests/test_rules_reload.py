"""Reloading rules while events flow: in one process, and across two real replicas."""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from service.app import create_app
from tests.conftest import TEST_RULES, make_settings, purchase
from tests.replicas import running

Client = AsyncTestClient[Litestar]

EXTRA_CAMPAIGN = """\
campaign: extra
rules:
  - id: points-for-all
    when: type == "purchase"
    award: {points: 5}
"""


@pytest.fixture
def rules_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "rules"
    shutil.copytree(TEST_RULES, directory)
    return directory


@pytest.fixture
async def reloadable(rules_dir: Path, database_url: str, redis_url: str) -> AsyncIterator[Client]:
    app = create_app(make_settings(database_url, redis_url, rules_dir))
    async with AsyncTestClient(app=app, timeout=30) as client:
        yield client


async def version(client: Client, keys: dict[str, Any]) -> str:
    response = await client.get("/v1/rules", headers=keys["rules:admin"])
    assert response.status_code == 200
    return str(response.json()["version"])


async def test_reload_without_changes_keeps_the_version(reloadable: Client, keys: dict[str, Any]) -> None:
    before = await version(reloadable, keys)
    response = await reloadable.post("/v1/rules/reload", headers=keys["rules:admin"])
    assert response.status_code == 200
    assert response.json()["version"] == before
    assert response.json()["changed"] is False


async def test_reload_puts_a_new_campaign_in_force_for_the_next_event(
    reloadable: Client, keys: dict[str, Any], rules_dir: Path
) -> None:
    before = await version(reloadable, keys)
    (rules_dir / "extra.yaml").write_text(EXTRA_CAMPAIGN)
    response = await reloadable.post("/v1/rules/reload", headers=keys["rules:admin"])
    assert response.status_code == 200
    body = response.json()
    assert body["changed"] is True
    assert body["previous_version"] == before
    assert await version(reloadable, keys) == body["version"]
    event = await reloadable.post("/v1/events", json=purchase("e-1", "c-1", 5.0), headers=keys["events:write"])
    [award] = event.json()["awards"]
    assert award["campaign"] == "extra"
    assert award["rule_set_version"] == body["version"]


async def test_a_broken_set_is_refused_whole_with_every_error_and_the_old_one_stays(
    reloadable: Client, keys: dict[str, Any], rules_dir: Path
) -> None:
    before = await version(reloadable, keys)
    (rules_dir / "extra.yaml").write_text(EXTRA_CAMPAIGN)
    (rules_dir / "broken.yaml").write_text(
        "campaign: broken\nrules:\n  - id: a\n    when: order.totl > 3\n    award: {gift: teapot}\n"
    )
    response = await reloadable.post("/v1/rules/reload", headers=keys["rules:admin"])
    assert response.status_code == 422
    assert response.headers["content-type"].startswith("application/problem+json")
    # the request was fine; what it asked for was refused
    assert response.json()["type"] == "urn:delight:problem:rule-set-refused"
    assert response.json()["title"] == "The rule set was refused; the one in force stays"
    errors = {(e["field"], e["message"]) for e in response.json()["errors"]}
    assert (f"{rules_dir / 'broken.yaml'}:4", "`when` names an unknown field `totl`") in errors
    assert (f"{rules_dir / 'broken.yaml'}:5", "gift `teapot` is not in catalog.yaml") in errors
    assert await version(reloadable, keys) == before
    event = await reloadable.post("/v1/events", json=purchase("e-1", "c-1", 150.0), headers=keys["events:write"])
    assert [a["campaign"] for a in event.json()["awards"]] == ["loyal"]  # the extra campaign did not come in


async def test_reload_needs_the_rules_admin_scope(reloadable: Client, keys: dict[str, Any]) -> None:
    assert (await reloadable.post("/v1/rules/reload", headers=keys["events:write"])).status_code == 403
    assert (await reloadable.post("/v1/rules/reload")).status_code == 401


async def test_events_posted_during_reloads_all_succeed(
    reloadable: Client, keys: dict[str, Any], rules_dir: Path
) -> None:
    async def reload_back_and_forth() -> None:
        for i in range(6):
            path = rules_dir / "extra.yaml"
            if i % 2:
                path.unlink()
            else:
                path.write_text(EXTRA_CAMPAIGN)
            assert (await reloadable.post("/v1/rules/reload", headers=keys["rules:admin"])).status_code == 200

    events = [purchase(f"e-{i}", f"c-{i}", 10.0) for i in range(60)]
    posted = asyncio.gather(*(reloadable.post("/v1/events", json=e, headers=keys["events:write"]) for e in events))
    responses, _ = await asyncio.gather(posted, reload_back_and_forth())
    assert all(r.status_code == 201 for r in responses)


async def test_the_file_watcher_outlives_a_file_it_refuses_and_takes_the_next_good_edit(
    rules_dir: Path, database_url: str, redis_url: str, keys: dict[str, Any]
) -> None:
    settings = make_settings(database_url, redis_url, rules_dir)
    app = create_app(dataclasses.replace(settings, app=dataclasses.replace(settings.app, rules_sync=True)))
    async with AsyncTestClient(app=app, timeout=30) as client:
        before = await version(client, keys)
        (rules_dir / "deep.yaml").write_text(
            "campaign: deep\nrules:\n  - id: r\n    award: " + "[" * 50_000 + "]" * 50_000
        )
        await asyncio.sleep(2.5)  # the watcher looks every second
        assert await version(client, keys) == before
        (rules_dir / "deep.yaml").unlink()
        (rules_dir / "extra.yaml").write_text(EXTRA_CAMPAIGN)
        deadline = time.monotonic() + 10
        while await version(client, keys) == before and time.monotonic() < deadline:  # noqa: ASYNC110 - polling a server
            await asyncio.sleep(0.2)
        response = await client.get("/v1/rules", headers=keys["rules:admin"])
        assert "extra" in {c["campaign"] for c in response.json()["campaigns"]}


# --- two real replicas --------------------------------------------------------------------------------------------


@pytest.fixture
def replicas(
    tmp_path: Path, database_url: str, redis_url: str, keys: dict[str, Any]
) -> Iterator[tuple[tuple[str, Path], tuple[str, Path], dict[str, str]]]:
    rules = []
    for name in ("a", "b"):
        rules.append(tmp_path / f"rules-{name}")
        shutil.copytree(TEST_RULES, rules[-1])
    with running(rules, tmp_path, database_url, redis_url) as (a, b):
        yield (a.base, a.rules), (b.base, b.rules), keys["rules:admin"]


def _version(base: str, headers: dict[str, str]) -> str:
    return str(httpx.get(f"{base}/v1/rules", headers=headers, timeout=5).json()["version"])


def _seconds_until(base: str, headers: dict[str, str], expected: str, limit: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < limit:
        if _version(base, headers) == expected:
            return time.monotonic() - started
        time.sleep(0.05)
    raise AssertionError(f"{base} did not reach version {expected} within {limit}s")


def test_a_reload_on_one_replica_reaches_the_other_within_two_seconds(
    replicas: tuple[tuple[str, Path], tuple[str, Path], dict[str, str]],
) -> None:
    (a, rules_a), (b, _), headers = replicas
    assert _version(a, headers) == _version(b, headers)
    (rules_a / "extra.yaml").write_text(EXTRA_CAMPAIGN)
    response = httpx.post(f"{a}/v1/rules/reload", headers=headers, timeout=10)
    assert response.status_code == 200
    new = response.json()["version"]
    assert _seconds_until(b, headers, new, limit=2.0) < 2.0


def test_editing_a_file_reloads_every_replica_and_a_broken_edit_changes_nothing(
    replicas: tuple[tuple[str, Path], tuple[str, Path], dict[str, str]],
) -> None:
    (a, rules_a), (b, _), headers = replicas
    (rules_a / "extra.yaml").write_text(EXTRA_CAMPAIGN)
    deadline = time.monotonic() + 5
    while _version(a, headers) == _version(b, headers) and time.monotonic() < deadline:
        time.sleep(0.1)  # A's watcher has not noticed yet
    new = _version(a, headers)
    assert _seconds_until(b, headers, new, limit=4.0) < 4.0
    (rules_a / "extra.yaml").write_text(EXTRA_CAMPAIGN.replace('type == "purchase"', "type ==="))
    time.sleep(2.5)
    assert _version(a, headers) == new
    assert _version(b, headers) == new


def test_bad_reload_on_one_replica_leaves_both_on_the_old_version(
    replicas: tuple[tuple[str, Path], tuple[str, Path], dict[str, str]],
) -> None:
    (a, rules_a), (b, _), headers = replicas
    before = _version(a, headers)
    (rules_a / "bad.yaml").write_text("campaign: bad\nrules: []\n")
    response = httpx.post(f"{a}/v1/rules/reload", headers=headers, timeout=10)
    assert response.status_code == 422
    time.sleep(1.5)
    assert _version(a, headers) == before
    assert _version(b, headers) == before
