"""granet tune: its options, the printed choice and result; the search and the seeds sweep live in
granet_cli/sweep/tune.py and tune_run.py."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Annotated

import typer

from .app import EXIT_SIGINT, EXIT_SIGTERM, DbOpt, SetOpt, app, err, fail, out, resolve_db
from .sweep import (
    SweepAddressOpt,
    SweepCheckpointEveryOpt,
    SweepCpusPerTrialOpt,
    SweepDensitiesOpt,
    SweepGpusPerTrialOpt,
    SweepMaxConcurrentOpt,
    SweepMaxFailuresOpt,
    SweepMethodsOpt,
    SweepRunsDirOpt,
    SweepSpecOpt,
    SweepStoragePathOpt,
    sweep_command,
)

TuneParamOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--param",
        help=(
            "A spec field to search and its distribution: FIELD=uniform:LOW:HIGH, loguniform:LOW:HIGH, int:LOW:HIGH or "
            "choice:V1,V2,... e.g. --param optim.lr=loguniform:0.01:0.3 (repeatable)."
        ),
    ),
]
TuneSamplesOpt = Annotated[int, typer.Option("--samples", help="Trials per method x density (random, optuna).")]
TuneSearchOpt = Annotated[
    str,
    typer.Option(
        "--search", help="random (Tune's BasicVariantGenerator), optuna (OptunaSearch) or grid (choices only)."
    ),
]
TuneSchedulerOpt = Annotated[
    str, typer.Option("--scheduler", help="asha (AsyncHyperBandScheduler on the per-epoch val_acc) or none.")
]
TuneSeedsOpt = Annotated[
    str | None,
    typer.Option(
        "--seeds", help="Seeds the chosen configuration is rerun over (default: 0); the search uses the first."
    ),
]
TuneNameOpt = Annotated[
    str | None,
    typer.Option(
        "--name", help="Name of the seeds sweep (the tuning trials are sweep NAME:tuning); the same name resumes."
    ),
]


@app.command()
def tune(
    spec: SweepSpecOpt = None,
    methods: SweepMethodsOpt = None,
    densities: SweepDensitiesOpt = None,
    param: TuneParamOpt = None,
    samples: TuneSamplesOpt = 8,
    search: TuneSearchOpt = "random",
    scheduler: TuneSchedulerOpt = "asha",
    seeds: TuneSeedsOpt = None,
    set_: SetOpt = None,
    name: TuneNameOpt = None,
    db: DbOpt = None,
    runs_dir: SweepRunsDirOpt = Path("runs"),
    storage_path: SweepStoragePathOpt = None,
    cpus_per_trial: SweepCpusPerTrialOpt = None,
    gpus_per_trial: SweepGpusPerTrialOpt = None,
    max_concurrent: SweepMaxConcurrentOpt = None,
    max_failures: SweepMaxFailuresOpt = None,
    checkpoint_every: SweepCheckpointEveryOpt = None,
    address: SweepAddressOpt = None,
) -> None:
    """Tune spec fields per method x density on the validation split (Ray Tune search + ASHA), then rerun each
    cell's best over --seeds as a sweep: baselines tuned as fairly as the method."""
    from ..spec import SpecError
    from ..store import StoreError
    from ..sweep import SweepError
    from ..sweep.tune import plan_tune
    from ..sweep.tune_run import run_tune

    try:
        tp = plan_tune(
            spec,
            set_,
            params=param,
            samples=samples,
            search=search,
            scheduler=scheduler,
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
    except SpecError as e:
        fail(str(e))
    db_path = resolve_db(db)
    options: dict = {"methods": methods, "densities": densities, "param": param, "samples": samples}
    options.update(search=search, scheduler=scheduler, seeds=seeds, storage_path=storage_path, address=address)
    options.update(max_failures=max_failures, checkpoint_every=checkpoint_every, cpus_per_trial=cpus_per_trial)
    options.update(gpus_per_trial=gpus_per_trial, max_concurrent=max_concurrent)
    again = sweep_command(tp.seeds_plan.spec_path, set_, db_path, runs_dir, name=tp.seeds_plan.name, **options)
    again = again.replace("granet sweep", "granet tune", 1)
    if tp.val_defaulted:
        out.print(
            "data.val_fraction: 0 in the spec; tuning on a validation split of 0.1 of the training set",
            highlight=False,
        )
    try:
        result = run_tune(tp, db_path, runs_dir=runs_dir, address=address, storage_path=storage_path)
    except (StoreError, SweepError) as e:
        fail(str(e))
    except KeyboardInterrupt:
        err.print(f"interrupted; resume (finished trials are kept) with: {again}", highlight=False, soft_wrap=True)
        raise typer.Exit(EXIT_SIGINT) from None
    _print_result(result, db_path)
    if result.interrupted:
        what = "terminated (SIGTERM)" if result.terminated else "interrupted"
        err.print(f"{what}; resume (finished trials are kept) with: {again}", highlight=False, soft_wrap=True)
        raise typer.Exit(EXIT_SIGTERM if result.terminated else EXIT_SIGINT)
    if result.sweep is not None and result.sweep.count("failed"):
        raise typer.Exit(1)
    if any(c.chosen is None for c in result.cells):  # a cell without a tuned configuration: no fair comparison
        raise typer.Exit(1)


def _print_result(result, db_path: Path) -> None:
    from ..sweep import summary_line, summary_table
    from ..sweep.tune import cell_key

    for c in result.cells:
        counts = {s: sum(t["status"] == s for t in c.trials) for s in ("completed", "stopped", "diverged", "failed")}
        said = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
        if c.chosen is None:
            out.print(f"{cell_key(c.cell)}: no completed trial ({said or 'none ran'}); not rerun", highlight=False)
            continue
        values = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in c.chosen.items())
        out.print(
            f"{cell_key(c.cell)}: {'best so far' if result.sweep is None and result.interrupted else 'chose'} {values} (val_acc {100 * c.chosen_val:.2f} %, run {c.chosen_run}; {said})",
            highlight=False,
        )
    if result.sweep is not None:
        out.print(summary_table(result.sweep))
        out.print(summary_line(result.sweep), highlight=False)
    name = result.plan.seeds_plan.name
    report_cmd = shlex.join(["granet", "report", "--sweep", name, "--db", str(db_path)])
    out.print(f"results: {db_path}   report: {report_cmd}", highlight=False, soft_wrap=True)
