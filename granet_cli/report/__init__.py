"""Reports: results db -> tables -> Markdown / HTML (+ SVG plots), or JSON.

Entry points
------------
``build_report(db_path, ...) -> ReportResult``
    Reads the db (read-only), writes ``<out_dir>/<name>.md`` (plots as
    ``<out_dir>/<name>_files/*.svg``) and/or ``<out_dir>/<name>.html`` (plots
    inline, no external assets) and returns what it wrote plus the main tables.

``summary_tables(db_path, *, sweep=None, metric=...) -> list[Table]``
    The main tables only (one per dataset/model), nothing written.

``report_json(db_path, *, sweep=None, metric=...) -> dict``
    Every table's numbers as one JSON-ready dict (``granet report --json``), nothing written.

Printing a main table in the CLI::

    from rich.console import Console
    res = build_report(db, sweep=..., out_dir=..., fmt=..., metric=...)
    for table in res.main_tables:
        Console().print(table.to_rich())          # fits 80 columns; significant best in bold
    # or, without rich: table.header (list[str]) and table.plain_rows() (list[list[str]])

Per dataset/model the report has a main table (tables.py: one row per method and configuration,
one column per target density, ``mean ± ci95`` over seeds), the differences to dense, GraNet's
pairwise Welch comparisons and one budget table (comparisons.py), published numbers where the recipe
matches (published.py) and its plots (figures.py, drawn by plots.py).  Runs that are
running/failed/diverged are listed separately and never averaged in.

The package, from the ground up: grouping.py (which runs form one row), stats.py (confidence
intervals, Welch's t-test), tables.py, comparisons.py, published.py, plots.py, figures.py,
analysis.py (one dataset/model), render.py (the pages), build.py (load, analyse, write).

The names below are imported from their modules on first use, so that ``report.grouping`` (which
the sweep's trackers use) does not pull in matplotlib, jinja and the store.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # for type checkers and readers; at run time __getattr__ imports each on first use
    from .analysis import GroupReport
    from .build import ReportError, ReportResult, build_report, report_json, summary_tables
    from .figures import density_lines
    from .published import PUBLISHED_CSV, load_published
    from .render import md_cell
    from .tables import METHOD_ORDER, METRICS, Cell, Table, TableRow, TextTable, Unit, build_table

#: the module of this package that defines each public name
_HOMES = {
    "analysis": ("GroupReport",),
    "build": ("ReportError", "ReportResult", "build_report", "report_json", "summary_tables"),
    "figures": ("density_lines",),
    "published": ("PUBLISHED_CSV", "load_published"),
    "render": ("md_cell",),
    "tables": ("METHOD_ORDER", "METRICS", "Cell", "Table", "TableRow", "TextTable", "Unit", "build_table"),
}
_HOME = {name: module for module, names in _HOMES.items() for name in names}

__all__ = [
    "GroupReport",
    "ReportError",
    "ReportResult",
    "build_report",
    "report_json",
    "summary_tables",
    "density_lines",
    "PUBLISHED_CSV",
    "load_published",
    "md_cell",
    "METHOD_ORDER",
    "METRICS",
    "Cell",
    "Table",
    "TableRow",
    "TextTable",
    "Unit",
    "build_table",
]


def __getattr__(name: str) -> Any:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{home}", __name__), name)
    globals()[name] = value
    return value
