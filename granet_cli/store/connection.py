"""Opening and closing a results db: the checks on the file, the read-only connection, and the
one-line errors.

A read-only store (``granet report``, ``sweep --dry-run``) holds one shared-lock connection for
its lifetime so that all its queries see one state; it waits up to ``READ_LOCK_WAIT`` seconds for
a writer and, if the file stays locked (a process that holds it for long: an older granet, the
duckdb shell), reads a private snapshot copy instead. A writer store holds nothing between calls;
how it reaches the file per call is transactions.py. Both refuse what is no db before DuckDB sees
it (a FIFO, a folder, a truncated copy), and every DuckDB or OS error leaves here as one
StoreError line naming the file.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Self

import duckdb

from ..safe_io import PathError, check_regular
from ..text import one_line
from .errors import StoreError, is_lock_error, is_no_space
from .locking import BACKOFF_FIRST, READ_LOCK_WAIT, backoff, lock_timeout_from_env
from .schema import SCHEMA_VERSION, NotGranetDb, inspect_schema

DEFAULT_DB_PATH = Path("results") / "granet.duckdb"
#: bytes before a DuckDB file's first block: the main header and two database headers
FILE_HEADERS = 3 * 4096
#: DuckDB settings of a sandboxed read-only connection (`granet sql` on a db from someone else):
#: no file but the db itself (no COPY, ATTACH, EXPORT, read_csv), no extensions, and locked
SANDBOX: dict[str, str | bool | int | float | list[str]] = {
    "enable_external_access": False,
    "autoinstall_known_extensions": False,
    "autoload_known_extensions": False,
    "allow_community_extensions": False,
    "lock_configuration": True,
}


def default_db_path() -> Path:
    """``$GRANET_DB`` if set (and non-empty), else ``results/granet.duckdb``."""
    env = os.environ.get("GRANET_DB")
    return Path(env) if env else DEFAULT_DB_PATH


class Connection:
    """A results db's file and the store's hold on it: opened in __init__, released by close().

    The base of Store (see db.py); a writer's per-call attach, its schema check at open and its
    transactions are the subclass Transactions (transactions.py)."""

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
        self._version = SCHEMA_VERSION  # the file's schema version (a read-only store's may be older)
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
                if is_no_space(e):
                    raise self._wrap(e) from None
                raise StoreError(f"results db {self.path}: cannot create folder ({one_line(e)})") from None
        try:
            if read_only:
                self._open_read_only(snapshot_if_locked)
            else:
                self._prepare()
        except BaseException:
            self.close()
            raise

    def _prepare(self) -> None:
        """Writer open (create, migrate or refuse the schema): Transactions._prepare."""
        raise NotImplementedError

    def _wrap(self, e: BaseException) -> StoreError:
        if isinstance(e, StoreError):
            return e
        msg = str(e)
        low = msg.lower()
        if is_no_space(e):
            return StoreError(f"results db {self.path}: no space left on device")
        if "not a valid duckdb database" in low or "corrupt" in low:
            return StoreError(f"results db {self.path}: not a DuckDB database ({one_line(msg, 200)})")
        if is_lock_error(e):
            return StoreError(
                f"results db {self.path}: locked by another process (a sweep still writing?) ({one_line(msg, 200)})"
            )
        return StoreError(f"results db {self.path}: {one_line(msg)}")

    def _not_granet(self, e: NotGranetDb, *, writing: bool) -> StoreError:
        tail = "; refusing to write to it (choose another --db)" if writing else ""
        return StoreError(f"results db {self.path}: not a granet results db ({e}){tail}")

    def _open_read_only(self, snapshot_if_locked: bool) -> None:
        """Open the file read-only, waiting up to READ_LOCK_WAIT for a writer's short transaction;
        a file locked for longer is read from a snapshot copy (or refused)."""
        deadline = time.monotonic() + min(self.lock_timeout, READ_LOCK_WAIT)
        delay = BACKOFF_FIRST
        while True:
            try:
                self._ro = duckdb.connect(self._target, read_only=True, config=self._config)
                break
            except duckdb.Error as e:
                if not is_lock_error(e):
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
            version, self._columns = inspect_schema(self._ro)
            self._version = SCHEMA_VERSION if version is None else version
        except NotGranetDb as e:
            raise self._not_granet(e, writing=False) from None
        except duckdb.Error as e:
            raise self._wrap(e) from None
        if version is None:
            raise StoreError(f"results db {self.path}: not a granet results db (no tables)")

    def _wait(self, delay: float, deadline: float) -> float:
        t0 = time.monotonic()
        try:
            return backoff(delay, deadline)
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
                    f"could not be read ({one_line(e, 200)})"
                ) from None
            raise StoreError(
                f"results db {self.path}: locked by another process and could not be copied ({one_line(e, 200)})"
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
        need, have = FILE_HEADERS + int(row[0]) * int(row[1]), os.stat(path).st_size
        if have < need:
            raise StoreError(
                f"results db {self.path}: truncated ({have:,} bytes, its header counts {need:,}); "
                "restore it from a complete copy or choose another --db"
            )

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

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:  # pragma: no cover - best effort
        try:
            self.close()
        except Exception:
            pass
