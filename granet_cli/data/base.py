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


@dataclass(frozen=True)
class DataConfig:
    """What the dataset modules read: plain values (the spec layer's `data:` fields, by name), so
    the data builders take keyword arguments, timm-style, and never the Pydantic spec."""

    name: str = "digits"
    root: str | None = None  # cifar*/imagenet: the local dataset folder
    batch_size: int = 128
    test_batch_size: int = 512
    num_workers: int = 0
    augment: bool = True
    val_fraction: float = 0.0
    download: bool = False  # cifar*: torchvision's download (md5-checked) when missing
    # synthetic data only
    input_shape: tuple[int, ...] = (3, 32, 32)
    num_classes: int = 10
    train_size: int = 512
    test_size: int = 256

    @classmethod
    def of(cls, name: str, settings: dict) -> DataConfig:
        unknown = sorted(set(settings) - set(cls.__dataclass_fields__))
        if unknown:
            raise TypeError(f"unknown data setting(s) {', '.join(unknown)}")
        if "input_shape" in settings:
            settings = {**settings, "input_shape": tuple(settings["input_shape"])}
        return cls(name=name, **settings)
