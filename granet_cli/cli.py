"""The `granet` command line: parse, call, print. The work lives in the modules it calls."""

from __future__ import annotations

import errno
import functools
import json
import os
import shlex
import sys
import uuid
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer
from rich.console import Console
from typer.core import TyperGroup

from .text import one_line as _one_line

try:  # typer >= 0.20 vendors click as typer._click; older typers use click itself
    from typer._click.exceptions import NoArgsIsHelpError, UsageError
except ImportError:  # pragma: no cover
    # mypy types these names from the typer._click branch; older typers (no typer._click) raise click's own
    from click.exceptions import NoArgsIsHelpError, UsageError  # type: ignore[assignment]

# Heavy modules (pydantic specs, torch, Ray, DuckDB, matplotlib) are imported inside the commands
# that need them, so `granet --help` and `granet validate` start fast.
if TYPE_CHECKING:
    from rich.table import Table as RichTable

    from .spec import RunSpec


def Table(*args, **kwargs) -> RichTable:  # noqa: N802 - stands in for rich's class, imported on first use
    from rich.table import Table as RichTable

    return RichTable(*args, **kwargs)


class _Group(TyperGroup):
    """Usage errors (an unknown option, a value outside a choice) as one `error:` line, exit 2."""

    @staticmethod
    def _one_line(e: UsageError) -> NoReturn:
        hint = f" (see {e.ctx.command_path} -h)" if e.ctx is not None else ""
        msg = " ".join(e.format_message().replace("Value error, ", "").split())
        err.print(f"[red]error:[/red] {msg}{hint}", markup=True, highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None

    def parse_args(self, ctx, args):
        try:
            return super().parse_args(ctx, args)
        except UsageError as e:
            if isinstance(e, NoArgsIsHelpError):
                raise
            self._one_line(e)

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except UsageError as e:
            if isinstance(e, NoArgsIsHelpError):
                raise
            self._one_line(e)


app = typer.Typer(
    cls=_Group,
    help="Sparse training research: GraNet, RigL, SET, GMP, static and dense, from YAML specs to reports.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
out = Console()
err = Console(stderr=True)
#: set by `granet --debug`: error lines are followed by the traceback they summarise
DEBUG = False

SetOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--set", help="Override a spec field by its dotted path, e.g. --set sparsity.final_density=0.1 (repeatable)."
    ),
]
DbOpt = Annotated[
    Path | None,
    typer.Option(
        "--db", envvar="GRANET_DB", show_envvar=True, help="DuckDB results file (default: results/granet.duckdb)."
    ),
]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")]


class ReportFormat(StrEnum):
    md = "md"
    html = "html"
    both = "both"


class Metric(StrEnum):
    final_test_acc = "final_test_acc"
    selected_test_acc = "selected_test_acc"
    best_test_acc = "best_test_acc"


def fail(message: str, code: int = 2) -> NoReturn:
    """Bad input: one line per problem on stderr, exit code 2 (with --debug: the traceback too)."""
    if DEBUG and sys.exc_info()[0] is not None:
        err.print_exception()
    from rich.markup import escape  # a message is text: `pip install 'granet-cli[wandb]'` keeps its brackets

    for line in str(message).splitlines() or [""]:
        err.print(f"[red]error:[/red] {escape(line)}", markup=True, highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _version(value: bool) -> None:
    if value:
        from . import __version__

        out.print(f"granet {__version__}", highlight=False)
        raise typer.Exit()


@app.callback()
def _main_options(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show the traceback behind an error line.")] = False,
) -> None:
    """Sparse training research: GraNet, RigL, SET, GMP, static and dense, from YAML specs to reports."""
    global DEBUG
    DEBUG = debug


def _load(spec_path: Path | None, overrides: list[str] | None) -> RunSpec:
    from .spec import SpecError, load_run_spec

    try:
        return load_run_spec(spec_path, overrides)
    except SpecError as e:
        fail(str(e))


def _db_path(db: Path | None) -> Path:
    from .store import default_db_path

    return Path(db) if db else Path(default_db_path())


# ----------------------------------------------------------------------------- faults and bad input
EXIT_FAILED, EXIT_BAD_INPUT, EXIT_SIGINT, EXIT_SIGTERM = 1, 2, 130, 143


def _check_runs_dir(runs_dir: Path, flag: str = "--runs-dir") -> None:
    """--runs-dir must be (or become) a writable folder: checked before anything is written."""
    p = Path(runs_dir).expanduser()
    probe = p
    while not probe.exists() and probe != probe.parent:  # the nearest folder that exists
        probe = probe.parent
    if p.exists() and not p.is_dir():
        fail(f"{flag} {p}: exists and is not a folder")
    if not probe.is_dir():
        fail(f"{flag} {p}: {probe} is not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        fail(f"{flag} {p}: {'folder' if probe == p else probe} is not writable")


def _os_error_line(e: OSError) -> str:
    """`no space left on <folder>` and friends: what failed, where, without a traceback."""
    where = e.filename or ""
    if e.errno == errno.ENOSPC:
        return str(e.strerror) if "no space left on" in str(e.strerror) else f"no space left on {where or 'the device'}"
    return f"{e.strerror or e}{f': {where}' if where else ''}"


def _sweep_command(
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


def _resume_hint(
    spec: Path, overrides: list[str] | None, db_path: Path, runs_dir: Path, nproc: int, extra: tuple[str, ...] = ()
) -> str:
    """The complete command that continues this run, ready to paste into a shell."""
    argv = [
        "granet",
        "run",
        str(spec),
        *[a for s in overrides or [] for a in ("--set", s)],
        "--db",
        str(db_path),
        "--runs-dir",
        str(runs_dir),
        *(["--nproc", str(nproc)] if nproc > 1 else []),
        *extra,
        "--resume",
    ]
    return shlex.join(argv)


def _resumable_run_id(run_dir: Path, meta_path: Path, db_path: Path) -> str:
    """The run --resume continues, checked read-only: a checkpoint, a readable run.json, and a run
    that is not already completed in the results db."""
    from .train import CHECKPOINT

    if not (meta_path.is_file() and (run_dir / CHECKPOINT).is_file()):
        fail(f"--resume: no interrupted run of this spec under {run_dir} (no checkpoint)")
    try:
        run_id = json.loads(meta_path.read_text(encoding="utf-8"))["run_id"]
        if not isinstance(run_id, str) or not run_id.strip():
            raise ValueError(f"run_id is {run_id!r}")
    except (OSError, ValueError, KeyError, TypeError) as e:
        why = f"no {e}" if isinstance(e, KeyError) else _one_line(e, 120)
        fail(f"--resume: {meta_path} is corrupt ({why}); run without --resume to start this spec again")
    if Path(db_path).exists():
        from .store import Store, StoreError

        try:
            with Store(db_path, read_only=True) as st:
                row = st.run(run_id)
        except StoreError as e:
            fail(str(e))
        if row is not None and row.get("status") == "completed":
            when = row.get("finished_at")
            when = f", finished {when:%Y-%m-%d %H:%M:%S} UTC" if when is not None else ""
            fail(
                f"--resume: run {run_id} of this spec already completed{when} (results in {db_path}); "
                "nothing to resume (run without --resume to train it again)"
            )
    return run_id


# ----------------------------------------------------------------------------- validate / plan
@app.command()
def validate(spec: Annotated[Path, typer.Argument(help="YAML run spec.")], set_: SetOpt = None) -> None:
    """Check a spec and print it normalised (method presets filled in). Exit 2 on any problem."""
    import yaml

    from .spec import SpecError, read_yaml

    run_spec = _load(spec, set_)
    sweep_plan = None
    try:
        if "sweep" in read_yaml(spec):  # a sweep file: its grid and every point of it are checked too
            from .sweep import plan_sweep

            sweep_plan = plan_sweep(spec, set_)
    except SpecError as e:
        fail(str(e))
    out.print(yaml.safe_dump(run_spec.normalised(), sort_keys=False).rstrip(), highlight=False)
    out.print(f"# spec_hash: {run_spec.spec_hash()}", style="dim", highlight=False)
    if sweep_plan is not None:
        out.print(f"# sweep {sweep_plan.name}: {len(sweep_plan.points)} points valid", style="dim", highlight=False)


@app.command()
def plan(
    spec: Annotated[Path, typer.Argument(help="YAML run spec.")],
    set_: SetOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of tables.")] = False,
) -> None:
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
    out.print(
        f"sparsifiable weights: {result['total_params']:,}   initial density: {result['density']:.4f}   "
        f"steps/epoch: {steps_per_epoch(run_spec)}"
    )
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
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue this spec's interrupted run from its last epoch checkpoint.")
    ] = False,
    nproc: Annotated[
        int, typer.Option("--nproc", min=1, help="Data-parallel processes (torch DDP: gloo on CPU, nccl on GPU).")
    ] = 1,
    runs_dir: Annotated[
        Path, typer.Option("--runs-dir", help="Where checkpoints live (one folder per spec hash).")
    ] = Path("runs"),
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    tensorboard: Annotated[
        Path | None,
        typer.Option(
            "--tensorboard",
            help="Also log every epoch (losses, accuracies, density, ITOP rate, lr, mask updates) to TensorBoard under DIR/<run id>/ (needs the tensorboard package).",
        ),
    ] = None,
) -> None:
    """Train one spec; every epoch lands in the results database, then a summary is printed."""
    run_spec = _load(spec, set_)
    if tensorboard is not None:
        _require_tracker(tensorboard)
    _check_runs_dir(runs_dir)  # every check before the first write (db file, runs dir) and before torch loads
    db_path = _db_path(db)
    spec_hash = run_spec.spec_hash()
    run_dir = runs_dir / spec_hash
    if resume:  # read-only checks: a refused --resume creates and writes nothing
        run_id = _resumable_run_id(run_dir, run_dir / RUN_META, db_path)

    from .interrupts import SignalGuard
    from .recorder import RunRecorder
    from .store import Store, StoreError

    # An existing db is opened (and checked: a foreign file is refused) now; a new one is only
    # created once the run has started, so a run that fails at set-up (missing data) writes nothing.
    store = _open_existing_db(db_path, spec_hash)
    if not resume:
        run_id = _new_run_dir(run_dir, spec_hash, runs_dir, store)
    recorder = RunRecorder(
        run_spec,
        run_id,
        store=store,
        open_store=lambda: Store(db_path),
        owns_store=True,
        trackers=_open_trackers(tensorboard, run_id, run_spec, store),
    )
    tb_flag = ("--tensorboard", str(tensorboard)) if tensorboard is not None else ()
    hint = _resume_hint(spec, set_, db_path, runs_dir, nproc, tb_flag)
    guard = SignalGuard()

    def on_start() -> None:
        guard.db_write(lambda: recorder.start(restart=resume))  # a resumed run's epochs are replayed next

    def on_epoch(row: dict, updates: list[dict]) -> None:
        guard.db_write(lambda: recorder.epoch(row, updates))  # one transaction per epoch

    with guard:
        try:
            result = _train_one(run_spec, run_dir, nproc, resume, on_start, on_epoch, quiet)
        except (Exception, KeyboardInterrupt) as e:  # each kind becomes its one line, recorded first
            guard.stopping = True
            _stop_run(e, recorder, run_dir, hint)
        guard.stopping = True  # from here on the outcome is written; SIGTERM waits for it
        try:
            recorder.finish(result.status, result.final, result.layers, result.error)
        except StoreError as e:
            why = recorder.stop("interrupted", f"final write failed: {e}")
            recorder.close()
            fail(
                f"run {run_id} trained to the end ({result.status}) but its final metrics could not be written: "
                f"{e}{why}; continue with: {hint}",
                code=EXIT_FAILED,
            )
        recorder.close()
    if tensorboard is not None:
        out.print(f"tensorboard: tensorboard --logdir {tensorboard}", highlight=False)
    print_summary(run_spec, run_id, result, db_path)
    if result.status != "completed":
        raise typer.Exit(1)


RUN_META = "run.json"


def _require_tracker(tensorboard: Path) -> None:
    from .trackers import TrackerError, require_tensorboard

    try:
        require_tensorboard()
    except TrackerError as e:
        fail(str(e))
    _check_runs_dir(tensorboard, "--tensorboard")


def _open_existing_db(db_path: Path, spec_hash: str):
    """The results db if it exists (checked: a foreign file is refused; a `running` row of this
    spec whose process is gone becomes interrupted), else None after checking its folder."""
    from .store import Store, StoreError

    if not db_path.exists():
        _check_runs_dir(db_path.parent, "--db")
        return None
    try:
        store = Store(db_path)
        store.reap_orphans(spec_hash)
        return store
    except StoreError as e:
        fail(str(e))


def _new_run_dir(run_dir: Path, spec_hash: str, runs_dir: Path, store) -> str:
    """A fresh run id, written to the spec's run folder (an old checkpoint there is removed)."""
    from . import safe_io
    from .train import CHECKPOINT

    run_id = f"{spec_hash[:8]}-{uuid.uuid4().hex[:8]}"
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / CHECKPOINT).unlink(missing_ok=True)
        safe_io.write_text(run_dir / RUN_META, json.dumps({"run_id": run_id, "spec_hash": spec_hash}), "--runs-dir")
    except safe_io.PathError as e:
        if store is not None:
            store.close()
        fail(str(e))
    except OSError as e:
        if store is not None:
            store.close()
        fail(f"--runs-dir {runs_dir}: {_os_error_line(e)}")
    return run_id


def _open_trackers(tensorboard: Path | None, run_id: str, run_spec: RunSpec, store) -> list:
    if tensorboard is None:
        return []
    from .trackers import TensorBoardLogger, TrackerError

    sp = run_spec.sparsity
    hparams = {"spec_hash": run_spec.spec_hash(), "method": sp.method, "final_density": sp.final_density}
    hparams |= {"model": run_spec.model.name, "dataset": run_spec.data.name, "seed": run_spec.seed}
    try:
        return [TensorBoardLogger(tensorboard, run_id, hparams)]
    except TrackerError as e:
        if store is not None:
            store.close()
        fail(str(e))


def _train_one(run_spec: RunSpec, run_dir: Path, nproc: int, resume: bool, on_start, on_epoch, quiet: bool):
    from . import train

    if nproc > 1:
        from .distributed import run_distributed

        return run_distributed(run_spec, run_dir, nproc, resume=resume, on_start=on_start, on_epoch=on_epoch)
    return train.run(run_spec, run_dir, resume=resume, on_start=on_start, on_epoch=on_epoch, progress=not quiet)


def _setup_errors() -> tuple[type[Exception], ...]:
    """What stops a run because of its input (granet's own errors, the ones a sweep never retries):
    exit 2, one line."""
    from .preflight import own_errors

    return own_errors()


def _stop_run(e: BaseException, recorder, run_dir: Path, hint: str) -> NoReturn:
    """Record a run that stopped early (never left `running`), close it, and exit with its line."""
    from .interrupts import Terminated
    from .store import StoreError
    from .train import CHECKPOINT

    run_id = recorder.run_id
    resumable = (run_dir / CHECKPOINT).is_file()
    if isinstance(e, _setup_errors()):
        why = recorder.stop("failed", str(e))
        recorder.close()
        fail(f"{e}{why}")
    if isinstance(e, KeyboardInterrupt):  # Ctrl-C, or SIGTERM (Terminated): resumable, like a kill
        term = isinstance(e, Terminated)
        what = "terminated (SIGTERM)" if term else "interrupted (Ctrl-C)"
        why = recorder.stop("interrupted", f"{what}; resume with --resume")
        recorder.close()
        if recorder.started:
            err.print(f"{what}: run {run_id} recorded as interrupted{why}", highlight=False, soft_wrap=True)
        else:
            err.print(f"{what} before training started; nothing was recorded", highlight=False, soft_wrap=True)
        if resumable:
            err.print(f"continue with: {hint}", highlight=False, soft_wrap=True)
        raise typer.Exit(EXIT_SIGTERM if term else EXIT_SIGINT) from None
    if isinstance(e, (StoreError, OSError)):  # the results db or the disk failed mid-run (e.g. no space left)
        line = str(e) if isinstance(e, StoreError) else _os_error_line(e)
        status = "interrupted" if resumable else "failed"
        why = recorder.stop(status, line)
        recorder.close()
        then = f"; fix that, then continue with: {hint}" if resumable else ""
        fail(f"run {run_id} stopped: {line} (recorded as {status}){why}{then}", code=EXIT_FAILED)
    # a crash mid-run: recorded, then shown as one line
    why = recorder.stop("failed", f"{type(e).__name__}: {e}")
    recorder.close()
    fail(f"run {run_id} failed: {type(e).__name__}: {_one_line(e)}{why}", code=EXIT_FAILED)


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
        *(
            [("selected test accuracy (best val epoch)", pct(f["selected_test_acc"]))]
            if f.get("selected_test_acc") is not None
            else []
        ),
        ("best test accuracy (optimistic)", pct(f["best_test_acc"])),
        *([("final top-5 accuracy", pct(f["final_test_acc5"]))] if f.get("final_test_acc5") is not None else []),
        ("final density (sparsified layers)", f"{f['final_density']:.4f}"),
        *(
            [("nonzero weights (sparsified layers)", f"{f['nonzero_density']:.4f}")]
            if f.get("nonzero_density") is not None
            else []
        ),
        *(
            [("overall density (all conv/linear)", f"{f['overall_density']:.4f}")]
            if f.get("overall_density") is not None
            else []
        ),
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
    quiet: SweepQuietOpt = False,
    tensorboard: SweepTensorboardOpt = None,
    wandb: SweepWandbOpt = None,
    mlflow: SweepMlflowOpt = None,
    mlflow_experiment: SweepMlflowExperimentOpt = None,
) -> None:
    """Methods x densities x seeds (x --grid fields) as Ray Tune trials; rerunning the same sweep runs only what is missing."""
    from .spec import SpecError
    from .store import StoreError
    from .sweep import (
        SweepError,
        dry_run_table,
        plan_sweep,
        point_state,
        prior_state,
        run_sweep,
    )

    try:
        plan_ = plan_sweep(
            spec,
            set_,
            methods=methods,
            densities=densities,
            seeds=seeds,
            name=name,
            cpus_per_trial=cpus_per_trial,
            gpus_per_trial=gpus_per_trial,
            max_concurrent=max_concurrent,
            grid=grid,
            max_failures=max_failures,
        )
    except SpecError as e:
        fail(str(e))
    db_path = _db_path(db)
    if not dry_run:  # before Ray starts or the db is opened: nothing is written for a bad folder
        _check_sweep_folders(runs_dir, storage_path, tensorboard)
    trackers = _ray_trackers(wandb, mlflow, mlflow_experiment, plan_.name, check=not dry_run)
    again = _sweep_command(
        plan_.spec_path,
        set_,
        db_path,
        runs_dir,
        name=plan_.name,
        methods=methods,
        densities=densities,
        seeds=seeds,
        grid=grid,
        address=address,
        storage_path=storage_path,
        max_failures=max_failures,
        cpus_per_trial=cpus_per_trial,
        gpus_per_trial=gpus_per_trial,
        max_concurrent=max_concurrent,
        tensorboard=tensorboard,
        wandb=wandb,
        mlflow=trackers.mlflow_uri,
        mlflow_experiment=mlflow_experiment,
    )
    try:
        if dry_run:
            prior = prior_state(db_path, plan_)
            out.print(dry_run_table(plan_, prior))
            done = sum(point_state(prior.get(p.spec_hash)) != "to run" for p in plan_.points)
            out.print(f"{done} done, {len(plan_.points) - done} to run", highlight=False)
            return
        result = run_sweep(
            plan_,
            db_path,
            runs_dir=runs_dir,
            address=address,
            storage_path=storage_path,
            console=Console(quiet=True) if quiet else out,
            tensorboard=tensorboard,
            trackers=trackers or None,
        )
    except (StoreError, SweepError) as e:
        fail(str(e))
    except KeyboardInterrupt:
        err.print(f"interrupted; resume (completed points are skipped) with: {again}", highlight=False, soft_wrap=True)
        raise typer.Exit(130) from None
    _print_sweep_result(result, plan_.name, db_path)
    if result.interrupted:
        err.print(f"interrupted; resume (completed points are skipped) with: {again}", highlight=False, soft_wrap=True)
        raise typer.Exit(130)
    if result.count("failed"):
        raise typer.Exit(1)
    if result.trials and all(t.status in ("failed", "diverged") for t in result.trials):
        err.print("every trial of this sweep failed or diverged", highlight=False)
        raise typer.Exit(1)


def _check_sweep_folders(runs_dir: Path, storage_path: str | None, tensorboard: Path | None) -> None:
    if storage_path is None:
        _check_runs_dir(runs_dir)
    elif "://" not in str(storage_path):
        _check_runs_dir(Path(storage_path), "--storage-path")
    if tensorboard is not None:
        _require_tracker(tensorboard)


def _print_sweep_result(result, sweep_name: str, db_path: Path) -> None:
    from .sweep import failures, summary_line, summary_table

    out.print(summary_table(result))
    for line in failures(result):
        out.print(f"[red]x[/red] {line}", highlight=False, soft_wrap=True)
    if result.ray_logs:
        out.print(result.ray_logs, highlight=False, soft_wrap=True)
    out.print(summary_line(result), highlight=False)
    report_cmd = shlex.join(["granet", "report", "--sweep", sweep_name, "--db", str(db_path)])
    out.print(f"results: {db_path}   report: {report_cmd}", highlight=False, soft_wrap=True)


def _ray_trackers(wandb: str | None, mlflow: str | None, experiment: str | None, sweep_name: str, *, check: bool):
    """--wandb / --mlflow as sweep_trackers.RayTrackers; with `check`, refused (one line, exit 2) before
    anything is written: a package missing, no W&B login outside offline mode, a folder not writable."""
    from .sweep_trackers import (
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
            _check_runs_dir(folder, "--mlflow")
    return RayTrackers(wandb_project=wandb, mlflow_uri=uri, mlflow_experiment=experiment, group=sweep_name)


# ----------------------------------------------------------------------------- report
@app.command()
def report(
    db: DbOpt = None,
    sweep: Annotated[
        str | None, typer.Option("--sweep", help="Only this sweep (name or id); default: every completed run.")
    ] = None,
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for the report files.")] = Path("reports"),
    fmt: Annotated[ReportFormat, typer.Option("--format", help="Markdown, HTML or both.")] = ReportFormat.both,
    metric: Annotated[
        Metric,
        typer.Option(
            "--metric",
            help=(
                "The accuracy the tables compare: final_test_acc (last epoch), selected_test_acc (test accuracy at "
                "the epoch of best validation accuracy once the target density is reached: the reference's model "
                "selection, needs data.val_fraction > 0), best_test_acc (best over epochs: optimistic, it selects "
                "on the test set)."
            ),
        ),
    ] = Metric.final_test_acc,
    name: Annotated[
        str | None, typer.Option("--name", help="Report file name (default: the sweep's name, else granet-report).")
    ] = None,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json",
            help=(
                "Print the tables (rows, cells with mean, std, 95 % CI, n; GraNet's Welch comparisons; differences to "
                "dense; published numbers; budget) as one JSON object on stdout for scripts, and write no files."
            ),
        ),
    ] = False,
) -> None:
    """Comparison tables (mean ± 95 % CI over seeds, Welch's t-tests) and plots from the results database, as Markdown and HTML."""
    from .report import ReportError, build_report, report_json

    if fmt not in ("md", "html", "both"):
        fail(f"--format: expected md, html or both, got {fmt!r}")
    if as_json:
        try:
            data = report_json(_db_path(db), sweep=sweep, metric=metric)
        except ReportError as e:
            fail(str(e))
        typer.echo(json.dumps(data, indent=2, allow_nan=False, default=str))
        return
    try:
        result = build_report(_db_path(db), sweep=sweep, out_dir=out_dir, fmt=fmt, metric=metric, name=name)
    except ReportError as e:
        fail(str(e))
    for table in result.main_tables:
        out.print(table.to_rich())
    for path in (result.md_path, result.html_path):
        if path is not None:
            out.print(f"wrote {path}", highlight=False)


try:  # typer >= 0.20 vendors click as typer._click
    from typer._click.exceptions import ClickException as _ClickException
except ImportError:  # pragma: no cover
    from click.exceptions import ClickException as _ClickException  # type: ignore[assignment]  # as above


def _guard(fn):
    """No traceback ever reaches a user: an error no command anticipated becomes one `error:` line
    (exit 1; `granet --debug` re-raises it instead), Ctrl-C outside a run exits 130."""

    @functools.wraps(fn)
    def guarded(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort, _ClickException):
            raise
        except KeyboardInterrupt:
            if DEBUG:
                raise
            err.print("interrupted", highlight=False)
            raise typer.Exit(EXIT_SIGINT) from None
        except Exception as e:  # noqa: BLE001 - the promise: one line, never a traceback
            from .spec import SpecError
            from .store import StoreError

            if DEBUG:
                raise
            if isinstance(e, (SpecError, StoreError)):
                fail(str(e))
            if isinstance(e, OSError) and e.strerror:
                fail(_os_error_line(e), code=EXIT_FAILED)
            fail(
                f"internal error: {type(e).__name__}: {_one_line(e)} (`granet --debug ...` shows the traceback)",
                code=EXIT_FAILED,
            )

    return guarded


for _command in app.registered_commands:  # every command above, whoever added it
    _command.callback = _guard(_command.callback)


# ----------------------------------------------------------------------------- export / eval / bench
class ExportFormat(StrEnum):
    pt = "pt"
    safetensors = "safetensors"


class ResultsFormat(StrEnum):
    csv = "csv"
    parquet = "parquet"
    json = "json"


class ResultsTable(StrEnum):
    runs = "runs"
    epochs = "epochs"
    layers = "layers"
    mask_updates = "mask_updates"
    sweeps = "sweeps"


class Device(StrEnum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


RunsDirOpt = Annotated[
    Path,
    typer.Option(
        "--runs-dir",
        help="Where run checkpoints live: <runs-dir>/<spec hash>/ for granet run, "
        "<runs-dir>/ray/ (and sweeps/) for sweep trials.",
    ),
]
BatchOpt = Annotated[
    int, typer.Option("--batch-size", min=1, max=65536, help="Inference batch size of the timing (at most 65536).")
]
RepeatsOpt = Annotated[int, typer.Option("--repeats", min=1, help="Timed calls per measurement (the median is shown).")]
ThreadsOpt = Annotated[
    int | None, typer.Option("--threads", min=1, help="torch CPU threads (default: torch's own choice).")
]


@app.command("export")
def export_cmd(
    run_ref: Annotated[
        str,
        typer.Argument(
            metavar="RUN",
            help="Run id (or a unique prefix of one) from the results db, or a run folder holding checkpoint.pt.",
        ),
    ],
    out_file: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Weights file (ending .pt or .safetensors), or a folder for <run id>.<format> (default: the current folder). The sidecar is the same name plus .json (m.pt.json).",
        ),
    ] = None,
    fmt: Annotated[
        ExportFormat,
        typer.Option("--format", help="pt: torch.load(weights_only=True); safetensors needs the safetensors package."),
    ] = ExportFormat.pt,
    db: DbOpt = None,
    runs_dir: RunsDirOpt = Path("runs"),
    bench_: Annotated[
        bool, typer.Option("--bench", help="Then time dense vs sparse CPU inference of the exported model.")
    ] = False,
    batch_size: BatchOpt = 64,
    repeats: RepeatsOpt = 20,
    threads: ThreadsOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Write a run's trained sparse model (masks applied and stored) and a JSON sidecar with its spec and metrics."""
    from .export import ExportError, export_run, load_any, resolve_run

    try:
        ref = resolve_run(run_ref, _db_path(db), runs_dir)
        weights, sidecar, side = export_run(ref, out_file, str(fmt))
    except ExportError as e:
        fail(str(e))
    if not quiet:
        status = "" if side["status"] == "completed" else f" (run status: {side['status']})"
        out.print(
            f"run {ref.run_id}{status}: epoch {side['checkpoint_epoch']}, {side['active_weights']:,} of "
            f"{side['masked_weights']:,} masked weights active",
            highlight=False,
            soft_wrap=True,
        )
    out.print(f"wrote {weights}", highlight=False, soft_wrap=True)
    out.print(f"wrote {sidecar}", highlight=False, soft_wrap=True)
    if bench_:
        try:
            _print_bench(load_any(str(weights), _db_path(db), runs_dir), batch_size, repeats, threads, quiet)
        except ExportError as e:
            fail(str(e))


@app.command("eval")
def eval_cmd(
    model_ref: Annotated[
        str,
        typer.Argument(
            metavar="MODEL_OR_RUN",
            help="An exported model (.pt / .safetensors, or its .json sidecar), a run folder, or a run id / prefix.",
        ),
    ],
    set_: SetOpt = None,
    db: DbOpt = None,
    runs_dir: RunsDirOpt = Path("runs"),
    device: Annotated[
        Device | None, typer.Option("--device", help="Where to evaluate (default: the spec's device).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Rebuild the model from its spec and evaluate it on the spec's test set (e.g. --set data.root=/data)."""
    from .export import ExportError, evaluate_loaded, load_any

    try:
        res = evaluate_loaded(load_any(model_ref, _db_path(db), runs_dir), set_, str(device) if device else None)
    except ExportError as e:
        fail(str(e))
    if as_json:
        sys.stdout.write(json.dumps(res) + "\n")
        return
    top5 = f", top-5 {100 * res['test_acc5']:.2f} %" if res["test_acc5"] is not None else ""
    out.print(
        f"test accuracy {100 * res['test_acc']:.2f} %{top5} (loss {res['test_loss']:.4f}; "
        f"{res['samples']:,} {res['dataset']} test samples, {res['device']})",
        highlight=False,
        soft_wrap=True,
    )
    db_acc = res["db_final_test_acc"]
    if db_acc is not None:
        same = (
            "the same"
            if abs(db_acc - res["test_acc"]) < 1e-12
            else f"differs by {100 * (res['test_acc'] - db_acc):+.2f} points"
        )
        out.print(
            f"results db final_test_acc of run {res['run_id']}: {100 * db_acc:.2f} % ({same})",
            highlight=False,
            soft_wrap=True,
        )


@app.command("bench-sparse")
def bench_sparse(
    model_ref: Annotated[
        str,
        typer.Argument(
            metavar="MODEL_OR_RUN", help="An exported model (.pt / .safetensors), a run folder, or a run id / prefix."
        ),
    ],
    db: DbOpt = None,
    runs_dir: RunsDirOpt = Path("runs"),
    batch_size: BatchOpt = 64,
    repeats: RepeatsOpt = 20,
    threads: ThreadsOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    quiet: QuietOpt = False,
) -> None:
    """Time dense vs sparse (torch CSR) CPU inference, next to the theoretical FLOPs fraction."""
    from .export import ExportError, bench, load_any

    try:
        loaded = load_any(model_ref, _db_path(db), runs_dir)
        if as_json:
            sys.stdout.write(
                json.dumps(bench(loaded, batch_size=batch_size, repeats=repeats, threads=threads).as_dict()) + "\n"
            )
            return
        _print_bench(loaded, batch_size, repeats, threads, quiet)
    except ExportError as e:
        fail(str(e))


def _print_bench(loaded, batch_size: int, repeats: int, threads: int | None, quiet: bool) -> None:
    from .export import CONV_NOTE, bench

    res = bench(loaded, batch_size=batch_size, repeats=repeats, threads=threads)
    if not quiet:
        table = Table(
            title=f"per layer, batch {res.batch_size}, {res.threads} CPU thread(s), median of up to {repeats} calls"
        )
        for col in ("layer", "type", "shape", "density", "dense ms", "sparse ms", "speed-up"):
            table.add_column(col, justify="left" if col in ("layer", "type", "shape") else "right")
        for lb in res.layers:
            table.add_row(
                lb.name,
                lb.kind,
                "x".join(map(str, lb.shape)),
                f"{lb.density:.4f}",
                f"{lb.dense_ms:.3f}",
                f"{lb.sparse_ms:.3f}",
                f"{lb.speedup:.2f}x",
            )
        out.print(table)
    theo = 1 / res.flops_fraction if res.flops_fraction > 0 else float("inf")
    out.print(
        f"whole model ({res.model}, batch {res.batch_size}): dense {res.dense_ms:.3f} ms, sparse {res.sparse_ms:.3f} ms "
        f"-> measured speed-up {res.speedup:.2f}x; theoretical: {res.flops_fraction:.4f} of the dense FLOPs "
        f"({theo:.1f}x)",
        highlight=False,
        soft_wrap=True,
    )
    slower = [lb.name for lb in res.layers if lb.speedup < 1]
    if res.speedup < 1:
        out.print(
            f"sparse inference is SLOWER than dense here ({1 / res.speedup:.2f}x the time)",
            highlight=False,
            soft_wrap=True,
        )
    if slower:
        out.print(f"layers where sparse is slower: {', '.join(slower)}", highlight=False, soft_wrap=True)
    if any(lb.kind == "Conv2d" for lb in res.layers):
        out.print(CONV_NOTE, highlight=False, soft_wrap=True)
    if res.kept_dense:
        out.print(
            f"kept dense (density > 0.5, or a grouped conv): {', '.join(res.kept_dense)}",
            highlight=False,
            soft_wrap=True,
        )
    if res.max_abs_diff > 1e-3:
        out.print(f"[yellow]warning:[/yellow] dense and sparse outputs differ by up to {res.max_abs_diff:.3g}")


# ----------------------------------------------------------------------------- results / sql
@app.command("results")
def results_cmd(
    db: DbOpt = None,
    sweep: Annotated[str | None, typer.Option("--sweep", help="Only this sweep's runs (name or id).")] = None,
    table: Annotated[ResultsTable, typer.Option("--table", help="Which table.")] = ResultsTable.runs,
    status: Annotated[str | None, typer.Option("--status", help="Only runs with this status (e.g. completed).")] = None,
    fmt: Annotated[
        ResultsFormat, typer.Option("--format", help="File format (DuckDB's own COPY); json is one array.")
    ] = ResultsFormat.csv,
    out_file: Annotated[
        Path | None, typer.Option("--out", help="File to write (default: standard output; parquet needs a file).")
    ] = None,
    quiet: QuietOpt = False,
) -> None:
    """Export a results table (runs by default) as CSV, Parquet or JSON, read-only (works while a sweep writes)."""
    from .results_io import ResultsError, export_table

    try:
        count, data = export_table(
            _db_path(db), table=str(table), fmt=str(fmt), out=out_file, sweep=sweep, status=status
        )
    except ResultsError as e:
        fail(str(e))
    if data is not None:
        sys.stdout.flush()
        sys.stdout.buffer.write(data) if hasattr(sys.stdout, "buffer") else sys.stdout.write(data.decode())
        sys.stdout.flush()
    elif not quiet:
        out.print(f"wrote {count} {table} rows to {out_file} ({fmt})", highlight=False, soft_wrap=True)


@app.command("sql")
def sql_cmd(
    query: Annotated[
        str, typer.Argument(help='One SQL statement, e.g. "select method, avg(final_test_acc) from runs group by all".')
    ],
    db: DbOpt = None,
    as_csv: Annotated[bool, typer.Option("--csv", help="CSV on standard output instead of a table.")] = False,
    max_rows: Annotated[
        int, typer.Option("--max-rows", min=1, help="Rows shown in the table (--csv prints all).")
    ] = 1000,
) -> None:
    """Run SQL against the results database, read-only (tables: runs, epochs, layers, mask_updates, sweeps)."""
    import csv

    from rich.markup import escape

    from .results_io import ResultsError, format_value, printable, run_sql

    try:
        res = run_sql(_db_path(db), query)
    except ResultsError as e:
        fail(str(e))
    if as_csv:
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow([printable(c) for c in res.columns])
        writer.writerows([["" if v is None else printable(str(v)) for v in row] for row in res.rows])
        return
    table = Table(show_lines=False)
    for col, typ in zip(res.columns, res.types):
        numeric = any(t in typ.upper() for t in ("INT", "DOUBLE", "FLOAT", "DECIMAL", "REAL", "NUMBER"))
        table.add_column(escape(printable(col)), justify="right" if numeric else "left", overflow="fold")
    for row in res.rows[:max_rows]:
        table.add_row(*(escape(format_value(v)) for v in row))
    if res.columns:
        out.print(table)
    more = f" (showing {max_rows}; --csv prints all)" if len(res.rows) > max_rows else ""
    out.print(f"{len(res.rows)} row{'s' if len(res.rows) != 1 else ''}{more}", highlight=False, soft_wrap=True)


# ----------------------------------------------------------------------------- data
data_app = typer.Typer(
    help="Datasets: fetch CIFAR-10/100 with torchvision's own download and checksums.", no_args_is_help=True
)
app.add_typer(data_app, name="data")


class FetchDataset(StrEnum):
    cifar10 = "cifar10"
    cifar100 = "cifar100"
    imagenet = "imagenet"


@data_app.command("fetch")
def data_fetch(
    dataset: Annotated[
        FetchDataset, typer.Argument(help="cifar10 or cifar100 (imagenet cannot be downloaded: a clear error).")
    ],
    root: Annotated[Path, typer.Option("--root", help="Folder to download into; use it as data.root.")] = Path("data"),
    quiet: QuietOpt = False,
) -> None:
    """Download and verify (md5) CIFAR-10/100 into ROOT, as torchvision does; nothing happens if already there."""
    from .data.base import DataError
    from .fetch import fetch

    try:
        folder = fetch(str(dataset), root, quiet=quiet)
    except DataError as e:
        fail(str(e))
    out.print(f"{dataset}: verified at {folder}; use --set data.root={root}", highlight=False, soft_wrap=True)


# ----------------------------------------------------------------------------- db
db_app = typer.Typer(
    help="Results databases: merge the files of jobs that each wrote their own --db.", no_args_is_help=True
)
app.add_typer(db_app, name="db")


@db_app.command("merge")
def db_merge(
    sources: Annotated[list[Path], typer.Argument(help="granet results files to copy from (only read).")],
    db: DbOpt = None,
) -> None:
    """Copy every run (with epochs, layers, mask updates) and sweep of SOURCES into --db; run ids already
    there are kept, so merging a file again adds nothing. Every source is checked before anything is written."""
    from .store import Store, StoreError

    db_path = _db_path(db)
    try:
        for src in sources:
            if src.resolve() == db_path.resolve() or (src.exists() and db_path.exists() and src.samefile(db_path)):
                fail(f"results db {src}: is the destination --db itself")
            with Store(src, read_only=True) as check:
                check.sweeps()  # a source with invalid grid_json is refused before --db is created
        with Store(db_path) as st:
            for src in sources:
                n = st.merge_from(src)
                out.print(
                    f"{src}: {n['runs']} run(s) added ({n['epochs']} epochs), {n['skipped']} already in "
                    f"{db_path}; {n['sweeps']} sweep(s) added",
                    highlight=False,
                    soft_wrap=True,
                )
    except StoreError as e:
        fail(str(e))


for _command in [
    *app.registered_commands,
    *data_app.registered_commands,
    *db_app.registered_commands,
]:  # the commands added after _guard's loop
    if not hasattr(_command.callback, "__wrapped__"):
        _command.callback = _guard(_command.callback)


def main() -> None:  # pragma: no cover - console-script shim
    app()


if __name__ == "__main__":  # pragma: no cover
    app()
