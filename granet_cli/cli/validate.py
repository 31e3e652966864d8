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
    from ..data import DataError
    from ..facts import applicable, facts_line, run_facts

    try:
        facts = run_facts(run_spec)
    except (DataError, ValueError) as e:
        fail(str(e))
    # the data: fields that do not apply to the dataset are left out (their defaults are unused)
    out.print(yaml.safe_dump(applicable(run_spec), sort_keys=False).rstrip(), highlight=False)
    from ..provenance import hardware, versions_line

    for line in (facts_line(facts), f"this machine: {hardware()}", versions_line()):
        out.print(f"# {line}", style="dim", highlight=False, soft_wrap=True)
    out.print(f"# spec_hash: {run_spec.spec_hash()}", style="dim", highlight=False)
    if sweep_plan is not None:
        out.print(f"# sweep {sweep_plan.name}: {len(sweep_plan.points)} points valid", style="dim", highlight=False)
