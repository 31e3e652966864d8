"""The report's figures (issue 21), checked on the matplotlib objects drawn (plots.collect_figures):
no matplotlib warning, legends outside the axes, epoch panels share y, bands are the 95 % CI over
seeds (recomputed here from the t table), the dense star's error bar is drawn, log axes labelled
between decades, layer densities as bars (no lines), and no inference panel where inference FLOPs equal density."""

from __future__ import annotations

import math
import statistics
import warnings

from matplotlib.collections import PolyCollection
from matplotlib.colors import to_hex

from granet_cli.report import build_report
from granet_cli.report import plots as P

from .test_report import ACC, T975, make_db
from .test_report_many_configs import runs_to_write, write_db


def _render(db, out):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. "constrained_layout not applied" fails the test
        with P.collect_figures() as figs:
            res = build_report(db, out_dir=out, fmt="md")
    return res, {f.get_suptitle() or f.axes[0].get_title(): f for f in figs}


def _overlaps(a, b) -> bool:
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


def _check_legends_outside(fig) -> None:
    renderer = fig.canvas.get_renderer()
    legends = list(fig.legends) + [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]
    for leg in legends:
        box = leg.get_window_extent(renderer)
        for ax in fig.axes:
            if ax.get_visible():
                assert not _overlaps(box, ax.get_window_extent(renderer)), fig.get_suptitle()


def test_figures_no_warnings_and_legends_outside(tmp_path):
    make_db(tmp_path / "a.duckdb")
    res, figs = _render(tmp_path / "a.duckdb", tmp_path / "a")
    db2 = tmp_path / "b.duckdb"
    write_db(db2, runs_to_write((0.01, 0.05, 0.1), ("granet", "rigl")))
    _res2, figs2 = _render(db2, tmp_path / "b")
    assert figs and figs2
    for fig in [*figs.values(), *figs2.values()]:
        _check_legends_outside(fig)
    plots = {p.key: p for g in res.groups for p in g.plots}
    for key in ("accuracy_vs_flops", "accuracy_vs_density", "accuracy_over_epochs"):
        caption = plots[key].caption or ""
        assert "95 % confidence interval of the mean over seeds" in caption, key
    assert not any("std" in (p.caption or "") for p in plots.values())
    assert "grey band: its 95 % confidence interval" in (plots["accuracy_vs_density"].caption or "")
    legend = figs["Final test accuracy vs target density"].legends[0]
    assert "dense 95 % CI" in [t.get_text() for t in legend.get_texts()]


def test_epoch_panels_share_y_and_bands_are_ci(tmp_path):
    make_db(tmp_path / "a.duckdb")
    _res, figs = _render(tmp_path / "a.duckdb", tmp_path / "a")
    fig = figs["Test accuracy over epochs"]
    panels = [ax for ax in fig.axes if ax.get_visible() and ax.get_title().startswith("density")]
    assert len(panels) == 2
    assert panels[0].get_shared_y_axes().joined(panels[0], panels[1])
    assert panels[0].get_ylim() == panels[1].get_ylim()
    # granet at density 0.1, last epoch (3): test_acc = final acc; band = mean ± t(0.975, 2) s / sqrt(3)
    vals = [100 * a for a in ACC[("granet", 0.1)]]
    half = T975[2] * statistics.stdev(vals) / math.sqrt(3)
    ax = next(a for a in panels if a.get_title() == "density 0.1")
    bands = [c for c in ax.collections if isinstance(c, PolyCollection) and to_hex(c.get_facecolor()[0]) == "#1f77b4"]
    assert len(bands) == 1
    ys = sorted(y for x, y in bands[0].get_paths()[0].vertices if abs(x - 3) < 1e-9)
    assert math.isclose(ys[0], statistics.mean(vals) - half, rel_tol=1e-9)
    assert math.isclose(ys[-1], statistics.mean(vals) + half, rel_tol=1e-9)


def test_flops_figure_star_ticks_and_no_repeated_inference_panel(tmp_path):
    make_db(tmp_path / "a.duckdb")  # inference_flops_frac == target density, as for an MLP
    res, figs = _render(tmp_path / "a.duckdb", tmp_path / "a")
    fig = figs["Final test accuracy vs FLOPs (error bars: 95 % CI over seeds)"]
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert len(axes) == 1 and axes[0].get_xlabel().startswith("training FLOPs")
    caption = next(p.caption for g in res.groups for p in g.plots if p.key == "accuracy_vs_flops")
    assert "No inference panel" in (caption or "")
    ax = axes[0]
    star = [c for c in ax.containers if c.lines[0] is not None and c.lines[0].get_marker() == "*"]
    assert len(star) == 1
    bars = star[0].lines[2][0]
    assert bars.get_linewidth()[0] > 0  # the dense baseline's error bar is drawn
    dense = [100 * a for a in ACC[("dense", 1.0)]]
    (seg,) = bars.get_segments()
    assert math.isclose(seg[1][1] - seg[0][1], 2 * T975[2] * statistics.stdev(dense) / math.sqrt(3), rel_tol=1e-9)
    lo, hi = ax.get_xlim()
    labels = {t.get_text() for t in ax.get_xticklabels() if t.get_text() and lo <= t.get_position()[0] <= hi}
    assert len(labels) > 2 and labels - {"0.1", "1"}, labels  # labelled between the decades too

    both = P.accuracy_vs_flops_plot(
        {"granet": [{"density": 0.1, "train": 0.2, "infer": 0.3, "mean": 90.0, "err": 1.0}]}, inference=True
    )
    assert both.svg and "inference FLOPs" in both.svg


def test_layer_density_bars_not_lines():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with P.collect_figures() as figs:
            plot = P.layer_density_plot(
                {"density 0.1": {"granet": [("fc1", 0.2), ("fc2", 0.05)], "rigl": [("fc1", 0.1), ("fc2", 0.1)]}}
            )
    assert plot.svg
    (ax,) = [a for a in figs[0].axes if a.get_visible()]
    assert not [ln for ln in ax.get_lines() if len(ln.get_xdata()) > 1]  # no line across the layers
    bars = {c.get_label(): [(p.get_x() + p.get_width() / 2, p.get_height()) for p in c] for c in ax.containers}
    assert {m: [h for _x, h in v] for m, v in bars.items()} == {"granet": [0.2, 0.05], "rigl": [0.1, 0.1]}
    assert all(round(x) == k for v in bars.values() for k, (x, _h) in enumerate(v))  # beside each layer's tick
    assert [t.get_text() for t in ax.get_xticklabels()] == ["fc1", "fc2"]


def test_many_long_labels_no_warning_and_legends_outside():
    """Six configurations with long labels, 18 density lines: no 'constrained_layout not applied'
    (the legend moves below the axes and the figure grows), every legend outside every axes."""
    labels = [f"granet (optim.lr=0.0{i}, sparsity.drop_fraction=0.{i}, optim.epochs=3{i})" for i in range(1, 7)]
    pts = {lab: [(0.05, 90.0 + i, 1.0), (0.1, 91.0 + i, 1.0), (0.2, 92.0, 0.5)] for i, lab in enumerate(labels)}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with P.collect_figures() as figs:
            plots = [
                P.accuracy_vs_density_plot(pts, dense=(95.0, 0.5)),
                P.density_steps_plot(
                    {k: [(f"{k} d={d}", [(0, 1.0), (100, d)]) for d in (0.05, 0.1, 0.2)] for k in labels}
                ),
                P.curves_plot(
                    {f"density {d}": {k: [(e, 80.0 + e, 1.0) for e in range(30)] for k in labels} for d in (0.1, 0.2)}
                ),
            ]
    assert all(p.svg for p in plots) and len(figs) == 3
    for fig in figs:
        _check_legends_outside(fig)
        assert all(ax.get_window_extent().height > 50 for ax in fig.axes if ax.get_visible())
