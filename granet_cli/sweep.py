"""`granet sweep`: methods x densities x seeds x any spec field, over one base spec, as Ray Tune trials.

    plan_sweep(...)  -> SweepPlan   every grid point built and validated, nothing written  (sweep_plan.py)
    prior_state(...) -> {spec_hash: runs row}   what an earlier run of this sweep already did
    run_sweep(...)   -> SweepOutcome             the trials, on a local Ray instance or a cluster (sweep_ray.py)

The work lives in three modules: `sweep_plan` (the grid, its identity and the db state; no Ray
import), `sweep_ray` (trials, Tune checkpoints in storage, retries, the driver's db writes) and
`sweep_view` (the terminal). This module keeps the names the CLI and the tests import;
none of them imports Ray before a sweep actually starts.
"""

from __future__ import annotations

from .sweep_plan import (
    DEFAULT_SPEC,
    DONE_STATUSES,
    INTERRUPTED,
    Point,
    SweepError,
    SweepOutcome,
    SweepPlan,
    TrialOutcome,
    default_spec_path,
    expand_grid,
    parse_grid_flags,
    plan_sweep,
    point_state,
    prior_state,
    sweep_identity,
)
from .sweep_ray import (
    EPOCH_KEY,
    FINAL_KEY,
    REPLAY_KEY,
    UPDATES_KEY,
    _make_callback,
    check_feasible,
    find_checkpoints,
    run_sweep,
)
from .sweep_view import _Display, dry_run_table, failures, summary_line, summary_table

__all__ = [
    "DEFAULT_SPEC",
    "DONE_STATUSES",
    "INTERRUPTED",
    "Point",
    "SweepError",
    "SweepOutcome",
    "SweepPlan",
    "TrialOutcome",
    "default_spec_path",
    "expand_grid",
    "parse_grid_flags",
    "plan_sweep",
    "point_state",
    "prior_state",
    "sweep_identity",
    "EPOCH_KEY",
    "FINAL_KEY",
    "REPLAY_KEY",
    "UPDATES_KEY",
    "_make_callback",
    "check_feasible",
    "find_checkpoints",
    "run_sweep",
    "_Display",
    "dry_run_table",
    "failures",
    "summary_line",
    "summary_table",
]
