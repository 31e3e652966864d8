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
    return {k: v for k, v in flat.items() if k not in IGNORED}


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
        return f"{self.method} ({', '.join(f'{k}={_fmt(self.fields.get(k))}' for k in self.varied)})"

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


def _differing(configs: list[dict[str, Any]], exclude: tuple[str, ...] = ()) -> list[str]:
    keys = {k for c in configs for k in c} - set(exclude)
    return sorted(k for k in keys if len({_fmt(c.get(k)) for c in configs}) > 1)
