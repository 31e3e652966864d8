"""Which runs are one experiment: the grouping rule behind every report cell.

A report cell may only pool runs whose normalised specs are identical except for the seed
(and the column's density). Runs of other configurations of the same method become rows of
their own, labelled by the fields that tell them apart, e.g. ``granet (optim.epochs=2)``.
A seed run several times counts once: its latest completed run.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

from ..sparse.methods import PRESET_FIELDS

#: never part of a row's identity: cosmetic, the repetition index, or the table's column
IGNORED = ("name", "seed", "sparsity.final_density")
#: runtime fields: where and how fast a run computes, never what (DESIGN "Results integrity"): they
#: never split a cell or label a row (also any field under a section named here, e.g. trackers.*)
RUNTIME = (
    "device",
    "deterministic",
    "channels_last",
    "data.root",
    "data.download",
    "data.num_workers",
    "data.workers",
    "data.test_batch_size",
)
RUNTIME_SECTIONS = ("trackers", "tracking", "runtime", "paths")
#: sparsity fields of drop-and-grow, of the gradual pruning schedule, of mask updates at all
DROP_AND_GROW = ("drop_fraction", "drop_fraction_min", "growth", "prune", "prune_threshold", "redistribution")
SCHEDULE = ("init_prune_epoch", "final_prune_epoch")
#: fields a method preset decides: different across methods by design, so they only label
#: rows when they differ between configurations of the same method
METHOD_FIELDS = ("sparsity.method", *(f"sparsity.{f}" for f in PRESET_FIELDS))
FINAL = "=final_density"


def flatten(spec: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"optim": {"lr": 0.1}} -> {"optim.lr": 0.1}; lists become JSON text (hashable, printable)."""
    out: dict[str, Any] = {}
    for key, value in spec.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, f"{path}."))
        else:
            out[path] = json.dumps(value) if isinstance(value, list) else value
    return out


def config_fields(spec_json: str | None) -> dict[str, Any]:
    """The fields that identify a run's row: its spec minus seed, name and target density.

    An init_density equal to the target (RigL, SET, static) is recorded as "=final_density",
    so those runs at different densities still share one row."""
    try:
        spec = json.loads(spec_json) if spec_json else {}
    except (TypeError, ValueError):
        spec = {}
    flat = flatten(spec) if isinstance(spec, dict) else {}
    final = flat.get("sparsity.final_density")
    if final is not None and flat.get("sparsity.init_density") == final:
        flat["sparsity.init_density"] = FINAL
    drop = set(IGNORED) | set(RUNTIME) | not_applicable(flat)
    return {k: v for k, v in flat.items() if k not in drop and k.split(".", 1)[0] not in RUNTIME_SECTIONS}


def not_applicable(flat: dict[str, Any]) -> set[str]:
    """The sparsity fields that cannot change a run with these settings (a dense run's prune epochs,
    drop fraction or init density; the prune epochs of a method without a pruning schedule; the
    drop-and-grow fields of a method without drop-and-grow; ...): ignored for grouping and labels."""
    sp = {k.removeprefix("sparsity."): v for k, v in flat.items() if k.startswith("sparsity.")}
    if sp.get("method") == "dense" or sp.get("sparse_init") == "dense":
        return {f"sparsity.{k}" for k in sp if k != "method"}
    out: set[str] = set()
    init = str(sp.get("sparse_init") or "")
    schedule = sp.get("pruning_schedule") not in (None, "none")
    dag = bool(sp.get("drop_and_grow"))
    if not schedule:
        out.update(SCHEDULE)
        if not init.startswith("prune"):
            out.add("prune_score")
    if not dag:
        out.update(("update_end_epoch", *DROP_AND_GROW))
        if "grow" in init:
            out.discard("growth")
    elif sp.get("prune") != "threshold":
        out.add("prune_threshold")
    if not schedule and not dag:
        out.add("update_frequency")
    if not init.startswith("prune"):
        out.add("init_prune_fraction")
    if init not in ("ERK", "ER"):
        out.add("erk_power_scale")
    return {f"sparsity.{k}" for k in out if k in sp}


def _fmt(value: Any) -> str:
    if isinstance(value, float) and math.isfinite(value):
        return f"{value:g}"
    return str(value)


@dataclass
class RowGroup:
    """One table row: a method in one configuration, with its runs (one per seed and density)."""

    method: str
    fields: dict[str, Any]
    runs: list[dict] = field(default_factory=list)
    varied: list[str] = field(default_factory=list)

    @property
    def key(self) -> tuple:
        return (self.method, tuple(sorted((k, _fmt(v)) for k, v in self.fields.items())))

    @property
    def label(self) -> str:
        if not self.varied:
            return self.method
        shown = [k for k in self.varied if k in self.fields]
        if not shown:
            return self.method
        return f"{self.method} ({', '.join(f'{k}={_fmt(self.fields[k])}' for k in shown)})"

    @property
    def config(self) -> dict[str, Any]:
        """The row's full configuration (for the provenance appendix)."""
        return dict(self.fields)


def _recency(run: dict) -> tuple:
    return (str(run.get("finished_at") or ""), str(run.get("started_at") or ""), str(run.get("run_id")))


def latest_per_seed(runs: list[dict], density_key) -> list[dict]:
    """A seed run several times at one density counts once: its latest completed run."""
    latest: dict[tuple, dict] = {}
    for r in runs:
        k = (density_key(r.get("target_density")), r.get("seed"))
        if k not in latest or _recency(r) > _recency(latest[k]):
            latest[k] = r
    return sorted(latest.values(), key=lambda r: str(r.get("run_id")))


def group_rows(runs: list[dict], density_key) -> list[RowGroup]:
    """Completed runs of one dataset/model -> one RowGroup per (method, configuration)."""
    groups: dict[tuple, RowGroup] = {}
    for r in runs:
        g = RowGroup(str(r["method"]), config_fields(r.get("spec_json")))
        groups.setdefault(g.key, g).runs.append(r)
    rows = list(groups.values())
    for g in rows:
        g.runs = latest_per_seed(g.runs, density_key)
    shared = _differing([g.fields for g in rows], exclude=METHOD_FIELDS)
    for g in rows:
        same_method = [o.fields for o in rows if o.method == g.method]
        g.varied = sorted(set(shared) | set(_differing(same_method)))
    return rows


def recipe_of(fields: dict[str, Any]) -> dict[str, Any]:
    """A configuration minus everything sparsity decides: the training recipe (model, data, optimiser,
    epochs, ...) that rows must share to be compared, and that a dense baseline must share."""
    return {k: v for k, v in fields.items() if k not in METHOD_FIELDS and not k.startswith("sparsity.")}


def recipe_key(fields: dict[str, Any]) -> tuple:
    return tuple(sorted((k, _fmt(v)) for k, v in recipe_of(fields).items()))


def split_by_recipe(runs: list[dict]) -> list[tuple[str, list[dict]]]:
    """``runs`` by training recipe, each with a label naming the recipe fields that tell it from the
    others (e.g. ``optim.lr=0.05``); one ("", runs) when they share one recipe."""
    recipes: dict[tuple, tuple[dict[str, Any], list[dict]]] = {}
    for r in runs:
        fields = recipe_of(config_fields(r.get("spec_json")))
        recipes.setdefault(recipe_key(fields), (fields, []))[1].append(r)
    if len(recipes) < 2:
        return [("", list(runs))]
    varied = _differing([f for f, _r in recipes.values()])
    out = [(", ".join(f"{k}={_fmt(f.get(k))}" for k in varied), rs) for f, rs in recipes.values()]
    return sorted(out, key=lambda x: x[0])


def _differing(configs: list[dict[str, Any]], exclude: tuple[str, ...] = ()) -> list[str]:
    """The fields with more than one value among the configurations that have them (a field that does
    not apply to a configuration is absent from it, and does not make it differ)."""
    keys = {k for c in configs for k in c} - set(exclude)
    return sorted(k for k in keys if len({_fmt(c[k]) for c in configs if k in c}) > 1)
