"""The analysis of one dataset/model: its main table, the analysis tables that apply and its plots.

Between the tables/figures (what each piece computes) and build.py (what is loaded and written):
a :class:`GroupReport` is everything the pages and ``--json`` show for one dataset/model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from ..facts import describe_stored
from . import plots as P
from .comparisons import budget_table, comparison_table, dense_diff_table
from .figures import group_plots
from .grouping import group_rows, split_by_recipe
from .published import published_table
from .stats import finite
from .tables import Table, TextTable, by_dataset_model, density_key, main_table, method_sort_key, short_line, slug

#: more rows than this in one dataset/model: one section per training recipe, and a hint to use --sweep
MAX_ROWS = 6


@dataclass
class GroupReport:
    """One dataset/model: the main accuracy table, the analysis tables (difference to dense,
    GraNet vs the others, published numbers, budget: ``tables``, in that order, those that apply)
    and the plots."""

    dataset: str
    model: str
    slug: str
    main: Table
    tables: list[TextTable]
    plots: list[P.Plot]
    n_completed: int
    missing_metrics: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    #: the training recipe of this section ("" when the dataset/model is one section)
    recipe: str = ""

    def table(self, key: str) -> TextTable | None:
        return next((t for t in self.tables if t.key == key), None)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "dataset": self.dataset,
            "model": self.model,
            "recipe": self.recipe,
            "n_completed": self.n_completed,
            "main": self.main.to_json(),
        }
        for key in ("dense_diff", "comparisons", "published", "budget"):
            t = self.table(key)
            out[key] = t.data if t else []
        out["not_recorded"] = self.missing_metrics
        out["notes"] = self.notes
        return out


def analyse_group(
    dataset: str,
    model: str,
    g: list[dict],
    metric: str,
    published: list[dict[str, Any]],
    *,
    epochs: list[dict],
    masks: list[dict],
    layers: list[dict],
    with_plots: bool = True,
    interval: str = "ci",
    recipe: str = "",
    section_notes: tuple[str, ...] | list[str] = (),
) -> GroupReport:
    """The report of one dataset/model (one ``recipe`` of it, see :func:`sections`) from its completed
    runs ``g`` (``epochs``, ``masks`` and ``layers`` may hold other groups' rows too: each plot keeps
    its own runs')."""
    main = main_table(g, metric, interval)
    main.recipe = recipe
    main.notes[:0] = section_notes  # why the dataset/model is split: wherever the table is shown
    budget, missing = budget_table(main)
    tables = [
        t
        for t in (dense_diff_table(main), comparison_table(main), published_table(main, published, metric), budget)
        if t is not None
    ]
    notes = []
    if not any(r.method == "granet" for r in main.rows):
        notes.append("No GraNet row here, so no pairwise comparison with GraNet.")
    gplots: list[P.Plot] = []
    if with_plots:
        gids = {r["run_id"] for r in g}
        gplots = group_plots(
            g,
            [e for e in epochs if e["run_id"] in gids],
            [u for u in masks if u["run_id"] in gids],
            [x for x in layers if x["run_id"] in gids],
            metric,
            main,
        )
    name = slug(f"{dataset}-{model}" + (f"-{recipe}" if recipe else ""))
    return GroupReport(dataset, model, name, main, tables, gplots, len(g), missing, notes, recipe)


@dataclass
class Section:
    """The runs of one report section: a dataset/model, or one training recipe of it when it has more
    than MAX_ROWS configurations; ``notes`` say why it was split."""

    dataset: str
    model: str
    runs: list[dict]
    recipe: str = ""
    notes: list[str] = field(default_factory=list)


def sections(done: list[dict]) -> list[Section]:
    """Completed runs -> report sections: one per dataset/model; one per training recipe (model, data,
    optimiser, epochs: everything but the sparsity settings) when a dataset/model has more than MAX_ROWS
    configurations, so that rows are only ever compared within one recipe."""
    out: list[Section] = []
    for dataset, model, runs in by_dataset_model(done):
        n_rows = len(group_rows(runs, density_key))
        if n_rows <= MAX_ROWS:
            out.append(Section(dataset, model, runs))
            continue
        parts = split_by_recipe(runs)
        hint = (
            f"{dataset} / {model} has {n_rows} configurations"
            + (f" in {len(parts)} training recipes: one section per recipe" if len(parts) > 1 else "")
            + "; `granet report --sweep NAME` reports one sweep."
        )
        out.extend(Section(dataset, model, rs, recipe, [hint]) for recipe, rs in parts)
    return out


def not_completed(runs: list[dict]) -> list[dict]:
    """The runs that are not completed (running / failed / diverged), never averaged in: sorted by
    status, method, density and seed, each with its error on one line (``error_line``)."""
    return [
        {**r, "error_line": short_line(r["error"])}
        for r in sorted(
            (r for r in runs if r["status"] != "completed"),
            key=lambda r: (
                str(r["status"]),
                method_sort_key(str(r["method"])),
                r["target_density"] if finite(r["target_density"]) else 0.0,
                r["seed"] if r["seed"] is not None else 0,
                str(r["run_id"]),
            ),
        )
    ]


def configurations(groups: list[GroupReport]) -> list[dict[str, Any]]:
    """Every table row's full normalised spec (the seed and target density are the cell's own)."""
    out = []
    for g in groups:
        for row in g.main.groups:
            run = row.runs[0]
            try:
                spec = json.loads(run.get("spec_json") or "{}")
            except ValueError:
                spec = {}
            facts = None
            if isinstance(spec, dict):
                spec, facts = describe_stored(spec)  # the data fields that apply; the real data, steps, updates
                spec.pop("seed", None)
                spec.get("sparsity", {}).pop("final_density", None)
            label = g.main.run_labels.get(run["run_id"], row.label)
            seeds = sorted({r["seed"] for r in row.runs if r.get("seed") is not None})
            out.append(
                {
                    "group": f"{g.dataset} / {g.model}" + (f", recipe {g.recipe}" if g.recipe else ""),
                    "label": label,
                    "seeds": seeds,
                    "spec": json.dumps(spec, indent=2, sort_keys=True),
                    "facts": facts,
                    "hosts": sorted({str(r["host"]) for r in row.runs if r.get("host")}),
                }
            )
    return out
