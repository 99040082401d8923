"""Plan before launch: what a rule's traffic and holdout can detect, agreeing with statsmodels' power solver."""

from __future__ import annotations

import datetime as dt
import math
import random
from typing import Any

import pytest
from statsmodels.stats.power import NormalIndPower

from tests.conftest import AppFactory, post_all, purchase

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
