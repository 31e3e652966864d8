"""``granet report --latex``: the report's tables and figures as a LaTeX document for a paper.

Writes, beside the Markdown/HTML pages and as one set with them (safe_io.publish):

- ``NAME.tex``: a compilable ``article`` with, per dataset/model, booktabs tables (the main table,
  the difference to dense, the published numbers where any match, the budget), each captioned with
  the notes the report's tables already carry (n, the interval, the test and its correction) and
  labelled ``tab:<dataset>-<model>-<table>``; and the figures (``fig:<dataset>-<model>-<figure>``);
- ``NAME_files/<dataset>-<model>-<figure>.pdf``: the same matplotlib figures as the SVGs, as PDF
  (drawn while the figures are drawn: plots.collect_pdfs);
- ``NAME.bib``: one entry per source of a published number the ``.tex`` shows, cited beside it.

Every text that comes from the data (labels, notes, paths, sources) goes through :func:`escape`, so
a spec value such as ``lr=1e-3_x%`` prints as typed instead of breaking the document.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .analysis import GroupReport
from .tables import DASH, Table, TextTable

# characters LaTeX treats specially, and the Unicode the report's texts use, as pdflatex input
_CHARS = {
    "\\": r"\textbackslash{}",
    "{": r"\{",
    "}": r"\}",
    "$": r"\$",
    "&": r"\&",
    "#": r"\#",
    "%": r"\%",
    # the typewriter font's own glyphs: the default (OT1) text font draws these as a rule or an
    # accent, which a reader copying a label out of the PDF would not get back
    "_": r"\texttt{\char95}",
    "^": r"\texttt{\char94}",
    "~": r"\texttt{\char126}",
    "<": r"\textless{}",
    ">": r"\textgreater{}",
    "|": r"\textbar{}",
    "±": r"$\pm$",
    DASH: "--",
    "—": "---",
    "−": "$-$",
    "≈": r"$\approx$",
    "×": r"$\times$",
    "·": r"$\cdot$",
    "≤": r"$\leq$",
    "≥": r"$\geq$",
    "→": r"$\rightarrow$",
    "▲": r"$\blacktriangle$",
    "▼": r"$\blacktriangledown$",
    "µ": r"$\mu$",
    "…": r"\ldots{}",
    "‘": "`",
    "’": "'",
    "“": "``",
    "”": "''",
    "\u00a0": "~",
}


def escape(text: Any) -> str:
    """``text`` as LaTeX that prints it: special characters escaped, the report's symbols as math,
    other non-ASCII letters without their accents (pdflatex's default fonts lack them) or ``?``."""
    out = []
    for ch in str(text):
        if ch in _CHARS:
            out.append(_CHARS[ch])
        elif ch in "\n\r\t":
            out.append(" ")
        elif ord(ch) < 128:
            out.append(ch)
        else:
            base = "".join(c for c in unicodedata.normalize("NFKD", ch) if ord(c) < 128 and c not in _CHARS)
            out.append(base or "?")
    return "".join(out)


def _label(*parts: str) -> str:
    """A \\label key: letters, digits, ``-`` and ``:`` only."""
    return re.sub(r"[^A-Za-z0-9:-]+", "-", ":".join(parts)).strip("-")


_PREAMBLE = r"""\documentclass[10pt]{article}
\usepackage[utf8]{inputenc}
\usepackage[margin=2cm]{geometry}
\usepackage{booktabs}
\usepackage{graphicx}
\usepackage{amssymb}
\usepackage{xcolor}
% a table wider than the text is scaled down to the text width
\newcommand{\fitwidth}[1]{\resizebox{\ifdim\width>\linewidth\linewidth\else\width\fi}{!}{#1}}
"""


def _tabular(header: list[str], rows: list[list[str]], numeric: list[bool]) -> list[str]:
    """A booktabs tabular of already-escaped cells."""
    spec = "".join("r" if num else "l" for num in numeric)
    lines = [r"\fitwidth{%", rf"\begin{{tabular}}{{{spec}}}", r"\toprule", " & ".join(header) + r" \\", r"\midrule"]
    lines += [" & ".join(r) + r" \\" for r in rows]
    lines += [r"\bottomrule", r"\end{tabular}}"]
    return lines


def _table_env(caption: str, label: str, body: list[str]) -> list[str]:
    return [
        r"\begin{table}[htbp]",
        r"\centering\small",
        rf"\caption{{{caption}}}",
        rf"\label{{{label}}}",
        *body,
        r"\end{table}",
        "",
    ]


def _main_table(g: GroupReport, title: str) -> list[str]:
    t: Table = g.main
    rows = []
    for r in t.rows:
        label = escape(r.label)
        cells = []
        for c in r.cells:
            if c is None:
                cells.append("--")
                continue
            text = escape(c.text) + (r" $\approx$" if c.tied else "")
            cells.append(rf"\textbf{{{text}}}" if c.best else text)
        rows.append([rf"\emph{{{label}}}" if r.baseline else label, *cells])
    header = ["method", *(escape(h) for h in t.header[1:])]
    caption = escape(f"{g.dataset} / {g.model}: {title}. " + " ".join(t.notes))
    body = [r"\multicolumn{1}{l}{} & " + rf"\multicolumn{{{len(t.densities)}}}{{c}}{{target density}} \\"]
    tab = _tabular(header, rows, [False] + [True] * len(t.densities))
    # the "target density" spanner sits above the header row, inside the tabular
    tab = tab[:3] + body + [rf"\cmidrule(l){{2-{len(t.densities) + 1}}}"] + tab[3:]
    return _table_env(caption, _label("tab", g.slug, "main"), tab)


_TONES = {"better": "green!50!black", "worse": "red!70!black"}


def _text_table(g: GroupReport, t: TextTable, cites: dict[tuple[str, str, str], str], n: int | None) -> list[str]:
    rows = []
    for i, row in enumerate(t.rows):
        cells = []
        for j, text in enumerate(row):
            cell = escape(text + t.arrow(i, j))
            if t.is_strong(i, j):
                cell = rf"\textbf{{{cell}}}"
            colour = _TONES.get(t.tone_of(i, j))  # significantly better / worse: green / red, as in HTML
            cells.append(rf"\textcolor{{{colour}}}{{{cell}}}" if colour else cell)
        if t.key == "published" and i < len(t.data):
            d = t.data[i]
            cells[-1] += rf"~\cite{{{cites[(d['paper'], d['table'], d['source'])]}}}"
        rows.append(cells)
    numeric = [t.is_numeric(j) for j in range(len(t.header))]
    seeds = f"n = {n} seeds per cell unless a cell says otherwise. " if n is not None and t.key == "dense_diff" else ""
    caption = escape(f"{g.dataset} / {g.model}: {t.title}. {seeds}" + " ".join(t.notes))
    return _table_env(caption, _label("tab", g.slug, t.key), _tabular([escape(h) for h in t.header], rows, numeric))


def _figure(g: GroupReport, key: str, caption: str, path: str) -> list[str]:
    return [
        r"\begin{figure}[htbp]",
        r"\centering",
        rf"\includegraphics[width=\linewidth,height=0.8\textheight,keepaspectratio]{{{path}}}",
        rf"\caption{{{escape(caption)}}}",
        rf"\label{{{_label('fig', g.slug, key)}}}",
        r"\end{figure}",
        "",
    ]


def _bib_key(paper: str, taken: set[str]) -> str:
    base = re.sub(r"[^a-z0-9]+", "", paper.lower())[:24] or "source"
    key, i = base, 1
    while key in taken:
        i += 1
        key = f"{base}{i}"
    return key


def citations(groups: Iterable[GroupReport]) -> dict[tuple[str, str, str], str]:
    """(paper, table, source) of every published number the tables show -> its BibTeX key."""
    out: dict[tuple[str, str, str], str] = {}
    for g in groups:
        t = g.table("published")
        for d in t.data if t else []:
            src = (d["paper"], d["table"], d["source"])
            if src not in out:
                out[src] = _bib_key(src[0], set(out.values()))
    return out


def bibtex(cites: dict[tuple[str, str, str], str]) -> str:
    lines = ["% The sources of the published numbers in the report (granet_cli/data/published.csv).", ""]
    for (paper, table, source), key in cites.items():
        lines += [
            f"@misc{{{key},",
            f"  title = {{{{{escape(paper)}}}}},",
            f"  note = {{{escape(table)}. {escape(source)}}},",
            "}",
            "",
        ]
    return "\n".join(lines)


def document(ctx: dict[str, Any], groups: list[GroupReport], figures: dict[int, str], bib_name: str) -> str:
    """The ``.tex`` text. ``figures``: id(plot) -> its PDF's path relative to the ``.tex``."""
    cites = citations(groups)
    lines = [
        _PREAMBLE,
        rf"\title{{{escape(ctx['title'])}}}",
        rf"\date{{{escape(ctx['generated'])}}}",
        r"\author{granet}",
        r"\begin{document}",
        r"\maketitle",
        escape(f"Results database {ctx['db_path']}; runs: {ctx['counts']}. Accuracies in percent; {ctx['ci_note']}."),
        "",
    ]
    for g in groups:
        lines += [rf"\section{{{escape(f'{g.dataset} / {g.model}')}}}", ""]
        lines += _main_table(g, ctx["metric_title"])
        for key in ("dense_diff", "published", "budget"):
            t = g.table(key)
            if t is not None:
                lines += _text_table(g, t, cites, g.main.n)
        for p in g.plots:
            if id(p) in figures:
                lines += _figure(g, p.key, p.caption or p.title, figures[id(p)])
        lines.append(r"\clearpage")
    if cites:
        lines += [r"\bibliographystyle{plain}", rf"\bibliography{{{bib_name}}}"]
    lines += [r"\end{document}", ""]
    return "\n".join(lines)


def latex_files(
    out_dir: Path, report_name: str, ctx: dict[str, Any], groups: list[GroupReport], pdfs: dict[str, bytes]
) -> list[tuple[Path, bytes]]:
    """The files of ``--latex`` (figure PDFs, ``.bib``, then the ``.tex`` that uses them), in the
    order safe_io.publish renames them into place. ``pdfs``: a figure's SVG text -> the same figure
    as PDF (plots.collect_pdfs). Creates the figures' folder."""
    files_dir = out_dir / f"{report_name}_files"
    files: list[tuple[Path, bytes]] = []
    figures: dict[int, str] = {}
    for g in groups:
        for p in g.plots:
            pdf = pdfs.get(p.svg) if p.svg is not None else None
            if pdf is not None:
                path = files_dir / f"{g.slug}-{p.key}.pdf"
                files.append((path, pdf))
                figures[id(p)] = f"{files_dir.name}/{path.name}"
    if files:
        files_dir.mkdir(exist_ok=True)
    files.append((out_dir / f"{report_name}.bib", bibtex(citations(groups)).encode("utf-8")))
    tex = document(ctx, groups, figures, report_name)
    files.append((out_dir / f"{report_name}.tex", tex.encode("utf-8")))
    return files


def remove_stale_pdfs(out_dir: Path, report_name: str, written: list[tuple[Path, bytes]]) -> None:
    """Delete the figure PDFs of a previous ``--latex`` report that the new ``.tex`` no longer uses."""
    keep = {p for p, _ in written}
    for old in (out_dir / f"{report_name}_files").glob("*.pdf"):
        if old not in keep:
            old.unlink(missing_ok=True)
