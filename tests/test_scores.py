"""The score registry: one score per criterion, used by gradual pruning, the one-shot prune and
drop-and-grow alike; checked against selections computed here from the definitions."""

import math

import pytest
import torch
from torch import nn

from granet_cli.sparse import rules, scores
from granet_cli.sparse.masking import Masking
from granet_cli.sparse.methods import SparseConfig
from granet_cli.spec import SpecError, load_run_spec

from .oracle import keep_largest


def mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(12, 40), nn.ReLU(), nn.Linear(40, 30), nn.ReLU(), nn.Linear(30, 4))


def trained_step(model, opt, g):
    opt.zero_grad()
    x, y = torch.randn(32, 12, generator=g), torch.randint(0, 4, (32,), generator=g)
    nn.functional.cross_entropy(model(x), y).backward()
    opt.step()


def test_saliency_drives_gradual_pruning():
    """prune_score=saliency: every schedule event keeps exactly the round(d * total) active weights of
    largest |w * grad| over all layers (recomputed here from the weights and gradients)."""
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    cfg = SparseConfig(method="gmp", prune_score="saliency", final_density=0.2, update_frequency=2, final_prune_epoch=3)
    masking = Masking(model, opt, cfg, steps_per_epoch=4, epochs=4)
    g = torch.Generator().manual_seed(0)
    events = 0
    for t in range(1, 17):
        trained_step(model, opt, g)
        layers = masking.layers
        w = torch.cat([layer.weight.detach().reshape(-1) for layer in layers])
        grad = torch.cat([layer.weight.grad.reshape(-1) for layer in layers])
        before = torch.cat([layer.mask.reshape(-1) for layer in layers])
        record = masking.step()
        if record is None:
            continue
        events += 1
        keep = round(record["target_density"] * w.numel())
        want = keep_largest((w * grad).abs(), before, min(keep, int(before.sum())))
        got = torch.cat([layer.mask.reshape(-1) for layer in layers])
        assert torch.equal(got, want), f"step {t}"
        # and it is not magnitude pruning in disguise
        assert not torch.equal(got, keep_largest(w.abs(), before, int(got.sum())))
    assert events >= 4


def test_saliency_as_the_drop_criterion_of_drop_and_grow():
    """prune=saliency: each layer drops the ceil(f * active) active weights of smallest |w * grad|."""
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    cfg = SparseConfig(method="rigl", prune="saliency", final_density=0.3, update_frequency=1)
    masking = Masking(model, opt, cfg, steps_per_epoch=5, epochs=1)
    g = torch.Generator().manual_seed(1)
    trained_step(model, opt, g)
    before = [layer.mask.clone() for layer in masking.layers]
    sal = [(layer.weight.detach() * layer.weight.grad).abs() for layer in masking.layers]
    masking.step()
    f = masking.drop_fraction
    for layer, m0, s in zip(masking.layers, before, sal):
        n = math.ceil(f * int(m0.sum()))
        survivors = keep_largest(s, m0, int(m0.sum()) - n)  # keep all but the n smallest
        assert torch.all(layer.mask[survivors])  # every survivor is still active
        left = m0 & ~layer.mask  # what really left: only weights the drop chose
        assert not torch.any(left & survivors)


def test_a_new_score_is_one_decorated_function():
    """Registered in a test, a score is valid in the spec at once and prunes."""

    @scores.register_score("smallest_first")
    def _smallest_first(inp):
        return -inp.weight.abs()

    try:
        spec = load_run_spec(None, ["sparsity.method=gmp", "sparsity.prune_score=smallest_first"])
        assert spec.sparsity.prune_score == "smallest_first"
        model = mlp()
        cfg = SparseConfig(method="gmp", prune_score="smallest_first", final_density=0.5, final_prune_epoch=1)
        opt = torch.optim.SGD(model.parameters(), lr=0.0)
        masking = Masking(model, opt, cfg, steps_per_epoch=1, epochs=1)
        w = torch.cat([layer.weight.detach().abs().reshape(-1) for layer in masking.layers])
        masking.step()  # the closing event at tf = step 1
        kept = torch.cat([layer.mask.reshape(-1) for layer in masking.layers])
        assert int(kept.sum()) == round(0.5 * w.numel())
        assert w[kept].max() <= w[~kept].min()  # the smallest magnitudes were kept
    finally:
        del scores.SCORES["smallest_first"]


def test_unknown_or_inexact_scores_are_one_line_errors():
    for bad, what in (
        ("sparsity.prune_score=nope", "unknown prune_score 'nope'"),
        ("sparsity.prune=nope", "unknown prune"),
    ):
        with pytest.raises(SpecError) as ei:
            load_run_spec(None, [bad])
        assert what in str(ei.value) and "\n" not in str(ei.value)
    # threshold and SET choose a count of their own: they cannot prune to an exact density
    with pytest.raises(SpecError, match="prune_score 'threshold'"):
        load_run_spec(None, ["sparsity.prune_score=threshold"])


def test_saliency_one_shot_prune_needs_and_uses_the_dense_gradient():
    cfg = SparseConfig(method="rigl", sparse_init="prune_global", prune_score="saliency", init_prune_fraction=0.5)
    assert rules.needs_init_gradient(cfg)
    assert not rules.needs_init_gradient(SparseConfig(method="rigl", sparse_init="prune_global"))
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="needs a gradient"):
        Masking(model, opt, cfg, steps_per_epoch=1, epochs=1)
    grads = {f"{i}.weight": torch.randn_like(m.weight) for i, m in enumerate(model) if isinstance(m, nn.Linear)}
    w = [m.weight.detach().clone() for m in model if isinstance(m, nn.Linear)]
    masking = Masking(model, opt, cfg, steps_per_epoch=1, epochs=1, init_grads=grads)
    sal = torch.cat([(wi * grads[name]).abs().reshape(-1) for wi, name in zip(w, grads)])
    everything = torch.ones_like(sal, dtype=torch.bool)
    want = keep_largest(sal, everything, int(sal.numel() * 0.5))
    assert torch.equal(torch.cat([layer.mask.reshape(-1) for layer in masking.layers]), want)
