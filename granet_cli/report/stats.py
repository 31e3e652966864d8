"""Statistics behind the report: t-based confidence intervals and Welch's t-test over seeds.

Everything here works on plain lists of floats (one value per seed) and uses scipy only for the
Student-t distribution.

``summary(values)``
    mean, sample std (ddof=1), n and the 95 % confidence interval of the mean,
    ``mean ± t_{0.975, n-1} * std / sqrt(n)``; no interval for n < 2.
``welch(a, b)``
    Welch's unequal-variance t-test of mean(a) - mean(b): difference, t, Welch-Satterthwaite
    degrees of freedom and the two-sided p-value; None when either side has fewer than two values.
    Both sides without variance: p = 0 when the means differ (the seeds leave no doubt), 1 when equal.
``holm(pvalues)``
    Holm's step-down adjustment of a family of p-values (every test of one table): controls the
    family-wise error rate at ALPHA without assuming independence.
``rank_columns(columns)``
    per column of a table, which cell is *significantly* best (Holm-adjusted p < ALPHA against every
    other cell, with a higher mean) and which cells are not significantly different from the best.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeGuard

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
    if se2 <= 0:  # no spread on either side: the seeds agree exactly, the difference is certain or nil
        diff = statistics.fmean(a) - statistics.fmean(b)
        return Welch(diff, math.copysign(math.inf, diff) if diff else 0.0, len(a) + len(b) - 2.0, 0.0 if diff else 1.0)
    from scipy.stats import t as student_t

    # computed here, not by scipy's ttest_ind: with one side's seeds all equal (variance exactly 0
    # above) scipy warns of "catastrophic cancellation" on the terminal, for a correct result
    df = se2**2 / ((va / len(a)) ** 2 / (len(a) - 1) + (vb / len(b)) ** 2 / (len(b) - 1))
    diff = statistics.fmean(a) - statistics.fmean(b)
    stat = diff / math.sqrt(se2)
    return Welch(diff, stat, df, float(2.0 * student_t.sf(abs(stat), df)))


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm-adjusted p-values, in the input's order: the i-th smallest is multiplied by (m - i + 1),
    made monotone, capped at 1. A hypothesis is rejected at ALPHA when its adjusted p < ALPHA."""
    m = len(pvalues)
    adjusted = [1.0] * m
    running = 0.0
    for rank, i in enumerate(sorted(range(m), key=lambda k: pvalues[k])):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted


@dataclass(frozen=True)
class ColumnRank:
    """Indices into the ranked values: ``best`` (significantly best, or None) and ``tied``
    (the highest mean and every cell not significantly different from it; empty when ``best`` is
    set or when no other cell could be tested against the highest). ``p`` holds the Holm-adjusted
    p-value of the highest cell against each other cell (by index)."""

    best: int | None
    tied: tuple[int, ...]
    p: dict[int, float] = field(default_factory=dict)


#: a test of one cell's samples against another's (Welch's t-test on per-seed values by default)
Tester = Callable[[Any, Any], "Welch | None"]


def _column_tests(
    values: Sequence[Any], sign: float, test: Tester | None, mean: Callable[[Any], float] | None
) -> tuple[int | None, dict[int, Welch | None]]:
    """The highest-mean cell of a column and a test of it against every other non-empty cell. The
    default: per-seed values, Welch's t-test, and a cell with one seed cannot be tested."""
    if test is None:
        cells = [(i, [float(x) for x in v if finite(x)]) for i, v in enumerate(values) if v]
        cells = [(i, v) for i, v in cells if v]
        if len(cells) < 2:
            return None, {}
        top_i, top_v = max(cells, key=lambda c: sign * statistics.fmean(c[1]))
        if len(top_v) < 2:
            return None, {}
        return top_i, {i: welch(top_v, v) for i, v in cells if i != top_i}
    assert mean is not None, "a custom test needs the cells' means"
    cells = [(i, v) for i, v in enumerate(values) if v is not None]
    if len(cells) < 2:
        return None, {}
    top_i, top_v = max(cells, key=lambda c: sign * mean(c[1]))
    return top_i, {i: test(top_v, v) for i, v in cells if i != top_i}


def rank_columns(
    columns: Sequence[Sequence[Any]],
    higher_is_better: bool = True,
    test: Tester | None = None,
    mean: Callable[[Any], float] | None = None,
) -> list[ColumnRank]:
    """Rank the cells of every column of one table (each cell a list of per-seed values, or None;
    with `test` and `mean`, any samples those two read, e.g. per-example correctness).

    A cell is *best* when its mean is the highest of its column and the test against every other
    non-empty cell of the column gives a Holm-adjusted p < ALPHA, the family being every test of the
    table. Otherwise the highest-mean cell and each cell not significantly different from it are
    *tied*. With Welch's test a cell with fewer than two seeds cannot be tested: it is never marked,
    and no other cell can be significantly better than it. A column with fewer than two non-empty
    cells: nothing is marked (there is nothing to compare)."""
    sign = 1.0 if higher_is_better else -1.0
    per_column = [_column_tests(col, sign, test, mean) for col in columns]
    family = [(c, i) for c, (_top, tests) in enumerate(per_column) for i, w in tests.items() if w is not None]
    adjusted = dict(zip(family, holm([per_column[c][1][i].p for c, i in family])))  # type: ignore[union-attr]
    ranks = []
    for c, (top, tests) in enumerate(per_column):
        if top is None:
            ranks.append(ColumnRank(None, ()))
            continue
        p = {i: adjusted[(c, i)] for i, w in tests.items() if w is not None}
        if all(w is not None and p[i] < ALPHA and sign * w.diff > 0 for i, w in tests.items()):
            ranks.append(ColumnRank(top, (), p))
            continue
        tied = [top] + [i for i, w in tests.items() if w is not None and p[i] >= ALPHA]
        # a "tie" of the top cell alone (every other cell untestable) says nothing: no marks
        ranks.append(ColumnRank(None, tuple(sorted(tied)) if len(tied) > 1 else (), p))
    return ranks


def rank_column(values: Sequence[Sequence[float] | None], higher_is_better: bool = True) -> ColumnRank:
    """`rank_columns` of a table with this one column (Holm over this column's tests)."""
    return rank_columns([values], higher_is_better)[0]


# ----------------------------------------------------------------------------- two sources of noise
#: bootstrap replicates: a stable 95 % percentile interval, p-values down to ~0.001
BOOTSTRAP_REPLICATES = 2000


def _example_weights(n: int, replicates: int, rng) -> Any:
    """Resampling the test set (replicates x n weights, each row summing to 1): Poisson(1) counts per
    example, the standard large-sample form of drawing n examples with replacement (and ~20x faster
    than multinomial draws at CIFAR's 10,000 examples)."""
    import numpy as np

    counts = rng.poisson(1.0, size=(replicates, n)).astype(np.float32)
    return counts / np.maximum(counts.sum(axis=1, keepdims=True), 1.0)


def bootstrap_accuracy(
    per_seed: Sequence[Any], replicates: int = BOOTSTRAP_REPLICATES, seed: int = 0
) -> tuple[float, float, float]:
    """Mean accuracy over seeds and its 95 % percentile interval from a two-level bootstrap: seeds
    resampled with replacement, and the (shared, finite) test set resampled with replacement. So the
    interval covers both the seed-to-seed spread and the test set's own sampling noise.
    `per_seed`: one boolean array per seed, which test examples that run got right (same order)."""
    import numpy as np

    bits = np.asarray([np.asarray(b, dtype=np.float32) for b in per_seed])  # seeds x examples
    k, n = bits.shape
    rng = np.random.default_rng(seed)
    acc = bits @ _example_weights(n, replicates, rng).T  # seeds x replicates: each seed on each resampled set
    pick = rng.integers(0, k, size=(replicates, k))
    boot = acc[pick, np.arange(replicates)[:, None]].mean(axis=1)
    lo, hi = np.quantile(boot, [(1 - CONFIDENCE) / 2, (1 + CONFIDENCE) / 2])
    return float(bits.mean()), float(lo), float(hi)


def paired_bootstrap(
    a: Sequence[Any], b: Sequence[Any], replicates: int = BOOTSTRAP_REPLICATES, seed: int = 0
) -> tuple[float, float]:
    """mean(a) - mean(b) and its two-sided bootstrap p-value, paired on the shared test set: each
    replicate resamples the test examples once for both sides (so the examples both get right or
    wrong cancel) and each side's seeds independently. p = 2 x the smaller tail share of the
    replicated differences on either side of zero (with the +1 correction), capped at 1."""
    import numpy as np

    xa = np.asarray([np.asarray(v, dtype=np.float32) for v in a])
    xb = np.asarray([np.asarray(v, dtype=np.float32) for v in b])
    if xa.shape[1] != xb.shape[1]:
        raise ValueError("paired_bootstrap: the two sides were evaluated on test sets of different sizes")
    rng = np.random.default_rng(seed)
    weights = _example_weights(xa.shape[1], replicates, rng).T
    acc_a, acc_b = xa @ weights, xb @ weights
    cols = np.arange(replicates)[:, None]
    da = acc_a[rng.integers(0, len(xa), size=(replicates, len(xa))), cols].mean(axis=1)
    db = acc_b[rng.integers(0, len(xb), size=(replicates, len(xb))), cols].mean(axis=1)
    diff = da - db
    tail = min((diff <= 0).sum(), (diff >= 0).sum())
    return float(xa.mean() - xb.mean()), float(min(1.0, 2 * (tail + 1) / (replicates + 1)))


def paired_test(a: Sequence[Any], b: Sequence[Any]) -> Welch:
    """`paired_bootstrap` as a `Tester` (t and df do not apply: NaN)."""
    diff, p = paired_bootstrap(a, b)
    return Welch(diff, math.nan, math.nan, p)
