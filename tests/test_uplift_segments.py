"""Segments: any report broken down, each segment tested against the rest, on customers whose true response in
each segment is known.

The campaign works on web customers (they come back far more often when
surprised) and does nothing for those at the till. The breakdown by channel
must say so after adjustment, and say nothing for a dimension that does not
matter; every figure is worked out again here from the posted events, the
adjustment with statsmodels.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import math
import random
from dataclasses import dataclass, field
from typing import Any

import pytest
from scipy import stats  # type: ignore[import-untyped]
from statsmodels.stats.multitest import multipletests  # type: ignore[import-untyped]

from tests.conftest import AppFactory, purchase
from tests.test_programme import post
from tests.test_uplift_report import iso

SETTINGS = "seed: segment-tests\npoint_value: 0.01\n"
CAMPAIGN = """\
campaign: thanks
holdout: 0.5
rules:
  - id: mug
    when: type == "purchase" and order.total >= 100
    award: {gift: mug}
"""
BASE = dt.datetime(2026, 2, 2, 9, tzinfo=dt.UTC)
CLOCK = BASE + dt.timedelta(days=80)
TRUTH = {("web", True): 0.6, ("web", False): 0.3, ("pos", True): 0.35, ("pos", False): 0.35}
Json = dict[str, Any]


@dataclass
class Shopper:
    customer_id: str
    t0: dt.datetime
    channel: str
    store: str
    segments: list[str]
    before: int = 0  # cents spent before t0
    treated: bool = False
    repeated: bool = False
    extra: list[Json] = field(default_factory=list)


def shoppers(n: int, rng: random.Random) -> list[Shopper]:
    out = []
    for i in range(n):
        segments = rng.choice([[], [], ["vip"], ["vip", "gold"], ["gold"]])
        s = Shopper(
            f"s{i:04d}",
            BASE + dt.timedelta(minutes=13 * i, seconds=rng.randint(0, 59)),
            rng.choice(["web", "pos"]),
            rng.choice(["madrid-1", "lisbon-2"]),
            segments,
        )
        if rng.random() < 0.4:  # an earlier purchase, too small to expose: a returning customer
            s.before = rng.choice([2500, 8000])
        out.append(s)
    return out


def event(s: Shopper, key: str, cents: int, at: dt.datetime) -> Json:
    return purchase(
        f"{s.customer_id}-{key}",
        s.customer_id,
        cents / 100,
        occurred_at=iso(at),
        channel=s.channel,
        store_id=s.store,
        customer={"segments": s.segments},
    )


def by_segment(body: Json, rule: str = "mug") -> dict[str, Json]:
    row = next(r for r in [*body["rules"], body["campaign_total"]] if r["rule_id"] == rule)
    return {s["segment"]: s for s in row["breakdown"]["segments"]} | {"_": row}


def difference(inside: list[Shopper], outside: list[Shopper]) -> tuple[float, float]:
    """The segment's uplift minus the rest's and the two-sided p of a z-test, from scratch."""

    def uplift(group: list[Shopper]) -> tuple[float, float]:
        t = [s.repeated for s in group if s.treated]
        c = [s.repeated for s in group if not s.treated]
        pt, pc = sum(t) / len(t), sum(c) / len(c)
        return pt - pc, pt * (1 - pt) / len(t) + pc * (1 - pc) / len(c)

    (a, va), (b, vb) = uplift(inside), uplift(outside)
    z = (a - b) / math.sqrt(va + vb)
    return a - b, 2 * stats.norm.sf(abs(z))


async def test_a_breakdown_finds_the_segment_the_campaign_works_for_and_agrees_with_a_hand_computation(
    rules_app: AppFactory, keys: dict[str, Any]
) -> None:
    rng = random.Random(20261208)
    people = shoppers(1000, rng)
    async with rules_app(CAMPAIGN, settings=SETTINGS) as app:
        earlier = [event(s, "before", s.before, s.t0 - dt.timedelta(days=5)) for s in people if s.before]
        await post(app, keys, earlier)
        firsts = await post(app, keys, [event(s, "first", 15000, s.t0) for s in people])
        comebacks = []
        for s, result in zip(people, firsts, strict=True):
            s.treated = bool(result.get("awards"))
            if rng.random() < TRUTH[(s.channel, s.treated)]:
                s.repeated = True
                comebacks.append(event(s, "again", 4000, s.t0 + dt.timedelta(days=rng.randint(1, 29))))
        comebacks.append(purchase("clock", "clock", 5.0, occurred_at=iso(CLOCK)))
        await post(app, keys, comebacks)

        reports = {}
        for by in ("channel", "store", "new_returning", "segment"):
            response = await app.get(
                f"/v1/reports/uplift?campaign=thanks&window_days=30&by={by}", headers=keys["reports:read"]
            )
            assert response.status_code == 200, response.text
            reports[by] = response.json()
        tiers = await app.get(
            "/v1/reports/uplift?campaign=thanks&by=spend_tier&spend_tiers=50", headers=keys["reports:read"]
        )
        as_csv = await app.get("/v1/reports/uplift?campaign=thanks&by=channel&format=csv", headers=keys["reports:read"])
        page = await app.get("/v1/reports/uplift?campaign=thanks&by=channel&format=html", headers=keys["reports:read"])
        bad_tiers = await app.get(
            "/v1/reports/uplift?campaign=thanks&by=spend_tier&spend_tiers=500,100", headers=keys["reports:read"]
        )
        bad_by = await app.get("/v1/reports/uplift?campaign=thanks&by=colour", headers=keys["reports:read"])

    dimensions = {
        "channel": lambda s: [s.channel],
        "store": lambda s: [s.store],
        "new_returning": lambda s: ["returning" if s.before else "new"],
        "segment": lambda s: s.segments or ["(none)"],
    }
    for by, of in dimensions.items():
        rows = by_segment(reports[by])
        names = sorted({name for s in people for name in of(s)})
        assert sorted(k for k in rows if k != "_") == names, by
        breakdown = rows["_"]["breakdown"]
        assert breakdown["by"] == by
        assert "hypotheses" in breakdown["warning"]
        for name in names:
            inside = [s for s in people if name in of(s)]
            row = rows[name]
            for group, treated in (("treated", True), ("control", False)):
                members = [s for s in inside if s.treated == treated]
                assert row[group]["customers"] == len(members), (by, name, group)
                assert row[group]["repeaters"] == sum(s.repeated for s in members), (by, name, group)
        # Each segment against the rest, and the adjustment over the segments, from scratch.
        tested = {d["segment"]: d for d in breakdown["differences"]}
        assert set(tested) == set(names)  # every segment here has enough customers inside and out
        expected = {}
        for name in names:
            inside = [s for s in people if name in of(s)]
            outside = [s for s in people if name not in of(s)]
            expected[name] = difference(inside, outside)
            assert tested[name]["uplift_difference"] == pytest.approx(expected[name][0], abs=1e-6)
            assert tested[name]["p_value"] == pytest.approx(expected[name][1], abs=1e-7)
        adjusted = multipletests([expected[n][1] for n in names], method="fdr_bh")[1]
        for name, p in zip(names, adjusted, strict=True):
            assert tested[name]["p_adjusted"] == pytest.approx(p, abs=1e-7)
            assert tested[name]["differs"] == (p < 0.05)
        segment_p = [rows[n]["uplift"]["p_value"] for n in names]
        for name, p in zip(names, multipletests(segment_p, method="fdr_bh")[1], strict=True):
            assert rows[name]["uplift"]["p_adjusted"] == pytest.approx(p, abs=1e-7)

    # The campaign works on the web and not at the till: the channel breakdown says so, the store one does not.
    channel = {d["segment"]: d for d in by_segment(reports["channel"])["_"]["breakdown"]["differences"]}
    assert channel["web"]["differs"]
    assert channel["pos"]["differs"]
    assert channel["web"]["uplift_difference"] > 0.15
    assert by_segment(reports["channel"])["web"]["uplift"]["ci95"][0] > 0
    pos = by_segment(reports["channel"])["pos"]["uplift"]["ci95"]
    assert pos[0] < 0 < pos[1]
    assert not any(d["differs"] for d in by_segment(reports["store"])["_"]["breakdown"]["differences"])

    # Spend before the first exposure, in tiers.
    assert tiers.status_code == 200, tiers.text
    tier_rows = by_segment(tiers.json())
    assert {k: v["treated"]["customers"] + v["control"]["customers"] for k, v in tier_rows.items() if k != "_"} == {
        "none": sum(1 for s in people if not s.before),
        "under 50": sum(1 for s in people if s.before == 2500),
        "50 and over": sum(1 for s in people if s.before == 8000),
    }

    lines = [line for line in csv.DictReader(io.StringIO(as_csv.text)) if line["rule_id"] == "mug"]
    assert [line["segment"] for line in lines] == ["", "pos", "web"]
    assert lines[2]["segment_differs"] == "True"
    assert float(lines[2]["segment_uplift_difference"]) == channel["web"]["uplift_difference"]
    assert page.text.count('data-segment="web"') == 1  # one section: the campaign is its one rule
    assert "hypotheses" in page.text

    for bad, name, status in ((bad_tiers, "spend_tiers", 422), (bad_by, "by", 400)):
        assert bad.status_code == status, bad.text
        assert bad.headers["content-type"].startswith("application/problem+json")
        assert name in bad.text
