"""One run's life in the results db, written the same way by `granet run` and the sweep driver.

A `RunRecorder` writes the run's row when it starts, one transaction per epoch (the epoch's row
and its mask updates) followed by the trackers, the replay of a run continued from a checkpoint,
and the outcome: `finish` for a run that trained to the end (completed or diverged), `stop` for
one that did not (failed, interrupted), best effort and never raising, so that a row never stays
`running` because the db failed too. The store may be shared (a sweep's, held by the driver) or
opened on `start` (a `granet run` whose db does not exist yet: a run that fails at set-up writes
nothing).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Protocol

from .records import record_for, store_final
from .spec import RunSpec


class EpochLogger(Protocol):
    """A tracker that follows the run's epochs (TensorBoard's logger, say)."""

    def log_epoch(self, row: dict[str, Any], updates: list[dict[str, Any]] | None = None) -> None: ...

    def close(self) -> None: ...


class RunRecorder:
    def __init__(
        self,
        spec: RunSpec,
        run_id: str,
        *,
        sweep_id: str | None = None,
        store: Any = None,
        open_store: Callable[[], Any] | None = None,
        owns_store: bool = False,
        trackers: Iterable[EpochLogger] = (),
    ) -> None:
        """`store`: the results db (None: `open_store()` opens it on `start`); `owns_store`: `close`
        closes it (a `granet run`), else it stays open for others (a sweep's)."""
        self.spec, self.run_id, self.sweep_id = spec, run_id, sweep_id
        self.store = store
        self._open_store = open_store
        self._owns_store = owns_store
        self.trackers = list(trackers)
        self.started = False

    # ------------------------------------------------------------------ the run's life
    def start(self, *, attempts: int | None = None, restart: bool = False) -> None:
        """Register the run as running (again, for a resumed run or a retried trial: attempts counts
        up). `restart` drops its epochs rows: the trainer replays the checkpointed ones next."""
        if self.store is None:
            assert self._open_store is not None, "a recorder needs a store or a way to open one"
            self.store = self._open_store()
        record = record_for(self.spec, self.run_id, self.sweep_id)
        if attempts is not None:
            record["attempts"] = attempts
        self.store.start_run(record)
        self.started = True
        if restart:
            self.restart()

    def restart(self) -> None:
        """Forget the run's epochs and mask updates (a retry that starts over, or a replay next)."""
        self.store.truncate_after(self.run_id, 0, 0)

    def epoch(self, row: dict[str, Any], updates: list[dict[str, Any]] | None = None) -> None:
        """One epochs row and its mask updates in one transaction, then the trackers."""
        self.store.add_epoch(self.run_id, row, mask_updates=updates or [])
        for tracker in self.trackers:
            tracker.log_epoch(row, updates)

    def replay(self, epochs: list[dict[str, Any]], updates: list[dict[str, Any]]) -> None:
        """The rows of a checkpoint a run continues from replace the run's rows."""
        self.restart()
        for row in epochs:
            self.store.add_epoch(self.run_id, row)
        self.store.add_mask_updates(self.run_id, updates)

    def finish(self, status: str, final: dict[str, Any], layers: list[dict[str, Any]], error: str | None) -> None:
        """The outcome of a run that trained to the end: completed (with its layers) or diverged."""
        if status == "completed":
            self.store.finish_run(self.run_id, store_final(final), layers)
        else:
            self.store.fail_run(self.run_id, status, error or status, store_final(final))
        self.close_trackers()

    def stop(self, status: str, error: str, final: dict[str, Any] | None = None) -> str:
        """Record a run that did not train to the end. Never raises: returns '' or, when the db
        could not take it either, a clause saying why (for the caller's one-line error)."""
        self.close_trackers()
        if not self.started or self.store is None:
            return ""
        try:
            self.store.fail_run(self.run_id, status, error, store_final(final) if final else None)
            return ""
        except Exception as e:  # noqa: BLE001 - the caller's error line says why the run stopped
            # e.g. another process held the db's write lock past the timeout: the row stays 'running'
            # until the next `granet run` of this spec on this host finds the process gone (reap_orphans)
            return (
                f"; the results db could not record it either ({e}); its row stays 'running' until the next "
                "granet run of this spec marks it interrupted"
            )

    # ------------------------------------------------------------------ clean-up
    def close_trackers(self) -> None:
        trackers, self.trackers = self.trackers, []
        for tracker in trackers:
            tracker.close()

    def close(self) -> None:
        """Close the trackers, and the store when the recorder opened it. Never raises."""
        self.close_trackers()
        if self._owns_store and self.store is not None:
            try:
                self.store.close()
            except Exception:  # noqa: BLE001 - a db that cannot even close: the error line says why
                pass
