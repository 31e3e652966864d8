"""`granet sweep`: methods x densities x seeds x any spec field, over one base spec, as Ray Tune trials.

    plan_sweep(...)  -> SweepPlan   every grid point built and validated, nothing written  (plan.py)
    prior_state(...) -> {spec_hash: runs row}   what an earlier run of this sweep already did
    run_sweep(...)   -> SweepOutcome             the trials, on a local Ray instance or a cluster (backend.py)

One job per module:
    plan        the grid, its points, the sweep's identity, the db state (no Ray import)
    backend     the Tune run: checkpoints in storage, what to run, the driver's order of work
    trainable   one trial on a worker, and the keys of its reports
    callback    the driver's Tune callback: the only writer of the results db
    cluster     start/join/stop Ray, resources per node, a failure (a lost node) in words
    preflight   `granet run`'s set-up checks for every distinct configuration, before any write
    local_ray   nothing of a local Ray instance outlives the sweep (a watchdog)
    view        the terminal: live progress, dry-run and summary tables
    trackers    --wandb / --mlflow through Ray Tune's logger callbacks

This module holds the names the CLI and the tests import; none of them imports Ray before a
sweep actually starts.
"""

from __future__ import annotations

from .backend import experiment_name, find_checkpoints, run_sweep, storage_root
from .callback import make_callback
from .cluster import check_feasible
from .plan import (
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
    resolve_paths,
    sweep_identity,
)
from .trainable import EPOCHS_KEY, FINAL_KEY, MARKER, REPLAY_KEY
from .view import Display, dry_run_table, failures, summary_line, summary_table

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
    "resolve_paths",
    "sweep_identity",
    "EPOCHS_KEY",
    "FINAL_KEY",
    "MARKER",
    "REPLAY_KEY",
    "check_feasible",
    "experiment_name",
    "find_checkpoints",
    "make_callback",
    "run_sweep",
    "storage_root",
    "Display",
    "dry_run_table",
    "failures",
    "summary_line",
    "summary_table",
]
