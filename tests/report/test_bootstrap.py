"""The two-level bootstrap over seeds and test examples, against closed-form expectations."""

import math

import numpy as np
import pytest

from granet_cli.report.stats import bootstrap_accuracy, paired_bootstrap


def test_one_repeated_seed_gives_the_binomial_interval_of_the_test_set():
    """With no seed spread left, only the finite test set's noise remains: the interval is the
    binomial one, p +- 1.96 sqrt(p (1 - p) / n) (normal approximation), within a few percent."""
    n, p = 450, 0.97
    bits = np.zeros(n, dtype=bool)
    bits[: round(p * n)] = True
    mean, lo, hi = bootstrap_accuracy([bits, bits, bits])
    half = 1.96 * math.sqrt(p * (1 - p) / n)
    assert mean == pytest.approx(round(p * n) / n)
    assert (hi - lo) / 2 == pytest.approx(half, rel=0.12)
    assert lo < mean < hi


def test_seed_spread_widens_the_interval_beyond_the_test_set_noise():
    rng = np.random.default_rng(0)
    n = 2000
    same = rng.random(n) < 0.9
    spread = [rng.random(n) < q for q in (0.86, 0.90, 0.94)]  # seeds 4 points apart
    _, lo1, hi1 = bootstrap_accuracy([same, same, same])
    _, lo2, hi2 = bootstrap_accuracy(spread)
    assert hi2 - lo2 > 1.5 * (hi1 - lo1)


def test_paired_comparison_uses_the_shared_test_set():
    """Seeds that agree (no seed noise), and b = a with 10 more test examples wrong: 2.2 points
    apart. Unpaired, two binomial samples of 450 at ~97 % could not tell them apart (z ~ 2); paired
    on the same examples the difference is certain."""
    rng = np.random.default_rng(3)
    a = [rng.random(450) < 0.97] * 3
    b = []
    for bits in a:
        worse = bits.copy()
        worse[np.flatnonzero(bits)[:10]] = False
        b.append(worse)
    diff, p = paired_bootstrap(a, b)
    assert diff == pytest.approx(10 / 450)
    unpaired_z = diff / math.sqrt(2 * 0.97 * 0.03 / 450)
    assert unpaired_z < 2.2 and p < 0.01
    assert paired_bootstrap(a, a) == (0.0, 1.0)
    with pytest.raises(ValueError, match="different sizes"):
        paired_bootstrap(a, [bits[:100] for bits in a])
