"""CIFAR-10/100 from a local `root` in the python pickle format; downloaded there (torchvision's own
download and md5 checks) only with `data.download: true`."""

from __future__ import annotations

from pathlib import Path

from torchvision import datasets as tvd
from torchvision import transforms as T

from .base import DataError, DatasetInfo

# name -> (torchvision class, title, folder, num_classes, mean, std); stats as the GraNet reference
_CIFAR = {
    "cifar10": (tvd.CIFAR10, "CIFAR-10", "cifar-10-batches-py", 10, (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
    "cifar100": (
        tvd.CIFAR100,
        "CIFAR-100",
        "cifar-100-python",
        100,
        (0.5071, 0.4865, 0.4409),
        (0.2673, 0.2564, 0.2762),
    ),
}


def info(spec) -> DatasetInfo:
    n_classes = _CIFAR[spec.name][3]
    return DatasetInfo(spec.name, n_classes, (3, 32, 32), 50000, 10000)


def _checked(cls):
    """`cls` checking that its files exist instead of their md5 (lets a real-format subset load)."""
    return type(
        cls.__name__,
        (cls,),
        {
            "meta": {**cls.meta, "md5": None},
            "_check_integrity": lambda self: True,
        },
    )


def datasets(spec):
    cls, title, folder, _, mean, std = _CIFAR[spec.name]
    if not spec.root:
        raise DataError(f"data.root: {title} needs a local root folder containing {folder}/ (nothing is downloaded)")
    if getattr(spec, "download", False):
        from ..fetch import fetch

        fetch(spec.name, spec.root)  # a no-op (after its md5 checks) when the files are there
    path = Path(spec.root).expanduser() / folder
    expected = [f for f, _ in cls.train_list + cls.test_list] + [cls.meta["filename"]]
    if not path.is_dir():
        raise DataError(
            f"data.root: {title} not found at {path}: expected <root>/{folder} "
            f"(the python version from the CIFAR site); nothing is downloaded unless data.download: "
            f"true (or: granet data fetch {spec.name} --root {spec.root})"
        )
    missing = [f for f in expected if not (path / f).is_file()]
    if missing:
        raise DataError(
            f"data.root: {title} at {path} is incomplete, missing {', '.join(missing)}: expected "
            f"<root>/{folder}/{{{','.join(expected)}}}; nothing is downloaded"
        )
    norm = [T.ToTensor(), T.Normalize(mean, std)]
    aug = [T.RandomCrop(32, padding=4), T.RandomHorizontalFlip()] if spec.augment else []
    ds_cls, root = _checked(cls), str(Path(spec.root).expanduser())
    train = ds_cls(root, train=True, transform=T.Compose(aug + norm), download=False)
    test = ds_cls(root, train=False, transform=T.Compose(norm), download=False)
    return train, test


def train_eval_dataset(spec):
    """The training images with the test transform: what the validation split is seen through."""
    cls, _title, _folder, _, mean, std = _CIFAR[spec.name]
    datasets(spec)  # the same checks and one-line errors as the training set
    return _checked(cls)(
        str(Path(spec.root).expanduser()),
        train=True,
        transform=T.Compose([T.ToTensor(), T.Normalize(mean, std)]),
        download=False,
    )
