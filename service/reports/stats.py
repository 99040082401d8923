"""The statistics of the uplift report: pure functions of group summaries.

Every formula is a textbook one, chosen so that an analyst can redo it in a
spreadsheet, and each is checked against SciPy and statsmodels in the tests:

- Repeat rate: the difference of two proportions with an unpooled Wald
  interval, and a two-sided z-test with the pooled proportion (statsmodels'
  ``confint_proportions_2indep(method="wald")`` and ``proportions_ztest``).
- Revenue per customer: Welch's unequal-variance t-test with
  Welch-Satterthwaite degrees of freedom (SciPy's ``ttest_ind_from_stats``
  with ``equal_var=False``).
- Relative uplift (treated / control - 1): the delta method on the ratio of
  two independent means, with a normal quantile.
- CUPED: revenue adjusted by the pre-exposure spend ``x`` with one pooled
  ``theta = cov(x, y) / var(x)``, then Welch's test on the adjusted values.
- Sample-ratio mismatch: Pearson's chi-square goodness of fit of the observed
  treated/control split against the configured holdout, one degree of freedom.

Nothing here imports SciPy: Student's t distribution comes from the
regularised incomplete beta function (a Lentz continued fraction).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from dataclasses import dataclass

Z_975 = 1.959963984540054  # the standard normal's 97.5% quantile
Z_80 = 0.8416212335729143  # the standard normal's 80% quantile: 80% power


@dataclass(frozen=True, slots=True)
class Moments:
    """One group's sums over its customers: ``y`` is the outcome, ``x`` the pre-exposure covariate."""

    n: int
    sum_y: float
    sum_y2: float
    sum_x: float = 0.0
    sum_x2: float = 0.0
    sum_xy: float = 0.0

    @property
    def mean(self) -> float:
        return self.sum_y / self.n

    def __add__(self, other: Moments) -> Moments:
        """The sums of two groups together."""
        return Moments(
            self.n + other.n,
            self.sum_y + other.sum_y,
            self.sum_y2 + other.sum_y2,
            self.sum_x + other.sum_x,
            self.sum_x2 + other.sum_x2,
            self.sum_xy + other.sum_xy,
        )

    @property
    def variance(self) -> float:
        """Sample variance (n - 1 in the denominator); 0 for fewer than two customers."""
        if self.n < 2:
            return 0.0
        return max(0.0, (self.sum_y2 - self.sum_y * self.sum_y / self.n) / (self.n - 1))


@dataclass(frozen=True, slots=True)
class Comparison:
    """Treated against control: the difference, its 95% interval and p-value, and the ratio."""

    absolute: float
    ci95: tuple[float, float]
    relative: float | None
    relative_ci95: tuple[float, float] | None
    p_value: float
    df: float | None = None


def normal_sf(z: float) -> float:
    """P(Z > z) for a standard normal Z."""
    return 0.5 * math.erfc(z / math.sqrt(2.0))


def _betacf(a: float, b: float, x: float) -> float:
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 100_000):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-15:
            break
    return h


def incomplete_beta(a: float, b: float, x: float) -> float:
    """The regularised incomplete beta function I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _betacf(a, b, x) / a
    return 1.0 - math.exp(log_front) * _betacf(b, a, 1.0 - x) / b


def t_two_sided_p(t: float, df: float) -> float:
    """P(|T| > |t|) for Student's t with ``df`` degrees of freedom."""
    if math.isinf(df):
        return 2.0 * normal_sf(abs(t))
    return incomplete_beta(df / 2.0, 0.5, df / (df + t * t))


def t_density(t: float, df: float) -> float:
    """Student's t probability density at ``t``."""
    log_norm = math.lgamma((df + 1.0) / 2.0) - math.lgamma(df / 2.0) - 0.5 * math.log(df * math.pi)
    return math.exp(log_norm - (df + 1.0) / 2.0 * math.log1p(t * t / df))


def t_quantile_975(df: float) -> float:
    """The 97.5% quantile of Student's t (the half-width factor of a 95% interval).

    Newton's method on the two-sided p-value from the normal quantile, which lies below it: p falls and is convex
    for t > 0, so each step lands closer from below, in five to eight steps.
    """
    if math.isinf(df) or df > 1e7:
        return Z_975
    t = Z_975
    for _ in range(100):
        step = (t_two_sided_p(t, df) - 0.05) / (2.0 * t_density(t, df))
        t += step
        if step < 1e-13 * t:
            break
    return t


def _ratio(mean_t: float, var_mean_t: float, mean_c: float, var_mean_c: float) -> tuple[float, tuple[float, float]]:
    """treated / control - 1 and its delta-method 95% interval, for independent means."""
    ratio = mean_t / mean_c
    se = math.sqrt(var_mean_t / mean_c**2 + mean_t**2 * var_mean_c / mean_c**4)
    relative = ratio - 1.0
    return relative, (relative - Z_975 * se, relative + Z_975 * se)


def proportions(repeaters_t: int, n_t: int, repeaters_c: int, n_c: int) -> Comparison:
    """Difference of two proportions: Wald interval, pooled z-test, delta-method ratio."""
    p_t, p_c = repeaters_t / n_t, repeaters_c / n_c
    var_t, var_c = p_t * (1 - p_t) / n_t, p_c * (1 - p_c) / n_c
    diff = p_t - p_c
    half = Z_975 * math.sqrt(var_t + var_c)
    pooled = (repeaters_t + repeaters_c) / (n_t + n_c)
    se_pooled = math.sqrt(pooled * (1 - pooled) * (1 / n_t + 1 / n_c))
    p_value = 1.0 if se_pooled == 0 else 2.0 * normal_sf(abs(diff) / se_pooled)
    relative, relative_ci = _ratio(p_t, var_t, p_c, var_c) if p_c > 0 else (None, None)
    return Comparison(diff, (diff - half, diff + half), relative, relative_ci, p_value)


def welch(treated: Moments, control: Moments) -> Comparison:
    """Welch's t-test for the difference of two means, with the delta-method ratio."""
    return _welch(treated.mean, treated.variance, treated.n, control.mean, control.variance, control.n)


def _welch(mean_t: float, var_t: float, n_t: int, mean_c: float, var_c: float, n_c: int) -> Comparison:
    if n_t < 2 or n_c < 2:
        raise ValueError("Welch's test needs at least two customers in each group")
    a, b = var_t / n_t, var_c / n_c
    diff = mean_t - mean_c
    se = math.sqrt(a + b)
    if se == 0:
        return Comparison(diff, (diff, diff), None, None, 1.0 if diff == 0 else 0.0, None)
    df = (a + b) ** 2 / (a * a / (n_t - 1) + b * b / (n_c - 1))
    half = t_quantile_975(df) * se
    p_value = t_two_sided_p(diff / se, df)
    relative, relative_ci = _ratio(mean_t, a, mean_c, b) if mean_c > 0 else (None, None)
    return Comparison(diff, (diff - half, diff + half), relative, relative_ci, p_value, df)


def cuped(treated: Moments, control: Moments) -> tuple[Comparison, float] | None:
    """Welch's test on ``y - theta * (x - mean x)``; returns it with theta, or None when x does not vary."""
    n = treated.n + control.n
    sx, sy = treated.sum_x + control.sum_x, treated.sum_y + control.sum_y
    sx2 = treated.sum_x2 + control.sum_x2
    var_x = (sx2 - sx * sx / n) / (n - 1)
    if var_x <= 1e-12 * sx2 / n:  # x constant, but for rounding in the sums
        return None
    cov_xy = (treated.sum_xy + control.sum_xy - sx * sy / n) / (n - 1)
    theta = cov_xy / var_x
    mean_x = sx / n

    def adjusted(g: Moments) -> tuple[float, float]:
        gx, gy = g.sum_x / g.n, g.sum_y / g.n
        gvar_x = (g.sum_x2 - g.sum_x * gx) / (g.n - 1)
        gcov = (g.sum_xy - g.sum_x * gy) / (g.n - 1)
        variance = max(0.0, g.variance - 2 * theta * gcov + theta * theta * gvar_x)
        return gy - theta * (gx - mean_x), variance

    mean_t, var_t = adjusted(treated)
    mean_c, var_c = adjusted(control)
    return _welch(mean_t, var_t, treated.n, mean_c, var_c, control.n), theta


def difference_of_uplifts(inside: tuple[int, int, int, int], outside: tuple[int, int, int, int]) -> tuple[float, float]:
    """The uplift in repeat rate of one set of customers minus another's, and its standard error (unpooled, the
    two sets independent). Each is ``(repeaters treated, treated, repeaters control, control)``."""

    def uplift(rt: int, nt: int, rc: int, nc: int) -> tuple[float, float]:
        pt, pc = rt / nt, rc / nc
        return pt - pc, pt * (1 - pt) / nt + pc * (1 - pc) / nc

    a, var_a = uplift(*inside)
    b, var_b = uplift(*outside)
    return a - b, math.sqrt(var_a + var_b)


def sample_ratio_p(treated: int, control: int, expected_control: float) -> float | None:
    """Chi-square p-value of the observed split against the expected number of control customers."""
    n = treated + control
    expected_treated = n - expected_control
    if expected_control < 5 or expected_treated < 5:
        return None  # the chi-square approximation needs at least 5 expected in each cell
    chi2 = (control - expected_control) ** 2 / expected_control + (treated - expected_treated) ** 2 / expected_treated
    return math.erfc(math.sqrt(chi2 / 2.0))


def benjamini_hochberg(p_values: Sequence[float]) -> list[float]:
    """Benjamini-Hochberg adjusted p-values (the false discovery rate over the family), in the order given.

    The ``i``-th smallest of ``m`` becomes ``min over j >= i of m·p(j)/j``, at
    most 1, as ``statsmodels.stats.multitest.multipletests(method="fdr_bh")``.
    """
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted = [0.0] * m
    running = 1.0
    for rank in range(m, 0, -1):
        i = order[rank - 1]
        running = min(running, p_values[i] * m / rank)
        adjusted[i] = running
    return adjusted


def _spread(p: float, holdout: float) -> float:
    """``n·δ²`` for a two-sided 5% test of two proportions at ``p`` to see ``δ`` with 80% power, ``n`` customers
    in all of whom ``holdout`` are held out (the normal approximation)."""
    return (Z_975 + Z_80) ** 2 * p * (1 - p) * (1 / (1 - holdout) + 1 / holdout)


def detectable_uplift(p: float, holdout: float, per_day: float, days: float) -> float:
    """The smallest absolute uplift in a rate ``p`` detected with 80% power after ``days`` of ``per_day``."""
    return math.sqrt(_spread(p, holdout) / (per_day * days))


def per_day(customers: int, first: dt.datetime | None, last: dt.datetime | None) -> float | None:
    """``customers`` first exposed between ``first`` and ``last``, per day (a span of at least one day)."""
    if first is None or last is None:
        return None
    return customers / max((last - first).total_seconds() / 86400, 1.0)


def enrolment_plan(p: float | None, holdout: float | None, per_day: float | None) -> dict[int, float | None]:
    """The uplift 30 and 90 days of enrolment detect with 80% power (``detectable_uplift``), rounded; ``None``
    for both when the baseline, the holdout or the traffic cannot say."""
    if p is None or not 0 < p < 1 or holdout is None or not 0 < holdout < 1 or not per_day:
        return {30: None, 90: None}
    return {days: round(detectable_uplift(p, holdout, per_day, days), 6) for days in (30, 90)}


def days_to_detect(p: float, holdout: float, per_day: float, uplift: float) -> float:
    """The days of ``per_day`` customers that detect an absolute ``uplift`` in a rate ``p`` with 80% power."""
    return _spread(p, holdout) / uplift**2 / per_day
