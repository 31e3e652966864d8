"""The mask-update rules: what a drop, a growth and a redistribution do with the scores.

A rule decides *which* weights; `Masking` does the bookkeeping around it (counts, applying masks,
zeroing new connections, rank sync, history, observers), the way rigl_tf2's mask updaters or
`torch.ao.pruning`'s `update_mask` separate the rule from the sparsifier. *How* weights are rated is
one registry of its own, `scores.SCORES`; the rules here only choose by a score:

- `drop(selection, score)`: per layer, the `n` active weights of lowest score (spec `prune`: any score).
- `GROWTH_RULES[spec.growth]`: per layer, `n` candidates; one rule per score that can rank inactive
  positions (gradient, momentum, random), plus `momentum_neuron`, which shares a layer's regrowth
  out over its neurons first.
- `REDISTRIBUTION_RULES[spec.redistribution]` gives each layer a share of the total regrowth
  (None: every layer regrows what it dropped).
- `INIT_RULES[spec.sparse_init]` is a table of what each initial-mask mode does.

`granet_cli.spec` takes its lists of valid names from these registries, so importing this module must not
import torch (validation stays fast): the rules import `torch` / `criteria` when they run. A new
growth rule that is not a plain score is one decorated function::

    @growth_rule("my_rule", dense_gradient="update")
    def _my_rule(sel: Selection) -> list[Tensor]:
        return [...]  # per layer: exactly sel.n[i] of the candidates sel.among[i]
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import torch
    from torch import Tensor


@dataclass(frozen=True)
class Selection:
    """One selection over every sparse layer, in layer order.

    Drop: `among` are the active weights, `n` how many to drop (a rule may ignore it:
    `threshold`). Growth: `among` are the candidate (inactive) positions, `n` exactly how many
    to grow, never more than `n_among`. A weight's `.grad` holds the dense gradient.
    """

    weights: Sequence[Tensor]
    among: Sequence[Tensor]
    n: Sequence[int]
    n_among: Sequence[int]
    optimizer: torch.optim.Optimizer | None = None
    config: Any = None


Rule = Callable[[Selection], "list[Tensor]"]
#: when a growth rule needs the dense weight gradient (FLOPs accounting, `needs_dense_gradient`):
#: on each drop-and-grow "update", on every "step" (momentum), or never (None)
DenseGradient = Literal["update", "step"] | None


@dataclass(frozen=True)
class GrowthRule:
    name: str
    select: Rule
    dense_gradient: DenseGradient


GROWTH_RULES: dict[str, GrowthRule] = {}
REDISTRIBUTION_RULES: dict[str, Callable[[Selection], list[float] | None]] = {}


def _register(registry: dict[str, Any], kind: str, name: str, value: Any) -> None:
    if name in registry:
        raise ValueError(f"{kind} rule {name!r} is already registered")
    registry[name] = value


def growth_rule(name: str, *, dense_gradient: DenseGradient = "update") -> Callable[[Rule], Rule]:
    """Register `fn(selection) -> per-layer grow masks` as the growth criterion `name` (spec `growth`)."""

    def register(fn: Rule) -> Rule:
        _register(GROWTH_RULES, "growth", name, GrowthRule(name, fn, dense_gradient))
        return fn

    return register


def redistribution_rule(name: str) -> Callable:
    """Register `fn(selection) -> per-layer weights of the regrowth share, or None`."""

    def register(fn: Callable) -> Callable:
        _register(REDISTRIBUTION_RULES, "redistribution", name, fn)
        return fn

    return register


def lookup(registry: dict[str, Any], field: str, name: str | None) -> Any:
    """`registry[name]`, or a ValueError naming the spec field and the valid names."""
    if name not in registry:
        raise ValueError(f"unknown {field} {name!r}; choose from {', '.join(registry)}")
    return registry[name]


# ----------------------------------------------------------------------------- drop and growth by a score
def _scores(sel: Selection, name: str) -> list[Tensor]:
    from . import scores

    return [scores.score_of(name, w, sel.optimizer, sel.config) for w in sel.weights]


def drop(sel: Selection, score: str) -> list[Tensor]:
    """Per layer, the `sel.n[i]` active weights of lowest `score` (`threshold`: every one below
    `prune_threshold`; `SET`: half from each sign)."""
    from . import criteria, scores

    rule = scores.lookup(score, "prune")
    threshold = getattr(sel.config, "prune_threshold", None)
    return criteria.choose(
        _scores(sel, score),
        sel.among,
        sel.n,
        lowest=True,
        selection=rule.selection,
        weights=sel.weights,
        threshold=threshold,
        n_among=sel.n_among,
    )


def _grow_by(score: str) -> Rule:
    def grow(sel: Selection) -> list[Tensor]:
        from . import criteria

        return criteria.choose(_scores(sel, score), sel.among, sel.n, lowest=False, n_among=sel.n_among)

    grow.__doc__ = f"The candidates of highest {score} score."
    return grow


def _register_score_growth() -> None:
    """Every score that can rank inactive positions is a growth rule of the same name."""
    from .scores import SCORES

    dense = {"grad": "update", "optimizer": "step", None: None}
    for name, score in SCORES.items():
        if score.grows:
            growth_rule(name, dense_gradient=dense[score.needs])(_grow_by(name))  # type: ignore[arg-type]


_register_score_growth()


def _momentum(optimizer: torch.optim.Optimizer | None, weight: Tensor) -> Tensor:
    from . import scores

    return scores.score_of("momentum", weight, optimizer)


@growth_rule("momentum_neuron", dense_gradient="step")
def _grow_momentum_neuron(sel: Selection) -> list[Tensor]:
    """sparse_learning's momentum-neuron growth: a layer's regrowth is shared out over its output
    neurons in proportion to their mean |momentum| (capped by each neuron's free positions, the
    total exact), then each neuron grows its free positions of largest |momentum|."""
    import torch

    grown = []
    for weight, free, n in zip(sel.weights, sel.among, sel.n):
        score = _momentum(sel.optimizer, weight).flatten(1)
        free_rows = free.flatten(1)
        share = dict(enumerate(score.mean(1).tolist()))
        per_neuron = allocate(n, share, dict(enumerate(free_rows.sum(1).tolist())))
        k = torch.tensor([per_neuron[i] for i in range(len(share))], device=weight.device)
        order = torch.where(free_rows, score, -math.inf).argsort(dim=1, descending=True, stable=True)
        rank = torch.empty_like(order).scatter_(
            1, order, torch.arange(order.shape[1], device=weight.device).expand_as(order).contiguous()
        )
        grown.append((rank < k[:, None]).view_as(free))
    return grown


# ----------------------------------------------------------------------------- redistribution
@redistribution_rule("none")
def _own_share(sel: Selection) -> None:
    return None  # every layer regrows what it dropped


@redistribution_rule("magnitude")
def _by_magnitude(sel: Selection) -> list[float]:
    return [w.detach().abs()[m].mean().item() if n else 0.0 for w, m, n in zip(sel.weights, sel.among, sel.n_among)]


@redistribution_rule("nonzeros")
def _by_nonzeros(sel: Selection) -> list[float]:
    return [float(n) for n in sel.n_among]


def allocate(total: int, weights: dict[Any, float], caps: dict[Any, int]) -> dict[Any, int]:
    """Share `total` out proportionally to `weights`, never above `caps`; exact sum (largest remainder)."""
    counts = dict.fromkeys(weights, 0)
    remaining = min(total, sum(caps.values()))
    while remaining > 0:
        room = {n: caps[n] - counts[n] for n in weights if counts[n] < caps[n]}
        w = {n: max(weights[n], 0.0) for n in room}
        if not any(w.values()):
            w = dict.fromkeys(room, 1.0)
        share = {n: remaining * w[n] / sum(w.values()) for n in room}
        give = {n: min(int(share[n]), room[n]) for n in room}
        left = remaining - sum(give.values())
        for n in sorted(room, key=lambda n: share[n] - int(share[n]), reverse=True):
            if left == 0:
                break
            if give[n] < room[n]:
                give[n] += 1
                left -= 1
        for n, g in give.items():
            counts[n] += g
        remaining -= sum(give.values())
    return counts


# ----------------------------------------------------------------------------- initial masks
@dataclass(frozen=True)
class InitRule:
    """What an initial-mask mode (`sparse_init`) does, in order:

    start        "dense" (all ones), "nonzero" (weight != 0 of the dense init), or a layer-density
                 distribution (ERK, ER, uniform: exactly round(density_l * numel) random weights)
    prune_scope  one-shot magnitude prune by `init_prune_fraction`: None, "layer", "global" or "channel"
                 (whole output channels, never the classifier's)
    regrow       then regrow as many as were pruned, by |gradient| of the dense model, at zero
                 (weights, or whole channels for the "channel" scope)
    needs_gradient  a dense gradient must exist before the mask does
    """

    start: str
    prune_scope: Literal["layer", "global", "channel"] | None = None
    regrow: bool = False
    needs_gradient: bool = False


INIT_RULES: dict[str, InitRule] = {
    "ERK": InitRule(start="ERK"),
    "ER": InitRule(start="ER"),
    "uniform": InitRule(start="uniform"),
    "GMP": InitRule(start="dense"),
    "dense": InitRule(start="dense"),
    "prune_uniform": InitRule(start="nonzero", prune_scope="layer"),
    "prune_global": InitRule(start="nonzero", prune_scope="global"),
    "prune_and_grow_uniform": InitRule(start="nonzero", prune_scope="layer", regrow=True, needs_gradient=True),
    "prune_and_grow_global": InitRule(start="nonzero", prune_scope="global", regrow=True, needs_gradient=True),
    "prune_structured": InitRule(start="nonzero", prune_scope="channel"),
    "prune_and_grow_structured": InitRule(start="nonzero", prune_scope="channel", regrow=True, needs_gradient=True),
}
SPARSE_INITS = tuple(INIT_RULES)
#: sparse-init modes that start from a one-shot prune of a dense init
PRUNE_INITS = tuple(name for name, rule in INIT_RULES.items() if rule.prune_scope is not None)
#: sparse-init modes that need a gradient of the dense model before the mask exists
GRADIENT_INITS = tuple(name for name, rule in INIT_RULES.items() if rule.needs_gradient)


def needs_init_gradient(config: Any) -> bool:
    """Whether the initial mask needs a gradient of the dense model: a regrowing init, or a one-shot
    prune by a score that reads the gradient (saliency)."""
    from .scores import SCORES

    rule = INIT_RULES.get(config.sparse_init)
    if rule is None or rule.prune_scope is None:
        return False
    score = SCORES.get(getattr(config, "prune_score", "magnitude"))
    return rule.needs_gradient or (score is not None and score.needs == "grad")
