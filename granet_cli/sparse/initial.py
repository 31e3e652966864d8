"""The initial masks: what a `sparse_init` mode's `InitRule` does, start to finish.

Apart from `Masking` because it runs once, before training, and reads what the training-time updates
never do: the dense initialisation's weights and, for the regrowing modes or a gradient-reading prune
score, a gradient of the dense model.
"""

from __future__ import annotations

import torch
from torch import Tensor

from . import pruning, scores
from .criteria import count
from .density import layer_densities
from .layers import MaskHolder, SparseLayer


@torch.no_grad()
def initial_masks(masking: MaskHolder, init_grads: dict[str, Tensor] | None) -> None:
    """Start (dense, the dense init's nonzeros, or a layer-density distribution), then the one-shot
    prune by `prune_score` and the regrowth by |gradient| the mode asks for. What the prune removes is
    zeroed before regrowing, so regrown weights start at zero (the reference's semantics)."""
    cfg, rule, layers = masking.cfg, masking.init_rule, masking.layers
    if rule.start == "dense":
        return  # masks start all ones
    if rule.start != "nonzero":  # a layer-density distribution: ERK, ER, uniform
        shapes = {layer.name: tuple(layer.weight.shape) for layer in layers}
        assert cfg.init_density is not None  # SparseConfig.__post_init__ fills it from the method preset
        pruning.random_masks(layers, layer_densities(shapes, cfg.init_density, rule.start, cfg.erk_power_scale))
    else:
        for layer in layers:
            layer.mask.copy_(layer.weight != 0)
    if rule.prune_scope is None:
        return
    before = {layer.name: count(layer.mask) for layer in layers}
    rated = {layer.name: _dense_score(masking, layer, init_grads) for layer in layers}
    pruning.ONE_SHOT_PRUNE[rule.prune_scope](layers, cfg.init_prune_fraction, before, masking.classifier, rated)
    del rated
    for layer in layers:
        masking.zero_at(layer, ~layer.mask)
    if rule.regrow:  # as many weights as were pruned, by gradient magnitude (reference semantics)
        regrow = pruning.ONE_SHOT_REGROW[rule.prune_scope]
        for layer in layers:
            grad = dense_gradient(masking, layer, init_grads)
            layer.mask.bitwise_or_(regrow(layer, grad, before[layer.name] - count(layer.mask), masking.classifier))


def _dense_score(masking: MaskHolder, layer: SparseLayer, init_grads: dict[str, Tensor] | None) -> Tensor:
    """The prune score of the dense init; a score that reads the gradient gets the dense one."""
    score = masking.prune_score
    grad = dense_gradient(masking, layer, init_grads) if score.needs == "grad" else None
    state = dict(masking.optimizer.state.get(layer.weight, {}))
    return score.fn(scores.ScoreInput(layer.weight.detach(), grad, state, masking.cfg))


def dense_gradient(masking: MaskHolder, layer: SparseLayer, init_grads: dict[str, Tensor] | None) -> Tensor:
    """`init_grads[layer]`, else the weight's `.grad`; a clear error when neither exists."""
    grad = (init_grads or {}).get(layer.name, layer.weight.grad)
    if grad is None:
        cfg = masking.cfg
        raise ValueError(
            f"sparse_init {cfg.sparse_init} (prune_score {cfg.prune_score}) needs a gradient of the dense model "
            f"(pass init_grads or run a backward pass first); none for {layer.name}"
        )
    return grad
