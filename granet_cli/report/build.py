"""Reports: results db -> tables -> Markdown / HTML (+ SVG plots), or JSON.

What is loaded from the store (read-only), which runs are analysed and what is written; the tables,
plots and pages themselves come from the modules beside this one (see the package's docstring).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..provenance import provenance
from ..safe_io import PathError
from ..store import Store, StoreError
from . import stats as S
from .analysis import GroupReport, analyse_group, configurations, not_completed, sections
from .latex import latex_files, remove_stale_pdfs
from .plots import collect_pdfs
from .published import load_published
from .render import FORMATS, write_report
from .tables import DASH, EXAMPLES_COLUMN, INTERVALS, METRICS, Table, main_table, short_line, slug
from .tuning import tuning_section, tuning_sweep_ids


class ReportError(ValueError):
    """A report problem with a one-line message."""


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
    #: report --latex: the .tex (its .bib and figure PDFs beside it)
    tex_path: Path | None = None


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
        if sweep_id is None:  # all runs: `granet tune`'s trials are not results
            tuning = tuning_sweep_ids(st)
            runs = [r for r in runs if r["sweep_id"] not in tuning]
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


def summary_tables(
    db_path: str | Path, *, sweep: str | None = None, metric: str = "final_test_acc", interval: str = "ci"
) -> list[Table]:
    """The main table per (dataset, model) without writing anything."""
    _check_metric(metric, interval)
    runs, _sid, _sname, st = _load(db_path, sweep)
    st.close()
    done = [r for r in runs if r["status"] == "completed"]
    if not done:
        raise _no_completed(db_path, sweep)
    _check_recorded(done, metric)
    tables = []
    for s in sections(done):
        tables.append(main_table(s.runs, metric, interval))
        tables[-1].recipe = s.recipe
    return tables


def _check_recorded(done: list[dict], metric: str) -> None:
    """A metric no completed run recorded is one line, not a table of dashes (selected_test_acc needs a
    validation split)."""
    if any(S.finite(r.get(metric)) for r in done):
        return
    if metric == "selected_test_acc":
        raise ReportError(
            "no completed run has selected_test_acc: model selection needs a validation split; set "
            "data.val_fraction (e.g. --set data.val_fraction=0.1) and rerun, or use --metric final_test_acc"
        )
    raise ReportError(f"no completed run has {metric}; try --metric final_test_acc")


def _check_metric(metric: str, interval: str = "ci") -> None:
    if metric not in METRICS:
        raise ReportError(f"unknown metric {metric!r}; choose from {', '.join(METRICS)}")
    if interval not in INTERVALS:
        raise ReportError(f"unknown interval {interval!r}; choose from {', '.join(INTERVALS)}")
    if interval == "boot" and metric not in EXAMPLES_COLUMN:
        raise ReportError(
            f"--interval boot needs per-example records, which runs keep for {' and '.join(EXAMPLES_COLUMN)} "
            f"only, not {metric}"
        )


# ---------------------------------------------------------------------------- analysis
@dataclass
class _Analysis:
    groups: list[GroupReport]
    others: list[dict]
    counts: dict[str, int]
    sweep_id: str | None
    sweep_name: str | None


def _analyse(
    db_path: str | Path, sweep: str | None, metric: str, *, with_plots: bool = True, interval: str = "ci"
) -> _Analysis:
    _check_metric(metric, interval)
    runs, sweep_id, sweep_name, st = _load(db_path, sweep)
    try:
        done = [r for r in runs if r["status"] == "completed"]
        if not done:
            raise _no_completed(db_path, sweep)
        _check_recorded(done, metric)
        ids = [r["run_id"] for r in done]
        epochs = st.epochs(ids) if with_plots else []
        masks = st.mask_updates(ids) if with_plots else []
        layers = st.layers(ids) if with_plots else []
    except StoreError as e:
        raise ReportError(str(e)) from None
    finally:
        st.close()

    published = load_published()
    groups = [
        analyse_group(
            s.dataset,
            s.model,
            s.runs,
            metric,
            published,
            epochs=epochs,
            masks=masks,
            layers=layers,
            with_plots=with_plots,
            interval=interval,
            recipe=s.recipe,
            section_notes=s.notes,
        )
        for s in sections(done)
    ]
    counts: dict[str, int] = {}
    for r in runs:
        counts[str(r["status"])] = counts.get(str(r["status"]), 0) + 1
    return _Analysis(groups, not_completed(runs), counts, sweep_id, sweep_name)


# ---------------------------------------------------------------------------- entry points
def report_json(
    db_path: str | Path, *, sweep: str | None = None, metric: str = "final_test_acc", interval: str = "ci"
) -> dict[str, Any]:
    """The report's tables as one JSON-ready dict (nothing written): per dataset/model the main
    table (rows, cells: mean, std, ci95, n, label, density, per-seed values), the differences to
    dense, GraNet's pairwise comparisons (difference, Welch's t, df, p), published numbers with
    their gaps and the budget table; the main table's ``per_seed`` lists every run's value with its
    seed and run id; plus the runs not completed.  Accuracies are fractions."""
    a = _analyse(db_path, sweep, metric, with_plots=False, interval=interval)
    return {
        "db": str(db_path),
        "sweep_id": a.sweep_id,
        "sweep_name": a.sweep_name,
        "metric": metric,
        "metric_title": METRICS[metric],
        "interval": interval,
        "interval_note": INTERVALS[interval],
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
    interval: str = "ci",
    latex: bool = False,
) -> ReportResult:
    """Write the report; see the package's docstring.  Raises ReportError (one line)
    for a missing/unreadable db, an unknown sweep, metric or format, or no completed runs."""
    if fmt not in FORMATS:
        raise ReportError(f"unknown report format {fmt!r}; choose from {', '.join(FORMATS)}")
    pdfs: dict[str, bytes] = {}
    if latex:  # every figure drawn as PDF too
        with collect_pdfs() as pdfs:
            a = _analyse(db_path, sweep, metric, interval=interval)
    else:
        a = _analyse(db_path, sweep, metric, interval=interval)
    groups, others, counts, sweep_id, sweep_name = a.groups, a.others, a.counts, a.sweep_id, a.sweep_name
    report_name = slug(name or sweep_name or "granet-report")
    ctx = dict(
        provenance=provenance(),
        configs=configurations(groups),
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
        ci_note=INTERVALS[interval],
        tuning=tuning_section(db_path, sweep_name),  # a sweep `granet tune` ran: how it was tuned
    )

    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ReportError(f"cannot create report folder {out_dir}: {short_line(e)}") from None
    try:
        tex = latex_files(out_dir, report_name, ctx, groups, pdfs) if latex else []
        written = write_report(out_dir, report_name, fmt, ctx, groups, extra_files=tex)
        if latex:
            remove_stale_pdfs(out_dir, report_name, tex)
    except PathError as e:
        raise ReportError(str(e)) from None
    except OSError as e:
        raise ReportError(f"cannot write report in {out_dir}: {short_line(e)}") from None

    return ReportResult(
        md_path=written.md_path,
        html_path=written.html_path,
        main_tables=[g.main for g in groups],
        name=report_name,
        sweep_id=sweep_id,
        groups=groups,
        other_runs=others,
        plot_paths=written.plot_paths,
        tex_path=tex[-1][0] if tex else None,
    )
