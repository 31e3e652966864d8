"""granet export, eval and bench-sparse: a run's trained sparse model as a file, evaluated again, timed."""

from __future__ import annotations

import json
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from .app import DbOpt, QuietOpt, SetOpt, Table, app, fail, out, resolve_db


class ExportFormat(StrEnum):
    pt = "pt"
    safetensors = "safetensors"


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
    from ..export import ExportError, export_run, load_any, resolve_run

    try:
        ref = resolve_run(run_ref, resolve_db(db), runs_dir)
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
            _print_bench(load_any(str(weights), resolve_db(db), runs_dir), batch_size, repeats, threads, quiet)
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
    from ..export import ExportError, evaluate_loaded, load_any

    try:
        res = evaluate_loaded(load_any(model_ref, resolve_db(db), runs_dir), set_, str(device) if device else None)
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
    from ..export import ExportError, load_any
    from ..sparse_bench import bench

    try:
        loaded = load_any(model_ref, resolve_db(db), runs_dir)
        if as_json:
            sys.stdout.write(
                json.dumps(bench(loaded, batch_size=batch_size, repeats=repeats, threads=threads).as_dict()) + "\n"
            )
            return
        _print_bench(loaded, batch_size, repeats, threads, quiet)
    except ExportError as e:
        fail(str(e))


def _print_bench(loaded, batch_size: int, repeats: int, threads: int | None, quiet: bool) -> None:
    from ..sparse_bench import CONV_NOTE, bench

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
