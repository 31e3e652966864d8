"""`granet data fetch` and `data.download: true`: CIFAR-10/100 through torchvision's own
download and md5 checks (the archive's checksum, then every extracted batch file's).

ImageNet cannot be downloaded (its licence needs a manual sign-up): it stays a local root.
"""

from __future__ import annotations

import contextlib
import io
import tarfile
import urllib.error
from pathlib import Path

from .data.base import DataError

DOWNLOADABLE = ("cifar10", "cifar100")
IMAGENET_LAYOUT = "<root>/train/<wnid>/*.JPEG and <root>/val/<wnid>/*.JPEG"


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
    from .data.cifar import _CIFAR

    cls, title, folder = _CIFAR[name][0], _CIFAR[name][1], _CIFAR[name][2]
    root = Path(root).expanduser()
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"--root {root}: cannot create the folder ({e.strerror or e})") from None
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
