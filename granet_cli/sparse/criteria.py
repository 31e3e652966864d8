"""Drop and growth criteria, and the exact top-k selection they share.

Every selection returns a boolean tensor with *exactly* the requested count:
the threshold is the k-th value and ties at the threshold are broken by
position, so counts never drift the way `>= threshold` tests do. Selections run
among candidate entries (`among`: the active weights for a drop, the inactive
ones for growth) without filled full-size copies, and large inputs rank only
the few entries that a small random sample brackets (see `kth_smallest`).

`top_k_layers` makes the selection of every layer at once; on CUDA it works on
all layers laid end to end, so that selection costs a few dozen kernel launches
and a handful of device syncs for the whole model instead of dozens per layer.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import accumulate

import torch
from torch import Tensor

#: inputs up to this size are ranked whole; larger ones through a sampled bracket
_RANK_WHOLE = 1 << 16
#: entries drawn (per tensor) for the bracket's sample
_SAMPLES = 1 << 14
#: `top_k_layers` batches all layers: None = on CUDA only (per layer is faster on CPU)
BATCH_LAYERS: bool | None = None


def count(mask: Tensor) -> int:
    """Number of True entries (`mask.sum()` would first copy the mask to int64)."""
    return int(torch.count_nonzero(mask))


def counts(masks: Sequence[Tensor]) -> list[int]:
    """Number of True entries of each mask, fetched together (one device sync in all)."""
    if not masks:
        return []
    if masks[0].is_cuda:
        return segment_counts(torch.cat([m.reshape(-1) for m in masks]), [m.numel() for m in masks]).tolist()
    return torch.stack([torch.count_nonzero(m) for m in masks]).tolist()


def segment_counts(flat: Tensor, sizes: Sequence[int]) -> Tensor:
    """True entries of each consecutive segment (lengths `sizes`) of a flat boolean tensor."""
    if flat.is_cuda:  # one cumulative sum, not a reduction (and its launches) per segment
        running = torch.cat([flat.new_zeros(1, dtype=torch.int64), flat.cumsum(0)])
        ends = running[torch.tensor([0, *accumulate(sizes)], device=flat.device)]
        return ends.diff()
    return torch.stack([torch.count_nonzero(part) for part in flat.split(sizes)])


def _kth(values: Tensor, k: int) -> Tensor:
    """k-th smallest (1-based) of a 1-D tensor. CUDA's kthvalue runs one thread block per
    slice, far slower there than a (radix) sort of the few entries that reach this point."""
    if values.device.type == "cpu":
        return torch.kthvalue(values, k).values
    return values.sort().values[k - 1]


def _bracket(sample: Tensor, m: Tensor, ranks: Tensor, n: Tensor) -> tuple[Tensor, Tensor]:
    """Per row of `sample` (sorted; its first m entries are candidates): bounds [lo, hi] around
    the rank-th smallest of n candidates, 3 sqrt(m) sample ranks (over 6 sigma) to either side."""
    m = m.to(torch.float64)
    pos = (ranks - 0.5) * m / n.clamp(min=1)
    margin = 3 * m.sqrt() + 1
    lo_at, hi_at = (pos - margin).floor().long(), (pos + margin).ceil().long()
    last = sample.shape[-1] - 1
    lo = sample.gather(-1, lo_at.clamp(0, last).unsqueeze(-1)).squeeze(-1)
    hi = sample.gather(-1, hi_at.clamp(0, last).unsqueeze(-1)).squeeze(-1)
    return torch.where(lo_at >= 0, lo, -math.inf), torch.where(hi_at < m, hi, math.inf)


def _sample(flat: Tensor, cand: Tensor | None, starts: Tensor, sizes: Tensor) -> tuple[Tensor, Tensor]:
    """`_SAMPLES` random entries of each segment, sorted, non-candidates last (as +inf), and
    how many of them are candidates. A fixed-seed generator: the global RNG is never touched."""
    gen = torch.Generator(device=flat.device).manual_seed(0)
    u = torch.rand(len(sizes), _SAMPLES, generator=gen, device=flat.device, dtype=torch.float64)
    picks = starts[:, None] + torch.minimum((u * sizes[:, None]).long(), sizes[:, None] - 1)
    sample = flat[picks]
    if cand is None:
        return sample.sort(dim=-1).values, torch.full_like(sizes, _SAMPLES)
    in_cand = cand[picks]
    return torch.where(in_cand, sample, math.inf).sort(dim=-1).values, in_cand.sum(-1)


def kth_smallest(values: Tensor, k: int, among: Tensor | None = None, n: int | None = None) -> Tensor:
    """The k-th smallest (1-based) of `values[among]` (of all `values` if `among` is None),
    exactly the value `torch.kthvalue` gives; `n` is the number of candidates, if known.

    Large inputs: the matching quantile of a random sample of the candidates, widened by
    3 sqrt(sample size) ranks (over 6 standard deviations) on either side, gives a bracket
    [lo, hi]; counting the candidates below `lo` tells whether the answer lies inside, and
    then only the candidates inside the bracket (a few percent) are ranked. A bracket that
    misses falls back to ranking all candidates.
    """
    flat = values.reshape(-1)
    cand = among.reshape(-1) if among is not None else None
    if flat.numel() <= _RANK_WHOLE:
        return _kth(flat if cand is None else flat[cand], k)
    if n is None:
        n = flat.numel() if cand is None else count(cand)
    size = torch.tensor([flat.numel()], device=flat.device)
    sample, m = _sample(flat, cand, torch.zeros_like(size), size)
    lo, hi = _bracket(
        sample,
        m,
        torch.tensor([float(k)], device=flat.device, dtype=torch.float64),
        torch.tensor([float(n)], device=flat.device, dtype=torch.float64),
    )
    below, inside = flat < lo, (flat >= lo) & (flat <= hi)
    if cand is not None:
        below &= cand
        inside &= cand
    n_below, n_inside = counts([below, inside])
    if n_below < k <= n_below + n_inside:
        return _kth(flat[inside], k - n_below)
    return _kth(flat if cand is None else flat[cand], k)


def _ties_by_position(flat: Tensor, k: int, thr: Tensor, largest: bool, cand: Tensor | None) -> Tensor:
    """Exactly k: every candidate strictly beyond `thr`, then the first ones equal to it."""
    chosen = flat > thr if largest else flat < thr
    at_thr = flat == thr
    if cand is not None:
        chosen &= cand
        at_thr &= cand
    ties = torch.nonzero(at_thr).squeeze(1)[: k - count(chosen)]
    chosen[ties] = True
    return chosen


def top_k_mask(scores: Tensor, k: int, *, largest: bool = True, among: Tensor | None = None) -> Tensor:
    """Boolean mask (shape of `scores`) selecting exactly `k` largest (or smallest) entries,
    among the candidates `among` only (all entries if None).

    Should `k` exceed the number of candidates, all of them are selected plus the first
    non-candidates by position (as if non-candidates scored -inf, or +inf for smallest).
    """
    flat = scores.reshape(-1)
    cand = among.reshape(-1) if among is not None else None
    n = flat.numel() if cand is None else count(cand)
    if k <= 0:
        return torch.zeros_like(scores, dtype=torch.bool)
    if k >= flat.numel():
        return torch.ones_like(scores, dtype=torch.bool)
    if k > n:
        assert cand is not None  # k < flat.numel() here, so k > n only with candidates
        filled = torch.where(cand, flat, -math.inf if largest else math.inf)
        return top_k_mask(filled.view_as(scores), k, largest=largest)
    thr = kth_smallest(flat, n - k + 1 if largest else k, cand, n)
    chosen = flat >= thr if largest else flat <= thr
    if cand is not None:
        chosen &= cand
    if count(chosen) != k:  # ties at the threshold
        chosen = _ties_by_position(flat, k, thr, largest, cand)
    return chosen.view_as(scores)


def top_k_layers(
    scores: Sequence[Tensor],
    ks: Sequence[int],
    *,
    largest: bool = True,
    among: Sequence[Tensor] | None = None,
    n: Sequence[int] | None = None,
) -> list[Tensor]:
    """`top_k_mask(scores[i], ks[i], among=among[i])` for every i: the very same masks.

    `n`, if given, holds the candidate counts. Batched (see `BATCH_LAYERS`), all tensors are
    laid end to end and every step below runs once for all of them: sample, bracket,
    count, rank the few bracketed candidates, threshold; a tensor whose bracket missed,
    whose threshold has ties or whose k is trivial is then redone alone.
    """
    cands = list(among) if among is not None else [None] * len(scores)
    batch = BATCH_LAYERS if BATCH_LAYERS is not None else (bool(scores) and scores[0].is_cuda)
    if not batch or len(scores) < 2:
        return [top_k_mask(s, k, largest=largest, among=a) for s, k, a in zip(scores, ks, cands)]
    sizes = [s.numel() for s in scores]
    n = list(n) if n is not None else (sizes if among is None else counts(among))
    flat = torch.cat([s.reshape(-1) for s in scores])
    cand = None if among is None else torch.cat([a.reshape(-1) for a in among])
    regular = [0 < k <= c and k < size for k, c, size in zip(ks, n, sizes)]
    ranks = [(c - k + 1 if largest else k) if ok else 1 for k, c, ok in zip(ks, n, regular)]
    thr = _kth_layers(flat, cand, sizes, ranks, n, regular)
    chosen = flat >= _spread(thr, sizes) if largest else flat <= _spread(thr, sizes)
    if cand is not None:
        chosen &= cand
    parts = list(chosen.split(sizes))
    got = segment_counts(chosen, sizes).tolist()
    for i, (s, k, a) in enumerate(zip(scores, ks, cands)):
        if not regular[i]:
            parts[i].copy_(top_k_mask(s, k, largest=largest, among=a).reshape(-1))
        elif got[i] != k:
            cand_i = None if a is None else a.reshape(-1)
            parts[i].copy_(_ties_by_position(s.reshape(-1), k, thr[i], largest, cand_i))
    return [part.view_as(s) for part, s in zip(parts, scores)]


def _spread(per_segment: Tensor, sizes: Sequence[int]) -> Tensor:
    """Each segment's value repeated over that segment (a flat tensor of sum(sizes))."""
    return torch.cat([v.expand(size) for v, size in zip(per_segment.unbind(), sizes)])


def _kth_layers(
    flat: Tensor, cand: Tensor | None, sizes: list[int], ranks: list[int], n: list[int], wanted: list[bool]
) -> Tensor:
    """Per segment i with wanted[i]: the ranks[i]-th smallest of its candidates (`kth_smallest`
    on every segment at once); the other entries of the result are undefined."""
    dev = flat.device
    size_t = torch.tensor(sizes, device=dev)
    sample, m = _sample(flat, cand, size_t.cumsum(0) - size_t, size_t)
    lo, hi = _bracket(
        sample,
        m,
        torch.tensor(ranks, device=dev, dtype=torch.float64),
        torch.tensor(n, device=dev, dtype=torch.float64),
    )
    lo_flat = _spread(lo, sizes)
    below, inside = flat < lo_flat, flat >= lo_flat
    del lo_flat
    inside &= flat <= _spread(hi, sizes)
    if cand is not None:
        below &= cand
        inside &= cand
    n_below, n_inside = torch.stack([segment_counts(below, sizes), segment_counts(inside, sizes)]).tolist()
    hits = [i for i, ok in enumerate(wanted) if ok and n_below[i] < ranks[i] <= n_below[i] + n_inside[i]]
    misses = sorted(set(i for i, ok in enumerate(wanted) if ok) - set(hits))
    thr = torch.zeros(len(sizes), dtype=flat.dtype, device=dev)
    if hits:
        thr[hits] = _kth_runs(flat[inside], n_inside, [(i, ranks[i] - n_below[i]) for i in hits])
    parts, cand_parts = flat.split(sizes), (cand.split(sizes) if cand is not None else None)
    for i in misses:  # the bracket missed: rank that whole segment
        thr[i] = _kth(parts[i] if cand_parts is None else parts[i][cand_parts[i]], ranks[i])
    return thr


def _kth_runs(values: Tensor, lengths: list[int], wanted: list[tuple[int, int]]) -> Tensor:
    """For each (i, k) in `wanted`: the k-th smallest of run i, the runs being consecutive
    pieces of `values` with the given lengths. CUDA: one sort by (run, value) for all."""
    if values.device.type == "cpu":
        runs = values.split(lengths)
        return torch.stack([torch.kthvalue(runs[i], k).values for i, k in wanted])
    run = torch.repeat_interleave(
        torch.arange(len(lengths), device=values.device),
        torch.tensor(lengths, device=values.device),
        output_size=values.numel(),
    )
    values, order = values.sort(stable=True)
    _, by_run = run[order].sort(stable=True)
    starts = [0, *accumulate(lengths)]
    return values[by_run][[starts[i] + k - 1 for i, k in wanted]]


# ----------------------------------------------------------------------------- one choice by a score
def choose(
    scores: Sequence[Tensor],
    among: Sequence[Tensor],
    ns: Sequence[int],
    *,
    lowest: bool,
    selection: str = "top_k",
    weights: Sequence[Tensor] | None = None,
    threshold: float | None = None,
    n_among: Sequence[int] | None = None,
) -> list[Tensor]:
    """Every choice of weights: per layer, exactly `ns[i]` of the candidates `among[i]` with the
    lowest (prune, drop) or highest (grow) `scores[i]`, ties by position.

    `selection` (a score's `scores.Selection`): "top_k" as above (all layers at once, see
    `top_k_layers`); "per_sign" half from the positive, half from the other `weights` (SET);
    "below_threshold" every candidate scoring below `threshold`, whatever `ns` says.
    """
    if selection == "top_k":
        return top_k_layers(scores, ns, largest=not lowest, among=among, n=n_among)
    if selection == "per_sign":
        assert weights is not None, "per_sign needs the weights' signs"
        return [_per_sign(s, w.detach(), a, n, lowest) for s, w, a, n in zip(scores, weights, among, ns)]
    if selection == "below_threshold":
        assert threshold is not None, "below_threshold needs a threshold"
        return [a & (s < threshold) for s, a in zip(scores, among)]
    raise ValueError(f"unknown selection {selection!r}")


def _per_sign(score: Tensor, weight: Tensor, among: Tensor, n: int, lowest: bool) -> Tensor:
    """`n` of `among`: half (rounded up) from the positive weights, the rest from the others, each
    side giving its shortfall to the other."""
    pos, neg = among & (weight > 0), among & (weight <= 0)
    n_pos = min(count(pos), (n + 1) // 2)
    n_neg = min(count(neg), n - n_pos)
    n_pos = min(count(pos), n - n_neg)
    return top_k_mask(score, n_pos, largest=not lowest, among=pos) | top_k_mask(
        score, n_neg, largest=not lowest, among=neg
    )


def grow_by_score(scores: Tensor, candidates: Tensor, n: int) -> Tensor:
    """The `n` candidates of largest |score| (the one-shot regrowth of the prune_and_grow inits)."""
    return top_k_mask(scores.detach().abs(), n, largest=True, among=candidates)


def grow_random(candidates: Tensor, n: int, generator: torch.Generator | None = None) -> Tensor:
    """Exactly `n` candidates chosen uniformly at random (random initial masks)."""
    noise = torch.rand(candidates.shape, device=candidates.device, generator=generator)
    return top_k_mask(noise, n, largest=True, among=candidates)
