"""granet run: train one spec, record every epoch, print a summary; resume hints and the one line a
stopped run ends with."""

from __future__ import annotations

import json
import shlex
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer

from ..text import one_line
from .app import (
    EXIT_FAILED,
    EXIT_SIGINT,
    EXIT_SIGTERM,
    DbOpt,
    SetOpt,
    Table,
    app,
    check_runs_dir,
    err,
    fail,
    load_spec,
    os_error_line,
    out,
    require_tracker,
    resolve_db,
)

if TYPE_CHECKING:
    from ..spec import RunSpec


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
    from ..checkpoint import CHECKPOINT

    if not (meta_path.is_file() and (run_dir / CHECKPOINT).is_file()):
        fail(f"--resume: no interrupted run of this spec under {run_dir} (no checkpoint)")
    try:
        run_id = json.loads(meta_path.read_text(encoding="utf-8"))["run_id"]
        if not isinstance(run_id, str) or not run_id.strip():
            raise ValueError(f"run_id is {run_id!r}")
    except (OSError, ValueError, KeyError, TypeError) as e:
        why = f"no {e}" if isinstance(e, KeyError) else one_line(e, 120)
        fail(f"--resume: {meta_path} is corrupt ({why}); run without --resume to start this spec again")
    if Path(db_path).exists():
        from ..store import Store, StoreError

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


RUN_META = "run.json"

RunSpecArg = Annotated[Path, typer.Argument(help="YAML run spec, e.g. experiments/quickstart.yaml.")]
ResumeOpt = Annotated[
    bool, typer.Option("--resume", help="Continue this spec's interrupted run from its last epoch checkpoint.")
]
NprocOpt = Annotated[
    int, typer.Option("--nproc", min=1, help="Data-parallel processes (torch DDP: gloo on CPU, nccl on GPU).")
]
RunRunsDirOpt = Annotated[Path, typer.Option("--runs-dir", help="Where checkpoints live (one folder per spec hash).")]
RunQuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")]
RunTensorboardOpt = Annotated[
    Path | None,
    typer.Option(
        "--tensorboard",
        help="Also log every epoch (losses, accuracies, density, ITOP rate, lr, mask updates) to TensorBoard under DIR/<run id>/ (needs the tensorboard package).",
    ),
]


@app.command()
def run(
    spec: RunSpecArg,
    set_: SetOpt = None,
    db: DbOpt = None,
    resume: ResumeOpt = False,
    nproc: NprocOpt = 1,
    runs_dir: RunRunsDirOpt = Path("runs"),
    quiet: RunQuietOpt = False,
    tensorboard: RunTensorboardOpt = None,
) -> None:
    """Train one spec; every epoch lands in the results database, then a summary is printed."""
    run_spec = load_spec(spec, set_)
    if tensorboard is not None:
        require_tracker(tensorboard)
    check_runs_dir(runs_dir)  # every check before the first write (db file, runs dir) and before torch loads
    db_path = resolve_db(db)
    spec_hash = run_spec.spec_hash()
    run_dir = runs_dir / spec_hash
    if resume:  # read-only checks: a refused --resume creates and writes nothing
        run_id = _resumable_run_id(run_dir, run_dir / RUN_META, db_path)

    from ..recorder import RunRecorder
    from ..store import Store

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
    result = _train_and_record(run_spec, run_dir, nproc, resume, quiet, recorder, hint)
    if tensorboard is not None:
        out.print(f"tensorboard: tensorboard --logdir {tensorboard}", highlight=False)
    print_summary(run_spec, run_id, result, db_path)
    if result.status != "completed":
        raise typer.Exit(1)


def _train_and_record(run_spec: RunSpec, run_dir: Path, nproc: int, resume: bool, quiet: bool, recorder, hint: str):
    """Train under a signal guard, every epoch and the final metrics written through `recorder`;
    a run that stops early is recorded and ends the command with its one line."""
    from ..interrupts import SignalGuard
    from ..store import StoreError

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
                f"run {recorder.run_id} trained to the end ({result.status}) but its final metrics could not be "
                f"written: {e}{why}; continue with: {hint}",
                code=EXIT_FAILED,
            )
        recorder.close()
    return result


def _open_existing_db(db_path: Path, spec_hash: str):
    """The results db if it exists (checked: a foreign file is refused; a `running` row of this
    spec whose process is gone becomes interrupted), else None after checking its folder."""
    from ..store import Store, StoreError

    if not db_path.exists():
        check_runs_dir(db_path.parent, "--db")
        return None
    try:
        store = Store(db_path)
        store.reap_orphans(spec_hash)
        return store
    except StoreError as e:
        fail(str(e))


def _new_run_dir(run_dir: Path, spec_hash: str, runs_dir: Path, store) -> str:
    """A fresh run id, written to the spec's run folder (an old checkpoint there is removed)."""
    from .. import safe_io
    from ..checkpoint import CHECKPOINT

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
        fail(f"--runs-dir {runs_dir}: {os_error_line(e)}")
    return run_id


def _open_trackers(tensorboard: Path | None, run_id: str, run_spec: RunSpec, store) -> list:
    if tensorboard is None:
        return []
    from ..trackers import TensorBoardLogger, TrackerError

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
    from .. import train

    if nproc > 1:
        from ..distributed import run_distributed

        return run_distributed(run_spec, run_dir, nproc, resume=resume, on_start=on_start, on_epoch=on_epoch)
    return train.run(run_spec, run_dir, resume=resume, on_start=on_start, on_epoch=on_epoch, progress=not quiet)


def _setup_errors() -> tuple[type[Exception], ...]:
    """What stops a run because of its input (granet's own errors, the ones a sweep never retries):
    exit 2, one line."""
    from ..sweep.preflight import own_errors

    return own_errors()


def _stop_run(e: BaseException, recorder, run_dir: Path, hint: str) -> NoReturn:
    """Record a run that stopped early (never left `running`), close it, and exit with its line."""
    from ..checkpoint import CHECKPOINT
    from ..interrupts import Terminated
    from ..store import StoreError

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
        line = str(e) if isinstance(e, StoreError) else os_error_line(e)
        status = "interrupted" if resumable else "failed"
        why = recorder.stop(status, line)
        recorder.close()
        then = f"; fix that, then continue with: {hint}" if resumable else ""
        fail(f"run {run_id} stopped: {line} (recorded as {status}){why}{then}", code=EXIT_FAILED)
    # a crash mid-run: recorded, then shown as one line
    why = recorder.stop("failed", f"{type(e).__name__}: {e}")
    recorder.close()
    fail(f"run {run_id} failed: {type(e).__name__}: {one_line(e)}{why}", code=EXIT_FAILED)


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
        ("final density (sparsified layers)", f"{f['achieved_density']:.4f}"),
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
