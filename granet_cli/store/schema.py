"""What a granet results db looks like, and how an older one becomes today's.

The columns are defined once, in columns.py; this module derives the store's views of them (the
column lists reads and writes use, the SQL of each table), creates the schema in a new file,
recognises a granet db by its tables (``granet_meta`` holds ``schema_version``; files from before
that table are recognised by granet's columns: v1 without ``granet_meta``, v0 also without the
top-5 / samples-per-second columns) and migrates an older one one numbered step at a time
(``MIGRATIONS``; the caller runs all steps in one transaction). A column a later version renamed
(columns.RENAMED) keeps its old name in an older file: ``file_column`` says which name a file of
a given version uses, so a read-only reader selects it under today's name. Nothing here opens a
file: every function takes a connection, so the rules can be read, and tested, apart from the
locking.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from enum import StrEnum

import duckdb

from .. import __version__
from ..text import one_line
from . import columns
from .columns import EPOCH_METRICS, FINAL_METRICS, START_KEYS

#: the schema this granet writes (the newest `since` or rename in columns.py); older granet dbs are
#: migrated to it by a writer
SCHEMA_VERSION = max(2, *(c.since for cols in columns.TABLES.values() for c in cols), *columns.RENAMED)
META_TABLE = "granet_meta"


class RunStatus(StrEnum):
    """The ``status`` of a runs row.  ``interrupted``: killed or crashed mid-run, resumable."""

    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    DIVERGED = "diverged"
    INTERRUPTED = "interrupted"
    #: a `granet tune` trial its scheduler (ASHA) ended early: not a failure, and not a result
    STOPPED = "stopped"


RUN_STATUSES = tuple(s.value for s in RunStatus)
#: statuses ``fail_run`` may set
FAIL_STATUSES = (
    RunStatus.FAILED.value,
    RunStatus.DIVERGED.value,
    RunStatus.INTERRUPTED.value,
    RunStatus.STOPPED.value,
)

# The columns themselves are defined once, in columns.py; these are the store's views.
#: runs columns holding the final metrics of a run (finish_run / fail_run keys)
FINAL_COLUMNS = FINAL_METRICS
#: keys start_run reads from its dict (started_at defaults to now); an optional "attempts" is accepted too
START_COLUMNS = START_KEYS
#: the identity columns a runs row starts with
IDENTITY_COLUMNS = ("run_id", "sweep_id", "spec_hash", "config_hash")
#: the order `runs()` returns a row's columns in: identity, status, metrics, bookkeeping
RUN_COLUMNS = (
    *IDENTITY_COLUMNS,
    *(c for c in START_KEYS if c not in (*IDENTITY_COLUMNS, "spec_json", "started_at")),
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
#: table -> column -> SQL type, the current schema, in creation order
COLUMN_TYPES: dict[str, dict[str, str]] = {t: {c.name: c.sql for c in cols} for t, cols in columns.TABLES.items()}
PRIMARY_KEYS = columns.PRIMARY_KEYS
#: (table, column) -> SQL default, for the columns that have one
COLUMN_DEFAULTS = {(t, c.name): c.default for t, cols in columns.TABLES.items() for c in cols if c.default is not None}
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


def file_column(table: str, col: str, version: int) -> str:
    """The name today's column ``col`` of ``table`` has in a granet db of schema ``version``
    (its old name there when a later version renamed it: columns.RENAMED)."""
    for v in sorted(columns.RENAMED, reverse=True):
        if v > version:
            col = next((old for old, new in columns.RENAMED[v].get(table, {}).items() if new == col), col)
    return col


def column_def(table: str, col: str) -> str:
    """The column's definition in CREATE TABLE / ADD COLUMN: name, type and default."""
    default = COLUMN_DEFAULTS.get((table, col))
    return f"{col} {COLUMN_TYPES[table][col]}" + (f" DEFAULT {default}" if default is not None else "")


def create_table_sql(table: str) -> str:
    parts = [column_def(table, c) for c in COLUMN_TYPES[table]]
    if table in PRIMARY_KEYS:
        parts.append(f"PRIMARY KEY ({', '.join(PRIMARY_KEYS[table])})")
    return f"CREATE TABLE {table} ({', '.join(parts)})"


def add_columns(con: duckdb.DuckDBPyConnection, version: int) -> None:
    """Add the columns schema ``version`` introduced (to tables that already existed)."""
    for table, cols in ADDED_IN[version].items():
        for col in cols:
            con.execute(f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {column_def(table, col)}")


def rename_columns(con: duckdb.DuckDBPyConnection, version: int) -> None:
    """Rename the columns schema ``version`` renamed (columns.RENAMED), in place: values, order and
    types stay."""
    for table, renames in columns.RENAMED.get(version, {}).items():
        for old, new in renames.items():
            con.execute(f"ALTER TABLE {table} RENAME COLUMN {old} TO {new}")


def upgrade(con: duckdb.DuckDBPyConnection, version: int) -> None:
    """The step to schema ``version`` from the one before: its renames, then its new columns."""
    rename_columns(con, version)
    add_columns(con, version)


def set_meta(con: duckdb.DuckDBPyConnection, key: str, value: str) -> None:
    con.execute(f"INSERT OR REPLACE INTO {META_TABLE} (key, value) VALUES (?, ?)", [key, value])


def migrate_v0_to_v1(con: duckdb.DuckDBPyConnection) -> None:
    """v1 added top-5 accuracy and samples/s."""
    add_columns(con, 1)


def migrate_v1_to_v2(con: duckdb.DuckDBPyConnection) -> None:
    """v2 added overall density, model selection, config hash, attempts, the writer's pid/host,
    validation metrics per epoch, and granet_meta (the version stamp that makes the db recognisable)."""
    add_columns(con, 2)
    con.execute(f"CREATE TABLE IF NOT EXISTS {META_TABLE} (key VARCHAR PRIMARY KEY, value VARCHAR)")


#: version -> the step that takes a db from that version to the next; run in order, in one transaction
MIGRATIONS: dict[int, Callable[[duckdb.DuckDBPyConnection], None]] = {0: migrate_v0_to_v1, 1: migrate_v1_to_v2}
for _v in range(2, SCHEMA_VERSION):  # later versions only rename and add what columns.py says
    MIGRATIONS[_v] = functools.partial(upgrade, version=_v + 1)


def create_schema(con: duckdb.DuckDBPyConnection) -> None:
    """Create every table of today's schema in an empty database, stamped with its version."""
    for table in TABLES:
        con.execute(create_table_sql(table))
    con.execute(f"CREATE TABLE {META_TABLE} (key VARCHAR PRIMARY KEY, value VARCHAR)")
    set_meta(con, "schema_version", str(SCHEMA_VERSION))
    set_meta(con, "created_by", f"granet {__version__}")


def migrate(con: duckdb.DuckDBPyConnection, version: int) -> None:
    """Take a granet db of schema ``version`` to SCHEMA_VERSION, step by step, and stamp it."""
    for v in range(version, SCHEMA_VERSION):
        MIGRATIONS[v](con)
    set_meta(con, "schema_version", str(SCHEMA_VERSION))
    set_meta(con, f"migrated_from_v{version}_by", f"granet {__version__}")


class NotGranetDb(Exception):
    """The file is a DuckDB database, but not a granet results db (the message says why)."""


def inspect_schema(con: duckdb.DuckDBPyConnection) -> tuple[int | None, dict[str, set[str]]]:
    """(schema version, columns per table of schema main) of the connection's current database.

    Version None means the database has no tables or views at all (a new file).  Raises
    NotGranetDb for a DuckDB file whose tables are not granet's."""
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
        raise NotGranetDb(f"missing tables: {', '.join(missing)}")
    # today's name or one it had before a rename (the version, read below, says which; the tables
    # must look like granet's before granet_meta is read)
    absent = [
        f"{t}.{c}"
        for t in TABLES
        for c in V0_COLUMNS[t]
        if not {c, *(file_column(t, c, v) for v in range(SCHEMA_VERSION))} & cols[t]
    ]
    if absent:
        raise NotGranetDb(f"missing columns: {', '.join(absent[:6])}{', ...' if len(absent) > 6 else ''}")
    if META_TABLE in cols:
        row = con.execute(f"SELECT value FROM {META_TABLE} WHERE key = 'schema_version'").fetchone()
        if row is None:
            raise NotGranetDb(f"{META_TABLE} has no valid schema_version ({'none'!r})")
        try:
            version = int(row[0])
        except (TypeError, ValueError):
            version = -1
        if version < 0:
            raise NotGranetDb(f"{META_TABLE} has no valid schema_version ({one_line(repr(row[0]), 40)})")
    else:  # written before granet_meta existed: v1 if it has v1's columns, else v0
        has_v1 = all(file_column(t, c, 1) in cols[t] for t, added in ADDED_IN[1].items() for c in added)
        version = 1 if has_v1 else 0
    return version, cols
