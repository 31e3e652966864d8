"""granet results: export a results table as CSV, Parquet or JSON."""

from __future__ import annotations

import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from .app import DbOpt, QuietOpt, app, fail, out, resolve_db


class ResultsFormat(StrEnum):
    csv = "csv"
    parquet = "parquet"
    json = "json"


class ResultsTable(StrEnum):
    runs = "runs"
    epochs = "epochs"
    layers = "layers"
    mask_updates = "mask_updates"
    sweeps = "sweeps"


@app.command("results")
def results_cmd(
    db: DbOpt = None,
    sweep: Annotated[str | None, typer.Option("--sweep", help="Only this sweep's runs (name or id).")] = None,
    table: Annotated[ResultsTable, typer.Option("--table", help="Which table.")] = ResultsTable.runs,
    status: Annotated[str | None, typer.Option("--status", help="Only runs with this status (e.g. completed).")] = None,
    fmt: Annotated[
        ResultsFormat, typer.Option("--format", help="File format (DuckDB's own COPY); json is one array.")
    ] = ResultsFormat.csv,
    out_file: Annotated[
        Path | None, typer.Option("--out", help="File to write (default: standard output; parquet needs a file).")
    ] = None,
    quiet: QuietOpt = False,
) -> None:
    """Export a results table (runs by default) as CSV, Parquet or JSON, read-only (works while a sweep writes)."""
    from ..results_io import ResultsError, export_table

    try:
        count, data = export_table(
            resolve_db(db), table=str(table), fmt=str(fmt), out=out_file, sweep=sweep, status=status
        )
    except ResultsError as e:
        fail(str(e))
    if data is not None:
        sys.stdout.flush()
        sys.stdout.buffer.write(data) if hasattr(sys.stdout, "buffer") else sys.stdout.write(data.decode())
        sys.stdout.flush()
    elif not quiet:
        out.print(f"wrote {count} {table} rows to {out_file} ({fmt})", highlight=False, soft_wrap=True)
