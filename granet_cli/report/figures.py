"""The plots of one dataset/model: the data each figure draws, taken from the main table and the
runs' epochs, mask updates and layers, handed to plots.py as plain Python data.

Apart from plots.py, which only draws (matplotlib), so that what a figure shows and how it is drawn
can be read and tested separately (``density_lines`` is tested on its own).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from . import plots as P
from . import stats as S
from .stats import finite
from .tables import METRICS, Table, density_key, fmt_density

#: at most this many density panels in the epochs plot (else min / median / max)
MAX_EPOCH_PANELS = 6
#: the one convention of every figure's bands and error bars, said in each caption
BANDS = "bands and error bars: 95 % confidence interval of the mean over seeds (t-based; none for one seed)"
#: inference FLOPs within this relative tolerance of the target density (MLPs): no inference panel
SAME_AS_DENSITY = 0.02


def _pick_panels(densities: list[float]) -> list[float]:
    if len(densities) <= MAX_EPOCH_PANELS:
        return densities
    return sorted({densities[0], densities[len(densities) // 2], densities[-1]})


def _init_density(run: dict) -> float | None:
    """The density a run's masks start from: the spec's init_density (1.0 for GMP and dense
    starts, GraNet's s_i start, the target for RigL/SET/static)."""
    try:
        spec = json.loads(run.get("spec_json") or "{}")
    except ValueError:
        spec = {}
    v = spec.get("sparsity", {}).get("init_density") if isinstance(spec, dict) else None
    if finite(v):
        return float(v)
    if str(run.get("method")) in ("gmp", "gmp_uniform", "dense"):
        return 1.0
    return float(run["target_density"]) if finite(run.get("target_density")) else None


def _natural_key(name: str) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(name))]


def _lowest_seed(by_run: dict[str, dict], labels: dict[str, str], having: set[str]) -> dict[tuple[str, Any], dict]:
    """(row label, density) -> the run with the lowest seed among those in ``having``."""
    chosen: dict[tuple[str, Any], dict] = {}
    for r in sorted(by_run.values(), key=lambda r: (r["seed"] if r["seed"] is not None else 1 << 30, r["run_id"])):
        k = (labels[r["run_id"]], density_key(r["target_density"]))
        if r["run_id"] in having and k not in chosen:
            chosen[k] = r
    return chosen


def _per_epoch_panels(
    main: Table, by_run: dict[str, dict], epochs: list[dict], column: str, scale: float, *, include_baseline: bool
) -> dict[str, dict[str, list[tuple[float, float, float]]]]:
    """density panel -> row label -> [(epoch, mean, ci95)] of an epochs column over the cell's seeds."""
    labels = main.run_labels
    order = {row.label: i for i, row in enumerate(main.rows)}
    baseline = {row.label for row in main.rows if row.baseline}
    per: dict[tuple[str, float | None], dict[int, list[float]]] = {}
    for e in epochs:
        r = by_run.get(e["run_id"])
        if r is None or not finite(e.get(column)) or e["epoch"] is None:
            continue
        per.setdefault((labels[r["run_id"]], density_key(r["target_density"])), {}).setdefault(
            int(e["epoch"]), []
        ).append(e[column])
    panels: dict[str, dict[str, list[tuple[float, float, float]]]] = {}
    for d in _pick_panels(main.densities):
        panel: dict[str, list[tuple[float, float, float]]] = {}
        for (m, dk), curve in sorted(per.items(), key=lambda kv: order.get(kv[0][0], len(order))):
            if m in baseline and not include_baseline:
                continue
            if dk == d or m in baseline:
                panel[m] = [
                    (ep, a.mean * scale, (a.ci95 or 0.0) * scale)
                    for ep, vals in sorted(curve.items())
                    if (a := S.summary(vals))
                ]
        panels[f"density {fmt_density(d)}"] = panel
    if not any(m not in baseline for p in panels.values() for m in p):
        return {}
    return panels


def density_lines(
    main: Table, by_run: dict[str, dict], masks: list[dict], epochs: list[dict]
) -> dict[str, list[tuple[str, list[tuple[float, float]]]]]:
    """row label -> [(line label "<row> d=<target>", [(step, density), ...])], one line per target
    density (its lowest seed with mask updates): (0, initial density) first unless an update was
    recorded at step 0, then every mask update, then the last epoch's density if it comes later."""
    labels = main.run_labels
    order = {row.label: i for i, row in enumerate(main.rows)}
    by_mr: dict[str, list[tuple[float, float]]] = {}
    for u in masks:
        if finite(u["step"]) and finite(u["density"]):
            by_mr.setdefault(u["run_id"], []).append((u["step"], u["density"]))
    last_epoch: dict[str, tuple[float, float]] = {}
    for e in epochs:
        if not (finite(e.get("step")) and finite(e.get("density"))):
            continue
        if e["run_id"] not in last_epoch or e["step"] >= last_epoch[e["run_id"]][0]:
            last_epoch[e["run_id"]] = (e["step"], e["density"])
    chosen = _lowest_seed(by_run, labels, set(by_mr))
    dseries: dict[str, list[tuple[str, list[tuple[float, float]]]]] = {}
    for (m, dk), r in sorted(chosen.items(), key=lambda kv: (order.get(kv[0][0], len(order)), kv[0][1] or 0)):
        pts = sorted(by_mr[r["run_id"]])
        start = _init_density(r)
        if start is not None and pts[0][0] > 0:
            pts.insert(0, (0, start))
        end = last_epoch.get(r["run_id"])
        if end is not None and end[0] > pts[-1][0]:
            pts.append(end)
        dseries.setdefault(m, []).append((f"{m} d={fmt_density(dk) if dk is not None else '?'}", pts))
    return dseries


@dataclass
class _PlotInputs:
    """What the plots of one group draw from: the main table and the rows it aggregates."""

    main: Table
    metric: str
    runs: list[dict]
    epochs: list[dict]
    masks: list[dict]
    layers: list[dict]

    @property
    def name(self) -> str:
        return METRICS[self.metric].split(" (")[0]

    @property
    def dense(self) -> tuple[float, float] | None:
        for r in self.main.rows:
            c = r.cells[0] if r.baseline and r.cells else None
            if c:
                return (c.mean * 100, (c.ci95 or 0.0) * 100)
        return None

    @property
    def labels(self) -> dict:
        return self.main.run_labels  # only the runs the table aggregates, under their row's label

    @property
    def by_run(self) -> dict[str, dict]:
        return {r["run_id"]: r for r in self.runs if r["run_id"] in self.labels}

    @property
    def order(self) -> dict[str, int]:
        return {row.label: i for i, row in enumerate(self.main.rows)}


def group_plots(
    runs: list[dict], epochs: list[dict], masks: list[dict], layers: list[dict], metric: str, main: Table
) -> list[P.Plot]:
    """The plots of one dataset/model, in report order."""
    inputs = _PlotInputs(main, metric, runs, epochs, masks, layers)
    return [plot(inputs) for plot in _PLOTS]


def _plot_accuracy_vs_flops(inputs: _PlotInputs) -> P.Plot:
    """Accuracy vs training / inference FLOPs: a point per table row x density."""
    main, metric, name, dense = inputs.main, inputs.metric, inputs.name, inputs.dense
    fseries: dict[str, list[dict[str, float | None]]] = {}
    for r in main.rows:
        if r.baseline:
            continue
        pts = []
        for d, c in zip(main.densities, r.cells):
            if c is None:
                continue
            tr = S.summary([x.get("train_flops_frac") for x in c.runs])
            inf = S.summary([x.get("inference_flops_frac") for x in c.runs])
            pts.append(
                {
                    "density": d,
                    "train": tr.mean if tr else None,
                    "infer": inf.mean if inf else None,
                    "mean": c.mean * 100,
                    "err": (c.ci95 or 0.0) * 100,
                }
            )
        fseries[r.label] = pts
    inference = not _inference_is_density(fseries)
    plot = P.accuracy_vs_flops_plot(
        fseries, dense=dense, ylabel=METRICS[metric], title=f"{name} vs FLOPs", inference=inference
    )
    plot.caption = (
        f"{name} against the cost: a point per table row and target density d (mean over seeds; {BANDS}), "
        + (
            "at the mean training FLOPs (left) and inference FLOPs (right) as fractions of dense"
            if inference
            else "at the mean training FLOPs as a fraction of dense. No inference panel: this model's inference "
            "FLOPs equal its density (every weight is used once per input, as in an MLP), so it would repeat "
            "accuracy vs density"
        )
        + "; the dashed line and the star (with its error bar) at 1 are the dense baseline."
    )
    return plot


def _inference_is_density(fseries: dict[str, list[dict[str, float | None]]]) -> bool:
    """Every point's inference FLOPs fraction equals its target density (within SAME_AS_DENSITY)."""
    pts = [(i, d) for v in fseries.values() for p in v if finite(i := p.get("infer")) and finite(d := p.get("density"))]
    return bool(pts) and all(abs(i - d) <= SAME_AS_DENSITY * d for i, d in pts)


def _plot_accuracy_vs_density(inputs: _PlotInputs) -> P.Plot:
    """Accuracy vs density (from the main table's aggregates)."""
    main, metric, name, dense = inputs.main, inputs.metric, inputs.name, inputs.dense
    series = {
        r.label: [(d, c.mean * 100, (c.ci95 or 0.0) * 100) for d, c in zip(main.densities, r.cells) if c]
        for r in main.rows
        if not r.baseline
    }
    plot = P.accuracy_vs_density_plot(series, dense=dense, ylabel=METRICS[metric], title=f"{name} vs target density")
    plot.caption = (
        f"{name} vs target density: mean over seeds ({BANDS}); dashed line: the dense baseline's mean, grey "
        "band: its 95 % confidence interval."
    )
    return plot


def _plot_accuracy_over_epochs(inputs: _PlotInputs) -> P.Plot:
    """Test accuracy over epochs, one panel per density, one line per table row."""
    main, epochs, by_run = inputs.main, inputs.epochs, inputs.by_run
    panels = _per_epoch_panels(main, by_run, epochs, "test_acc", 100.0, include_baseline=True)
    plot = P.curves_plot(panels, zoom_after=0.25, title="Test accuracy over epochs")
    plot.caption = (
        f"Test accuracy over epochs, mean over seeds ({BANDS}), one panel per target density; the panels "
        "share the y axis, which frames the last three quarters of training (the first epochs may run off "
        "the bottom)."
    )
    return plot


def _plot_density_over_steps(inputs: _PlotInputs) -> P.Plot:
    """Density of the sparsified layers over training steps, from its initial density; lowest seed per cell."""
    main, epochs, masks, by_run = inputs.main, inputs.epochs, inputs.masks, inputs.by_run
    dseries = density_lines(main, by_run, masks, epochs)
    plot = P.density_steps_plot(dseries, ylabel="density of the sparsified layers", title="Density over training steps")
    plot.caption = (
        "Density of the sparsified layers over training steps, from the initial density at step 0 "
        "(1.0 for GMP, init_density for GraNet, the target for RigL/SET/static) through every "
        "pruning and drop-and-grow update to the end of training; lowest seed per cell, one line "
        "per target density d."
    )
    return plot


def _plot_itop(inputs: _PlotInputs) -> P.Plot:
    """ITOP rate over epochs."""
    main, epochs, by_run = inputs.main, inputs.epochs, inputs.by_run
    ipanels = _per_epoch_panels(main, by_run, epochs, "itop_rate", 1.0, include_baseline=False)
    plot = P.curves_plot(
        ipanels,
        ylabel="ITOP rate",
        key="itop_over_epochs",
        title="ITOP rate over epochs",
        empty_note="no ITOP rate recorded",
    )
    plot.caption = (
        "In-time over-parameterisation: the fraction of the sparsified weights that have ever been "
        f"active, over epochs (mean over seeds; {BANDS}), one panel per target density, sharing the y axis."
    )
    return plot


def _plot_mask_updates(inputs: _PlotInputs) -> P.Plot:
    """Weights dropped / regrown per mask update."""
    main, masks, labels, by_run, order = inputs.main, inputs.masks, inputs.labels, inputs.by_run, inputs.order
    by_mu: dict[str, list[tuple[float, float, float]]] = {}
    for u in masks:
        if finite(u["step"]) and finite(u.get("dropped")) and finite(u.get("grown")) and (u["dropped"] or u["grown"]):
            by_mu.setdefault(u["run_id"], []).append((u["step"], u["dropped"], u["grown"]))
    chosen = _lowest_seed(by_run, labels, set(by_mu))
    mpanels: dict[str, dict[str, list[tuple[float, float, float]]]] = {}
    for d in _pick_panels(main.densities):
        mpanels[f"density {fmt_density(d)}"] = {
            m: by_mu[r["run_id"]]
            for (m, dk), r in sorted(chosen.items(), key=lambda kv: order.get(kv[0][0], 99))
            if dk == d
        }
    plot = P.mask_updates_plot(mpanels, title="Weights dropped and regrown per mask update")
    plot.caption = (
        "Weights dropped (dashed) and regrown (solid) at each drop-and-grow update, lowest seed per "
        "cell, one panel per target density; pruning-only steps (GMP, GraNet's schedule) are not "
        "drawn. Regrown counts only new connections (inactive before the update); a weight dropped and "
        "re-selected in the same update keeps its value and counts as dropped, not as regrown "
        "(dropped = regrown + re-selected; mask_updates.reselected holds that count)."
    )
    return plot


def _plot_layer_density(inputs: _PlotInputs) -> P.Plot:
    """Final density per layer."""
    main, layers, labels, by_run, order = inputs.main, inputs.layers, inputs.labels, inputs.by_run, inputs.order
    by_layer: dict[str, list[tuple[str, float]]] = {}
    for lay in layers:
        if finite(lay.get("achieved_density")):
            by_layer.setdefault(lay["run_id"], []).append((str(lay["name"]), float(lay["achieved_density"])))
    chosen = _lowest_seed(by_run, labels, set(by_layer))
    lpanels: dict[str, dict[str, list[tuple[str, float]]]] = {}
    for d in _pick_panels(main.densities):
        lpanels[f"density {fmt_density(d)}"] = {
            m: sorted(by_layer[r["run_id"]], key=lambda x: _natural_key(x[0]))
            for (m, dk), r in sorted(chosen.items(), key=lambda kv: order.get(kv[0][0], 99))
            if dk == d and m not in {row.label for row in main.rows if row.baseline}
        }
    plot = P.layer_density_plot(lpanels, title="Final density per layer")
    plot.caption = (
        "The density each sparsified layer ends with (lowest seed per cell, layers in name order, one "
        "bar per row and layer: layers are categories, so no line joins them): "
        "the ERK distribution RigL/SET/static keep from initialisation against what global "
        "magnitude pruning (GraNet, GMP) leaves."
    )
    return plot


#: the plots of a group, in report order
_PLOTS = (
    _plot_accuracy_vs_flops,
    _plot_accuracy_vs_density,
    _plot_accuracy_over_epochs,
    _plot_density_over_steps,
    _plot_itop,
    _plot_mask_updates,
    _plot_layer_density,
)
