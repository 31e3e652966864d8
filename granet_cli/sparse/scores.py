"""One registry of weight scores: every choice of weights is "a score, then an exact top-k".

A score rates each position of one layer's weight; higher means more worth keeping (prune, drop) or
adding (grow). The gradual pruning schedule, the one-shot initial prune and drop-and-grow all ask
this registry for a score by name and hand it to one selection routine (`criteria.choose`), the way
jaxpruner's and RigL's algorithms only supply scores. A new criterion is one decorated function here
plus a test; the spec's choices (`sparsity.prune_score`, `sparsity.prune`, `sparsity.growth`) come
from this registry. ::

    @register_score("my_score", needs="grad")
    def _my_score(inp: ScoreInput) -> Tensor:
        return (inp.weight * inp.grad).abs()

Importing this module must not import torch (`granet_cli.spec` reads the names, and `granet validate` stays
fast): the scores import torch when they run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import torch
    from torch import Tensor

#: how the top-k is taken: the `n` best of the score ("top_k"); half from each sign of the weight
#: ("per_sign": SET's drop, which keeps the sign balance); or every position below a threshold,
#: whatever their number ("below_threshold")
Selection = Literal["top_k", "per_sign", "below_threshold"]
#: what a score reads besides the weight: the dense gradient, the optimizer state, or nothing
Needs = Literal["grad", "optimizer", None]


@dataclass(frozen=True)
class ScoreInput:
    """One layer's inputs to a score. `grad` is the dense gradient (zeros if none), `state` the
    optimizer's state of the weight (momentum, Adam moments), `config` the sparsity config."""

    weight: Tensor
    grad: Tensor | None
    state: dict[str, Any]
    config: Any = None


@dataclass(frozen=True)
class Score:
    name: str
    fn: Callable[[ScoreInput], Tensor]
    needs: Needs = None
    selection: Selection = "top_k"
    #: can rank inactive positions for growth (a score of the weight's value cannot: inactive ones are zero)
    grows: bool = False
    doc: str = ""


SCORES: dict[str, Score] = {}


def register_score(
    name: str, *, needs: Needs = None, selection: Selection = "top_k", grows: bool = False
) -> Callable[[Callable[[ScoreInput], Tensor]], Callable[[ScoreInput], Tensor]]:
    """Register `fn(ScoreInput) -> Tensor` (the weight's shape; higher = keep / grow) as `name`."""

    def register(fn: Callable[[ScoreInput], Tensor]) -> Callable[[ScoreInput], Tensor]:
        if name in SCORES:
            raise ValueError(f"score {name!r} is already registered")
        SCORES[name] = Score(name, fn, needs, selection, grows, (fn.__doc__ or "").strip().split("\n")[0])
        return fn

    return register


def lookup(name: str, field: str = "score") -> Score:
    if name not in SCORES:
        raise ValueError(f"unknown {field} {name!r}; choose from {', '.join(SCORES)}")
    return SCORES[name]


def names(*, selection: Selection | None = None, grows: bool | None = None) -> tuple[str, ...]:
    """Registered score names, optionally only those of one selection kind / that can grow."""
    return tuple(
        n
        for n, s in SCORES.items()
        if (selection is None or s.selection == selection) and (grows is None or s.grows == grows)
    )


def score_of(name: str, weight: Tensor, optimizer: torch.optim.Optimizer | None = None, config: Any = None) -> Tensor:
    """The score `name` of one weight tensor, its inputs gathered from the weight and the optimizer."""
    import torch

    grad = weight.grad if weight.grad is not None else torch.zeros_like(weight)
    state = dict(optimizer.state.get(weight, {})) if optimizer is not None else {}
    return SCORES[name].fn(ScoreInput(weight.detach(), grad.detach(), state, config))


# ----------------------------------------------------------------------------- the scores
@register_score("magnitude")
def _magnitude(inp: ScoreInput) -> Tensor:
    """|w|: the paper's criterion for pruning and for the drop of drop-and-grow."""
    return inp.weight.abs()


@register_score("SET", selection="per_sign")
def _set(inp: ScoreInput) -> Tensor:
    """|w|, taken half from the positive and half from the negative weights (SET's drop)."""
    return inp.weight.abs()


@register_score("threshold", selection="below_threshold")
def _threshold(inp: ScoreInput) -> Tensor:
    """|w|; every active weight below `prune_threshold` goes, however many."""
    return inp.weight.abs()


@register_score("saliency", needs="grad")
def _saliency(inp: ScoreInput) -> Tensor:
    """|w * grad|: first-order Taylor estimate of the loss change when the weight is removed (SNIP)."""
    assert inp.grad is not None
    return (inp.weight * inp.grad).abs()


@register_score("gradient", needs="grad", grows=True)
def _gradient(inp: ScoreInput) -> Tensor:
    """|grad|: RigL's and GraNet's growth criterion."""
    assert inp.grad is not None
    return inp.grad.abs()


@register_score("momentum", needs="optimizer", grows=True)
def _momentum(inp: ScoreInput) -> Tensor:
    """|momentum| (SGD) or |exp_avg / sqrt(exp_avg_sq)| (Adam): Sparse Momentum's criterion; |grad|
    before the optimizer has any state."""
    import torch

    if "exp_avg" in inp.state and "exp_avg_sq" in inp.state:
        return (inp.state["exp_avg"] / (torch.sqrt(inp.state["exp_avg_sq"]) + 1e-8)).abs()
    if inp.state.get("momentum_buffer") is not None:
        return inp.state["momentum_buffer"].abs()
    assert inp.grad is not None
    return inp.grad.abs()


@register_score("random", grows=True)
def _random(inp: ScoreInput) -> Tensor:
    """Uniform noise from the global RNG: SET's growth."""
    import torch

    return torch.rand(inp.weight.shape, device=inp.weight.device)
