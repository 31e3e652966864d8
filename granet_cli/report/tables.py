"""The report's tables: a cell per (row, density) aggregated over seeds, and how numbers are shown.

Kept apart from the analysis tables, plots and rendering because everything else in the report is
computed from these: a :class:`Table` is one dataset/model's main comparison, its rows the groups of
runs that form one configuration (grouping.py), its cells ``mean ± ci95`` over the distinct seeds.

Table layout: one row per method and configuration (dense first, shown as the
"dense (baseline)" row whose value is repeated in every column, then granet,
granet_uniform, rigl, set, gmp, gmp_uniform, static, then any other method
alphabetically), one column per target density (ascending), each cell
``mean ± ci95`` over the completed runs' distinct seeds (the half-width of the
t-based 95 % interval, stats.summary; no interval when n == 1); the n most cells
share is stated once in the table's notes and a cell says ``(n=k)`` only where it
differs; ``–`` where there is no completed run.  In the main table a sparse cell
is marked best only when it is significantly best in its column (Welch's t-test
against every other sparse cell, Holm-corrected over all the table's tests);
otherwise the cells not significantly different from the highest mean are marked ≈
(stats.rank_columns).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, cast

from . import stats as S
from .grouping import RowGroup, group_rows
from .stats import finite

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
DASH = "–"
BASELINE_LABEL = "dense (baseline)"
CI_NOTE = "mean ± 95 % confidence interval over seeds (t-based, n−1 degrees of freedom)"
STD_NOTE = "mean ± standard deviation over seeds (sample std, n−1; spread of the seeds, not a confidence interval)"
#: what ``granet report --interval`` shows after ±: "ci" (95 % CI of the mean) or "std" (as papers print)
BOOT_NOTE = (
    "mean [95 % interval] from a two-level bootstrap over seeds and test examples (covers both the "
    "seeds' spread and the finite test set's sampling noise; comparisons paired on the shared test set)"
)
INTERVALS = {"ci": CI_NOTE, "std": STD_NOTE, "boot": BOOT_NOTE}
#: the runs column holding which test examples the model behind a metric got right (store.examples)
EXAMPLES_COLUMN = {"final_test_acc": "test_correct", "selected_test_acc": "selected_test_correct"}
#: a boot cell without per-example records (runs of granet before 0.2) shows the t-interval, marked so
NO_EXAMPLES_MARK = " †"
NO_EXAMPLES_NOTE = (
    "†: runs without per-example records (written before granet 0.2): the cell shows the t-based 95 % "
    "interval over seeds and is compared by Welch's test."
)
#: the terminal's text mark of a significantly best (bold) cell, kept where styles are lost (piped output)
BEST_TEXT_MARK = " *"
BEST_TEXT_NOTE = "Here * marks the bold cells (significantly best)."
#: fewer seeds per cell than this: the table says its tests have low power
LOW_POWER_N = 5


@dataclass
class Cell:
    """Aggregate of one (row, density) cell over its seeds.

    ``mean``/``std``/``ci95`` are in the column's own units (accuracies as fractions);
    ``ci95`` is the half-width of the t-based 95 % interval (None when n < 2); ``values``
    the per-seed values; ``text`` the formatted value (no marks).  ``best``: significantly
    best in its column; ``tied``: not significantly different from the best (see stats.rank_columns)."""

    mean: float
    std: float
    n: int
    text: str = ""
    best: bool = False
    ci95: float | None = None
    values: list[float] = field(default_factory=list)
    tied: bool = False
    runs: list[dict] = field(default_factory=list, repr=False)
    #: per seed, which test examples the run got right (interval "boot" only), and the bootstrap interval
    bits: list[Any] | None = field(default=None, repr=False)
    boot: tuple[float, float] | None = None

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
            "run_ids": [r.get("run_id") for r in self.runs],
            "boot95_interval": list(self.boot) if self.boot else None,
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
    #: what follows ± in the cells: "ci" or "std" (INTERVALS)
    interval: str = "ci"
    #: the training recipe of the report section this table heads ("" when not split by recipe)
    recipe: str = ""

    @property
    def header(self) -> list[str]:
        return ["method", *(fmt_density(d) for d in self.densities)]

    def plain_rows(self) -> list[list[str]]:
        return [[r.label, *(c.text if c else DASH for c in r.cells)] for r in self.rows]

    def best_cells(self) -> set[tuple[int, int]]:
        """(row index, column index into densities) of the cells marked significantly best."""
        return {(i, j) for i, r in enumerate(self.rows) for j, c in enumerate(r.cells) if c and c.best}

    def tied_cells(self) -> set[tuple[int, int]]:
        """(row index, column index) of the cells not significantly different from the best."""
        return {(i, j) for i, r in enumerate(self.rows) for j, c in enumerate(r.cells) if c and c.tied}

    def to_rich(self):
        """A ``rich.table.Table`` that fits an 80-column terminal: title, notes as caption,
        significantly best cells bold and marked ``*`` (text, so it survives piping, where no
        style is printed), ties marked ≈, baseline row italic."""
        from rich import box
        from rich.table import Table as RichTable
        from rich.text import Text

        t = RichTable(
            title=f"{self.dataset} / {self.model}{f', recipe {self.recipe}' if self.recipe else ''}: {self.title}",
            box=box.SIMPLE_HEAD,
            caption=" ".join([*self.notes, *([BEST_TEXT_NOTE] if self.marks_best else [])]) or None,
            caption_justify="left",
            padding=(0, 1),
        )
        t.add_column("method \\ density", overflow="fold", min_width=8)
        for h in self.header[1:]:
            t.add_column(h, justify="right", overflow="fold")
        for r in self.rows:
            cells = [
                Text(
                    c.text + (BEST_TEXT_MARK if c.best else c.mark),
                    style="bold green" if c.best else ("yellow" if c.tied else ""),
                )
                if c
                else Text(DASH, style="dim")
                for c in r.cells
            ]
            t.add_row(Text(r.label, style="italic" if r.baseline else ""), *cells)
        return t

    def per_seed(self) -> list[dict[str, Any]]:
        """Every run's value behind the table: one entry per (row, density, seed) with its run id, in
        table order (the dense baseline once, at density 1.0).  ``value`` is in the column's units."""
        out: list[dict[str, Any]] = []
        for r in self.rows:
            cells = r.cells[:1] if r.baseline else r.cells
            dens = [1.0] if r.baseline else self.densities
            for c, d in zip(cells, dens):
                if c is None:
                    continue
                for run, value in zip(c.runs, c.values):
                    out.append(
                        {
                            "label": r.label,
                            "density": d,
                            "seed": run.get("seed"),
                            "run_id": run.get("run_id"),
                            "value": value,
                        }
                    )
        return out

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
            "interval": self.interval,
            "recipe": self.recipe,
            "notes": self.notes,
            "rows": rows,
            "per_seed": self.per_seed(),
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
    #: (row, column) -> "better" or "worse": the direction of a significant difference (colour, arrow)
    tone: dict[tuple[int, int], str] = field(default_factory=dict)

    def is_strong(self, i: int, j: int) -> bool:
        return (i, j) in self.strong

    def tone_of(self, i: int, j: int) -> str:
        return self.tone.get((i, j), "")

    def arrow(self, i: int, j: int) -> str:
        """A text mark of the direction for Markdown and terminals, where colour may be lost."""
        return {"better": " ▲", "worse": " ▼"}.get(self.tone_of(i, j), "")

    def is_numeric(self, j: int) -> bool:
        return j < len(self.numeric) and self.numeric[j]


def fmt_density(d: float) -> str:
    return f"{d:g}"


@dataclass(frozen=True)
class Unit:
    """How a column's values are shown: ``value * scale`` with ``decimals``, then ``suffix``."""

    scale: float = 1.0
    decimals: int = 3
    suffix: str = ""

    def value(self, x: float | None) -> str:
        return DASH if x is None or not finite(x) else f"{x * self.scale:.{self.decimals}f}{self.suffix}"

    def cell(self, c: Cell, table_n: int | None, interval: str = "ci") -> str:
        """``mean ± ci95`` (``interval="std"``: ``mean ± std``; no ± when n < 2), then ``(n=k)`` only
        where k is not the table's n."""
        text = self.value(c.mean)
        if interval == "boot" and c.boot is not None:
            lo, hi = c.boot
            return (
                text
                + f" [{lo * self.scale:.{self.decimals}f}, {hi * self.scale:.{self.decimals}f}]"
                + (f" (n={c.n})" if c.n != table_n else "")
            )
        half = c.ci95 if interval in ("ci", "boot") else (c.std if c.n >= 2 else None)
        if half is not None:
            text += f" ± {half * self.scale:.{self.decimals}f}"
        if c.n != table_n:
            text += f" (n={c.n})"
        return text + (NO_EXAMPLES_MARK if interval == "boot" else "")


PERCENT = Unit(100.0, 2)


def fmt_p(p: float) -> str:
    return "p<0.001" if p < 0.001 else f"p={p:.3f}"


def method_sort_key(method: str) -> tuple[int, str]:
    return (METHOD_ORDER.index(method), "") if method in METHOD_ORDER else (len(METHOD_ORDER), method)


def density_key(d: Any) -> float | None:
    """A density rounded so that equal densities from different runs compare equal (None if not finite)."""
    return round(float(d), 6) if finite(d) else None


def slug(text: str) -> str:
    """``text`` as a safe file-name stem."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.") or "report"


def short_line(text: Any, limit: int = 300) -> str:
    """``text`` on one line, cut to ``limit`` characters ("…" marks the cut); "" for None."""
    if text is None:
        return ""
    t = " ".join(str(text).split())
    return t if len(t) <= limit else t[: limit - 1] + "…"


def _sparse_densities(runs: list[dict]) -> list[float]:
    ds = {density_key(r["target_density"]) for r in runs if r["method"] != "dense"}
    ds.discard(None)
    if not ds:  # only dense runs
        ds = {density_key(r["target_density"]) if finite(r["target_density"]) else 1.0 for r in runs}
    return sorted(cast(set[float], ds))  # None discarded above; density_key of a finite value is a float


def _modal_n(cells: list[Cell]) -> int | None:
    """The n most cells share (ties: the larger n); every distinct Cell counted once."""
    counts: dict[int, int] = {}
    for c in {id(c): c for c in cells}.values():
        counts[c.n] = counts.get(c.n, 0) + 1
    return max(counts, key=lambda n: (counts[n], n)) if counts else None


def _with_bootstrap(cell: Cell, column: str) -> Cell:
    """`cell` with its per-seed correctness and two-level bootstrap interval, where every run has them."""
    from ..store.examples import unpack

    packed = [r.get(EXAMPLES_COLUMN.get(column, "")) for r in cell.runs]
    texts = [p for p in packed if isinstance(p, str)]
    if not texts or len(texts) != len(packed):
        return cell
    bits = [unpack(p) for p in texts]
    if len({b.size for b in bits}) != 1:
        return cell
    cell.bits = bits
    _mean, lo, hi = S.bootstrap_accuracy(bits)
    cell.boot = (lo, hi)
    return cell


def _make_cell(runs: list[dict], column: str) -> Cell | None:
    """The cell of ``runs`` (one per distinct seed), ``values`` in seed order."""
    runs = sorted(
        (r for r in runs if finite(r.get(column))),
        key=lambda r: (r.get("seed") if r.get("seed") is not None else 1 << 30, str(r.get("run_id"))),
    )
    vals = [float(r[column]) for r in runs]
    s = S.summary(vals)
    if s is None:
        return None
    return Cell(s.mean, s.std, s.n, ci95=s.ci95, values=vals, runs=runs)


def _table_rows(
    groups: list[RowGroup], densities: list[float], column: str, boot: bool = False
) -> tuple[list[TableRow], dict[str, str]]:
    """A row per group (the dense baseline's one Cell repeated in every column) and run_id -> row label."""
    rows: list[TableRow] = []
    run_labels: dict[str, str] = {}
    for g in groups:
        label = g.label.replace("dense", BASELINE_LABEL, 1) if g.method == "dense" else g.label
        run_labels.update({r["run_id"]: label for r in g.runs})
        if g.method == "dense":
            cell = _make_cell(g.runs, column)
            if boot and cell is not None:
                cell = _with_bootstrap(cell, column)
            # the same baseline Cell object in every column
            rows.append(TableRow(g.method, label, [cell for _ in densities], baseline=True, group=g))
            continue
        cells = [_make_cell([r for r in g.runs if density_key(r["target_density"]) == d], column) for d in densities]
        if boot:
            cells = [_with_bootstrap(c, column) if c is not None else None for c in cells]
        rows.append(TableRow(g.method, label, cells, group=g))
    return rows, run_labels


def _cell_notes(rows: list[TableRow], all_cells: list[Cell], table_n: int | None, interval: str) -> list[str]:
    """What a cell is and the n most cells share, then the dense baseline's value."""
    note_lines: list[str] = []
    if all_cells:
        uniform = all(c.n == table_n for c in all_cells)
        note_lines.append(
            f"Each cell: {INTERVALS[interval]}; n = {table_n} distinct seed{'s' if table_n != 1 else ''} per cell"
            + ("." if uniform else " unless the cell says otherwise.")
        )
    for r in rows:
        if r.baseline:
            cell = r.cells[0] if r.cells else None
            name = "Dense baseline" if r.label == BASELINE_LABEL else r.label
            note_lines.append(f"{name} (density 1.0): {cell.text if cell else DASH}.")
    return note_lines


def _mark_best(rows: list[TableRow], n_columns: int, higher_is_better: bool) -> tuple[int, bool]:
    """Per density column, mark the sparse cell that is significantly best, else those not significantly
    different from the best; Holm over every test of the table. Returns the number of tests and whether
    they were paired on the test set (every cell with per-example records: interval "boot")."""
    sparse = [r for r in rows if not r.baseline]
    columns = [[r.cells[j] for r in sparse] for j in range(n_columns)]
    cells = [c for col in columns for c in col if c is not None]
    paired = bool(cells) and all(c.bits is not None for c in cells)
    if paired:
        ranks = S.rank_columns(
            [[c.bits if c else None for c in col] for col in columns],
            higher_is_better,
            test=S.paired_test,
            mean=lambda bits: float(sum(b.mean() for b in bits) / len(bits)),
        )
    else:
        ranks = S.rank_columns([[c.values if c else None for c in col] for col in columns], higher_is_better)
    for col, rank in zip(columns, ranks):
        if rank.best is not None:
            best_cell = col[rank.best]
            assert best_cell is not None  # rank_columns marks only non-empty cells
            best_cell.best = True
        for i in rank.tied:
            tied_cell = col[i]
            assert tied_cell is not None  # rank_columns marks only non-empty cells
            tied_cell.tied = True
    return sum(len(rank.p) for rank in ranks), paired


def marks_note(n_tests: int, table_n: int | None, paired: bool = False) -> str:
    """What bold and ≈ mean, with the test, the correction and the power the table's n gives."""
    test = (
        "a bootstrap test paired on the shared test examples, seeds resampled"
        if paired
        else "Welch's t-test on the per-seed values"
    )
    note = (
        f"Bold: significantly best in its density column ({test}, against every other sparse row, "
        f"p < 0.05 after Holm's correction over the table's {n_tests} test{'s' if n_tests != 1 else ''}); "
        "≈: not significantly different from the best"
        + (f" (n = {table_n})" if table_n else "")
        + ", which is not evidence that they are equal"
        + ("." if paired else "; a cell with one seed cannot be tested and is never marked.")
    )
    if table_n is not None and table_n < LOW_POWER_N:
        note += (
            f" Low power: with n = {table_n} < {LOW_POWER_N} seeds per cell only large differences can be "
            "significant; run more seeds before reading a missing mark as no difference."
        )
    return note


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
    interval: str = "ci",
) -> Table:
    """Aggregate completed ``runs`` (one dataset/model) of ``column`` into a Table.

    One row per method and configuration (see grouping.py): runs are pooled only when their
    specs differ in nothing but the seed, and n counts distinct seeds.  Each cell is
    ``mean ± 95 % CI``; the table's n is stated once in its notes and a cell shows its own n only
    where it differs.  ``mark_best``: per density column, the sparse cell that is significantly
    best (Welch's t-test p < 0.05 against every other sparse cell) is marked ``best``; where none
    is, the cells statistically tied with the highest mean are marked ``tied``.  ``interval``: what
    follows ± in a cell, "ci" (95 % CI of the mean) or "std" (sample standard deviation)."""
    dataset = runs[0]["dataset"] if runs else ""
    model = runs[0]["model"] if runs else ""
    densities = _sparse_densities(runs)
    groups = sorted(group_rows(runs, density_key), key=lambda g: (method_sort_key(g.method), g.label))
    rows, run_labels = _table_rows(groups, densities, column, boot=interval == "boot")
    all_cells = [c for r in rows for c in r.cells if c is not None]
    table_n = _modal_n(all_cells)
    for c in all_cells:
        c.text = unit.cell(c, table_n, interval)
    note_lines = _cell_notes(rows, all_cells, table_n, interval)
    if mark_best:
        n_tests, paired = _mark_best(rows, len(densities), higher_is_better)
        note_lines.append(marks_note(n_tests, table_n, paired))
    if interval == "boot" and any(c.bits is None for c in all_cells):
        note_lines.append(NO_EXAMPLES_NOTE)
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
        interval=interval,
    )


def main_table(runs: list[dict], metric: str, interval: str = "ci") -> Table:
    return build_table(
        runs, metric, key="accuracy", title=METRICS[metric], unit=PERCENT, mark_best=True, interval=interval
    )


def by_dataset_model(runs: list[dict]) -> list[tuple[str, str, list[dict]]]:
    keys = sorted({(str(r["dataset"]), str(r["model"])) for r in runs})
    return [(d, m, [r for r in runs if (str(r["dataset"]), str(r["model"])) == (d, m)]) for d, m in keys]
