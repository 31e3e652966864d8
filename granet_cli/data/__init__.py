"""Data registry: `dataset_info(name, **settings)` (cheap) and `build_loaders(name, seed=, **settings)`.

Plain keyword arguments (the names of a spec's `data:` fields; `DataConfig` lists them), so a
caller with a spec passes `**spec.data.model_dump()`. Nothing is downloaded unless `download=True`
(cifar*): cifar*/imagenet read `root`, digits ships with scikit-learn, synthetic is generated from a
fixed seed.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..registry import DATASETS
from .base import DataConfig, DataError, DatasetInfo, val_count

if TYPE_CHECKING:
    from torch.utils.data import DataLoader

# torch is imported by the builders, not here: the spec layer reads DataConfig without loading it

#: every `@register_dataset` of this package (read from the source: `granet_cli.registry`); a
#: dataset's module is imported on first use, so the digits quickstart never loads torchvision
#: (seconds of start-up) and CIFAR/ImageNet never load scikit-learn
DATASET_NAMES: tuple[str, ...] = DATASETS.names()


@dataclass
class Loaders:
    train: DataLoader
    test: DataLoader
    info: DatasetInfo
    val: DataLoader | None = None  # only with data.val_fraction > 0


def _module(spec: DataConfig):
    if spec.name not in DATASET_NAMES:
        raise DataError(f"data.name: unknown dataset {spec.name!r}; choose from {', '.join(DATASET_NAMES)}")
    return sys.modules[DATASETS.get(spec.name).__module__]


def dataset_info(name: str, **settings: Any) -> DatasetInfo:
    """Classes, input shape and split sizes without reading cifar/imagenet files
    (train_size is what is left for training once the validation split is held out)."""
    spec = DataConfig.of(name, settings)
    info = _module(spec).info(spec)
    return _without_val(info, spec)


def dataset_fields(name: str) -> tuple[str, ...]:
    """The `DataConfig` fields dataset `name` reads (the common ones, then its decorator's `reads`);
    the others do not apply to it. Read from the source: nothing is imported."""
    if name not in DATASET_NAMES:
        raise DataError(f"data.name: unknown dataset {name!r}; choose from {', '.join(DATASET_NAMES)}")
    return (*DataConfig.COMMON, *DATASETS.reads(name))


def _without_val(info: DatasetInfo, spec: DataConfig) -> DatasetInfo:
    n_val = val_count(info.train_size, spec.val_fraction)
    return DatasetInfo(info.name, info.num_classes, info.input_shape, info.train_size - n_val, info.test_size)


def build_loaders(name: str, *, seed: int, rank: int = 0, world_size: int = 1, **settings: Any) -> Loaders:
    """Train loader shuffled by a generator seeded from `seed` (same seed -> same batch order);
    with world_size > 1 a DistributedSampler shards it (the trainer calls `set_epoch`).
    `settings`: batch_size, root, val_fraction, ... (the fields of `DataConfig`)."""
    import torch
    from torch.utils.data import DataLoader, DistributedSampler, Subset

    from .split import labels_of, stratified_split

    spec = DataConfig.of(name, settings)
    mod = _module(spec)
    info = mod.info(spec)
    train_ds, test_ds = mod.datasets(spec)
    if spec.name == "imagenet":  # the real folder may differ from the nominal ImageNet-1k sizes
        info = DatasetInfo(info.name, len(train_ds.classes), info.input_shape, len(train_ds), len(test_ds))
    val_ds = None
    if spec.val_fraction > 0:
        # validation samples come from the training set but are seen without augmentation
        train_idx, val_idx = stratified_split(labels_of(train_ds), len(train_ds), spec.val_fraction)
        plain = mod.train_eval_dataset(spec) if hasattr(mod, "train_eval_dataset") else train_ds
        train_ds, val_ds = Subset(train_ds, train_idx), Subset(plain, val_idx)
    info = _without_val(
        DatasetInfo(
            info.name,
            info.num_classes,
            info.input_shape,
            len(train_ds) + (len(val_ds) if val_ds is not None else 0),
            info.test_size,
        ),
        spec,
    )
    gen = torch.Generator().manual_seed(int(seed))
    sampler: DistributedSampler | None = None
    if world_size > 1:
        sampler = DistributedSampler(train_ds, num_replicas=world_size, rank=rank, shuffle=True, seed=int(seed))
    common: dict[str, Any] = dict(num_workers=spec.num_workers, pin_memory=torch.cuda.is_available())
    train = DataLoader(
        train_ds,
        batch_size=spec.batch_size,
        shuffle=sampler is None,
        sampler=sampler,
        generator=gen,
        drop_last=False,
        **common,
    )
    test = DataLoader(test_ds, batch_size=spec.test_batch_size, shuffle=False, drop_last=False, **common)
    val = (
        DataLoader(val_ds, batch_size=spec.test_batch_size, shuffle=False, drop_last=False, **common)
        if val_ds is not None
        else None
    )
    return Loaders(train=train, test=test, info=info, val=val)


__all__ = ["DATASET_NAMES", "DataConfig", "DataError", "DatasetInfo", "Loaders", "build_loaders", "dataset_info"]
