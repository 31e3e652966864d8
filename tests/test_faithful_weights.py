"""Faithful weights: masks, weights and optimizer state equal an oracle of the reference's update.

The oracle below is written from the reference's published semantics (GraNet's `Masking`:
`step` = optimizer step, `apply_mask`, then at an event `pruning` -- global magnitude, applied at
once -- and `truncate_weights` -- sort-based magnitude drop of `ceil(f * active)`, growth among the
positions inactive after the drop by top |gradient|, then `apply_mask`, which zeroes only what ends
inactive). It shares no code with `granet_cli.sparse`. Where the reference's own code deviates, the
oracle follows DESIGN's three deliberate differences: a global prune keeps exactly
`round(density * total)`; a closing event at tf reaches `final`; growth picks only inactive
positions. Ties break by position (stable sorts), as the implementation documents.

A selection the oracle cannot reproduce (random growth, momentum growth, redistribution) is taken
from the result, checked to be a legal choice (among the candidates, the right count), and the
weights and optimizer state are still checked against the oracle's rule for it.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from granet_cli.sparse.masking import Masking
from granet_cli.sparse.methods import SparseConfig

from .oracle import keep_largest, keep_smallest

SPE, EPOCHS, DT = 5, 6, 2  # 30 steps, an update every 2
T0_EPOCH, TF_EPOCH = 1, 4
INIT_DENSITY, FINAL_DENSITY = 0.5, 0.2


def net(dead: bool) -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(20, 32), nn.ReLU(), nn.Linear(32, 24), nn.ReLU(), nn.Linear(24, 5))
    if dead:  # a third of the hidden units never fire: their weights' gradients are exactly zero
        with torch.no_grad():
            model[0].bias[:10] = -1e3
            model[2].bias[:8] = -1e3
    return model


def optimizer_for(model: nn.Module, kind: str) -> torch.optim.Optimizer:
    if kind == "sgd":
        return torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    return torch.optim.Adam(model.parameters(), lr=1e-2)


def weights_of(model: nn.Module) -> list[nn.Parameter]:
    return [m.weight for m in model.modules() if isinstance(m, nn.Linear)]


def states_of(opt: torch.optim.Optimizer, w: torch.Tensor) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in opt.state.get(w, {}).items() if torch.is_tensor(v) and v.shape == w.shape}


# ----------------------------------------------------------------------------- the oracle
def cubic_density(t: int, init: float) -> float | None:
    """The schedule's density at step t if t is a pruning event, else None."""
    t0, tf = T0_EPOCH * SPE, TF_EPOCH * SPE
    if t == tf:
        return FINAL_DENSITY
    if t % DT == 0 and t0 <= t < tf:
        return FINAL_DENSITY + (init - FINAL_DENSITY) * (1 - (t - t0) / (tf - t0)) ** 3
    return None


def cosine_fraction(t: int, start: float = 0.5, end: float = 0.005) -> float:
    return end + (start - end) * (1 + math.cos(math.pi * t / (SPE * EPOCHS))) / 2


def oracle_prune(w: list[torch.Tensor], m: list[torch.Tensor], density: float) -> list[torch.Tensor]:
    """Global magnitude prune to exactly round(density * total) weights."""
    total = sum(x.numel() for x in w)
    flat_w = torch.cat([x.abs().reshape(-1) for x in w])
    flat_m = torch.cat([x.reshape(-1) for x in m])
    keep = min(round(density * total), int(flat_m.sum()))
    kept = keep_largest(flat_w, flat_m, keep)
    return [part.view_as(x) for part, x in zip(kept.split([x.numel() for x in w]), w)]


def masking_for(model, optimizer, method: str, **kw) -> Masking:
    """The test schedule: events every DT steps from T0_EPOCH, pruning until TF_EPOCH."""
    if method.startswith("granet"):
        kw["init_density"] = INIT_DENSITY
    cfg = SparseConfig(
        method=method,
        final_density=FINAL_DENSITY,
        update_frequency=DT,
        init_prune_epoch=T0_EPOCH,
        final_prune_epoch=TF_EPOCH,
        **kw,
    )
    return Masking(model, optimizer, cfg, steps_per_epoch=SPE, epochs=EPOCHS)


def trained_steps(model: nn.Module, optimizer: torch.optim.Optimizer, masking: Masking, seed: int):
    """Every training step of the test schedule: after `optimizer.step()`, the weights, optimizer
    state, masks and gradients as they were, then `masking.step()`'s record. Yields (t, params, w0, s0,
    m0, grads, record)."""
    g = torch.Generator().manual_seed(seed)
    for t in range(1, SPE * EPOCHS + 1):
        x, y = torch.randn(16, 20, generator=g), torch.randint(0, 5, (16,), generator=g)
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
        params = weights_of(model)
        w0 = [p.detach().clone() for p in params]
        s0 = [states_of(optimizer, p) for p in params]
        m0 = [layer.mask.clone() for layer in masking.layers]
        grads = [p.grad.detach().clone() for p in params]
        yield t, params, w0, s0, m0, grads, masking.step()


class Oracle:
    """Expected masks, weights and optimizer state after one `masking.step()` at step t."""

    def __init__(self, method: str, growth: str):
        self.method, self.growth = method, growth
        self.gradual = method in ("granet", "gmp")
        self.drop_and_grow = method in ("granet", "rigl", "set")
        self.init_density = 1.0 if method == "gmp" else INIT_DENSITY  # gmp starts dense

    def step(self, t, w0, s0, m0, grads, actual_masks):
        # the reference: optimizer.step(); apply_mask() -- inactive weights and momentum are zero
        w = [x * m for x, m in zip(w0, m0)]
        s = [{k: v * m for k, v in st.items()} for st, m in zip(s0, m0)]
        m = [x.clone() for x in m0]
        density = cubic_density(t, self.init_density) if self.gradual else None
        if density is not None:  # pruning(): the new masks applied at once
            m = oracle_prune(w, m, density)
            w = [x * mm for x, mm in zip(w, m)]
            s = [{k: v * mm for k, v in st.items()} for st, mm in zip(s, m)]
        dng = self.drop_and_grow and t % DT == 0 and (not self.gradual or t >= T0_EPOCH * SPE)
        if not dng:
            return m, w, s, None
        f = cosine_fraction(t)
        new_masks = []
        counts = {"dropped": 0, "grown": 0, "reselected": 0}
        for i, (wi, mi) in enumerate(zip(w, m)):
            n_remove = math.ceil(f * int(mi.sum()))
            drop = keep_smallest(wi.abs(), mi, n_remove)
            survivors = mi & ~drop
            candidates = ~survivors
            if self.growth == "gradient":
                grown = keep_largest(grads[i].abs(), candidates, n_remove)
            else:  # a choice the oracle cannot reproduce: take it from the result, check it is legal
                grown = actual_masks[i] & ~survivors
                assert int(grown.sum()) == n_remove and not torch.any(grown & survivors)
            new_masks.append(survivors | grown)
            counts["dropped"] += n_remove
            counts["grown"] += int((grown & ~mi).sum())  # inactive before this update (after the prune)
            counts["reselected"] += int((grown & drop).sum())
        # truncate_weights ends with apply_mask(): only what ends inactive becomes zero
        w = [x * mm for x, mm in zip(w, new_masks)]
        s = [{k: v * mm for k, v in st.items()} for st, mm in zip(s, new_masks)]
        return new_masks, w, s, counts


CASES = [
    (method, growth, dead, opt)
    for method, growth in [("granet", "gradient"), ("rigl", "gradient"), ("set", "random"), ("gmp", "gradient")]
    for dead in (False, True)
    for opt in ("sgd", "adam")
]


@pytest.mark.parametrize("method,growth,dead,opt", CASES)
def test_masks_weights_and_optimizer_state_equal_the_reference_oracle(method, growth, dead, opt):
    model = net(dead)
    optimizer = optimizer_for(model, opt)
    masking = masking_for(model, optimizer, method)
    oracle = Oracle(method, growth)
    events = reselected_seen = 0
    for t, params, w0, s0, m0, grads, record in trained_steps(model, optimizer, masking, seed=1):
        actual_masks = [layer.mask.clone() for layer in masking.layers]
        want_m, want_w, want_s, want_counts = oracle.step(t, w0, s0, m0, grads, actual_masks)
        for i, p in enumerate(params):
            assert torch.equal(actual_masks[i], want_m[i]), f"step {t} layer {i}: masks differ"
            assert torch.equal(p.detach(), want_w[i]), f"step {t} layer {i}: weights differ"
            got_s = states_of(optimizer, p)
            assert got_s.keys() == want_s[i].keys()
            for key in got_s:
                assert torch.equal(got_s[key], want_s[i][key]), f"step {t} layer {i}: {key} differs"
        if want_counts is not None:
            events += 1
            assert record is not None
            assert {k: record[k] for k in want_counts} == want_counts
            reselected_seen += want_counts["reselected"]
    assert events > 0 or not oracle.drop_and_grow
    if oracle.drop_and_grow:
        assert reselected_seen > 0  # the case the old code got wrong actually happens here


# ----------------------------------------------------------------------------- the invariant, every rule
def after_prune(method: str, t: int, w, m, classifier: int) -> list[torch.Tensor]:
    """The masks the schedule's prune leaves at step t (the masks as they were, if no event)."""
    if method not in ("granet", "granet_uniform"):
        return m
    density = cubic_density(t, INIT_DENSITY)
    if density is None:
        return m
    if method == "granet":
        return oracle_prune(w, m, density)
    out = []
    for i, (wi, mi) in enumerate(zip(w, m)):  # per layer; the classifier keeps at least 20 %
        d = max(density, 0.2) if i == classifier else density
        out.append(keep_largest(wi.abs(), mi, min(round(d * wi.numel()), int(mi.sum()))))
    return out


INVARIANT_CASES = [
    (method, growth, "none")
    for method in ("granet", "granet_uniform", "rigl", "set")
    for growth in ("gradient", "momentum", "random", "momentum_neuron")
] + [("rigl", "gradient", "magnitude"), ("rigl", "momentum", "nonzeros"), ("granet", "gradient", "nonzeros")]


@pytest.mark.parametrize("opt", ["sgd", "adam"])
@pytest.mark.parametrize("method,growth,redistribution", INVARIANT_CASES)
def test_kept_connections_keep_value_and_state_new_ones_start_at_zero(method, growth, redistribution, opt):
    """After every drop-and-grow: a weight active before (after the schedule's prune, for GraNet) and
    after keeps its value and optimizer state; a new connection is zero, and so is its state."""
    model = net(dead=True)
    optimizer = optimizer_for(model, opt)
    masking = masking_for(model, optimizer, method, growth=growth, redistribution=redistribution)
    kept_total = new_total = events = 0
    for t, params, w0, s0, m0, _grads, record in trained_steps(model, optimizer, masking, seed=2):
        if not record or not (record["dropped"] or record["grown"]):
            continue
        events += 1
        before = after_prune(method, t, [w * m for w, m in zip(w0, m0)], m0, classifier=len(params) - 1)
        grown = 0
        for i, p in enumerate(params):
            after = masking.layers[i].mask
            kept, new = before[i] & after, after & ~before[i]
            assert torch.equal(p.detach()[kept], w0[i][kept]), f"step {t} layer {i}: a kept weight changed"
            assert torch.all(p.detach()[new] == 0), f"step {t} layer {i}: a new connection is not zero"
            assert torch.all(p.detach()[~after] == 0)
            for key, value in states_of(optimizer, p).items():
                assert torch.equal(value[kept], s0[i][key][kept]), f"step {t}: {key} of a kept weight changed"
                assert torch.all(value[new] == 0) and torch.all(value[~after] == 0)
            kept_total += int(kept.sum())
            new_total += int(new.sum())
            grown += int(new.sum())
        assert record["grown"] == grown  # grown counts the new connections, recounted
    assert events >= 5 and kept_total > 0 and new_total > 0


def test_prune_and_grow_init_regrows_at_zero_and_keeps_the_rest():
    """prune_and_grow_*: what the one-shot prune keeps holds its dense-init value; what is regrown by
    gradient starts at zero (the reference zeroes the pruned weights before it regrows)."""
    for init in ("prune_and_grow_uniform", "prune_and_grow_global"):
        model = net(dead=False)
        dense = [p.detach().clone() for p in weights_of(model)]
        grads = {f"{i}.weight": torch.randn_like(p) for i, p in zip((0, 2, 4), weights_of(model))}
        cfg = SparseConfig(method="rigl", sparse_init=init, init_prune_fraction=0.5, final_density=0.5)
        masking = Masking(model, optimizer_for(model, "sgd"), cfg, steps_per_epoch=SPE, epochs=1, init_grads=grads)
        for layer, w, p in zip(masking.layers, dense, weights_of(model)):
            active = layer.mask
            kept = active & (p.detach() != 0)
            assert torch.equal(p.detach()[kept], w[kept])
            regrown = active & (p.detach() == 0)
            assert int(regrown.sum()) > 0
            assert torch.all(p.detach()[~active] == 0)
