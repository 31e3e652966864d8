"""scikit-learn's 8x8 digits (ships with scikit-learn, nothing is downloaded).

A fixed stratified 75/25 split (random_state=0) that does not depend on the run seed;
pixels scaled to [0, 1] then normalised with the train split's mean/std.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
from torch.utils.data import TensorDataset

from .base import DatasetInfo

NUM_CLASSES = 10
INPUT_SHAPE = (1, 8, 8)


@lru_cache(maxsize=1)
def _split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)
    return tuple(train_test_split(x, d.target, test_size=0.25, stratify=d.target, random_state=0))


def info(spec) -> DatasetInfo:
    x_tr, x_te, _, _ = _split()
    return DatasetInfo("digits", NUM_CLASSES, INPUT_SHAPE, len(x_tr), len(x_te))


def datasets(spec) -> tuple[TensorDataset, TensorDataset]:
    x_tr, x_te, y_tr, y_te = _split()
    mean, std = float(x_tr.mean()), float(x_tr.std())

    def make(x, y):
        t = (torch.from_numpy(x).unsqueeze(1) - mean) / std
        return TensorDataset(t, torch.tensor(y, dtype=torch.long))

    return make(x_tr, y_tr), make(x_te, y_te)
