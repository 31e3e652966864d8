"""granet sweep: its options, the resume hint, the tracker checks and the printed result; the
planning and the Ray Tune run live in granet_cli's sweep modules."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from .app import (
    EXIT_SIGINT,
    EXIT_SIGTERM,
    DbOpt,
    SetOpt,
    app,
    check_runs_dir,
    err,
    fail,
    out,
    require_tracker,
    resolve_db,
)


def sweep_command(
    spec: Path, overrides: list[str] | None, db_path: Path, runs_dir: Path, *, name: str, **options: object
) -> str:
    """The complete `granet sweep` command that resumes this sweep, ready to paste into a shell:
    the options as given (None: not given), the sweep's name, --db and --runs-dir spelled out."""
    argv = ["granet", "sweep", str(spec), "--name", name]
    for key, value in options.items():
        if value is None:
            continue
        flag = "--" + key.replace("_", "-")
        for v in value if isinstance(value, list) else [value]:
            argv += [flag, str(v)]
    argv += [a for s in overrides or [] for a in ("--set", s)]
    argv += ["--db", str(db_path), "--runs-dir", str(runs_dir)]
    return shlex.join(argv)


# ----------------------------------------------------------------------------- granet sweep's options
SweepSpecOpt = Annotated[
    Path | None,
    typer.Argument(
        help="Base run spec; its top-level `sweep:` section may hold the grid (default: experiments/quickstart.yaml)."
    ),
]
SweepMethodsOpt = Annotated[
    str | None,
    typer.Option(
        "--methods",
        help="Comma-separated methods (default: granet,rigl,gmp); dense = one dense run per seed. Choices: granet, granet_uniform, rigl (alias dst), set, gmp, gmp_uniform, static, dense.",
    ),
]
SweepDensitiesOpt = Annotated[
    str | None,
    typer.Option("--densities", help="Comma-separated final densities in (0, 1] (default: 0.05,0.1,0.2)."),
]
SweepSeedsOpt = Annotated[str | None, typer.Option("--seeds", help="Comma-separated seeds (default: 0).")]
SweepAddressOpt = Annotated[
    str | None,
    typer.Option(
        "--address",
        help="Join this Ray cluster (host:port) (default: $RAY_ADDRESS, else a local instance on all CPUs).",
    ),
]
SweepCpusPerTrialOpt = Annotated[
    float | None, typer.Option("--cpus-per-trial", help="CPUs per trial, also its torch threads (default: 1).")
]
SweepGpusPerTrialOpt = Annotated[
    float | None,
    typer.Option("--gpus-per-trial", help="GPUs per trial (default: 1 if the cluster has GPUs, else 0)."),
]
SweepMaxConcurrentOpt = Annotated[
    int | None,
    typer.Option("--max-concurrent", help="At most this many trials at once (default: as resources allow)."),
]
SweepNameOpt = Annotated[
    str | None,
    typer.Option(
        "--name", help="Sweep name; the same name resumes the sweep (default: sweep-<hash of spec and grid>)."
    ),
]
SweepRunsDirOpt = Annotated[
    Path, typer.Option("--runs-dir", help="Parent of the default --storage-path (<runs-dir>/ray).")
]
SweepDryRunOpt = Annotated[
    bool, typer.Option("--dry-run", help="List every point as done / to run; run and write nothing.")
]
SweepGridOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--grid",
        help="One more grid axis over any spec field, e.g. --grid optim.lr=0.05,0.1 (repeatable; values are YAML scalars).",
    ),
]
SweepMaxFailuresOpt = Annotated[
    int | None,
    typer.Option(
        "--max-failures",
        min=0,
        help="Retries of a trial whose node died or that crashed, from its last checkpoint (default: 2).",
    ),
]
SweepCheckpointEveryOpt = Annotated[
    float | None,
    typer.Option(
        "--checkpoint-every",
        min=0,
        metavar="SECONDS",
        help="A trial's Tune checkpoint at most every SECONDS and at its last epoch; a lost node or killed driver costs at most that much work per trial (default: 60; 0: every epoch).",
    ),
]
SweepStoragePathOpt = Annotated[
    str | None,
    typer.Option(
        "--storage-path",
        help="Where Tune keeps trial checkpoints: a local dir, a shared (NFS) path or a URI like s3://bucket/path; on a cluster every node must reach it (default: <runs-dir>/ray).",
    ),
]
SweepQuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No live progress; only the summary at the end.")]
SweepTensorboardOpt = Annotated[
    Path | None,
    typer.Option(
        "--tensorboard",
        help="Also log every trial's epochs (losses, accuracies, density, ITOP rate, lr, mask updates) to TensorBoard under DIR/<run id>/, from the driver (needs the tensorboard package).",
    ),
]
SweepWandbOpt = Annotated[
    str | None,
    typer.Option(
        "--wandb",
        metavar="PROJECT",
        help=(
            "Also log every trial to this Weights & Biases project (Ray Tune's WandbLoggerCallback): a W&B run per "
            "trial named <trial>-<run id>, grouped by the sweep's name, the spec as config, every epoch's losses, "
            "accuracies, density and ITOP rate, and final/* metrics. Needs `pip install wandb` and `wandb login`; "
            "with WANDB_MODE=offline nothing goes over the network: runs are written under ./wandb/ (or "
            "$WANDB_DIR/wandb/) for a later `wandb sync`."
        ),
    ),
]
SweepMlflowOpt = Annotated[
    str | None,
    typer.Option(
        "--mlflow",
        metavar="URI|DIR",
        help=(
            "Also log every trial to MLflow (Ray Tune's MLflowLoggerCallback): a tracking URI (http://host:5000, "
            "sqlite:///mlflow.db) or a local folder, MLflow's file store (no server, no network). An MLflow run per "
            "trial named <trial>-<run id> (tag granet.run_id), the spec as params, every epoch's metrics and "
            "final/*. Needs `pip install mlflow-skinny`."
        ),
    ),
]
SweepMlflowExperimentOpt = Annotated[
    str | None,
    typer.Option("--mlflow-experiment", help="MLflow experiment of --mlflow (default: the sweep's name)."),
]


@app.command()
def sweep(
    spec: SweepSpecOpt = None,
    methods: SweepMethodsOpt = None,
    densities: SweepDensitiesOpt = None,
    seeds: SweepSeedsOpt = None,
    set_: SetOpt = None,
    address: SweepAddressOpt = None,
    cpus_per_trial: SweepCpusPerTrialOpt = None,
    gpus_per_trial: SweepGpusPerTrialOpt = None,
    max_concurrent: SweepMaxConcurrentOpt = None,
    name: SweepNameOpt = None,
    db: DbOpt = None,
    runs_dir: SweepRunsDirOpt = Path("runs"),
    dry_run: SweepDryRunOpt = False,
    grid: SweepGridOpt = None,
    max_failures: SweepMaxFailuresOpt = None,
    storage_path: SweepStoragePathOpt = None,
    checkpoint_every: SweepCheckpointEveryOpt = None,
    quiet: SweepQuietOpt = False,
    tensorboard: SweepTensorboardOpt = None,
    wandb: SweepWandbOpt = None,
    mlflow: SweepMlflowOpt = None,
    mlflow_experiment: SweepMlflowExperimentOpt = None,
) -> None:
    """Methods x densities x seeds (x --grid fields) as Ray Tune trials; rerunning the same sweep runs only what is missing."""
    grid_options = {"methods": methods, "densities": densities, "seeds": seeds, "grid": grid}
    trial_options = {
        "max_failures": max_failures,
        "cpus_per_trial": cpus_per_trial,
        "gpus_per_trial": gpus_per_trial,
        "max_concurrent": max_concurrent,
        "checkpoint_every": checkpoint_every,
    }
    plan_ = _plan(spec, set_, name, grid_options, trial_options)
    db_path = resolve_db(db)
    if not dry_run:  # before Ray starts or the db is opened: nothing is written for a bad folder
        _check_sweep_folders(runs_dir, storage_path, tensorboard)
    trackers = _ray_trackers(wandb, mlflow, mlflow_experiment, plan_.name, check=not dry_run)
    again = sweep_command(
        plan_.spec_path,
        set_,
        db_path,
        runs_dir,
        name=plan_.name,
        **grid_options,
        address=address,
        storage_path=storage_path,
        **trial_options,
        tensorboard=tensorboard,
        wandb=wandb,
        mlflow=trackers.mlflow_uri,
        mlflow_experiment=mlflow_experiment,
    )
    result = _dry_run_or_sweep(
        plan_,
        db_path,
        again,
        dry_run,
        runs_dir=runs_dir,
        address=address,
        storage_path=storage_path,
        console=Console(quiet=True) if quiet else out,
        tensorboard=tensorboard,
        trackers=trackers or None,
    )
    if result is None:  # --dry-run: the table was printed
        return
    _print_sweep_result(result, plan_.name, db_path)
    _exit_for(result, again)


def _plan(spec: Path | None, set_: list[str] | None, name: str | None, grid_options: dict, trial_options: dict):
    """The sweep's points from the spec and the grid options; a bad spec or grid is one line, exit 2."""
    from ..spec import SpecError
    from ..sweep import plan_sweep

    try:
        return plan_sweep(spec, set_, name=name, **grid_options, **trial_options)
    except SpecError as e:
        fail(str(e))


def _dry_run_or_sweep(plan_, db_path: Path, again: str, dry_run: bool, **run_options):
    """--dry-run: print every point as done / to run and return None; else run the sweep and return
    its result. A store or sweep error is one line; Ctrl-C prints the command that resumes it."""
    from ..store import StoreError
    from ..sweep import SweepError, dry_run_table, point_state, prior_state, run_sweep

    try:
        if dry_run:
            prior = prior_state(db_path, plan_)
            out.print(dry_run_table(plan_, prior))
            done = sum(point_state(prior.get(p.spec_hash)) != "to run" for p in plan_.points)
            out.print(f"{done} done, {len(plan_.points) - done} to run", highlight=False)
            return None
        return run_sweep(plan_, db_path, **run_options)
    except (StoreError, SweepError) as e:
        fail(str(e))
    except KeyboardInterrupt:
        err.print(f"interrupted; resume (completed points are skipped) with: {again}", highlight=False, soft_wrap=True)
        raise typer.Exit(EXIT_SIGINT) from None


def _exit_for(result, again: str) -> None:
    """Exit 130 for a sweep stopped by Ctrl-C, 143 by SIGTERM (with the command that resumes it), 1 when
    a trial failed or every trial failed or diverged."""
    if result.interrupted:  # Ctrl+C or SIGTERM: said and exited as `granet run` does
        what = "terminated (SIGTERM)" if result.terminated else "interrupted"
        err.print(f"{what}; resume (completed points are skipped) with: {again}", highlight=False, soft_wrap=True)
        raise typer.Exit(EXIT_SIGTERM if result.terminated else EXIT_SIGINT)
    if result.count("failed"):
        raise typer.Exit(1)
    if result.trials and all(t.status in ("failed", "diverged") for t in result.trials):
        err.print("every trial of this sweep failed or diverged", highlight=False)
        raise typer.Exit(1)


def _check_sweep_folders(runs_dir: Path, storage_path: str | None, tensorboard: Path | None) -> None:
    if storage_path is None:
        check_runs_dir(runs_dir)
    elif "://" not in str(storage_path):
        check_runs_dir(Path(storage_path), "--storage-path")
    if tensorboard is not None:
        require_tracker(tensorboard)


def _print_sweep_result(result, sweep_name: str, db_path: Path) -> None:
    from ..sweep import failures, summary_line, summary_table

    out.print(summary_table(result))
    for line in failures(result):
        out.print(f"[red]x[/red] {line}", highlight=False, soft_wrap=True)
    if result.ray_logs:
        out.print(result.ray_logs, highlight=False, soft_wrap=True)
    out.print(summary_line(result), highlight=False)
    report_cmd = shlex.join(["granet", "report", "--sweep", sweep_name, "--db", str(db_path)])
    out.print(f"results: {db_path}   report: {report_cmd}", highlight=False, soft_wrap=True)


def _ray_trackers(wandb: str | None, mlflow: str | None, experiment: str | None, sweep_name: str, *, check: bool):
    """--wandb / --mlflow as sweep.trackers.RayTrackers; with `check`, refused (one line, exit 2) before
    anything is written: a package missing, no W&B login outside offline mode, a folder not writable."""
    from ..sweep.trackers import (
        RayTrackers,
        TrackerError,
        local_mlflow_folder,
        mlflow_tracking_uri,
        require_mlflow,
        require_wandb,
    )

    if wandb is not None and not wandb.strip():
        fail("--wandb: expected a W&B project name")
    if mlflow is not None and not mlflow.strip():
        fail("--mlflow: expected a tracking URI or a folder")
    if mlflow is None and experiment is not None:
        fail("--mlflow-experiment needs --mlflow")
    uri = mlflow_tracking_uri(mlflow) if mlflow is not None else None
    if check:
        try:
            if wandb is not None:
                require_wandb()
            if uri is not None:
                require_mlflow()
        except TrackerError as e:
            fail(str(e))
        folder = local_mlflow_folder(uri) if uri is not None else None
        if folder is not None:
            check_runs_dir(folder, "--mlflow")
    return RayTrackers(wandb_project=wandb, mlflow_uri=uri, mlflow_experiment=experiment, group=sweep_name)
