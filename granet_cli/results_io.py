"""Results out of the DuckDB file: `granet results` (DuckDB's own COPY) and `granet sql`.

Both open the results db read-only through `Store(path, read_only=True)`, so they work while
a sweep holds the file for writing (the store then reads a private snapshot copy).
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


def _open(db_path: Path):
    from .store import Store, StoreError

    try:
        return Store(db_path, read_only=True)
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
        query = f"SELECT * FROM {table}" + (" WHERE " + " AND ".join(where) if where else "")
        count = con.execute(f"SELECT count(*) FROM ({query})", params).fetchone()[0]
        tmp = None
        if out is None:
            fd, tmp = tempfile.mkstemp(prefix="granet-results-", suffix=f".{fmt}")
            os.close(fd)
            target = Path(tmp)
        else:
            target = Path(out)
            if not target.parent.is_dir():
                raise ResultsError(f"--out {out}: folder {target.parent} does not exist")
        try:
            con.execute(f"COPY ({query} ORDER BY {TABLE_ORDER[table]}) TO {_quote(target)} {FORMATS[fmt]}", params)
            data = target.read_bytes() if tmp is not None else None
        except duckdb.Error as e:
            raise ResultsError(f"--out {target}: {_one_line(e, 200)}") from None
        finally:
            if tmp is not None:
                Path(tmp).unlink(missing_ok=True)
    return count, data


@dataclass
class QueryResult:
    columns: list[str]
    types: list[str]
    rows: list[tuple[Any, ...]]


def run_sql(db_path: Path, sql: str) -> QueryResult:
    """Run one SQL statement against the results db, read-only; its rows."""
    import duckdb

    if not sql.strip():
        raise ResultsError("sql: empty query")
    with _open(db_path) as store, _connection(store) as con:
        try:
            cur = con.execute(sql)
            if cur.description is None:
                return QueryResult([], [], [])
            columns = [d[0] for d in cur.description]
            types = [str(d[1]) for d in cur.description]
            return QueryResult(columns, types, cur.fetchall())
        except duckdb.Error as e:
            msg = str(e).splitlines()[0] if str(e).strip() else type(e).__name__
            if "read-only" in msg.lower() or "read only" in msg.lower():
                msg += " (granet sql opens the results db read-only)"
            raise ResultsError(f"sql: {_one_line(msg, 250)}") from None


def format_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)
