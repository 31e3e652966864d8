"""The Ray Tune backend of `granet sweep`: trials, checkpoints in storage, retries, the driver's db writes.

Each grid point is one Ray Tune trial running the same `train.run` as `granet run`, in a
node-local temporary folder. After every epoch the trial reports the epoch's row and a Tune
checkpoint (that folder: the trainer's checkpoint.pt with model, optimizer, masks, sparse-core
state and RNG, plus a small `granet_checkpoint.json`) through `tune.report`; Tune copies it to
`RunConfig.storage_path` (local, NFS or a cloud URI) and keeps the last two per trial.

Fault tolerance is Tune's own: `FailureConfig(max_failures)` restarts a trial whose node
died (or that crashed) on any live node, and the restarted trial continues from
`tune.get_checkpoint()`. A rerun of an interrupted sweep (driver killed) is a new Tuner: the
driver finds each unfinished point's latest checkpoint in storage and hands it to the trial,
which continues from it the same way (see `find_checkpoints`).

Only the driver writes the results db (a `ray.tune.Callback`). A trial that continues from a
checkpoint first sends the checkpoint's epoch rows and mask updates in one report; the driver
replaces the run's rows with them (`Store.truncate_after`), so rows are never duplicated.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .callback import make_callback
from .cluster import CLUSTER_LOGS, check_feasible, init_ray, quiet_ray_errors, stop_ray
from .plan import (
    DONE_STATUSES,
    INTERRUPTED,
    SweepError,
    SweepOutcome,
    SweepPlan,
    TrialOutcome,
    pick,
    read_state,
    slug,
)
from .trainable import MARKER, trainable
from .view import Display

#: Tune checkpoints kept per trial in storage (the newest ones)
CHECKPOINTS_KEPT = 2


# ----------------------------------------------------------------------------- storage
def storage_root(storage_path: str | os.PathLike) -> str:
    """A URI (s3://, gs://, ...) as is; a local or NFS path made absolute (trials run elsewhere)."""
    text = str(storage_path)
    return text if "://" in text else str(Path(text).expanduser().resolve())


def experiment_name(plan: SweepPlan) -> str:
    """One Tune experiment folder per sweep under the storage path, the same on every rerun."""
    return f"{slug(plan.name)[:40]}-{plan.sweep_id}"


def _filesystem(storage: str):
    import pyarrow.fs as pafs

    if "://" in storage:
        return pafs.FileSystem.from_uri(storage)
    return pafs.LocalFileSystem(), storage


def find_checkpoints(storage: str, experiment: str) -> dict[str, dict]:
    """spec_hash -> the newest checkpoint (highest epoch) any earlier trial of this sweep left in
    storage: {"path": local path or URI, "epoch", "step", "run_id", "spec_hash"}.

    The layout is Tune's: <storage>/<experiment>/<trial>/checkpoint_NNNNNN/, each with our marker."""
    import pyarrow.fs as pafs

    try:
        fs, root = _filesystem(storage)
        base = f"{root.rstrip('/')}/{experiment}"
        trials = fs.get_file_info(pafs.FileSelector(base, allow_not_found=True))
    except (OSError, ValueError):  # pyarrow's errors are OSError subclasses
        return {}
    best: dict[str, dict] = {}
    for trial in trials:
        if trial.type != pafs.FileType.Directory:
            continue
        try:
            entries = fs.get_file_info(pafs.FileSelector(trial.path, allow_not_found=True))
        except OSError:
            continue
        for ck in entries:
            if ck.type != pafs.FileType.Directory or not ck.base_name.startswith("checkpoint_"):
                continue
            try:
                with fs.open_input_stream(f"{ck.path}/{MARKER}") as f:
                    meta = json.loads(f.readall().decode())
            except (OSError, ValueError):
                continue  # a checkpoint being written, or not ours
            if not isinstance(meta, dict) or "spec_hash" not in meta or "epoch" not in meta:
                continue
            cur = best.get(meta["spec_hash"])
            if cur is None or meta["epoch"] > cur["epoch"]:
                rel = ck.path[len(root.rstrip("/")) :].lstrip("/")
                best[meta["spec_hash"]] = {**meta, "path": f"{storage.rstrip('/')}/{rel}"}
    return best


def check_before_writing(plan: SweepPlan, points: list) -> tuple[dict, float, float]:
    """The cluster's resources and a trial's (cpus, gpus), after refusing (SweepError, one line per
    distinct problem) a sweep no node can run, or whose points `granet run` would refuse: the
    run's set-up checks (preflight) run once per distinct configuration, as a task with a trial's
    resources, so they see what a trial sees (its node's data folder and devices)."""
    import ray

    from . import preflight

    resources = ray.cluster_resources()
    grid = plan.grid
    cpus = grid.cpus_per_trial if grid.cpus_per_trial is not None else 1.0
    gpus = grid.gpus_per_trial if grid.gpus_per_trial is not None else (1.0 if resources.get("GPU", 0) > 0 else 0.0)
    check_feasible(ray.nodes(), cpus, gpus)
    check: Any = ray.remote(num_cpus=cpus, num_gpus=gpus, max_calls=1, max_retries=3)(preflight.problems)
    problems = ray.get(check.remote(preflight.distinct(points, plan.run_spec), max(1, int(cpus))))
    if problems:
        raise SweepError("\n".join(problems))
    return resources, cpus, gpus


class _Terminated(BaseException):
    """SIGTERM: unwinds Tuner.fit so the running trials are recorded as interrupted."""


# ----------------------------------------------------------------------------- the sweep
def run_sweep(plan: SweepPlan, db_path: Path, **options: Any) -> SweepOutcome:
    """`_run_sweep` while holding the db's claim on this sweep's name: a second driver of the same
    sweep into the same db is refused at once (StoreError) instead of running every point twice."""
    from ..store import claim_sweep

    with claim_sweep(db_path, plan.name):
        return _run_sweep(plan, db_path, **options)


def _run_sweep(
    plan: SweepPlan,
    db_path: Path,
    *,
    runs_dir: Path = Path("runs"),
    address: str | None = None,
    storage_path: str | os.PathLike | None = None,
    max_failures: int | None = None,
    console=None,
    tensorboard: Path | None = None,
    trackers: Any = None,
) -> SweepOutcome:
    """Run every point of `plan` not done yet as a Ray Tune trial; the driver writes the db.

    Order: read the db (read-only: a name used by another sweep is refused), find checkpoints
    in storage, start or join Ray, check the resources against the largest node, and only then
    write anything. Raises SweepError (Ray could not start, resources too small, name taken)
    and store.StoreError."""
    from rich.console import Console

    from ..store import Store

    console = console or Console()
    started_at = time.perf_counter()
    retries = plan.grid.max_failures if max_failures is None else max_failures
    storage = storage_root(storage_path if storage_path is not None else Path(runs_dir) / "ray")
    experiment = experiment_name(plan)

    prior = read_state(db_path, plan)
    done = {h for h, r in prior.items() if r["status"] in DONE_STATUSES}
    todo_points = [p for p in plan.points if p.spec_hash not in done]
    if not todo_points:
        trials: list[TrialOutcome] = [_done_outcome(p, prior[p.spec_hash]) for p in plan.points]
        return SweepOutcome(plan, trials, len(trials), 0, time.perf_counter() - started_at)

    ray_started, local = init_ray(address)
    store = outcome = None
    try:
        resources, cpus, gpus = check_before_writing(plan, todo_points)

        # from here on things are written
        store = Store(db_path)
        stale = _mark_stale(store, plan)
        store.add_sweep(plan.sweep_id, plan.name, plan.grid_record())
        trials = _plan_trials(store, plan, find_checkpoints(storage, experiment))
        todo = [t for t in trials if t.status == "pending"]
        outcome = SweepOutcome(
            plan, trials, len(trials) - len(todo), stale, 0.0, resumed=sum(t.resume_from is not None for t in todo)
        )
        if todo:
            joined = address or os.environ.get("RAY_ADDRESS")
            where = f"cluster at {joined}" if joined else ("local instance" if ray_started else "running instance")
            line = _start_line(where, resources, outcome, (cpus, gpus), retries, f"{storage}/{experiment}")
            console.print(line, highlight=False)
            tune_run = _tuner_args(plan, todo, {"cpu": cpus, "gpu": gpus}, storage, experiment, retries)
            _fit(store, outcome, todo, console, tune_run, tensorboard=tensorboard, trackers=trackers)
            _record_unfinished(store, todo, outcome)
        outcome.wall_seconds = time.perf_counter() - started_at
        return outcome
    finally:
        if store is not None:
            store.close()
        if ray_started:
            stop_ray(local, outcome, runs_dir)
        elif outcome is not None and (outcome.retries or outcome.count("failed")):
            outcome.ray_logs = CLUSTER_LOGS


def _start_line(
    where: str, resources: dict, outcome: SweepOutcome, per_trial: tuple[float, float], retries: int, checkpoints: str
) -> str:
    """What the sweep is about to do, said once before the first trial starts."""
    import ray

    alive = len([n for n in ray.nodes() if n.get("Alive")])
    cpus, gpus = per_trial
    to_run = len(outcome.trials) - outcome.already_done
    return (
        f"ray: {where} ({alive} node(s), "
        f"{resources.get('CPU', 0):g} CPUs, {resources.get('GPU', 0):g} GPUs); "
        f"{to_run} trials to run ({outcome.already_done} already done, {outcome.resumed} resuming "
        f"from a checkpoint), {cpus:g} CPU + {gpus:g} GPU each, at most "
        f"{outcome.plan.grid.max_concurrent or 'as resources allow'} at once, up to {retries} retries each; "
        f"checkpoints in {checkpoints}"
    )


def _fit(
    store, outcome: SweepOutcome, todo: list[TrialOutcome], console, tune_run: dict, *, tensorboard, trackers
) -> None:
    """Tuner.fit of the trials in `todo`, with the driver's callbacks and the live view. Ctrl+C or
    SIGTERM ends it early, as Tune stops on Ctrl+C (raising from a signal handler inside Ray's
    compiled code would be an internal error): `outcome.interrupted` (set by `_record_unfinished`),
    and for SIGTERM `outcome.terminated` (the CLI's exit code tells them apart, as `granet run`'s)."""
    plan = outcome.plan
    best = max(
        (t.final.get("final_test_acc") or 0.0 for t in outcome.trials if not t.ran and t.status == "completed"),
        default=None,
    )
    # No tracebacks of failed trials from Tune's loggers: each is recorded and summarised.
    for name in ("ray.tune.execution.tune_controller", "ray.tune.tune", "ray.tune.execution.experiment_state"):
        logging.getLogger(name).setLevel(logging.CRITICAL)

    def on_term(signum, frame):
        outcome.terminated = True
        on_int = signal.getsignal(signal.SIGINT)
        if callable(on_int) and on_int is not signal.default_int_handler:
            on_int(signal.SIGINT, frame)  # Tune's own Ctrl+C handler: the trials stop, fit returns
            return
        raise _Terminated()  # before Tune's handler is in place, or a second SIGTERM

    old_term = signal.signal(signal.SIGTERM, on_term) if _main_thread() else None
    display = Display(console, plan, len(todo), best)
    store_callback = None
    try:
        with tune_env(), quiet_ray_errors(), display:
            store_callback = make_callback(
                store, plan, {t.run_id: t for t in todo}, display, tune_run["retries"], outcome, tensorboard
            )
            # --wandb / --mlflow: Ray Tune's logger callbacks (trackers.RayTrackers)
            callbacks = [store_callback, *(trackers.callbacks() if trackers else [])]
            # failed trials do not raise: each is recorded by the callback
            _tuner(callbacks=callbacks, **tune_run).fit()
    except _Terminated:  # SIGTERM
        outcome.interrupted = True
    except KeyboardInterrupt:  # a second Ctrl+C while Tune stops
        outcome.interrupted = True
    finally:
        if old_term is not None:
            signal.signal(signal.SIGTERM, old_term)
        if store_callback is not None:
            store_callback.flush()  # epochs still waiting, before running trials are marked interrupted


def _tuner_args(
    plan: SweepPlan, todo: list[TrialOutcome], resources: dict, storage: str, experiment: str, retries: int
) -> dict[str, Any]:
    """`_tuner`'s arguments but the callbacks: the trials' configs and where Tune keeps its checkpoints."""
    space = _param_space(plan, todo, threads=max(1, int(resources["cpu"])))
    return dict(plan=plan, space=space, resources=resources, storage=storage, experiment=experiment, retries=retries)


def _tuner(plan: SweepPlan, space: list[dict], resources: dict, storage: str, experiment: str, callbacks, retries: int):
    """The Tune run: a grid over the trials' configs, one checkpointed trial per point, retried
    `retries` times, trial names as granet's, and the driver's callbacks."""
    from ray import tune

    return tune.Tuner(
        tune.with_resources(trainable, resources),
        param_space={"point": tune.grid_search(space)},
        tune_config=tune.TuneConfig(
            max_concurrent_trials=plan.grid.max_concurrent,
            reuse_actors=True,
            trial_name_creator=lambda tr: tr.config["point"]["name"],
            trial_dirname_creator=lambda tr: f"{tr.config['point']['name']}_{tr.trial_id}",
        ),
        run_config=tune.RunConfig(
            storage_path=storage,
            name=experiment,
            verbose=0,
            callbacks=callbacks,
            failure_config=tune.FailureConfig(max_failures=retries, fail_fast=False),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=CHECKPOINTS_KEPT),
        ),
    )


def _done_outcome(p, row: dict) -> TrialOutcome:
    final = {k: row.get(k) for k in ("final_test_acc", "best_test_acc", "achieved_density", "wall_seconds")}
    return TrialOutcome(p, row["run_id"], row["status"], row.get("error"), final, ran=False)


def _mark_stale(store, plan: SweepPlan) -> int:
    """'running' rows of this sweep left by a driver that was killed -> interrupted (resumable)."""
    stale = store.runs(sweep=plan.sweep_id, status="running")
    for r in stale:
        store.fail_run(r["run_id"], "interrupted", INTERRUPTED)
    return len(stale)


def _plan_trials(store, plan: SweepPlan, checkpoints: dict[str, dict]) -> list[TrialOutcome]:
    """Every point as done (by an earlier invocation) or to run, with a new run id, or the run id of
    the earlier run its checkpoint in storage continues (its rows are replaced, attempts add up)."""
    prior = pick(store.runs(sweep=plan.sweep_id))
    trials = []
    for p in plan.points:
        row = prior.get(p.spec_hash)
        if row is not None and row["status"] in DONE_STATUSES:
            trials.append(_done_outcome(p, row))
            continue
        t = TrialOutcome(p, f"{p.spec_hash[:8]}-{uuid.uuid4().hex[:8]}")
        ck = checkpoints.get(p.spec_hash)
        if ck is not None:
            t.resume_from, t.resume_epoch = ck["path"], int(ck["epoch"])
            earlier = store.run(ck.get("run_id") or "")
            if (
                earlier is not None
                and earlier.get("sweep_id") == plan.sweep_id
                and earlier.get("spec_hash") == p.spec_hash
            ):
                t.run_id = earlier["run_id"]
                t.prior_attempts = int(earlier.get("attempts") or 1)
        trials.append(t)
    return trials


def _param_space(plan: SweepPlan, todo: list[TrialOutcome], *, threads: int) -> list[dict[str, Any]]:
    """One Tune config per trial to run: what `trainable` needs (plain JSON-able values)."""
    return [
        {
            "run_id": t.run_id,
            "sweep_id": plan.sweep_id,
            "name": t.point.trial_name,
            "spec_hash": t.point.spec_hash,
            "spec_json": json.dumps(plan.run_spec(t.point).normalised()),
            "resume_from": t.resume_from,
            "threads": threads,
            "checkpoint_every": plan.grid.checkpoint_every,
        }
        for t in todo
    ]


def _record_unfinished(store, todo: list[TrialOutcome], outcome: SweepOutcome) -> None:
    """Ctrl+C / SIGTERM: Tune stopped the trials before their end; running ones are recorded
    interrupted (resumable), and any left means the sweep was interrupted."""
    for t in todo:
        if t.status == "running":
            t.status, t.error = "interrupted", INTERRUPTED
            assert t.run_id is not None  # every trial to run is given its run id when it is planned
            store.fail_run(t.run_id, "interrupted", INTERRUPTED)
            outcome.interrupted = True
        elif t.status == "pending":
            outcome.interrupted = True


#: Tune settings of the driver (a value the user exported wins):
TUNE_ENV = {
    # the legacy reporter honours verbose=0: no tables of Tune's own beside ours
    "RAY_AIR_NEW_OUTPUT": "0",
    # results buffered in the trial for up to 0.5 s (FIFO scheduling allows it); a report with a
    # checkpoint (every epoch) is sent at once
    "TUNE_RESULT_BUFFER_LENGTH": "1000",
    "TUNE_RESULT_BUFFER_MIN_TIME_S": "0.5",
    # no per-trial result.json/progress.csv/TensorBoard files: the results db is the record
    "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",
}


@contextmanager
def tune_env() -> Iterator[None]:
    before = {k: os.environ.get(k) for k in TUNE_ENV}
    for k, v in TUNE_ENV.items():
        os.environ.setdefault(k, v)
    try:
        yield
    finally:
        for k, old in before.items():
            if old is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = old


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()
