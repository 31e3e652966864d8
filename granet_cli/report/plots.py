"""Report figures (matplotlib, no pyplot / no GUI backend), returned as SVG text.

Each ``*_plot`` function takes plain Python data prepared by ``figures.py`` and
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
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import matplotlib
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

from .stats import finite

if TYPE_CHECKING:
    from matplotlib.typing import RcKeyType

_RC: dict[RcKeyType, Any] = {
    "svg.fonttype": "none",
    "font.size": 9,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
}
# fixed method colours so a method keeps its colour across figures
_METHOD_COLORS = {
    "dense": "#000000",
    "granet": "#1f77b4",
    "granet_uniform": "#17becf",
    "rigl": "#d62728",
    "set": "#2ca02c",
    "gmp": "#ff7f0e",
    "gmp_uniform": "#bcbd22",
    "static": "#7f7f7f",
}
_EXTRA_COLORS = ("#9467bd", "#8c564b", "#e377c2", "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173")


@dataclass
class Plot:
    """One figure: a file-name stem, a title, the SVG text (None when there was no data) and a note."""

    key: str
    title: str
    svg: str | None = field(repr=False)
    note: str | None = None
    #: a longer explanation shown under the figure (default: the title)
    caption: str | None = None


def method_color(method: str, order: Sequence[str] = ()) -> str:
    if method in _METHOD_COLORS:
        return _METHOD_COLORS[method]
    if method.startswith("dense"):  # "dense (baseline)" and dense rows of other configurations
        return _METHOD_COLORS["dense"]
    extras = [m for m in order if m not in _METHOD_COLORS]
    idx = extras.index(method) if method in extras else sum(map(ord, method))
    return _EXTRA_COLORS[idx % len(_EXTRA_COLORS)]


def _figure(nrows: int = 1, ncols: int = 1, *, width: float = 6.4, height: float = 3.8, sharey: bool = False):
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False, sharey=sharey)
    return fig, axes


def _panel_grid(n: int, ncols: int, *, panel_w: float, panel_h: float, extra_h: float, sharey: bool = False):
    """A figure of `n` panels, `ncols` to a row: (figure, axes grid, the n panels' axes in order).
    Grid cells past the last panel are hidden; ``sharey``: one y axis for all panels."""
    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    w, h = min(panel_w * ncols + 0.6, 11), panel_h * nrows + extra_h
    fig, grid = _figure(nrows, ncols, width=w, height=h, sharey=sharey)
    cells = [ax for row in grid for ax in row]
    for ax in cells[n:]:
        ax.set_visible(False)
    return fig, grid, cells[:n]


#: while collect_pdfs() runs: a figure's SVG text -> the same figure as PDF
_PDF_SINK: ContextVar[dict[str, bytes] | None] = ContextVar("granet_pdf_sink", default=None)


@contextmanager
def collect_pdfs() -> Iterator[dict[str, bytes]]:
    """Inside the block every figure drawn is also saved as PDF (for ``report --latex``), into the
    dict yielded, keyed by the figure's SVG text (``Plot.svg``)."""
    sink: dict[str, bytes] = {}
    token = _PDF_SINK.set(sink)
    try:
        yield sink
    finally:
        _PDF_SINK.reset(token)


#: while collect_figures() runs: every figure drawn, in order (for tests and tools that inspect them)
_FIGURE_SINK: ContextVar[list[Figure] | None] = ContextVar("granet_figure_sink", default=None)


@contextmanager
def collect_figures() -> Iterator[list[Figure]]:
    """Inside the block every figure drawn is also appended to the list yielded (the matplotlib
    objects, drawn: legends, axes and ticks can be inspected)."""
    figures: list[Figure] = []
    token = _FIGURE_SINK.set(figures)
    try:
        yield figures
    finally:
        _FIGURE_SINK.reset(token)


def _to_svg(fig: Figure) -> str:
    figures = _FIGURE_SINK.get()
    if figures is not None:
        figures.append(fig)
    buf = io.StringIO()
    fig.savefig(buf, format="svg", metadata={"Date": None})
    svg = buf.getvalue()
    sink = _PDF_SINK.get()
    if sink is not None:
        pdf = io.BytesIO()
        fig.savefig(pdf, format="pdf", metadata={"CreationDate": None})
        sink[svg] = pdf.getvalue()
    return svg


def zoom_limits(values, *, pad_frac: float = 0.12, min_pad: float = 0.25) -> tuple[float, float] | None:
    """y-limits that frame ``values`` (means, means ± error bars, reference lines) with a margin:
    accuracy axes show the range the data spans, not 0-100."""
    vals = [v for v in values if finite(v)]
    if not vals:
        return None
    lo, hi = min(vals), max(vals)
    pad = max((hi - lo) * pad_frac, min_pad)
    return lo - pad, hi + pad


def _zoom(ax, values) -> None:
    lim = zoom_limits(values)
    if lim is not None:
        ax.set_ylim(*lim)


def accuracy_vs_density_plot(
    series: Mapping[str, Sequence[tuple[float, float, float]]],
    *,
    dense: tuple[float, float] | None = None,
    ylabel: str = "test accuracy (%)",
    title: str = "Accuracy vs density",
    key: str = "accuracy_vs_density",
) -> Plot:
    """Error-bar plot on a log-x axis.

    ``series``: method -> [(target_density, mean, err), ...] (values already in
    display units, e.g. percent; err the half-width of the 95 % CI over seeds).  ``dense``:
    (mean, err) of the dense baseline, drawn as a dashed horizontal line with a grey band of
    ±err (its 95 % CI), both in the legend.
    """
    pts = {m: [(d, mu, sd) for d, mu, sd in v if finite(d) and d > 0 and finite(mu)] for m, v in series.items()}
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
            ax.errorbar(
                [p[0] * dodge for p in v],
                [p[1] for p in v],
                yerr=[p[2] if finite(p[2]) else 0 for p in v],
                marker="o",
                ms=4,
                capsize=3,
                lw=1.4,
                label=m,
                color=method_color(m, order),
            )
        if dense is not None and finite(dense[0]):
            mu, sd = dense[0], dense[1] if finite(dense[1]) else 0.0
            ax.axhline(mu, color="black", ls="--", lw=1, label="dense")
            if sd > 0:
                ax.axhspan(mu - sd, mu + sd, color="black", alpha=0.08, lw=0, label="dense 95 % CI")
        xs = sorted({p[0] for v in pts.values() for p in v})
        if xs:
            ax.set_xscale("log")
            ax.set_xticks(xs)
            ax.set_xticklabels([f"{x:g}" for x in xs])
            ax.minorticks_off()
        ys = [p[1] + s * (p[2] if finite(p[2]) else 0.0) for v in pts.values() for p in v for s in (-1, 1)]
        if dense is not None and finite(dense[0]):
            ys += [
                dense[0] - (dense[1] if finite(dense[1]) else 0.0),
                dense[0] + (dense[1] if finite(dense[1]) else 0.0),
            ]
        _zoom(ax, ys)
        ax.set_xlabel("target density")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        _side_legend(fig, ax)
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
    zoom_after: float | None = None,
) -> Plot:
    """One subplot per panel (e.g. per target density), one line per method.

    ``panels``: panel title -> method -> [(x, mean, err), ...]; a ±err band (the 95 % CI
    over seeds) is drawn where err > 0; the panels share one y axis.  ``zoom_after`` (a fraction of the x range): the y axis frames
    the points from there on (e.g. 0.25: the first quarter of training, where accuracy
    is still climbing, is allowed to run off the bottom), so late differences stay visible.
    """
    panels = {p: {m: sorted(v) for m, v in series.items() if v} for p, series in panels.items()}
    panels = {p: s for p, s in panels.items() if s}
    if not panels:
        return Plot(key, title, None, empty_note)
    with matplotlib.rc_context(_RC):
        fig, axes, cells = _panel_grid(len(panels), ncols, panel_w=3.4, panel_h=2.8, extra_h=0.5, sharey=True)
        order = sorted({m for s in panels.values() for m in s})
        framed: list[float] = []
        for ax, (ptitle, series) in zip(cells, panels.items()):
            for m, v in series.items():
                xs = [p[0] for p in v]
                ys = [p[1] for p in v]
                c = method_color(m, order)
                ax.plot(xs, ys, lw=1.4, label=m, color=c)
                sds = [p[2] if finite(p[2]) else 0.0 for p in v]
                if any(s > 0 for s in sds):
                    ax.fill_between(
                        xs,
                        [y - s for y, s in zip(ys, sds)],
                        [y + s for y, s in zip(ys, sds)],
                        color=c,
                        alpha=0.12,
                        lw=0,
                    )
            if zoom_after is not None:
                xs_all = [p[0] for v in series.values() for p in v]
                cut = min(xs_all) + zoom_after * (max(xs_all) - min(xs_all))
                late = [p for v in series.values() for p in v if p[0] >= cut] or [p for v in series.values() for p in v]
                framed += [p[1] + s * (p[2] if finite(p[2]) else 0.0) for p in late for s in (-1, 1)]
            ax.set_title(ptitle, fontsize=9)
            ax.set_xlabel(xlabel)
            ax.set_ylabel(ylabel if ax.get_subplotspec().is_first_col() else "")  # shared y
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if framed:
            _zoom(cells[0], framed)  # the panels share y: one frame for all
        _fig_legend(fig, axes, ncols=5)
        fig.suptitle(title)
        return Plot(key, title, _to_svg(fig))


_LINESTYLES = ("-", "--", ":", "-.", (0, (5, 1)), (0, (3, 1, 1, 1, 1, 1)))


def density_steps_plot(
    series: Mapping[str, Sequence[tuple[str, Sequence[tuple[float, float]]]]],
    *,
    title: str = "Density over training steps",
    key: str = "density_over_steps",
    ylabel: str = "density",
) -> Plot:
    """Step plot of density vs training step.

    ``series``: method (or table row) -> [(line label, [(step, density), ...]), ...]; each
    method gets one colour, each of its lines (one per target density) its own line style and
    legend entry (the line label, e.g. ``granet d=0.1``).  Log-y when densities span > 10x.
    """
    lines = {
        m: [(lab, sorted(p for p in pts if finite(p[0]) and finite(p[1]))) for lab, pts in v] for m, v in series.items()
    }
    lines = {m: [(lab, pts) for lab, pts in v if pts] for m, v in lines.items()}
    lines = {m: v for m, v in lines.items() if v}
    if not lines:
        return Plot(key, title, None, "no mask updates recorded")
    with matplotlib.rc_context(_RC):
        fig, axes = _figure(width=7.6, height=4.2)
        ax = axes[0][0]
        order = list(lines)
        all_d = []
        for m, v in lines.items():
            c = method_color(m, order)
            for i, (lab, pts) in enumerate(v):
                ax.step(
                    [p[0] for p in pts],
                    [p[1] for p in pts],
                    where="post",
                    color=c,
                    lw=1.3,
                    ls=_LINESTYLES[i % len(_LINESTYLES)],
                    alpha=0.9,
                    label=lab,
                )
                all_d += [p[1] for p in pts]
        pos = [d for d in all_d if d > 0]
        if pos and max(pos) / min(pos) > 10:
            ax.set_yscale("log")
            _log_ticks(ax.yaxis)
        ax.set_xlabel("training step")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        _side_legend(fig, ax, fontsize=7)
        return Plot(key, title, _to_svg(fig))


def accuracy_vs_flops_plot(
    series: Mapping[str, Sequence[Mapping[str, Any]]],  # values: float or None, checked with finite
    *,
    dense: tuple[float, float] | None = None,
    ylabel: str = "test accuracy (%)",
    title: str = "Accuracy vs FLOPs",
    key: str = "accuracy_vs_flops",
    err_label: str = "95 % CI",
    inference: bool = True,
) -> Plot:
    """Two panels: accuracy vs training FLOPs and vs inference FLOPs (fractions of dense, log x);
    ``inference=False``: the training panel only (where inference FLOPs equal the density, that
    panel would repeat accuracy vs density).

    ``series``: table row -> [{"density", "train", "infer", "mean", "err"}, ...] (one point per
    target density; ``err`` the error-bar half-width, may be None).  ``dense``: (mean, err) of
    the dense baseline, drawn at x = 1 as a star with its error bar and as a dashed reference line."""
    pts = {m: sorted((p for p in v if finite(p.get("mean"))), key=lambda p: p["density"]) for m, v in series.items()}
    pts = {m: v for m, v in pts.items() if any(finite(p.get("train")) or finite(p.get("infer")) for p in v)}
    if not pts:
        return Plot(key, title, None, "no completed runs with FLOPs and an accuracy to plot")
    with matplotlib.rc_context(_RC):
        panels = [("train", "training FLOPs (fraction of dense)")]
        if inference:
            panels.append(("infer", "inference FLOPs (fraction of dense)"))
        fig, axes = _figure(1, len(panels), width=10.5 if inference else 7.0, height=4.0)
        order = list(pts)
        ys = []
        for ax, (xkey, xlabel) in zip(axes[0], panels):
            xs_all = []
            for m, v in pts.items():
                q = sorted((p for p in v if finite(p.get(xkey)) and p[xkey] > 0), key=lambda p: p[xkey])
                if not q:
                    continue
                errs = [p["err"] if finite(p.get("err")) else 0.0 for p in q]
                ax.errorbar(
                    [p[xkey] for p in q],
                    [p["mean"] for p in q],
                    yerr=errs,
                    marker="o",
                    ms=4,
                    capsize=3,
                    lw=1.3,
                    label=m,
                    color=method_color(m, order),
                )
                for p in q:
                    ax.annotate(
                        f"d={p['density']:g}",
                        (p[xkey], p["mean"]),
                        textcoords="offset points",
                        xytext=(4, 4),
                        fontsize=6.5,
                        color=method_color(m, order),
                    )
                xs_all += [p[xkey] for p in q]
                ys += [p["mean"] + s * e for p, e in zip(q, errs) for s in (-1, 1)]
            if dense is not None and finite(dense[0]):
                mu, err = dense[0], dense[1] if finite(dense[1]) else 0.0
                ax.axhline(mu, color="black", ls="--", lw=1, label="dense")
                ax.errorbar(
                    [1.0], [mu], yerr=[err], marker="*", ms=9, color="black", capsize=4, ls="none", elinewidth=1.4
                )
                xs_all.append(1.0)
                ys += [mu - err, mu + err]
            if xs_all:
                ax.set_xscale("log")
                lo, hi = min(xs_all), max(xs_all)
                ax.set_xlim(lo / 1.35, hi * 1.35)
                _log_ticks(ax.xaxis)
            ax.set_xlabel(xlabel)
            ax.set_ylabel(ylabel)
        for ax in axes[0]:
            _zoom(ax, ys)
        _side_legend(fig, axes[0][0])
        fig.suptitle(f"{title} (error bars: {err_label} over seeds)")
        return Plot(key, title, _to_svg(fig))


def mask_updates_plot(
    panels: Mapping[str, Mapping[str, Sequence[tuple[float, float, float]]]],
    *,
    title: str = "Weights dropped and regrown per mask update",
    key: str = "mask_updates",
    ncols: int = 3,
) -> Plot:
    """One subplot per panel (target density), per table row two lines over training steps:
    weights dropped (dashed, x) and regrown (solid, o).  ``panels``: title -> row -> [(step, dropped, grown)]."""
    panels = {
        t: {m: sorted(v) for m, v in rows.items() if v and any(p[1] or p[2] for p in v)} for t, rows in panels.items()
    }
    panels = {t: rows for t, rows in panels.items() if rows}
    if not panels:
        return Plot(key, title, None, "no drop-and-grow updates recorded (no method here regrows weights)")
    with matplotlib.rc_context(_RC):
        fig, axes, cells = _panel_grid(len(panels), ncols, panel_w=3.4, panel_h=2.8, extra_h=0.6)
        order = sorted({m for rows in panels.values() for m in rows})
        for ax, (ptitle, rows) in zip(cells, panels.items()):
            for m, v in rows.items():
                c = method_color(m, order)
                ax.plot([p[0] for p in v], [p[2] for p in v], color=c, lw=1.3, marker="o", ms=2.5, label=f"{m} grown")
                ax.plot(
                    [p[0] for p in v],
                    [p[1] for p in v],
                    color=c,
                    lw=1.0,
                    ls="--",
                    marker="x",
                    ms=3,
                    label=f"{m} dropped",
                )
            ax.set_title(ptitle, fontsize=9)
            ax.set_xlabel("training step")
            ax.set_ylabel("weights per update")
        _fig_legend(fig, axes)
        fig.suptitle(title)
        return Plot(key, title, _to_svg(fig))


def layer_density_plot(
    panels: Mapping[str, Mapping[str, Sequence[tuple[str, float]]]],
    *,
    title: str = "Final density per layer",
    key: str = "layer_density",
    ncols: int = 3,
) -> Plot:
    """One subplot per panel (target density), a bar per table row and sparsified layer (in model
    order; layers are categories, so no lines join them; rows side by side within a layer): how each method
    distributes the weights it keeps (ERK for RigL, what GraNet's global magnitude pruning leaves).
    ``panels``: title -> row -> [(layer name, density)]."""
    panels = {t: {m: list(v) for m, v in rows.items() if v} for t, rows in panels.items()}
    panels = {t: rows for t, rows in panels.items() if rows}
    if not panels:
        return Plot(key, title, None, "no per-layer densities recorded")
    with matplotlib.rc_context(_RC):
        fig, axes, cells = _panel_grid(len(panels), ncols, panel_w=3.6, panel_h=3.0, extra_h=0.9)
        order = sorted({m for rows in panels.values() for m in rows})
        for ax, (ptitle, rows) in zip(cells, panels.items()):
            names: list[str] = []
            for v in rows.values():
                for name, _d in v:
                    if name not in names:
                        names.append(name)
            pos = {name: k for k, name in enumerate(names)}
            width = 0.7 / max(1, len(rows))
            for i, (m, v) in enumerate(rows.items()):
                ax.bar(
                    [pos[name] + (i - (len(rows) - 1) / 2) * width for name, _d in v],
                    [d for _n, d in v],
                    width=width,
                    label=m,
                    color=method_color(m, order),
                )
            step = max(1, math.ceil(len(names) / 16))
            ax.set_xticks(range(0, len(names), step))
            ax.set_xticklabels([names[k] for k in range(0, len(names), step)], rotation=60, ha="right", fontsize=6)
            ax.set_ylim(0, min(1.05, max(d for v in rows.values() for _n, d in v) * 1.15 + 0.02))
            ax.set_title(ptitle, fontsize=9)
            ax.set_ylabel("layer density")
        _fig_legend(fig, axes)
        fig.suptitle(title)
        return Plot(key, title, _to_svg(fig))


def _log_ticks(axis) -> None:
    """A log axis labelled at 1, 2 and 5 of every decade (not only at 0.1 and 1)."""
    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda x, _pos: f"{x:g}"))
    axis.set_minor_locator(LogLocator(base=10, subs=tuple(range(1, 10))))
    axis.set_minor_formatter(NullFormatter())


#: a legend right of the axes only while it fits there: at most this many entries of this many characters
SIDE_LEGEND_MAX = (12, 28)


def _side_legend(fig: Figure, ax, fontsize: float = 8) -> None:
    """The axes' legend outside them (never over the data): right of the panels while it is short,
    else below them (many or long labels would squeeze the axes to nothing)."""
    handles, labels = ax.get_legend_handles_labels()
    if not labels:
        return
    if len(labels) <= SIDE_LEGEND_MAX[0] and max(map(len, labels)) <= SIDE_LEGEND_MAX[1]:
        fig.legend(handles, labels, loc="outside right upper", fontsize=fontsize, frameon=False)
    else:
        _legend_below(fig, handles, labels, fontsize=fontsize)


def _legend_below(fig: Figure, handles, labels: list[str], *, ncols: int = 4, fontsize: float = 8) -> None:
    """A legend below the panels: as many columns as the labels' length lets fit the figure's width,
    and the figure made taller by the legend's rows, so the axes keep their size."""
    width_in, height_in = fig.get_size_inches()
    chars = max(map(len, labels)) + 4  # the handle and the gap
    fit = max(1, int(width_in * 72 / (fontsize * 0.6 * chars)))
    cols = max(1, min(len(labels), ncols, fit))
    rows = math.ceil(len(labels) / cols)
    fig.set_size_inches(width_in, height_in + rows * fontsize * 1.5 / 72)
    fig.legend(handles, labels, loc="outside lower center", ncols=cols, fontsize=fontsize, frameon=False)


def _fig_legend(fig: Figure, axes, ncols: int = 4) -> None:
    """One legend for the whole figure, below the panels, each label once."""
    handles, labels = {}, []
    for row in axes:
        for ax in row:
            for h, lab in zip(*ax.get_legend_handles_labels()):
                if lab not in handles:
                    handles[lab] = h
                    labels.append(lab)
    if labels:
        _legend_below(fig, [handles[lab] for lab in labels], labels, ncols=ncols)


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
        svg = re.sub(
            r"url\(#([^)]+)\)", lambda m: f"url(#{prefix}-{m.group(1)})" if m.group(1) in ids else m.group(0), svg
        )
        svg = re.sub(
            r'((?:xlink:)?href)="#([^"]+)"',
            lambda m: f'{m.group(1)}="#{prefix}-{m.group(2)}"' if m.group(2) in ids else m.group(0),
            svg,
        )
    return svg.strip()
