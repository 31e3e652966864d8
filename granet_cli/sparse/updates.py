"""One drop-and-grow update over every sparse layer: drop, share the regrowth out, grow, and set the
weights and optimizer state of what changed.

Apart from `Masking` (which decides *when*: schedule, frequency, the cosine drop fraction) because
this is *what* an update does, and the place where faithfulness to the reference is decided: a weight
dropped and re-selected in the same update keeps its value and optimizer state, as the reference's
`truncate_weights` does (it zeroes only what ends inactive; RigL's `reinit_when_same=False`); only
connections inactive before the update start at zero.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from . import rules
from .criteria import count, counts
from .layers import MaskHolder
from .rules import Selection, allocate


@dataclass(frozen=True)
class DropAndGrow:
    """What one drop-and-grow update did, summed over layers.

    dropped     weights the drop criterion removed
    grown       new connections: inactive before the update, now active (they start at zero)
    reselected  dropped and grown again in the same update: they stay, keeping their values
    The weights that really left are dropped - reselected; with no redistribution that is `grown`.
    """

    dropped: int
    grown: int
    reselected: int


@torch.no_grad()
def drop_and_grow(masking: MaskHolder, fraction: float) -> DropAndGrow:
    """Each layer drops `ceil(fraction * active)` weights by the drop score, then regrows as many
    (shared out by the redistribution rule) among the positions inactive after the drop."""
    cfg, layers, optimizer = masking.cfg, masking.layers, masking.optimizer
    masks = [layer.mask for layer in layers]
    weights = [layer.weight for layer in layers]
    n_active = counts(masks)
    n_drop = [min(n, math.ceil(fraction * n)) for n in n_active]
    drops = rules.drop(Selection(weights, masks, n_drop, n_active, optimizer, cfg), cfg.prune)
    survivors = [m & ~d for m, d in zip(masks, drops)]
    dropped = counts(drops)
    share = masking.redistribution(Selection(weights, masks, dropped, n_active, optimizer, cfg))
    regrow = dropped if share is None else _shared_regrowth(masking, dropped, survivors, share)
    grown_masks = _grow(masking, [~s for s in survivors], regrow)
    for layer, survivor, grow in zip(layers, survivors, grown_masks):
        layer.mask.copy_(survivor | grow)
    masking.sync_masks(grown_masks + drops)
    # grown positions were inactive before (new) or dropped just now (re-selected): drops are a
    # subset of the active weights, so a grown position outside them was inactive
    new = [grow & ~drop for grow, drop in zip(grown_masks, drops)]
    for layer, fresh in zip(layers, new):
        masking.zero_at(layer, fresh)  # new connections start at zero, optimizer state too
    n_new = counts(new)
    return DropAndGrow(sum(dropped), sum(n_new), sum(counts(grown_masks)) - sum(n_new))


def _grow(masking: MaskHolder, candidates: list[Tensor], wanted: list[int]) -> list[Tensor]:
    """Per layer, `wanted` (at most all) of the `candidates`, by the growth rule."""
    n_candidates = counts(candidates)
    ns = [min(n, c) for n, c in zip(wanted, n_candidates)]
    weights = [layer.weight for layer in masking.layers]
    return masking.growth_rule.select(Selection(weights, candidates, ns, n_candidates, masking.optimizer, masking.cfg))


def _shared_regrowth(masking: MaskHolder, dropped: list[int], survivors: list[Tensor], share: list[float]) -> list[int]:
    """The total dropped, shared out over the layers by `share`, within each one's free room."""
    names = [layer.name for layer in masking.layers]
    caps = {layer.name: layer.mask.numel() - count(s) for layer, s in zip(masking.layers, survivors)}
    allocated = allocate(sum(dropped), {name: float(w) for name, w in zip(names, share)}, caps)
    return [allocated[name] for name in names]
