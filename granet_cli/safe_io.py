"""Files granet reads from others and writes for them: regular files only, outputs atomic.

Results dbs, specs and run folders travel between people (NFS, S3), so a path may be a symlink,
a FIFO (reading one blocks forever) or a device. Inputs must be regular files (links followed);
outputs are written to a temporary name in the target's own folder and renamed into place, so a
crash or a full disk leaves the old file or the new one, never half of one. A symlinked output
is followed (the file it points to is replaced, the link stays a link).
"""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class PathError(ValueError):
    """A path that is not a regular file where one is needed; the message is one line."""


def kind_of(mode: int) -> str:
    """What a non-regular file is, in words."""
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a regular file"


def check_regular(path: str | os.PathLike, what: str, *, must_exist: bool = False) -> None:
    """Refuse `path` (links followed) if it exists and is not a regular file; or is missing, if `must_exist`."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        if must_exist:
            raise PathError(f"{what} {path}: not found") from None
        return
    except OSError as e:
        raise PathError(f"{what} {path}: cannot read ({e.strerror or e})") from None
    if not stat.S_ISREG(mode):
        kind = kind_of(mode)
        raise PathError(
            f"{what} {path}: is {kind}, not a regular file"
            if kind != "not a regular file"
            else f"{what} {path}: not a regular file"
        )


def real_target(path: str | os.PathLike) -> Path:
    """The file a write to `path` must replace: the end of its symlink chain (the link itself stays)."""
    return Path(os.path.realpath(path))


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(path: str | os.PathLike, what: str = "output") -> Iterator[Path]:
    """A temporary path beside `path` to write to; renamed onto `path` when the block succeeds,
    removed when it fails. The old file (if any) is untouched until the rename."""
    check_regular(path, what)
    target = real_target(path)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        mode = os.stat(target).st_mode & 0o7777 if target.exists() else 0o666 & ~_umask()
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        raise


def write_bytes(path: str | os.PathLike, data: bytes, what: str = "output") -> None:
    """Write `data` to `path` atomically (a temp file in its folder, flushed, then renamed)."""
    with atomic_path(path, what) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())


def write_text(path: str | os.PathLike, text: str, what: str = "output") -> None:
    write_bytes(path, text.encode("utf-8"), what)


def publish(files: list[tuple[Path, bytes]], what: str = "output") -> None:
    """Write a set of files that belong together (a report and its plots): every temp file is
    written first, and only when all are complete are they renamed into place, in the given
    order (put the file that links the others last). A failure before the renames leaves every
    old file as it was."""
    for path, _ in files:
        check_regular(path, what)
    staged: list[tuple[Path, Path]] = []
    try:
        for path, data in files:
            target = real_target(path)
            fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
            staged.append((Path(tmp_name), target))
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            mode = os.stat(target).st_mode & 0o7777 if target.exists() else 0o666 & ~_umask()
            os.chmod(tmp_name, mode)
        while staged:
            tmp, target = staged[0]
            os.replace(tmp, target)
            staged.pop(0)
    finally:
        for tmp, _ in staged:
            try:
                tmp.unlink(missing_ok=True)
            except OSError:
                pass
