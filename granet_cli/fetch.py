"""`granet data fetch`: which datasets can be downloaded, and the one line for those that cannot.
CIFAR-10/100 are fetched by `data.cifar.download` (torchvision's own download and md5 checks).

ImageNet cannot be downloaded (its licence needs a manual sign-up): it stays a local root.
"""

from __future__ import annotations

from pathlib import Path

from .data.base import DataError

DOWNLOADABLE = ("cifar10", "cifar100")
IMAGENET_LAYOUT = "<root>/train/<wnid>/*.JPEG and <root>/val/<wnid>/*.JPEG"


def fetch(name: str, root: str | Path, *, quiet: bool = False) -> Path:
    """Download (if missing or corrupt) and verify one CIFAR dataset under `root`; its folder.

    Raises DataError with one line on a network failure or a checksum mismatch."""
    if name == "imagenet":
        raise DataError(
            f"imagenet cannot be downloaded (its licence needs a sign-up at image-net.org): "
            f"put it under a local root as {IMAGENET_LAYOUT} and set data.root"
        )
    if name not in DOWNLOADABLE:
        raise DataError(
            f"{name}: nothing to download (only {', '.join(DOWNLOADABLE)} are fetched; "
            f"digits ships with scikit-learn, synthetic is generated)"
        )
    from .data.cifar import download

    return download(name, root, quiet=quiet)
