"""One run's life in the results db, written the same way by `granet run` and the sweep driver.

A `RunRecorder` writes the run's row when it starts, one transaction per epoch (the epoch's row
and its mask updates) followed by the trackers -- or, in a sweep's driver, through an `EpochBuffer`
that writes every trial's epochs of a second in one transaction -- the replay of a run continued from a checkpoint,
and the outcome: `finish` for a run that trained to the end (completed or diverged), `stop` for
one that did not (failed, interrupted), best effort and never raising, so that a row never stays
`running` because the db failed too. The store may be shared (a sweep's, held by the driver) or
opened on `start` (a `granet run` whose db does not exist yet: a run that fails at set-up writes
nothing).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from .records import record_for, store_final
from .spec import RunSpec


class EpochLogger(Protocol):
    """A tracker that follows the run's epochs (TensorBoard's logger, say)."""

    def log_epoch(self, row: dict[str, Any], updates: list[dict[str, Any]] | None = None) -> None: ...

    def close(self) -> None: ...


class EpochBuffer:
    """Epochs rows (with their mask updates) of many runs, written together: at most one transaction
    per `every` seconds for all of them, whenever the owner calls `flush_if_due`.

    Why: a sweep trial waits while the driver handles its report, and a write attaches the db anew
    (~15 ms), so a write per report held each trial up, and a driver writing every trial's epochs
    one by one would not keep up with many trials. The driver flushes when it is idle between
    events, and before anything else it writes about a run (its outcome, a replay)."""

    def __init__(self, store: Any, every: float) -> None:
        self.store, self.every = store, every
        self.pending: dict[str, tuple[list[dict[str, Any]], list[dict[str, Any]]]] = {}
        self.since = 0.0  # monotonic time of the oldest pending epoch

    def add(self, run_id: str, rows: list[dict[str, Any]], updates: list[dict[str, Any]]) -> None:
        if not self.pending:
            self.since = time.monotonic()
        waiting_rows, waiting_updates = self.pending.setdefault(run_id, ([], []))
        waiting_rows.extend(rows)
        waiting_updates.extend(updates)

    def drop(self, run_id: str) -> None:
        """Forget a run's pending epochs (it starts over)."""
        self.pending.pop(run_id, None)

    def flush_if_due(self) -> None:
        if self.pending and time.monotonic() - self.since >= self.every:
            self.flush()

    def flush(self) -> None:
        """Write every pending epoch now, in one transaction."""
        if self.pending:
            batches = [(run_id, rows, updates) for run_id, (rows, updates) in self.pending.items()]
            self.pending = {}
            self.store.add_epoch_batches(batches)


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
        buffer: EpochBuffer | None = None,
    ) -> None:
        """`store`: the results db (None: `open_store()` opens it on `start`); `owns_store`: `close`
        closes it (a `granet run`), else it stays open for others (a sweep's). `buffer`: epochs wait
        there to be written with other runs' (a sweep's driver); None: each is written at once."""
        self.spec, self.run_id, self.sweep_id = spec, run_id, sweep_id
        self.store = store
        self._open_store = open_store
        self._owns_store = owns_store
        self.trackers = list(trackers)
        self.started = False
        self.buffer = buffer

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
        if self.buffer is not None:
            self.buffer.drop(self.run_id)
        self.store.truncate_after(self.run_id, 0, 0)

    def epoch(self, row: dict[str, Any], updates: list[dict[str, Any]] | None = None) -> None:
        """One epochs row and its mask updates in one transaction, then the trackers."""
        self.epochs([(row, updates or [])])

    def epochs(self, batch: list[tuple[dict[str, Any], list[dict[str, Any]]]]) -> None:
        """Several epochs (row, its mask updates), oldest first, in one transaction (or into the
        buffer), then the trackers."""
        rows, updates = [row for row, _ in batch], [u for _, ups in batch for u in ups]
        if self.buffer is not None:
            self.buffer.add(self.run_id, rows, updates)
        else:
            self.store.add_epochs(self.run_id, rows, updates)
        for row, ups in batch:
            for tracker in self.trackers:
                tracker.log_epoch(row, ups)

    def flush(self) -> None:
        """Epochs still in the buffer are written first (everything else about the run comes after them)."""
        if self.buffer is not None:
            self.buffer.flush()

    def replay(self, epochs: list[dict[str, Any]], updates: list[dict[str, Any]]) -> None:
        """The rows of a checkpoint a run continues from replace the run's rows (one transaction)."""
        self.restart()
        self.store.add_epochs(self.run_id, epochs, updates)

    def finish(self, status: str, final: dict[str, Any], layers: list[dict[str, Any]], error: str | None) -> None:
        """The outcome of a run that trained to the end: completed (with its layers) or diverged."""
        self.flush()
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
            self.flush()
        except Exception:  # noqa: BLE001 - the epochs waiting are lost; the outcome is still recorded
            if self.buffer is not None:
                self.buffer.drop(self.run_id)
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
