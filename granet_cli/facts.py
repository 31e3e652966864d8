"""What a spec means on its dataset, without torch: the fields that apply and the derived numbers.

`granet validate` and the report's configuration appendix show a spec through these: the `data:`
fields the dataset reads (each dataset module declares the rest with `@register_dataset(...,
reads=...)`; `input_shape`, `train_size`, ... of synthetic data do not apply to digits), then the real
data (input shape, classes, split sizes from `data.dataset_info`), the steps per epoch and the mask
updates the schedule makes (as `sparse.masking.Masking` schedules them).
"""

from __future__ import annotations

import math
from typing import Any

from .data import dataset_fields, dataset_info
from .data.base import val_count
from .sparse.methods import SparseConfig
from .sparse.schedule import CubicSchedule
from .spec import RunSpec


def applicable(spec: RunSpec) -> dict[str, Any]:
    """The normalised spec without the `data:` fields its dataset does not read."""
    out = spec.normalised()
    keep = set(dataset_fields(spec.data.name))
    out["data"] = {k: v for k, v in out["data"].items() if k in keep}
    return out


def mask_updates(cfg: SparseConfig, steps_per_epoch: int, epochs: int) -> tuple[int, int]:
    """(gradual-pruning events, drop-and-grow updates) over `epochs`, at the steps Masking.step makes
    them: pruning at the cubic schedule's events; drop-and-grow every `update_frequency` steps from
    the start of pruning (gradual methods) until `update_end_epoch` (or the end)."""
    total = epochs * steps_per_epoch
    sched = None
    if cfg.gradual:
        final_epoch = cfg.final_prune_epoch if cfg.final_prune_epoch is not None else epochs
        assert cfg.init_density is not None  # filled from the method preset
        sched = CubicSchedule(
            cfg.init_density,
            cfg.final_density,
            cfg.init_prune_epoch * steps_per_epoch,
            final_epoch * steps_per_epoch,
            cfg.update_frequency,
        )
    pruning = sum(1 for t in sched.events() if t <= total) if sched else 0
    if not cfg.drop_and_grow:
        return pruning, 0
    first = max(1, sched.t0 if sched else 1)
    last = min(total, cfg.update_end_epoch * steps_per_epoch if cfg.update_end_epoch is not None else total)
    f = cfg.update_frequency
    return pruning, max(0, last // f - (first - 1) // f)


def run_facts(spec: RunSpec) -> dict[str, Any]:
    """The real data (shape, classes, train / validation / test sizes), steps per epoch and mask
    updates of `spec` (with `optim.multiplier` applied). Raises data.DataError for a bad dataset."""
    sp = spec.scaled()
    settings = sp.data.model_dump()
    info = dataset_info(**settings)
    full = dataset_info(**{**settings, "val_fraction": 0.0})
    steps = math.ceil(info.train_size / sp.data.batch_size)
    pruning, dg = mask_updates(SparseConfig.from_obj(sp.sparsity), steps, sp.optim.epochs)
    return {
        "input_shape": "x".join(str(d) for d in info.input_shape),
        "classes": info.num_classes,
        "train_size": info.train_size,
        "val_size": val_count(full.train_size, sp.data.val_fraction),
        "test_size": info.test_size,
        "steps_per_epoch": steps,
        "epochs": sp.optim.epochs,
        "pruning_events": pruning,
        "drop_and_grow_updates": dg,
    }


def facts_line(facts: dict[str, Any]) -> str:
    """`run_facts` as one line."""
    f = facts
    return (
        f"data {f['input_shape']}, {f['classes']} classes, {f['train_size']:,} train / {f['val_size']:,} validation / "
        f"{f['test_size']:,} test; {f['steps_per_epoch']:,} steps per epoch x {f['epochs']:,} epochs; mask updates: "
        f"{f['pruning_events']:,} pruning, {f['drop_and_grow_updates']:,} drop-and-grow"
    )


def describe_stored(spec: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    """A run's stored normalised spec (`runs.spec_json`) as the report's appendix shows it: without
    the `data:` fields its dataset does not read, and `facts_line` (None when the stored spec no
    longer validates, e.g. written by another granet version, or names an unknown dataset)."""
    from .data import DataError

    try:
        run_spec = RunSpec.model_validate(spec)
        facts = facts_line(run_facts(run_spec))
        keep = set(dataset_fields(run_spec.data.name))
    except (ValueError, DataError):
        return spec, None
    data = spec.get("data")
    if isinstance(data, dict):
        spec = {**spec, "data": {k: v for k, v in data.items() if k in keep}}
    return spec, facts
