"""Results out of the DuckDB file: `granet results` (DuckDB's own COPY) and `granet sql`.

Both open the results db read-only through `Store(path, read_only=True)`, so they work while
a sweep holds the file for writing (the store then reads a private snapshot copy). A results db
may come from someone else: `granet sql` runs exactly one query in a sandboxed connection (no
file access beyond the db, no extensions, configuration locked) and prints no terminal escapes.
"""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .safe_io import PathError, atomic_path, check_regular
from .text import one_line as _one_line

#: exportable tables and the order their rows are written in
TABLE_ORDER = {
    "runs": "started_at NULLS LAST, run_id",
    "epochs": "run_id, epoch",
    "layers": "run_id, name",
    "mask_updates": "run_id, step",
    "sweeps": "created_at NULLS LAST, sweep_id",
}
FORMATS = {
    "csv": "(FORMAT csv, HEADER true)",
    "parquet": "(FORMAT parquet)",
    "json": "(FORMAT json, ARRAY true)",
}


class ResultsError(RuntimeError):
    """Bad input to `granet results` / `granet sql`: one line."""


#: the statements `granet sql` runs: queries only
QUERY_TYPES = ("SELECT", "EXPLAIN", "PRAGMA", "CALL")
#: C0 and C1 control characters except tab and newline (ESC starts a terminal escape sequence)
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def _open(db_path: Path, *, sandboxed: bool = False):
    from .store import Store, StoreError

    try:
        return Store(db_path, read_only=True, sandboxed=sandboxed)
    except StoreError as e:
        raise ResultsError(str(e)) from None


def _connection(store):
    """The read-only store's own DuckDB connection, as a context manager (the store serialises its use)."""
    return store._reading()


def _quote(text: str | Path) -> str:
    """A SQL string literal (COPY's target file name cannot be a parameter)."""
    return "'" + str(text).replace("'", "''") + "'"


def export_table(
    db_path: Path,
    *,
    table: str = "runs",
    fmt: str = "csv",
    out: Path | None = None,
    sweep: str | None = None,
    status: str | None = None,
) -> tuple[int, bytes | None]:
    """COPY one table (rows of one sweep / one status when given) to `out`, or return its bytes
    when `out` is None (csv/json only). Returns (row count, bytes or None)."""
    import duckdb

    if table not in TABLE_ORDER:
        raise ResultsError(f"--table: expected one of {', '.join(TABLE_ORDER)}, got {table!r}")
    if fmt not in FORMATS:
        raise ResultsError(f"--format: expected one of {', '.join(FORMATS)}, got {fmt!r}")
    if out is None and fmt == "parquet":
        raise ResultsError("--format parquet writes a binary file: give --out FILE")
    if out is not None and Path(out).is_dir():
        raise ResultsError(f"--out {out}: is a folder; give a file name")
    if status is not None and table == "sweeps":
        raise ResultsError("--status filters runs; the sweeps table has no status")
    if out is not None:
        try:
            check_regular(out, "--out")
        except PathError as e:
            raise ResultsError(str(e)) from None
    with _open(db_path) as store, _connection(store) as con:
        where, params = [], []
        if sweep is not None:
            sweep_id = store.find_sweep(sweep)
            if sweep_id is None:
                raise ResultsError(f"--sweep {sweep}: no such sweep (name or id) in {db_path}")
            where.append(
                "sweep_id = ?"
                if table in ("runs", "sweeps")
                else "run_id IN (SELECT run_id FROM runs WHERE sweep_id = ?)"
            )
            params.append(sweep_id)
        if status is not None:
            where.append("status = ?" if table == "runs" else "run_id IN (SELECT run_id FROM runs WHERE status = ?)")
            params.append(status)
        query = f"SELECT {store.star(table)} FROM {table}" + (" WHERE " + " AND ".join(where) if where else "")
        try:
            count = con.execute(f"SELECT count(*) FROM ({query})", params).fetchone()[0]
        except duckdb.Error as e:
            raise ResultsError(f"results db {db_path}: {_one_line(e, 200)}") from None
        copy = f"({query} ORDER BY {TABLE_ORDER[table]})"
        if out is None:
            fd, tmp = tempfile.mkstemp(prefix="granet-results-", suffix=f".{fmt}")
            os.close(fd)
            try:
                con.execute(f"COPY {copy} TO {_quote(tmp)} {FORMATS[fmt]}", params)
                return count, Path(tmp).read_bytes()
            except duckdb.Error as e:
                raise ResultsError(f"results db {db_path}: {_one_line(e, 200)}") from None
            finally:
                Path(tmp).unlink(missing_ok=True)
        if not Path(out).parent.is_dir():
            raise ResultsError(f"--out {out}: folder {Path(out).parent} does not exist")
        try:  # COPY to a temporary name beside the file, then rename: never half a file
            with atomic_path(out, "--out") as target:
                con.execute(f"COPY {copy} TO {_quote(target)} {FORMATS[fmt]}", params)
        except duckdb.Error as e:
            raise ResultsError(f"--out {out}: {_one_line(e, 200)}") from None
        except OSError as e:
            raise ResultsError(f"--out {out}: cannot write ({e.strerror or _one_line(e, 120)})") from None
    return count, None


@dataclass
class QueryResult:
    columns: list[str]
    types: list[str]
    rows: list[tuple[Any, ...]]


def one_query(sql: str) -> None:
    """Refuse anything but exactly one query (no COPY, ATTACH, INSTALL, SET, ...): one line."""
    import duckdb

    if not sql.strip():
        raise ResultsError("sql: empty query")
    try:
        statements = duckdb.connect(":memory:").extract_statements(sql)
    except duckdb.Error as e:
        raise ResultsError(f"sql: {_one_line(str(e).splitlines()[0], 250)}") from None
    if len(statements) != 1:
        raise ResultsError(f"sql: give exactly one statement, got {len(statements)} (granet sql runs one query)")
    kind = statements[0].type.name
    if kind not in QUERY_TYPES:
        raise ResultsError(
            f"sql: granet sql is read-only: one query ({', '.join(QUERY_TYPES)}), got {kind}; it cannot write or read files"
        )


def run_sql(db_path: Path, sql: str) -> QueryResult:
    """Run one query against the results db in a sandboxed read-only connection; its rows."""
    import duckdb

    one_query(sql)
    with _open(db_path, sandboxed=True) as store, _connection(store) as con:
        try:
            cur = con.execute(sql)
            if cur.description is None:
                return QueryResult([], [], [])
            columns = [d[0] for d in cur.description]
            types = [str(d[1]) for d in cur.description]
            return QueryResult(columns, types, cur.fetchall())
        except duckdb.Error as e:
            msg = str(e).splitlines()[0] if str(e).strip() else type(e).__name__
            if "read-only" in msg.lower() or "read only" in msg.lower() or "disabled by configuration" in msg:
                msg += " (granet sql is read-only and reads nothing but the results db)"
            raise ResultsError(f"sql: {_one_line(msg, 250)}") from None


def printable(text: str) -> str:
    """`text` with control characters (terminal escape sequences) shown as \\xNN instead of sent."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def format_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return printable(str(value))
