"""Cubic gradual schedule and the cosine drop-fraction decay, against the formulas."""

import math

import pytest

from granet_cli.sparse.schedule import CubicSchedule, cosine_drop_fraction


def test_events_and_values_at_every_event():
    init, final, t0, tf, dT = 0.5, 0.05, 100, 1100, 100
    s = CubicSchedule(init, final, t0, tf, dT)
    events = s.events()
    n = (tf - t0) // dT
    assert events == [t0 + i * dT for i in range(n)] + [tf]
    for t in events:
        want = final + (init - final) * (1 - (t - t0) / (tf - t0)) ** 3
        assert s.density_at(t) == pytest.approx(want, abs=1e-12)
        assert s.is_event(t)
    assert s.density_at(tf) == final
    assert all(s.density_at(t) == final for t in (tf + 1, tf + 5000))
    assert not s.is_event(tf + dT) and not s.is_event(t0 + dT // 2)


def test_events_start_at_first_multiple_and_closing_event_off_grid():
    s = CubicSchedule(1.0, 0.1, 0, 250, 100)
    assert s.events() == [100, 200, 250]
    assert not s.is_event(0)


def test_schedule_is_monotone_non_increasing():
    s = CubicSchedule(0.7, 0.02, 0, 5000, 37)
    values = [s.density_at(t) for t in range(0, 5100, 7)]
    assert all(a >= b - 1e-15 for a, b in zip(values, values[1:]))


@pytest.mark.parametrize("step", [0, 1, 250, 500, 999, 1000])
def test_cosine_decay_formula(step):
    start, end, total = 0.5, 0.005, 1000
    want = end + (start - end) * (1 + math.cos(math.pi * step / total)) / 2
    assert cosine_drop_fraction(step, total, start, end) == pytest.approx(want)


def test_cosine_decay_matches_torch_cosine_annealing():
    import torch

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.5)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=200, eta_min=0.005)
    for step in range(1, 201):
        opt.step()
        sched.step()
        assert cosine_drop_fraction(step, 200, 0.5, 0.005) == pytest.approx(opt.param_groups[0]["lr"], abs=1e-9)
