"""Plan before launch: what a rule's traffic and holdout can detect, agreeing with statsmodels' power solver."""

from __future__ import annotations

import datetime as dt
import math
import random
from pathlib import Path
from typing import Any

import msgspec
import pytest
from statsmodels.stats.power import NormalIndPower

from service.events.schemas import EventIn
from service.reports import stats
from service.rules.backtest import backtest
from service.rules.loader import load_rule_set
from tests.conftest import PACK_CATALOG, AppFactory, post_all, purchase

CAMPAIGN = """\
campaign: thanks
holdout: 0.5
rules:
  - id: mug
    when: type == "purchase"
    award: {gift: mug}
"""


async def test_the_plan_gives_the_uplift_30_and_90_days_can_detect_and_the_days_a_target_needs(
    rules_app: AppFactory, keys: dict[str, Any]
) -> None:
    rng = random.Random(3)
    start = dt.datetime(2026, 3, 1, 9, tzinfo=dt.UTC)
    first = [
        purchase(f"a-{n}", f"p-{n}", 40.0, occurred_at=(start + dt.timedelta(hours=2 * n)).isoformat())
        for n in range(240)  # 12 a day for 20 days
    ]
    again = [
        purchase(f"b-{n}", f"p-{n}", 40.0, occurred_at=(start + dt.timedelta(hours=2 * n, days=5)).isoformat())
        for n in range(240)
        if rng.random() < 0.35
    ]
    clock = purchase("clock", "clock", 1.0, occurred_at="2026-06-01T10:00:00Z")
    async with rules_app(CAMPAIGN) as client:
        await post_all(client, keys, first)
        await post_all(client, keys, [*again, clock])
        report = await client.get(
            "/v1/reports/uplift",
            params={"campaign": "thanks", "window_days": 30, "target_uplift": 0.05, "to": "2026-04-01T00:00:00Z"},
            headers=keys["reports:read"],
        )
    assert report.status_code == 200, report.text
    [row] = report.json()["rules"]
    plan, control = row["plan"], row["control"]
    assert plan["baseline_repeat_rate"] == pytest.approx(control["repeaters"] / control["customers"], abs=1e-6)
    span_days = (239 * 2) / 24
    assert plan["customers_per_day"] == pytest.approx(240 / span_days, abs=0.01)
    h = plan["holdout"]
    assert h == pytest.approx(0.5)
    p = plan["baseline_repeat_rate"]
    sd = math.sqrt(p * (1 - p))
    for days, shown in ((30, plan["detectable_uplift_30d"]), (90, plan["detectable_uplift_90d"])):
        enrolled = 240 / span_days * days
        d = NormalIndPower().solve_power(
            effect_size=None, nobs1=enrolled * (1 - h), alpha=0.05, power=0.8, ratio=h / (1 - h)
        )
        assert shown == pytest.approx(d * sd, rel=1e-3), days
    treated_needed = NormalIndPower().solve_power(
        effect_size=0.05 / sd, nobs1=None, alpha=0.05, power=0.8, ratio=h / (1 - h)
    )
    assert plan["target_uplift"] == 0.05
    assert plan["days_for_target"] == pytest.approx(treated_needed / (1 - h) / (240 / span_days), rel=1e-3)


@pytest.mark.parametrize(("p", "holdout", "per_day"), [(0.3, 0.5, 12.0), (0.05, 0.1, 400.0), (0.8, 0.2, 3.5)])
def test_the_power_formulas_agree_with_statsmodels(p: float, holdout: float, per_day: float) -> None:
    sd = math.sqrt(p * (1 - p))
    ratio = holdout / (1 - holdout)
    for days in (30, 90):
        d = NormalIndPower().solve_power(nobs1=per_day * days * (1 - holdout), alpha=0.05, power=0.8, ratio=ratio)
        assert stats.detectable_uplift(p, holdout, per_day, days) == pytest.approx(d * sd, rel=1e-3)
    n1 = NormalIndPower().solve_power(effect_size=0.03 / sd, alpha=0.05, power=0.8, ratio=ratio)
    assert stats.days_to_detect(p, holdout, per_day, 0.03) == pytest.approx(n1 / (1 - holdout) / per_day, rel=1e-3)


async def test_the_back_test_plans_a_draft_from_the_history_it_replays(tmp_path: Path) -> None:
    """A draft with a holdout replayed over customers first seen across 20 days, a known share of whom bought
    again within 30 days: its plan has their rate as the baseline and what that traffic can detect."""
    directory = tmp_path / "draft"
    directory.mkdir()
    (directory / "catalog.yaml").write_text(PACK_CATALOG)
    (directory / "settings.yaml").write_text("seed: plan-tests\n")
    (directory / "c.yaml").write_text(CAMPAIGN)
    rule_set = load_rule_set(directory)
    start = dt.datetime(2026, 3, 1, 9, tzinfo=dt.UTC)
    rng = random.Random(5)
    raw = [
        purchase(f"a-{n}", f"p-{n}", 40.0, occurred_at=(start + dt.timedelta(hours=2 * n)).isoformat())
        for n in range(240)
    ]
    back = [n for n in range(240) if rng.random() < 0.4]
    raw += [
        purchase(f"b-{n}", f"p-{n}", 40.0, occurred_at=(start + dt.timedelta(hours=2 * n, days=10)).isoformat())
        for n in back
    ]
    raw.append(purchase("clock", "clock", 1.0, occurred_at="2026-06-01T10:00:00Z"))

    async def events() -> Any:
        for e in raw:
            yield msgspec.convert(e, EventIn, strict=False)

    report = await backtest(rule_set, events(), start, dt.datetime(2026, 3, 21, 9, tzinfo=dt.UTC))
    [row] = [r.as_row() for r in report.rules]
    plan = row["plan"]
    assert row["awards"] + row["held_out"] == 240 + sum(1 for n in back if 2 * n + 240 < 20 * 24)  # in the period
    assert plan["baseline_repeat_rate"] == pytest.approx(len(back) / 240, abs=1e-6)
    assert plan["customers_per_day"] == pytest.approx(240 / (239 * 2 / 24), abs=0.01)
    assert plan["holdout"] == 0.5
    per_day, p = 240 / (239 * 2 / 24), len(back) / 240
    assert plan["detectable_uplift_30d"] == pytest.approx(stats.detectable_uplift(p, 0.5, per_day, 30), abs=1e-6)
    assert plan["detectable_uplift_90d"] == pytest.approx(stats.detectable_uplift(p, 0.5, per_day, 90), abs=1e-6)
