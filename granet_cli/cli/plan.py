"""granet plan: per-layer initial densities and the gradual-pruning schedule, without training."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from .app import SetOpt, Table, app, fail, load_spec, out


@app.command()
def plan(
    spec: Annotated[Path, typer.Argument(help="YAML run spec.")],
    set_: SetOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of tables.")] = False,
) -> None:
    """Show per-layer initial densities and the gradual-pruning schedule, without training."""
    from ..data import DataError
    from ..models import ModelError
    from ..plan import build_plan, steps_per_epoch

    run_spec = load_spec(spec, set_)
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
