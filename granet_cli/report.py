"""Reports: results db -> tables -> Markdown / HTML (+ SVG plots).

Entry points
------------
``build_report(db_path, ...) -> ReportResult``
    Reads the db (read-only), writes ``<out_dir>/<name>.md`` (plots as
    ``<out_dir>/<name>_files/*.svg``) and/or ``<out_dir>/<name>.html`` (plots
    inline, no external assets) and returns what it wrote plus the main tables.

``summary_tables(db_path, *, sweep=None, metric=...) -> list[Table]``
    The main tables only (one per dataset/model), nothing written.

Printing a main table in the CLI::

    from rich.console import Console
    res = build_report(db, sweep=..., out_dir=..., fmt=..., metric=...)
    for table in res.main_tables:
        Console().print(table.to_rich())          # best cell per column in bold
    # or, without rich: table.header (list[str]) and table.plain_rows() (list[list[str]])

Table layout: one row per method (dense first, shown as the "dense (baseline)"
row whose value is repeated in every column, then granet, granet_uniform, rigl,
set, gmp, gmp_uniform, static, then any other method alphabetically), one
column per target density (ascending), each cell ``mean ± std (n=k)`` over the
completed runs (seeds); std is the sample std (ddof=1), 0 when n == 1; ``–``
where there is no completed run.  In the main table the best *sparse* cell per
column is marked (the dense baseline row is never marked unless it is the only
row with a value).  Runs that are running/failed/diverged are listed separately
and never averaged in.
"""

from __future__ import annotations

import math
import re
import statistics
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Sequence

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from markupsafe import Markup

from . import plots as P
from .store import Store, StoreError

METHOD_ORDER = ("dense", "granet", "granet_uniform", "rigl", "set", "gmp", "gmp_uniform", "static")
METRICS = {"final_test_acc": "Final test accuracy (%)", "best_test_acc": "Best test accuracy (%)"}
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
    """Aggregate of one (method, density) cell; ``text`` is the formatted value."""

    mean: float
    std: float
    n: int
    text: str
    best: bool = False


@dataclass
class TableRow:
    method: str
    label: str
    cells: list[Cell | None]
    baseline: bool = False


@dataclass
class Table:
    """One table of a report.

    ``header`` = ["method", "<density>", ...]; ``rows`` in method order;
    ``notes`` are one-line remarks shown above the table (dense baseline value,
    what the marking means).  ``plain_rows()`` gives the cell texts as strings
    (``–`` for missing), ``to_rich()`` a ``rich.table.Table``.
    """

    key: str
    title: str
    dataset: str
    model: str
    densities: list[float]
    rows: list[TableRow]
    notes: list[str] = field(default_factory=list)
    marks_best: bool = False

    @property
    def header(self) -> list[str]:
        return ["method", *(fmt_density(d) for d in self.densities)]

    def plain_rows(self) -> list[list[str]]:
        return [[r.label, *(c.text if c else DASH for c in r.cells)] for r in self.rows]

    def best_cells(self) -> set[tuple[int, int]]:
        """(row index, column index into densities) of the marked cells."""
        return {(i, j) for i, r in enumerate(self.rows) for j, c in enumerate(r.cells) if c and c.best}

    def to_rich(self):
        """A ``rich.table.Table``: title, notes as caption, best cells bold, baseline row italic."""
        from rich.table import Table as RichTable
        from rich.text import Text

        t = RichTable(title=f"{self.dataset} / {self.model}: {self.title}",
                      caption=" ".join(self.notes) or None, caption_justify="left")
        t.add_column("method \\ density", no_wrap=True)
        for h in self.header[1:]:
            t.add_column(h, justify="right", no_wrap=True)
        for r in self.rows:
            cells = [Text(c.text, style="bold green" if c.best else "") if c else Text(DASH, style="dim")
                     for c in r.cells]
            t.add_row(Text(r.label, style="italic" if r.baseline else ""), *cells)
        return t


@dataclass
class GroupReport:
    dataset: str
    model: str
    slug: str
    main: Table
    tables: list[Table]
    plots: list[P.Plot]
    n_completed: int
    missing_metrics: list[str] = field(default_factory=list)


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
def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def fmt_density(d: float) -> str:
    return f"{d:g}"


def _agg(values: Sequence[float]) -> tuple[float, float, int] | None:
    vals = [float(v) for v in values if _finite(v)]
    if not vals:
        return None
    return statistics.mean(vals), (statistics.stdev(vals) if len(vals) > 1 else 0.0), len(vals)


def _fmt(scale: float, decimals: int, suffix: str = "") -> Callable[[float, float, int], str]:
    def f(mean: float, std: float, n: int) -> str:
        return f"{mean * scale:.{decimals}f}{suffix} ± {std * scale:.{decimals}f} (n={n})"
    return f


@dataclass(frozen=True)
class _MetricSpec:
    column: str
    key: str
    title: str
    fmt: Callable[[float, float, int], str]


PERCENT = _fmt(100.0, 2)
FURTHER = (
    _MetricSpec("train_flops_frac", "train_flops", "Training FLOPs (fraction of dense)", _fmt(1.0, 3, "x")),
    _MetricSpec("inference_flops_frac", "inference_flops", "Inference FLOPs (fraction of dense)", _fmt(1.0, 3, "x")),
    _MetricSpec("itop_rate", "itop", "ITOP rate (fraction of weights ever active)", _fmt(1.0, 3)),
    _MetricSpec("final_density", "final_density", "Final achieved density", _fmt(1.0, 4)),
    _MetricSpec("wall_seconds", "wall_time", "Wall time (s)", _fmt(1.0, 1)),
)


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
    return sorted(ds)


def build_table(runs: list[dict], column: str, *, key: str, title: str,
                fmt: Callable[[float, float, int], str], mark_best: bool = False,
                higher_is_better: bool = True, notes: bool = True) -> Table:
    """Aggregate completed ``runs`` (one dataset/model) of ``column`` into a Table."""
    dataset = runs[0]["dataset"] if runs else ""
    model = runs[0]["model"] if runs else ""
    densities = _sparse_densities(runs)
    methods = sorted({r["method"] for r in runs}, key=method_sort_key)
    rows: list[TableRow] = []
    note_lines: list[str] = []
    for m in methods:
        mruns = [r for r in runs if r["method"] == m]
        if m == "dense":
            a = _agg([r[column] for r in mruns])
            cell = Cell(*a, text=fmt(*a)) if a else None
            # the same baseline Cell object in every column
            rows.append(TableRow(m, BASELINE_LABEL, [cell for _ in densities], baseline=True))
            note_lines.append(f"Dense baseline (density 1.0): {cell.text if cell else DASH}.")
            continue
        cells: list[Cell | None] = []
        for d in densities:
            a = _agg([r[column] for r in mruns if _dkey(r["target_density"]) == d])
            cells.append(Cell(*a, text=fmt(*a)) if a else None)
        rows.append(TableRow(m, m, cells))
    if mark_best:
        for j in range(len(densities)):
            cand = [r.cells[j] for r in rows if not r.baseline and r.cells[j] is not None]
            if not cand:
                cand = [r.cells[j] for r in rows if r.cells[j] is not None]
            if cand:
                best = (max if higher_is_better else min)(c.mean for c in cand)
                for c in cand:
                    # marked on the displayed (rounded) value so ties are all marked
                    if c.text.split(" ")[0] == fmt(best, 0.0, 1).split(" ")[0]:
                        c.best = True
        note_lines.append("Best sparse result per density column in bold.")
    if not any(r.method == "dense" for r in rows):
        note_lines.insert(0, "No completed dense baseline run.")
    return Table(key, title, dataset, model, densities, rows, note_lines if notes else [], marks_best=mark_best)


def _groups(runs: list[dict]) -> list[tuple[str, str, list[dict]]]:
    keys = sorted({(str(r["dataset"]), str(r["model"])) for r in runs})
    return [(d, m, [r for r in runs if (str(r["dataset"]), str(r["model"])) == (d, m)]) for d, m in keys]


# ----------------------------------------------------------------------------- plots
def _pick_panels(densities: list[float]) -> list[float]:
    if len(densities) <= MAX_EPOCH_PANELS:
        return densities
    return sorted({densities[0], densities[len(densities) // 2], densities[-1]})


def _group_plots(runs: list[dict], epochs: list[dict], masks: list[dict], metric: str, main: Table) -> list[P.Plot]:
    # 1. accuracy vs density (from the main table's aggregates)
    series: dict[str, list[tuple[float, float, float]]] = {}
    dense = None
    for r in main.rows:
        if r.baseline:
            c = r.cells[0] if r.cells else None
            dense = (c.mean * 100, c.std * 100) if c else None
            continue
        series[r.method] = [(d, c.mean * 100, c.std * 100) for d, c in zip(main.densities, r.cells) if c]
    plots = [P.accuracy_vs_density_plot(series, dense=dense, ylabel=METRICS[metric],
                                        title=f"{METRICS[metric].split(' (')[0]} vs target density")]

    # 2. test accuracy over epochs, one panel per density, one line per method
    by_run = {r["run_id"]: r for r in runs}
    per: dict[tuple[str, float | None], dict[int, list[float]]] = {}
    for e in epochs:
        r = by_run.get(e["run_id"])
        if r is None or not _finite(e["test_acc"]) or e["epoch"] is None:
            continue
        per.setdefault((r["method"], _dkey(r["target_density"])), {}).setdefault(int(e["epoch"]), []).append(e["test_acc"])
    panels: dict[str, dict[str, list[tuple[float, float, float]]]] = {}
    for d in _pick_panels(main.densities):
        panel: dict[str, list[tuple[float, float, float]]] = {}
        for (m, dk), curve in sorted(per.items(), key=lambda kv: method_sort_key(kv[0][0])):
            if dk == d or m == "dense":
                pts = []
                for ep, vals in sorted(curve.items()):
                    a = _agg(vals)
                    if a:
                        pts.append((ep, a[0] * 100, a[1] * 100))
                panel[m] = pts
        panels[f"density {fmt_density(d)}"] = panel
    if not any(m != "dense" for p in panels.values() for m in p):
        panels = {}
    plots.append(P.curves_plot(panels, title="Test accuracy over epochs (mean ± std over seeds)"))

    # 3. overall density vs step from mask_updates, one line per (method, density), lowest seed
    by_mr: dict[str, list[tuple[float, float]]] = {}
    for u in masks:
        if _finite(u["step"]) and _finite(u["density"]):
            by_mr.setdefault(u["run_id"], []).append((u["step"], u["density"]))
    chosen: dict[tuple[str, float | None], dict] = {}
    for r in sorted(runs, key=lambda r: (r["seed"] if r["seed"] is not None else 1 << 30, r["run_id"])):
        k = (r["method"], _dkey(r["target_density"]))
        if r["run_id"] in by_mr and k not in chosen:
            chosen[k] = r
    dseries: dict[str, list[tuple[str, list[tuple[float, float]]]]] = {}
    for (m, dk), r in sorted(chosen.items(), key=lambda kv: (method_sort_key(kv[0][0]), kv[0][1] or 0)):
        dseries.setdefault(m, []).append((f"{m} d={fmt_density(dk) if dk is not None else '?'}", by_mr[r["run_id"]]))
    plots.append(P.density_steps_plot(dseries, title="Overall density over training steps (lowest seed per run)"))
    return plots


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


def summary_tables(db_path: str | Path, *, sweep: str | None = None,
                   metric: str = "final_test_acc") -> list[Table]:
    """The main table per (dataset, model) without writing anything."""
    _check_metric(metric)
    runs, _sid, _sname, st = _load(db_path, sweep)
    st.close()
    done = [r for r in runs if r["status"] == "completed"]
    if not done:
        raise _no_completed(db_path, sweep)
    return [_main_table(g, metric) for _d, _m, g in _groups(done)]


def _main_table(runs: list[dict], metric: str) -> Table:
    return build_table(runs, metric, key="accuracy", title=METRICS[metric], fmt=PERCENT, mark_best=True)


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
    """Text safe inside a GitHub Markdown table cell (one line, pipes escaped)."""
    if value is None:
        return DASH
    text = " ".join(str(value).split())
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")


def _one_line(text: Any, limit: int = 300) -> str:
    if text is None:
        return ""
    t = " ".join(str(text).split())
    return t if len(t) <= limit else t[: limit - 1] + "…"


def build_report(db_path: str | Path, *, sweep: str | None = None, out_dir: Path = Path("reports"),
                 fmt: str = "both", metric: str = "final_test_acc", name: str | None = None) -> ReportResult:
    """Write the report; see the module docstring.  Raises ReportError (one line)
    for a missing/unreadable db, an unknown sweep, metric or format, or no completed runs."""
    if fmt not in FORMATS:
        raise ReportError(f"unknown report format {fmt!r}; choose from {', '.join(FORMATS)}")
    _check_metric(metric)
    runs, sweep_id, sweep_name, st = _load(db_path, sweep)
    try:
        done = [r for r in runs if r["status"] == "completed"]
        if not done:
            raise _no_completed(db_path, sweep)
        ids = [r["run_id"] for r in done]
        epochs = st.epochs(ids)
        masks = st.mask_updates(ids)
    except StoreError as e:
        raise ReportError(str(e)) from None
    finally:
        st.close()

    report_name = _slug(name or sweep_name or "granet-report")
    groups: list[GroupReport] = []
    for dataset, model, g in _groups(done):
        main = _main_table(g, metric)
        tables, missing = [], []
        for spec in FURTHER:
            t = build_table(g, spec.column, key=spec.key, title=spec.title, fmt=spec.fmt, notes=False)
            if any(c for r in t.rows for c in r.cells):
                tables.append(t)
            else:
                missing.append(spec.title)
        gids = {r["run_id"] for r in g}
        gplots = _group_plots(g, [e for e in epochs if e["run_id"] in gids],
                              [u for u in masks if u["run_id"] in gids], metric, main)
        groups.append(GroupReport(dataset, model, _slug(f"{dataset}-{model}"), main, tables, gplots, len(g), missing))

    others = [
        {**r, "error_line": _one_line(r["error"])}
        for r in sorted((r for r in runs if r["status"] != "completed"),
                        key=lambda r: (str(r["status"]), method_sort_key(str(r["method"])),
                                       r["target_density"] if _finite(r["target_density"]) else 0.0,
                                       r["seed"] if r["seed"] is not None else 0, str(r["run_id"])))
    ]
    counts: dict[str, int] = {}
    for r in runs:
        counts[str(r["status"])] = counts.get(str(r["status"]), 0) + 1
    ctx = dict(
        title=f"GraNet report: {sweep_name or name or 'all runs'}",
        db_path=str(db_path),
        sweep_id=sweep_id,
        sweep_name=sweep_name,
        metric=metric,
        metric_title=METRICS[metric],
        generated=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        counts=", ".join(f"{n} {s}" for s, n in sorted(counts.items())),
        groups=groups,
        others=others,
        dash=DASH,
    )

    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ReportError(f"cannot create report folder {out_dir}: {_one_line(e)}") from None
    env = _env()
    md_path = html_path = None
    plot_paths: list[Path] = []
    try:
        if fmt in ("md", "both"):
            files_dir = out_dir / f"{report_name}_files"
            files_dir.mkdir(exist_ok=True)
            for old in files_dir.glob("*.svg"):
                old.unlink()
            links: dict[int, str] = {}
            for g in groups:
                for p in g.plots:
                    if p.svg is not None:
                        path = files_dir / f"{g.slug}-{p.key}.svg"
                        path.write_text(p.svg, encoding="utf-8")
                        plot_paths.append(path)
                        links[id(p)] = f"{files_dir.name}/{path.name}"
            md = env.get_template("report.md.j2").render(**ctx, plot_link=lambda p: links.get(id(p)))
            md_path = out_dir / f"{report_name}.md"
            md_path.write_text(md, encoding="utf-8")
        if fmt in ("html", "both"):
            def inline(p: P.Plot, g: GroupReport) -> Markup:
                return Markup(P.inline_svg(p.svg, f"{g.slug}-{p.key}")) if p.svg else Markup("")
            page = env.get_template("report.html.j2").render(**ctx, inline_svg=inline)
            html_path = out_dir / f"{report_name}.html"
            html_path.write_text(page, encoding="utf-8")
    except OSError as e:
        raise ReportError(f"cannot write report in {out_dir}: {_one_line(e)}") from None

    return ReportResult(md_path=md_path, html_path=html_path, main_tables=[g.main for g in groups],
                        name=report_name, sweep_id=sweep_id, groups=groups, other_runs=others,
                        plot_paths=plot_paths)


__all__ = [
    "ReportError", "ReportResult", "Table", "TableRow", "Cell", "GroupReport",
    "build_report", "summary_tables", "build_table", "METHOD_ORDER", "METRICS", "md_cell",
]
