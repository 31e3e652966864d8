"""Ctrl-C and SIGTERM stop a run, but never in the middle of a results-db write.

DuckDB aborts a statement a KeyboardInterrupt lands in ("Query interrupted"), which would leave
the run's row half-written or `running`. `SignalGuard` turns SIGTERM into `Terminated` (handled
like Ctrl-C: the run is recorded interrupted and can be resumed), makes a signal that arrives
during `db_write` wait for the write's end, and ignores further signals once the outcome is being
recorded (`stopping`).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl-C: the run is marked interrupted and can be resumed."""


class SignalGuard:
    """Installs the handlers for its `with` block (main thread only; elsewhere signals stay as
    they are) and restores the previous ones after."""

    def __init__(self) -> None:
        self.stopping = False  # the outcome is being recorded: further signals are ignored
        self._in_write = False
        self._pending: KeyboardInterrupt | None = None
        self._old: dict[int, Any] = {}

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self.stopping:
            return
        exc = Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()
        if self._in_write:
            self._pending = self._pending or exc
            return
        raise exc

    def db_write(self, write: Callable[[], None]) -> None:
        """Run `write` whole; a signal that came meanwhile is raised once it is done."""
        self._in_write = True
        try:
            write()
        finally:
            self._in_write = False
        if self._pending is not None:
            exc, self._pending = self._pending, None
            raise exc

    def __enter__(self) -> SignalGuard:
        if threading.current_thread() is threading.main_thread():
            self._old = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)
        self._old = {}
