"""Statistics behind the report: t-based confidence intervals and Welch's t-test over seeds.

Everything here works on plain lists of floats (one value per seed) and uses scipy only for the
Student-t distribution and ``scipy.stats.ttest_ind(equal_var=False)``.

``summary(values)``
    mean, sample std (ddof=1), n and the 95 % confidence interval of the mean,
    ``mean ± t_{0.975, n-1} * std / sqrt(n)``; no interval for n < 2.
``welch(a, b)``
    Welch's unequal-variance t-test of mean(a) - mean(b): difference, t, Welch-Satterthwaite
    degrees of freedom and the two-sided p-value; None when either side has fewer than two values
    or both sides have zero variance (the test is undefined there).
``rank_column(cells)``
    which cell of a table column is *significantly* best (p < ALPHA against every other cell,
    with a higher mean) and which cells are statistically tied with the highest mean.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeGuard

ALPHA = 0.05
CONFIDENCE = 0.95


def finite(x: object) -> TypeGuard[float]:
    """A real number that is neither NaN nor infinite (booleans are not numbers here)."""
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


@dataclass(frozen=True)
class Summary:
    """Aggregate of one cell's seeds; ``ci95`` is the half-width of the 95 % interval (None if n < 2)."""

    mean: float
    std: float
    n: int
    ci95: float | None

    @property
    def interval(self) -> tuple[float, float] | None:
        if self.ci95 is None:
            return None
        return (self.mean - self.ci95, self.mean + self.ci95)


def t_quantile(df: float, confidence: float = CONFIDENCE) -> float:
    """The two-sided critical value t_{(1+confidence)/2, df}."""
    from scipy.stats import t

    return float(t.ppf(0.5 + confidence / 2, df))


def summary(values: Sequence[float | None]) -> Summary | None:
    vals = [float(v) for v in values if finite(v)]
    if not vals:
        return None
    n = len(vals)
    mean = statistics.fmean(vals)
    if n < 2:
        return Summary(mean, 0.0, 1, None)
    std = statistics.stdev(vals)
    return Summary(mean, std, n, t_quantile(n - 1) * std / math.sqrt(n))


@dataclass(frozen=True)
class Welch:
    """Welch's t-test of mean(a) - mean(b)."""

    diff: float
    t: float
    df: float
    p: float

    @property
    def significant(self) -> bool:
        return self.p < ALPHA


def welch(a: Sequence[float], b: Sequence[float]) -> Welch | None:
    a = [float(v) for v in a if finite(v)]
    b = [float(v) for v in b if finite(v)]
    if len(a) < 2 or len(b) < 2:
        return None
    va, vb = statistics.variance(a), statistics.variance(b)
    se2 = va / len(a) + vb / len(b)
    if se2 <= 0:
        return None
    from scipy.stats import ttest_ind

    res = ttest_ind(a, b, equal_var=False)
    df = se2**2 / ((va / len(a)) ** 2 / (len(a) - 1) + (vb / len(b)) ** 2 / (len(b) - 1))
    return Welch(statistics.fmean(a) - statistics.fmean(b), float(res.statistic), float(df), float(res.pvalue))


@dataclass(frozen=True)
class ColumnRank:
    """Indices into the ranked values: ``best`` (significantly best, or None) and ``tied``
    (the highest mean and every cell not significantly below it; empty when ``best`` is set or
    when no other cell could be tested against the highest)."""

    best: int | None
    tied: tuple[int, ...]


def rank_column(values: Sequence[Sequence[float] | None], higher_is_better: bool = True) -> ColumnRank:
    """Rank the cells of one column (each a list of per-seed values, or None for an empty cell).

    A cell is *best* when its mean is the highest and Welch's test gives p < ALPHA against every
    other non-empty cell.  Otherwise the highest-mean cell and each cell whose difference to it is
    not significant are *tied*.  A cell with fewer than two seeds cannot be tested: it is never
    marked, and no other cell can be significantly better than it.  Fewer than two non-empty
    cells: nothing is marked (there is nothing to compare)."""
    cells = [(i, [float(x) for x in v if finite(x)]) for i, v in enumerate(values) if v]
    cells = [(i, v) for i, v in cells if v]
    if len(cells) < 2:
        return ColumnRank(None, ())
    sign = 1.0 if higher_is_better else -1.0
    top_i, top_v = max(cells, key=lambda c: sign * statistics.fmean(c[1]))
    if len(top_v) < 2:
        return ColumnRank(None, ())
    tests = {i: welch(top_v, v) for i, v in cells if i != top_i}
    if all(w is not None and w.significant and sign * w.diff > 0 for w in tests.values()):
        return ColumnRank(top_i, ())
    tied = [top_i] + [i for i, w in tests.items() if w is not None and not w.significant]
    # a "tie" of the top cell alone (every other cell untestable) says nothing: no marks
    return ColumnRank(None, tuple(sorted(tied)) if len(tied) > 1 else ())
