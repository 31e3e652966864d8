"""The `granet` command line: parse, call, print. The work lives in the modules it calls.

`app` is the Typer app (the `granet` console script); each command lives in its own module and
registers itself on it. They are imported here in the order `granet --help` lists them, then every
command is wrapped in the guard that turns an unexpected error into one line."""

from __future__ import annotations

from .app import app, guard_commands

# registration order is the order of `granet --help`
from . import validate, plan, run, sweep, tune, report, export, results, sql, data, db  # noqa: E402, F401, I001  isort: skip

guard_commands(app)

__all__ = ["app", "main"]


def main() -> None:  # pragma: no cover - console-script shim
    app()
