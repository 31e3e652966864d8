"""Shared data types (kept apart from the registry to avoid import cycles)."""

from __future__ import annotations

from dataclasses import MISSING, dataclass, field
from typing import Any


class DataError(ValueError):
    """A dataset problem, as one line that names the path and the expected layout."""


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    num_classes: int
    input_shape: tuple[int, ...]
    train_size: int
    test_size: int


def val_count(n: int, fraction: float) -> int:
    """How many of `n` training samples the validation split (split.py) holds out."""
    return int(round(n * fraction)) if fraction > 0 else 0


def _setting(default: Any = MISSING, doc: str = "", *, factory: Any = MISSING, **bounds: Any) -> Any:
    """A DataConfig field with its help text and Pydantic constraints (`bounds`: gt, ge, lt,
    min_length, ...) as plain metadata; the spec layer builds `DataSpec` from these."""
    meta = {"doc": doc, "bounds": bounds}
    if factory is not MISSING:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class DataConfig:
    """What the dataset modules read, and the one definition of a spec's `data:` fields:
    `spec.DataSpec` is generated from these (types, defaults, bounds, help). Plain values, so the
    data builders take keyword arguments, timm-style, and never the Pydantic spec."""

    name: str = _setting("digits", "a dataset registered in granet_cli/data (digits, cifar10, cifar100, ...)")
    root: str | None = _setting(None, "local dataset folder (cifar*/imagenet); never downloaded")
    batch_size: int = _setting(128, gt=0)
    test_batch_size: int = _setting(512, gt=0)
    num_workers: int = _setting(0, ge=0)
    augment: bool = _setting(True, "the reference's training augmentation (cifar/imagenet)")
    val_fraction: float = _setting(
        0.0,
        "fraction of the training set held out for validation (fixed, stratified by class, the same for "
        "every run seed); > 0 enables selected_test_acc, the reference's model selection",
        ge=0,
        lt=1,
    )
    download: bool = _setting(
        False,
        "cifar10/cifar100: download into root with torchvision (md5-checked) when missing; never part of the spec hash",
    )
    # synthetic data only (what each dataset reads: its `@register_dataset(..., reads=...)`)
    input_shape: list[int] = _setting(
        factory=lambda: [3, 32, 32],
        doc="(C, H, W) for conv models; 1 to 3 positive sizes for mlp",
        min_length=1,
        max_length=3,
    )
    num_classes: int = _setting(10, gt=1)
    train_size: int = _setting(512, gt=0)
    test_size: int = _setting(256, gt=0)

    #: the fields every dataset reads (the loaders); the others only where a dataset's `reads` names them
    COMMON = ("name", "batch_size", "test_batch_size", "num_workers", "val_fraction")

    @classmethod
    def of(cls, name: str, settings: dict) -> DataConfig:
        unknown = sorted(set(settings) - set(cls.__dataclass_fields__))
        if unknown:
            raise TypeError(f"unknown data setting(s) {', '.join(unknown)}")
        return cls(name=name, **settings)
