"""ImageNet-1k as two ImageFolder trees: <root>/train/<wnid>/*.JPEG and <root>/val/<wnid>/*.JPEG."""

from __future__ import annotations

from pathlib import Path

from ..registry import register_dataset
from .base import DataError, DatasetInfo

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
LAYOUT = "<root>/train/<wnid>/*.JPEG and <root>/val/<wnid>/*.JPEG"


@register_dataset("imagenet", reads=("root", "augment"))
def info(spec) -> DatasetInfo:
    return DatasetInfo("imagenet", 1000, (3, 224, 224), 1281167, 50000)


def datasets(spec):
    from torchvision import datasets as tvd
    from torchvision import transforms as T

    if not spec.root:
        raise DataError(f"data.root: ImageNet needs a local root folder laid out as {LAYOUT} (nothing is downloaded)")
    root = Path(spec.root).expanduser()
    for split in ("train", "val"):
        if not (root / split).is_dir():
            raise DataError(
                f"data.root: ImageNet {split} split not found at {root / split}: expected {LAYOUT}; "
                f"nothing is downloaded"
            )
    norm = [T.ToTensor(), T.Normalize(MEAN, STD)]
    aug = [T.RandomResizedCrop(224), T.RandomHorizontalFlip()] if spec.augment else [T.Resize(256), T.CenterCrop(224)]
    try:
        train = tvd.ImageFolder(str(root / "train"), T.Compose(aug + norm))
        test = tvd.ImageFolder(str(root / "val"), T.Compose([T.Resize(256), T.CenterCrop(224)] + norm))
    except (FileNotFoundError, RuntimeError) as e:
        raise DataError(
            f"data.root: ImageNet at {root} is not usable ({str(e).splitlines()[0]}): expected {LAYOUT}"
        ) from None
    return train, test


def train_eval_dataset(spec):
    """The training images with the validation transform: what the validation split is seen through."""
    from torchvision import datasets as tvd
    from torchvision import transforms as T

    datasets(spec)  # the same checks and one-line errors as the training set
    norm = [T.ToTensor(), T.Normalize(MEAN, STD)]
    return tvd.ImageFolder(
        str(Path(spec.root).expanduser() / "train"), T.Compose([T.Resize(256), T.CenterCrop(224)] + norm)
    )
