"""Shared data types (kept apart from the registry to avoid import cycles)."""

from __future__ import annotations

from dataclasses import dataclass


class DataError(ValueError):
    """A dataset problem, as one line that names the path and the expected layout."""


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    num_classes: int
    input_shape: tuple[int, ...]
    train_size: int
    test_size: int
