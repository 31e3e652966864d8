"""The `granet` command line: parse, call, print. The work lives in the modules it calls."""

from __future__ import annotations

import json
import sys
import uuid
from pathlib import Path
from typing import Annotated, NoReturn, Optional

import typer
from rich.console import Console
from rich.table import Table

from .records import FINAL_KEYS, record_for, store_final  # noqa: F401 (re-exported)
from .spec import RunSpec, SpecError, load_run_spec

app = typer.Typer(
    help="Sparse training research: GraNet, RigL, SET, GMP, static and dense, from YAML specs to reports.",
    no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
)
out = Console()
err = Console(stderr=True)

SetOpt = Annotated[Optional[list[str]], typer.Option(
    "--set", help="Override a spec field by its dotted path, e.g. --set sparsity.final_density=0.1 (repeatable).")]
DbOpt = Annotated[Optional[Path], typer.Option(
    "--db", help="DuckDB results file (default: $GRANET_DB, else results/granet.duckdb).")]


def fail(message: str, code: int = 2) -> NoReturn:
    """Bad input: one line per problem on stderr, exit code 2."""
    for line in str(message).splitlines() or [""]:
        err.print(f"[red]error:[/red] {line}", markup=True, highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _load(spec_path: Optional[Path], overrides: Optional[list[str]]) -> RunSpec:
    try:
        return load_run_spec(spec_path, overrides)
    except SpecError as e:
        fail(str(e))


def _db_path(db: Optional[Path]) -> Path:
    from .store import default_db_path

    return Path(db) if db else Path(default_db_path())


# ----------------------------------------------------------------------------- validate / plan
@app.command()
def validate(spec: Annotated[Path, typer.Argument(help="YAML run spec.")], set_: SetOpt = None) -> None:
    """Check a spec and print it normalised (method presets filled in). Exit 2 on any problem."""
    import yaml

    run_spec = _load(spec, set_)
    out.print(yaml.safe_dump(run_spec.normalised(), sort_keys=False).rstrip(), highlight=False)
    out.print(f"# spec_hash: {run_spec.spec_hash()}", style="dim", highlight=False)


@app.command()
def plan(spec: Annotated[Path, typer.Argument(help="YAML run spec.")], set_: SetOpt = None,
         as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of tables.")] = False) -> None:
    """Show per-layer initial densities and the gradual-pruning schedule, without training."""
    from .data import DataError
    from .models import ModelError
    from .plan import build_plan, steps_per_epoch

    run_spec = _load(spec, set_)
    try:
        result = build_plan(run_spec)
    except (DataError, ModelError, ValueError) as e:
        fail(str(e))
    if as_json:
        sys.stdout.write(json.dumps(result) + "\n")
        return
    table = Table(title=f"{result['model']} - {run_spec.sparsity.method} ({run_spec.sparsity.sparse_init})")
    for col in ("layer", "shape", "numel", "density"):
        table.add_column(col, justify="left" if col in ("layer", "shape") else "right")
    for layer in result["layers"]:
        table.add_row(layer["name"], str(layer["shape"]), f"{layer['numel']:,}", f"{layer['density']:.4f}")
    out.print(table)
    out.print(f"sparsifiable weights: {result['total_params']:,}   initial density: {result['density']:.4f}   "
              f"steps/epoch: {steps_per_epoch(run_spec)}")
    if result["schedule"]:
        sched = Table(title=f"gradual pruning: {len(result['schedule'])} events")
        sched.add_column("event", justify="right")
        sched.add_column("step", justify="right")
        sched.add_column("epoch", justify="right")
        sched.add_column("density", justify="right")
        spe = steps_per_epoch(run_spec)
        for i, ev in enumerate(result["schedule"], 1):
            sched.add_row(str(i), str(ev["step"]), f"{ev['step'] / spe:.1f}", f"{ev['density']:.4f}")
        out.print(sched)
    else:
        out.print("no gradual pruning for this method")


# ----------------------------------------------------------------------------- run
@app.command()
def run(
    spec: Annotated[Path, typer.Argument(help="YAML run spec, e.g. experiments/quickstart.yaml.")],
    set_: SetOpt = None,
    db: DbOpt = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue this spec's interrupted run from its last epoch checkpoint.")] = False,
    nproc: Annotated[int, typer.Option("--nproc", min=1, help="Data-parallel processes (torch DDP: gloo on CPU, nccl on GPU).")] = 1,
    runs_dir: Annotated[Path, typer.Option("--runs-dir", help="Where checkpoints live (one folder per spec hash).")] = Path("runs"),
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Train one spec; every epoch lands in the results database, then a summary is printed."""
    from . import train
    from .data import DataError
    from .distributed import DistributedSetupError
    from .models import ModelError
    from .store import Store, StoreError

    run_spec = _load(spec, set_)
    db_path = _db_path(db)
    try:
        store = Store(db_path)
    except StoreError as e:
        fail(str(e))
    spec_hash = run_spec.spec_hash()
    run_dir = runs_dir / spec_hash
    meta_path = run_dir / "run.json"
    if resume:
        if not (meta_path.is_file() and (run_dir / train.CHECKPOINT).is_file()):
            store.close()
            fail(f"--resume: no interrupted run of this spec under {run_dir} (no checkpoint)")
        run_id = json.loads(meta_path.read_text())["run_id"]
    else:
        run_id = f"{spec_hash[:8]}-{uuid.uuid4().hex[:8]}"
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / train.CHECKPOINT).unlink(missing_ok=True)
        meta_path.write_text(json.dumps({"run_id": run_id, "spec_hash": spec_hash}))
    record = record_for(run_spec, run_id, sweep_id=None)
    started = False

    def on_start() -> None:
        nonlocal started
        store.start_run(record)
        if resume:
            store.truncate_after(run_id, 0, 0)  # the trainer replays the checkpointed epochs next
        started = True

    def on_epoch(row: dict, updates: list[dict]) -> None:
        store.add_epoch(run_id, row)
        if updates:
            store.add_mask_updates(run_id, updates)

    try:
        if nproc > 1:
            from .distributed import run_distributed

            result = run_distributed(run_spec, run_dir, nproc, resume=resume, on_start=on_start, on_epoch=on_epoch)
        else:
            result = train.run(run_spec, run_dir, resume=resume, on_start=on_start, on_epoch=on_epoch,
                               progress=not quiet)
    except (DataError, ModelError, train.ResumeError, train.DeviceError, DistributedSetupError) as e:
        if started:
            store.fail_run(run_id, "failed", str(e))
        store.close()
        fail(str(e))
    except KeyboardInterrupt:
        if started:
            store.fail_run(run_id, "failed", "interrupted (resume with --resume)")
        store.close()
        err.print(f"interrupted; continue with: granet run {spec} --resume")
        raise typer.Exit(130)
    except Exception as e:  # a crash mid-run: recorded, then shown as one line
        if started:
            store.fail_run(run_id, "failed", f"{type(e).__name__}: {e}")
        store.close()
        fail(f"run {run_id} failed: {type(e).__name__}: {e}", code=1)
    if result.status == "completed":
        store.finish_run(run_id, store_final(result.final), result.layers)
    else:
        store.fail_run(run_id, result.status, result.error or result.status, store_final(result.final))
    store.close()
    print_summary(run_spec, run_id, result, db_path)
    if result.status != "completed":
        raise typer.Exit(1)


def print_summary(spec: RunSpec, run_id: str, result, db_path: Path) -> None:
    f = result.final
    table = Table(title=f"run {run_id}: {result.status}", show_header=False)
    table.add_column("metric")
    table.add_column("value", justify="right")

    def pct(v):
        return "-" if v is None else f"{100 * v:.2f} %"

    rows = [
        ("method / target density", f"{spec.sparsity.method} / {spec.sparsity.final_density:g}"),
        ("final test accuracy", pct(f["final_test_acc"])),
        ("best test accuracy", pct(f["best_test_acc"])),
        *([("final top-5 accuracy", pct(f["final_test_acc5"]))] if f.get("final_test_acc5") is not None else []),
        ("final density", f"{f['final_density']:.4f}"),
        ("ITOP rate", f"{f['itop_rate']:.4f}"),
        ("training FLOPs (x dense)", f"{f['train_flops_frac']:.4f}"),
        ("inference FLOPs (x dense)", f"{f['inference_flops_frac']:.4f}"),
        ("wall time", f"{f['wall_seconds']:.1f} s"),
        ("samples / s", "-" if not f.get("samples_per_second") else f"{f['samples_per_second']:,.0f}"),
        ("results", str(db_path)),
    ]
    if result.error:
        rows.insert(1, ("error", result.error))
    for k, v in rows:
        table.add_row(k, v)
    out.print(table)


# ----------------------------------------------------------------------------- sweep
@app.command()
def sweep(
    spec: Annotated[Optional[Path], typer.Argument(
        help="Base run spec; its top-level `sweep:` section may hold the grid (default: experiments/quickstart.yaml).")] = None,
    methods: Annotated[Optional[str], typer.Option("--methods", help="Comma-separated methods (default: granet,rigl,gmp); dense = one dense run per seed.")] = None,
    densities: Annotated[Optional[str], typer.Option("--densities", help="Comma-separated final densities in (0, 1] (default: 0.05,0.1,0.2).")] = None,
    seeds: Annotated[Optional[str], typer.Option("--seeds", help="Comma-separated seeds (default: 0).")] = None,
    set_: SetOpt = None,
    address: Annotated[Optional[str], typer.Option("--address", help="Join this Ray cluster (host:port) (default: $RAY_ADDRESS, else a local instance on all CPUs).")] = None,
    cpus_per_trial: Annotated[Optional[float], typer.Option("--cpus-per-trial", help="CPUs per trial, also its torch threads (default: 1).")] = None,
    gpus_per_trial: Annotated[Optional[float], typer.Option("--gpus-per-trial", help="GPUs per trial (default: 1 if the cluster has GPUs, else 0).")] = None,
    max_concurrent: Annotated[Optional[int], typer.Option("--max-concurrent", help="At most this many trials at once (default: as resources allow).")] = None,
    name: Annotated[Optional[str], typer.Option("--name", help="Sweep name; the same name resumes the sweep (default: sweep-<hash of spec and grid>).")] = None,
    db: DbOpt = None,
    runs_dir: Annotated[Path, typer.Option("--runs-dir", help="Trial checkpoints (sweeps/<sweep id>/<spec hash>/) and Ray Tune files (ray/).")] = Path("runs"),
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List every point as done / to run; run and write nothing.")] = False,
) -> None:
    """Methods x densities x seeds as Ray Tune trials; rerunning the same sweep runs only what is missing."""
    from .store import StoreError
    from .sweep import (SweepError, dry_run_table, failures, plan_sweep, point_state, prior_state, run_sweep,
                        summary_line, summary_table)

    try:
        plan_ = plan_sweep(spec, set_, methods=methods, densities=densities, seeds=seeds, name=name,
                           cpus_per_trial=cpus_per_trial, gpus_per_trial=gpus_per_trial, max_concurrent=max_concurrent)
    except SpecError as e:
        fail(str(e))
    db_path = _db_path(db)
    try:
        if dry_run:
            prior = prior_state(db_path, plan_.sweep_id)
            out.print(dry_run_table(plan_, prior))
            done = sum(point_state(prior.get(p.spec_hash)) != "to run" for p in plan_.points)
            out.print(f"{done} done, {len(plan_.points) - done} to run", highlight=False)
            return
        result = run_sweep(plan_, db_path, runs_dir=runs_dir, address=address, console=out)
    except (StoreError, SweepError) as e:
        fail(str(e))
    except KeyboardInterrupt:
        err.print("interrupted; run the same command again to resume (completed points are skipped)")
        raise typer.Exit(130)
    out.print(summary_table(result))
    for line in failures(result):
        out.print(f"[red]x[/red] {line}", highlight=False, soft_wrap=True)
    out.print(summary_line(result), highlight=False)
    out.print(f"results: {db_path}   report: granet report --sweep {plan_.name}", highlight=False)
    if result.interrupted:
        err.print("interrupted; run the same command again to resume (completed points are skipped)")
        raise typer.Exit(130)
    if result.count("failed"):
        raise typer.Exit(1)


# ----------------------------------------------------------------------------- report
@app.command()
def report(
    db: DbOpt = None,
    sweep: Annotated[Optional[str], typer.Option("--sweep", help="Only this sweep (name or id); default: every completed run.")] = None,
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for the report files.")] = Path("reports"),
    fmt: Annotated[str, typer.Option("--format", help="md, html or both.")] = "both",
    metric: Annotated[str, typer.Option("--metric", help="final_test_acc or best_test_acc.")] = "final_test_acc",
    name: Annotated[Optional[str], typer.Option("--name", help="Report file name [default: the sweep's name or granet-report].")] = None,
) -> None:
    """Comparison tables (mean +/- std over seeds) and plots from the results database, as Markdown and HTML."""
    from .report import ReportError, build_report

    if fmt not in ("md", "html", "both"):
        fail(f"--format: expected md, html or both, got {fmt!r}")
    if metric not in ("final_test_acc", "best_test_acc"):
        fail(f"--metric: expected final_test_acc or best_test_acc, got {metric!r}")
    try:
        result = build_report(_db_path(db), sweep=sweep, out_dir=out_dir, fmt=fmt, metric=metric, name=name)
    except ReportError as e:
        fail(str(e))
    for table in result.main_tables:
        out.print(table.to_rich())
    for path in (result.md_path, result.html_path):
        if path is not None:
            out.print(f"wrote {path}", highlight=False)


def main() -> None:  # pragma: no cover - console-script shim
    app()


if __name__ == "__main__":  # pragma: no cover
    app()
