"""The statistics `boxoffice simulate onsale` judges fairness with, in the standard library.

    ranks          average ranks (ties share the mean of the ranks they span)
    spearman       Spearman's rank correlation: Pearson's r of the ranks
    chi2_sf        the chi-square distribution's survival function (a p-value)
    independence   a chi-square test of independence on a k × k contingency table
    buckets        equal-size groups of an ordered sequence

scipy is not a dependency, so the p-value is computed here: the chi-square survival function
with ν degrees of freedom is the regularized upper incomplete gamma function Q(ν/2, x/2), by
its power series below a + 1 and by its continued fraction (modified Lentz) above, as in
Numerical Recipes (§6.2). tests/test_onsale_stats.py checks it against closed forms.
"""

import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any

_EPSILON = 1e-15
_TINY = 1e-300
_ITERATIONS = 10_000


def ranks(values: Sequence[Any]) -> list[float]:
    """1-based ranks of `values` (anything that sorts), ties given the mean of their ranks."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    result = [0.0] * len(values)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and values[order[end + 1]] == values[order[start]]:
            end += 1
        mean = (start + end) / 2 + 1
        for position in range(start, end + 1):
            result[order[position]] = mean
        start = end + 1
    return result


def pearson(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """Pearson's correlation; None when it is undefined (fewer than two values, or one of the
    sequences is constant)."""
    if len(xs) != len(ys):
        raise ValueError("the sequences differ in length")
    n = len(xs)
    if n < 2:
        return None
    mean_x = math.fsum(xs) / n
    mean_y = math.fsum(ys) / n
    sxy = math.fsum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True))
    sxx = math.fsum((x - mean_x) ** 2 for x in xs)
    syy = math.fsum((y - mean_y) ** 2 for y in ys)
    if sxx == 0 or syy == 0:
        return None
    return max(-1.0, min(1.0, sxy / math.sqrt(sxx * syy)))


def spearman(xs: Sequence[Any], ys: Sequence[Any]) -> float | None:
    """Spearman's ρ of two paired sequences (ties averaged); None when undefined."""
    return pearson(ranks(xs), ranks(ys))


def _log_gamma_prefix(a: float, x: float) -> float:
    """log(x^a e^-x / Γ(a))."""
    return a * math.log(x) - x - math.lgamma(a)


def _lower_series(a: float, x: float) -> float:
    """P(a, x) by its series; converges fast for x < a + 1."""
    term = total = 1.0 / a
    denominator = a
    for _ in range(_ITERATIONS):
        denominator += 1.0
        term *= x / denominator
        total += term
        if abs(term) < abs(total) * _EPSILON:
            break
    return total * math.exp(_log_gamma_prefix(a, x))


def _upper_fraction(a: float, x: float) -> float:
    """Q(a, x) by its continued fraction (modified Lentz); converges fast for x > a + 1."""
    b = x + 1.0 - a
    c = 1.0 / _TINY
    d = 1.0 / b
    h = d
    for i in range(1, _ITERATIONS):
        an = -i * (i - a)
        b += 2.0
        d = an * d + b
        if abs(d) < _TINY:
            d = _TINY
        c = b + an / c
        if abs(c) < _TINY:
            c = _TINY
        d = 1.0 / d
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < _EPSILON:
            break
    return math.exp(_log_gamma_prefix(a, x)) * h


def upper_regularized_gamma(a: float, x: float) -> float:
    """Q(a, x) = Γ(a, x) / Γ(a), for a > 0 and x ≥ 0."""
    if a <= 0:
        raise ValueError("a must be positive")
    if x < 0:
        raise ValueError("x must not be negative")
    if x == 0:
        return 1.0
    if x < a + 1.0:
        return max(0.0, 1.0 - _lower_series(a, x))
    return min(1.0, _upper_fraction(a, x))


def chi2_sf(statistic: float, dof: int) -> float:
    """P(X ≥ statistic) for X chi-square distributed with `dof` degrees of freedom."""
    if dof < 1:
        raise ValueError("degrees of freedom must be at least 1")
    return upper_regularized_gamma(dof / 2.0, max(0.0, statistic) / 2.0)


@dataclass(frozen=True)
class ChiSquare:
    statistic: float
    dof: int
    p_value: float
    table: list[list[int]]
    # The smallest expected count of a cell (the usual rule of thumb wants at least 5).
    min_expected: float


def independence(table: Sequence[Sequence[int]]) -> ChiSquare:
    """Pearson's chi-square test of independence of a contingency table's rows and columns:
    Σ (observed − expected)² / expected with expected = row total × column total / N, and
    (rows − 1)(columns − 1) degrees of freedom."""
    rows = [list(row) for row in table]
    if len(rows) < 2 or len(rows[0]) < 2 or any(len(row) != len(rows[0]) for row in rows):
        raise ValueError("a contingency table needs at least 2 × 2 cells, in rows of one length")
    row_totals = [sum(row) for row in rows]
    column_totals = [sum(column) for column in zip(*rows, strict=True)]
    total = sum(row_totals)
    if total == 0 or 0 in row_totals or 0 in column_totals:
        raise ValueError("every row and column of the table needs a count")
    statistic = 0.0
    min_expected = math.inf
    for row, row_total in zip(rows, row_totals, strict=True):
        for observed, column_total in zip(row, column_totals, strict=True):
            expected = row_total * column_total / total
            min_expected = min(min_expected, expected)
            statistic += (observed - expected) ** 2 / expected
    dof = (len(rows) - 1) * (len(rows[0]) - 1)
    return ChiSquare(statistic, dof, chi2_sf(statistic, dof), rows, min_expected)


def buckets(count: int, groups: int) -> list[int]:
    """The group (0 … groups − 1) of each of `count` ordered items, in near-equal groups."""
    if groups < 1:
        raise ValueError("groups must be at least 1")
    return [index * groups // count for index in range(count)] if count else []


def position_table(join_order: Sequence[Hashable], drawn: Sequence[Any], groups: int) -> ChiSquare:
    """The pre-queue's test: places bucketed by join order (rows) against their drawn ranks
    bucketed in rank order (columns). A fair draw leaves the two independent.

    `join_order` lists the places in the order they joined, `drawn` their drawn ranks in the
    same order."""
    if len(join_order) != len(drawn):
        raise ValueError("one drawn rank per place")
    count = len(join_order)
    row_of = buckets(count, groups)
    by_rank = sorted(range(count), key=lambda i: drawn[i])
    column_of = [0] * count
    for position, index in enumerate(by_rank):
        column_of[index] = position * groups // count
    table = [[0] * groups for _ in range(groups)]
    for index in range(count):
        table[row_of[index]][column_of[index]] += 1
    return independence(table)


def groups_for(count: int, *, min_expected: float = 5.0, most: int = 10) -> int:
    """How many buckets k to use for `count` places so that every cell of the k × k table
    expects at least `min_expected` (0: too few places for the test)."""
    k = min(most, math.isqrt(int(count / min_expected)))
    return k if k >= 2 else 0
