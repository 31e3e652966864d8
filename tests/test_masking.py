"""The sparse core's invariants, each checked against numbers computed in the test."""

import math

import pytest
import torch
from torch import nn

from granet_cli.sparse import rules
from granet_cli.sparse.criteria import top_k_mask
from granet_cli.sparse.density import erk_densities
from granet_cli.sparse.masking import Masking
from granet_cli.sparse.methods import SparseConfig
from granet_cli.sparse.rules import Selection, allocate


def small_net():
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(4),
        nn.Flatten(),
        nn.Linear(32 * 16, 64),
        nn.ReLU(),
        nn.Linear(64, 10),
    )


def make(method="granet", opt="sgd", spe=10, epochs=6, seed=0, **kw):
    torch.manual_seed(seed)
    model = small_net()
    if opt == "sgd":
        optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    else:
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=5e-4)
    kw.setdefault("final_density", 0.1)
    kw.setdefault("update_frequency", 5)
    cfg = SparseConfig(method=method, **kw)
    x = torch.randn(16, 1, 8, 8)
    y = torch.randint(0, 10, (16,))
    masking = Masking(model, optimizer, cfg, steps_per_epoch=spe, epochs=epochs, sample_input=x)
    return model, optimizer, masking, x, y


def train_step(model, optimizer, x, y):
    optimizer.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()
    optimizer.step()


def snapshot(masking):
    return {l.name: l.mask.clone() for l in masking.layers}


# --------------------------------------------------------------------------- initial masks
@pytest.mark.parametrize("density", [0.05, 0.1, 0.3])
def test_erk_init_exact_counts(density):
    model, _, masking, *_ = make("rigl", final_density=density)
    shapes = {l.name: tuple(l.weight.shape) for l in masking.layers}
    want = erk_densities(shapes, density)
    total = sum(math.prod(s) for s in shapes.values())
    kept = 0
    for layer in masking.layers:
        n = int(layer.mask.sum())
        assert n == round(want[layer.name] * layer.weight.numel())
        assert layer.mask.dtype == torch.bool
        assert dict(layer.module.named_buffers())["weight_mask"] is layer.mask  # a registered buffer
        assert torch.all(layer.weight[~layer.mask] == 0)
        kept += n
    assert abs(kept - round(density * total)) <= len(masking.layers)


def test_masked_layers_are_conv_and_linear_weights_only():
    _, _, masking, *_ = make("static")
    assert [l.name for l in masking.layers] == ["0.weight", "3.weight", "7.weight", "9.weight"]
    _, _, masking, *_ = make("static", dense_first_layer=True, dense_classifier=True)
    assert [l.name for l in masking.layers] == ["3.weight", "7.weight"]


def test_uniform_init_and_dense_starts():
    _, _, masking, *_ = make("granet_uniform")
    for layer in masking.layers:
        assert int(layer.mask.sum()) == round(0.5 * layer.weight.numel())
    for method in ("gmp", "gmp_uniform", "dense"):
        _, _, masking, *_ = make(method)
        assert masking.density() == 1.0


def test_prune_uniform_and_global_inits():
    torch.manual_seed(1)
    rate = 0.3
    model = small_net()
    dense = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    cfg = SparseConfig(method="granet", sparse_init="prune_uniform", init_prune_fraction=rate)
    masking = Masking(model, opt, cfg, steps_per_epoch=10, epochs=2)
    for layer in masking.layers:
        numel = layer.weight.numel()
        assert int(layer.mask.sum()) == numel - math.ceil(rate * numel)
        w = dense[layer.name].abs()
        assert w[layer.mask].min() >= w[~layer.mask].max()

    model = small_net()
    model.load_state_dict({**dense, **{k: v for k, v in model.state_dict().items() if k not in dense}})
    cfg = SparseConfig(method="granet", sparse_init="prune_global", init_prune_fraction=rate)
    masking = Masking(model, torch.optim.SGD(model.parameters(), lr=0.1), cfg, steps_per_epoch=10, epochs=2)
    total = sum(l.weight.numel() for l in masking.layers)
    assert sum(int(l.mask.sum()) for l in masking.layers) == int(total * (1 - rate))
    kept = torch.cat([dense[l.name].abs()[l.mask] for l in masking.layers])
    gone = torch.cat([dense[l.name].abs()[~l.mask] for l in masking.layers])
    assert kept.min() >= gone.max()


def test_prune_and_grow_inits_regrow_pruned_weights_at_zero():
    torch.manual_seed(2)
    model = small_net()
    x, y = torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,))
    nn.functional.cross_entropy(model(x), y).backward()
    dense = {n: p.detach().clone() for n, p in model.named_parameters()}
    for mode in ("prune_and_grow_uniform", "prune_and_grow_global"):
        model.load_state_dict({**model.state_dict(), **dense})
        cfg = SparseConfig(method="granet", sparse_init=mode, init_prune_fraction=0.4)
        masking = Masking(model, torch.optim.SGD(model.parameters(), lr=0.1), cfg, steps_per_epoch=5, epochs=1)
        # as in the reference: as many weights regrow (by |grad|) as were pruned, and they restart at zero
        assert masking.density() == 1.0
        for layer in masking.layers:
            zeroed = (layer.weight == 0) & (dense[layer.name] != 0)
            assert int(zeroed.sum()) == math.ceil(0.4 * layer.weight.numel()) or mode.endswith("global")
        n_zeroed = sum(int(((l.weight == 0) & (dense[l.name] != 0)).sum()) for l in masking.layers)
        total = sum(l.weight.numel() for l in masking.layers)
        if mode.endswith("global"):
            assert n_zeroed == total - int(total * 0.6)


def test_structured_init_prunes_whole_output_channels():
    torch.manual_seed(3)
    model = small_net()
    cfg = SparseConfig(method="granet", sparse_init="prune_structured", init_prune_fraction=0.25)
    masking = Masking(model, torch.optim.SGD(model.parameters(), lr=0.1), cfg, steps_per_epoch=5, epochs=1)
    for layer in masking.layers:
        per_channel = layer.mask.flatten(1)
        full = per_channel.all(1)
        empty = ~per_channel.any(1)
        assert torch.all(full | empty)  # no partially pruned channel
        out = layer.weight.shape[0]
        if layer.name == masking.classifier:
            assert int(empty.sum()) == 0
        else:
            assert int(empty.sum()) == math.ceil(0.25 * out)
            norms = layer.weight.detach().abs().flatten(1).sum(1)
            assert torch.all(norms[empty] == 0)


def test_gradient_init_without_gradient_is_a_clear_error():
    model = small_net()
    cfg = SparseConfig(method="granet", sparse_init="prune_and_grow_uniform")
    with pytest.raises(ValueError, match="needs a gradient"):
        Masking(model, torch.optim.SGD(model.parameters(), lr=0.1), cfg, steps_per_epoch=5, epochs=1)


# --------------------------------------------------------------------------- training-time updates
@pytest.mark.parametrize("method", ["rigl", "set", "granet"])
def test_drop_and_grow_keeps_layer_counts_and_follows_cosine(method):
    spe, epochs, dT = 10, 6, 5
    model, opt, masking, x, y = make(method, spe=spe, epochs=epochs, update_frequency=dT, final_prune_epoch=3)
    total_steps = spe * epochs
    tf = 3 * spe
    for t in range(1, total_steps + 1):
        train_step(model, opt, x, y)
        before = snapshot(masking)
        counts_before = {n: int(m.sum()) for n, m in before.items()}
        record = masking.step()
        if t % dT:
            assert record is None or (method == "granet" and t == tf)
            continue
        f = 0.005 + (0.5 - 0.005) * (1 + math.cos(math.pi * t / total_steps)) / 2
        assert masking.drop_fraction == pytest.approx(f)
        after = snapshot(masking)
        if method == "granet" and t <= tf:
            continue  # pruning changed counts first; covered by the schedule test
        expected_drop = sum(math.ceil(f * c) for c in counts_before.values())
        new_total = sum(int((after[n] & ~before[n]).sum()) for n in after)
        assert record["grown"] == new_total  # grown counts only connections inactive before
        assert record["dropped"] == expected_drop == record["grown"] + record["reselected"]
        for layer in masking.layers:
            assert int(after[layer.name].sum()) == counts_before[layer.name]  # grown == dropped per layer
            new = after[layer.name] & ~before[layer.name]
            assert torch.all(layer.weight[new] == 0)  # regrown weights start at zero
            assert int(new.sum()) <= math.ceil(f * counts_before[layer.name])


def test_gradient_growth_picks_largest_gradients_among_inactive():
    model, opt, masking, x, y = make("rigl", update_frequency=1, spe=100, epochs=1)
    train_step(model, opt, x, y)
    layer = masking.layers[1]
    before = layer.mask.clone()
    w_before = layer.weight.detach().clone()
    grad = layer.weight.grad.detach().clone()
    masking.step()
    after = layer.mask
    n_active = int(before.sum())
    f = masking.drop_fraction
    n = math.ceil(f * n_active)
    # independent drop: the n smallest |w| among active (ties are measure-zero here)
    act_vals = w_before.abs()[before]
    thr = act_vals.sort().values[n - 1]
    dropped = before & (w_before.abs() <= thr)
    survivors = before & ~dropped
    cand_grad = grad.abs()[~survivors]
    grow_thr = cand_grad.sort(descending=True).values[n - 1]
    expected = survivors | (~survivors & (grad.abs() >= grow_thr))
    assert torch.equal(after, expected)


def test_masked_weights_and_momentum_stay_zero_with_weight_decay():
    for opt_name in ("sgd", "adam"):
        model, opt, masking, x, y = make("static", opt=opt_name)
        for _ in range(20):
            train_step(model, opt, x, y)
            masking.step()
        for layer in masking.layers:
            assert torch.all(layer.weight[~layer.mask] == 0)
            for state in opt.state[layer.weight].values():
                if torch.is_tensor(state) and state.shape == layer.weight.shape:
                    assert torch.all(state[~layer.mask] == 0)
            # the gradient of inactive weights is the dense one (no weight*mask in forward)
            assert layer.weight.grad[~layer.mask].abs().sum() > 0


@pytest.mark.parametrize("method", ["granet", "gmp"])
def test_global_schedule_hits_every_target_and_final_exactly(method):
    spe, epochs, dT = 10, 8, 4
    model, opt, masking, x, y = make(
        method, spe=spe, epochs=epochs, update_frequency=dT, init_prune_epoch=1, final_prune_epoch=5, final_density=0.05
    )
    total = masking.total
    init = 0.5 if method == "granet" else 1.0
    t0, tf = 1 * spe, 5 * spe
    seen = []
    for t in range(1, spe * epochs + 1):
        train_step(model, opt, x, y)
        record = masking.step()
        is_event = t == tf or (t % dT == 0 and t0 <= t < tf)
        if is_event:
            want = 0.05 + (init - 0.05) * (1 - (t - t0) / (tf - t0)) ** 3
            assert record["target_density"] == pytest.approx(want)
            assert sum(int(l.mask.sum()) for l in masking.layers) == round(want * total)
            seen.append(t)
        if t >= tf:
            assert sum(int(l.mask.sum()) for l in masking.layers) == round(0.05 * total)
    assert seen == [12, 16, 20, 24, 28, 32, 36, 40, 44, 48, 50]


def test_uniform_schedule_prunes_each_layer_with_classifier_floor():
    model, opt, masking, x, y = make(
        "gmp_uniform", spe=10, epochs=4, update_frequency=5, final_prune_epoch=2, final_density=0.05
    )
    for _ in range(40):
        train_step(model, opt, x, y)
        masking.step()
    for layer in masking.layers:
        d = 0.2 if layer.name == masking.classifier else 0.05
        assert int(layer.mask.sum()) == round(d * layer.weight.numel())


def test_itop_rate_non_decreasing_and_bounded():
    model, opt, masking, x, y = make("set", update_frequency=2)
    rates = [masking.itop_rate()]
    for _ in range(40):
        train_step(model, opt, x, y)
        masking.step()
        rates.append(masking.itop_rate())
    assert all(b >= a for a, b in zip(rates, rates[1:]))
    assert rates[-1] > rates[0] and rates[-1] <= 1.0
    assert rates[0] == pytest.approx(masking.density(), abs=0)  # nothing else has fired yet


def test_redistribution_conserves_total_and_respects_capacity():
    for mode in ("magnitude", "nonzeros"):
        model, opt, masking, x, y = make("rigl", redistribution=mode, update_frequency=5)
        total_before = sum(masking.active.values())
        for _ in range(20):
            train_step(model, opt, x, y)
            rec = masking.step()
            if rec:
                assert rec["grown"] + rec["reselected"] == rec["dropped"]
        assert sum(int(l.mask.sum()) for l in masking.layers) == total_before


def test_allocate_is_exact_and_capped():
    counts = allocate(100, {"a": 1.0, "b": 1.0, "c": 2.0}, {"a": 10, "b": 1000, "c": 1000})
    assert sum(counts.values()) == 100 and counts["a"] == 10
    assert counts["c"] == pytest.approx(2 * counts["b"], abs=2)


def test_threshold_drop_and_set_drop():
    w = torch.tensor([0.5, -0.2, 0.1, -0.05, 0.3, -0.4, 0.0005, 0.02])
    mask = torch.ones_like(w, dtype=torch.bool)
    (dropped,) = rules.drop(Selection([w], [mask], [4], [8]), "SET")  # the SET drop rule, as Masking calls it
    # two smallest positives (0.0005, 0.02) and two negatives closest to zero (-0.05, -0.2)
    assert dropped.tolist() == [False, True, False, True, False, False, True, True]
    model, opt, masking, x, y = make("rigl", prune="threshold", prune_threshold=1e-2, update_frequency=1)
    train_step(model, opt, x, y)
    small = sum(int((l.mask & (l.weight.abs() < 1e-2)).sum()) for l in masking.layers)
    rec = masking.step()
    assert rec["dropped"] == small == rec["grown"] + rec["reselected"]


def test_top_k_mask_exact_with_ties():
    scores = torch.tensor([1.0, 2.0, 2.0, 2.0, 3.0, 0.0])
    assert int(top_k_mask(scores, 3).sum()) == 3
    assert top_k_mask(scores, 3)[4]
    assert int(top_k_mask(scores, 2, largest=False).sum()) == 2
    assert top_k_mask(scores, 0).sum() == 0 and top_k_mask(scores, 9).all()


def test_state_dict_round_trip_restores_masks_and_counters():
    model, opt, masking, x, y = make("set", update_frequency=2)
    for _ in range(7):
        train_step(model, opt, x, y)
        masking.step()
    state = masking.state_dict()
    model2, opt2, masking2, *_ = make("set", update_frequency=2, seed=5)
    model2.load_state_dict(model.state_dict())
    masking2.load_state_dict(state)
    assert masking2.step_count == 7 and masking2.history == masking.history
    for a, b in zip(masking.layers, masking2.layers):
        assert torch.equal(a.mask, b.mask)
    assert masking2.itop_rate() == masking.itop_rate()
