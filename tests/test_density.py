"""ERK / ER / uniform densities against an independent re-derivation in the test."""

import math

import pytest

from granet_cli.sparse.density import erk_densities, kept_count, layer_densities


def _solve_erk(shapes, density, power=1.0, use=lambda s: s):
    """Independent ERK: bisection on eps with dense capping (not the fixing loop of the code)."""
    numel = {n: math.prod(s) for n, s in shapes.items()}
    raw = {n: (sum(use(s)) / math.prod(use(s))) ** power for n, s in shapes.items()}
    target = density * sum(numel.values())
    lo, hi = 0.0, 1e9
    for _ in range(300):
        eps = (lo + hi) / 2
        kept = sum(min(1.0, eps * raw[n]) * numel[n] for n in shapes)
        lo, hi = (eps, hi) if kept < target else (lo, eps)
    return {n: min(1.0, eps * raw[n]) for n in shapes}


SHAPES = {
    "conv1": (64, 3, 3, 3),
    "conv2": (128, 64, 3, 3),
    "conv3": (256, 128, 3, 3),
    "fc": (10, 256),
}


@pytest.mark.parametrize("density", [0.05, 0.1, 0.2, 0.5])
def test_erk_matches_independent_solution_and_budget(density):
    got = erk_densities(SHAPES, density)
    want = _solve_erk(SHAPES, density)
    for name in SHAPES:
        assert got[name] == pytest.approx(want[name], rel=1e-6, abs=1e-9)
    total = sum(math.prod(s) for s in SHAPES.values())
    kept = sum(got[n] * math.prod(s) for n, s in SHAPES.items())
    assert kept == pytest.approx(density * total, rel=1e-9)


def test_erk_forces_small_layers_dense_repeatedly():
    # conv1 (1728 weights) and fc (2560) have large raw scores: at density 0.5 both exceed 1
    got = erk_densities(SHAPES, 0.5)
    assert got["conv1"] == 1.0 and got["fc"] == 1.0
    assert all(0 < got[n] < 1 for n in ("conv2", "conv3"))
    # the sparse layers still obey the ERK ratio eps * raw
    r2 = sum(SHAPES["conv2"]) / math.prod(SHAPES["conv2"])
    r3 = sum(SHAPES["conv3"]) / math.prod(SHAPES["conv3"])
    assert got["conv2"] / got["conv3"] == pytest.approx(r2 / r3)


def test_erk_power_scale_and_er_mode():
    got = erk_densities(SHAPES, 0.1, power_scale=0.5)
    want = _solve_erk(SHAPES, 0.1, power=0.5)
    assert all(got[n] == pytest.approx(want[n], rel=1e-6) for n in SHAPES)
    er = erk_densities(SHAPES, 0.1, mode="ER")
    want_er = _solve_erk(SHAPES, 0.1, use=lambda s: s[:2])
    assert all(er[n] == pytest.approx(want_er[n], rel=1e-6) for n in SHAPES)


def test_uniform_and_dense_and_errors():
    assert set(layer_densities(SHAPES, 0.3, "uniform").values()) == {0.3}
    assert set(erk_densities(SHAPES, 1.0).values()) == {1.0}
    with pytest.raises(ValueError):
        erk_densities(SHAPES, 0.0)
    with pytest.raises(ValueError):
        layer_densities(SHAPES, 0.1, "bogus")


def test_kept_count_rounds_and_clamps():
    assert kept_count(0.1, 1005) == round(100.5)
    assert kept_count(0.0, 10) == 0
    assert kept_count(1.0, 10) == 10
