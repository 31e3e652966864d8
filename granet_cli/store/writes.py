"""What a run writes into a results db: its sweep, its start, each epoch with its mask updates,
its end (completed or failed, with its layers), and the reaping of runs whose process died.

Every call is one transaction (Transactions._tx): an epoch and its mask updates, or a run's final
metrics, status and layers, land together or not at all, so a crash mid-write never leaves a
half-finished run behind. Keys are checked against the column lists of schema.py before anything
is written, and column names in SQL only ever come from those lists; values are parameters.
Timestamps are stored as naive UTC (timezone-aware datetimes are converted to UTC first).
"""

from __future__ import annotations

import json
import os
import socket
from datetime import UTC, datetime
from typing import Any

from .errors import StoreError
from .schema import (
    EPOCH_COLUMNS,
    FAIL_STATUSES,
    FINAL_COLUMNS,
    LAYER_COLUMNS,
    MASK_UPDATE_COLUMNS,
    START_COLUMNS,
    RunStatus,
)
from .transactions import Transactions


def utc_naive(ts: datetime | None) -> datetime:
    """``ts`` as naive UTC (now when None), the form every timestamp is stored in."""
    if ts is None:
        return datetime.now(UTC).replace(tzinfo=None)
    if ts.tzinfo is not None:
        return ts.astimezone(UTC).replace(tzinfo=None)
    return ts


def check_keys(what: str, row: dict, allowed: tuple[str, ...], ignore: tuple[str, ...] = ()) -> None:
    """Refuse a row with keys outside ``allowed`` (and ``ignore``): a caller that drifted from the columns."""
    unknown = sorted(set(row) - set(allowed) - set(ignore))
    if unknown:
        raise StoreError(f"{what}: unknown key(s) {', '.join(unknown)}; expected {', '.join(allowed)}")


#: rows per INSERT statement of `insert_rows`
INSERT_CHUNK = 256


def insert_sql(table: str, columns: tuple[str, ...], *, replace: bool = False, rows: int = 1) -> str:
    """INSERT of `rows` rows of `columns`; column names only ever come from the fixed lists."""
    verb = "INSERT OR REPLACE" if replace else "INSERT"
    one = f"({', '.join('?' * len(columns))})"
    return f"{verb} INTO {table} ({', '.join(columns)}) VALUES {', '.join([one] * rows)}"


def insert_rows(con: Any, table: str, columns: tuple[str, ...], values: list[list], *, replace: bool = False) -> None:
    """Insert rows (one value per column each) with one multi-row statement per INSERT_CHUNK rows:
    DuckDB's executemany runs a statement per row (~3 ms each, 10x one statement's cost per row)."""
    for start in range(0, len(values), INSERT_CHUNK):
        chunk = values[start : start + INSERT_CHUNK]
        con.execute(insert_sql(table, columns, replace=replace, rows=len(chunk)), [v for row in chunk for v in row])


def layer_value(col: str, value: Any) -> Any:
    """Shapes may be given as a list/tuple/torch.Size; they are stored as "[64, 3, 3, 3]"."""
    if col == "shape" and value is not None and not isinstance(value, str):
        try:
            return "[" + ", ".join(str(int(v)) for v in value) + "]"
        except TypeError:
            return str(value)
    return value


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` of this machine still runs (conservative: unsure means alive)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it exists, owned by someone else
        return True
    try:  # a zombie (exited, not yet reaped by its parent) is gone for our purposes
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


class Writes(Transactions):
    """The store's writes, one transaction each."""

    def add_sweep(self, sweep_id: str, name: str, grid: dict, *, created_at: datetime | None = None) -> None:
        """Insert or update a sweep (``created_at`` defaults to now, UTC; kept on update unless given)."""
        grid_json = json.dumps(grid, sort_keys=True, default=str)
        with self._tx() as con:
            exists = con.execute("SELECT 1 FROM sweeps WHERE sweep_id = ?", [sweep_id]).fetchone()
            if exists:
                if created_at is None:
                    con.execute(
                        "UPDATE sweeps SET name = ?, grid_json = ? WHERE sweep_id = ?", [name, grid_json, sweep_id]
                    )
                else:
                    con.execute(
                        "UPDATE sweeps SET name = ?, grid_json = ?, created_at = ? WHERE sweep_id = ?",
                        [name, grid_json, utc_naive(created_at), sweep_id],
                    )
            else:
                con.execute(
                    "INSERT INTO sweeps (sweep_id, name, created_at, grid_json) VALUES (?, ?, ?, ?)",
                    [sweep_id, name, utc_naive(created_at), grid_json],
                )

    def start_run(self, run: dict) -> None:
        """Register a run as 'running'.

        Keys: run_id, sweep_id (may be None), spec_hash, method, model, dataset,
        target_density, seed, spec_json (str, or a dict that is JSON-encoded),
        config_hash (the spec hash without the seed), started_at (datetime; default now), optionally attempts.  The
        row records this process's pid and host, so that ``reap_orphans`` can tell a
        run whose process died from one still training.  When run_id already exists
        (resume) the row is set back to 'running', its error, finished_at and final
        metrics are cleared, the spec fields are refreshed, the original started_at
        kept and attempts counts one more (unless given).  A new row has attempts 1
        (unless given).
        """
        check_keys("start_run", run, START_COLUMNS, ignore=("attempts",))
        if not run.get("run_id"):
            raise StoreError(f"results db {self.path}: start_run needs a run_id")
        spec_json = run.get("spec_json")
        if spec_json is not None and not isinstance(spec_json, str):
            spec_json = json.dumps(spec_json, sort_keys=True, default=str)
        fields = ("sweep_id", "spec_hash", "config_hash", "method", "model", "dataset", "target_density", "seed")
        values = [*(run.get(c) for c in fields), spec_json, os.getpid(), socket.gethostname()]
        attempts = run.get("attempts")
        with self._tx() as con:
            if self._run_exists(con, run["run_id"]):
                clear = ", ".join(f"{c} = NULL" for c in FINAL_COLUMNS)
                con.execute(
                    f"UPDATE runs SET {', '.join(f'{c} = ?' for c in fields)}, spec_json = ?, pid = ?, host = ?, "
                    f"status = ?, error = NULL, finished_at = NULL, {clear}, "
                    "attempts = COALESCE(?, COALESCE(attempts, 1) + 1) WHERE run_id = ?",
                    [*values, RunStatus.RUNNING.value, attempts, run["run_id"]],
                )
            else:
                con.execute(
                    f"INSERT INTO runs (run_id, {', '.join(fields)}, spec_json, pid, host, started_at, status, "
                    f"attempts) VALUES (?{', ?' * (len(fields) + 6)})",
                    [
                        run["run_id"],
                        *values,
                        utc_naive(run.get("started_at")),
                        RunStatus.RUNNING.value,
                        1 if attempts is None else attempts,
                    ],
                )

    def add_epoch(self, run_id: str, row: dict, mask_updates: list[dict] | None = None) -> None:
        """Insert or replace one epochs row (keys: EPOCH_COLUMNS; missing ones are NULL).

        ``mask_updates`` (rows as for add_mask_updates) are appended in the same transaction:
        an epoch and its mask updates land together, at the cost of one write instead of two
        (each write attaches the file anew, see the module docstring)."""
        self.add_epochs(run_id, [row], mask_updates)

    def add_epochs(self, run_id: str, rows: list[dict], mask_updates: list[dict] | None = None) -> None:
        """Insert or replace several epochs rows and append their mask updates, in one transaction."""
        self.add_epoch_batches([(run_id, rows, mask_updates or [])])

    def add_epoch_batches(self, batches: list[tuple[str, list[dict], list[dict]]]) -> None:
        """Epochs rows and mask updates of several runs, (run_id, rows, updates) each, in one transaction.

        Each write attaches the file anew (~15 ms): a sweep's driver, which sees every epoch of every
        trial, writes what arrived within a second together (`recorder.EpochBuffer`)."""
        for run_id, rows, updates in batches:
            for row in rows:
                check_keys("add_epoch", row, EPOCH_COLUMNS, ignore=("run_id",))
                if row.get("epoch") is None:
                    raise StoreError(f"results db {self.path}: add_epoch row for run {run_id} has no epoch")
            for r in updates:
                check_keys("add_mask_updates", r, MASK_UPDATE_COLUMNS, ignore=("run_id",))
        batches = [b for b in batches if b[1] or b[2]]
        if not batches:
            return
        with self._tx() as con:
            for run_id, rows, updates in batches:
                if not self._run_exists(con, run_id):
                    raise StoreError(
                        f"results db {self.path}: epochs for an unknown run {run_id} (call start_run first)"
                    )
                latest = {row["epoch"]: row for row in rows}  # an epoch twice: the later row, as row by row
                values = [[run_id, *(row.get(c) for c in EPOCH_COLUMNS)] for row in latest.values()]
                insert_rows(con, "epochs", ("run_id", *EPOCH_COLUMNS), values, replace=True)
                values = [[run_id, *(r.get(c) for c in MASK_UPDATE_COLUMNS)] for r in updates]
                insert_rows(con, "mask_updates", ("run_id", *MASK_UPDATE_COLUMNS), values)

    def add_mask_updates(self, run_id: str, rows: list[dict]) -> None:
        """Append mask-update rows (keys: MASK_UPDATE_COLUMNS) in one transaction."""
        self.add_epochs(run_id, [], rows)

    def truncate_after(self, run_id: str, epoch: int, step: int) -> None:
        """Resume support: drop epochs after ``epoch`` and mask updates after ``step``."""
        with self._tx() as con:
            con.execute("DELETE FROM epochs WHERE run_id = ? AND epoch > ?", [run_id, epoch])
            con.execute("DELETE FROM mask_updates WHERE run_id = ? AND step > ?", [run_id, step])

    def _final_assignments(self, what: str, final: dict | None) -> tuple[list[str], list[Any]]:
        final = final or {}
        check_keys(what, final, FINAL_COLUMNS)
        cols = [c for c in FINAL_COLUMNS if c in final]
        return [f"{c} = ?" for c in cols], [final[c] for c in cols]

    def finish_run(self, run_id: str, final: dict, layers: list[dict]) -> None:
        """In ONE transaction: replace the run's layers rows, store the final metrics
        (keys: FINAL_COLUMNS), set status 'completed' and finished_at = now (UTC)."""
        sets, vals = self._final_assignments("finish_run", final)
        for r in layers:
            check_keys("finish_run layers", r, LAYER_COLUMNS, ignore=("run_id",))
        with self._tx() as con:
            if not self._run_exists(con, run_id):
                raise StoreError(f"results db {self.path}: finish_run: unknown run {run_id}")
            con.execute("DELETE FROM layers WHERE run_id = ?", [run_id])
            values = [[run_id, *(layer_value(c, r.get(c)) for c in LAYER_COLUMNS)] for r in layers]
            insert_rows(con, "layers", ("run_id", *LAYER_COLUMNS), values)
            con.execute(
                f"UPDATE runs SET {', '.join([*sets, 'status = ?', 'finished_at = ?', 'error = NULL'])} "
                "WHERE run_id = ?",
                [*vals, RunStatus.COMPLETED.value, utc_naive(None), run_id],
            )

    def fail_run(self, run_id: str, status: str, error: str, final: dict | None = None) -> None:
        """Mark a run 'failed', 'diverged' or 'interrupted' (resumable) with its error text and
        optional partial metrics (keys: FINAL_COLUMNS)."""
        if status not in FAIL_STATUSES:
            raise StoreError(
                f"results db {self.path}: fail_run status must be one of {', '.join(FAIL_STATUSES)}, not {status!r}"
            )
        sets, vals = self._final_assignments("fail_run", final)
        with self._tx() as con:
            if not self._run_exists(con, run_id):
                raise StoreError(f"results db {self.path}: fail_run: unknown run {run_id}")
            con.execute(
                f"UPDATE runs SET {', '.join([*sets, 'status = ?', 'error = ?', 'finished_at = ?'])} WHERE run_id = ?",
                [*vals, str(status), error, utc_naive(None), run_id],
            )

    def reap_orphans(self, spec_hash: str | None = None) -> int:
        """Mark 'running' rows whose writer process is gone as 'interrupted'; returns how many.

        Only rows started on this host (``socket.gethostname()``) are judged, by their recorded
        pid: a row of another machine, or of an older file without a pid, is never touched, and
        a pid that exists (or that another process has since reused) counts as alive, so a live
        run is never reaped.  With ``spec_hash`` only that spec's rows are considered.  The
        error becomes "interrupted (process <pid> gone)"; ``granet run --resume`` continues it."""
        sql = "SELECT run_id, pid FROM runs WHERE status = ? AND host = ? AND pid IS NOT NULL"
        params: list = [RunStatus.RUNNING.value, socket.gethostname()]
        if spec_hash is not None:
            sql += " AND spec_hash = ?"
            params.append(spec_hash)
        reaped = 0
        with self._tx() as con:
            for run_id, pid in con.execute(sql, params).fetchall():
                if pid_alive(int(pid)):
                    continue
                con.execute(
                    "UPDATE runs SET status = ?, error = ?, finished_at = ? WHERE run_id = ? AND status = ?",
                    [
                        RunStatus.INTERRUPTED.value,
                        f"interrupted (process {pid} gone)",
                        utc_naive(None),
                        run_id,
                        RunStatus.RUNNING.value,
                    ],
                )
                reaped += 1
        return reaped
