"""How long a store waits for another process's lock, how it waits, and the per-sweep claim.

DuckDB lets one process at a time open a file for writing (a POSIX lock on the file), so every
writer takes turns per call (see transactions.py) and retries a conflict with bounded exponential
backoff plus jitter for up to ``$GRANET_DB_LOCK_TIMEOUT`` seconds. A sweep driver additionally
claims its (db, sweep name) pair for its whole run (``claim_sweep``), so a second driver of the
same sweep is refused at once instead of running every point twice.
"""

from __future__ import annotations

import math
import os
import random
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..text import one_line
from .errors import StoreError

#: environment variable: seconds a write waits for another process's lock (default 60)
LOCK_TIMEOUT_ENV = "GRANET_DB_LOCK_TIMEOUT"
DEFAULT_LOCK_TIMEOUT = 60.0
#: seconds a read-only open waits for a writer before it reads a snapshot copy instead
READ_LOCK_WAIT = 2.0
#: the first and the longest sleep between two tries of a locked file (seconds)
BACKOFF_FIRST, BACKOFF_MAX = 0.005, 0.5


def lock_timeout_from_env() -> float:
    """Seconds a write waits for another process's lock: ``$GRANET_DB_LOCK_TIMEOUT``, default 60."""
    raw = os.environ.get(LOCK_TIMEOUT_ENV, "").strip()
    if not raw:
        return DEFAULT_LOCK_TIMEOUT
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not (math.isfinite(value) and value >= 0):
        raise StoreError(f"{LOCK_TIMEOUT_ENV}={raw!r}: must be a number of seconds >= 0")
    return value


def backoff(delay: float, deadline: float) -> float:
    """Sleep about ``delay`` (jittered to 50-100 % so that waiting processes spread out, never past
    ``deadline``) and return the next, doubled delay (capped at ``BACKOFF_MAX``)."""
    time.sleep(max(0.0, min(deadline - time.monotonic(), random.uniform(0.5, 1.0) * delay)))
    return min(2 * delay, BACKOFF_MAX)


@contextmanager
def claim_sweep(db_path: str | os.PathLike, name: str) -> Iterator[None]:
    """Hold the claim "sweep `name` is running into this db" for the block: a second driver of the
    same sweep (same db, same name) is refused at once with a StoreError instead of running every
    point a second time.

    The claim is an exclusive ``flock`` on ``.<db name>.sweep-<name>.lock`` beside the db's file
    (links followed): the kernel drops it when the driver exits, however it exits, so a killed
    sweep leaves no stale claim. The file is removed on release; a claim re-checks that the file it
    locked is still the one at that path (another driver may have just removed it)."""
    import fcntl

    real = Path(os.path.realpath(db_path))
    lock = real.with_name(f".{real.name}.sweep-{name}.lock")
    try:
        real.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise StoreError(f"results db {db_path}: cannot create folder ({one_line(e, 120)})") from None
    while True:
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise StoreError(f"results db {db_path}: cannot claim sweep {name} ({one_line(e, 120)})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            try:
                holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip()
            finally:
                os.close(fd)
            who = f" ({one_line(holder, 80)})" if holder else ""
            raise StoreError(
                f"results db {db_path}: sweep {name} is already running into it{who}; wait for it to end "
                "(its completed points are then skipped) or give another --name"
            ) from None
        try:
            same = os.fstat(fd).st_ino == os.stat(lock).st_ino
        except OSError:
            same = False
        if same:
            break
        os.close(fd)  # removed by the driver that held it just now: claim the new file
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}".encode(), 0)
        yield
    finally:
        try:
            lock.unlink(missing_ok=True)
        except OSError:
            pass
        os.close(fd)
