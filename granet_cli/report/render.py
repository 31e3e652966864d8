"""The report's pages: the jinja environment, Markdown (plots as SVG files beside it) and HTML (plots
inline, no external assets), written as one set.

Apart from build.py so that what the pages look like (templates/report.md.j2, report.html.j2 and the
filters they use, such as :func:`md_cell`) is separate from what they show.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from markupsafe import Markup

from ..safe_io import publish
from . import plots as P
from .analysis import GroupReport
from .stats import finite
from .tables import DASH, PERCENT, fmt_density

FORMATS = ("md", "html", "both")
TEMPLATES_DIR = Path(__file__).parent.parent / "templates"


def environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(str(TEMPLATES_DIR)),
        autoescape=select_autoescape(enabled_extensions=("html", "html.j2"), default_for_string=False, default=False),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["mdcell"] = md_cell
    env.filters["density"] = lambda d: fmt_density(d) if finite(d) else DASH
    env.filters["percent"] = PERCENT.value
    return env


def md_cell(value: Any) -> str:
    """Text safe inside a GitHub Markdown table cell (one line, pipes escaped; brackets escaped, so a
    spec value such as `[x](javascript:...)` is shown as text, never as a live link)."""
    if value is None:
        return DASH
    text = " ".join(str(value).split())
    text = text.replace("\\", "\\\\").replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")
    return text.replace("[", "\\[").replace("]", "\\]")


@dataclass
class Written:
    """The files :func:`write_report` wrote (None: that format was not asked for)."""

    md_path: Path | None
    html_path: Path | None
    plot_paths: list[Path]


def write_report(
    out_dir: Path,
    report_name: str,
    fmt: str,
    ctx: dict[str, Any],
    groups: list[GroupReport],
    extra_files: Sequence[tuple[Path, bytes]] = (),
) -> Written:
    """Render the pages of ``fmt`` from the template context ``ctx`` into the existing ``out_dir``;
    ``extra_files`` (the LaTeX set of ``--latex``) are published in the same set, before the pages.
    Raises safe_io.PathError or OSError; nothing is replaced unless everything was written."""
    env = environment()
    md_path = html_path = None
    plot_paths: list[Path] = []
    # rendered in memory first, then published as one set: every file goes to a temporary name in
    # its folder and is renamed into place only when all are written (plots before the pages that
    # link them), so a crash or a full disk leaves the old report or the new one, never half
    files: list[tuple[Path, bytes]] = list(extra_files)
    stale: list[Path] = []
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
    return Written(md_path, html_path, plot_paths)
