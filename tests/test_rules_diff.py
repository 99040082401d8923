"""The impact of a draft: each side's figures are its own back-test's, and who gains or loses a surprise is exactly
who the two rule sets' conditions pick out of the stored events."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import random
import shutil
import subprocess
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from service.rules.backtest import Report, RuleTally, backtest, stored_events
from service.rules.impact import Impact, impact
from service.rules.loader import load_rule_set
from service.rules.ruleset import RuleSet
from tests.conftest import ROOT, AppFactory, interaction, post_all, purchase
from tests.test_cli import UNREACHABLE_DATABASE
from tests.test_serve_e2e import DELIGHT

WELCOME = """\
campaign: welcome
rules:
  - id: second-visit
    when: type == "purchase" and customer.purchase_count == 2
    award: {points: 10}
  - id: big-basket
    when: type == "purchase" and order.total >= 100
    award: {gift: mug}
    limit: {per_customer: 1, every: 365d}
"""
REVIEWS = """\
campaign: reviews
rules:
  - id: thanks
    when: type == "interaction" and name == "review_posted"
    award: {points: 20}
"""
# big-basket now picks the middle baskets, thanks is gone, and app visits earn points
DRAFT_WELCOME = """\
campaign: welcome
rules:
  - id: second-visit
    when: type == "purchase" and customer.purchase_count == 2
    award: {points: 10}
  - id: big-basket
    when: type == "purchase" and order.total >= 60 and order.total < 100
    award: {gift: mug}
    limit: {per_customer: 1, every: 365d}
  - id: app-visit
    when: type == "interaction" and name == "app_visit"
    award: {points: 5}
"""
SETTINGS = "seed: diff\n"

START = dt.datetime(2026, 3, 5, tzinfo=dt.UTC)
END = dt.datetime(2026, 4, 1, tzinfo=dt.UTC)  # --from 2026-03-05 --to 2026-03-31


def history(seed: int, count: int) -> list[dict[str, Any]]:
    """Purchases and interactions from before the period to after it, and one customer whose big basket (live)
    comes before a middle one (draft): the draft's limit must not count the live award."""
    rng = random.Random(seed)
    first = dt.datetime(2026, 3, 1, 9, tzinfo=dt.UTC)
    events = []
    for i in range(count):
        at = (first + dt.timedelta(hours=rng.randrange(0, 24 * 40))).isoformat()
        customer = f"c-{rng.randrange(30):02d}"
        if rng.random() < 0.7:
            events.append(purchase(f"e-{i}", customer, float(rng.choice([30, 80, 150, 300])), occurred_at=at))
        else:
            name = rng.choice(["review_posted", "app_visit"])
            events.append({**interaction(f"i-{i}", customer, name), "occurred_at": at})
    events.append(purchase("both-1", "c-both", 150.0, occurred_at="2026-03-10T10:00:00Z"))
    events.append(purchase("both-2", "c-both", 80.0, occurred_at="2026-03-12T10:00:00Z"))
    return events


def awarded_by_rule(events: list[dict[str, Any]]) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """Who each rule of the live set and of the draft awards, read off the events (posted in this order)."""
    live: dict[str, set[str]] = {"second-visit": set(), "big-basket": set(), "thanks": set()}
    draft: dict[str, set[str]] = {"second-visit": set(), "big-basket": set(), "app-visit": set()}
    purchases: dict[str, int] = {}
    for event in events:
        customer = event["customer_id"]
        if event["type"] == "purchase":
            purchases[customer] = purchases.get(customer, 0) + 1
        if not START <= dt.datetime.fromisoformat(event["occurred_at"]) < END:
            continue
        if event["type"] == "purchase":
            total = event["order"]["total"]
            if purchases[customer] == 2:
                live["second-visit"].add(customer)
                draft["second-visit"].add(customer)
            if total >= 100:
                live["big-basket"].add(customer)
            if 60 <= total < 100:
                draft["big-basket"].add(customer)
        elif event["name"] == "review_posted":
            live["thanks"].add(customer)
        else:
            draft["app-visit"].add(customer)
    return live, draft


def write_pack(directory: Path, *campaigns: str) -> Path:
    directory.mkdir()
    for name, text in campaigns:
        (directory / name).write_text(text)
    return directory


def draft_pack(live_dir: Path, directory: Path) -> Path:
    """The live pack (settings and catalog) with the draft's campaigns instead of the live ones."""
    draft = write_pack(directory, ("c0.yaml", DRAFT_WELCOME))
    for name in ("settings.yaml", "catalog.yaml"):
        shutil.copy(live_dir / name, draft / name)
    return draft


async def post_in_order(client: Any, keys: dict[str, Any], events: list[dict[str, Any]]) -> None:
    for event in events:  # one at a time: which purchase is a customer's second is the order they arrive in
        await post_all(client, keys, [event])


async def replayed(engine: AsyncEngine, live: RuleSet, draft: RuleSet) -> tuple[Impact, Report, Report]:
    async with engine.connect() as connection:
        result = await impact(live, draft, stored_events(connection), START, END)
        alone_live = await backtest(live, stored_events(connection), START, END)
        alone_draft = await backtest(draft, stored_events(connection), START, END)
    return result, alone_live, alone_draft


def figures(tallies: Iterable[RuleTally | None]) -> dict[str, tuple[Any, ...]]:
    return {t.rule_id: (t.matches, t.awards, t.held_out, t.cost, t.customers) for t in tallies if t is not None}


async def test_each_side_of_the_impact_is_its_own_back_test_and_gains_and_losses_are_who_the_conditions_pick(
    rules_app: AppFactory, keys: dict[str, Any], engine: AsyncEngine, tmp_path: Path
) -> None:
    events = history(seed=11, count=120)
    async with rules_app(WELCOME, REVIEWS, settings=SETTINGS) as client:
        await post_in_order(client, keys, events)
        live_dir = Path(client.app.state.registry.rules_dir)
    live = load_rule_set(live_dir)
    draft = load_rule_set(draft_pack(live_dir, tmp_path / "draft"))

    result, alone_live, alone_draft = await replayed(engine, live, draft)

    by_rule = {r.rule_id: r for r in result.rules}
    assert {k: r.status for k, r in by_rule.items()} == {
        "second-visit": "same",
        "big-basket": "changed",
        "app-visit": "added",
        "thanks": "removed",
    }
    assert figures(r.live for r in result.rules) == figures(alone_live.rules)
    assert figures(r.draft for r in result.rules) == figures(alone_draft.rules)
    assert (result.events_read, result.events_in_period) == (alone_live.events_read, alone_live.events_in_period)

    live_picks, draft_picks = awarded_by_rule(events)
    assert {k: r.live.customers for k, r in by_rule.items() if r.live} == live_picks
    assert {k: r.draft.customers for k, r in by_rule.items() if r.draft} == draft_picks
    assert "c-both" in draft_picks["big-basket"]  # given by the draft after the live set gave it its big basket
    everyone_live, everyone_draft = set().union(*live_picks.values()), set().union(*draft_picks.values())
    gained, lost = everyone_draft - everyone_live, everyone_live - everyone_draft
    assert gained
    assert lost
    assert (result.gained, result.lost) == (sorted(gained), sorted(lost))
    assert {k: (r.gained, r.lost) for k, r in by_rule.items()} == {
        k: (len(draft_picks.get(k, set()) - everyone_live), len(live_picks.get(k, set()) - everyone_draft))
        for k in by_rule
    }

    totals = result.as_dict()
    assert totals["live"]["awards"] == sum(t.awards for t in alone_live.rules)
    assert totals["draft"]["customers"] == len(everyone_draft)
    assert totals["draft"]["cost"] == float(sum(t.cost for t in alone_draft.rules))
    assert totals["gained"] == {"customers": len(gained), "sample": sorted(gained)[:20]}
    assert totals["lost"] == {"customers": len(lost), "sample": sorted(lost)[:20]}


async def test_the_same_rule_set_on_both_sides_changes_nothing(
    rules_app: AppFactory, keys: dict[str, Any], engine: AsyncEngine
) -> None:
    async with rules_app(WELCOME, REVIEWS, settings=SETTINGS) as client:
        await post_all(client, keys, history(seed=5, count=40))
        live = load_rule_set(Path(client.app.state.registry.rules_dir))
    async with engine.connect() as connection:
        result = await impact(live, live, stored_events(connection), START, END)
    assert {r.status for r in result.rules} == {"same"}
    assert (result.gained, result.lost) == ([], [])
    assert result.live.awards == result.draft.awards > 0


PERIOD = ("--from", "2026-03-05", "--to", "2026-03-31")


def delight_env(database_url: str, data_dir: Path, **extra: str) -> dict[str, str]:
    """The environment of a ``delight`` run on this checkout's code (the installed script may be another's)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DELIGHT_")}
    return (
        env | {"DELIGHT_DATABASE_URL": database_url, "DELIGHT_DATA_DIR": str(data_dir), "PYTHONPATH": str(ROOT)} | extra
    )


def run_delight(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([DELIGHT, *args], env=env, capture_output=True, text=True, timeout=120, check=False)


async def delight(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(run_delight, env, *args)


async def test_diff_command_prints_the_impact_on_the_rule_set_in_force_as_json_and_a_table(
    rules_app: AppFactory, keys: dict[str, Any], engine: AsyncEngine, database_url: str, tmp_path: Path
) -> None:
    async with rules_app(WELCOME, REVIEWS, settings=SETTINGS) as client:  # its rule set is the one in force
        await post_in_order(client, keys, history(seed=3, count=60))
        live_dir = Path(client.app.state.registry.rules_dir)
    draft = draft_pack(live_dir, tmp_path / "draft")
    env = delight_env(database_url, tmp_path / "data")

    result = await delight(env, "rules", "diff", str(draft), *PERIOD, "--format", "json")

    assert (result.returncode, result.stderr) == (0, "")
    expected, _, _ = await replayed(engine, load_rule_set(live_dir), load_rule_set(draft))
    read_on_the_primary = {"replica_lag_seconds": None, "replica_lag_bytes": None}
    assert json.loads(result.stdout) == {**expected.as_dict(), **read_on_the_primary}

    table = await delight(env, "rules", "diff", str(draft), *PERIOD)
    assert (table.returncode, table.stderr) == (0, "")
    rows = {
        line.split()[1]: line.split()[2]
        for line in table.stdout.splitlines()
        if line.startswith(("welcome", "reviews"))
    }
    assert rows == {"second-visit": "same", "big-basket": "changed", "app-visit": "added", "thanks": "removed"}
    assert f"customers who would gain a surprise: {len(expected.gained)}" in table.stdout
    assert not (tmp_path / "data").exists()  # the database given, not an embedded one


async def test_diff_command_takes_one_campaign_file_with_the_settings_and_catalog_in_force(
    rules_app: AppFactory, keys: dict[str, Any], database_url: str, tmp_path: Path
) -> None:
    async with rules_app(WELCOME, REVIEWS, settings=SETTINGS) as client:
        await post_all(client, keys, history(seed=4, count=30))
    draft = tmp_path / "welcome.yaml"
    draft.write_text(DRAFT_WELCOME)  # gives a mug: the catalog in force has one
    env = delight_env(database_url, tmp_path / "data")
    result = await delight(env, "rules", "diff", str(draft), *PERIOD, "--format", "json")
    assert (result.returncode, result.stderr) == (0, "")
    statuses = {r["rule_id"]: r["status"] for r in json.loads(result.stdout)["rules"]}
    assert statuses["app-visit"] == "added"
    assert statuses["thanks"] == "removed"  # a campaign the file does not bring is not in the draft

    draft.write_text(DRAFT_WELCOME.replace("{gift: mug}", "{gift: teapot}"))
    broken = await delight(env, "rules", "diff", str(draft), *PERIOD)
    assert (broken.returncode, broken.stdout) == (1, "")
    assert broken.stderr.splitlines() == [f"{draft}:8: gift `teapot` is not in catalog.yaml"]


async def test_diff_command_without_a_rule_set_in_force_compares_with_the_rules_dir_and_says_so(
    database_url: str, tmp_path: Path
) -> None:
    live = write_pack(tmp_path / "live", ("settings.yaml", SETTINGS), ("c0.yaml", REVIEWS))
    draft = write_pack(tmp_path / "draft", ("settings.yaml", SETTINGS), ("c0.yaml", REVIEWS.replace("20", "30")))
    env = delight_env(database_url, tmp_path / "data", DELIGHT_RULES_DIR=str(live))
    result = await delight(env, "rules", "diff", str(draft), *PERIOD, "--format", "json")
    assert result.returncode == 0, result.stderr
    assert result.stderr == f"delight: no rule set is in force in the database; comparing with {live}\n"
    assert json.loads(result.stdout)["events_read"] == 0


def test_diff_command_refuses_a_broken_draft_directory_with_path_and_line_before_reaching_a_database(
    tmp_path: Path,
) -> None:
    write_pack(
        tmp_path / "draft",
        ("c.yaml", "campaign: x\nrules:\n  - id: a\n    when: order.totl > 1\n    award: {points: 1}\n"),
    )
    env = delight_env(UNREACHABLE_DATABASE, tmp_path / "data")
    result = run_delight(env, "rules", "diff", str(tmp_path / "draft"), *PERIOD)
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr.splitlines() == [f"{tmp_path / 'draft' / 'c.yaml'}:4: `when` names an unknown field `totl`"]
    assert not (tmp_path / "data").exists()  # no embedded PostgreSQL was started either


def test_diff_command_with_to_before_from_exits_2(tmp_path: Path) -> None:
    env = delight_env(UNREACHABLE_DATABASE, tmp_path / "data")
    result = run_delight(env, "rules", "diff", str(tmp_path), "--from", "2026-03-31", "--to", "2026-03-01")
    assert (result.returncode, result.stdout, result.stderr) == (2, "", "delight: --to is before --from\n")
