"""`granet sweep`: methods x densities x seeds over one base spec, as Ray Tune trials.

    plan_sweep(...)  -> SweepPlan   every grid point built and validated, nothing written
    prior_state(...) -> {spec_hash: runs row}   what an earlier run of this sweep already did
    run_sweep(...)   -> SweepOutcome             the trials, on a local Ray instance or a cluster

Each grid point is one Ray Tune trial running the same `train.run` as `granet run`; it
reports every epoch (and a last result with the final metrics) through `ray.tune.report`.
Only the driver writes the results db: a `ray.tune.Callback` turns those reports into
the same `Store` calls `granet run` makes. A sweep's id comes from its name, and the
default name from a hash of the base spec and the grid, so running the same sweep again
resumes it: points with a completed (or diverged: deterministic, it would diverge again)
run in this sweep are skipped, failed and interrupted ones run again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import signal
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from .records import record_for, store_final
from .spec import RunSpec, SpecError, SweepSpec, build_sweep_spec, load_run_spec, read_yaml, with_overrides

DEFAULT_SPEC = Path("experiments") / "quickstart.yaml"
#: statuses that count as "done": a rerun of the sweep skips these points
DONE_STATUSES = ("completed", "diverged")
INTERRUPTED = "interrupted"
#: result keys of the trainable's reports (JSON strings, decoded by the driver)
EPOCH_KEY, UPDATES_KEY, FINAL_KEY = "granet_epoch", "granet_mask_updates", "granet_final"


def default_spec_path() -> Path:
    """experiments/quickstart.yaml of the working directory, else the one beside this package."""
    if DEFAULT_SPEC.is_file():
        return DEFAULT_SPEC
    shipped = Path(__file__).resolve().parents[1] / DEFAULT_SPEC
    return shipped if shipped.is_file() else DEFAULT_SPEC


# ----------------------------------------------------------------------------- the plan
@dataclass(frozen=True)
class Point:
    """One grid point: a fully validated RunSpec."""

    method: str
    density: float  # target final density (1.0 for dense)
    seed: int
    spec: RunSpec

    @property
    def spec_hash(self) -> str:
        return self.spec.spec_hash()

    @property
    def label(self) -> str:
        return f"{self.method} d={self.density:g} seed={self.seed}"

    @property
    def trial_name(self) -> str:
        return f"{self.method}_d{self.density:g}_s{self.seed}"


@dataclass
class SweepPlan:
    name: str
    sweep_id: str
    spec_path: Path
    base: RunSpec
    grid: SweepSpec
    points: list[Point]
    overrides: list[str] = field(default_factory=list)

    def grid_record(self) -> dict[str, Any]:
        """What `store.add_sweep` keeps: the grid, the base spec and every point's spec_hash."""
        return {
            "spec": str(self.spec_path), "overrides": list(self.overrides),
            "methods": self.grid.methods, "densities": self.grid.densities, "seeds": self.grid.seeds,
            "base_spec_hash": self.base.spec_hash(), "base_spec": self.base.normalised(),
            "points": [{"method": p.method, "density": p.density, "seed": p.seed, "spec_hash": p.spec_hash}
                       for p in self.points],
        }


def _parse_list(text: str | None, convert: Callable[[str], Any], flag: str, what: str,
                problems: list[str]) -> list | None:
    if text is None:
        return None
    values = []
    for item in (t.strip() for t in text.split(",")):
        if not item:
            continue
        try:
            values.append(convert(item))
        except ValueError:
            problems.append(f"{flag}: {item!r} is not {what}")
    return values


def sweep_identity(base: RunSpec, grid: SweepSpec) -> tuple[str, str]:
    """(name, sweep_id): the default name hashes the base spec and the grid (order-free);
    the id is derived from the name, so the same sweep maps to the same id every time."""
    name = grid.name
    if name is None:
        key = {"base": base.spec_hash(), "methods": sorted(grid.methods),
               "densities": sorted(grid.densities), "seeds": sorted(grid.seeds)}
        name = "sweep-" + hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:8]
    return name, "sw-" + hashlib.sha256(name.encode()).hexdigest()[:12]


def expand_grid(base: RunSpec, grid: SweepSpec) -> list[Point]:
    """Every point of the grid, each re-validated; SpecError lists the problems of ALL points.

    `dense` gives one point per seed (the densities do not apply). The method is only
    overridden when it differs from the base spec's, so preset fields the user set for the
    base method (e.g. GraNet's init_density) stay when that method is swept.
    """
    points, problems, seen = [], [], set()
    for method in grid.methods:
        for density in ([1.0] if method == "dense" else grid.densities):
            for seed in grid.seeds:
                overrides: dict[str, Any] = {"seed": seed}
                if method != base.sparsity.method:
                    overrides["sparsity.method"] = method
                if method != "dense":
                    overrides["sparsity.final_density"] = density
                label = f"method={method} density={density:g} seed={seed}"
                try:
                    spec = with_overrides(base, overrides)
                except SpecError as e:
                    problems.extend(f"{label}: {line}" for line in e.problems)
                    continue
                point = Point(method, density, seed, spec)
                if point.spec_hash not in seen:
                    seen.add(point.spec_hash)
                    points.append(point)
    if problems:
        raise SpecError(problems)
    return points


def plan_sweep(spec_path: Path | None, overrides: list[str] | None = None, *, methods: str | None = None,
               densities: str | None = None, seeds: str | None = None, name: str | None = None,
               cpus_per_trial: float | None = None, gpus_per_trial: float | None = None,
               max_concurrent: int | None = None) -> SweepPlan:
    """Base spec + the file's `sweep:` section + CLI flags (which win) -> a validated plan.

    Raises SpecError with one line per problem (of the flags, the grid, the base spec and
    every grid point); nothing is written anywhere."""
    path = Path(spec_path) if spec_path is not None else default_spec_path()
    section = read_yaml(path).get("sweep") or {}
    if not isinstance(section, dict):
        raise SpecError([f"{path}: sweep: a mapping of methods/densities/seeds/name, got {type(section).__name__}"])
    problems: list[str] = []
    flags = {
        "methods": _parse_list(methods, str, "--methods", "a method", problems),
        "densities": _parse_list(densities, float, "--densities", "a number", problems),
        "seeds": _parse_list(seeds, int, "--seeds", "an integer", problems),
        "name": name, "cpus_per_trial": cpus_per_trial, "gpus_per_trial": gpus_per_trial,
        "max_concurrent": max_concurrent,
    }
    merged = {**section, **{k: v for k, v in flags.items() if v is not None}}
    grid = base = None
    try:
        grid = build_sweep_spec(merged)
    except SpecError as e:
        problems.extend(e.problems)
    try:
        base = load_run_spec(path, overrides)
    except SpecError as e:
        problems.extend(f"base spec: {line}" for line in e.problems)
    if problems or grid is None or base is None:
        raise SpecError(problems)
    points = expand_grid(base, grid)
    sweep_name, sweep_id = sweep_identity(base, grid)
    return SweepPlan(sweep_name, sweep_id, path, base, grid, points, list(overrides or []))


# ----------------------------------------------------------------------------- db state
def _pick(rows: list[dict]) -> dict[str, dict]:
    """spec_hash -> the most telling run: completed, else diverged, else the latest."""
    rank = {"completed": 3, "diverged": 2}
    best: dict[str, dict] = {}
    for r in rows:  # ordered by started_at
        cur = best.get(r["spec_hash"])
        if cur is None or rank.get(r["status"], 0) >= rank.get(cur["status"], 0):
            best[r["spec_hash"]] = r
    return best


def prior_state(db_path: Path, sweep_id: str) -> dict[str, dict]:
    """Read-only view (works while another sweep holds the db) of this sweep's runs by spec_hash.

    A db that does not exist yet is an empty sweep, and is not created."""
    from .store import Store

    if not Path(db_path).exists():
        return {}
    with Store(db_path, read_only=True) as st:
        return _pick(st.runs(sweep=sweep_id))


def point_state(row: dict | None) -> str:
    if row is None or row["status"] not in DONE_STATUSES:
        return "to run"
    return "done" if row["status"] == "completed" else f"done ({row['status']})"


# ----------------------------------------------------------------------------- the trial
def _trainable(config: dict) -> None:
    """One Ray Tune trial: `train.run` of one point, every epoch reported to the driver."""
    from ray import tune

    from . import train

    point = config["point"]
    spec = RunSpec.model_validate_json(point["spec_json"])

    def on_epoch(row: dict, updates: list[dict]) -> None:
        tune.report({EPOCH_KEY: json.dumps(row), UPDATES_KEY: json.dumps(updates),
                     "epoch": row["epoch"], "test_acc": row["test_acc"]})

    result = train.run(spec, point["run_dir"], on_epoch=on_epoch, threads=point["threads"])
    tune.report({FINAL_KEY: json.dumps({"status": result.status, "error": result.error,
                                        "final": result.final, "layers": result.layers}),
                 "final_test_acc": result.final.get("final_test_acc"), "run_status": result.status})


# ----------------------------------------------------------------------------- the driver
@dataclass
class TrialOutcome:
    point: Point
    run_id: str | None = None
    status: str = "pending"  # pending | running | completed | diverged | failed
    error: str | None = None
    final: dict = field(default_factory=dict)
    ran: bool = False  # ran in this invocation (False: done by an earlier one)


@dataclass
class SweepOutcome:
    plan: SweepPlan
    trials: list[TrialOutcome]
    already_done: int
    interrupted_marked: int
    wall_seconds: float
    interrupted: bool = False

    @property
    def ran(self) -> list[TrialOutcome]:
        return [t for t in self.trials if t.ran]

    def count(self, status: str) -> int:
        return sum(t.status == status for t in self.ran)


class SweepError(RuntimeError):
    """A problem starting the sweep (Ray, resources); one line."""


class _Terminated(BaseException):
    """SIGTERM: unwinds Tuner.fit so the running trials are recorded as interrupted."""


def _error_line(trial: Any) -> str:
    """The last line of the trial's error.txt (`ValueError: ...`), else the error's repr."""
    path = getattr(trial, "error_file", None)
    try:
        if path and Path(path).is_file():
            lines = [ln.strip() for ln in Path(path).read_text(errors="replace").splitlines() if ln.strip()]
            if lines:
                return lines[-1][:500]
    except OSError:
        pass
    err = trial.get_error() if hasattr(trial, "get_error") else None
    return f"{type(err).__name__}: {err}"[:500] if err is not None else "trial failed (no error recorded)"


def _local_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _init_ray(address: str | None) -> bool:
    """Join `address` / $RAY_ADDRESS, else start a local instance on all CPUs. True if we started it."""
    import ray

    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS") or None
    quiet = dict(logging_level=logging.ERROR, log_to_driver=False)
    try:
        if address:
            ray.init(address=address, **quiet)
        else:  # "local": never silently join a cluster some earlier `ray start` left running
            ray.init(address="local", num_cpus=_local_cpus(), include_dashboard=False, **quiet)
    except Exception as e:  # ConnectionError, RuntimeError, ...
        msg = f"{type(e).__name__}: {' '.join(str(e).split())[:300]}"
        if not address:
            raise SweepError(f"could not start a local Ray instance: {msg}") from None
        raise SweepError(f"could not join the Ray cluster at {address}: {msg} (is it running? a cluster with "
                         "token authentication also needs RAY_AUTH_MODE=token and its token in $RAY_AUTH_TOKEN "
                         "or ~/.ray/auth_token)") from None
    return True


class _Display:
    """Live terminal progress (rich): counts, best test accuracy so far, one line per finished trial."""

    def __init__(self, console, plan: SweepPlan, todo: int, best: float | None):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.console = console
        self.todo = todo
        self.running = self.done = self.failed = 0
        self.best = best
        self.best_label = "earlier run" if best is not None else ""
        self.progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(bar_width=20), MofNCompleteColumn(),
                                 TextColumn("{task.fields[info]}"), TimeElapsedColumn(),
                                 console=console, transient=False)
        self.task = self.progress.add_task(plan.name, total=todo, info=self._info())

    def _info(self) -> str:
        pending = self.todo - self.running - self.done - self.failed
        best = f"{100 * self.best:.2f} % ({self.best_label})" if self.best is not None else "-"
        return (f"done {self.done} | running {self.running} | pending {pending} | failed {self.failed} | "
                f"best test acc {best}")

    def __enter__(self) -> "_Display":
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.update(self.task, info=self._info())
        self.progress.stop()

    def refresh(self) -> None:
        self.progress.update(self.task, completed=self.done + self.failed, info=self._info())

    def started(self) -> None:
        self.running += 1
        self.refresh()

    def epoch(self, t: TrialOutcome, acc: float | None) -> None:
        if acc is not None and (self.best is None or acc > self.best):
            self.best, self.best_label = acc, t.point.label
        self.refresh()

    def finished(self, t: TrialOutcome) -> None:
        self.running = max(0, self.running - 1)
        if t.status == "failed":
            self.failed += 1
            self.progress.console.print(f"[red]x[/red] {t.point.label}: failed: {t.error}", highlight=False)
        else:
            self.done += 1
            acc = t.final.get("final_test_acc")
            acc_s = f"{100 * acc:.2f} %" if acc is not None else "-"
            wall = t.final.get("wall_seconds")
            wall_s = f"{wall:.1f} s" if wall is not None else "-"
            mark = "[green]ok[/green]" if t.status == "completed" else "[yellow]!![/yellow]"
            extra = f" ({t.error})" if t.error else ""
            self.progress.console.print(f"{mark} {t.point.label}: {t.status}{extra}, test acc {acc_s}, {wall_s}",
                                        highlight=False)
        self.refresh()


def _make_callback(store, plan: SweepPlan, by_run: dict[str, TrialOutcome], display: _Display):
    """The driver-side ray.tune.Callback that writes every trial to the results db.

    Its state lives on the instance (never in closures), and is left out when Tune
    pickles its RunConfig: the db handle and the display stay in this process."""
    from ray import tune

    class StoreCallback(tune.Callback):
        def __init__(self, store, plan, by_run, display) -> None:
            self.store, self.plan, self.by_run, self.display = store, plan, by_run, display

        def __getstate__(self) -> dict:
            return {}

        def __setstate__(self, state: dict) -> None:
            self.store = self.plan = self.display = None
            self.by_run = {}

        def _outcome(self, trial) -> TrialOutcome | None:
            return self.by_run.get(trial.config.get("point", {}).get("run_id"))

        def _start(self, t: TrialOutcome) -> None:
            self.store.start_run(record_for(t.point.spec, t.run_id, self.plan.sweep_id))
            t.status, t.ran = "running", True
            self.display.started()

        def _fail(self, t: TrialOutcome, error: str) -> None:
            t.status, t.error = "failed", error
            self.store.fail_run(t.run_id, "failed", error)
            self.display.finished(t)

        def on_trial_start(self, iteration, trials, trial, **info):
            t = self._outcome(trial)
            if t is not None and t.status == "pending":
                self._start(t)

        def on_trial_result(self, iteration, trials, trial, result, **info):
            t = self._outcome(trial)
            if t is None or t.status != "running":
                return
            if EPOCH_KEY in result:
                row = json.loads(result[EPOCH_KEY])
                self.store.add_epoch(t.run_id, row)
                updates = json.loads(result.get(UPDATES_KEY) or "[]")
                if updates:
                    self.store.add_mask_updates(t.run_id, updates)
                self.display.epoch(t, row.get("test_acc"))
            if FINAL_KEY in result:
                done = json.loads(result[FINAL_KEY])
                t.final, t.error = done["final"], done.get("error")
                if done["status"] == "completed":
                    self.store.finish_run(t.run_id, store_final(t.final), done["layers"])
                    t.status = "completed"
                else:
                    t.status = "diverged" if done["status"] == "diverged" else "failed"
                    self.store.fail_run(t.run_id, t.status, t.error or t.status, store_final(t.final))
                self.display.finished(t)

        def on_trial_complete(self, iteration, trials, trial, **info):
            t = self._outcome(trial)
            if t is not None and t.status == "running":  # returned without its final report
                self._fail(t, "trial ended without a final result")

        def on_trial_error(self, iteration, trials, trial, **info):
            t = self._outcome(trial)
            if t is None or t.status not in ("pending", "running"):
                return
            if t.status == "pending":  # failed before it started: recorded all the same
                self._start(t)
            self._fail(t, _error_line(trial))

    return StoreCallback(store, plan, by_run, display)


def trial_run_dir(runs_dir: Path, sweep_id: str, spec_hash: str) -> Path:
    """A trial's checkpoint folder: per sweep, so it never overwrites a `granet run` checkpoint
    (runs/<spec_hash>) that `granet run --resume` may still need."""
    return Path(runs_dir) / "sweeps" / sweep_id / spec_hash


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-") or "sweep"


def run_sweep(plan: SweepPlan, db_path: Path, *, runs_dir: Path = Path("runs"), address: str | None = None,
              console=None) -> SweepOutcome:
    """Run every point of `plan` not done yet as a Ray Tune trial; the driver writes the db.

    Raises SweepError (Ray could not start, resources too small) and store.StoreError."""
    from rich.console import Console

    from .store import Store

    console = console or Console()
    started_at = time.perf_counter()
    grid = plan.grid
    store = Store(db_path)
    ray_started = False
    try:
        stale = store.runs(sweep=plan.sweep_id, status="running")
        for r in stale:  # left behind by a sweep that was killed
            store.fail_run(r["run_id"], "failed", INTERRUPTED)
        prior = _pick(store.runs(sweep=plan.sweep_id))
        store.add_sweep(plan.sweep_id, plan.name, plan.grid_record())
        trials: list[TrialOutcome] = []
        for p in plan.points:
            row = prior.get(p.spec_hash)
            if row is not None and row["status"] in DONE_STATUSES:
                final = {k: row.get(k) for k in ("final_test_acc", "best_test_acc", "final_density", "wall_seconds")}
                trials.append(TrialOutcome(p, row["run_id"], row["status"], row.get("error"), final, ran=False))
            else:
                trials.append(TrialOutcome(p, f"{p.spec_hash[:8]}-{uuid.uuid4().hex[:8]}"))
        todo = [t for t in trials if t.status == "pending"]
        outcome = SweepOutcome(plan, trials, len(trials) - len(todo), len(stale), 0.0)
        if not todo:
            outcome.wall_seconds = time.perf_counter() - started_at
            return outcome

        import ray
        from ray import tune

        ray_started = _init_ray(address)
        resources = ray.cluster_resources()
        cpus = grid.cpus_per_trial if grid.cpus_per_trial is not None else 1.0
        gpus = grid.gpus_per_trial if grid.gpus_per_trial is not None else (1.0 if resources.get("GPU", 0) > 0 else 0.0)
        for flag, need, kind in (("--cpus-per-trial", cpus, "CPU"), ("--gpus-per-trial", gpus, "GPU")):
            have = resources.get(kind, 0)
            if need > have:
                msg = f"{flag} {need:g}: the Ray cluster has {have:g} {kind}s"
                if ray_started:  # our own local instance never grows: no trial could ever start
                    raise SweepError(msg)
                console.print(f"[yellow]warning:[/yellow] {msg} now; trials wait until it grows", highlight=False)

        joined = address or os.environ.get("RAY_ADDRESS")
        where = f"cluster at {joined}" if joined else ("local instance" if ray_started else "running instance")
        console.print(f"ray: {where} ({resources.get('CPU', 0):g} CPUs, {resources.get('GPU', 0):g} GPUs); "
                      f"{len(todo)} trials to run ({outcome.already_done} already done), {cpus:g} CPU + {gpus:g} GPU "
                      f"each, at most {grid.max_concurrent or 'as resources allow'} at once", highlight=False)
        runs_root = Path(runs_dir).resolve()
        threads = max(1, int(cpus))
        by_run = {t.run_id: t for t in todo}
        space = [{"run_id": t.run_id, "name": t.point.trial_name, "method": t.point.method,
                  "density": t.point.density, "seed": t.point.seed, "spec_hash": t.point.spec_hash,
                  "spec_json": json.dumps(t.point.spec.normalised()),
                  "run_dir": str(trial_run_dir(runs_root, plan.sweep_id, t.point.spec_hash)),
                  "threads": threads} for t in todo]
        best = max((t.final.get("best_test_acc") or 0.0 for t in trials if not t.ran and t.status == "completed"),
                   default=None)

        # No tracebacks of failed trials from Tune's loggers: each is recorded and summarised.
        for name in ("ray.tune.execution.tune_controller", "ray.tune.tune"):
            logging.getLogger(name).setLevel(logging.CRITICAL)

        def on_term(signum, frame):
            raise _Terminated()

        old_term = signal.signal(signal.SIGTERM, on_term) if _main_thread() else None
        display = _Display(console, plan, len(todo), best)
        try:
            with _tune_env(), display:
                tuner = tune.Tuner(
                    tune.with_resources(_trainable, {"cpu": cpus, "gpu": gpus}),
                    param_space={"point": tune.grid_search(space)},
                    tune_config=tune.TuneConfig(
                        max_concurrent_trials=grid.max_concurrent, reuse_actors=True,
                        trial_name_creator=lambda tr: tr.config["point"]["name"],
                        trial_dirname_creator=lambda tr: f"{tr.config['point']['name']}_{tr.trial_id}",
                    ),
                    run_config=tune.RunConfig(
                        storage_path=str(runs_root / "ray"), name=_slug(plan.name), verbose=0,
                        callbacks=[_make_callback(store, plan, by_run, display)],
                        failure_config=tune.FailureConfig(max_failures=0, fail_fast=False),
                    ),
                )
                tuner.fit()  # failed trials do not raise: each is recorded by the callback
        except (_Terminated, KeyboardInterrupt):  # SIGTERM, or a second Ctrl+C while Tune stops
            outcome.interrupted = True
        finally:
            if old_term is not None:
                signal.signal(signal.SIGTERM, old_term)
        for t in todo:  # Ctrl+C / SIGTERM: Tune stopped the trials before their end
            if t.status == "running":
                t.status, t.error = "failed", INTERRUPTED
                store.fail_run(t.run_id, "failed", INTERRUPTED)
                outcome.interrupted = True
            elif t.status == "pending":
                outcome.interrupted = True
        outcome.wall_seconds = time.perf_counter() - started_at
        return outcome
    finally:
        store.close()
        if ray_started:
            import ray

            ray.shutdown()


#: Tune settings of the driver (a value the user exported wins):
TUNE_ENV = {
    # the legacy reporter honours verbose=0: no tables of Tune's own beside ours
    "RAY_AIR_NEW_OUTPUT": "0",
    # results buffered in the trial for up to 0.5 s (FIFO scheduling allows it): a trial
    # trains on instead of waiting for the driver after every epoch's report
    "TUNE_RESULT_BUFFER_LENGTH": "1000",
    "TUNE_RESULT_BUFFER_MIN_TIME_S": "0.5",
    # no per-trial result.json/progress.csv/TensorBoard files: the results db is the record
    "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",
}


@contextmanager
def _tune_env() -> Iterator[None]:
    before = {k: os.environ.get(k) for k in TUNE_ENV}
    for k, v in TUNE_ENV.items():
        os.environ.setdefault(k, v)
    try:
        yield
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


# ----------------------------------------------------------------------------- rendering
def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.2f} %"


def dry_run_table(plan: SweepPlan, prior: dict[str, dict]):
    from rich.table import Table

    table = Table(title=f"sweep {plan.name} ({plan.sweep_id}): {len(plan.points)} points (dry run)")
    for col, just in (("method", "left"), ("density", "right"), ("seed", "right"),
                      ("spec_hash", "left"), ("state", "left")):
        table.add_column(col, justify=just)
    for p in plan.points:
        state = point_state(prior.get(p.spec_hash))
        style = "green" if state.startswith("done") else None
        table.add_row(p.method, f"{p.density:g}", str(p.seed), p.spec_hash, state, style=style)
    return table


def summary_table(outcome: SweepOutcome):
    from rich.table import Table

    plan = outcome.plan
    table = Table(title=f"sweep {plan.name} ({plan.sweep_id})")
    for col in ("method", "density", "seed", "status", "test acc", "final density", "wall", "ran"):
        table.add_column(col, justify="left" if col in ("method", "status", "ran") else "right")
    styles = {"completed": "green", "failed": "red", "diverged": "yellow"}
    for t in outcome.trials:
        status = t.status if t.status != "pending" else "not run"
        fd = t.final.get("final_density")
        wall = t.final.get("wall_seconds")
        table.add_row(t.point.method, f"{t.point.density:g}", str(t.point.seed), status,
                      _pct(t.final.get("final_test_acc")), "-" if fd is None else f"{fd:.4f}",
                      "-" if wall is None else f"{wall:.1f} s", "now" if t.ran else "earlier" if t.run_id and
                      t.status in DONE_STATUSES else "-", style=styles.get(t.status))
    return table


def failures(outcome: SweepOutcome) -> list[str]:
    """One line per trial of this invocation that failed or diverged, with its error."""
    return [f"{t.point.label}: {t.status}: {t.error}" for t in outcome.ran
            if t.status in ("failed", "diverged") and t.error]


def summary_line(outcome: SweepOutcome) -> str:
    ran = outcome.ran
    parts = [f"{outcome.already_done} already done, {len(ran)} ran"]
    if ran:
        parts.append(f"({outcome.count('completed')} completed, {outcome.count('failed')} failed, "
                     f"{outcome.count('diverged')} diverged)")
    if outcome.interrupted_marked:
        parts.append(f"- {outcome.interrupted_marked} interrupted run(s) of an earlier attempt marked failed")
    parts.append(f"- wall time {outcome.wall_seconds:.1f} s")
    return " ".join(parts)
