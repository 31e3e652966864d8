"""Every column of the results db, defined once.

Each column says its table, SQL type, the schema version that added it, and its role: a key
written when a run starts, a final metric of the run, or a per-epoch metric with the tag the
trackers (TensorBoard, W&B, MLflow) log it under. The store creates and migrates its tables from
this table, the trainer's epoch and final rows are checked against it (`metric_row`), the run
recorder writes exactly these keys and the trackers log what is tagged here. Adding a metric is one
line here plus the code that measures it. Plain Python: importing it costs nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

_V, _D, _I, _B, _T = "VARCHAR", "DOUBLE", "INTEGER", "BIGINT", "TIMESTAMP"


@dataclass(frozen=True)
class Column:
    name: str
    sql: str
    since: int = 0  # the schema version that added it (0: there from the start)
    role: str = ""  # "start": written when a run starts | "final": a final metric | "" otherwise
    tag: str | None = None  # epochs: the tracker tag of the metric
    default: str | None = None  # SQL default


_c = Column  # a short name for the table below

#: table -> its columns in creation order (a migrated db appends the later ones in this order too)
TABLES: dict[str, tuple[Column, ...]] = {
    "sweeps": (_c("sweep_id", _V), _c("name", _V), _c("created_at", _T), _c("grid_json", _V)),
    "runs": (
        _c("run_id", _V, role="start"),
        _c("sweep_id", _V, role="start"),
        _c("spec_hash", _V, role="start"),
        _c("method", _V, role="start"),
        _c("model", _V, role="start"),
        _c("dataset", _V, role="start"),
        _c("target_density", _D, role="start"),
        _c("seed", _I, role="start"),
        _c("status", _V),  # a store.RunStatus value
        _c("final_test_acc", _D, role="final"),
        _c("best_test_acc", _D, role="final"),
        # fraction of the sparsified layers' weights the masks keep at the end (a mask count): the
        # achieved density, beside target_density, the spec's sparsity.final_density (named
        # final_density until schema v4: RENAMED)
        _c("achieved_density", _D, role="final"),
        _c("itop_rate", _D, role="final"),
        _c("train_flops_frac", _D, role="final"),
        _c("inference_flops_frac", _D, role="final"),
        _c("wall_seconds", _D, role="final"),
        _c("final_test_acc5", _D, 1, role="final"),
        _c("samples_per_second", _D, 1, role="final"),
        _c("spec_json", _V, role="start"),
        _c("started_at", _T, role="start"),
        _c("finished_at", _T),
        _c("error", _V),
        _c("overall_density", _D, 2, role="final"),
        _c("selected_test_acc", _D, 2, role="final"),
        _c("config_hash", _V, 2, role="start"),
        _c("attempts", _I, 2, default="1"),
        _c("pid", _I, 2),
        _c("host", _V, 2),
        # fraction of the sparsified layers' weights that are nonzero at the end: at most
        # achieved_density (a mask count); below it where a regrown weight's gradient stayed zero
        _c("nonzero_density", _D, 3, role="final"),
        # which test examples the reported model got right, store.examples.pack format ("n:base64"):
        # the final model's, and the best-validation epoch's where a validation split is configured
        _c("test_correct", _V, 5, role="final"),
        _c("selected_test_correct", _V, 5, role="final"),
    ),
    "epochs": (
        _c("run_id", _V),
        _c("epoch", _I),
        _c("step", _B),
        _c("lr", _D, tag="optim/lr"),
        _c("train_loss", _D, tag="train/loss"),
        _c("train_acc", _D, tag="train/acc"),
        _c("test_loss", _D, tag="test/loss"),
        _c("test_acc", _D, tag="test/acc"),
        _c("density", _D, tag="sparsity/density"),
        _c("itop_rate", _D, tag="sparsity/itop_rate"),
        _c("seconds", _D, tag="time/epoch_seconds"),
        _c("test_acc5", _D, 1, tag="test/acc5"),
        _c("val_loss", _D, 2, tag="val/loss"),
        _c("val_acc", _D, 2, tag="val/acc"),
        _c("overall_density", _D, 2, tag="sparsity/overall_density"),
    ),
    "layers": (_c("run_id", _V), _c("name", _V), _c("shape", _V), _c("numel", _B), _c("achieved_density", _D)),
    # one row per mask update (a pruning event, a drop-and-grow, or both at one step). dropped: weights
    # the drop criterion removed; grown: new connections, inactive before the update (they start at
    # zero); reselected: dropped and grown again in the same update (they keep value and optimizer
    # state). Weights that really left = dropped - reselected. Pruning events count in density only.
    "mask_updates": (
        _c("run_id", _V),
        _c("step", _B),
        _c("target_density", _D),
        _c("dropped", _B),
        _c("grown", _B),
        _c("density", _D),
        _c("reselected", _B, 3),
    ),
}
PRIMARY_KEYS = {"sweeps": ("sweep_id",), "runs": ("run_id",), "epochs": ("run_id", "epoch")}
#: schema version -> table -> {old name: new name}: the columns that version renamed (TABLES holds
#: the new names; a migration renames them in place, and reads of an older file select the old
#: name under the new one). Renaming a column is one line here plus its new name in TABLES.
RENAMED: dict[int, dict[str, dict[str, str]]] = {
    4: {"runs": {"final_density": "achieved_density"}, "layers": {"final_density": "achieved_density"}},
}


def names(table: str, *, role: str | None = None, since: int | None = None) -> tuple[str, ...]:
    """Column names of `table` in creation order, optionally only one role / one schema version."""
    return tuple(
        c.name for c in TABLES[table] if (role is None or c.role == role) and (since is None or c.since == since)
    )


#: the final metrics of a run (runs columns; finish_run / fail_run keys)
FINAL_METRICS = names("runs", role="final")
#: what a runs row gets when the run starts (start_run keys)
START_KEYS = names("runs", role="start")
#: an epochs row's metrics (every column but run_id)
EPOCH_METRICS = tuple(c for c in names("epochs") if c != "run_id")
#: epochs metric -> the tag trackers log it under
EPOCH_TAGS = {c.name: c.tag for c in TABLES["epochs"] if c.tag}


class RowError(KeyError):
    """A row whose keys differ from the columns' definition: a programming error, said plainly."""


def metric_row(kind: str, values: dict[str, Any]) -> dict[str, Any]:
    """`values` as an "epoch" or "final" row, in column order; refuses keys missing or unknown, so
    the trainer cannot drift from the results db."""
    expected = EPOCH_METRICS if kind == "epoch" else FINAL_METRICS
    missing = [k for k in expected if k not in values]
    extra = [k for k in values if k not in expected]
    if missing or extra:
        raise RowError(f"{kind} row: missing {missing}, unknown {extra} (granet_cli/store/columns.py defines them)")
    return {k: values[k] for k in expected}
