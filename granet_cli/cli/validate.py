"""granet validate: check a spec (and a sweep file's grid) and print it normalised."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .app import SetOpt, app, fail, load_spec, out


@app.command()
def validate(spec: Annotated[Path, typer.Argument(help="YAML run spec.")], set_: SetOpt = None) -> None:
    """Check a spec and print it normalised (method presets filled in). Exit 2 on any problem."""
    import yaml

    from ..spec import SpecError, read_yaml

    run_spec = load_spec(spec, set_)
    sweep_plan = None
    try:
        if "sweep" in read_yaml(spec):  # a sweep file: its grid and every point of it are checked too
            from ..sweep import plan_sweep

            sweep_plan = plan_sweep(spec, set_)
    except SpecError as e:
        fail(str(e))
    out.print(yaml.safe_dump(run_spec.normalised(), sort_keys=False).rstrip(), highlight=False)
    out.print(f"# spec_hash: {run_spec.spec_hash()}", style="dim", highlight=False)
    if sweep_plan is not None:
        out.print(f"# sweep {sweep_plan.name}: {len(sweep_plan.points)} points valid", style="dim", highlight=False)
