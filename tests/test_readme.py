"""The README's commands, so the manual cannot drift from the CLI.

Every `granet ...` line of a fenced block (also `$ granet`, continued lines, multi-line quoted SQL)
is parsed by the real CLI's Click parser -- unknown options, bad values and missing arguments raise --
without running it. A fast, realistic subset then really runs, in README order, in a temporary folder:
the quickstart run (2 epochs), validate, plan, report, results, sql, export to models/, eval and
bench-sparse, with the README's example run ids and file names replaced by the real ones."""

from __future__ import annotations

import importlib
import re
import shlex
import shutil
from pathlib import Path
from types import ModuleType

import pytest
import typer

from .conftest import ROOT

README = ROOT / "README.md"
FENCE = re.compile(r"^[ \t]*```[^\n]*\n(.*?)^[ \t]*```", re.S | re.M)
EXAMPLE_RUN = "0ae581e0-ca6d4d89"  # the run id the README's examples use
ENV = {"$SLURM_ARRAY_TASK_ID": "0"}


def _words(line: str) -> list[str] | None:
    """The shell words of one command up to a pipe or redirect, comments dropped; None while a quote
    is still open (the command goes on on the next line)."""
    lex = shlex.shlex(line, posix=True, punctuation_chars="|><")
    lex.whitespace_split = True
    lex.commenters = "#"
    words: list[str] = []
    try:
        for w in lex:
            if w and set(w) <= set("|><&"):
                break
            words.append(w)
    except ValueError:  # No closing quotation
        return None
    return words


def readme_commands(text: str | None = None) -> list[list[str]]:
    """The argument lists (without `granet`) of every command in the README's fenced blocks."""
    return [args for args, _shown in readme_examples(text)]


def readme_examples(text: str | None = None) -> list[tuple[list[str], list[str] | None]]:
    """(arguments, the output lines the README shows under a `$ granet ...` line) of every command."""
    text = README.read_text(encoding="utf-8") if text is None else text
    out: list[tuple[list[str], list[str] | None]] = []
    for block in FENCE.findall(text):
        lines = block.splitlines()
        i = 0
        while i < len(lines):
            raw = lines[i].strip()
            line = raw.removeprefix("$ ")
            shown = out[-1][1] if out else None
            if not line.startswith("granet ") and shown is not None and raw:
                shown.append(raw)  # output shown under a `$ granet` line
            if line.startswith("granet "):
                while True:
                    for k, v in ENV.items():
                        line = line.replace(k, v)
                    if line.endswith("\\") and i + 1 < len(lines):
                        i += 1
                        line = line[:-1] + " " + lines[i].strip()
                        continue
                    words = _words(line)
                    if words is None and i + 1 < len(lines):
                        i += 1
                        line += "\n" + lines[i].strip()
                        continue
                    break
                assert words is not None, f"unbalanced quotes in README command: {line}"
                out.append((words[1:], [] if raw.startswith("$ ") else None))
            i += 1
    return out


def _cli() -> tuple[typer.core.TyperGroup, ModuleType]:
    """The real command tree and the Click it is built on (typer may ship its own copy of Click)."""
    from granet_cli.cli import app

    cmd = typer.main.get_command(app)
    base = next(c for c in type(cmd).__mro__ if c.__name__ == "Command" and "click" in c.__module__)
    return cmd, importlib.import_module(base.__module__.rsplit(".", 1)[0] + ".exceptions")


CMD, click = _cli()  # click.UsageError, click.ClickException: the exceptions of that Click


def parse(args: list[str]) -> None:
    """Parse `granet ARGS` with the real Click command tree, without running it; raises Click's
    UsageError (or BadParameter) on anything the CLI would refuse before running."""
    context = type(CMD.make_context("granet", ["--help"], resilient_parsing=True))
    cmd, ctx = CMD, context(CMD, info_name="granet")
    name, rest = "granet", list(args)
    while hasattr(cmd, "get_command"):  # a group: the command (and sub-command) names, then its own parser
        if not rest:
            raise click.UsageError("no command given")
        name, *rest = rest
        sub = cmd.get_command(ctx, name)
        if sub is None:
            raise click.UsageError(f"no such command {name!r}")
        cmd, ctx = sub, context(sub, info_name=name, parent=ctx)
    sub_ctx = cmd.make_context(name, rest, parent=ctx.parent, resilient_parsing=False)
    assert not sub_ctx.args, f"unexpected extra arguments {sub_ctx.args}"


def test_the_readme_has_commands_and_the_parser_refuses_bad_ones():
    cmds = readme_commands()
    assert len(cmds) >= 20
    assert ["report", "--sweep", "demo", "--name", "demo", "--latex"] in cmds
    sql = [c for c in cmds if c[0] == "sql"]
    assert sql and "group by all" in sql[0][1]  # a quoted query spanning two lines is one word
    with pytest.raises(click.UsageError):
        parse(["run", "experiments/quickstart.yaml", "--no-such-option"])
    with pytest.raises(click.UsageError):
        parse(["report", "--format", "docx"])
    with pytest.raises(click.UsageError):
        parse(["no-such-command"])


@pytest.mark.parametrize("args", readme_commands(), ids=lambda a: " ".join(a)[:60])
def test_every_readme_command_parses(args):
    try:
        parse(args)
    except click.ClickException as e:
        pytest.fail(f"README command `granet {shlex.join(args)}` does not parse: {e.format_message()}")


# ------------------------------------------------------------------ the quickstart, really run
RUN_SUBSET = ("run", "validate", "plan", "report", "results", "sql", "export", "eval", "bench-sparse")
QUICK = ["--set", "optim.epochs=2", "--set", "sparsity.final_prune_epoch=1"]


def _realistic(args: list[str], run_id: str, stems: dict[str, str]) -> list[str] | None:
    """A README command made runnable here: the example run id and model files replaced by the real
    ones, `granet run` shortened to 2 epochs; None for commands that need what this test lacks (a
    sweep named demo, CIFAR files, a cluster)."""
    text = " ".join(args)
    if "--sweep" in args or "data.root=" in text or "cifar10_resnet50" in text or "--address" in text:
        return None
    out = []
    for a in args:
        for ext, stem in stems.items():
            a = a.replace(f"{EXAMPLE_RUN}.{ext}", f"{stem}.{ext}")
        out.append(a.replace(EXAMPLE_RUN, run_id).replace("0ae581e0", run_id[:8]).replace("0ae5%", f"{run_id[:4]}%"))
    if out[0] == "run":
        out = [a for a in out if not a.startswith("seed=")] + QUICK
    return out


@pytest.mark.slow
def test_readme_quickstart_commands_run_as_typed(cli, tmp_path, monkeypatch):
    shutil.copytree(ROOT / "experiments", tmp_path / "experiments")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GRANET_DB", str(tmp_path / "results" / "granet.duckdb"))
    run_id = ""
    stems: dict[str, str] = {}
    ran: list[str] = []
    for args, shown in readme_examples():
        if args[0] not in RUN_SUBSET or (args[0] == "run" and ran.count("run")):
            continue
        if args[0] != "run" and not run_id:
            continue
        real = _realistic(args, run_id, stems)
        if real is None or "--runs-dir" in real:
            continue
        r = cli(*real)
        errors = [ln for ln in shown or [] if ln.startswith("error:")]
        if errors:  # the README shows this command refused: the same one line, exit 2
            assert r.exit_code == 2 and errors[0] in r.output, f"granet {shlex.join(real)}\n{r.output}"
            ran.append(real[0])
            continue
        assert r.exit_code == 0, f"granet {shlex.join(real)}\n{r.output}"
        ran.append(real[0])
        if real[0] == "run":
            from granet_cli.store import Store

            with Store(tmp_path / "results" / "granet.duckdb", read_only=True) as st:
                (run,) = st.runs()
            run_id = str(run["run_id"])
        if real[0] == "export":
            for f in Path("models").iterdir():
                if f.suffix in (".pt", ".safetensors"):
                    stems[f.suffix[1:]] = f.stem
    for command in RUN_SUBSET:
        assert command in ran, f"the README no longer shows a runnable `granet {command}`; ran: {ran}"
