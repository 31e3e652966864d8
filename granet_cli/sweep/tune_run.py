"""The Ray Tune run of `granet tune` (see tune.py): one Tuner per method x density cell, with Ray
Tune's search algorithm (BasicVariantGenerator, OptunaSearch, a grid) and scheduler
(AsyncHyperBandScheduler on the per-epoch `val_acc`), the sweep's trainable, callback, storage
and retries; then the chosen values of every cell over the seeds, by `run_sweep`."""

from __future__ import annotations

import itertools
import logging
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

from .backend import check_before_writing, experiment_name, run_sweep, storage_root, tune_env
from .callback import make_callback
from .cluster import init_ray, quiet_ray_errors, stop_ray
from .plan import INTERRUPTED, SweepOutcome, SweepPlan, slug
from .tune import (
    CellResult,
    TuneOutcome,
    TunePlan,
    cell_key,
    finished,
    new_trial_factory,
    read_cells,
    trial_config,
    tune_trainable,
    tuned_plan,
)


class TuneDisplay:
    """The live view of the search: one line per finished trial with its status and epochs; never a
    test accuracy (the search does not see it, and neither does its display)."""

    def __init__(self, console, cell: str) -> None:
        self.console, self.cell = console, cell

    def __enter__(self) -> TuneDisplay:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def note(self, text: str) -> None:
        self.console.print(text, highlight=False, soft_wrap=True)

    def started(self) -> None:
        return None

    def refresh(self) -> None:
        return None

    def epoch(self, t, acc) -> None:
        return None

    def finished(self, t) -> None:
        values = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in t.point.params)
        why = f": {t.error}" if t.status == "failed" else ""
        self.note(f"  {self.cell} trial {values}: {t.status} after epoch {t.last_epoch}{why}")


def tuning_plan(tp: TunePlan) -> SweepPlan:
    """The tuning trials' own sweep (`<name>:tuning`): its points are the cells."""
    sp = tp.seeds_plan
    return SweepPlan(tp.tuning_name, tp.tuning_id, sp.spec_path, sp.base, sp.grid, tp.cells, sp.overrides, sp.cwd)


def _read(db_path: Path, tp: TunePlan) -> list[CellResult]:
    from ..store import Store

    if not Path(db_path).exists():
        return [CellResult(c) for c in tp.cells]
    store = Store(db_path)
    try:
        return read_cells(store, tp)
    finally:
        store.close()


def _todo(tp: TunePlan, res: CellResult) -> int:
    if tp.search == "grid":
        return len(_grid_todo(tp, res))
    return max(0, tp.samples - len(finished(res)))


def _grid_todo(tp: TunePlan, res: CellResult) -> list[dict]:
    done = [t["params"] for t in finished(res)]
    combos = [dict(zip(tp.keys, c)) for c in itertools.product(*(d.args for d in tp.dists))]
    return [c for c in combos if c not in done]


def run_tune(
    tp: TunePlan,
    db_path: Path,
    *,
    runs_dir: Path = Path("runs"),
    address: str | None = None,
    storage_path: str | None = None,
    console=None,
) -> TuneOutcome:
    """Search every cell not searched yet, choose, then run the seeds sweep; holds the db's claim
    on the tuning sweep's name (a second driver of the same tune is refused)."""
    from rich.console import Console

    from ..store import claim_sweep

    console = console or Console()
    started = time.perf_counter()
    with claim_sweep(db_path, tp.tuning_name):
        cells = _read(db_path, tp)
        outcome = TuneOutcome(tp, cells)
        todo = [c for c in cells if _todo(tp, c) > 0]
        ray_started, local = init_ray(address) if todo else (False, None)
        try:
            if todo:
                _search(tp, db_path, todo, outcome, console, runs_dir, storage_path, address)
                outcome.cells = _read(db_path, tp)
            if not outcome.interrupted:
                _record_choice(db_path, tp, outcome.cells)
                plan = tuned_plan(tp, outcome.cells)
                if plan.points:
                    outcome.sweep = run_sweep(
                        plan, db_path, runs_dir=runs_dir, address=address, storage_path=storage_path, console=console
                    )
                    outcome.interrupted = outcome.sweep.interrupted
                    outcome.terminated = outcome.sweep.terminated
        finally:
            if ray_started:
                stop_ray(local, outcome.sweep, runs_dir)
    outcome.wall_seconds = time.perf_counter() - started
    return outcome


def _search(tp, db_path, todo, outcome, console, runs_dir, storage_path, address) -> None:
    from ..store import Store

    tplan = tuning_plan(tp)
    _, cpus, gpus = check_before_writing(tplan, [c.cell for c in todo])
    storage = storage_root(storage_path if storage_path is not None else Path(runs_dir) / "ray")
    store = Store(db_path)  # from here on things are written
    try:
        for r in store.runs(sweep=tp.tuning_id, status="running"):  # left by a killed driver
            store.fail_run(r["run_id"], "interrupted", INTERRUPTED)
        store.add_sweep(tp.tuning_id, tp.tuning_name, tp.record())
        where = f"cluster at {address}" if address else "local Ray"
        console.print(
            f"tune: {len(todo)} cell(s) to search on {where}, {tp.samples} samples each ({tp.search} search, "
            f"scheduler {tp.scheduler}), metric val_acc on data.val_fraction={tp.seeds_plan.base.data.val_fraction:g}",
            highlight=False,
        )
        for res in todo:
            sweep_outcome = SweepOutcome(tplan, [], len(finished(res)), 0, 0.0)
            _search_cell(tp, tplan, res, store, sweep_outcome, console, {"cpu": cpus, "gpu": gpus}, storage)
            if sweep_outcome.interrupted:
                outcome.interrupted, outcome.terminated = True, sweep_outcome.terminated
                return
    finally:
        store.close()


def _search_cell(tp, tplan, res: CellResult, store, outcome: SweepOutcome, console, resources, storage) -> None:
    """One cell's Tuner.fit: the trials still missing, recorded by the sweep's callback."""
    from ray import tune

    display = TuneDisplay(console, cell_key(res.cell))
    callback = make_callback(
        store,
        tplan,
        {},
        cast(Any, display),
        tp.seeds_plan.grid.max_failures,
        outcome,
        None,
        new_trial_factory(tp, res.cell, outcome),
    )
    search_alg, space, samples = _search_alg(tp, res)
    space["point"] = trial_config(tp, res.cell, threads=max(1, int(resources["cpu"])))
    if tp.scheduler == "asha":  # the trials report at its rungs, whatever else they batch
        space["point"]["report_at"] = asha_rungs(res.cell.spec.optim.epochs)
    for name in ("ray.tune.execution.tune_controller", "ray.tune.tune", "ray.tune.execution.experiment_state"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    tuner = tune.Tuner(
        tune.with_resources(tune_trainable, resources),
        param_space=space,
        tune_config=tune.TuneConfig(
            metric="val_acc",
            mode="max",
            search_alg=search_alg,
            scheduler=_scheduler(tp, res),
            num_samples=samples,
            max_concurrent_trials=tp.seeds_plan.grid.max_concurrent,
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            storage_path=storage,
            name=f"{experiment_name(tplan)}-{slug(cell_key(res.cell))}",
            verbose=0,
            callbacks=[callback],
            failure_config=tune.FailureConfig(max_failures=tp.seeds_plan.grid.max_failures, fail_fast=False),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
        ),
    )
    try:
        with tune_env(), quiet_ray_errors(), _sigterm_as_sigint(outcome):
            tuner.fit()
    except KeyboardInterrupt:
        outcome.interrupted = True
    finally:
        callback.flush()  # epochs still waiting, before running trials are marked interrupted
    for t in outcome.trials:
        if t.status in ("running", "pending"):
            t.status = "interrupted"
            if t.run_id is not None and t.ran:
                store.fail_run(t.run_id, "interrupted", INTERRUPTED)
            outcome.interrupted = True


@contextmanager
def _sigterm_as_sigint(outcome: SweepOutcome) -> Iterator[None]:
    """SIGTERM during a cell's search stops it as Ctrl+C does (Tune's own handler: the trials stop and
    fit returns), marked `terminated` (exit 143 with the command that resumes it)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_term(signum, frame):
        outcome.terminated = True
        on_int = signal.getsignal(signal.SIGINT)
        if callable(on_int) and on_int is not signal.default_int_handler:
            on_int(signal.SIGINT, frame)
        else:
            raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, on_term)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def _search_alg(tp: TunePlan, res: CellResult) -> tuple[Any, dict[str, Any], int]:
    """(search algorithm, the searched part of the param space, num_samples) for what is left of a cell."""
    from ray import tune
    from ray.tune.search.basic_variant import BasicVariantGenerator

    done = finished(res)
    if tp.search == "grid":
        return None, {"combo": tune.grid_search(_grid_todo(tp, res))}, 1
    space = {d.key: d.to_tune() for d in tp.dists}
    seed = res.cell.seed + len(done)  # a resumed search does not draw the finished samples again
    if tp.search == "optuna":
        import optuna
        from ray.tune.search.optuna import OptunaSearch

        optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "study created" line beside ours

        told = [t for t in done if t["val_acc"] is not None]
        searcher = OptunaSearch(
            points_to_evaluate=[t["params"] for t in told] or None,
            evaluated_rewards=[t["val_acc"] for t in told] or None,
            seed=seed,
        )
        return searcher, space, tp.samples - len(done)
    return BasicVariantGenerator(random_state=seed), space, tp.samples - len(done)


def _scheduler(tp: TunePlan, res: CellResult):
    """ASHA on the per-epoch val_acc, its rungs below the last epoch (a trial at its last epoch finishes
    and reports its final result); None for --scheduler none."""
    if tp.scheduler != "asha":
        return None
    from ray.tune.schedulers import AsyncHyperBandScheduler

    return AsyncHyperBandScheduler(
        time_attr="epoch",
        max_t=_asha_max_t(res.cell.spec.optim.epochs),
        grace_period=ASHA_GRACE,
        reduction_factor=ASHA_FACTOR,
        stop_last_trials=False,
    )


#: ASHA's first rung (epochs) and the factor between rungs
ASHA_GRACE, ASHA_FACTOR = 1, 2


def _asha_max_t(epochs: int) -> int:
    return max(1, epochs - 1)


def asha_rungs(epochs: int) -> list[int]:
    """The epochs ASHA decides at (its rungs, as AsyncHyperBandScheduler places them: grace x
    factor^k up to max_t): a trial reports there even when it batches its other epochs."""
    rungs, milestone = [], ASHA_GRACE
    while milestone <= _asha_max_t(epochs):
        rungs.append(milestone)
        milestone *= ASHA_FACTOR
    return rungs


def _record_choice(db_path: Path, tp: TunePlan, cells: list[CellResult]) -> None:
    """The chosen values per cell, in the tuning sweep's row (sweeps.grid_json: tune.chosen)."""
    from ..store import Store

    chosen = {
        cell_key(c.cell): {"values": c.chosen, "run_id": c.chosen_run, "val_acc": c.chosen_val}
        for c in cells
        if c.chosen is not None
    }
    store = Store(db_path)
    try:
        store.add_sweep(tp.tuning_id, tp.tuning_name, tp.record(chosen))
    finally:
        store.close()
