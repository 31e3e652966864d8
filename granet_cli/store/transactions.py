"""How a store reaches the file for one call: a writer's attach-per-call with lock retry, the
schema check when a writer opens, transactions, and queries.

Holding a write connection for a whole run locks every other ``granet run`` out ("locked by
another process"), which breaks Slurm array jobs that share one results db. So a writer store
holds nothing between calls: each call attaches the file to a private in-memory DuckDB instance,
runs one short transaction and detaches it again (~15 ms on an idle machine, ~70 ms on a loaded
one; the detach checkpoints the WAL into the file, so no WAL is left between writes), and a lock
conflict is retried (locking.py). Writers thus take turns per call, never inside one transaction.
Reads of a writer store do the same with a read-only attach; a read-only store reads its one
connection (connection.py).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb

from ..text import one_line
from .connection import Connection
from .errors import StoreError, is_lock_error
from .locking import BACKOFF_FIRST, LOCK_TIMEOUT_ENV, READ_LOCK_WAIT
from .schema import (
    COLUMN_TYPES,
    SCHEMA_VERSION,
    NotGranetDb,
    create_schema,
    file_column,
    inspect_schema,
    migrate,
)

#: alias under which a writer store attaches the file to its in-memory instance
ALIAS = "granet_results"


def sql_literal(text: str) -> str:
    """``text`` as a quoted SQL string literal (for ATTACH, which takes no parameters)."""
    return "'" + text.replace("'", "''") + "'"


class Transactions(Connection):
    """A store's calls on the file: ``_tx`` (one write transaction), ``_reading`` / ``_query``
    (reads), and the writer's open (``_prepare``: create the schema, migrate, or refuse)."""

    def _classify(self, con: duckdb.DuckDBPyConnection) -> tuple[int | None, dict[str, set[str]]]:
        """inspect_schema for a writer: a foreign or newer db is a StoreError."""
        if not self._memory and os.path.exists(self._target):
            self._check_complete(con, self._target)
        try:
            version, cols = inspect_schema(con)
        except NotGranetDb as e:
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
                create_schema(con)
            elif version < SCHEMA_VERSION:
                migrate(con, version)
            self._columns = inspect_schema(con)[1]
            self._version = SCHEMA_VERSION

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
        sql = f"ATTACH {sql_literal(self._target)} AS {ALIAS} (TYPE DUCKDB{'' if write else ', READ_ONLY'})"
        start = time.monotonic()
        delay = BACKOFF_FIRST
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
                if is_lock_error(e):
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
                    if is_lock_error(e):
                        raise StoreError(
                            f"results db {self.path}: still locked by another process after "
                            f"{self.lock_timeout:g} s (set {LOCK_TIMEOUT_ENV} to wait longer) "
                            f"({one_line(e, 160)})"
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
                con.execute(f"USE {ALIAS}")
                yield con
                failed = False
            except duckdb.Error as e:
                raise self._wrap(e) from None
            finally:
                try:
                    con.execute("USE memory")
                    con.execute(f"DETACH {ALIAS}")  # checkpoints a read-write attach into the file
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
        """SELECT list of ``columns`` under today's names: a column an older file has under its old
        name (a read-only store does not migrate) is selected AS today's; one it lacks reads as a
        typed NULL."""
        have = self._columns.get(table, set())

        def one(c: str) -> str:
            old = file_column(table, c, self._version)
            if old != c and old in have:
                return f"{old} AS {c}"
            return c if c in have else f"CAST(NULL AS {COLUMN_TYPES[table][c]}) AS {c}"

        return ", ".join(one(c) for c in columns)

    def _run_exists(self, con: duckdb.DuckDBPyConnection, run_id: str) -> bool:
        return con.execute("SELECT 1 FROM runs WHERE run_id = ?", [run_id]).fetchone() is not None

    def schema_version(self) -> int | None:
        """The file's schema version (a read-only store of an older file reports the older one)."""
        try:
            with self._reading() as con:
                return inspect_schema(con)[0]
        except NotGranetDb:
            return None
        except duckdb.Error as e:
            raise self._wrap(e) from None
