"""DuckDB results store: the only module that talks to DuckDB.

One file (default ``results/granet.duckdb``, or ``$GRANET_DB``) holds every run,
its per-epoch metrics, per-layer final densities, mask-update history and the
sweeps the runs belong to.  Accuracies are fractions in [0, 1]; timestamps are
stored as naive UTC (timezone-aware datetimes are converted to UTC first).

Every multi-statement write runs inside ``BEGIN``/``COMMIT`` and is rolled back
on error, so a crash mid-write never leaves a half-finished run behind.  All SQL
is parameterised; column names only ever come from the fixed lists below.

Schema versions.  A granet db is recognisable: table ``granet_meta(key, value)``
holds ``schema_version`` (``SCHEMA_VERSION``) and the granet version that created
it.  Files written before that table existed are recognised by their five tables
and granet's columns: v1 (today's tables without ``granet_meta``) and v0 (also
without the top-5 / samples-per-second columns).  A *writer* migrates an older
granet db explicitly, one numbered step at a time (``MIGRATIONS``), all steps in
one transaction: a migration that fails leaves the file as it was.  Any other
DuckDB file (say, someone's own db with a ``runs`` table) is refused with a
one-line error before anything is written: granet never adds tables to, or
"repairs", a database that is not its own.  A *read-only* store never writes and
reads every older granet schema, missing columns reading as NULL.

Concurrency.  DuckDB lets one process at a time open a file for writing (it takes
a POSIX lock on the file).  Holding a write connection for a whole run, as granet
used to, locks every other ``granet run`` out ("locked by another process"), which
breaks Slurm array jobs that share one results db.  So a writer ``Store`` holds
nothing between calls: each call attaches the file to a private in-memory DuckDB
instance, runs one short transaction and detaches it again (~15 ms on an idle
machine, ~70 ms on a loaded one; the detach checkpoints the WAL into the file,
so no WAL is left between writes), and a lock conflict is retried with
bounded exponential backoff plus jitter for up to ``$GRANET_DB_LOCK_TIMEOUT``
seconds (default 60).  Writers thus take turns per call, never inside one
transaction.  Reads of a writer store do the same with a read-only attach.  A
read-only store (``granet report``, ``sweep --dry-run``) holds a shared lock for
its lifetime so that all its queries see one state; it waits up to
``READ_LOCK_WAIT`` seconds for a writer and, if the file stays locked (a process
that holds it for long: an older granet, the duckdb shell), reads a private
snapshot copy instead (``snapshot_if_locked``).  This relies on the file lock:
on a shared filesystem the lock must work across machines (NFSv4 or Lustre/GPFS
with POSIX locks enabled); where it does not, give each job its own ``--db`` and
copy them into one afterwards (``merge_from``, ``granet db merge``).

A full disk is reported as ``StoreError("results db <path>: no space left on
device")``; the transaction is rolled back and the file stays readable.
"""

from __future__ import annotations

import errno
import functools
import json
import math
import os
import random
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

import duckdb

from . import __version__, columns
from .columns import EPOCH_METRICS, FINAL_METRICS, START_KEYS
from .safe_io import PathError, check_regular
from .text import one_line as _one_line

DEFAULT_DB_PATH = Path("results") / "granet.duckdb"

#: the schema this granet writes (the newest `since` in columns.py); older granet dbs are migrated
#: to it by a writer
SCHEMA_VERSION = max(2, *(c.since for cols in columns.TABLES.values() for c in cols))
META_TABLE = "granet_meta"

#: environment variable: seconds a write waits for another process's lock (default 60)
LOCK_TIMEOUT_ENV = "GRANET_DB_LOCK_TIMEOUT"
DEFAULT_LOCK_TIMEOUT = 60.0
#: seconds a read-only open waits for a writer before it reads a snapshot copy instead
READ_LOCK_WAIT = 2.0
_BACKOFF_FIRST, _BACKOFF_MAX = 0.005, 0.5
#: alias under which a writer store attaches the file to its in-memory instance
_ALIAS = "granet_results"
#: bytes before a DuckDB file's first block: the main header and two database headers
_FILE_HEADERS = 3 * 4096
#: DuckDB settings of a sandboxed read-only connection (`granet sql` on a db from someone else):
#: no file but the db itself (no COPY, ATTACH, EXPORT, read_csv), no extensions, and locked
SANDBOX: dict[str, str | bool | int | float | list[str]] = {
    "enable_external_access": False,
    "autoinstall_known_extensions": False,
    "autoload_known_extensions": False,
    "allow_community_extensions": False,
    "lock_configuration": True,
}


class RunStatus(StrEnum):
    """The ``status`` of a runs row.  ``interrupted``: killed or crashed mid-run, resumable."""

    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    DIVERGED = "diverged"
    INTERRUPTED = "interrupted"


RUN_STATUSES = tuple(s.value for s in RunStatus)
#: statuses ``fail_run`` may set
FAIL_STATUSES = (RunStatus.FAILED.value, RunStatus.DIVERGED.value, RunStatus.INTERRUPTED.value)

# The columns themselves are defined once, in granet_cli/columns.py; these are the store's views.
#: runs columns holding the final metrics of a run (finish_run / fail_run keys)
FINAL_COLUMNS = FINAL_METRICS
#: keys start_run reads from its dict (started_at defaults to now); an optional "attempts" is accepted too
START_COLUMNS = START_KEYS
#: the order `runs()` returns a row's columns in: identity, status, metrics, bookkeeping
_IDENTITY = ("run_id", "sweep_id", "spec_hash", "config_hash")
RUN_COLUMNS = (
    *_IDENTITY,
    *(c for c in START_KEYS if c not in (*_IDENTITY, "spec_json", "started_at")),
    "status",
    *FINAL_COLUMNS,
    "attempts",
    "pid",
    "host",
    "spec_json",
    "started_at",
    "finished_at",
    "error",
)
EPOCH_COLUMNS = EPOCH_METRICS
LAYER_COLUMNS = tuple(c for c in columns.names("layers") if c != "run_id")
MASK_UPDATE_COLUMNS = tuple(c for c in columns.names("mask_updates") if c != "run_id")
#: table -> column -> SQL type, the current schema (v2), in creation order
COLUMN_TYPES: dict[str, dict[str, str]] = {t: {c.name: c.sql for c in cols} for t, cols in columns.TABLES.items()}
PRIMARY_KEYS = columns.PRIMARY_KEYS
_DEFAULTS = {(t, c.name): c.default for t, cols in columns.TABLES.items() for c in cols if c.default is not None}
TABLES = tuple(COLUMN_TYPES)
#: columns each schema version added (to tables that already existed)
ADDED_IN: dict[int, dict[str, tuple[str, ...]]] = {
    v: {t: names for t in TABLES if (names := columns.names(t, since=v))} for v in range(1, SCHEMA_VERSION + 1)
}
#: the columns every granet db has had since v0: how a db without granet_meta is recognised
V0_COLUMNS = {
    t: tuple(c for c in cols if not any(c in a.get(t, ()) for a in ADDED_IN.values()))
    for t, cols in COLUMN_TYPES.items()
}


def _column_def(table: str, col: str) -> str:
    default = _DEFAULTS.get((table, col))
    return f"{col} {COLUMN_TYPES[table][col]}" + (f" DEFAULT {default}" if default is not None else "")


def _create_table_sql(table: str) -> str:
    parts = [_column_def(table, c) for c in COLUMN_TYPES[table]]
    if table in PRIMARY_KEYS:
        parts.append(f"PRIMARY KEY ({', '.join(PRIMARY_KEYS[table])})")
    return f"CREATE TABLE {table} ({', '.join(parts)})"


def _add_columns(con: duckdb.DuckDBPyConnection, version: int) -> None:
    for table, cols in ADDED_IN[version].items():
        for col in cols:
            con.execute(f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {_column_def(table, col)}")


def _set_meta(con: duckdb.DuckDBPyConnection, key: str, value: str) -> None:
    con.execute(f"INSERT OR REPLACE INTO {META_TABLE} (key, value) VALUES (?, ?)", [key, value])


def _migrate_v0_to_v1(con: duckdb.DuckDBPyConnection) -> None:
    """v1 added top-5 accuracy and samples/s."""
    _add_columns(con, 1)


def _migrate_v1_to_v2(con: duckdb.DuckDBPyConnection) -> None:
    """v2 added overall density, model selection, config hash, attempts, the writer's pid/host,
    validation metrics per epoch, and granet_meta (the version stamp that makes the db recognisable)."""
    _add_columns(con, 2)
    con.execute(f"CREATE TABLE IF NOT EXISTS {META_TABLE} (key VARCHAR PRIMARY KEY, value VARCHAR)")


#: version -> the step that takes a db from that version to the next; run in order, in one transaction
MIGRATIONS: dict[int, Callable[[duckdb.DuckDBPyConnection], None]] = {0: _migrate_v0_to_v1, 1: _migrate_v1_to_v2}
for _v in range(2, SCHEMA_VERSION):  # later versions only add the columns columns.py gives them
    MIGRATIONS[_v] = functools.partial(_add_columns, version=_v + 1)


def _create_schema(con: duckdb.DuckDBPyConnection) -> None:
    for table in TABLES:
        con.execute(_create_table_sql(table))
    con.execute(f"CREATE TABLE {META_TABLE} (key VARCHAR PRIMARY KEY, value VARCHAR)")
    _set_meta(con, "schema_version", str(SCHEMA_VERSION))
    _set_meta(con, "created_by", f"granet {__version__}")


class StoreError(RuntimeError):
    """A results-db problem; the message is one line naming the file."""


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
        raise StoreError(f"results db {db_path}: cannot create folder ({_one_line(e, 120)})") from None
    while True:
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise StoreError(f"results db {db_path}: cannot claim sweep {name} ({_one_line(e, 120)})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            try:
                holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip()
            finally:
                os.close(fd)
            who = f" ({_one_line(holder, 80)})" if holder else ""
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


def default_db_path() -> Path:
    """``$GRANET_DB`` if set (and non-empty), else ``results/granet.duckdb``."""
    env = os.environ.get("GRANET_DB")
    return Path(env) if env else DEFAULT_DB_PATH


def _utc_naive(ts: datetime | None) -> datetime:
    if ts is None:
        return datetime.now(UTC).replace(tzinfo=None)
    if ts.tzinfo is not None:
        return ts.astimezone(UTC).replace(tzinfo=None)
    return ts


def _check_keys(what: str, row: dict, allowed: tuple[str, ...], ignore: tuple[str, ...] = ()) -> None:
    unknown = sorted(set(row) - set(allowed) - set(ignore))
    if unknown:
        raise StoreError(f"{what}: unknown key(s) {', '.join(unknown)}; expected {', '.join(allowed)}")


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


def _is_lock_error(e: BaseException) -> bool:
    """Another process holds the file (POSIX lock), or another store of this process has it attached."""
    low = str(e).lower()
    return "could not set lock" in low or "conflicting lock" in low or "unique file handle conflict" in low


def _is_no_space(e: BaseException) -> bool:
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    low = str(e).lower()
    return (
        "no space left" in low
        or "enospc" in low
        or "disk quota exceeded" in low
        or ("could not write" in low and "permission denied" not in low)
    )


def _backoff(delay: float, deadline: float) -> float:
    """Sleep about ``delay`` (jittered to 50-100 % so that waiting processes spread out, never past
    ``deadline``) and return the next, doubled delay (capped at ``_BACKOFF_MAX``)."""
    time.sleep(max(0.0, min(deadline - time.monotonic(), random.uniform(0.5, 1.0) * delay)))
    return min(2 * delay, _BACKOFF_MAX)


def _sql_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


class _NotGranet(Exception):
    """The file is a DuckDB database, but not a granet results db (the message says why)."""


def _inspect(con: duckdb.DuckDBPyConnection) -> tuple[int | None, dict[str, set[str]]]:
    """(schema version, columns per table of schema main) of the connection's current database.

    Version None means the database has no tables or views at all (a new file).  Raises
    _NotGranet for a DuckDB file whose tables are not granet's."""
    objects = con.execute(
        "SELECT table_schema, table_name FROM information_schema.tables WHERE table_catalog = current_database()"
    ).fetchall()
    if not objects:
        return None, {}
    cols: dict[str, set[str]] = {}
    for table, col in con.execute(
        "SELECT table_name, column_name FROM information_schema.columns "
        "WHERE table_catalog = current_database() AND table_schema = 'main'"
    ).fetchall():
        cols.setdefault(table, set()).add(col)
    missing = [t for t in TABLES if t not in cols]
    if missing:
        raise _NotGranet(f"missing tables: {', '.join(missing)}")
    absent = [f"{t}.{c}" for t in TABLES for c in V0_COLUMNS[t] if c not in cols[t]]
    if absent:
        raise _NotGranet(f"missing columns: {', '.join(absent[:6])}{', ...' if len(absent) > 6 else ''}")
    if META_TABLE in cols:
        row = con.execute(f"SELECT value FROM {META_TABLE} WHERE key = 'schema_version'").fetchone()
        if row is None:
            raise _NotGranet(f"{META_TABLE} has no valid schema_version ({'none'!r})")
        try:
            version = int(row[0])
        except (TypeError, ValueError):
            version = -1
        if version < 0:
            raise _NotGranet(f"{META_TABLE} has no valid schema_version ({_one_line(repr(row[0]), 40)})")
        return version, cols
    # written before granet_meta existed: v1 if it has v1's columns, else v0
    has_v1 = all(c in cols[t] for t, added in ADDED_IN[1].items() for c in added)
    return (1 if has_v1 else 0), cols


def _same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether two paths are one file (a symlink or a hard link of it too)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _pid_alive(pid: int) -> bool:
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


class Store:
    """A results db.  Use as a context manager (``with Store(path) as st: ...``).

    A writer store (the default) creates the schema in a new file, migrates an older granet
    db, refuses any other DuckDB file, and then holds no connection to the file between calls
    (see the module docstring: many processes can write one db).  ``read_only=True`` holds one
    shared-lock connection for the store's lifetime and never writes.  ``lock_timeout``
    (seconds; default ``$GRANET_DB_LOCK_TIMEOUT`` or 60) bounds every wait for another
    process's lock."""

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        read_only: bool = False,
        snapshot_if_locked: bool = True,
        lock_timeout: float | None = None,
        sandboxed: bool = False,
    ):
        self.path = Path(path)
        #: read-only: DuckDB settings of the connection (`granet sql`: no files, no extensions, locked)
        self._config: dict[str, str | bool | int | float | list[str]] = dict(SANDBOX) if sandboxed else {}
        self.read_only = read_only
        self._tmpdir: str | None = None
        self._ro: duckdb.DuckDBPyConnection | None = None  # read-only store: the connection it holds
        self._mem: duckdb.DuckDBPyConnection | None = None  # writer store: in-memory instance that attaches the file
        self._columns: dict[str, set[str]] = {}  # columns the file has (older files lack some)
        self._lock = threading.RLock()  # one call at a time on the shared connection
        self._closed = False
        #: seconds this store has spent waiting for other processes' locks (diagnostics)
        self.lock_wait_seconds = 0.0
        self._memory = str(path) == ":memory:"
        # a symlinked db is followed, never replaced: every open, create and unlink acts on its target
        self._target = str(path) if self._memory else os.path.realpath(self.path)
        self.lock_timeout = lock_timeout_from_env() if lock_timeout is None else float(lock_timeout)
        if not self._memory:
            try:  # a FIFO would block every open forever; a folder or device is no db either
                check_regular(self.path, "results db", must_exist=read_only)
            except PathError as e:
                raise StoreError(str(e)) from None
        if not read_only and not self._memory:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                if _is_no_space(e):
                    raise self._wrap(e) from None
                raise StoreError(f"results db {self.path}: cannot create folder ({_one_line(e)})") from None
        try:
            if read_only:
                self._open_read_only(snapshot_if_locked)
            else:
                self._prepare()
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------ plumbing
    def _wrap(self, e: BaseException) -> StoreError:
        if isinstance(e, StoreError):
            return e
        msg = str(e)
        low = msg.lower()
        if _is_no_space(e):
            return StoreError(f"results db {self.path}: no space left on device")
        if "not a valid duckdb database" in low or "corrupt" in low:
            return StoreError(f"results db {self.path}: not a DuckDB database ({_one_line(msg, 200)})")
        if _is_lock_error(e):
            return StoreError(
                f"results db {self.path}: locked by another process (a sweep still writing?) ({_one_line(msg, 200)})"
            )
        return StoreError(f"results db {self.path}: {_one_line(msg)}")

    def _not_granet(self, e: _NotGranet, *, writing: bool) -> StoreError:
        tail = "; refusing to write to it (choose another --db)" if writing else ""
        return StoreError(f"results db {self.path}: not a granet results db ({e}){tail}")

    def _open_read_only(self, snapshot_if_locked: bool) -> None:
        """Open the file read-only, waiting up to READ_LOCK_WAIT for a writer's short transaction;
        a file locked for longer is read from a snapshot copy (or refused)."""
        deadline = time.monotonic() + min(self.lock_timeout, READ_LOCK_WAIT)
        delay = _BACKOFF_FIRST
        while True:
            try:
                self._ro = duckdb.connect(self._target, read_only=True, config=self._config)
                break
            except duckdb.Error as e:
                if not _is_lock_error(e):
                    raise self._wrap(e) from None
                if time.monotonic() < deadline:
                    delay = self._wait(delay, deadline)
                elif snapshot_if_locked:
                    self._ro = self._open_snapshot()
                    break
                else:
                    raise self._wrap(e) from None
        try:
            self._check_complete(self._ro, self._target if self._tmpdir is None else str(self._snapshot_path()))
            version, self._columns = _inspect(self._ro)
        except _NotGranet as e:
            raise self._not_granet(e, writing=False) from None
        except duckdb.Error as e:
            raise self._wrap(e) from None
        if version is None:
            raise StoreError(f"results db {self.path}: not a granet results db (no tables)")

    def _wait(self, delay: float, deadline: float) -> float:
        t0 = time.monotonic()
        try:
            return _backoff(delay, deadline)
        finally:
            self.lock_wait_seconds += time.monotonic() - t0

    def _snapshot_path(self) -> Path:
        assert self._tmpdir is not None
        return Path(self._tmpdir) / self.path.name

    def _open_snapshot(self) -> duckdb.DuckDBPyConnection:
        """Copy the (write-locked) db and its WAL to a temp dir and open that copy read-only."""
        self._tmpdir = tempfile.mkdtemp(prefix="granet-db-snapshot-")
        dst = Path(self._tmpdir) / self.path.name
        try:
            shutil.copy2(self.path, dst)
            wal = self.path.with_name(self.path.name + ".wal")
            if wal.exists():
                shutil.copy2(wal, dst.with_name(dst.name + ".wal"))
            return duckdb.connect(str(dst), read_only=True, config=self._config)
        except (OSError, duckdb.Error) as e:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None
            if isinstance(e, duckdb.Error):
                raise StoreError(
                    f"results db {self.path}: locked by another process and its snapshot copy "
                    f"could not be read ({_one_line(e, 200)})"
                ) from None
            raise StoreError(
                f"results db {self.path}: locked by another process and could not be copied ({_one_line(e, 200)})"
            ) from None

    def _check_complete(self, con: duckdb.DuckDBPyConnection, path: str) -> None:
        """Refuse a truncated file (a copy cut short): its header counts more blocks in use than it holds.
        DuckDB would read its schema and fail only later, mid-run, at the first missing block."""
        if self._memory:
            return
        row = con.execute(
            "SELECT used_blocks, block_size FROM pragma_database_size() WHERE database_name = current_database()"
        ).fetchone()
        if row is None or not row[0] or not row[1]:  # a new, empty file
            return
        need, have = _FILE_HEADERS + int(row[0]) * int(row[1]), os.stat(path).st_size
        if have < need:
            raise StoreError(
                f"results db {self.path}: truncated ({have:,} bytes, its header counts {need:,}); "
                "restore it from a complete copy or choose another --db"
            )

    def _classify(self, con: duckdb.DuckDBPyConnection) -> tuple[int | None, dict[str, set[str]]]:
        """_inspect for a writer: a foreign or newer db is a StoreError."""
        if not self._memory and os.path.exists(self._target):
            self._check_complete(con, self._target)
        try:
            version, cols = _inspect(con)
        except _NotGranet as e:
            raise self._not_granet(e, writing=True) from None
        if version is not None and version > SCHEMA_VERSION:
            raise StoreError(
                f"results db {self.path}: written by a newer granet (schema v{version}; this granet "
                f"writes v{SCHEMA_VERSION}); upgrade granet or choose another --db"
            )
        return version, cols

    def _prepare(self) -> None:
        """Writer open: create the schema in a new file, migrate an older granet db, refuse others.

        An existing file is first inspected through a read-only attach, so a foreign or newer db
        is refused without the file being opened for writing at all (it stays byte-identical),
        and an up-to-date db costs no write.  Creation and migration re-inspect inside their write
        transaction: another process may have done the work in between."""
        if self._memory:
            self._mem = duckdb.connect(":memory:")
        elif os.path.exists(self._target) and os.stat(self._target).st_size > 0:
            try:
                with self._attached(write=False) as con:
                    version, cols = self._classify(con)
            except duckdb.Error as e:
                raise self._wrap(e) from None
            if version == SCHEMA_VERSION:
                self._columns = cols
                return
        # a create that fails on a full disk may leave a 0-byte file: the next open takes it over
        with self._tx() as con:
            version, _ = self._classify(con)
            if version is None:
                _create_schema(con)
            elif version < SCHEMA_VERSION:
                for v in range(version, SCHEMA_VERSION):
                    MIGRATIONS[v](con)
                _set_meta(con, "schema_version", str(SCHEMA_VERSION))
                _set_meta(con, f"migrated_from_v{version}_by", f"granet {__version__}")
            self._columns = _inspect(con)[1]

    def _empty_file_age(self) -> float | None:
        """Seconds since a 0-byte db file was last modified; None when it is missing or not empty."""
        try:
            st = os.stat(self._target)
        except OSError:
            return None
        return time.time() - st.st_mtime if st.st_size == 0 else None

    def _instance(self) -> duckdb.DuckDBPyConnection:
        if self._mem is None:
            # never reach for the network: no extension is installed or loaded behind our back
            self._mem = duckdb.connect(
                ":memory:", config={"autoinstall_known_extensions": False, "autoload_known_extensions": False}
            )
        return self._mem

    def _drop_instance(self) -> None:
        """Close the in-memory instance: releases the file whatever state an error left it in."""
        if self._mem is not None and not self._memory:
            try:
                self._mem.close()
            except duckdb.Error:
                pass
            self._mem = None

    def _attach(self, con: duckdb.DuckDBPyConnection, write: bool) -> None:
        """ATTACH the file, retrying a lock conflict with exponential backoff + jitter up to lock_timeout.

        A file of 0 bytes (DuckDB refuses those) is waited for briefly, as another process may be
        creating it this instant; one that stays empty (``touch``, or left by a create that failed
        on a full disk) is a new, empty db: a writer replaces it and creates the schema."""
        sql = f"ATTACH {_sql_literal(self._target)} AS {_ALIAS} (TYPE DUCKDB{'' if write else ', READ_ONLY'})"
        start = time.monotonic()
        delay = _BACKOFF_FIRST
        while True:
            try:
                con.execute(sql)
                return
            except duckdb.Error as e:
                if "unique file handle conflict" in str(e).lower():
                    # this very process has the file open (another Store, e.g. a read-only one left
                    # open): only another thread can release it, so don't wait a full lock_timeout
                    if time.monotonic() - start >= min(self.lock_timeout, READ_LOCK_WAIT):
                        raise StoreError(
                            f"results db {self.path}: already open in this process by another "
                            "store (close it before writing)"
                        ) from None
                    delay = self._wait(delay, start + min(self.lock_timeout, READ_LOCK_WAIT))
                    continue
                if _is_lock_error(e):
                    limit = self.lock_timeout
                elif "not a valid duckdb database" in str(e).lower() and self._empty_file_age() is not None:
                    limit = min(self.lock_timeout, READ_LOCK_WAIT)
                    age = self._empty_file_age()
                    if write and age is not None and (age >= READ_LOCK_WAIT or time.monotonic() - start >= limit):
                        Path(self._target).unlink(missing_ok=True)  # the link's target, never the link
                        continue
                else:
                    raise self._wrap(e) from None
                if time.monotonic() - start >= limit:
                    if _is_lock_error(e):
                        raise StoreError(
                            f"results db {self.path}: still locked by another process after "
                            f"{self.lock_timeout:g} s (set {LOCK_TIMEOUT_ENV} to wait longer) "
                            f"({_one_line(e, 160)})"
                        ) from None
                    raise self._wrap(e) from None
                delay = self._wait(delay, start + limit)

    @contextmanager
    def _attached(self, *, write: bool) -> Iterator[duckdb.DuckDBPyConnection]:
        """The file attached (read-write or read-only) for the duration of the block, then detached:
        between calls this store holds no lock on the file."""
        with self._lock:
            if self._closed:
                raise StoreError(f"results db {self.path}: store is closed")
            if self._memory:
                assert self._mem is not None  # set by _open for ':memory:', cleared only by close()
                yield self._mem
                return
            con = self._instance()
            self._attach(con, write)
            failed = True
            try:
                con.execute(f"USE {_ALIAS}")
                yield con
                failed = False
            except duckdb.Error as e:
                raise self._wrap(e) from None
            finally:
                try:
                    con.execute("USE memory")
                    con.execute(f"DETACH {_ALIAS}")  # checkpoints a read-write attach into the file
                except duckdb.Error as e:
                    self._drop_instance()
                    if not failed:
                        raise self._wrap(e) from None
                else:
                    if failed:  # after an I/O error (disk full) start the next call from a fresh instance
                        self._drop_instance()

    @contextmanager
    def _tx(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """One write transaction on the attached file; any error rolls it back and is a StoreError."""
        if self.read_only:
            raise StoreError(f"results db {self.path}: opened read-only")
        with self._attached(write=True) as con:
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

    @contextmanager
    def _reading(self) -> Iterator[duckdb.DuckDBPyConnection]:
        if self.read_only:
            with self._lock:
                if self._ro is None:
                    raise StoreError(f"results db {self.path}: store is closed")
                yield self._ro
        else:
            with self._attached(write=False) as con:
                yield con

    def _query(self, sql: str, params: list | tuple = ()) -> list[dict]:
        try:
            with self._reading() as con:
                cur = con.execute(sql, list(params))
                cols = [d[0] for d in cur.description]
                return [dict(zip(cols, row)) for row in cur.fetchall()]
        except duckdb.Error as e:
            raise self._wrap(e) from None

    def _select(self, table: str, columns: tuple[str, ...]) -> str:
        """SELECT list of ``columns``; a column an older file lacks reads as a typed NULL."""
        have = self._columns.get(table, set())
        return ", ".join(c if c in have else f"CAST(NULL AS {COLUMN_TYPES[table][c]}) AS {c}" for c in columns)

    def _run_exists(self, con: duckdb.DuckDBPyConnection, run_id: str) -> bool:
        return con.execute("SELECT 1 FROM runs WHERE run_id = ?", [run_id]).fetchone() is not None

    def schema_version(self) -> int | None:
        """The file's schema version (a read-only store of an older file reports the older one)."""
        try:
            with self._reading() as con:
                return _inspect(con)[0]
        except _NotGranet:
            return None
        except duckdb.Error as e:
            raise self._wrap(e) from None

    def close(self) -> None:
        with self._lock:
            self._closed = True
            for attr in ("_ro", "_mem"):
                con = getattr(self, attr)
                if con is not None:
                    setattr(self, attr, None)
                    try:
                        con.close()
                    except duckdb.Error:
                        pass
            if self._tmpdir is not None:
                shutil.rmtree(self._tmpdir, ignore_errors=True)
                self._tmpdir = None

    def __enter__(self) -> Store:
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
                    con.execute(
                        "UPDATE sweeps SET name = ?, grid_json = ? WHERE sweep_id = ?", [name, grid_json, sweep_id]
                    )
                else:
                    con.execute(
                        "UPDATE sweeps SET name = ?, grid_json = ?, created_at = ? WHERE sweep_id = ?",
                        [name, grid_json, _utc_naive(created_at), sweep_id],
                    )
            else:
                con.execute(
                    "INSERT INTO sweeps (sweep_id, name, created_at, grid_json) VALUES (?, ?, ?, ?)",
                    [sweep_id, name, _utc_naive(created_at), grid_json],
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
        _check_keys("start_run", run, START_COLUMNS, ignore=("attempts",))
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
                        _utc_naive(run.get("started_at")),
                        RunStatus.RUNNING.value,
                        1 if attempts is None else attempts,
                    ],
                )

    def add_epoch(self, run_id: str, row: dict, mask_updates: list[dict] | None = None) -> None:
        """Insert or replace one epochs row (keys: EPOCH_COLUMNS; missing ones are NULL).

        ``mask_updates`` (rows as for add_mask_updates) are appended in the same transaction:
        an epoch and its mask updates land together, at the cost of one write instead of two
        (each write attaches the file anew, see the module docstring)."""
        _check_keys("add_epoch", row, EPOCH_COLUMNS, ignore=("run_id",))
        if row.get("epoch") is None:
            raise StoreError(f"results db {self.path}: add_epoch row for run {run_id} has no epoch")
        for r in mask_updates or ():
            _check_keys("add_mask_updates", r, MASK_UPDATE_COLUMNS, ignore=("run_id",))
        with self._tx() as con:
            if not self._run_exists(con, run_id):
                raise StoreError(f"results db {self.path}: add_epoch: unknown run {run_id} (call start_run first)")
            con.execute(
                _insert_sql("epochs", EPOCH_COLUMNS, replace=True), [run_id, *(row.get(c) for c in EPOCH_COLUMNS)]
            )
            if mask_updates:
                con.executemany(
                    _insert_sql("mask_updates", MASK_UPDATE_COLUMNS),
                    [[run_id, *(r.get(c) for c in MASK_UPDATE_COLUMNS)] for r in mask_updates],
                )

    def add_mask_updates(self, run_id: str, rows: list[dict]) -> None:
        """Append mask-update rows (keys: MASK_UPDATE_COLUMNS) in one transaction."""
        if not rows:
            return
        for r in rows:
            _check_keys("add_mask_updates", r, MASK_UPDATE_COLUMNS, ignore=("run_id",))
        with self._tx() as con:
            if not self._run_exists(con, run_id):
                raise StoreError(f"results db {self.path}: add_mask_updates: unknown run {run_id}")
            con.executemany(
                _insert_sql("mask_updates", MASK_UPDATE_COLUMNS),
                [[run_id, *(r.get(c) for c in MASK_UPDATE_COLUMNS)] for r in rows],
            )

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
                con.executemany(
                    _insert_sql("layers", LAYER_COLUMNS),
                    [[run_id, *(_layer_value(c, r.get(c)) for c in LAYER_COLUMNS)] for r in layers],
                )
            con.execute(
                f"UPDATE runs SET {', '.join([*sets, 'status = ?', 'finished_at = ?', 'error = NULL'])} "
                "WHERE run_id = ?",
                [*vals, RunStatus.COMPLETED.value, _utc_naive(None), run_id],
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
                [*vals, str(status), error, _utc_naive(None), run_id],
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
                if _pid_alive(int(pid)):
                    continue
                con.execute(
                    "UPDATE runs SET status = ?, error = ?, finished_at = ? WHERE run_id = ? AND status = ?",
                    [
                        RunStatus.INTERRUPTED.value,
                        f"interrupted (process {pid} gone)",
                        _utc_naive(None),
                        run_id,
                        RunStatus.RUNNING.value,
                    ],
                )
                reaped += 1
        return reaped

    def merge_from(self, source: str | os.PathLike) -> dict[str, int]:
        """Copy the runs (with their epochs, layers and mask updates) and the sweeps of another
        granet results db into this one, in one transaction; returns counts.

        For jobs that each wrote their own ``--db`` (a shared filesystem without working file
        locks).  The source is only read (any schema version; columns it lacks arrive as NULL,
        attempts as 1).  A run_id or sweep_id already here is kept as it is, so merging the same
        file twice adds nothing."""
        src_path = Path(source)
        if not self._memory and (os.path.realpath(src_path) == self._target or _same_file(src_path, self._target)):
            raise StoreError(f"results db {self.path}: cannot merge a db into itself")
        with Store(src_path, read_only=True, lock_timeout=self.lock_timeout) as src:
            runs, sweeps = src.runs(), src.sweeps()
            ids = [r["run_id"] for r in runs]
            children = {
                "epochs": (EPOCH_COLUMNS, src.epochs(ids)),
                "layers": (LAYER_COLUMNS, src.layers(ids)),
                "mask_updates": (MASK_UPDATE_COLUMNS, src.mask_updates(ids)),
            }
        counts = {"runs": 0, "skipped": 0, "epochs": 0, "layers": 0, "mask_updates": 0, "sweeps": 0}
        with self._tx() as con:
            have = {r[0] for r in con.execute("SELECT run_id FROM runs").fetchall()}
            new = [r for r in runs if r["run_id"] not in have]
            new_ids = {r["run_id"] for r in new}
            counts["runs"], counts["skipped"] = len(new), len(runs) - len(new)
            if new:
                for r in new:
                    r["attempts"] = 1 if r["attempts"] is None else r["attempts"]
                con.executemany(
                    f"INSERT INTO runs ({', '.join(RUN_COLUMNS)}) VALUES (?{', ?' * (len(RUN_COLUMNS) - 1)})",
                    [[r[c] for c in RUN_COLUMNS] for r in new],
                )
            for table, (cols, rows_) in children.items():
                mine = [[r["run_id"], *(r[c] for c in cols)] for r in rows_ if r["run_id"] in new_ids]
                if mine:
                    con.executemany(_insert_sql(table, cols), mine)
                counts[table] = len(mine)
            have_sweeps = {r[0] for r in con.execute("SELECT sweep_id FROM sweeps").fetchall()}
            new_sweeps = [s for s in sweeps if s["sweep_id"] not in have_sweeps]
            if new_sweeps:
                con.executemany(
                    "INSERT INTO sweeps (sweep_id, name, created_at, grid_json) VALUES (?, ?, ?, ?)",
                    [[s["sweep_id"], s["name"], s["created_at"], s["grid_json"]] for s in new_sweeps],
                )
            counts["sweeps"] = len(new_sweeps)
        return counts

    # --------------------------------------------------------------------- reads
    def completed_hashes(self, sweep_id: str | None = None) -> set[str]:
        """spec_hash of every 'completed' run (of one sweep when sweep_id is given)."""
        sql = "SELECT DISTINCT spec_hash FROM runs WHERE status = ? AND spec_hash IS NOT NULL"
        params: list = [RunStatus.COMPLETED.value]
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
            params.append(str(status))
        sql = f"SELECT {self._select('runs', RUN_COLUMNS)} FROM runs"
        if where:
            sql += " WHERE " + " AND ".join(where)
        return self._query(sql + " ORDER BY started_at NULLS LAST, run_id", params)

    def run(self, run_id: str) -> dict | None:
        rows = self._query(f"SELECT {self._select('runs', RUN_COLUMNS)} FROM runs WHERE run_id = ?", [run_id])
        return rows[0] if rows else None

    def _rows_of_runs(self, table: str, columns: tuple[str, ...], run_ids: list[str], order: str) -> list[dict]:
        if not run_ids:
            return []
        return self._query(
            f"SELECT run_id, {self._select(table, columns)} FROM {table} WHERE list_contains(?, run_id) "
            f"ORDER BY run_id, {order}",
            [list(run_ids)],
        )

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
        rows = self._query(
            "SELECT sweep_id, name, created_at, grid_json FROM sweeps ORDER BY created_at DESC NULLS LAST, sweep_id"
        )
        for r in rows:
            try:
                r["grid"] = json.loads(r["grid_json"]) if r["grid_json"] else {}
            except ValueError as e:
                raise StoreError(
                    f"results db {self.path}: sweep {_one_line(r['sweep_id'], 40)} has invalid sweeps.grid_json "
                    f"({_one_line(e, 80)})"
                ) from None
        return rows

    def sweep(self, sweep_id: str) -> dict | None:
        return next((s for s in self.sweeps() if s["sweep_id"] == sweep_id), None)

    def find_sweep(self, name_or_id: str) -> str | None:
        """sweep_id of the sweep with this id, else of the latest-created sweep with this name."""
        rows = self._query("SELECT sweep_id FROM sweeps WHERE sweep_id = ?", [name_or_id])
        if rows:
            return rows[0]["sweep_id"]
        rows = self._query(
            "SELECT sweep_id FROM sweeps WHERE name = ? ORDER BY created_at DESC NULLS LAST, sweep_id DESC LIMIT 1",
            [name_or_id],
        )
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
