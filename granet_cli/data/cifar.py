"""CIFAR-10/100 from a local `root` in the python pickle format; downloaded there (torchvision's own
download and md5 checks) only with `data.download: true`."""

from __future__ import annotations

import contextlib
import io
import tarfile
import urllib.error
from pathlib import Path

from ..registry import register_dataset
from .base import DataError, DatasetInfo

# name -> (torchvision class, title, folder, num_classes, mean, std); stats as the GraNet reference
_CIFAR = {
    "cifar10": ("CIFAR10", "CIFAR-10", "cifar-10-batches-py", 10, (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
    "cifar100": (
        "CIFAR100",
        "CIFAR-100",
        "cifar-100-python",
        100,
        (0.5071, 0.4865, 0.4409),
        (0.2673, 0.2564, 0.2762),
    ),
}


@register_dataset("cifar10", "cifar100", reads=("root", "augment", "download"))
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


def _tv_class(name: str):
    """torchvision's dataset class for `name`, imported on first use (`info` needs no torchvision)."""
    from torchvision import datasets as tvd

    return getattr(tvd, _CIFAR[name][0])


def datasets(spec):
    from torchvision import transforms as T

    _cls, title, folder, _, mean, std = _CIFAR[spec.name]
    cls = _tv_class(spec.name)
    if not spec.root:
        raise DataError(f"data.root: {title} needs a local root folder containing {folder}/ (nothing is downloaded)")
    if getattr(spec, "download", False):
        download(spec.name, spec.root)  # a no-op (after its md5 checks) when the files are there
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
    from torchvision import transforms as T

    cls, mean, std = _tv_class(spec.name), _CIFAR[spec.name][4], _CIFAR[spec.name][5]
    datasets(spec)  # the same checks and one-line errors as the training set
    return _checked(cls)(
        str(Path(spec.root).expanduser()),
        train=True,
        transform=T.Compose([T.ToTensor(), T.Normalize(mean, std)]),
        download=False,
    )


@contextlib.contextmanager
def _locked(path: Path):
    """An exclusive lock file, so concurrent processes (sweep trials, DDP ranks) download once."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def download(name: str, root: str | Path, *, quiet: bool = False) -> Path:
    """Download (if missing or corrupt) and verify one CIFAR dataset under `root` (torchvision's own
    download, then the archive's and every extracted batch file's md5); its folder.

    Raises DataError with one line on a network failure or a checksum mismatch."""
    cls, title, folder = _tv_class(name), _CIFAR[name][1], _CIFAR[name][2]
    root = Path(root).expanduser()
    created = not root.exists()
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"--root {root}: cannot create the folder ({e.strerror or e})") from None
    try:
        return _download(cls, title, folder, name, root, quiet)
    except DataError:
        # a failed fetch (no network) leaves no lock file, and no empty folder it created itself
        (root / f".granet-fetch-{name}.lock").unlink(missing_ok=True)
        if created and root.is_dir() and not any(root.iterdir()):
            root.rmdir()
        raise


def _download(cls, title: str, folder: str, name: str, root: Path, quiet: bool) -> Path:
    sink = io.StringIO()
    quiet_ctx = (contextlib.redirect_stderr(sink), contextlib.redirect_stdout(sink)) if quiet else ()
    try:
        with contextlib.ExitStack() as stack:
            stack.enter_context(_locked(root / f".granet-fetch-{name}.lock"))  # sweep trials on one node
            for ctx in quiet_ctx:
                stack.enter_context(ctx)
            for train in (True, False):  # downloads the archive once, then checks both splits' md5s
                cls(str(root), train=train, download=True)
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", None) or getattr(e, "strerror", None) or e
        raise DataError(f"{title}: download from {cls.url} failed ({' '.join(str(reason).split())})") from None
    except tarfile.TarError as e:
        raise DataError(
            f"{title}: {root / cls.filename} is not a readable archive ({e}); delete it and retry"
        ) from None
    except RuntimeError as e:  # torchvision: "File not found or corrupted." / "Dataset not found or corrupted."
        archive = root / cls.filename
        raise DataError(
            f"{title}: checksum mismatch ({' '.join(str(e).split())}): {archive} does not have md5 "
            f"{cls.tgz_md5}, or a file under {root / folder} was changed; delete them and retry"
        ) from None
    return root / folder
