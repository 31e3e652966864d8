"""The shared Typer app of `granet`: the group that turns usage errors into one line, the guard that
turns any other error into one line and an exit code, fail(), and the options and helpers every
command shares (--db, --set, the output consoles)."""

from __future__ import annotations

import errno
import functools
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer
from rich.console import Console
from typer.core import TyperGroup

from ..text import one_line

try:  # typer >= 0.20 vendors click as typer._click; older typers use click itself
    from typer._click.exceptions import ClickException, NoArgsIsHelpError, UsageError
except ImportError:  # pragma: no cover
    # mypy types these names from the typer._click branch; older typers (no typer._click) raise click's own
    from click.exceptions import ClickException, NoArgsIsHelpError, UsageError  # type: ignore[assignment]

# Heavy modules (pydantic specs, torch, Ray, DuckDB, matplotlib) are imported inside the commands
# that need them, so `granet --help` and `granet validate` start fast.
if TYPE_CHECKING:
    from rich.table import Table as RichTable

    from ..spec import RunSpec


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


def fail(message: str, code: int = 2) -> NoReturn:
    """Bad input: one line per problem on stderr, exit code 2 (with --debug: the traceback too)."""
    if DEBUG and sys.exc_info()[0] is not None:
        err.print_exception()
    from rich.markup import escape  # a message is text: `pip install 'granet-cli[wandb]'` keeps its brackets

    for line in str(message).splitlines() or [""]:
        err.print(f"[red]error:[/red] {escape(line)}", markup=True, highlight=False, soft_wrap=True, emoji=False)
    raise typer.Exit(code)


def _version(value: bool) -> None:
    if value:
        from .. import __version__

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


def load_spec(spec_path: Path | None, overrides: list[str] | None) -> RunSpec:
    """The run spec at `spec_path` with its --set overrides; a bad spec is one line, exit 2."""
    from ..spec import SpecError, load_run_spec

    try:
        return load_run_spec(spec_path, overrides)
    except SpecError as e:
        fail(str(e))


def resolve_db(db: Path | None) -> Path:
    """--db as given, else the default results file."""
    from ..store import default_db_path

    return Path(db) if db else Path(default_db_path())


# ----------------------------------------------------------------------------- faults and bad input
EXIT_FAILED, EXIT_BAD_INPUT, EXIT_SIGINT, EXIT_SIGTERM = 1, 2, 130, 143


def check_runs_dir(runs_dir: Path, flag: str = "--runs-dir") -> None:
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


def os_error_line(e: OSError) -> str:
    """`no space left on <folder>` and friends: what failed, where, without a traceback."""
    where = e.filename or ""
    if e.errno == errno.ENOSPC:
        return str(e.strerror) if "no space left on" in str(e.strerror) else f"no space left on {where or 'the device'}"
    return f"{e.strerror or e}{f': {where}' if where else ''}"


def require_tracker(tensorboard: Path) -> None:
    """--tensorboard DIR: the tensorboard package is installed and DIR is a writable folder."""
    from ..trackers import TrackerError, require_tensorboard

    try:
        require_tensorboard()
    except TrackerError as e:
        fail(str(e))
    check_runs_dir(tensorboard, "--tensorboard")


def guard(fn):
    """No traceback ever reaches a user: an error no command anticipated becomes one `error:` line
    (exit 1; `granet --debug` re-raises it instead), Ctrl-C outside a run exits 130."""

    @functools.wraps(fn)
    def guarded(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort, ClickException):
            raise
        except KeyboardInterrupt:
            if DEBUG:
                raise
            err.print("interrupted", highlight=False)
            raise typer.Exit(EXIT_SIGINT) from None
        except Exception as e:  # noqa: BLE001 - the promise: one line, never a traceback
            from ..spec import SpecError
            from ..store import StoreError

            if DEBUG:
                raise
            if isinstance(e, (SpecError, StoreError)):
                fail(str(e))
            if isinstance(e, OSError) and e.strerror:
                fail(os_error_line(e), code=EXIT_FAILED)
            fail(
                f"internal error: {type(e).__name__}: {one_line(e)} (`granet --debug ...` shows the traceback)",
                code=EXIT_FAILED,
            )

    return guarded


def guard_commands(typer_app: typer.Typer) -> None:
    """Wrap every command of `typer_app` and of its sub-apps (granet data, granet db) in guard(), once."""
    for command in typer_app.registered_commands:
        if command.callback is not None and not hasattr(command.callback, "__wrapped__"):
            command.callback = guard(command.callback)
    for group in typer_app.registered_groups:
        if group.typer_instance is not None:
            guard_commands(group.typer_instance)
