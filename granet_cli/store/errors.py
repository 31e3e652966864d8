"""The store's one error type, and how a DuckDB or OS error is recognised as a lock conflict or a
full disk: every module of the store raises StoreError, and the retry and wrapping code of
connection.py and transactions.py ask these questions, so they live apart from both."""

from __future__ import annotations

import errno


class StoreError(RuntimeError):
    """A results-db problem; the message is one line naming the file."""


def is_lock_error(e: BaseException) -> bool:
    """Another process holds the file (POSIX lock), or another store of this process has it attached."""
    low = str(e).lower()
    return "could not set lock" in low or "conflicting lock" in low or "unique file handle conflict" in low


def is_no_space(e: BaseException) -> bool:
    """The disk (or the user's quota) is full."""
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    low = str(e).lower()
    return (
        "no space left" in low
        or "enospc" in low
        or "disk quota exceeded" in low
        or ("could not write" in low and "permission denied" not in low)
    )
