"""Selections written out plainly for the tests' oracles: exact top-k by a stable sort, ties by
position, sharing no code with granet_cli.sparse."""

import torch


def keep_largest(values: torch.Tensor, among: torch.Tensor, k: int) -> torch.Tensor:
    """The k entries of `among` with the largest values (ties: lower position first)."""
    idx = torch.nonzero(among.reshape(-1)).squeeze(1)
    order = torch.sort(values.reshape(-1)[idx], descending=True, stable=True).indices
    out = torch.zeros(values.numel(), dtype=torch.bool)
    out[idx[order[:k]]] = True
    return out.view_as(values)


def keep_smallest(values: torch.Tensor, among: torch.Tensor, k: int) -> torch.Tensor:
    """The k entries of `among` with the smallest values (ties: lower position first)."""
    return keep_largest(-values, among, k)
