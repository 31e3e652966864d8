"""The pluggable sparse core: rule registries, the init table, observers, and the
momentum_neuron growth rule, checked against expectations computed here."""

import math
import subprocess
import sys

import pytest
import torch
from torch import nn

from granet_cli.sparse import rules, scores
from granet_cli.sparse.masking import Masking
from granet_cli.sparse.methods import SparseConfig
from granet_cli.sparse.rules import Selection
from granet_cli.spec import SpecError, load_run_spec

from .test_masking import make, snapshot, train_step


# --------------------------------------------------------------------------- registries and tables
def test_registries_hold_the_spec_names():
    # the reference's drop criteria and growth rules keep their spec names, now as scores
    assert {"magnitude", "SET", "threshold", "saliency", "gradient", "momentum", "random"} <= set(scores.SCORES)
    assert scores.names(grows=True) == ("gradient", "momentum", "random")
    assert {"gradient", "momentum", "random", "momentum_neuron"} <= set(rules.GROWTH_RULES)
    assert list(rules.REDISTRIBUTION_RULES) == ["none", "magnitude", "nonzeros"]
    when = {name: rule.dense_gradient for name, rule in rules.GROWTH_RULES.items()}
    assert (when["gradient"], when["momentum"], when["random"], when["momentum_neuron"]) == (
        "update",
        "step",
        None,
        "step",
    )


def test_init_table_keeps_the_sparse_init_names_and_their_groups():
    assert rules.SPARSE_INITS == (
        "ERK",
        "ER",
        "uniform",
        "GMP",
        "dense",
        "prune_uniform",
        "prune_global",
        "prune_and_grow_uniform",
        "prune_and_grow_global",
        "prune_structured",
        "prune_and_grow_structured",
    )
    assert rules.PRUNE_INITS == tuple(m for m in rules.SPARSE_INITS if m.startswith("prune"))
    assert rules.GRADIENT_INITS == ("prune_and_grow_uniform", "prune_and_grow_global", "prune_and_grow_structured")
    assert rules.INIT_RULES["prune_and_grow_structured"] == rules.InitRule(
        start="nonzero", prune_scope="channel", regrow=True, needs_gradient=True
    )


def test_duplicate_and_unknown_names_are_errors():
    with pytest.raises(ValueError, match="already registered"):
        rules.growth_rule("gradient")(lambda sel: [])
    with pytest.raises(ValueError, match="unknown growth 'nope'; choose from gradient, momentum, random"):
        rules.lookup(rules.GROWTH_RULES, "growth", "nope")
    model = nn.Linear(4, 3)
    with pytest.raises(ValueError, match="unknown prune 'largest'"):
        Masking(
            model,
            torch.optim.SGD(model.parameters(), lr=0.1),
            SparseConfig(method="rigl", prune="largest"),
            steps_per_epoch=2,
            epochs=1,
        )


def test_spec_importing_the_tables_stays_torch_free():
    code = "import sys, granet_cli.spec; assert 'torch' not in sys.modules, 'spec imported torch'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_new_growth_rule_needs_no_spec_edit():
    """Register a rule (here: grow the first candidates by position), use it from a spec, remove it."""
    with pytest.raises(SpecError, match="unknown growth 'first_free'"):
        load_run_spec(None, ["sparsity.method=rigl", "sparsity.growth=first_free"])

    @rules.growth_rule("first_free", dense_gradient=None)
    def first_free(sel):
        out = []
        for cand, n in zip(sel.among, sel.n):
            flat = torch.zeros(cand.numel(), dtype=torch.bool)
            flat[torch.nonzero(cand.reshape(-1)).squeeze(1)[:n]] = True
            out.append(flat.view_as(cand))
        return out

    try:
        spec = load_run_spec(
            None, ["sparsity.method=rigl", "sparsity.growth=first_free", "sparsity.update_frequency=1"]
        )
        model, opt, masking, x, y = make(spec.sparsity.method, growth=spec.sparsity.growth, update_frequency=1)
        assert not masking.needs_dense_gradient
        train_step(model, opt, x, y)
        before = snapshot(masking)
        w_before = {layer.name: layer.weight.detach().clone() for layer in masking.layers}
        record = masking.step()
        assert record["grown"] + record["reselected"] == record["dropped"] > 0
        for layer in masking.layers:
            # independent drop: the ceil(f * active) smallest |w| among the active weights
            active = before[layer.name]
            n = math.ceil(masking.drop_fraction * int(active.sum()))
            thr = w_before[layer.name].abs()[active].sort().values[n - 1]
            survivors = active & ~(w_before[layer.name].abs() <= thr)
            free = torch.nonzero(~survivors.reshape(-1)).squeeze(1)
            expected = survivors.clone().reshape(-1)
            expected[free[:n]] = True  # the rule: the first n free positions
            assert torch.equal(layer.mask, expected.view_as(layer.mask))
    finally:
        del rules.GROWTH_RULES["first_free"]


# --------------------------------------------------------------------------- momentum_neuron
def neuron_case(seed, shape, free_fraction=0.6):
    g = torch.Generator().manual_seed(seed)
    weight = nn.Parameter(torch.randn(shape, generator=g))
    opt = torch.optim.SGD([weight], lr=0.1, momentum=0.9)
    momentum = torch.randn(shape, generator=g) * torch.rand(shape[0], *[1] * (len(shape) - 1), generator=g)
    opt.state[weight]["momentum_buffer"] = momentum
    free = torch.rand(shape, generator=g) < free_fraction
    return weight, opt, momentum, free


def grow_neurons(weight, opt, free, n):
    sel = Selection([weight], [free], [n], [int(free.sum())], opt, None)
    (grown,) = rules.GROWTH_RULES["momentum_neuron"].select(sel)
    return grown


def check_within_neurons(grown, free, momentum):
    """Grown positions are free, and in each neuron they are its free positions of largest |momentum|."""
    assert not torch.any(grown & ~free)
    m, g, f = momentum.abs().flatten(1), grown.flatten(1), free.flatten(1)
    for i in range(m.shape[0]):
        picked, passed = m[i][g[i]], m[i][f[i] & ~g[i]]
        if len(picked) and len(passed):
            assert picked.min() >= passed.max()


@pytest.mark.parametrize("shape", [(12, 40), (8, 4, 3, 3)])
def test_momentum_neuron_shares_regrowth_by_mean_momentum(shape):
    weight, opt, momentum, free = neuron_case(1, shape)
    n = int(free.sum()) // 4
    grown = grow_neurons(weight, opt, free, n)
    assert grown.dtype == torch.bool and grown.shape == free.shape
    assert int(grown.sum()) == n
    # expected per-neuron counts: Hamilton (largest remainder) apportionment of n by mean |momentum|
    mean = momentum.abs().flatten(1).mean(1)
    share = n * mean / mean.sum()
    want = share.floor().long()
    extra = n - int(want.sum())
    want[torch.argsort(share - share.floor(), descending=True)[:extra]] += 1
    assert torch.all(want <= free.flatten(1).sum(1))  # no neuron short of room in this case
    assert grown.flatten(1).sum(1).tolist() == want.tolist()
    check_within_neurons(grown, free, momentum)


def test_momentum_neuron_caps_a_full_neuron_and_gives_the_rest_to_others():
    weight, opt, momentum, free = neuron_case(2, (10, 30))
    momentum[3] *= 1000  # neuron 3 wants nearly everything
    free[3] = False
    free[3, :2] = True  # but has room for 2
    n = 40
    grown = grow_neurons(weight, opt, free, n)
    per_neuron = grown.flatten(1).sum(1)
    assert int(grown.sum()) == n and int(per_neuron[3]) == 2
    assert torch.all(per_neuron <= free.sum(1))
    check_within_neurons(grown, free, momentum)


def test_momentum_neuron_in_training_keeps_counts():
    model, opt, masking, x, y = make("rigl", growth="momentum_neuron", update_frequency=2, spe=10, epochs=1)
    assert masking.needs_dense_gradient
    updates = 0
    for _ in range(10):
        train_step(model, opt, x, y)
        before = {n: int(m.sum()) for n, m in snapshot(masking).items()}
        record = masking.step()
        if record is None:
            continue
        updates += 1
        assert record["grown"] + record["reselected"] == record["dropped"] > 0
        for layer in masking.layers:
            assert int(layer.mask.sum()) == before[layer.name]
            assert torch.all(layer.weight[~layer.mask] == 0)
    assert updates == 5


def test_spec_accepts_the_registered_rule():
    assert load_run_spec(None, ["sparsity.growth=momentum_neuron"]).sparsity.growth == "momentum_neuron"


# --------------------------------------------------------------------------- observers and checkpoints
class Recorder:
    state_key = None

    def __init__(self):
        self.changes, self.steps = [], []

    def on_masks_changed(self, masking):
        self.changes.append(sum(int(m.sum()) for m in masking.masks().values()))

    def on_step(self, masking, dense_gradient):
        self.steps.append(dense_gradient)


def test_observers_see_every_mask_change_and_step():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    rec = Recorder()
    masking = Masking(
        model,
        opt,
        SparseConfig(method="rigl", final_density=0.5, update_frequency=3),
        steps_per_epoch=4,
        epochs=3,
        observers=[rec],
    )
    x, y = torch.randn(5, 6), torch.randint(0, 3, (5,))
    for _ in range(12):
        train_step(model, opt, x, y)
        masking.step()
    # init, then the 4 updates (steps 3, 6, 9, 12); drop-and-grow keeps the count
    assert rec.changes == [sum(int(m.sum()) for m in masking.masks().values())] * 5
    # gradient growth: the dense gradient is needed on the update steps only
    assert rec.steps == [t % 3 == 0 for t in range(1, 13)]
    assert set(masking.state_dict()) == {"step_count", "drop_fraction", "masks", "fired", "history", "flops"}


def test_checkpoint_written_in_the_old_layout_loads():
    model, opt, masking, x, y = make("set", update_frequency=2)
    for _ in range(5):
        train_step(model, opt, x, y)
        masking.step()
    # the layout checkpoints have always had (written by hand, not by state_dict())
    old = {
        "step_count": 5,
        "drop_fraction": 0.25,
        "masks": {layer.name: layer.mask.clone() for layer in masking.layers},
        "fired": {layer.name: torch.ones_like(layer.mask) for layer in masking.layers},
        "history": [{"step": 2}],
        "flops": {"train_flops": 123.0, "steps": 5},
    }
    _, _, masking2, *_ = make("set", update_frequency=2, seed=3)
    masking2.load_state_dict(old)
    assert (masking2.step_count, masking2.drop_fraction, masking2.history) == (5, 0.25, [{"step": 2}])
    assert masking2.itop_rate() == 1.0
    assert masking2.meter.train_flops == 123.0 and masking2.meter.steps == 5
    total = masking2.total
    assert masking2.density() == sum(int(layer.mask.sum()) for layer in masking.layers) / total
    assert math.isclose(masking2.training_flops_fraction(), 123.0 / (3 * masking2.meter.dense_forward * 5))
