"""scikit-learn's 8x8 digits (the data file ships with scikit-learn; nothing is downloaded).

A fixed stratified 75/25 split that does not depend on the run seed: the one
`train_test_split(..., stratify=target, random_state=0)` makes, kept in digits_split.json
(a test checks it against scikit-learn), so training on digits never imports scikit-learn,
whose import costs seconds. Pixels scaled to [0, 1], then normalised with the train split's
mean/std.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from ..registry import register_dataset
from .base import DataError, DatasetInfo

if TYPE_CHECKING:  # numpy and torch are imported by the builders: `info` (granet validate) needs neither
    import numpy as np
    from torch.utils.data import TensorDataset

NUM_CLASSES = 10
INPUT_SHAPE = (1, 8, 8)
SPLIT_FILE = Path(__file__).with_name("digits_split.json")


def data_file() -> Path:
    """scikit-learn's bundled digits.csv.gz, found without importing scikit-learn."""
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("data.name: digits ships with scikit-learn, which is not installed (pip install scikit-learn)")
    path = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data" / "digits.csv.gz"
    if not path.is_file():
        raise DataError(f"data.name: digits: scikit-learn's data file is missing at {path}")
    return path


@lru_cache(maxsize=1)
def _split_indices() -> dict[str, list[int]]:
    return json.loads(SPLIT_FILE.read_text())


@lru_cache(maxsize=1)
def _split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    import numpy as np

    with gzip.open(data_file(), "rt", encoding="utf-8") as f:
        data = np.loadtxt(f, delimiter=",")
    target = data[:, -1].astype(int)
    images = (data[:, :-1].reshape(-1, 8, 8) / 16.0).astype(np.float32)
    split = _split_indices()
    train, test = np.asarray(split["train"]), np.asarray(split["test"])
    return images[train], images[test], target[train], target[test]


@register_dataset("digits")
def info(spec) -> DatasetInfo:
    data_file()  # the sizes are the split file's; the data must be there all the same
    split = _split_indices()
    return DatasetInfo("digits", NUM_CLASSES, INPUT_SHAPE, len(split["train"]), len(split["test"]))


def datasets(spec) -> tuple[TensorDataset, TensorDataset]:
    import torch
    from torch.utils.data import TensorDataset

    x_tr, x_te, y_tr, y_te = _split()
    mean, std = float(x_tr.mean()), float(x_tr.std())

    def make(x, y):
        t = (torch.from_numpy(x).unsqueeze(1) - mean) / std
        return TensorDataset(t, torch.tensor(y, dtype=torch.long))

    return make(x_tr, y_tr), make(x_te, y_te)
