"""Exact top-k selection, checked against sorting, on the sampled-bracket and batched paths."""

import pytest
import torch

from granet_cli.sparse import criteria


def check_selection(values, k, largest, among, chosen):
    cand = among if among is not None else torch.ones_like(values, dtype=torch.bool)
    n_cand = int(cand.sum())
    assert chosen.dtype == torch.bool and chosen.shape == values.shape
    assert int(chosen.sum()) == min(k, values.numel())
    if k > n_cand:
        return
    assert not torch.any(chosen & ~cand)
    picked, rest = values[chosen], values[cand & ~chosen]
    if len(picked) and len(rest):
        if largest:
            assert picked.min() >= rest.max()
        else:
            assert picked.max() <= rest.min()
    # the threshold is the k-th value of the sorted candidates
    ordered = values[cand].sort(descending=largest).values
    if k:
        thr = ordered[k - 1]
        at = torch.nonzero(cand.reshape(-1) & (values.reshape(-1) == thr)).squeeze(1)
        taken = chosen.reshape(-1)[at]
        # ties at the threshold are taken by position: a taken tie never follows an untaken one
        assert torch.all(taken[:-1].int() >= taken[1:].int())


@pytest.mark.parametrize("size", [1000, 200_000])
@pytest.mark.parametrize("largest", [True, False])
@pytest.mark.parametrize("ties", [False, True])
def test_top_k_mask_matches_sorting(size, largest, ties):
    g = torch.Generator().manual_seed(size + largest + 2 * ties)
    values = torch.randn(size, generator=g)
    if ties:
        values = values.mul(2).round()  # a handful of distinct values: many ties
    among = torch.rand(size, generator=g) < 0.3
    for k in (1, 7, size // 10, int(among.sum()) - 1, int(among.sum())):
        check_selection(values, k, largest, among, criteria.top_k_mask(values, k, largest=largest, among=among))
        check_selection(values, k, largest, None, criteria.top_k_mask(values, k, largest=largest))


def test_top_k_mask_more_than_candidates_takes_all_candidates_first():
    values = torch.arange(10.0)
    among = values < 3
    chosen = criteria.top_k_mask(values, 5, among=among)
    assert int(chosen.sum()) == 5 and torch.all(chosen[:3])


@pytest.mark.parametrize("batch", [True, False])
def test_top_k_layers_equals_per_layer_selection(monkeypatch, batch):
    monkeypatch.setattr(criteria, "BATCH_LAYERS", batch)
    g = torch.Generator().manual_seed(7)
    shapes = [(64, 3, 3, 3), (300, 400), (16, 16), (128, 64, 3, 3)]
    scores = [torch.randn(s, generator=g) for s in shapes]
    scores[2] = scores[2].round()  # ties
    among = [torch.rand(s, generator=g) < 0.4 for s in shapes]
    counts = [int(a.sum()) for a in among]
    for largest in (True, False):
        ks = [5, counts[1] // 3, 0, counts[3]]
        got = criteria.top_k_layers(scores, ks, largest=largest, among=among)
        for s, k, a, mask in zip(scores, ks, among, got):
            assert torch.equal(mask, criteria.top_k_mask(s, k, largest=largest, among=a))
            check_selection(s, k, largest, a, mask)


def test_counts_and_segment_counts():
    masks = [torch.tensor([True, False, True]), torch.zeros(4, dtype=torch.bool), torch.ones(2, dtype=torch.bool)]
    assert criteria.counts(masks) == [2, 0, 2]
    flat = torch.cat(masks)
    assert criteria.segment_counts(flat, [3, 4, 2]).tolist() == [2, 0, 2]
