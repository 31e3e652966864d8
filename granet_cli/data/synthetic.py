"""Synthetic data, identical across runs and seeds (generated from a fixed seed).

Each sample has a 16-d Gaussian latent z; the input is z mapped through fixed, spatially
smooth random patterns (upsampled from a coarse grid) plus Gaussian noise, and the label is
argmax(z @ W) for a fixed random W. Labels are thus a learnable function of the input, so a
short run of an MLP or a conv net beats chance.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from ..registry import register_dataset
from .base import DatasetInfo

if TYPE_CHECKING:  # torch is imported by the builders: `info` (granet validate) needs none
    import torch
    from torch.utils.data import TensorDataset

DATA_SEED = 20210517  # fixed: the data never depends on the run seed
LATENT_DIM = 16
NOISE = 0.5


@register_dataset("synthetic", reads=("input_shape", "num_classes", "train_size", "test_size"))
def info(spec) -> DatasetInfo:
    return DatasetInfo("synthetic", spec.num_classes, tuple(spec.input_shape), spec.train_size, spec.test_size)


def _patterns(shape: tuple[int, ...], g: torch.Generator) -> torch.Tensor:
    """LATENT_DIM fixed patterns of `shape`, each with unit per-element variance / sqrt(LATENT_DIM)."""
    import torch
    import torch.nn.functional as F

    if len(shape) == 3:
        c, h, w = shape
        coarse = torch.randn(LATENT_DIM, c, min(h, max(4, -(-h // 4))), min(w, max(4, -(-w // 4))), generator=g)
        pats = F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)
    else:
        pats = torch.randn(LATENT_DIM, *shape, generator=g)
    std = pats.flatten(1).std(1).clamp_min(1e-6).view(-1, *[1] * len(shape))
    return pats / std / math.sqrt(LATENT_DIM)


def datasets(spec) -> tuple[TensorDataset, TensorDataset]:
    import torch
    from torch.utils.data import TensorDataset

    g = torch.Generator().manual_seed(DATA_SEED)
    shape, n = tuple(spec.input_shape), spec.train_size + spec.test_size
    pats = _patterns(shape, g)
    w = torch.randn(LATENT_DIM, spec.num_classes, generator=g)
    w = w / w.norm(dim=0)  # equal-norm class directions keep the classes roughly balanced
    z = torch.randn(n, LATENT_DIM, generator=g)
    x = torch.tensordot(z, pats, dims=1) + NOISE * torch.randn(n, *shape, generator=g)
    y = (z @ w).argmax(1)
    return (
        TensorDataset(x[: spec.train_size], y[: spec.train_size]),
        TensorDataset(x[spec.train_size :], y[spec.train_size :]),
    )
