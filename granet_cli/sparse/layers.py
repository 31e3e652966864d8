"""The weights a `Masking` sparsifies: every Conv2d / Linear weight, and where its mask lives.

A module of its own so that the rules that act on layers (pruning, observers, the initial masks, the
drop-and-grow update) and `Masking`, which holds them, all import it without importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, cast

import torch
from torch import Tensor, nn


@dataclass
class SparseLayer:
    name: str  # "<module path>.weight"
    module: nn.Module
    weight: Tensor  # the module's nn.Parameter

    @property
    def mask(self) -> Tensor:
        return cast(Tensor, self.module.weight_mask)


def sparsifiable_layers(
    model: nn.Module, dense_first_layer: bool = False, dense_classifier: bool = False
) -> list[SparseLayer]:
    """Every Conv2d / Linear weight (4-D and 2-D); biases and norm layers stay dense.

    The first such layer is the "first layer"; the last Linear is the classifier.
    """
    found = [
        SparseLayer(f"{n}.weight" if n else "weight", m, m.weight)
        for n, m in model.named_modules()
        if isinstance(m, (nn.Conv2d, nn.Linear))
    ]
    linears = [layer for layer in found if isinstance(layer.module, nn.Linear)]
    excluded = set()
    if dense_first_layer and found:
        excluded.add(found[0].name)
    if dense_classifier and linears:
        excluded.add(linears[-1].name)
    return [layer for layer in found if layer.name not in excluded]


class MaskHolder(Protocol):
    """What the update functions (`initial`, `updates`) read and call of a `Masking`: a protocol, so
    they need not import the class that calls them."""

    cfg: Any
    layers: list[SparseLayer]
    optimizer: torch.optim.Optimizer
    classifier: str | None
    init_rule: Any
    prune_score: Any
    growth_rule: Any
    redistribution: Any

    def zero_at(self, layer: SparseLayer, where: Tensor) -> None: ...

    def sync_masks(self, extra: list[Tensor] | None = None) -> None: ...
