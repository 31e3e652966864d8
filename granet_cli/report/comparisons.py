"""The analysis tables computed from a main table: differences to dense, GraNet against each other
method (Welch's t-tests on the per-seed values) and the budget (densities, FLOPs, ITOP, wall time).

Apart from tables.py because they only read a finished :class:`~.tables.Table` and return
:class:`~.tables.TextTable` s of ready-made text plus the same numbers for ``--json``.
"""

from __future__ import annotations

import math
from typing import Any

from . import stats as S
from .grouping import RowGroup, recipe_of
from .stats import finite
from .tables import DASH, Cell, Table, TableRow, TextTable, Unit, density_key, fmt_density, fmt_p

#: the budget table's columns: runs column, header, unit
BUDGET_COLUMNS = (
    ("achieved_density", "final density", Unit(1.0, 4)),
    ("nonzero_density", "nonzero weights", Unit(1.0, 4)),
    ("overall_density", "overall density", Unit(1.0, 4)),
    ("train_flops_frac", "train FLOPs", Unit(1.0, 3, "x")),
    ("inference_flops_frac", "infer. FLOPs", Unit(1.0, 3, "x")),
    ("itop_rate", "ITOP", Unit(1.0, 3)),
    ("wall_seconds", "wall s", Unit(1.0, 1)),
)


def _pp(x: float) -> str:
    """A difference of accuracies (fractions) in percentage points, signed."""
    return f"{x * 100:+.2f}"


def _versus(a: Cell, b: Cell) -> tuple[float, S.Welch | None]:
    """Cell a against cell b: the difference of means and a test of it -- paired on the shared test
    examples where both cells have per-example records (--interval boot), else Welch's on the seeds."""
    if a.bits is not None and b.bits is not None and a.bits[0].size == b.bits[0].size:
        return a.mean - b.mean, S.paired_test(a.bits, b.bits)
    return a.mean - b.mean, S.welch(a.values, b.values)


def _test_fields(diff: float, w: S.Welch | None) -> dict[str, Any]:
    """A comparison's numbers for --json: the difference, the test's statistic, df, p and name."""
    return {
        "diff": diff,
        "t": w.t if w and math.isfinite(w.t) else None,
        "test": _test_name(w),
        "df": w.df if w and math.isfinite(w.df) else None,
        "p": w.p if w else None,
    }


def _test_name(w: S.Welch | None) -> str | None:
    """Which test gave `w` (--json): Welch's on the seeds, or the bootstrap paired on the test set."""
    if w is None:
        return None
    return "paired-bootstrap" if math.isnan(w.t) else "welch"


def _holm_cells(
    tests: list[tuple[int, int, float, S.Welch | None]], rows: list[list[str]], higher_is_better: bool = True
) -> tuple[set[tuple[int, int]], dict[tuple[int, int], str], dict[tuple[int, int], float]]:
    """Fill each tested cell's text with its difference and Holm-adjusted p (the family: every test
    of the table); bold where significant, toned by the direction of the difference."""
    tested = [(i, j, w) for i, j, _d, w in tests if w is not None]
    adjusted = dict(zip([(i, j) for i, j, _w in tested], S.holm([w.p for _i, _j, w in tested])))
    strong: set[tuple[int, int]] = set()
    tone: dict[tuple[int, int], str] = {}
    for i, j, diff, w in tests:
        if w is None:
            rows[i][j] = f"{_pp(diff)} (n<2)"
            continue
        p = adjusted[(i, j)]
        rows[i][j] = f"{_pp(diff)} ({fmt_p(p)})"
        if p < S.ALPHA:
            strong.add((i, j))
            tone[(i, j)] = "better" if (diff > 0) == higher_is_better else "worse"
    return strong, tone, adjusted


HOLM_NOTE = (
    "p-values are Holm-adjusted over the table's {n} test{s} (family-wise error 5 %); bold: adjusted p < 0.05, "
    "▲ / green: significantly higher, ▼ / red: significantly lower; (n<2): one side has a single seed, no test."
)


PAIRED_NOTE = (
    " Where both cells have per-example records (--interval boot), the test is a bootstrap paired on the "
    "shared test examples with seeds resampled (t and df do not apply), not Welch's."
)


def _holm_note(tests: list[tuple[int, int, float, S.Welch | None]]) -> str:
    n = sum(1 for *_x, w in tests if w is not None)
    paired = any(w is not None and math.isnan(w.t) for *_x, w in tests)
    return HOLM_NOTE.format(n=n, s="s" if n != 1 else "") + (PAIRED_NOTE if paired else "")


def _recipe_key(g: RowGroup | None) -> dict[str, Any]:
    """A row's configuration minus everything sparsity decides: what a dense baseline must share."""
    return recipe_of(g.fields) if g is not None else {}


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
    tests: list[tuple[int, int, float, S.Welch | None]] = []
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
            diff, w = _versus(c, dense)
            texts.append("")
            tests.append((len(rows), j + 1, diff, w))
            data.append(
                {
                    "row": r.label,
                    "dense_row": d_row.label,
                    "density": d,
                    **_test_fields(diff, w),
                    "n": c.n,
                    "n_dense": dense.n,
                }
            )
        rows.append([r.label, *texts])
    if not rows:
        return None
    notes = [
        "Mean of the cell minus the mean of the dense baseline trained with the same recipe, in percentage "
        "points, and the two-sided p-value of Welch's t-test on the per-seed values. " + _holm_note(tests)
    ]
    return _difference_table(
        "dense_diff", "Difference to dense (percentage points)", "method", main, rows, notes, tests, data
    )


def _difference_table(
    key: str,
    title: str,
    first: str,
    main: Table,
    rows: list[list[str]],
    notes: list[str],
    tests: list[tuple[int, int, float, S.Welch | None]],
    data: list[dict[str, Any]],
) -> TextTable:
    """A table of differences, one column per density: Holm-adjusted cells, bold and toned where significant."""
    strong, tone, adjusted = _holm_cells(tests, rows)
    _add_adjusted(data, tests, adjusted)
    header = [first, *(fmt_density(d) for d in main.densities)]
    return TextTable(key, title, header, rows, notes, strong, [False] + [True] * len(main.densities), data, tone)


def _add_adjusted(
    data: list[dict[str, Any]],
    tests: list[tuple[int, int, float, S.Welch | None]],
    adjusted: dict[tuple[int, int], float],
) -> None:
    """`data` (one entry per test, in order) gains `p_holm` beside the raw `p`."""
    for entry, (i, j, _d, _w) in zip(data, tests):
        entry["p_holm"] = adjusted.get((i, j))


def comparison_table(main: Table, reference: str = "granet") -> TextTable | None:
    """GraNet (each ``reference`` row) against every other sparse row at each density:
    difference of means and Welch's t-test p-value."""
    refs = [r for r in main.rows if r.method == reference and not r.baseline]
    others = [r for r in main.rows if not r.baseline]
    if not refs or len(others) < 2:
        return None
    rows: list[list[str]] = []
    tests: list[tuple[int, int, float, S.Welch | None]] = []
    data: list[dict[str, Any]] = []
    for g in refs:
        for o in others:
            if o is g or _recipe_key(o.group) != _recipe_key(g.group):  # only within one recipe
                continue
            texts = []
            for j, (d, a, b) in enumerate(zip(main.densities, g.cells, o.cells)):
                if a is None or b is None:
                    texts.append(DASH)
                    continue
                diff, w = _versus(a, b)
                texts.append("")
                tests.append((len(rows), j + 1, diff, w))
                data.append(
                    {
                        reference: g.label,
                        "other": o.label,
                        "density": d,
                        **_test_fields(diff, w),
                        f"n_{reference}": a.n,
                        "n_other": b.n,
                    }
                )
            rows.append([f"{g.label} vs {o.label}", *texts])
    if not rows:
        return None
    notes = [
        f"{reference} minus the other row: difference of means in percentage points, and the two-sided "
        "p-value of Welch's t-test (unequal variances) on the per-seed values; only rows trained with the same "
        "recipe (everything but the sparsity settings) are compared. " + _holm_note(tests)
    ]
    return _difference_table(
        "comparisons",
        f"{reference} vs each other method (Welch's t-test)",
        "comparison",
        main,
        rows,
        notes,
        tests,
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
            runs = [x for x in r.group.runs if density_key(x["target_density"]) == d]
            if runs:
                entries.append((r.label, d, runs))
    cols = [(c, h, u) for c, h, u in BUDGET_COLUMNS if any(finite(x.get(c)) for _l, _d, runs in entries for x in runs)]
    missing = [h for c, h, _u in BUDGET_COLUMNS if (c, h) not in {(c2, h2) for c2, h2, _ in cols}]
    if not entries or not cols:
        return None, missing
    ns = [len(runs) for _l, _d, runs in entries]
    table_n = max(set(ns), key=lambda n: (ns.count(n), n))
    rows: list[list[str]] = []
    data: list[dict[str, Any]] = []
    for label, d, runs in entries:
        means = {c: S.summary([x.get(c) for x in runs]) for c, _h, _u in cols}
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
