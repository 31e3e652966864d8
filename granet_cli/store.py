"""DuckDB results store: the only module that talks to DuckDB.

One file (default ``results/granet.duckdb``, or ``$GRANET_DB``) holds every run,
its per-epoch metrics, per-layer final densities, mask-update history and the
sweeps the runs belong to.  Accuracies are fractions in [0, 1]; timestamps are
stored as naive UTC (timezone-aware datetimes are converted to UTC first).

Every multi-statement write runs inside ``BEGIN``/``COMMIT`` and is rolled back
on error, so a crash mid-write never leaves a half-finished run behind.  All SQL
is parameterised; column names only ever come from the fixed lists below.

DuckDB allows one writer *process* per file.  A read-only ``Store`` opened while
another process holds the file for writing (a sweep still running) falls back
to reading a private snapshot copy of the file (``snapshot_if_locked``).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import duckdb

DEFAULT_DB_PATH = Path("results") / "granet.duckdb"
RUN_STATUSES = ("running", "completed", "failed", "diverged")

#: runs columns holding the final metrics of a run (finish_run / fail_run keys)
FINAL_COLUMNS = (
    "final_test_acc", "best_test_acc", "final_density", "itop_rate",
    "train_flops_frac", "inference_flops_frac", "wall_seconds", "final_test_acc5", "samples_per_second",
)
#: keys start_run reads from its dict (started_at defaults to now)
START_COLUMNS = (
    "run_id", "sweep_id", "spec_hash", "method", "model", "dataset",
    "target_density", "seed", "spec_json", "started_at",
)
RUN_COLUMNS = (
    "run_id", "sweep_id", "spec_hash", "method", "model", "dataset", "target_density", "seed",
    "status", *FINAL_COLUMNS, "spec_json", "started_at", "finished_at", "error",
)
EPOCH_COLUMNS = (
    "epoch", "step", "lr", "train_loss", "train_acc", "test_loss", "test_acc",
    "density", "itop_rate", "seconds", "test_acc5",
)
LAYER_COLUMNS = ("name", "shape", "numel", "final_density")
MASK_UPDATE_COLUMNS = ("step", "target_density", "dropped", "grown", "density")

SCHEMA = (
    """
    CREATE TABLE IF NOT EXISTS sweeps (
        sweep_id   VARCHAR PRIMARY KEY,
        name       VARCHAR,
        created_at TIMESTAMP,
        grid_json  VARCHAR
    )""",
    """
    CREATE TABLE IF NOT EXISTS runs (
        run_id               VARCHAR PRIMARY KEY,
        sweep_id             VARCHAR,
        spec_hash            VARCHAR,
        method               VARCHAR,
        model                VARCHAR,
        dataset              VARCHAR,
        target_density       DOUBLE,
        seed                 INTEGER,
        status               VARCHAR,   -- running | completed | failed | diverged
        final_test_acc       DOUBLE,
        best_test_acc        DOUBLE,
        final_density        DOUBLE,
        itop_rate            DOUBLE,
        train_flops_frac     DOUBLE,
        inference_flops_frac DOUBLE,
        wall_seconds         DOUBLE,
        final_test_acc5      DOUBLE,    -- top-5, datasets with >= 100 classes
        samples_per_second   DOUBLE,
        spec_json            VARCHAR,
        started_at           TIMESTAMP,
        finished_at          TIMESTAMP,
        error                VARCHAR
    )""",
    """
    CREATE TABLE IF NOT EXISTS epochs (
        run_id     VARCHAR,
        epoch      INTEGER,
        step       BIGINT,
        lr         DOUBLE,
        train_loss DOUBLE,
        train_acc  DOUBLE,
        test_loss  DOUBLE,
        test_acc   DOUBLE,
        density    DOUBLE,
        itop_rate  DOUBLE,
        seconds    DOUBLE,
        test_acc5  DOUBLE,
        PRIMARY KEY (run_id, epoch)
    )""",
    # files written before these columns existed gain them (no-ops on new files)
    "ALTER TABLE runs ADD COLUMN IF NOT EXISTS final_test_acc5 DOUBLE",
    "ALTER TABLE runs ADD COLUMN IF NOT EXISTS samples_per_second DOUBLE",
    "ALTER TABLE epochs ADD COLUMN IF NOT EXISTS test_acc5 DOUBLE",
    """
    CREATE TABLE IF NOT EXISTS layers (
        run_id        VARCHAR,
        name          VARCHAR,
        shape         VARCHAR,
        numel         BIGINT,
        final_density DOUBLE
    )""",
    """
    CREATE TABLE IF NOT EXISTS mask_updates (
        run_id         VARCHAR,
        step           BIGINT,
        target_density DOUBLE,
        dropped        BIGINT,
        grown          BIGINT,
        density        DOUBLE
    )""",
)
TABLES = ("sweeps", "runs", "epochs", "layers", "mask_updates")


class StoreError(RuntimeError):
    """A results-db problem; the message is one line naming the file."""


def default_db_path() -> Path:
    """``$GRANET_DB`` if set (and non-empty), else ``results/granet.duckdb``."""
    env = os.environ.get("GRANET_DB")
    return Path(env) if env else DEFAULT_DB_PATH


def _utc_naive(ts: datetime | None) -> datetime:
    if ts is None:
        return datetime.now(timezone.utc).replace(tzinfo=None)
    if ts.tzinfo is not None:
        return ts.astimezone(timezone.utc).replace(tzinfo=None)
    return ts


def _one_line(msg: object, limit: int = 300) -> str:
    text = " ".join(str(msg).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _check_keys(what: str, row: dict, allowed: tuple[str, ...], ignore: tuple[str, ...] = ()) -> None:
    unknown = sorted(set(row) - set(allowed) - set(ignore))
    if unknown:
        raise StoreError(f"{what}: unknown key(s) {', '.join(unknown)}; expected {', '.join(allowed)}")


class Store:
    """A results db.  Use as a context manager (``with Store(path) as st: ...``)."""

    def __init__(self, path: str | os.PathLike, *, read_only: bool = False, snapshot_if_locked: bool = True):
        self.path = Path(path)
        self.read_only = read_only
        self._tmpdir: str | None = None
        self._con: duckdb.DuckDBPyConnection | None = None
        memory = str(path) == ":memory:"
        if read_only and not memory and not self.path.exists():
            raise StoreError(f"results db {self.path}: not found")
        if not read_only and not memory:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise StoreError(f"results db {self.path}: cannot create folder ({_one_line(e)})") from None
        try:
            self._con = duckdb.connect(str(path), read_only=read_only)
        except duckdb.Error as e:
            if read_only and snapshot_if_locked and "lock" in str(e).lower():
                self._con = self._open_snapshot()
            else:
                raise self._wrap(e) from None
        try:
            if read_only:
                missing = [t for t in TABLES if t not in self._tables()]
                if missing:
                    raise StoreError(f"results db {self.path}: not a granet results db (missing tables: {', '.join(missing)})")
            else:
                with self._tx():
                    for stmt in SCHEMA:
                        self._con.execute(stmt)
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------ plumbing
    def _wrap(self, e: BaseException) -> StoreError:
        msg = str(e)
        low = msg.lower()
        if "not a valid duckdb database" in low or "corrupt" in low:
            return StoreError(f"results db {self.path}: not a DuckDB database ({_one_line(msg, 200)})")
        if "could not set lock" in low or "conflicting lock" in low:
            return StoreError(f"results db {self.path}: locked by another process (a sweep still writing?) "
                              f"({_one_line(msg, 200)})")
        return StoreError(f"results db {self.path}: {_one_line(msg)}")

    def _open_snapshot(self) -> duckdb.DuckDBPyConnection:
        """Copy the (write-locked) db and its WAL to a temp dir and open that copy read-only."""
        self._tmpdir = tempfile.mkdtemp(prefix="granet-db-snapshot-")
        dst = Path(self._tmpdir) / self.path.name
        try:
            shutil.copy2(self.path, dst)
            wal = self.path.with_name(self.path.name + ".wal")
            if wal.exists():
                shutil.copy2(wal, dst.with_name(dst.name + ".wal"))
            return duckdb.connect(str(dst), read_only=True)
        except (OSError, duckdb.Error) as e:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None
            if isinstance(e, duckdb.Error):
                raise StoreError(f"results db {self.path}: locked by another process and its snapshot copy "
                                 f"could not be read ({_one_line(e, 200)})") from None
            raise StoreError(f"results db {self.path}: locked by another process and could not be copied "
                             f"({_one_line(e, 200)})") from None

    @property
    def con(self) -> duckdb.DuckDBPyConnection:
        if self._con is None:
            raise StoreError(f"results db {self.path}: store is closed")
        return self._con

    def _tables(self) -> set[str]:
        rows = self.con.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main'").fetchall()
        return {r[0] for r in rows}

    @contextmanager
    def _tx(self) -> Iterator[duckdb.DuckDBPyConnection]:
        con = self.con
        if self.read_only:
            raise StoreError(f"results db {self.path}: opened read-only")
        con.execute("BEGIN TRANSACTION")
        try:
            yield con
        except BaseException as e:
            try:
                con.execute("ROLLBACK")
            except duckdb.Error:
                pass
            if isinstance(e, duckdb.Error):
                raise self._wrap(e) from None
            raise
        else:
            try:
                con.execute("COMMIT")
            except duckdb.Error as e:
                try:
                    con.execute("ROLLBACK")
                except duckdb.Error:
                    pass
                raise self._wrap(e) from None

    def _query(self, sql: str, params: list | tuple = ()) -> list[dict]:
        try:
            cur = self.con.execute(sql, list(params))
            cols = [d[0] for d in cur.description]
            return [dict(zip(cols, row)) for row in cur.fetchall()]
        except duckdb.Error as e:
            raise self._wrap(e) from None

    def _run_exists(self, con: duckdb.DuckDBPyConnection, run_id: str) -> bool:
        return con.execute("SELECT 1 FROM runs WHERE run_id = ?", [run_id]).fetchone() is not None

    def close(self) -> None:
        if self._con is not None:
            try:
                self._con.close()
            finally:
                self._con = None
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:  # pragma: no cover - best effort
        try:
            self.close()
        except Exception:
            pass

    # -------------------------------------------------------------------- writes
    def add_sweep(self, sweep_id: str, name: str, grid: dict, *, created_at: datetime | None = None) -> None:
        """Insert or update a sweep (``created_at`` defaults to now, UTC; kept on update unless given)."""
        grid_json = json.dumps(grid, sort_keys=True, default=str)
        with self._tx() as con:
            exists = con.execute("SELECT 1 FROM sweeps WHERE sweep_id = ?", [sweep_id]).fetchone()
            if exists:
                if created_at is None:
                    con.execute("UPDATE sweeps SET name = ?, grid_json = ? WHERE sweep_id = ?",
                                [name, grid_json, sweep_id])
                else:
                    con.execute("UPDATE sweeps SET name = ?, grid_json = ?, created_at = ? WHERE sweep_id = ?",
                                [name, grid_json, _utc_naive(created_at), sweep_id])
            else:
                con.execute("INSERT INTO sweeps (sweep_id, name, created_at, grid_json) VALUES (?, ?, ?, ?)",
                            [sweep_id, name, _utc_naive(created_at), grid_json])

    def start_run(self, run: dict) -> None:
        """Register a run as 'running'.

        Keys: run_id, sweep_id (may be None), spec_hash, method, model, dataset,
        target_density, seed, spec_json (str, or a dict that is JSON-encoded),
        started_at (datetime; default now).  When run_id already exists (resume)
        the row is set back to 'running', its error, finished_at and final metrics
        are cleared, the spec fields are refreshed and the original started_at kept.
        """
        _check_keys("start_run", run, START_COLUMNS)
        if not run.get("run_id"):
            raise StoreError(f"results db {self.path}: start_run needs a run_id")
        spec_json = run.get("spec_json")
        if spec_json is not None and not isinstance(spec_json, str):
            spec_json = json.dumps(spec_json, sort_keys=True, default=str)
        values = [
            run.get("sweep_id"), run.get("spec_hash"), run.get("method"), run.get("model"),
            run.get("dataset"), run.get("target_density"), run.get("seed"), spec_json,
        ]
        with self._tx() as con:
            if self._run_exists(con, run["run_id"]):
                clear = ", ".join(f"{c} = NULL" for c in FINAL_COLUMNS)
                con.execute(
                    "UPDATE runs SET sweep_id = ?, spec_hash = ?, method = ?, model = ?, dataset = ?, "
                    "target_density = ?, seed = ?, spec_json = ?, status = 'running', error = NULL, "
                    f"finished_at = NULL, {clear} WHERE run_id = ?",
                    [*values, run["run_id"]])
            else:
                con.execute(
                    "INSERT INTO runs (run_id, sweep_id, spec_hash, method, model, dataset, target_density, "
                    "seed, spec_json, started_at, status) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'running')",
                    [run["run_id"], *values, _utc_naive(run.get("started_at"))])

    def add_epoch(self, run_id: str, row: dict) -> None:
        """Insert or replace one epochs row (keys: EPOCH_COLUMNS; missing ones are NULL)."""
        _check_keys("add_epoch", row, EPOCH_COLUMNS, ignore=("run_id",))
        if row.get("epoch") is None:
            raise StoreError(f"results db {self.path}: add_epoch row for run {run_id} has no epoch")
        with self._tx() as con:
            if not self._run_exists(con, run_id):
                raise StoreError(f"results db {self.path}: add_epoch: unknown run {run_id} (call start_run first)")
            con.execute(_insert_sql("epochs", EPOCH_COLUMNS, replace=True),
                        [run_id, *(row.get(c) for c in EPOCH_COLUMNS)])

    def add_mask_updates(self, run_id: str, rows: list[dict]) -> None:
        """Append mask-update rows (keys: MASK_UPDATE_COLUMNS) in one transaction."""
        if not rows:
            return
        for r in rows:
            _check_keys("add_mask_updates", r, MASK_UPDATE_COLUMNS, ignore=("run_id",))
        with self._tx() as con:
            if not self._run_exists(con, run_id):
                raise StoreError(f"results db {self.path}: add_mask_updates: unknown run {run_id}")
            con.executemany(_insert_sql("mask_updates", MASK_UPDATE_COLUMNS),
                            [[run_id, *(r.get(c) for c in MASK_UPDATE_COLUMNS)] for r in rows])

    def truncate_after(self, run_id: str, epoch: int, step: int) -> None:
        """Resume support: drop epochs after ``epoch`` and mask updates after ``step``."""
        with self._tx() as con:
            con.execute("DELETE FROM epochs WHERE run_id = ? AND epoch > ?", [run_id, epoch])
            con.execute("DELETE FROM mask_updates WHERE run_id = ? AND step > ?", [run_id, step])

    def _final_assignments(self, what: str, final: dict | None) -> tuple[list[str], list[Any]]:
        final = final or {}
        _check_keys(what, final, FINAL_COLUMNS)
        cols = [c for c in FINAL_COLUMNS if c in final]
        return [f"{c} = ?" for c in cols], [final[c] for c in cols]

    def finish_run(self, run_id: str, final: dict, layers: list[dict]) -> None:
        """In ONE transaction: replace the run's layers rows, store the final metrics
        (keys: FINAL_COLUMNS), set status 'completed' and finished_at = now (UTC)."""
        sets, vals = self._final_assignments("finish_run", final)
        for r in layers:
            _check_keys("finish_run layers", r, LAYER_COLUMNS, ignore=("run_id",))
        with self._tx() as con:
            if not self._run_exists(con, run_id):
                raise StoreError(f"results db {self.path}: finish_run: unknown run {run_id}")
            con.execute("DELETE FROM layers WHERE run_id = ?", [run_id])
            if layers:
                con.executemany(_insert_sql("layers", LAYER_COLUMNS),
                                [[run_id, *(_layer_value(c, r.get(c)) for c in LAYER_COLUMNS)] for r in layers])
            con.execute(
                f"UPDATE runs SET {', '.join([*sets, 'status = ?', 'finished_at = ?', 'error = NULL'])} "
                "WHERE run_id = ?",
                [*vals, "completed", _utc_naive(None), run_id])

    def fail_run(self, run_id: str, status: str, error: str, final: dict | None = None) -> None:
        """Mark a run 'failed' or 'diverged' with its error text and optional partial metrics."""
        if status not in ("failed", "diverged"):
            raise StoreError(f"results db {self.path}: fail_run status must be 'failed' or 'diverged', not {status!r}")
        sets, vals = self._final_assignments("fail_run", final)
        with self._tx() as con:
            if not self._run_exists(con, run_id):
                raise StoreError(f"results db {self.path}: fail_run: unknown run {run_id}")
            con.execute(
                f"UPDATE runs SET {', '.join([*sets, 'status = ?', 'error = ?', 'finished_at = ?'])} WHERE run_id = ?",
                [*vals, status, error, _utc_naive(None), run_id])

    # --------------------------------------------------------------------- reads
    def completed_hashes(self, sweep_id: str | None = None) -> set[str]:
        """spec_hash of every 'completed' run (of one sweep when sweep_id is given)."""
        sql = "SELECT DISTINCT spec_hash FROM runs WHERE status = 'completed' AND spec_hash IS NOT NULL"
        params: list = []
        if sweep_id is not None:
            sql += " AND sweep_id = ?"
            params.append(sweep_id)
        return {r["spec_hash"] for r in self._query(sql, params)}

    def runs(self, *, sweep: str | None = None, status: str | None = None) -> list[dict]:
        """runs rows as dicts (all RUN_COLUMNS), filtered by sweep_id and/or status,
        ordered by started_at then run_id."""
        where, params = [], []
        if sweep is not None:
            where.append("sweep_id = ?")
            params.append(sweep)
        if status is not None:
            where.append("status = ?")
            params.append(status)
        sql = f"SELECT {', '.join(RUN_COLUMNS)} FROM runs"
        if where:
            sql += " WHERE " + " AND ".join(where)
        return self._query(sql + " ORDER BY started_at NULLS LAST, run_id", params)

    def run(self, run_id: str) -> dict | None:
        rows = self._query(f"SELECT {', '.join(RUN_COLUMNS)} FROM runs WHERE run_id = ?", [run_id])
        return rows[0] if rows else None

    def _rows_of_runs(self, table: str, columns: tuple[str, ...], run_ids: list[str], order: str) -> list[dict]:
        if not run_ids:
            return []
        return self._query(
            f"SELECT run_id, {', '.join(columns)} FROM {table} WHERE list_contains(?, run_id) "
            f"ORDER BY run_id, {order}", [list(run_ids)])

    def epochs(self, run_ids: list[str]) -> list[dict]:
        """epochs rows (run_id + EPOCH_COLUMNS) of the given runs, ordered by run_id, epoch."""
        return self._rows_of_runs("epochs", EPOCH_COLUMNS, run_ids, "epoch")

    def mask_updates(self, run_ids: list[str]) -> list[dict]:
        """mask_updates rows (run_id + MASK_UPDATE_COLUMNS), ordered by run_id, step."""
        return self._rows_of_runs("mask_updates", MASK_UPDATE_COLUMNS, run_ids, "step")

    def layers(self, run_ids: list[str]) -> list[dict]:
        """layers rows (run_id + LAYER_COLUMNS), ordered by run_id, name."""
        return self._rows_of_runs("layers", LAYER_COLUMNS, run_ids, "name")

    def sweeps(self) -> list[dict]:
        """sweeps rows (grid_json decoded into 'grid'), newest first."""
        rows = self._query("SELECT sweep_id, name, created_at, grid_json FROM sweeps "
                           "ORDER BY created_at DESC NULLS LAST, sweep_id")
        for r in rows:
            r["grid"] = json.loads(r["grid_json"]) if r["grid_json"] else {}
        return rows

    def sweep(self, sweep_id: str) -> dict | None:
        return next((s for s in self.sweeps() if s["sweep_id"] == sweep_id), None)

    def find_sweep(self, name_or_id: str) -> str | None:
        """sweep_id of the sweep with this id, else of the latest-created sweep with this name."""
        rows = self._query("SELECT sweep_id FROM sweeps WHERE sweep_id = ?", [name_or_id])
        if rows:
            return rows[0]["sweep_id"]
        rows = self._query("SELECT sweep_id FROM sweeps WHERE name = ? "
                           "ORDER BY created_at DESC NULLS LAST, sweep_id DESC LIMIT 1", [name_or_id])
        return rows[0]["sweep_id"] if rows else None


def _insert_sql(table: str, columns: tuple[str, ...], *, replace: bool = False) -> str:
    """INSERT of one row keyed by run_id; column names only ever come from the fixed lists."""
    verb = "INSERT OR REPLACE" if replace else "INSERT"
    return f"{verb} INTO {table} (run_id, {', '.join(columns)}) VALUES (?{', ?' * len(columns)})"


def _layer_value(col: str, value: Any) -> Any:
    """Shapes may be given as a list/tuple/torch.Size; they are stored as "[64, 3, 3, 3]"."""
    if col == "shape" and value is not None and not isinstance(value, str):
        try:
            return "[" + ", ".join(str(int(v)) for v in value) + "]"
        except TypeError:
            return str(value)
    return value

