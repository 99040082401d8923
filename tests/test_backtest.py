"""Back-tests: the same rules on the same stored events give what the live engine gave."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import random
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from service.rules.backtest import backtest, stored_events
from service.rules.loader import load_rule_set
from tests.conftest import AppFactory, interaction, post_all, purchase
from tests.test_serve_e2e import DELIGHT

CAMPAIGNS = [
    """\
    campaign: lucky
    holdout: 0.2
    budget: {awards: 25}
    rules:
      - id: mug-sometimes
        when: type == "purchase" and order.total >= 40
        chance: 0.5
        award: {gift: mug}
        limit: {per_customer: 1, every: 7d}
      - id: lamp-for-big
        when: type == "purchase" and order.total >= 150
        award: {gift: lamp}
      - id: third-visit
        when: type == "purchase" and customer.purchase_count == 3
        award: {points: 100}
    """,
    """\
    campaign: reviews
    rules:
      - id: thanks
        when: type == "interaction" and name == "review_posted"
        award: {points: 20}
        limit: {per_customer: 2, every: 30d}
    """,
]
SETTINGS = "seed: backtest\nfatigue: {max: 2, every: 10d}\n"


def history(seed: int, count: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    start = dt.datetime(2026, 3, 1, 9, tzinfo=dt.UTC)
    events = []
    for i in range(count):
        at = (start + dt.timedelta(hours=rng.randrange(0, 24 * 40))).isoformat()
        customer = f"c-{rng.randrange(25)}"
        if rng.random() < 0.75:
            events.append(purchase(f"e-{i}", customer, float(rng.choice([20, 45, 80, 160, 300])), occurred_at=at))
        else:
            events.append({**interaction(f"i-{i}", customer), "occurred_at": at})
    return events


async def live_awards(engine: AsyncEngine) -> tuple[Counter[str], Counter[str]]:
    async with engine.connect() as connection:
        awards = (await connection.execute(text("SELECT rule_id FROM awards"))).scalars().all()
        held = (
            (await connection.execute(text("SELECT rule_id FROM exposures WHERE \"group\" = 'control'")))
            .scalars()
            .all()
        )
    return Counter(awards), Counter(held)


async def test_backtest_of_the_live_rules_on_the_live_events_matches_what_was_awarded(
    rules_app: AppFactory, keys: dict[str, Any], engine: AsyncEngine, tmp_path: Path
) -> None:
    async with rules_app(*CAMPAIGNS, settings=SETTINGS) as client:
        for event in history(seed=7, count=300):  # one at a time: the order live saw them in
            await post_all(client, keys, [event])
        rules_dir = Path(client.app.state.registry.rules_dir)
    awarded, held = await live_awards(engine)
    assert sum(awarded.values()) > 30  # the history exercises the rules
    rule_set = load_rule_set(rules_dir)
    async with engine.connect() as connection:
        report = await backtest(
            rule_set,
            stored_events(connection),
            dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
            dt.datetime(2027, 1, 1, tzinfo=dt.UTC),
        )
    assert {t.rule_id: t.awards for t in report.rules if t.awards} == dict(awarded)
    assert {t.rule_id: t.held_out for t in report.rules if t.held_out} == dict(held)
    assert report.events_read == report.events_in_period == 300


async def test_backtest_counts_only_the_period_but_profiles_see_everything_before_it(
    rules_app: AppFactory, keys: dict[str, Any], engine: AsyncEngine
) -> None:
    events = [
        purchase("e-1", "c-1", 20.0, occurred_at="2026-03-01T10:00:00Z"),
        purchase("e-2", "c-1", 20.0, occurred_at="2026-03-02T10:00:00Z"),
        purchase("e-3", "c-1", 20.0, occurred_at="2026-03-10T10:00:00Z"),  # the third visit, in the period
        purchase("e-4", "c-2", 20.0, occurred_at="2026-03-20T10:00:00Z"),  # after the period
    ]
    async with rules_app(*CAMPAIGNS, settings=SETTINGS) as client:
        for e in events:  # in order: the third visit must arrive third
            await post_all(client, keys, [e])
        rules_dir = Path(client.app.state.registry.rules_dir)
    async with engine.connect() as connection:
        report = await backtest(
            load_rule_set(rules_dir),
            stored_events(connection),
            dt.datetime(2026, 3, 5, tzinfo=dt.UTC),
            dt.datetime(2026, 3, 15, tzinfo=dt.UTC),
        )
    third = next(t for t in report.rules if t.rule_id == "third-visit")
    assert third.matches == 1
    assert third.awards + third.held_out == 1  # the customer may be in the holdout group
    assert (report.events_read, report.events_in_period) == (4, 1)


def write_draft(live: Path, draft: Path) -> Path:
    """The live pack with its first campaign replaced by one that gives everyone a vase."""
    draft.mkdir()
    for path in live.iterdir():
        (draft / path.name).write_text(path.read_text())
    (draft / "c0.yaml").write_text(
        'campaign: draft\nrules:\n  - id: everyone\n    when: type == "purchase"\n    award: {gift: vase}\n'
    )
    return draft


async def test_backtest_command_prints_json_per_rule_and_writes_nothing(
    rules_app: AppFactory, keys: dict[str, Any], engine: AsyncEngine, database_url: str, tmp_path: Path
) -> None:
    async with rules_app(*CAMPAIGNS, settings=SETTINGS) as client:
        await post_all(client, keys, history(seed=3, count=40))
        rules_dir = Path(client.app.state.registry.rules_dir)
    # a draft: the lamp campaign gone, a new rule in its place
    draft = write_draft(rules_dir, tmp_path / "draft")

    async def counts() -> list[int]:
        async with engine.connect() as connection:
            return [
                (await connection.execute(text(f"SELECT count(*) FROM {t}"))).scalar_one()
                for t in ("events", "customers", "awards", "exposures", "counters", "points_ledger")
            ]

    before = await counts()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DELIGHT_")}
    env["DELIGHT_DATABASE_URL"] = database_url
    command = [
        DELIGHT,
        "rules",
        "backtest",
        str(draft),
        "--from",
        "2026-03-01",
        "--to",
        "2026-04-30",
        "--format",
        "json",
    ]
    result = await asyncio.to_thread(subprocess.run, command, env=env, capture_output=True, timeout=120, check=True)
    report = json.loads(result.stdout)
    rows = {r["rule_id"]: r for r in report["rules"]}
    purchases = sum(1 for e in history(seed=3, count=40) if e["type"] == "purchase")
    assert rows["everyone"]["matches"] == purchases
    assert rows["everyone"]["awards"] <= purchases
    assert rows["everyone"]["cost"] == round(rows["everyone"]["awards"] * 4.50, 2)
    assert "mug-sometimes" not in rows
    assert set(rows["everyone"]) == {
        "campaign",
        "rule_id",
        "matches",
        "awards",
        "held_out",
        "customers",
        "cost",
        "plan",
    }
    assert await counts() == before


def test_backtest_command_refuses_a_broken_draft_with_path_and_line(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text(
        "campaign: x\nrules:\n  - id: a\n    when: order.totl > 1\n    award: {points: 1}\n"
    )
    result = subprocess.run(
        [DELIGHT, "rules", "backtest", str(tmp_path), "--from", "2026-03-01", "--to", "2026-03-31"],
        capture_output=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert f"{tmp_path / 'c.yaml'}:4: `when` names an unknown field `totl`" in result.stderr.decode()
