"""granet sql: one read-only SQL statement against the results database."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from .app import DbOpt, Table, app, fail, out, resolve_db


@app.command("sql")
def sql_cmd(
    query: Annotated[
        str, typer.Argument(help='One SQL statement, e.g. "select method, avg(final_test_acc) from runs group by all".')
    ],
    db: DbOpt = None,
    as_csv: Annotated[bool, typer.Option("--csv", help="CSV on standard output instead of a table.")] = False,
    max_rows: Annotated[
        int, typer.Option("--max-rows", min=1, help="Rows shown in the table (--csv prints all).")
    ] = 1000,
) -> None:
    """Run SQL against the results database, read-only (tables: runs, epochs, layers, mask_updates, sweeps)."""
    import csv

    from rich.markup import escape

    from ..results_io import ResultsError, format_value, printable, run_sql

    try:
        res = run_sql(resolve_db(db), query)
    except ResultsError as e:
        fail(str(e))
    if as_csv:
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow([printable(c) for c in res.columns])
        writer.writerows([["" if v is None else printable(str(v)) for v in row] for row in res.rows])
        return
    table = Table(show_lines=False)
    for col, typ in zip(res.columns, res.types):
        numeric = any(t in typ.upper() for t in ("INT", "DOUBLE", "FLOAT", "DECIMAL", "REAL", "NUMBER"))
        table.add_column(escape(printable(col)), justify="right" if numeric else "left", overflow="fold")
    for row in res.rows[:max_rows]:
        table.add_row(*(escape(format_value(v)) for v in row))
    if res.columns:
        out.print(table)
    more = f" (showing {max_rows}; --csv prints all)" if len(res.rows) > max_rows else ""
    out.print(f"{len(res.rows)} row{'s' if len(res.rows) != 1 else ''}{more}", highlight=False, soft_wrap=True)
