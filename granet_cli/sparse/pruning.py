"""Pruning of `SparseLayer`s by a score (schedule events and one-shot inits) and the initial masks.

Each pruning keeps the active weights of highest score (`scores.SCORES[sparsity.prune_score]`:
magnitude, as the paper, by default) through `criteria`'s exact top-k. Each function edits
`layer.mask` in place and leaves the weights alone: `Masking` zeroes what the masks no longer hold.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from . import criteria
from .criteria import count, counts
from .density import kept_count

if TYPE_CHECKING:
    from .layers import SparseLayer


def random_masks(layers: Sequence[SparseLayer], densities: Mapping[str, float]) -> None:
    """Exactly `round(density_l * numel)` weights of each layer, chosen at random."""
    for layer in layers:
        everywhere = torch.ones_like(layer.mask)
        layer.mask.copy_(criteria.grow_random(everywhere, kept_count(densities[layer.name], layer.mask.numel())))


def prune_layer(layer: SparseLayer, keep: int, score: Tensor) -> int:
    """Keep the `keep` active weights of highest `score` of one layer; returns how many went."""
    active = count(layer.mask)
    if keep >= active:
        return 0
    (kept,) = criteria.choose([score], [layer.mask], [keep], lowest=False, n_among=[active])
    layer.mask.copy_(kept)
    return active - keep


def prune_global(layers: Sequence[SparseLayer], keep: int, scores: Sequence[Tensor]) -> int:
    """Keep the `keep` active weights of highest score across all layers."""
    active = sum(counts([layer.mask for layer in layers]))
    if keep >= active:
        return 0
    flat = torch.cat([s.reshape(-1) for s in scores])
    active_flat = torch.cat([layer.mask.reshape(-1) for layer in layers])
    (chosen,) = criteria.choose([flat], [active_flat], [keep], lowest=False, n_among=[active])
    for layer, part in zip(layers, chosen.split([layer.mask.numel() for layer in layers])):
        layer.mask.copy_(part.view_as(layer.mask))
    return active - keep


def prune_channels(layers: Sequence[SparseLayer], rate: float, scores: Mapping[str, Tensor]) -> None:
    """Remove `ceil(rate * alive)` whole output channels of lowest summed score from each layer
    (with magnitude: smallest L1 norm)."""
    for layer in layers:
        norms = scores[layer.name].flatten(1).sum(1)
        alive = layer.mask.flatten(1).any(1)
        n_remove = math.ceil(rate * count(alive))
        (gone,) = criteria.choose([norms], [alive], [n_remove], lowest=True)
        layer.mask[gone] = False


def grow_channels(layer: SparseLayer, grad: Tensor, n_weights: int) -> Tensor:
    """`n_weights // channel size` dead output channels of largest |gradient| L1 norm."""
    grown = torch.zeros_like(layer.mask)
    if n_weights <= 0:
        return grown
    per_channel = layer.mask[0].numel()
    dead = ~layer.mask.flatten(1).any(1)
    scores = grad.abs().flatten(1).sum(1)
    grown[criteria.grow_by_score(scores, dead, n_weights // per_channel)] = True
    return grown


# ----------------------------------------------------------------------------- one-shot init prune
# by `InitRule.prune_scope`: prune(layers, rate, counts before, classifier name, scores by layer) and
# regrow(layer, dense gradient, n weights, classifier name) -> the grown positions
Scores = Mapping[str, Tensor]


def _prune_each(
    layers: Sequence[SparseLayer], rate: float, before: Mapping[str, int], classifier: str | None, scores: Scores
) -> None:
    for layer in layers:
        prune_layer(layer, before[layer.name] - math.ceil(rate * before[layer.name]), scores[layer.name])


def _prune_all(
    layers: Sequence[SparseLayer], rate: float, before: Mapping[str, int], classifier: str | None, scores: Scores
) -> None:
    prune_global(layers, int(sum(before.values()) * (1 - rate)), [scores[layer.name] for layer in layers])


def _prune_structured(
    layers: Sequence[SparseLayer], rate: float, before: Mapping[str, int], classifier: str | None, scores: Scores
) -> None:
    # structured pruning never removes classifier outputs (that would delete classes)
    prune_channels([layer for layer in layers if layer.name != classifier], rate, scores)


def _grow_weights(layer: SparseLayer, grad: Tensor, n: int, classifier: str | None) -> Tensor:
    return criteria.grow_by_score(grad, ~layer.mask, n)


def _grow_structured(layer: SparseLayer, grad: Tensor, n: int, classifier: str | None) -> Tensor:
    if layer.name == classifier:  # its channels were never pruned
        return torch.zeros_like(layer.mask)
    return grow_channels(layer, grad, n)


ONE_SHOT_PRUNE: dict[str, Callable[..., None]] = {
    "layer": _prune_each,
    "global": _prune_all,
    "channel": _prune_structured,
}
ONE_SHOT_REGROW: dict[str, Callable[..., Tensor]] = {
    "layer": _grow_weights,
    "global": _grow_weights,
    "channel": _grow_structured,
}
