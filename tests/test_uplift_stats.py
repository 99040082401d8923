"""The uplift report's statistics, checked against SciPy and statsmodels.

``service.reports.stats`` is pure Python; every function here is compared with
the reference implementation its docstring names, on grids of parameters and on
generated revenue-like data. These tests need no database or event loop.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
import pytest
from scipy import special, stats  # type: ignore[import-untyped]
from statsmodels.stats.proportion import confint_proportions_2indep, proportions_ztest  # type: ignore[import-untyped]

from service.reports.stats import (
    Z_975,
    Comparison,
    Moments,
    cuped,
    incomplete_beta,
    normal_sf,
    proportions,
    sample_ratio_p,
    t_quantile_975,
    t_two_sided_p,
    welch,
)

Array = npt.NDArray[np.float64]

EXACT = 1e-9  # closed-form formulas
SPECIAL = 1e-6  # special functions, quantiles and p-values derived from them
TINY = 1e-300  # below this, two tail probabilities both count as zero


def moments(y: Array, x: Array | None = None) -> Moments:
    """One group's sums, as the report would compute them from its customers."""
    ys = [float(v) for v in y]
    if x is None:
        return Moments(len(ys), math.fsum(ys), math.fsum(v * v for v in ys))
    xs = [float(v) for v in x]
    return Moments(
        len(ys),
        math.fsum(ys),
        math.fsum(v * v for v in ys),
        math.fsum(xs),
        math.fsum(v * v for v in xs),
        math.fsum(a * b for a, b in zip(xs, ys, strict=True)),
    )


def revenue(rng: np.random.Generator, n: int, zero_share: float, mu: float, sigma: float) -> Array:
    """Spend per customer: many customers spend nothing, the rest a lognormal amount."""
    spend = rng.lognormal(mu, sigma, n)
    spend[rng.random(n) < zero_share] = 0.0
    return spend


def delta_ratio_ci(mean_t: float, var_mean_t: float, mean_c: float, var_mean_c: float) -> tuple[float, float]:
    """95% interval of mean_t / mean_c - 1 by the delta method, for independent means."""
    z = float(stats.norm.ppf(0.975))
    relative = mean_t / mean_c - 1.0
    se = math.sqrt(var_mean_t / mean_c**2 + mean_t**2 * var_mean_c / mean_c**4)
    return relative - z * se, relative + z * se


def assert_close(actual: float, expected: float, rel: float, abs_: float = 0.0) -> None:
    assert actual == pytest.approx(expected, rel=rel, abs=abs_)


def assert_interval(actual: tuple[float, float] | None, expected: tuple[float, float], rel: float) -> None:
    assert actual is not None
    # tolerance relative to the interval's scale, so that a bound near zero is not held to a relative error
    scale = max(abs(expected[0]), abs(expected[1]), expected[1] - expected[0])
    assert actual[0] == pytest.approx(expected[0], rel=rel, abs=rel * scale)
    assert actual[1] == pytest.approx(expected[1], rel=rel, abs=rel * scale)


# --- special functions -----------------------------------------------------------------------------------------


def test_z_975_is_the_normal_quantile() -> None:
    assert_close(Z_975, float(stats.norm.ppf(0.975)), 1e-12)


@pytest.mark.parametrize(
    "z", [-40.0, -8.0, -3.0, -1.959963984540054, -0.5, 0.0, 0.3, 1.0, 1.96, 2.5, 5.0, 8.0, 20.0, 37.5]
)
def test_normal_sf_matches_scipy(z: float) -> None:
    assert_close(normal_sf(z), float(stats.norm.sf(z)), EXACT, TINY)


SHAPES = [0.5, 1.0, 2.5, 10.0, 137.0, 5_000.0, 500_000.0]
XS = [1e-12, 1e-6, 0.01, 0.3, 0.5, 0.7, 0.99, 1 - 1e-6, 1 - 1e-12]


@pytest.mark.parametrize("a", SHAPES)
@pytest.mark.parametrize("b", SHAPES)
@pytest.mark.parametrize("x", XS)
def test_incomplete_beta_matches_scipy(a: float, b: float, x: float) -> None:
    assert_close(incomplete_beta(a, b, x), float(special.betainc(a, b, x)), SPECIAL, TINY)


@pytest.mark.parametrize(("a", "b"), [(0.5, 0.5), (2.5, 10.0), (500_000.0, 0.5), (500_000.0, 500_000.0)])
def test_incomplete_beta_near_its_mean_and_complement(a: float, b: float) -> None:
    """Around the mean a / (a + b) (the branch point of the continued fraction), and I_x(a, b) = 1 - I_1-x(b, a)."""
    mean = a / (a + b)
    spread = math.sqrt(a * b / ((a + b) ** 2 * (a + b + 1)))
    for x in (mean - 3 * spread, mean - 1e-9, mean, (a + 1) / (a + b + 2), mean + 1e-9, mean + 3 * spread):
        if not 0.0 < x < 1.0:
            continue
        assert_close(incomplete_beta(a, b, x), float(special.betainc(a, b, x)), SPECIAL, TINY)
        assert incomplete_beta(a, b, x) + incomplete_beta(b, a, 1.0 - x) == pytest.approx(1.0, rel=SPECIAL)


@pytest.mark.parametrize("x", [-1.0, 0.0, 1.0, 2.0])
def test_incomplete_beta_outside_the_open_interval(x: float) -> None:
    assert incomplete_beta(3.0, 4.0, x) == (0.0 if x <= 0 else 1.0)


DFS = [1.0, 1.5, 2.0, 3.0, 4.7, 10.0, 29.3, 100.0, 1_234.5, 10_000.0, 100_000.0, 1_000_000.0]


@pytest.mark.parametrize("df", DFS)
@pytest.mark.parametrize("t", [0.0, 0.01, 0.5, 1.0, 1.96, 2.5, 4.0, 10.0, 50.0])
def test_t_two_sided_p_matches_scipy(t: float, df: float) -> None:
    expected = 2.0 * float(stats.t.sf(abs(t), df))
    assert_close(t_two_sided_p(t, df), expected, SPECIAL, TINY)
    assert t_two_sided_p(-t, df) == t_two_sided_p(t, df)


@pytest.mark.parametrize("t", [0.0, 1.0, 1.96, 3.0, 8.0])
def test_t_two_sided_p_with_infinite_df_is_the_normal_one(t: float) -> None:
    assert_close(t_two_sided_p(t, math.inf), 2.0 * float(stats.norm.sf(t)), EXACT)


@pytest.mark.parametrize("df", [*DFS, 1.01, 2.2, 5.0, 7.5, 30.0, 60.0, 120.0, 5e6, 9.9e6, 2e7, 1e9])
def test_t_quantile_975_matches_scipy(df: float) -> None:
    q = t_quantile_975(df)
    assert_close(q, float(stats.t.ppf(0.975, df)), SPECIAL)
    if df <= 1e7:
        assert t_two_sided_p(q, df) == pytest.approx(0.05, rel=SPECIAL)


def test_t_quantile_975_with_infinite_df_is_the_normal_one() -> None:
    assert t_quantile_975(math.inf) == Z_975


# --- repeat rate: two proportions ------------------------------------------------------------------------------


def check_proportions(r_t: int, n_t: int, r_c: int, n_c: int) -> Comparison:
    got = proportions(r_t, n_t, r_c, n_c)
    p_t, p_c = r_t / n_t, r_c / n_c
    lo, hi = confint_proportions_2indep(r_t, n_t, r_c, n_c, method="wald", compare="diff")
    assert_close(got.absolute, p_t - p_c, EXACT, 1e-15)
    assert_interval(got.ci95, (float(lo), float(hi)), EXACT)
    assert got.df is None
    return got


@pytest.mark.parametrize(
    ("r_t", "n_t", "r_c", "n_c"),
    [
        (120, 1000, 100, 1000),
        (30, 200, 45, 350),
        (1, 13, 2, 11),
        (4_500, 10_000, 4_300, 10_000),
        (999, 1000, 990, 1000),
        (18_230, 90_000, 1_850, 10_000),
        (0, 50, 3, 60),
        (50, 50, 40, 60),
        (7, 7, 1, 3),
    ],
)
def test_proportions_match_statsmodels(r_t: int, n_t: int, r_c: int, n_c: int) -> None:
    got = check_proportions(r_t, n_t, r_c, n_c)
    _, p_value = proportions_ztest([r_t, r_c], [n_t, n_c])
    assert_close(got.p_value, float(p_value), EXACT, TINY)

    p_t, p_c = r_t / n_t, r_c / n_c
    assert got.relative is not None
    assert_close(got.relative, p_t / p_c - 1.0, EXACT, 1e-15)
    expected_ci = delta_ratio_ci(p_t, p_t * (1 - p_t) / n_t, p_c, p_c * (1 - p_c) / n_c)
    assert_interval(got.relative_ci95, expected_ci, EXACT)


@pytest.mark.parametrize(("r_t", "n_t", "n_c"), [(0, 100, 80), (12, 100, 80), (100, 100, 80)])
def test_proportions_with_no_control_repeaters_have_no_ratio(r_t: int, n_t: int, n_c: int) -> None:
    got = check_proportions(r_t, n_t, 0, n_c)
    assert got.relative is None
    assert got.relative_ci95 is None
    if r_t > 0:
        _, p_value = proportions_ztest([r_t, 0], [n_t, n_c])
        assert_close(got.p_value, float(p_value), EXACT, TINY)


@pytest.mark.parametrize(("share", "n_t", "n_c"), [(0.0, 100, 80), (1.0, 100, 80), (1.0, 1, 1)])
def test_proportions_with_all_equal_outcomes(share: float, n_t: int, n_c: int) -> None:
    """Everybody (or nobody) repeats in both groups: no difference, no spread, p = 1 (statsmodels gives nan)."""
    got = check_proportions(int(share * n_t), n_t, int(share * n_c), n_c)
    assert got.absolute == 0.0
    assert got.ci95 == (0.0, 0.0)
    assert got.p_value == 1.0
    if share == 0.0:
        assert got.relative is None
    else:
        assert got.relative == 0.0
        assert got.relative_ci95 == (0.0, 0.0)


# --- revenue per customer: Welch ------------------------------------------------------------------------------


WELCH_CASES = [
    # seed, n_t, n_c, treated (zero share, mu, sigma), control (zero share, mu, sigma)
    (1, 3, 5, (0.0, 3.0, 0.5), (0.0, 3.0, 0.5)),
    (2, 20, 20, (0.3, 3.5, 1.0), (0.3, 3.4, 1.0)),
    (3, 200, 1_000, (0.6, 3.5, 1.2), (0.6, 3.5, 1.2)),
    (4, 5_000, 300, (0.7, 4.0, 1.5), (0.5, 3.0, 0.6)),
    (5, 20_000, 20_000, (0.8, 3.8, 1.3), (0.8, 3.7, 1.3)),
    (6, 50, 4_000, (0.2, 5.0, 2.0), (0.9, 2.0, 0.3)),
    (7, 2, 2, (0.0, 1.0, 1.0), (0.0, 1.0, 1.0)),
]


@pytest.mark.parametrize(("seed", "n_t", "n_c", "treated", "control"), WELCH_CASES)
def test_welch_matches_scipy(
    seed: int,
    n_t: int,
    n_c: int,
    treated: tuple[float, float, float],
    control: tuple[float, float, float],
) -> None:
    rng = np.random.default_rng(seed)
    a, b = revenue(rng, n_t, *treated), revenue(rng, n_c, *control)
    got = welch(moments(a), moments(b))
    ref = stats.ttest_ind(a, b, equal_var=False)
    ci = ref.confidence_interval(0.95)

    diff = float(a.mean() - b.mean())
    assert_close(got.absolute, diff, EXACT, 1e-12 * float(max(a.mean(), b.mean())))
    assert got.df is not None
    assert_close(got.df, float(ref.df), EXACT)
    assert_close(got.p_value, float(ref.pvalue), SPECIAL, TINY)
    assert_interval(got.ci95, (float(ci.low), float(ci.high)), SPECIAL)

    from_stats = stats.ttest_ind_from_stats(a.mean(), a.std(ddof=1), n_t, b.mean(), b.std(ddof=1), n_c, equal_var=False)
    assert_close(got.p_value, float(from_stats.pvalue), SPECIAL, TINY)

    assert got.relative is not None
    assert_close(got.relative, float(a.mean() / b.mean()) - 1.0, EXACT, 1e-15)
    expected_ci = delta_ratio_ci(
        float(a.mean()), float(a.var(ddof=1)) / n_t, float(b.mean()), float(b.var(ddof=1)) / n_c
    )
    assert_interval(got.relative_ci95, expected_ci, EXACT)


def test_welch_moments_mean_and_variance() -> None:
    rng = np.random.default_rng(11)
    y = revenue(rng, 777, 0.5, 3.0, 1.0)
    m = moments(y)
    assert_close(m.mean, float(y.mean()), EXACT)
    assert_close(m.variance, float(y.var(ddof=1)), EXACT)
    assert Moments(1, 5.0, 25.0).variance == 0.0


def test_welch_without_control_revenue_has_no_ratio() -> None:
    rng = np.random.default_rng(12)
    a = revenue(rng, 100, 0.5, 3.0, 1.0)
    got = welch(moments(a), moments(np.zeros(100)))
    ref = stats.ttest_ind(a, np.zeros(100), equal_var=False)
    assert_close(got.p_value, float(ref.pvalue), SPECIAL, TINY)
    assert got.relative is None
    assert got.relative_ci95 is None


@pytest.mark.parametrize(("value_t", "value_c", "p_value"), [(10.0, 10.0, 1.0), (12.0, 10.0, 0.0), (0.0, 0.0, 1.0)])
def test_welch_with_no_spread(value_t: float, value_c: float, p_value: float) -> None:
    got = welch(moments(np.full(40, value_t)), moments(np.full(30, value_c)))
    assert got.absolute == value_t - value_c
    assert got.ci95 == (got.absolute, got.absolute)
    assert got.p_value == p_value
    assert got.df is None


# --- CUPED -----------------------------------------------------------------------------------------------------


def cuped_data(seed: int, n_t: int, n_c: int, noise: float, shift: float) -> tuple[Array, Array, Array, Array]:
    """Pre-period spend x and outcome y = 5 + 0.8 x + noise (+ shift for the treated)."""
    rng = np.random.default_rng(seed)
    x = revenue(rng, n_t + n_c, 0.4, 3.5, 0.8)
    y = 5.0 + 0.8 * x + rng.normal(0.0, noise, n_t + n_c)
    y[:n_t] += shift
    return x[:n_t], y[:n_t], x[n_t:], y[n_t:]


CUPED_CASES = [
    # seed, n_t, n_c, noise, shift
    (21, 50, 60, 5.0, 3.0),
    (22, 500, 2_000, 20.0, 2.0),
    (23, 10_000, 10_000, 10.0, 0.5),
    (24, 3_000, 700, 60.0, 1.0),
    (25, 8, 12, 2.0, 1.0),
]


@pytest.mark.parametrize(("seed", "n_t", "n_c", "noise", "shift"), CUPED_CASES)
def test_cuped_matches_an_independent_computation(seed: int, n_t: int, n_c: int, noise: float, shift: float) -> None:
    x_t, y_t, x_c, y_c = cuped_data(seed, n_t, n_c, noise, shift)
    result = cuped(moments(y_t, x_t), moments(y_c, x_c))
    assert result is not None
    got, theta = result

    x_all, y_all = np.concatenate([x_t, x_c]), np.concatenate([y_t, y_c])
    expected_theta = float(np.cov(x_all, y_all)[0, 1] / np.var(x_all, ddof=1))
    adj_t = y_t - expected_theta * (x_t - x_all.mean())
    adj_c = y_c - expected_theta * (x_c - x_all.mean())
    ref = stats.ttest_ind(adj_t, adj_c, equal_var=False)
    ci = ref.confidence_interval(0.95)

    assert_close(theta, expected_theta, EXACT)
    assert_close(got.absolute, float(adj_t.mean() - adj_c.mean()), EXACT)
    assert got.df is not None
    assert_close(got.df, float(ref.df), EXACT)
    assert_close(got.p_value, float(ref.pvalue), SPECIAL, TINY)
    assert_interval(got.ci95, (float(ci.low), float(ci.high)), SPECIAL)

    assert got.relative is not None
    assert_close(got.relative, float(adj_t.mean() / adj_c.mean()) - 1.0, EXACT, 1e-15)
    expected_ci = delta_ratio_ci(
        float(adj_t.mean()), float(adj_t.var(ddof=1)) / n_t, float(adj_c.mean()), float(adj_c.var(ddof=1)) / n_c
    )
    assert_interval(got.relative_ci95, expected_ci, EXACT)


@pytest.mark.parametrize(("seed", "n_t", "n_c"), [(31, 200, 200), (32, 1_000, 4_000), (33, 20_000, 5_000)])
def test_cuped_narrows_the_interval_when_x_predicts_y(seed: int, n_t: int, n_c: int) -> None:
    x_t, y_t, x_c, y_c = cuped_data(seed, n_t, n_c, noise=3.0, shift=1.0)
    assert np.corrcoef(np.concatenate([x_t, x_c]), np.concatenate([y_t, y_c]))[0, 1] > 0.9
    t, c = moments(y_t, x_t), moments(y_c, x_c)
    plain = welch(t, c)
    result = cuped(t, c)
    assert result is not None
    adjusted, theta = result
    assert theta == pytest.approx(0.8, rel=0.05)
    plain_width = plain.ci95[1] - plain.ci95[0]
    adjusted_width = adjusted.ci95[1] - adjusted.ci95[0]
    assert adjusted_width < 0.5 * plain_width
    assert adjusted.ci95[0] < 1.0 < adjusted.ci95[1]


@pytest.mark.parametrize("value", [0.0, 1.0, 25.0, 0.1, 19.99, 3.7])
@pytest.mark.parametrize(("n_t", "n_c"), [(10, 10), (100, 37), (1_000, 1_000), (2_000, 2_000)])
def test_cuped_without_variation_in_x_is_none(value: float, n_t: int, n_c: int) -> None:
    rng = np.random.default_rng(41)
    y_t, y_c = revenue(rng, n_t, 0.5, 3.0, 1.0), revenue(rng, n_c, 0.5, 3.0, 1.0)
    assert cuped(moments(y_t, np.full(n_t, value)), moments(y_c, np.full(n_c, value))) is None


# --- sample-ratio mismatch -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("treated", "control", "expected_control"),
    [
        (9_000, 1_000, 1_000.0),
        (9_030, 970, 1_000.0),
        (9_300, 700, 1_000.0),
        (4_990, 5_010, 5_000.0),
        (5_300, 4_700, 5_000.0),
        (45, 15, 6.0),
        (95, 5, 5.0),
        (123_456, 13_700, 13_715.6),
    ],
)
def test_sample_ratio_p_matches_scipy(treated: int, control: int, expected_control: float) -> None:
    n = treated + control
    expected = stats.chisquare([control, treated], f_exp=[expected_control, n - expected_control]).pvalue
    p = sample_ratio_p(treated, control, expected_control)
    assert p is not None
    assert_close(p, float(expected), EXACT, TINY)


@pytest.mark.parametrize(("treated", "control", "expected_control"), [(100, 2, 4.0), (3, 50, 49.0), (2, 2, 2.0)])
def test_sample_ratio_p_needs_five_expected_per_cell(treated: int, control: int, expected_control: float) -> None:
    assert sample_ratio_p(treated, control, expected_control) is None


def test_sample_ratio_p_flags_a_broken_split_only() -> None:
    correct = sample_ratio_p(9_000, 1_000, 1_000.0)
    assert correct is not None
    assert correct > 0.001
    slightly_off = sample_ratio_p(9_040, 960, 1_000.0)
    assert slightly_off is not None
    assert slightly_off > 0.001
    broken = sample_ratio_p(9_300, 700, 1_000.0)
    assert broken is not None
    assert broken < 0.001
