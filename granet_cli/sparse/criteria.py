"""Drop and growth criteria, and the exact top-k selection they share.

Every selection returns a boolean tensor with *exactly* the requested count:
`kthvalue` finds the threshold in linear time and ties at the threshold are
broken by position, so counts never drift the way `>= threshold` tests do.
"""

from __future__ import annotations

import torch
from torch import Tensor


def top_k_mask(scores: Tensor, k: int, *, largest: bool = True) -> Tensor:
    """Boolean mask (shape of `scores`) selecting exactly `k` largest (or smallest) entries."""
    flat = scores.reshape(-1)
    n = flat.numel()
    if k <= 0:
        return torch.zeros_like(scores, dtype=torch.bool)
    if k >= n:
        return torch.ones_like(scores, dtype=torch.bool)
    if largest:
        thr = torch.kthvalue(flat, n - k + 1).values
        chosen = flat > thr
    else:
        thr = torch.kthvalue(flat, k).values
        chosen = flat < thr
    missing = k - int(chosen.sum())
    if missing > 0:
        ties = torch.nonzero(flat == thr).squeeze(1)[:missing]
        chosen[ties] = True
    return chosen.view_as(scores)


def _excluding(values: Tensor, allowed: Tensor, fill: float) -> Tensor:
    return torch.where(allowed, values, torch.full_like(values, fill))


# ----------------------------------------------------------------------------- drop
def drop_magnitude(weight: Tensor, mask: Tensor, n: int) -> Tensor:
    """The `n` active weights of smallest magnitude."""
    return top_k_mask(_excluding(weight.detach().abs(), mask, float("inf")), n, largest=False)


def drop_set(weight: Tensor, mask: Tensor, n: int) -> Tensor:
    """SET: half from the smallest positive weights, half from the largest (closest to zero) negative ones."""
    w = weight.detach()
    pos, neg = mask & (w > 0), mask & (w <= 0)
    n_pos = min(int(pos.sum()), (n + 1) // 2)
    n_neg = min(int(neg.sum()), n - n_pos)
    n_pos = min(int(pos.sum()), n - n_neg)  # give the other side's shortfall back
    drop_pos = top_k_mask(_excluding(w, pos, float("inf")), n_pos, largest=False)
    drop_neg = top_k_mask(_excluding(w, neg, float("-inf")), n_neg, largest=True)
    return drop_pos | drop_neg


def drop_threshold(weight: Tensor, mask: Tensor, threshold: float) -> Tensor:
    """Every active weight whose magnitude is below `threshold` (count varies)."""
    return mask & (weight.detach().abs() < threshold)


# ----------------------------------------------------------------------------- grow
def grow_by_score(scores: Tensor, candidates: Tensor, n: int) -> Tensor:
    """The `n` candidates of largest |score| (gradient or momentum growth)."""
    return top_k_mask(_excluding(scores.detach().abs(), candidates, -1.0), n, largest=True)


def grow_random(candidates: Tensor, n: int, generator: torch.Generator | None = None) -> Tensor:
    """Exactly `n` candidates chosen uniformly at random (SET growth)."""
    noise = torch.rand(candidates.shape, device=candidates.device, generator=generator)
    return top_k_mask(_excluding(noise, candidates, -1.0), n, largest=True)


def momentum_scores(optimizer: torch.optim.Optimizer, param: Tensor) -> Tensor | None:
    """Sparse Momentum's growth signal: SGD momentum, or Adam's exp_avg / sqrt(exp_avg_sq)."""
    state = optimizer.state.get(param, {})
    if "exp_avg" in state and "exp_avg_sq" in state:
        return state["exp_avg"] / (torch.sqrt(state["exp_avg_sq"]) + 1e-8)
    return state.get("momentum_buffer")
