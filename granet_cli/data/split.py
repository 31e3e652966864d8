"""The validation split: a fixed, class-stratified hold-out of the training set.

Model selection on the test set is optimistic; the reference selects on a validation
split instead. The split never depends on the run seed (every seed of an experiment
validates on the same samples) and holds out exactly `round(n * fraction)` samples,
shared out over the classes in proportion to their sizes (largest remainder).
"""

from __future__ import annotations

import torch

from .base import val_count

__all__ = ["VAL_SPLIT_SEED", "labels_of", "stratified_split", "val_count"]

#: the split's own seed: fixed, so it is the same for every run seed
VAL_SPLIT_SEED = 0


def labels_of(dataset) -> torch.Tensor | None:
    """Class labels of a dataset without loading its inputs (None if it does not expose them)."""
    targets = getattr(dataset, "targets", None)
    if targets is None and hasattr(dataset, "tensors") and len(dataset.tensors) > 1:
        targets = dataset.tensors[1]
    return torch.as_tensor(targets) if targets is not None else None


def stratified_split(labels: torch.Tensor | None, n: int, fraction: float) -> tuple[list[int], list[int]]:
    """(train indices, val indices), both sorted; val has exactly `val_count(n, fraction)` items."""
    n_val = val_count(n, fraction)
    gen = torch.Generator().manual_seed(VAL_SPLIT_SEED)
    if n_val == 0:
        return list(range(n)), []
    if labels is None:  # no labels to stratify by: a plain seeded random hold-out
        val = torch.randperm(n, generator=gen)[:n_val].tolist()
    else:
        classes, sizes = torch.unique(labels, return_counts=True)
        quota = sizes.double() * n_val / n
        take = quota.floor().long()
        for i in torch.argsort(quota - take, descending=True, stable=True)[: n_val - int(take.sum())]:
            take[i] += 1
        val = []
        for c, k in zip(classes.tolist(), take.tolist()):
            members = torch.nonzero(labels == c).flatten()
            val += members[torch.randperm(len(members), generator=gen)[:k]].tolist()
    held = set(val)
    return [i for i in range(n) if i not in held], sorted(val)
