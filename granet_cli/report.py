"""Reports: results db -> tables -> Markdown / HTML (+ SVG plots).

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

Table layout: one row per method and configuration (dense first, shown as the
"dense (baseline)" row whose value is repeated in every column, then granet,
granet_uniform, rigl, set, gmp, gmp_uniform, static, then any other method
alphabetically), one column per target density (ascending), each cell
``mean ± ci95`` over the completed runs' distinct seeds (the half-width of the
t-based 95 % interval, stats.summary; no interval when n == 1); the n most cells
share is stated once in the table's notes and a cell says ``(n=k)`` only where it
differs; ``–`` where there is no completed run.  In the main table a sparse cell
is marked best only when it is significantly best in its column (Welch's t-test,
p < 0.05 against every other sparse cell); otherwise the cells tied with the
highest mean are marked ≈ (stats.rank_column).  Per dataset/model the report
adds the differences to dense, GraNet's pairwise Welch comparisons, published
numbers where the recipe matches (data/published.csv) and one budget table
(densities, FLOPs, ITOP, wall time).  Runs that are running/failed/diverged are
listed separately and never averaged in.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeGuard, cast

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from markupsafe import Markup

from . import plots as P
from . import stats as S
from .grouping import METHOD_FIELDS, RowGroup, group_rows
from .provenance import provenance
from .safe_io import PathError, publish
from .store import Store, StoreError

METHOD_ORDER = ("dense", "granet", "granet_uniform", "rigl", "set", "gmp", "gmp_uniform", "static")
METRICS = {
    "final_test_acc": "Final test accuracy (%)",
    "selected_test_acc": "Selected test accuracy (%, epoch of best validation accuracy)",
    "best_test_acc": "Best test accuracy over epochs (%, optimistic: selected on the test set)",
}
METRIC_SHORT = {
    "final_test_acc": "final test accuracy",
    "selected_test_acc": "selected test accuracy",
    "best_test_acc": "best test accuracy (optimistic)",
}
FORMATS = ("md", "html", "both")
DASH = "–"
BASELINE_LABEL = "dense (baseline)"
TEMPLATES_DIR = Path(__file__).with_name("templates")
#: at most this many density panels in the epochs plot (else min / median / max)
MAX_EPOCH_PANELS = 6


class ReportError(ValueError):
    """A report problem with a one-line message."""


# --------------------------------------------------------------------------- tables
@dataclass
class Cell:
    """Aggregate of one (row, density) cell over its seeds.

    ``mean``/``std``/``ci95`` are in the column's own units (accuracies as fractions);
    ``ci95`` is the half-width of the t-based 95 % interval (None when n < 2); ``values``
    the per-seed values; ``text`` the formatted value (no marks).  ``best``: significantly
    best in its column; ``tied``: tied for best (see stats.rank_column)."""

    mean: float
    std: float
    n: int
    text: str = ""
    best: bool = False
    ci95: float | None = None
    values: list[float] = field(default_factory=list)
    tied: bool = False
    runs: list[dict] = field(default_factory=list, repr=False)

    @property
    def mark(self) -> str:
        return " ≈" if self.tied else ""

    def to_json(self, label: str, density: float) -> dict[str, Any]:
        ci = None if self.ci95 is None else [self.mean - self.ci95, self.mean + self.ci95]
        return {
            "label": label,
            "density": density,
            "mean": self.mean,
            "std": self.std,
            "ci95": self.ci95,
            "ci95_interval": ci,
            "n": self.n,
            "values": self.values,
            "seeds": [r.get("seed") for r in self.runs],  # values[i] is the run of seeds[i]
            "best": self.best,
            "tied": self.tied,
            "text": self.text,
        }


@dataclass
class TableRow:
    method: str
    label: str
    cells: list[Cell | None]
    baseline: bool = False
    group: RowGroup | None = field(default=None, repr=False)


@dataclass
class Table:
    """One table of a report.

    ``header`` = ["method", "<density>", ...]; ``rows`` in method order;
    ``notes`` are one-line remarks shown with the table (what a cell is, the n of every cell
    when they share one, the dense baseline value, what the marks mean).  ``plain_rows()``
    gives the cell texts as strings (``–`` for missing, no marks), ``to_rich()`` a
    ``rich.table.Table`` that fits 80 columns, ``to_json()`` the numbers.
    """

    key: str
    title: str
    dataset: str
    model: str
    densities: list[float]
    rows: list[TableRow]
    notes: list[str] = field(default_factory=list)
    marks_best: bool = False
    #: run_id -> label of the row it is aggregated in (runs not in the dict are not shown)
    run_labels: dict[str, str] = field(default_factory=dict)
    groups: list[RowGroup] = field(default_factory=list)
    #: the n (distinct seeds) the notes state for the table; cells with another n say theirs
    n: int | None = None

    @property
    def header(self) -> list[str]:
        return ["method", *(fmt_density(d) for d in self.densities)]

    def plain_rows(self) -> list[list[str]]:
        return [[r.label, *(c.text if c else DASH for c in r.cells)] for r in self.rows]

    def best_cells(self) -> set[tuple[int, int]]:
        """(row index, column index into densities) of the cells marked significantly best."""
        return {(i, j) for i, r in enumerate(self.rows) for j, c in enumerate(r.cells) if c and c.best}

    def tied_cells(self) -> set[tuple[int, int]]:
        """(row index, column index) of the cells tied for best."""
        return {(i, j) for i, r in enumerate(self.rows) for j, c in enumerate(r.cells) if c and c.tied}

    def to_rich(self):
        """A ``rich.table.Table`` that fits an 80-column terminal: title, notes as caption,
        significantly best cells bold, ties marked ≈, baseline row italic."""
        from rich import box
        from rich.table import Table as RichTable
        from rich.text import Text

        t = RichTable(
            title=f"{self.dataset} / {self.model}: {self.title}",
            box=box.SIMPLE_HEAD,
            caption=" ".join(self.notes) or None,
            caption_justify="left",
            padding=(0, 1),
        )
        t.add_column("method \\ density", overflow="fold", min_width=8)
        for h in self.header[1:]:
            t.add_column(h, justify="right", overflow="fold")
        for r in self.rows:
            cells = [
                Text(c.text + c.mark, style="bold green" if c.best else ("yellow" if c.tied else ""))
                if c
                else Text(DASH, style="dim")
                for c in r.cells
            ]
            t.add_row(Text(r.label, style="italic" if r.baseline else ""), *cells)
        return t

    def to_json(self) -> dict[str, Any]:
        rows = []
        for r in self.rows:
            dens = [1.0] * len(self.densities) if r.baseline else self.densities
            rows.append(
                {
                    "label": r.label,
                    "method": r.method,
                    "baseline": r.baseline,
                    "cells": [c.to_json(r.label, d) if c else None for c, d in zip(r.cells, dens)],
                }
            )
        return {
            "key": self.key,
            "title": self.title,
            "dataset": self.dataset,
            "model": self.model,
            "densities": self.densities,
            "n": self.n,
            "notes": self.notes,
            "rows": rows,
        }


@dataclass
class TextTable:
    """A table of ready-made text cells (budget, comparisons, published numbers).

    ``rows``: list of cell texts, ``strong``: (row, column) of cells shown bold, ``numeric``:
    which columns are right-aligned, ``data``: the same numbers for ``--json``."""

    key: str
    title: str
    header: list[str]
    rows: list[list[str]]
    notes: list[str] = field(default_factory=list)
    strong: set[tuple[int, int]] = field(default_factory=set)
    numeric: list[bool] = field(default_factory=list)
    data: list[dict[str, Any]] = field(default_factory=list)

    def is_strong(self, i: int, j: int) -> bool:
        return (i, j) in self.strong

    def is_numeric(self, j: int) -> bool:
        return j < len(self.numeric) and self.numeric[j]


@dataclass
class GroupReport:
    """One dataset/model: the main accuracy table, the analysis tables (difference to dense,
    GraNet vs the others, published numbers, budget: ``tables``, in that order, those that apply)
    and the plots."""

    dataset: str
    model: str
    slug: str
    main: Table
    tables: list[TextTable]
    plots: list[P.Plot]
    n_completed: int
    missing_metrics: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def table(self, key: str) -> TextTable | None:
        return next((t for t in self.tables if t.key == key), None)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "dataset": self.dataset,
            "model": self.model,
            "n_completed": self.n_completed,
            "main": self.main.to_json(),
        }
        for key in ("dense_diff", "comparisons", "published", "budget"):
            t = self.table(key)
            out[key] = t.data if t else []
        out["not_recorded"] = self.missing_metrics
        return out


@dataclass
class ReportResult:
    """What build_report wrote.  ``main_tables``: one :class:`Table` per
    (dataset, model) for the chosen metric (print with ``table.to_rich()``)."""

    md_path: Path | None
    html_path: Path | None
    main_tables: list[Table]
    name: str = ""
    sweep_id: str | None = None
    groups: list[GroupReport] = field(default_factory=list)
    other_runs: list[dict] = field(default_factory=list)
    plot_paths: list[Path] = field(default_factory=list)


# ------------------------------------------------------------------------ formatting
def _finite(x: Any) -> TypeGuard[float]:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def fmt_density(d: float) -> str:
    return f"{d:g}"


def _agg(values: Sequence[float | None]) -> S.Summary | None:
    return S.summary(values)


@dataclass(frozen=True)
class Unit:
    """How a column's values are shown: ``value * scale`` with ``decimals``, then ``suffix``."""

    scale: float = 1.0
    decimals: int = 3
    suffix: str = ""

    def value(self, x: float | None) -> str:
        return DASH if x is None or not _finite(x) else f"{x * self.scale:.{self.decimals}f}{self.suffix}"

    def cell(self, c: Cell, table_n: int | None) -> str:
        """``mean ± ci95`` (no ± when n < 2), then ``(n=k)`` only where k is not the table's n."""
        text = self.value(c.mean)
        if c.ci95 is not None:
            text += f" ± {c.ci95 * self.scale:.{self.decimals}f}"
        if c.n != table_n:
            text += f" (n={c.n})"
        return text


PERCENT = Unit(100.0, 2)
#: the budget table's columns: runs column, header, unit
BUDGET_COLUMNS = (
    ("final_density", "final density", Unit(1.0, 4)),
    ("nonzero_density", "nonzero weights", Unit(1.0, 4)),
    ("overall_density", "overall density", Unit(1.0, 4)),
    ("train_flops_frac", "train FLOPs", Unit(1.0, 3, "x")),
    ("inference_flops_frac", "infer. FLOPs", Unit(1.0, 3, "x")),
    ("itop_rate", "ITOP", Unit(1.0, 3)),
    ("wall_seconds", "wall s", Unit(1.0, 1)),
)
CI_NOTE = "mean ± 95 % confidence interval over seeds (t-based, n−1 degrees of freedom)"


def fmt_p(p: float) -> str:
    return "p<0.001" if p < 0.001 else f"p={p:.3f}"


def method_sort_key(method: str) -> tuple[int, str]:
    return (METHOD_ORDER.index(method), "") if method in METHOD_ORDER else (len(METHOD_ORDER), method)


def _dkey(d: Any) -> float | None:
    return round(float(d), 6) if _finite(d) else None


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.") or "report"


# ---------------------------------------------------------------------- table logic
def _sparse_densities(runs: list[dict]) -> list[float]:
    ds = {_dkey(r["target_density"]) for r in runs if r["method"] != "dense"}
    ds.discard(None)
    if not ds:  # only dense runs
        ds = {_dkey(r["target_density"]) if _finite(r["target_density"]) else 1.0 for r in runs}
    return sorted(cast(set[float], ds))  # None discarded above; _dkey of a finite value is a float


def _modal_n(cells: list[Cell]) -> int | None:
    """The n most cells share (ties: the larger n); every distinct Cell counted once."""
    counts: dict[int, int] = {}
    for c in {id(c): c for c in cells}.values():
        counts[c.n] = counts.get(c.n, 0) + 1
    return max(counts, key=lambda n: (counts[n], n)) if counts else None


def _make_cell(runs: list[dict], column: str) -> Cell | None:
    """The cell of ``runs`` (one per distinct seed), ``values`` in seed order."""
    runs = sorted(
        (r for r in runs if _finite(r.get(column))),
        key=lambda r: (r.get("seed") if r.get("seed") is not None else 1 << 30, str(r.get("run_id"))),
    )
    vals = [float(r[column]) for r in runs]
    s = _agg(vals)
    if s is None:
        return None
    return Cell(s.mean, s.std, s.n, ci95=s.ci95, values=vals, runs=runs)


def build_table(
    runs: list[dict],
    column: str,
    *,
    key: str,
    title: str,
    unit: Unit = PERCENT,
    mark_best: bool = False,
    higher_is_better: bool = True,
    notes: bool = True,
) -> Table:
    """Aggregate completed ``runs`` (one dataset/model) of ``column`` into a Table.

    One row per method and configuration (see grouping.py): runs are pooled only when their
    specs differ in nothing but the seed, and n counts distinct seeds.  Each cell is
    ``mean ± 95 % CI``; the table's n is stated once in its notes and a cell shows its own n only
    where it differs.  ``mark_best``: per density column, the sparse cell that is significantly
    best (Welch's t-test p < 0.05 against every other sparse cell) is marked ``best``; where none
    is, the cells statistically tied with the highest mean are marked ``tied``."""
    dataset = runs[0]["dataset"] if runs else ""
    model = runs[0]["model"] if runs else ""
    densities = _sparse_densities(runs)
    groups = sorted(group_rows(runs, _dkey), key=lambda g: (method_sort_key(g.method), g.label))
    rows: list[TableRow] = []
    run_labels: dict[str, str] = {}
    for g in groups:
        label = g.label.replace("dense", BASELINE_LABEL, 1) if g.method == "dense" else g.label
        run_labels.update({r["run_id"]: label for r in g.runs})
        if g.method == "dense":
            cell = _make_cell(g.runs, column)
            # the same baseline Cell object in every column
            rows.append(TableRow(g.method, label, [cell for _ in densities], baseline=True, group=g))
            continue
        cells = [_make_cell([r for r in g.runs if _dkey(r["target_density"]) == d], column) for d in densities]
        rows.append(TableRow(g.method, label, cells, group=g))
    all_cells = [c for r in rows for c in r.cells if c is not None]
    table_n = _modal_n(all_cells)
    for c in all_cells:
        c.text = unit.cell(c, table_n)
    note_lines: list[str] = []
    if all_cells:
        uniform = all(c.n == table_n for c in all_cells)
        note_lines.append(
            f"Each cell: {CI_NOTE}; n = {table_n} distinct seed{'s' if table_n != 1 else ''} per cell"
            + ("." if uniform else " unless the cell says otherwise.")
        )
    for r in rows:
        if r.baseline:
            cell = r.cells[0] if r.cells else None
            name = "Dense baseline" if r.label == BASELINE_LABEL else r.label
            note_lines.append(f"{name} (density 1.0): {cell.text if cell else DASH}.")
    if mark_best:
        for j in range(len(densities)):
            sparse = [r for r in rows if not r.baseline]
            col_cells = [r.cells[j] for r in sparse]
            rank = S.rank_column([c.values if c else None for c in col_cells], higher_is_better=higher_is_better)
            if rank.best is not None:
                best_cell = col_cells[rank.best]
                assert best_cell is not None  # rank_column marks only non-empty cells
                best_cell.best = True
            for i in rank.tied:
                tied_cell = col_cells[i]
                assert tied_cell is not None  # rank_column marks only non-empty cells
                tied_cell.tied = True
        note_lines.append(
            "Bold: significantly best in its density column (Welch's t-test, p < 0.05 against every "
            "other sparse row); ≈: tied for best (the highest mean and every row not significantly "
            "below it); a cell with one seed cannot be tested and is never marked."
        )
    if not any(r.method == "dense" for r in rows):
        note_lines.insert(0, "No completed dense baseline run.")
    return Table(
        key,
        title,
        dataset,
        model,
        densities,
        rows,
        note_lines if notes else [],
        marks_best=mark_best,
        run_labels=run_labels,
        groups=groups,
        n=table_n,
    )


def _groups(runs: list[dict]) -> list[tuple[str, str, list[dict]]]:
    keys = sorted({(str(r["dataset"]), str(r["model"])) for r in runs})
    return [(d, m, [r for r in runs if (str(r["dataset"]), str(r["model"])) == (d, m)]) for d, m in keys]


# ------------------------------------------------------------------- analysis tables
def _pp(x: float) -> str:
    """A difference of accuracies (fractions) in percentage points, signed."""
    return f"{x * 100:+.2f}"


def _versus(a: Cell, b: Cell) -> tuple[str, float, S.Welch | None]:
    """Cell a against cell b: the difference of means, Welch's test on the seeds, and the cell text."""
    w = S.welch(a.values, b.values)
    diff = a.mean - b.mean
    return (f"{_pp(diff)} ({fmt_p(w.p)})" if w else f"{_pp(diff)} (n<2)"), diff, w


def _recipe_key(g: RowGroup | None) -> dict[str, Any]:
    """A row's configuration minus everything sparsity decides: what a dense baseline must share."""
    if g is None:
        return {}
    return {k: v for k, v in g.fields.items() if k not in METHOD_FIELDS and not k.startswith("sparsity.")}


def _dense_for(row: TableRow, dense_rows: list[TableRow]) -> TableRow | None:
    """The dense baseline of ``row``: the dense row trained with the same recipe (model, data,
    optimiser, epochs, ...), else None (never a dense row of another recipe)."""
    match = [d for d in dense_rows if _recipe_key(d.group) == _recipe_key(row.group)]
    return match[0] if len(match) == 1 else None


def dense_diff_table(main: Table) -> TextTable | None:
    """Per sparse cell: mean - dense mean (percentage points) and Welch's p against the dense runs."""
    dense_rows = [r for r in main.rows if r.baseline and r.cells and r.cells[0] is not None]
    if not dense_rows:
        return None
    rows: list[list[str]] = []
    strong: set[tuple[int, int]] = set()
    data: list[dict[str, Any]] = []
    for r in (r for r in main.rows if not r.baseline):
        d_row = _dense_for(r, dense_rows)
        if d_row is None:
            continue
        dense = d_row.cells[0]
        assert dense is not None  # dense_rows all have a first cell
        texts = []
        for j, (d, c) in enumerate(zip(main.densities, r.cells)):
            if c is None:
                texts.append(DASH)
                continue
            text, diff, w = _versus(c, dense)
            texts.append(text)
            if w and w.significant:
                strong.add((len(rows), j + 1))
            data.append(
                {
                    "row": r.label,
                    "dense_row": d_row.label,
                    "density": d,
                    "diff": diff,
                    "t": w.t if w else None,
                    "df": w.df if w else None,
                    "p": w.p if w else None,
                    "n": c.n,
                    "n_dense": dense.n,
                }
            )
        rows.append([r.label, *texts])
    if not rows:
        return None
    notes = [
        (
            "Mean of the cell minus the mean of the dense baseline trained with the same recipe, in percentage "
            "points, and the two-sided p-value of Welch's t-test on the per-seed values; bold: p < 0.05; (n<2): "
            "one side has a single seed, no test."
        )
    ]
    return TextTable(
        "dense_diff",
        "Difference to dense (percentage points)",
        ["method", *(fmt_density(d) for d in main.densities)],
        rows,
        notes,
        strong,
        [False] + [True] * len(main.densities),
        data,
    )


def comparison_table(main: Table, reference: str = "granet") -> TextTable | None:
    """GraNet (each ``reference`` row) against every other sparse row at each density:
    difference of means and Welch's t-test p-value."""
    refs = [r for r in main.rows if r.method == reference and not r.baseline]
    others = [r for r in main.rows if not r.baseline]
    if not refs or len(others) < 2:
        return None
    rows: list[list[str]] = []
    strong: set[tuple[int, int]] = set()
    data: list[dict[str, Any]] = []
    for g in refs:
        for o in others:
            if o is g:
                continue
            texts = []
            for j, (d, a, b) in enumerate(zip(main.densities, g.cells, o.cells)):
                if a is None or b is None:
                    texts.append(DASH)
                    continue
                text, diff, w = _versus(a, b)
                texts.append(text)
                if w and w.significant:
                    strong.add((len(rows), j + 1))
                data.append(
                    {
                        reference: g.label,
                        "other": o.label,
                        "density": d,
                        "diff": diff,
                        "t": w.t if w else None,
                        "df": w.df if w else None,
                        "p": w.p if w else None,
                        f"n_{reference}": a.n,
                        "n_other": b.n,
                    }
                )
            rows.append([f"{g.label} vs {o.label}", *texts])
    notes = [
        (
            f"{reference} minus the other row: difference of means in percentage points, and the two-sided "
            "p-value of Welch's t-test (unequal variances) on the per-seed values; bold: p < 0.05; (n<2): one side "
            "has a single seed, no test."
        )
    ]
    return TextTable(
        "comparisons",
        f"{reference} vs each other method (Welch's t-test)",
        ["comparison", *(fmt_density(d) for d in main.densities)],
        rows,
        notes,
        strong,
        [False] + [True] * len(main.densities),
        data,
    )


def budget_table(main: Table) -> tuple[TextTable | None, list[str]]:
    """One compact table of what each cell cost and achieved: target density, achieved final and
    overall density, training and inference FLOPs, ITOP rate, wall time (means over seeds)."""
    entries = []  # (row label, target density, runs)
    for r in main.rows:
        if r.group is None:
            continue
        if r.baseline:
            entries.append((r.label, 1.0, list(r.group.runs)))
            continue
        for d in main.densities:
            runs = [x for x in r.group.runs if _dkey(x["target_density"]) == d]
            if runs:
                entries.append((r.label, d, runs))
    cols = [(c, h, u) for c, h, u in BUDGET_COLUMNS if any(_finite(x.get(c)) for _l, _d, runs in entries for x in runs)]
    missing = [h for c, h, _u in BUDGET_COLUMNS if (c, h) not in {(c2, h2) for c2, h2, _ in cols}]
    if not entries or not cols:
        return None, missing
    ns = [len(runs) for _l, _d, runs in entries]
    table_n = max(set(ns), key=lambda n: (ns.count(n), n))
    rows: list[list[str]] = []
    data: list[dict[str, Any]] = []
    for label, d, runs in entries:
        means = {c: _agg([x.get(c) for x in runs]) for c, _h, _u in cols}
        lab = label if len(runs) == table_n else f"{label} (n={len(runs)})"
        rows.append([lab, fmt_density(d), *(u.value(s.mean if (s := means[c]) else None) for c, _h, u in cols)])
        data.append(
            {
                "row": label,
                "density": d,
                "n": len(runs),
                **{c: (s.mean if (s := means[c]) else None) for c, _h, _u in cols},
                **{f"{c}_std": (s.std if (s := means[c]) else None) for c, _h, _u in cols},
            }
        )
    uniform = all(n == table_n for n in ns)
    notes = [
        f"Means over n = {table_n} seed{'s' if table_n != 1 else ''} per row"
        + ("." if uniform else " unless the row says otherwise.")
        + " final density: mask count of the sparsified layers; nonzero weights: the fraction of them that is "
        "nonzero (a regrown weight whose gradient stayed zero, e.g. of a dead unit, is active but zero); "
        "overall density: all conv/linear weights, layers kept dense included; FLOPs as fractions of dense training / inference; ITOP: fraction of weights ever active."
    ]
    return TextTable(
        "budget",
        "Budget: densities, FLOPs, ITOP, wall time",
        ["method", "target density", *(h for _c, h, _u in cols)],
        rows,
        notes,
        set(),
        [False] + [True] * (len(cols) + 1),
        data,
    ), missing


# ------------------------------------------------------------------ published numbers
PUBLISHED_CSV = Path(__file__).parent / "data" / "published.csv"
PUBLISHED_FIELDS = ("paper", "table", "dataset", "model", "method", "density", "epochs", "number", "std", "source")


def load_published(path: Path = PUBLISHED_CSV) -> list[dict[str, Any]]:
    """The published accuracies shipped with granet (``#`` lines are comments).
    ``density``/``number``/``std`` as floats (std may be None), ``epochs`` as int."""
    import csv

    try:
        lines = [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip() and not ln.startswith("#")]
    except OSError:
        return []
    out = []
    for row in csv.DictReader(lines):
        out.append(
            {
                **{k: (row.get(k) or "").strip() for k in PUBLISHED_FIELDS},
                "density": float(row["density"]),
                "epochs": int(row["epochs"]),
                "number": float(row["number"]),
                "std": float(row["std"]) if (row.get("std") or "").strip() else None,
            }
        )
    return out


def _row_epochs(row: TableRow) -> int | None:
    e = row.group.fields.get("optim.epochs") if row.group else None
    return int(e) if isinstance(e, (int, float)) and not isinstance(e, bool) else None


def published_table(main: Table, published: list[dict[str, Any]], metric: str) -> TextTable | None:
    """Published numbers next to the measured cell with the gap, for each cell whose recipe matches
    (dataset, model, method, density, epochs)."""
    rows, data = [], []
    for r in main.rows:
        epochs = _row_epochs(r)
        dens = [1.0] if r.baseline else main.densities
        cells = [r.cells[0]] if r.baseline else r.cells
        for d, c in zip(dens, cells):
            if c is None:
                continue
            for p in published:
                if (p["dataset"], p["model"], p["method"]) != (main.dataset, main.model, r.method):
                    continue
                if _dkey(p["density"]) != _dkey(d) or p["epochs"] != epochs:
                    continue
                gap = c.mean * 100 - p["number"]
                pub = f"{p['number']:.2f}" + (f" ± {p['std']:.2f}" if p["std"] is not None else "")
                rows.append([r.label, fmt_density(d), c.text, pub, f"{gap:+.2f}", f"{p['paper']}, {p['table']}"])
                data.append(
                    {
                        "row": r.label,
                        "density": d,
                        "measured_mean": c.mean,
                        "measured_ci95": c.ci95,
                        "measured_n": c.n,
                        "published": p["number"],
                        "published_std": p["std"],
                        "gap_pp": gap,
                        "paper": p["paper"],
                        "table": p["table"],
                        "source": p["source"],
                        "epochs": p["epochs"],
                    }
                )
    if not rows:
        return None
    notes = [
        (
            f"Published top-1 test accuracies (granet_cli/data/published.csv) beside the measured "
            f"{METRIC_SHORT.get(metric, metric)} (%, {CI_NOTE}) where the recipe matches: dataset, model, method, "
            "target density and epochs; gap = measured − published, in percentage points."
        )
    ]
    return TextTable(
        "published",
        "Published numbers beside yours",
        ["method", "density", "measured", "published", "gap", "source"],
        rows,
        notes,
        set(),
        [False, True, True, True, True, False],
        data,
    )


# ----------------------------------------------------------------------------- plots
def _pick_panels(densities: list[float]) -> list[float]:
    if len(densities) <= MAX_EPOCH_PANELS:
        return densities
    return sorted({densities[0], densities[len(densities) // 2], densities[-1]})


def _init_density(run: dict) -> float | None:
    """The density a run's masks start from: the spec's init_density (1.0 for GMP and dense
    starts, GraNet's s_i start, the target for RigL/SET/static)."""
    try:
        spec = json.loads(run.get("spec_json") or "{}")
    except ValueError:
        spec = {}
    v = spec.get("sparsity", {}).get("init_density") if isinstance(spec, dict) else None
    if _finite(v):
        return float(v)
    if str(run.get("method")) in ("gmp", "gmp_uniform", "dense"):
        return 1.0
    return float(run["target_density"]) if _finite(run.get("target_density")) else None


def _natural_key(name: str) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(name))]


def _lowest_seed(by_run: dict[str, dict], labels: dict[str, str], having: set[str]) -> dict[tuple[str, Any], dict]:
    """(row label, density) -> the run with the lowest seed among those in ``having``."""
    chosen: dict[tuple[str, Any], dict] = {}
    for r in sorted(by_run.values(), key=lambda r: (r["seed"] if r["seed"] is not None else 1 << 30, r["run_id"])):
        k = (labels[r["run_id"]], _dkey(r["target_density"]))
        if r["run_id"] in having and k not in chosen:
            chosen[k] = r
    return chosen


def _per_epoch_panels(
    main: Table, by_run: dict[str, dict], epochs: list[dict], column: str, scale: float, *, include_baseline: bool
) -> dict[str, dict[str, list[tuple[float, float, float]]]]:
    """density panel -> row label -> [(epoch, mean, std)] of an epochs column over the cell's seeds."""
    labels = main.run_labels
    order = {row.label: i for i, row in enumerate(main.rows)}
    baseline = {row.label for row in main.rows if row.baseline}
    per: dict[tuple[str, float | None], dict[int, list[float]]] = {}
    for e in epochs:
        r = by_run.get(e["run_id"])
        if r is None or not _finite(e.get(column)) or e["epoch"] is None:
            continue
        per.setdefault((labels[r["run_id"]], _dkey(r["target_density"])), {}).setdefault(int(e["epoch"]), []).append(
            e[column]
        )
    panels: dict[str, dict[str, list[tuple[float, float, float]]]] = {}
    for d in _pick_panels(main.densities):
        panel: dict[str, list[tuple[float, float, float]]] = {}
        for (m, dk), curve in sorted(per.items(), key=lambda kv: order.get(kv[0][0], len(order))):
            if m in baseline and not include_baseline:
                continue
            if dk == d or m in baseline:
                panel[m] = [
                    (ep, a.mean * scale, a.std * scale) for ep, vals in sorted(curve.items()) if (a := _agg(vals))
                ]
        panels[f"density {fmt_density(d)}"] = panel
    if not any(m not in baseline for p in panels.values() for m in p):
        return {}
    return panels


def density_lines(
    main: Table, by_run: dict[str, dict], masks: list[dict], epochs: list[dict]
) -> dict[str, list[tuple[str, list[tuple[float, float]]]]]:
    """row label -> [(line label "<row> d=<target>", [(step, density), ...])], one line per target
    density (its lowest seed with mask updates): (0, initial density) first unless an update was
    recorded at step 0, then every mask update, then the last epoch's density if it comes later."""
    labels = main.run_labels
    order = {row.label: i for i, row in enumerate(main.rows)}
    by_mr: dict[str, list[tuple[float, float]]] = {}
    for u in masks:
        if _finite(u["step"]) and _finite(u["density"]):
            by_mr.setdefault(u["run_id"], []).append((u["step"], u["density"]))
    last_epoch: dict[str, tuple[float, float]] = {}
    for e in epochs:
        if not (_finite(e.get("step")) and _finite(e.get("density"))):
            continue
        if e["run_id"] not in last_epoch or e["step"] >= last_epoch[e["run_id"]][0]:
            last_epoch[e["run_id"]] = (e["step"], e["density"])
    chosen = _lowest_seed(by_run, labels, set(by_mr))
    dseries: dict[str, list[tuple[str, list[tuple[float, float]]]]] = {}
    for (m, dk), r in sorted(chosen.items(), key=lambda kv: (order.get(kv[0][0], len(order)), kv[0][1] or 0)):
        pts = sorted(by_mr[r["run_id"]])
        start = _init_density(r)
        if start is not None and pts[0][0] > 0:
            pts.insert(0, (0, start))
        end = last_epoch.get(r["run_id"])
        if end is not None and end[0] > pts[-1][0]:
            pts.append(end)
        dseries.setdefault(m, []).append((f"{m} d={fmt_density(dk) if dk is not None else '?'}", pts))
    return dseries


@dataclass
class _PlotInputs:
    """What the plots of one group draw from: the main table and the rows it aggregates."""

    main: Table
    metric: str
    runs: list[dict]
    epochs: list[dict]
    masks: list[dict]
    layers: list[dict]

    @property
    def name(self) -> str:
        return METRICS[self.metric].split(" (")[0]

    @property
    def dense(self) -> tuple[float, float] | None:
        for r in self.main.rows:
            c = r.cells[0] if r.baseline and r.cells else None
            if c:
                return (c.mean * 100, (c.ci95 or 0.0) * 100)
        return None

    @property
    def labels(self) -> dict:
        return self.main.run_labels  # only the runs the table aggregates, under their row's label

    @property
    def by_run(self) -> dict[str, dict]:
        return {r["run_id"]: r for r in self.runs if r["run_id"] in self.labels}

    @property
    def order(self) -> dict[str, int]:
        return {row.label: i for i, row in enumerate(self.main.rows)}


def _group_plots(
    runs: list[dict], epochs: list[dict], masks: list[dict], layers: list[dict], metric: str, main: Table
) -> list[P.Plot]:
    inputs = _PlotInputs(main, metric, runs, epochs, masks, layers)
    return [plot(inputs) for plot in _PLOTS]


def _plot_accuracy_vs_flops(inputs: _PlotInputs) -> P.Plot:
    """Accuracy vs training / inference FLOPs: a point per table row x density."""
    main, metric, name, dense = inputs.main, inputs.metric, inputs.name, inputs.dense
    fseries: dict[str, list[dict[str, float | None]]] = {}
    for r in main.rows:
        if r.baseline:
            continue
        pts = []
        for d, c in zip(main.densities, r.cells):
            if c is None:
                continue
            tr = _agg([x.get("train_flops_frac") for x in c.runs])
            inf = _agg([x.get("inference_flops_frac") for x in c.runs])
            pts.append(
                {
                    "density": d,
                    "train": tr.mean if tr else None,
                    "infer": inf.mean if inf else None,
                    "mean": c.mean * 100,
                    "err": (c.ci95 or 0.0) * 100,
                }
            )
        fseries[r.label] = pts
    plot = P.accuracy_vs_flops_plot(fseries, dense=dense, ylabel=METRICS[metric], title=f"{name} vs FLOPs")
    plot.caption = (
        f"{name} against the cost: a point per table row and target density d (mean over seeds, "
        "error bars the 95 % CI), at the mean training FLOPs (left) and inference FLOPs (right) as "
        "fractions of dense; the dashed line and the star at 1 are the dense baseline."
    )
    return plot


def _plot_accuracy_vs_density(inputs: _PlotInputs) -> P.Plot:
    """Accuracy vs density (from the main table's aggregates)."""
    main, metric, name, dense = inputs.main, inputs.metric, inputs.name, inputs.dense
    series = {
        r.label: [(d, c.mean * 100, (c.ci95 or 0.0) * 100) for d, c in zip(main.densities, r.cells) if c]
        for r in main.rows
        if not r.baseline
    }
    plot = P.accuracy_vs_density_plot(series, dense=dense, ylabel=METRICS[metric], title=f"{name} vs target density")
    plot.caption = f"{name} vs target density: mean over seeds, error bars the 95 % CI; dashed: dense baseline."
    return plot


def _plot_accuracy_over_epochs(inputs: _PlotInputs) -> P.Plot:
    """Test accuracy over epochs, one panel per density, one line per table row."""
    main, epochs, by_run = inputs.main, inputs.epochs, inputs.by_run
    panels = _per_epoch_panels(main, by_run, epochs, "test_acc", 100.0, include_baseline=True)
    plot = P.curves_plot(panels, zoom_after=0.25, title="Test accuracy over epochs")
    plot.caption = (
        "Test accuracy over epochs, mean ± std over seeds, one panel per target density; the y axis "
        "frames the last three quarters of training (the first epochs may run off the bottom)."
    )
    return plot


def _plot_density_over_steps(inputs: _PlotInputs) -> P.Plot:
    """Density of the sparsified layers over training steps, from its initial density; lowest seed per cell."""
    main, epochs, masks, by_run = inputs.main, inputs.epochs, inputs.masks, inputs.by_run
    dseries = density_lines(main, by_run, masks, epochs)
    plot = P.density_steps_plot(dseries, ylabel="density of the sparsified layers", title="Density over training steps")
    plot.caption = (
        "Density of the sparsified layers over training steps, from the initial density at step 0 "
        "(1.0 for GMP, init_density for GraNet, the target for RigL/SET/static) through every "
        "pruning and drop-and-grow update to the end of training; lowest seed per cell, one line "
        "per target density d."
    )
    return plot


def _plot_itop(inputs: _PlotInputs) -> P.Plot:
    """ITOP rate over epochs."""
    main, epochs, by_run = inputs.main, inputs.epochs, inputs.by_run
    ipanels = _per_epoch_panels(main, by_run, epochs, "itop_rate", 1.0, include_baseline=False)
    plot = P.curves_plot(
        ipanels,
        ylabel="ITOP rate",
        key="itop_over_epochs",
        title="ITOP rate over epochs",
        empty_note="no ITOP rate recorded",
    )
    plot.caption = (
        "In-time over-parameterisation: the fraction of the sparsified weights that have ever been "
        "active, over epochs (mean ± std over seeds), one panel per target density."
    )
    return plot


def _plot_mask_updates(inputs: _PlotInputs) -> P.Plot:
    """Weights dropped / regrown per mask update."""
    main, masks, labels, by_run, order = inputs.main, inputs.masks, inputs.labels, inputs.by_run, inputs.order
    by_mu: dict[str, list[tuple[float, float, float]]] = {}
    for u in masks:
        if (
            _finite(u["step"])
            and _finite(u.get("dropped"))
            and _finite(u.get("grown"))
            and (u["dropped"] or u["grown"])
        ):
            by_mu.setdefault(u["run_id"], []).append((u["step"], u["dropped"], u["grown"]))
    chosen = _lowest_seed(by_run, labels, set(by_mu))
    mpanels: dict[str, dict[str, list[tuple[float, float, float]]]] = {}
    for d in _pick_panels(main.densities):
        mpanels[f"density {fmt_density(d)}"] = {
            m: by_mu[r["run_id"]]
            for (m, dk), r in sorted(chosen.items(), key=lambda kv: order.get(kv[0][0], 99))
            if dk == d
        }
    plot = P.mask_updates_plot(mpanels, title="Weights dropped and regrown per mask update")
    plot.caption = (
        "Weights dropped (dashed) and regrown (solid) at each drop-and-grow update, lowest seed per "
        "cell, one panel per target density; pruning-only steps (GMP, GraNet's schedule) are not "
        "drawn. Regrown counts only new connections (inactive before the update); a weight dropped and "
        "re-selected in the same update keeps its value and counts as dropped, not as regrown "
        "(dropped = regrown + re-selected; mask_updates.reselected holds that count)."
    )
    return plot


def _plot_layer_density(inputs: _PlotInputs) -> P.Plot:
    """Final density per layer."""
    main, layers, labels, by_run, order = inputs.main, inputs.layers, inputs.labels, inputs.by_run, inputs.order
    by_layer: dict[str, list[tuple[str, float]]] = {}
    for lay in layers:
        if _finite(lay.get("final_density")):
            by_layer.setdefault(lay["run_id"], []).append((str(lay["name"]), float(lay["final_density"])))
    chosen = _lowest_seed(by_run, labels, set(by_layer))
    lpanels: dict[str, dict[str, list[tuple[str, float]]]] = {}
    for d in _pick_panels(main.densities):
        lpanels[f"density {fmt_density(d)}"] = {
            m: sorted(by_layer[r["run_id"]], key=lambda x: _natural_key(x[0]))
            for (m, dk), r in sorted(chosen.items(), key=lambda kv: order.get(kv[0][0], 99))
            if dk == d and m not in {row.label for row in main.rows if row.baseline}
        }
    plot = P.layer_density_plot(lpanels, title="Final density per layer")
    plot.caption = (
        "The density each sparsified layer ends with (lowest seed per cell, layers in name order): "
        "the ERK distribution RigL/SET/static keep from initialisation against what global "
        "magnitude pruning (GraNet, GMP) leaves."
    )
    return plot


#: the plots of a group, in report order
_PLOTS = (
    _plot_accuracy_vs_flops,
    _plot_accuracy_vs_density,
    _plot_accuracy_over_epochs,
    _plot_density_over_steps,
    _plot_itop,
    _plot_mask_updates,
    _plot_layer_density,
)


def _configurations(groups: list[GroupReport]) -> list[dict[str, Any]]:
    """Every table row's full normalised spec (the seed and target density are the cell's own)."""
    import json

    out = []
    for g in groups:
        for row in g.main.groups:
            run = row.runs[0]
            try:
                spec = json.loads(run.get("spec_json") or "{}")
            except ValueError:
                spec = {}
            if isinstance(spec, dict):
                spec.pop("seed", None)
                spec.get("sparsity", {}).pop("final_density", None)
            label = g.main.run_labels.get(run["run_id"], row.label)
            seeds = sorted({r["seed"] for r in row.runs if r.get("seed") is not None})
            out.append(
                {
                    "group": f"{g.dataset} / {g.model}",
                    "label": label,
                    "seeds": seeds,
                    "spec": json.dumps(spec, indent=2, sort_keys=True),
                }
            )
    return out


# ---------------------------------------------------------------------------- loading
def _open(db_path: str | Path) -> Store:
    try:
        return Store(db_path, read_only=True)
    except StoreError as e:
        raise ReportError(str(e)) from None


def _load(db_path: str | Path, sweep: str | None) -> tuple[list[dict], str | None, str | None, Store]:
    st = _open(db_path)
    try:
        sweep_id = sweep_name = None
        if sweep is not None:
            sweep_id = st.find_sweep(sweep)
            if sweep_id is None:
                raise ReportError(f"no sweep {sweep!r} in {db_path}")
            info = st.sweep(sweep_id)
            sweep_name = info["name"] if info else None
        runs = st.runs(sweep=sweep_id)
    except StoreError as e:
        st.close()
        raise ReportError(str(e)) from None
    except BaseException:
        st.close()
        raise
    return runs, sweep_id, sweep_name, st


def _no_completed(db_path: Any, sweep: str | None) -> ReportError:
    where = f" for sweep {sweep!r}" if sweep else ""
    return ReportError(f"no completed runs{where} in {db_path}")


def summary_tables(db_path: str | Path, *, sweep: str | None = None, metric: str = "final_test_acc") -> list[Table]:
    """The main table per (dataset, model) without writing anything."""
    _check_metric(metric)
    runs, _sid, _sname, st = _load(db_path, sweep)
    st.close()
    done = [r for r in runs if r["status"] == "completed"]
    if not done:
        raise _no_completed(db_path, sweep)
    return [_main_table(g, metric) for _d, _m, g in _groups(done)]


def _main_table(runs: list[dict], metric: str) -> Table:
    return build_table(runs, metric, key="accuracy", title=METRICS[metric], unit=PERCENT, mark_best=True)


def _check_metric(metric: str) -> None:
    if metric not in METRICS:
        raise ReportError(f"unknown metric {metric!r}; choose from {', '.join(METRICS)}")


# ---------------------------------------------------------------------------- render
def _env() -> Environment:
    env = Environment(
        loader=FileSystemLoader(str(TEMPLATES_DIR)),
        autoescape=select_autoescape(enabled_extensions=("html", "html.j2"), default_for_string=False, default=False),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["mdcell"] = md_cell
    env.filters["density"] = lambda d: fmt_density(d) if _finite(d) else DASH
    return env


def md_cell(value: Any) -> str:
    """Text safe inside a GitHub Markdown table cell (one line, pipes escaped; brackets escaped, so a
    spec value such as `[x](javascript:...)` is shown as text, never as a live link)."""
    if value is None:
        return DASH
    text = " ".join(str(value).split())
    text = text.replace("\\", "\\\\").replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")
    return text.replace("[", "\\[").replace("]", "\\]")


def _one_line(text: Any, limit: int = 300) -> str:
    if text is None:
        return ""
    t = " ".join(str(text).split())
    return t if len(t) <= limit else t[: limit - 1] + "…"


@dataclass
class _Analysis:
    groups: list[GroupReport]
    others: list[dict]
    counts: dict[str, int]
    sweep_id: str | None
    sweep_name: str | None


def _analyse(db_path: str | Path, sweep: str | None, metric: str, *, with_plots: bool = True) -> _Analysis:
    _check_metric(metric)
    runs, sweep_id, sweep_name, st = _load(db_path, sweep)
    try:
        done = [r for r in runs if r["status"] == "completed"]
        if not done:
            raise _no_completed(db_path, sweep)
        ids = [r["run_id"] for r in done]
        epochs = st.epochs(ids) if with_plots else []
        masks = st.mask_updates(ids) if with_plots else []
        layers = st.layers(ids) if with_plots else []
    except StoreError as e:
        raise ReportError(str(e)) from None
    finally:
        st.close()

    published = load_published()
    groups: list[GroupReport] = []
    for dataset, model, g in _groups(done):
        main = _main_table(g, metric)
        budget, missing = budget_table(main)
        tables = [
            t
            for t in (dense_diff_table(main), comparison_table(main), published_table(main, published, metric), budget)
            if t is not None
        ]
        notes = []
        if not any(r.method == "granet" for r in main.rows):
            notes.append("No GraNet row here, so no pairwise comparison with GraNet.")
        gplots: list[P.Plot] = []
        if with_plots:
            gids = {r["run_id"] for r in g}
            gplots = _group_plots(
                g,
                [e for e in epochs if e["run_id"] in gids],
                [u for u in masks if u["run_id"] in gids],
                [x for x in layers if x["run_id"] in gids],
                metric,
                main,
            )
        groups.append(
            GroupReport(dataset, model, _slug(f"{dataset}-{model}"), main, tables, gplots, len(g), missing, notes)
        )

    others = [
        {**r, "error_line": _one_line(r["error"])}
        for r in sorted(
            (r for r in runs if r["status"] != "completed"),
            key=lambda r: (
                str(r["status"]),
                method_sort_key(str(r["method"])),
                r["target_density"] if _finite(r["target_density"]) else 0.0,
                r["seed"] if r["seed"] is not None else 0,
                str(r["run_id"]),
            ),
        )
    ]
    counts: dict[str, int] = {}
    for r in runs:
        counts[str(r["status"])] = counts.get(str(r["status"]), 0) + 1
    return _Analysis(groups, others, counts, sweep_id, sweep_name)


def report_json(db_path: str | Path, *, sweep: str | None = None, metric: str = "final_test_acc") -> dict[str, Any]:
    """The report's tables as one JSON-ready dict (nothing written): per dataset/model the main
    table (rows, cells: mean, std, ci95, n, label, density, per-seed values), the differences to
    dense, GraNet's pairwise comparisons (difference, Welch's t, df, p), published numbers with
    their gaps and the budget table; plus the runs not completed.  Accuracies are fractions."""
    a = _analyse(db_path, sweep, metric, with_plots=False)
    return {
        "db": str(db_path),
        "sweep_id": a.sweep_id,
        "sweep_name": a.sweep_name,
        "metric": metric,
        "metric_title": METRICS[metric],
        "units": "accuracy values are fractions (tables show percent); "
        "differences and gaps marked _pp are percentage points",
        "confidence": S.CONFIDENCE,
        "alpha": S.ALPHA,
        "counts": a.counts,
        "groups": [g.to_json() for g in a.groups],
        "not_completed": [
            {k: r.get(k) for k in ("run_id", "method", "target_density", "seed", "status", "error")} for r in a.others
        ],
    }


def build_report(
    db_path: str | Path,
    *,
    sweep: str | None = None,
    out_dir: Path = Path("reports"),
    fmt: str = "both",
    metric: str = "final_test_acc",
    name: str | None = None,
) -> ReportResult:
    """Write the report; see the module docstring.  Raises ReportError (one line)
    for a missing/unreadable db, an unknown sweep, metric or format, or no completed runs."""
    if fmt not in FORMATS:
        raise ReportError(f"unknown report format {fmt!r}; choose from {', '.join(FORMATS)}")
    a = _analyse(db_path, sweep, metric)
    groups, others, counts, sweep_id, sweep_name = a.groups, a.others, a.counts, a.sweep_id, a.sweep_name
    report_name = _slug(name or sweep_name or "granet-report")
    ctx = dict(
        provenance=provenance(),
        configs=_configurations(groups),
        title=f"GraNet report: {sweep_name or name or 'all runs'}",
        db_path=str(db_path),
        sweep_id=sweep_id,
        sweep_name=sweep_name,
        metric=metric,
        metric_title=METRICS[metric],
        generated=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        counts=", ".join(f"{n} {s}" for s, n in sorted(counts.items())),
        groups=groups,
        others=others,
        dash=DASH,
        ci_note=CI_NOTE,
    )

    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ReportError(f"cannot create report folder {out_dir}: {_one_line(e)}") from None
    env = _env()
    md_path = html_path = None
    plot_paths: list[Path] = []
    # rendered in memory first, then published as one set: every file goes to a temporary name in
    # its folder and is renamed into place only when all are written (plots before the pages that
    # link them), so a crash or a full disk leaves the old report or the new one, never half
    files: list[tuple[Path, bytes]] = []
    stale: list[Path] = []
    try:
        if fmt in ("md", "both"):
            files_dir = out_dir / f"{report_name}_files"
            files_dir.mkdir(exist_ok=True)
            links: dict[int, str] = {}
            for g in groups:
                for p in g.plots:
                    if p.svg is not None:
                        path = files_dir / f"{g.slug}-{p.key}.svg"
                        files.append((path, p.svg.encode("utf-8")))
                        plot_paths.append(path)
                        links[id(p)] = f"{files_dir.name}/{path.name}"
            stale = [old for old in files_dir.glob("*.svg") if old not in plot_paths]
            md = env.get_template("report.md.j2").render(**ctx, plot_link=lambda p: links.get(id(p)))
            md_path = out_dir / f"{report_name}.md"
            files.append((md_path, md.encode("utf-8")))
        if fmt in ("html", "both"):

            def inline(p: P.Plot, g: GroupReport) -> Markup:
                return Markup(P.inline_svg(p.svg, f"{g.slug}-{p.key}")) if p.svg else Markup("")

            page = env.get_template("report.html.j2").render(**ctx, inline_svg=inline)
            html_path = out_dir / f"{report_name}.html"
            files.append((html_path, page.encode("utf-8")))
        publish(files, "report")
        for old in stale:  # plots of the previous report that the new one no longer links
            old.unlink(missing_ok=True)
    except PathError as e:
        raise ReportError(str(e)) from None
    except OSError as e:
        raise ReportError(f"cannot write report in {out_dir}: {_one_line(e)}") from None

    return ReportResult(
        md_path=md_path,
        html_path=html_path,
        main_tables=[g.main for g in groups],
        name=report_name,
        sweep_id=sweep_id,
        groups=groups,
        other_runs=others,
        plot_paths=plot_paths,
    )


__all__ = [
    "ReportError",
    "ReportResult",
    "Table",
    "TableRow",
    "Cell",
    "GroupReport",
    "build_report",
    "summary_tables",
    "build_table",
    "METHOD_ORDER",
    "METRICS",
    "md_cell",
    "report_json",
    "TextTable",
    "load_published",
    "Unit",
]
