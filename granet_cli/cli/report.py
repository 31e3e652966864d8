"""granet report: comparison tables and plots from the results database, as Markdown, HTML or JSON."""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from .app import DbOpt, app, fail, out, resolve_db


class ReportFormat(StrEnum):
    md = "md"
    html = "html"
    both = "both"


class Interval(StrEnum):
    ci = "ci"
    std = "std"
    boot = "boot"


class Metric(StrEnum):
    final_test_acc = "final_test_acc"
    selected_test_acc = "selected_test_acc"
    best_test_acc = "best_test_acc"


# granet report's options, named (as run and sweep do) so the command reads as what it does
ReportSweepOpt = Annotated[
    str | None, typer.Option("--sweep", help="Only this sweep (name or id); default: every completed run.")
]
ReportOutOpt = Annotated[Path, typer.Option("--out", help="Folder for the report files.")]
ReportFormatOpt = Annotated[ReportFormat, typer.Option("--format", help="Markdown, HTML or both.")]
ReportMetricOpt = Annotated[
    Metric,
    typer.Option(
        "--metric",
        help=(
            "The accuracy the tables compare: final_test_acc (last epoch), selected_test_acc (test accuracy at "
            "the epoch of best validation accuracy once the target density is reached: the reference's model "
            "selection, needs data.val_fraction > 0), best_test_acc (best over epochs: optimistic, it selects "
            "on the test set)."
        ),
    ),
]
ReportIntervalOpt = Annotated[
    Interval,
    typer.Option(
        "--interval",
        help=(
            "What follows the mean in a cell: ci (95 % confidence interval of the mean over seeds, t-based), "
            "std (sample standard deviation over seeds, as papers print) or boot (95 % interval of a two-level "
            "bootstrap over seeds and test examples, comparisons paired on the shared test set; needs runs of "
            "granet >= 0.2, which keep per-example records)."
        ),
    ),
]
ReportNameOpt = Annotated[
    str | None, typer.Option("--name", help="Report file name (default: the sweep's name, else granet-report).")
]
ReportLatexOpt = Annotated[
    bool,
    typer.Option(
        "--latex",
        help=(
            "Also write NAME.tex (booktabs tables with captions and labels, the figures as PDF in NAME_files/) "
            "and NAME.bib (the sources of the published numbers shown), for a paper."
        ),
    ),
]
ReportJsonOpt = Annotated[
    bool,
    typer.Option(
        "--json",
        help=(
            "Print the tables (rows, cells with mean, std, 95 % CI, n; GraNet's Welch comparisons; differences to "
            "dense; published numbers; budget) as one JSON object on stdout for scripts, and write no files."
        ),
    ),
]


@app.command()
def report(
    db: DbOpt = None,
    sweep: ReportSweepOpt = None,
    out_dir: ReportOutOpt = Path("reports"),
    fmt: ReportFormatOpt = ReportFormat.both,
    metric: ReportMetricOpt = Metric.final_test_acc,
    interval: ReportIntervalOpt = Interval.ci,
    name: ReportNameOpt = None,
    latex: ReportLatexOpt = False,
    as_json: ReportJsonOpt = False,
) -> None:
    """Comparison tables (mean ± 95 % CI over seeds, Welch's t-tests) and plots from the results database, as Markdown and HTML."""
    from ..report import ReportError, build_report, report_json

    if fmt not in ("md", "html", "both"):
        fail(f"--format: expected md, html or both, got {fmt!r}")
    if as_json:
        try:
            data = report_json(resolve_db(db), sweep=sweep, metric=metric, interval=interval)
        except ReportError as e:
            fail(str(e))
        typer.echo(json.dumps(data, indent=2, allow_nan=False, default=str))
        return
    try:
        result = build_report(
            resolve_db(db),
            sweep=sweep,
            out_dir=out_dir,
            fmt=fmt,
            metric=metric,
            name=name,
            interval=interval,
            latex=latex,
        )
    except ReportError as e:
        fail(str(e))
    for table in result.main_tables:
        out.print(table.to_rich())
    for path in (result.md_path, result.html_path, result.tex_path):
        if path is not None:
            out.print(f"wrote {path}", highlight=False)
