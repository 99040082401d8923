"""Honest revenue: capped at a percentile, CUPED on the capped figure, refunds netted off on request.

A campaign whose customers' baskets are heavy-tailed (a few spend a hundred
times the rest) and who return some of what they bought, posted through the
HTTP API; the report's raw, capped and netted figures are then worked out again
here from the posted events alone, with numpy's percentile and SciPy's Welch
test, and must agree.
"""

from __future__ import annotations

import datetime as dt
import random
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
from scipy import stats  # type: ignore[import-untyped]

from service.reports.stats import Moments
from service.reports.uplift import _capped, _caps
from tests.conftest import AppFactory, projected, purchase, rebuilt
from tests.test_uplift_report import BASE, DAY, SETTINGS, iso, report, rows_by_rule

CAMPAIGN = """\
campaign: honest
holdout: 0.5
rules:
  - id: mug
    when: type == "purchase" and order.total >= 100
    award: {gift: mug}
"""
WINDOW = 30 * DAY
CLOCK = BASE + 70 * DAY  # a purchase by someone never exposed: every window has closed by then
Json = dict[str, Any]


@dataclass
class Customer:
    customer_id: str
    t0: dt.datetime
    bought: list[tuple[dt.datetime, int]] = field(default_factory=list)  # (at, cents), the first purchase too
    refunded: list[tuple[dt.datetime, int]] = field(default_factory=list)

    def y(self, *, net: bool) -> float:
        paid = sum(c for at, c in self.bought if self.t0 < at <= self.t0 + WINDOW)
        back = sum(c for at, c in self.refunded if self.t0 < at <= self.t0 + WINDOW) if net else 0
        return (paid - back) / 100

    def x(self) -> float:
        return sum(c for at, c in self.bought if self.t0 - WINDOW <= at < self.t0) / 100


def shoppers(n: int, seed: int = 20261207) -> tuple[list[Customer], list[Json]]:
    """Customers and their events: some spend before their first qualifying purchase (under 100, which does not
    expose them), most come back, one in thirty with a basket a hundred times the others', and some return part
    of an order, inside their window or after it."""
    rng = random.Random(seed)
    customers, events = [], []
    for i in range(n):
        c = Customer(f"h{i:03d}", BASE + dt.timedelta(minutes=7 * i, seconds=rng.randint(0, 59)))
        if rng.random() < 0.6:
            c.bought.append((c.t0 - dt.timedelta(seconds=rng.randint(3600, 25 * 86400)), rng.randint(500, 9900)))
        c.bought.append((c.t0, rng.randint(10000, 30000)))
        for _ in range(rng.choice([0, 1, 1, 2])):
            whale = rng.random() < 1 / 30
            cents = rng.randint(500_000, 2_000_000) if whale else rng.randint(1500, 25000)
            c.bought.append((c.t0 + dt.timedelta(seconds=rng.randint(3600, 40 * 86400)), cents))
        for k, (at, cents) in enumerate(c.bought):
            events.append(purchase(f"{c.customer_id}-p{k}", c.customer_id, cents / 100, occurred_at=iso(at)))
            if at >= c.t0 and rng.random() < 0.25:
                back = rng.randint(1, cents)
                when = at + dt.timedelta(seconds=rng.randint(60, 20 * 86400))
                c.refunded.append((when, back))
                events.append(
                    {
                        "event_id": f"{c.customer_id}-r{k}",
                        "type": "return",
                        "customer_id": c.customer_id,
                        "occurred_at": iso(when),
                        "order": {"order_id": f"o-{c.customer_id}-p{k}", "total": back / 100},
                    }
                )
        customers.append(c)
    events.append(purchase("clock", "clock", 5.0, occurred_at=iso(CLOCK)))
    return customers, events


def capped_figures(yt: np.ndarray, yc: np.ndarray, xt: np.ndarray, xc: np.ndarray, q: float) -> Json:
    """The capped figures the report should give, from scratch: numpy's percentile, SciPy's Welch test."""
    cap_y = float(np.percentile(np.concatenate([yt, yc]), q))
    yt, yc = np.minimum(yt, cap_y), np.minimum(yc, cap_y)  # pre-exposure spend, the covariate, as it is
    welch = stats.ttest_ind(yt, yc, equal_var=False)
    ci = welch.confidence_interval(0.95)
    x, y = np.concatenate([xt, xc]), np.concatenate([yt, yc])
    theta = np.cov(x, y, ddof=1)[0, 1] / np.var(x, ddof=1)
    at, ac = yt - theta * (xt - x.mean()), yc - theta * (xc - x.mean())
    cuped = stats.ttest_ind(at, ac, equal_var=False)
    return {
        "cap": cap_y,
        "treated_mean": yt.mean(),
        "control_mean": yc.mean(),
        "absolute": yt.mean() - yc.mean(),
        "ci95": [ci.low, ci.high],
        "p_value": welch.pvalue,
        "cuped_absolute": at.mean() - ac.mean(),
        "cuped_p_value": cuped.pvalue,
        "theta": theta,
    }


def check(row: Json, truth: Json) -> None:
    assert row["revenue_cap"] == pytest.approx(truth["cap"], abs=1e-4)
    assert row["treated"]["revenue_per_customer_capped"] == pytest.approx(truth["treated_mean"], abs=1e-4)
    assert row["control"]["revenue_per_customer_capped"] == pytest.approx(truth["control_mean"], abs=1e-4)
    capped = row["revenue_uplift_capped"]
    assert capped["absolute"] == pytest.approx(truth["absolute"], abs=1e-4)
    assert capped["ci95"] == pytest.approx(truth["ci95"], abs=1e-4)
    assert capped["p_value"] == pytest.approx(truth["p_value"], abs=1e-7)
    cuped = row["revenue_uplift_capped_cuped"]
    assert cuped["theta"] == pytest.approx(truth["theta"], abs=1e-6)
    assert cuped["absolute"] == pytest.approx(truth["cuped_absolute"], abs=1e-4)
    assert cuped["p_value"] == pytest.approx(truth["cuped_p_value"], abs=1e-7)


async def test_capped_and_netted_revenue_agree_with_numpy_and_scipy_on_the_posted_events(
    rules_app: AppFactory, keys: dict[str, Any], database_url: str
) -> None:
    customers, events = shoppers(240)
    async with rules_app(CAMPAIGN, settings=SETTINGS) as app:
        treated: set[str] = set()
        for start in range(0, len(events), 500):
            chunk = events[start : start + 500]
            response = await app.post("/v1/events/batch", json={"events": chunk}, headers=keys["events:write"])
            assert response.status_code == 200, response.text
            results = response.json()["results"]
            assert [r["status"] for r in results] == [201] * len(chunk)
            treated |= {e["customer_id"] for e, r in zip(chunk, results, strict=True) if r.get("awards")}
        raw = await report(app, keys, "campaign=honest&window_days=30")
        netted = await report(app, keys, "campaign=honest&window_days=30&net_returns=true")
        p90 = await report(app, keys, "campaign=honest&window_days=30&cap_percentile=90")
        uncapped = await report(app, keys, "campaign=honest&window_days=30&cap_percentile=100")
        bad = await app.get("/v1/reports/uplift?campaign=honest&cap_percentile=20", headers=keys["reports:read"])

    assert (raw["cap_percentile"], raw["returns_netted"]) == (99.0, False)
    assert (netted["cap_percentile"], netted["returns_netted"]) == (99.0, True)
    assert bad.status_code == 400
    assert bad.headers["content-type"].startswith("application/problem+json")
    assert "cap_percentile" in bad.text

    groups = {True: [c for c in customers if c.customer_id in treated], False: []}
    groups[False] = [c for c in customers if c.customer_id not in treated]
    assert len(groups[True]) > 90
    assert len(groups[False]) > 90

    def arrays(net: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        yt, yc = (np.array([c.y(net=net) for c in groups[g]]) for g in (True, False))
        xt, xc = (np.array([c.x() for c in groups[g]]) for g in (True, False))
        return yt, yc, xt, xc

    yt, yc, xt, xc = arrays(net=False)
    assert yt.max() > 20 * np.median(yt[yt > 0])  # the tail this is about
    row = rows_by_rule(raw)["mug"]
    assert row["treated"]["revenue_per_customer"] == pytest.approx(yt.mean(), abs=1e-4)
    assert row["control"]["revenue_per_customer"] == pytest.approx(yc.mean(), abs=1e-4)
    assert row["treated"]["pre_revenue_per_customer"] == pytest.approx(xt.mean(), abs=1e-4)
    check(row, capped_figures(yt, yc, xt, xc, 99))
    check(rows_by_rule(p90)["mug"], capped_figures(yt, yc, xt, xc, 90))
    # Capping narrows the revenue interval: the tail no longer sets its width.
    capped, plain = row["revenue_uplift_capped"]["ci95"], row["revenue_uplift"]["ci95"]
    assert capped[1] - capped[0] < plain[1] - plain[0]

    # At the 100th percentile nothing is capped: the capped figures are the raw ones.
    whole = rows_by_rule(uncapped)["mug"]
    assert whole["revenue_cap"] == pytest.approx(max(yt.max(), yc.max()), abs=1e-4)
    assert whole["revenue_uplift_capped"]["absolute"] == whole["revenue_uplift"]["absolute"]
    assert whole["revenue_uplift_capped"]["p_value"] == pytest.approx(whole["revenue_uplift"]["p_value"], abs=1e-9)

    # Netted: refunds made inside each window come off, including refunds of the first purchase itself.
    nyt, nyc, nxt, nxc = arrays(net=True)
    assert nyt.sum() < yt.sum()
    assert nyc.sum() < yc.sum()
    netted_row = rows_by_rule(netted)["mug"]
    assert netted_row["treated"]["revenue_per_customer"] == pytest.approx(nyt.mean(), abs=1e-4)
    assert netted_row["control"]["revenue_per_customer"] == pytest.approx(nyc.mean(), abs=1e-4)
    welch = stats.ttest_ind(nyt, nyc, equal_var=False)
    assert netted_row["revenue_uplift"]["p_value"] == pytest.approx(welch.pvalue, abs=1e-7)
    check(netted_row, capped_figures(nyt, nyc, nxt, nxc, 99))
    # Repeat purchase is about buying again, returns or not.
    assert netted_row["uplift"] == row["uplift"]
    # The one-rule campaign's own row is the rule's.
    assert {**rows_by_rule(netted)["*"], "rule_id": "mug"} == {**netted_row, "plan": rows_by_rule(netted)["*"]["plan"]}

    # The returns' timelines, as the projector built them page by page, are what a rebuild makes of the events.
    built = await projected(database_url)
    assert await rebuilt(database_url) == built
    for c in customers:
        if c.refunded:
            running, steps = 0, []
            for at, cents in sorted(c.refunded):
                running += cents
                steps.append((at, running))
            assert built.returns[c.customer_id] == steps


class Row:
    """One group of the report's pass, as ``_caps`` and ``_capped`` read it."""

    def __init__(self, cap_key: str, n: int, tail: list[list[float]]) -> None:
        self.cap_key, self.n, self.tail = cap_key, n, tail


@pytest.mark.parametrize("q", [0.5, 0.9, 0.99, 0.999, 1.0])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_cap_and_the_capped_sums_from_the_customers_above_a_threshold_are_numpys(q: float, seed: int) -> None:
    """A large rule's pass collects only the customers above a threshold from a sample; the cap and the capped
    sums worked out from them and the plain sums must be what numpy gives on every customer."""
    rng = np.random.default_rng(seed)
    n = 20_000
    y = np.where(rng.random(n) < 0.6, 0.0, np.round(rng.lognormal(4, 1.5, n), 2))  # most buy nothing again
    x = np.round(rng.lognormal(3, 1, n), 2)
    treated = rng.random(n) < 0.9
    threshold = float(np.percentile(y, max(0.0, q * 100 - 2)))  # where the sample would put it
    rows = [
        Row("rule", int(g.sum()), [[float(a), float(b)] for a, b in zip(y[g], x[g], strict=True) if a > threshold])
        for g in (treated, ~treated)
    ]
    caps = _caps(rows, q)
    if caps is None:  # the cap lies among values at or below the threshold (here: no repeat purchase at all)
        assert float(np.percentile(y, q * 100)) <= threshold
        rows = [
            Row("rule", int(g.sum()), [[float(a), float(b)] for a, b in zip(y[g], x[g], strict=True)])
            for g in (treated, ~treated)
        ]
        caps = _caps(rows, q)  # as the pass looks again, at everyone
        assert caps is not None
    assert caps["rule"] == pytest.approx(float(np.percentile(y, q * 100)), rel=1e-12, abs=1e-12)
    for g, row in zip((treated, ~treated), rows, strict=True):
        raw = Moments(
            int(g.sum()),
            float(y[g].sum()),
            float((y[g] ** 2).sum()),
            float(x[g].sum()),
            float((x[g] ** 2).sum()),
            float((x[g] * y[g]).sum()),
        )
        capped = _capped(raw, row.tail, caps["rule"])
        yc = np.minimum(y[g], caps["rule"])
        assert capped.sum_y == pytest.approx(float(yc.sum()), rel=1e-9, abs=1e-6)  # less the tail: float residue
        assert capped.sum_y2 == pytest.approx(float((yc**2).sum()), rel=1e-9, abs=1e-3)
        assert capped.sum_xy == pytest.approx(float((yc * x[g]).sum()), rel=1e-9, abs=1e-3)
        assert (capped.sum_x, capped.sum_x2) == (raw.sum_x, raw.sum_x2)
    # A threshold above the cap's neighbours leaves them out: the pass must look at everyone again.
    high = float(np.percentile(y, min(100.0, q * 100 + 1))) + 1
    short = [Row("rule", n, [[float(a), 0.0] for a in y if a > high])]
    assert q == 1.0 or _caps(short, q) is None
