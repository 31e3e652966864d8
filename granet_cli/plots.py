"""Report figures (matplotlib, no pyplot / no GUI backend), returned as SVG text.

Each ``*_plot`` function takes plain Python data prepared by ``report.py`` and
returns a :class:`Plot`: ``svg`` is the figure as standalone SVG text, or None
when there is nothing to draw, in which case ``note`` says why.  Figures are
built on a bare :class:`matplotlib.figure.Figure` (Agg canvas), so nothing here
touches pyplot's global state or needs a display.

SVG text is drawn with ``svg.fonttype = 'none'`` (text stays text, no embedded
glyphs, no fonts fetched) and without a date in the metadata.  Use
:func:`inline_svg` to embed one in an HTML page: it drops the XML prolog and
metadata and prefixes every id so several figures can share one document.
"""

from __future__ import annotations

import io
import math
import re
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import matplotlib
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

_RC = {
    "svg.fonttype": "none",
    "font.size": 9,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
}
# fixed method colours so a method keeps its colour across figures
_METHOD_COLORS = {
    "dense": "#000000", "granet": "#1f77b4", "granet_uniform": "#17becf", "rigl": "#d62728",
    "set": "#2ca02c", "gmp": "#ff7f0e", "gmp_uniform": "#bcbd22", "static": "#7f7f7f",
}
_EXTRA_COLORS = ("#9467bd", "#8c564b", "#e377c2", "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173")


@dataclass
class Plot:
    """One figure: a file-name stem, a title, the SVG text (None when there was no data) and a note."""

    key: str
    title: str
    svg: str | None = field(repr=False)
    note: str | None = None


def method_color(method: str, order: Sequence[str] = ()) -> str:
    if method in _METHOD_COLORS:
        return _METHOD_COLORS[method]
    extras = [m for m in order if m not in _METHOD_COLORS]
    idx = extras.index(method) if method in extras else sum(map(ord, method))
    return _EXTRA_COLORS[idx % len(_EXTRA_COLORS)]


def _figure(nrows: int = 1, ncols: int = 1, *, width: float = 6.4, height: float = 3.8):
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes


def _to_svg(fig: Figure) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", metadata={"Date": None})
    return buf.getvalue()


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def accuracy_vs_density_plot(
    series: Mapping[str, Sequence[tuple[float, float, float]]],
    *,
    dense: tuple[float, float] | None = None,
    ylabel: str = "test accuracy (%)",
    title: str = "Accuracy vs density",
    key: str = "accuracy_vs_density",
) -> Plot:
    """Error-bar plot on a log-x axis.

    ``series``: method -> [(target_density, mean, std), ...] (values already in
    display units, e.g. percent).  ``dense``: (mean, std) of the dense baseline,
    drawn as a horizontal line with a ±std band.
    """
    pts = {m: [(d, mu, sd) for d, mu, sd in v if _finite(d) and d > 0 and _finite(mu)] for m, v in series.items()}
    pts = {m: sorted(v) for m, v in pts.items() if v}
    if not pts and dense is None:
        return Plot(key, title, None, "no completed runs with an accuracy to plot")
    with matplotlib.rc_context(_RC):
        fig, axes = _figure()
        ax = axes[0][0]
        order = list(pts)
        for i, (m, v) in enumerate(pts.items()):
            # small multiplicative dodge so error bars of methods at one density do not overlap
            dodge = 1.025 ** (i - (len(pts) - 1) / 2)
            ax.errorbar([p[0] * dodge for p in v], [p[1] for p in v], yerr=[p[2] if _finite(p[2]) else 0 for p in v],
                        marker="o", ms=4, capsize=3, lw=1.4, label=m, color=method_color(m, order))
        if dense is not None and _finite(dense[0]):
            mu, sd = dense[0], dense[1] if _finite(dense[1]) else 0.0
            ax.axhline(mu, color="black", ls="--", lw=1, label="dense")
            if sd > 0:
                ax.axhspan(mu - sd, mu + sd, color="black", alpha=0.08, lw=0)
        xs = sorted({p[0] for v in pts.values() for p in v})
        if xs:
            ax.set_xscale("log")
            ax.set_xticks(xs)
            ax.set_xticklabels([f"{x:g}" for x in xs])
            ax.minorticks_off()
        ax.set_xlabel("target density")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.legend(fontsize=8, frameon=False, loc="best")
        return Plot(key, title, _to_svg(fig))


def curves_plot(
    panels: Mapping[str, Mapping[str, Sequence[tuple[float, float, float]]]],
    *,
    xlabel: str = "epoch",
    ylabel: str = "test accuracy (%)",
    title: str = "Test accuracy over epochs",
    key: str = "accuracy_over_epochs",
    empty_note: str = "no per-epoch test accuracy recorded",
    ncols: int = 3,
) -> Plot:
    """One subplot per panel (e.g. per target density), one line per method.

    ``panels``: panel title -> method -> [(x, mean, std), ...]; a ±std band is
    drawn where std > 0.
    """
    panels = {p: {m: sorted(v) for m, v in series.items() if v} for p, series in panels.items()}
    panels = {p: s for p, s in panels.items() if s}
    if not panels:
        return Plot(key, title, None, empty_note)
    n = len(panels)
    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    with matplotlib.rc_context(_RC):
        fig, axes = _figure(nrows, ncols, width=min(3.4 * ncols + 0.6, 11), height=2.8 * nrows + 0.5)
        order = sorted({m for s in panels.values() for m in s})
        for i, (ptitle, series) in enumerate(panels.items()):
            ax = axes[i // ncols][i % ncols]
            for m, v in series.items():
                xs = [p[0] for p in v]
                ys = [p[1] for p in v]
                c = method_color(m, order)
                ax.plot(xs, ys, lw=1.4, label=m, color=c)
                sds = [p[2] if _finite(p[2]) else 0.0 for p in v]
                if any(s > 0 for s in sds):
                    ax.fill_between(xs, [y - s for y, s in zip(ys, sds)], [y + s for y, s in zip(ys, sds)],
                                    color=c, alpha=0.12, lw=0)
            ax.set_title(ptitle, fontsize=9)
            ax.set_xlabel(xlabel)
            ax.set_ylabel(ylabel)
        for j in range(n, nrows * ncols):
            axes[j // ncols][j % ncols].set_visible(False)
        handles, labels = {}, []
        for row in axes:
            for ax in row:
                for h, lab in zip(*ax.get_legend_handles_labels()):
                    if lab not in handles:
                        handles[lab] = h
                        labels.append(lab)
        fig.legend([handles[lab] for lab in labels], labels, loc="outside lower center",
                   ncols=min(len(labels), 5), fontsize=8, frameon=False)
        fig.suptitle(title)
        return Plot(key, title, _to_svg(fig))


def density_steps_plot(
    series: Mapping[str, Sequence[tuple[str, Sequence[tuple[float, float]]]]],
    *,
    title: str = "Overall density over training steps",
    key: str = "density_over_steps",
) -> Plot:
    """Step plot of overall density vs training step.

    ``series``: method -> [(line label, [(step, density), ...]), ...]; each
    method gets one colour, one legend entry.  Log-y when densities span > 10x.
    """
    lines = {m: [(lab, sorted(p for p in pts if _finite(p[0]) and _finite(p[1]))) for lab, pts in v]
             for m, v in series.items()}
    lines = {m: [(lab, pts) for lab, pts in v if pts] for m, v in lines.items()}
    lines = {m: v for m, v in lines.items() if v}
    if not lines:
        return Plot(key, title, None, "no mask updates recorded")
    with matplotlib.rc_context(_RC):
        fig, axes = _figure()
        ax = axes[0][0]
        order = list(lines)
        all_d = []
        for m, v in lines.items():
            c = method_color(m, order)
            for i, (_lab, pts) in enumerate(v):
                ax.step([p[0] for p in pts], [p[1] for p in pts], where="post", color=c, lw=1.2,
                        alpha=0.9, label=m if i == 0 else None)
                all_d += [p[1] for p in pts]
        pos = [d for d in all_d if d > 0]
        if pos and max(pos) / min(pos) > 10:
            ax.set_yscale("log")
            ax.yaxis.set_major_formatter(FuncFormatter(lambda y, _pos: f"{y:g}"))
        ax.set_xlabel("training step")
        ax.set_ylabel("overall density")
        ax.set_title(title)
        ax.legend(fontsize=8, frameon=False, loc="best")
        return Plot(key, title, _to_svg(fig))


_ID_RE = re.compile(r'\bid="([^"]+)"')


def inline_svg(svg: str, prefix: str) -> str:
    """SVG text ready to paste into HTML: no XML prolog/doctype/metadata, ids prefixed
    with ``prefix`` (and every ``#id`` reference rewritten) so figures never clash."""
    svg = re.sub(r"<\?xml[^>]*\?>\s*", "", svg)
    svg = re.sub(r"<!DOCTYPE[^>]*>\s*", "", svg, flags=re.S)
    svg = re.sub(r"<metadata>.*?</metadata>\s*", "", svg, flags=re.S)
    ids = set(_ID_RE.findall(svg))
    if ids:
        svg = _ID_RE.sub(lambda m: f'id="{prefix}-{m.group(1)}"', svg)
        svg = re.sub(r"url\(#([^)]+)\)", lambda m: f"url(#{prefix}-{m.group(1)})" if m.group(1) in ids else m.group(0), svg)
        svg = re.sub(r'((?:xlink:)?href)="#([^"]+)"',
                     lambda m: f'{m.group(1)}="#{prefix}-{m.group(2)}"' if m.group(2) in ids else m.group(0), svg)
    return svg.strip()
