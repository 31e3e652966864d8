"""`granet tune`: per method x density, Ray Tune searches spec fields on the validation split, then
the chosen configuration of every cell is rerun over seeds as an ordinary `granet sweep`.

    plan_tune(...)  -> TunePlan    the spec, the cells and the search space, validated; nothing written
    run_tune(...)   -> TuneOutcome the search (Ray Tune's search algorithm and scheduler), the choice,
                                   then the seeds sweep (`run_sweep`, the same code as `granet sweep`)

Fair by construction:
- the metric is `val_acc`, the accuracy on `data.val_fraction` of the training set (0.1 when the spec
  has none); a trial's test accuracy is recorded in the db but never reported to Tune;
- the chosen configuration of a cell is the argmax of the final validation accuracy (the `val_acc`
  of its last epoch) over its `completed` trials -- trials the scheduler stopped early (`stopped`)
  did not train the whole schedule, so their numbers are not comparable; ties go to the earlier trial.

Tuning trials are runs of their own sweep, `<name>:tuning` (statuses completed / stopped / failed),
so reports of `<name>` show only the seeds sweep. Resume: a cell's finished trials (completed or
stopped) are read back from the db and not run again; Optuna is told their results
(`points_to_evaluate` + `evaluated_rewards`), and only the samples still missing run.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..spec import RunSpec, SpecError, with_overrides
from .plan import Point, SweepError, SweepOutcome, SweepPlan, TrialOutcome, plan_sweep, resolve_paths
from .tune_space import Dist, parse_params, plain, sample_params

SEARCHES = ("random", "optuna", "grid")
SCHEDULERS = ("asha", "none")
#: the validation split `granet tune` uses when the spec has none
DEFAULT_VAL_FRACTION = 0.1
#: trial statuses that count as a finished sample (not run again on resume): a failed trial used its
#: sample in a search that was never interrupted, so it does in a resumed one (the budget stays the
#: same for every cell, and rerunning a finished tune runs nothing); only `interrupted` ones are redrawn
FINISHED = ("completed", "stopped", "diverged", "failed")


@dataclass
class TunePlan:
    seeds_plan: SweepPlan  # the sweep that reruns the chosen values (its base has the val split)
    dists: list[Dist]
    samples: int
    search: str
    scheduler: str
    val_defaulted: bool
    tuning_name: str = ""
    tuning_id: str = ""

    @property
    def cells(self) -> list[Point]:
        """One point per method x density, at the first seed: what a cell's trials vary."""
        first = self.seeds_plan.grid.seeds[0]
        return [p for p in self.seeds_plan.points if p.seed == first]

    @property
    def keys(self) -> list[str]:
        return [d.key for d in self.dists]

    def record(self, chosen: dict[str, dict] | None = None) -> dict[str, Any]:
        """What the tuning sweep's row keeps (sweeps.grid_json)."""
        return {
            "tune": {
                "of_sweep": self.seeds_plan.name,
                "space": {d.key: d.record() for d in self.dists},
                "samples": self.samples,
                "search": self.search,
                "scheduler": self.scheduler,
                "metric": "val_acc (last epoch), max",
                "chosen": chosen or {},
            },
            "base_spec": self.seeds_plan.base.normalised(),
        }


def cell_key(p: Point) -> str:
    return f"{p.method} d={p.density:g}"


def plan_tune(
    spec_path: Path | None,
    overrides: list[str] | None,
    *,
    params: list[str] | None,
    samples: int,
    search: str,
    scheduler: str,
    methods: str | None = None,
    densities: str | None = None,
    seeds: str | None = None,
    name: str | None = None,
    max_failures: int | None = None,
    checkpoint_every: float | None = None,
    cpus_per_trial: float | None = None,
    gpus_per_trial: float | None = None,
    max_concurrent: int | None = None,
) -> TunePlan:
    """The tune's cells and search space, every value checked; SpecError (one line per problem).
    Resources and retries are `granet sweep`'s, for the trials and the seeds sweep alike."""
    problems = []
    if samples < 1:
        problems.append(f"--samples: at least 1 trial per cell, got {samples}")
    if search not in SEARCHES:
        problems.append(f"--search: one of {', '.join(SEARCHES)}, got {search!r}")
    if scheduler not in SCHEDULERS:
        problems.append(f"--scheduler: one of {', '.join(SCHEDULERS)}, got {scheduler!r}")
    if problems:
        raise SpecError(problems)
    plan = plan_sweep(
        spec_path,
        overrides,
        methods=methods,
        densities=densities,
        seeds=seeds,
        name=name,
        max_failures=max_failures,
        checkpoint_every=checkpoint_every,
        cpus_per_trial=cpus_per_trial,
        gpus_per_trial=gpus_per_trial,
        max_concurrent=max_concurrent,
    )
    val_defaulted = not plan.base.data.val_fraction
    base = with_overrides(plan.base, {"data.val_fraction": DEFAULT_VAL_FRACTION}) if val_defaulted else plan.base
    dists = parse_params(params, base, {"seed", "sparsity.method", "sparsity.final_density"})
    if search == "grid" and any(d.kind != "choice" for d in dists):
        raise SpecError(["--search grid: every --param must be a choice:V1,V2,... (use random or optuna for ranges)"])
    if search == "optuna":
        try:
            import optuna  # noqa: F401
        except ImportError:
            raise SpecError(["--search optuna needs the optuna package: pip install 'granet[tune]'"]) from None
    if name is None:
        key = json.dumps([plan.name, [f"{d.key}={d.record()}" for d in dists], samples, search, scheduler])
        name = "tune-" + hashlib.sha256(key.encode()).hexdigest()[:8]
    seeds_plan = _with_base(plan, base, name)
    tp = TunePlan(seeds_plan, dists, samples, search, scheduler, val_defaulted)
    tp.tuning_name = f"{name}:tuning"
    tp.tuning_id = "sw-" + hashlib.sha256(tp.tuning_name.encode()).hexdigest()[:12]
    return tp


def _with_base(plan: SweepPlan, base: RunSpec, name: str) -> SweepPlan:
    """`plan` over `base` (the spec with its validation split) under `name`."""
    points = [Point(p.method, p.density, p.seed, _cell_spec(base, p), p.params) for p in plan.points]
    grid = plan.grid.model_copy(update={"name": name})
    sweep_id = "sw-" + hashlib.sha256(name.encode()).hexdigest()[:12]
    return SweepPlan(name, sweep_id, plan.spec_path, base, grid, points, plan.overrides, plan.cwd)


def _cell_spec(base: RunSpec, p: Point) -> RunSpec:
    overrides: dict[str, Any] = {"seed": p.seed}
    if p.method != base.sparsity.method:
        overrides["sparsity.method"] = p.method
    if p.method != "dense":
        overrides["sparsity.final_density"] = p.density
    return with_overrides(base, overrides)


# ----------------------------------------------------------------------------- the trial
def tune_trainable(config: dict) -> None:
    """One tuning trial on a worker: the cell's spec with the sampled values, run by `trainable`."""
    from ray import tune

    from .trainable import trainable

    point = dict(config["point"])
    spec = with_overrides(RunSpec.model_validate_json(point["spec_json"]), sample_params(config, point["keys"]))
    trial_id = tune.get_context().get_trial_id()
    point.update(
        spec_json=json.dumps(spec.normalised()),
        spec_hash=spec.spec_hash(),
        run_id=f"{spec.spec_hash()[:8]}-{trial_id}",
    )
    trainable({"point": point})


# ----------------------------------------------------------------------------- the outcome
@dataclass
class CellResult:
    cell: Point
    trials: list[dict] = field(default_factory=list)  # {"run_id", "status", "params", "val_acc", "epochs"}
    chosen: dict[str, Any] | None = None
    chosen_run: str | None = None
    chosen_val: float | None = None
    ran: int = 0


@dataclass
class TuneOutcome:
    plan: TunePlan
    cells: list[CellResult]
    sweep: SweepOutcome | None = None
    interrupted: bool = False
    terminated: bool = False
    wall_seconds: float = 0.0


def trial_params(spec: dict, keys: list[str]) -> dict[str, Any]:
    """A tuning run's searched values, read from its spec_json."""
    out = {}
    for key in keys:
        node: Any = spec
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        out[key] = node
    return out


def read_cells(store, tp: TunePlan) -> list[CellResult]:
    """Every cell's tuning trials as the db has them, each with its final validation accuracy
    (the val_acc of its last epoch row), and the chosen configuration: the argmax over `completed`."""
    rows = store.runs(sweep=tp.tuning_id)
    last_val: dict[str, tuple[int, float | None]] = {}
    for e in store.epochs([r["run_id"] for r in rows]) if rows else []:
        if e["run_id"] not in last_val or e["epoch"] >= last_val[e["run_id"]][0]:
            last_val[e["run_id"]] = (e["epoch"], e.get("val_acc"))
    cells = []
    for cell in tp.cells:
        res = CellResult(cell)
        for r in rows:
            spec = json.loads(r["spec_json"])
            if r["method"] != cell.method or (cell.method != "dense" and r["target_density"] != cell.density):
                continue
            epochs, val = last_val.get(r["run_id"], (0, None))
            res.trials.append(
                {
                    "run_id": r["run_id"],
                    "status": r["status"],
                    "params": trial_params(spec, tp.keys),
                    "val_acc": val,
                    "epochs": epochs,
                }
            )
        done = [t for t in res.trials if t["status"] == "completed" and t["val_acc"] is not None]
        if done:
            best = max(done, key=lambda t: t["val_acc"])  # max keeps the first of equals
            res.chosen, res.chosen_run, res.chosen_val = best["params"], best["run_id"], best["val_acc"]
        cells.append(res)
    return cells


def finished(res: CellResult) -> list[dict]:
    return [t for t in res.trials if t["status"] in FINISHED]


def tuned_plan(tp: TunePlan, cells: list[CellResult]) -> SweepPlan:
    """The seeds sweep: every cell's points with its chosen values as fixed overrides."""
    chosen = {cell_key(c.cell): c.chosen for c in cells}
    plan = tp.seeds_plan
    points = []
    for p in plan.points:
        values = chosen.get(cell_key(p))
        if values is None:  # no completed trial: the cell is left out (said by the CLI)
            continue
        points.append(Point(p.method, p.density, p.seed, with_overrides(p.spec, values), tuple(values.items())))
    return SweepPlan(plan.name, plan.sweep_id, plan.spec_path, plan.base, plan.grid, points, plan.overrides, plan.cwd)


def new_trial_factory(tp: TunePlan, cell: Point, outcome: SweepOutcome):
    """trial -> its TrialOutcome (for the driver's callback): the cell's spec with the sampled values."""

    def new_trial(trial) -> TrialOutcome:
        values = {k: plain(v) for k, v in sample_params(trial.config, tp.keys).items()}
        spec = with_overrides(cell.spec, values)
        point = Point(cell.method, cell.density, cell.seed, spec, tuple(values.items()))
        t = TrialOutcome(point, f"{spec.spec_hash()[:8]}-{trial.trial_id}")
        outcome.trials.append(t)
        return t

    return new_trial


def trial_config(tp: TunePlan, cell: Point, threads: int) -> dict[str, Any]:
    """The constant part of a cell's trial config: what `tune_trainable` builds the spec from."""
    return {
        "sweep_id": tp.tuning_id,
        "name": cell.trial_name,
        "spec_json": json.dumps(resolve_paths(cell.spec, tp.seeds_plan.cwd).normalised()),
        "keys": tp.keys,
        "resume_from": None,
        "threads": threads,
        "checkpoint_every": tp.seeds_plan.grid.checkpoint_every,
    }


def elapsed(start: float) -> float:
    return time.perf_counter() - start


__all__ = ["SweepError", "TunePlan", "TuneOutcome", "plan_tune", "tune_trainable"]
