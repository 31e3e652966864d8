"""Files and statements from others (issue #18): nothing runs code, writes elsewhere, hangs or half-writes.

Each case of the table is a hostile or unlucky input: a real poisoned pickle whose ``__reduce__``
runs ``touch MARKER``, real ``COPY`` / ``ATTACH`` / ``INSTALL`` statements, a real YAML alias bomb,
real symlinks and FIFOs, a real full disk (a small tmpfs; skipped where none can be mounted).
Every case asserts one ``error:`` line, the documented exit code, no traceback, the marker absent
and every file of the working folder byte-identical, except those the case says may change.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

from granet_cli.spec import load_run_spec

from .conftest import QUICKSTART, ROOT
from .test_bad_input import _check_one_error_line

Q = str(QUICKSTART)
#: the trained template run: 2 epochs of the quickstart
TRAINED = ["--set", "optim.epochs=2", "--set", "sparsity.final_prune_epoch=1"]
#: another spec of the quickstart (3 epochs): its run folder is where --resume cases put checkpoints
OTHER = ["--set", "optim.epochs=3", "--set", "sparsity.final_prune_epoch=1"]
MARKER = "PWNED"


def _hash(overrides: list[str]) -> str:
    return load_run_spec(QUICKSTART, [o for o in overrides if o != "--set"]).spec_hash()


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    """A folder with r.duckdb holding one completed 2-epoch quickstart run and its runs/<hash>/."""
    from typer.testing import CliRunner

    from granet_cli.cli import app

    w = tmp_path_factory.mktemp("template")
    old = os.getcwd()
    os.chdir(w)
    try:
        res = CliRunner().invoke(app, ["run", Q, *TRAINED, "--db", "r.duckdb", "--runs-dir", "runs", "-q"])
    finally:
        os.chdir(old)
    assert res.exit_code == 0, res.output
    return w


def _run_id(w: Path) -> str:
    return json.loads((w / "runs" / _hash(TRAINED) / "run.json").read_text())["run_id"]


# ----------------------------------------------------------------------------- hostile files
class _Evil:
    """Unpickling this runs `touch <marker>`: what a poisoned checkpoint does."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _poison(path: Path) -> None:
    torch.save({"model": {"w": _Evil(path.parent.resolve() / MARKER)}, "epoch": 1}, path)
    # the marker lands in the working folder root (the cases check there)


def _poison_at(w: Path, path: Path) -> None:
    torch.save({"model": {"w": _Evil(w.resolve() / MARKER)}, "epoch": 1, "epochs": []}, path)


def _poison_run_checkpoint(w: Path) -> None:
    _poison_at(w, w / "runs" / _hash(TRAINED) / "checkpoint.pt")


def _other_run_dir(w: Path, checkpoint: Callable[[Path, Path], None]) -> None:
    """runs/<hash of OTHER>/ with a run.json of a run not in the db, and a checkpoint made by `checkpoint`."""
    d = w / "runs" / _hash(OTHER)
    d.mkdir(parents=True)
    (d / "run.json").write_text(json.dumps({"run_id": f"{_hash(OTHER)[:8]}-0the4run", "spec_hash": _hash(OTHER)}))
    checkpoint(w, d / "checkpoint.pt")


def _resume_poisoned(w: Path) -> None:
    _other_run_dir(w, _poison_at)


def _resume_foreign_checkpoint(w: Path) -> None:
    """The trained run's (real, loadable) checkpoint copied into another spec's run folder."""
    _other_run_dir(w, lambda w, p: shutil.copy(w / "runs" / _hash(TRAINED) / "checkpoint.pt", p))


def _resume_truncated(w: Path) -> None:
    src = (w / "runs" / _hash(TRAINED) / "checkpoint.pt").read_bytes()
    _other_run_dir(w, lambda w, p: p.write_bytes(src[: len(src) // 2]))


def _resume_no_model(w: Path) -> None:
    _other_run_dir(w, lambda w, p: torch.save({"epoch": 1}, p))


def _sql_db_link(w: Path) -> None:
    os.link(w / "r.duckdb", w / "hard.duckdb")


def _other_db(w: Path) -> None:
    shutil.copy(w / "r.duckdb", w / "other.duckdb")


def _alias_bomb_text(levels: int = 9) -> str:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]")
    return "\n".join(lines)


def _bomb_spec(w: Path) -> None:
    text = QUICKSTART.read_text() + "\nextra:\n" + "\n".join("  " + ln for ln in _alias_bomb_text().splitlines())
    (w / "bomb.yaml").write_text(text)


def _bomb_in_name(w: Path) -> None:
    bomb = _alias_bomb_text().replace("\n", "\n  ")
    (w / "bomb_name.yaml").write_text(QUICKSTART.read_text().replace("name: quickstart", f"name:\n  {bomb}", 1))


def _fifo(name: str) -> Callable[[Path], None]:
    return lambda w: os.mkfifo(w / name)


def _folder(name: str) -> Callable[[Path], None]:
    return lambda w: (w / name).mkdir()


def _bad_schema_version(w: Path) -> None:
    import duckdb

    shutil.copy(w / "r.duckdb", w / "neg.duckdb")
    con = duckdb.connect(str(w / "neg.duckdb"))
    con.execute("UPDATE granet_meta SET value = '-1' WHERE key = 'schema_version'")
    con.close()


def _bad_grid_json(w: Path) -> None:
    import duckdb

    shutil.copy(w / "r.duckdb", w / "badgrid.duckdb")
    con = duckdb.connect(str(w / "badgrid.duckdb"))
    con.execute("INSERT INTO sweeps (sweep_id, name, created_at, grid_json) VALUES ('sw-x', 'x', now(), '{not json')")
    con.close()


def _half_db(w: Path) -> None:
    data = (w / "r.duckdb").read_bytes()
    (w / "half.duckdb").write_bytes(data[: len(data) // 2])


@dataclass
class Case:
    id: str
    args: list[str]
    code: int
    words: list[str]
    setup: list = field(default_factory=list)
    #: run as a subprocess with this timeout (cases that used to hang or exhaust memory)
    timeout: float | None = None


RUNQ = ["run", Q, "--db", "r.duckdb", "--runs-dir", "runs", "-q"]
CASES: list[Case] = [
    # 1. no code runs from a checkpoint
    Case(
        "eval-poisoned-run-folder",
        ["eval", "runs/{hash}", "--db", "r.duckdb"],
        2,
        ["checkpoint.pt", "weights_only"],
        [_poison_run_checkpoint],
    ),
    Case(
        "export-poisoned-run-id",
        ["export", "{run_id}", "--db", "r.duckdb", "--out", "m.pt"],
        2,
        ["checkpoint.pt", "weights_only"],
        [_poison_run_checkpoint],
    ),
    Case(
        "bench-poisoned-run-folder",
        ["bench-sparse", "runs/{hash}", "--db", "r.duckdb"],
        2,
        ["checkpoint.pt", "weights_only"],
        [_poison_run_checkpoint],
    ),
    Case("resume-poisoned", [*RUNQ, *OTHER, "--resume"], 2, ["checkpoint.pt", "weights_only"], [_resume_poisoned]),
    # 5. a checkpoint belongs to its run
    Case(
        "resume-foreign-checkpoint",
        [*RUNQ, *OTHER, "--resume"],
        2,
        ["checkpoint.pt", "belongs to"],
        [_resume_foreign_checkpoint],
    ),
    # 9. corrupt checkpoints on --resume name the file
    Case(
        "resume-truncated-checkpoint",
        [*RUNQ, *OTHER, "--resume"],
        2,
        ["checkpoint.pt", "without --resume"],
        [_resume_truncated],
    ),
    Case(
        "resume-checkpoint-without-model",
        [*RUNQ, *OTHER, "--resume"],
        2,
        ["checkpoint.pt", "without --resume"],
        [_resume_no_model],
    ),
    # 2. granet sql cannot write, read files or reach the network
    Case("sql-copy-to", ["sql", "COPY runs TO 'out.csv'", "--db", "r.duckdb"], 2, ["sql"]),
    Case("sql-export-database", ["sql", "EXPORT DATABASE 'dump'", "--db", "r.duckdb"], 2, ["sql"]),
    Case(
        "sql-attach-hard-link-rw",
        ["sql", "ATTACH 'hard.duckdb' AS h (READ_WRITE)", "--db", "r.duckdb"],
        2,
        ["sql"],
        [_sql_db_link],
    ),
    Case(
        "sql-attach-then-delete",
        ["sql", "ATTACH 'hard.duckdb' AS h; DELETE FROM h.runs", "--db", "r.duckdb"],
        2,
        ["one statement"],
        [_sql_db_link],
    ),
    Case("sql-two-statements", ["sql", "select 1; copy runs to 'out.csv'", "--db", "r.duckdb"], 2, ["one statement"]),
    Case("sql-read-file", ["sql", "select * from read_csv('/etc/passwd')", "--db", "r.duckdb"], 2, ["sql"]),
    Case("sql-attach-other-db", ["sql", "ATTACH 'other.duckdb' AS o", "--db", "r.duckdb"], 2, ["sql"], [_other_db]),
    Case("sql-install", ["sql", "INSTALL httpfs", "--db", "r.duckdb"], 2, ["sql"]),
    Case("sql-load", ["sql", "LOAD httpfs", "--db", "r.duckdb"], 2, ["sql"]),
    Case(
        "sql-create-secret",
        ["sql", "CREATE SECRET s (TYPE s3, KEY_ID 'a', SECRET 'b')", "--db", "r.duckdb"],
        2,
        ["sql"],
    ),
    Case("sql-set-external-access", ["sql", "SET enable_external_access = true", "--db", "r.duckdb"], 2, ["sql"]),
    # 3. bounded inputs
    Case("validate-alias-bomb-spec", ["validate", "bomb.yaml"], 2, ["bomb.yaml", "alias"], [_bomb_spec], timeout=20),
    Case(
        "validate-alias-bomb-field",
        ["validate", "bomb_name.yaml"],
        2,
        ["bomb_name.yaml", "alias"],
        [_bomb_in_name],
        timeout=20,
    ),
    Case(
        "validate-alias-bomb-set",
        ["validate", Q, "--set", "name=" + _alias_bomb_text().replace("\n", ", ").join("{}")],
        2,
        ["--set", "alias"],
        timeout=20,
    ),
    Case("validate-epochs-1e36", ["validate", Q, "--set", "optim.epochs=1e36"], 2, ["optim.epochs"]),
    Case(
        "validate-batch-huge",
        ["validate", Q, "--set", "data.batch_size=99999999999999999999999"],
        2,
        ["data.batch_size"],
    ),
    Case(
        "plan-huge-schedule",
        ["plan", Q, "--set", "optim.epochs=100000000", "--set", "sparsity.update_frequency=1"],
        2,
        ["optim.epochs"],
        timeout=30,
    ),
    Case(
        "plan-too-many-mask-updates",
        ["plan", Q, *["--set", "optim.epochs=100000", "--set", "sparsity.update_frequency=1"]],
        2,
        ["sparsity.update_frequency", "mask updates", "at most 100,000"],
        timeout=60,
    ),
    Case(
        "validate-train-size-huge",
        ["validate", Q, "--set", "data.name=synthetic", "--set", "data.train_size=99999999999999"],
        2,
        ["data.train_size"],
    ),
    Case(
        "bench-batch-huge",
        ["bench-sparse", "runs/{hash}", "--db", "r.duckdb", "--batch-size", "100000000"],
        2,
        ["--batch-size"],
    ),
    Case("validate-long-value-echo", ["validate", Q, "--set", "model.name=" + "A" * 5000], 2, ["model.name"]),
    # 6. symlinks and special files
    Case(
        "report-fifo-db",
        ["report", "--db", "fifo.duckdb", "--out", "rep"],
        2,
        ["fifo.duckdb", "not a regular file"],
        [_fifo("fifo.duckdb")],
        timeout=15,
    ),
    Case(
        "sql-fifo-db",
        ["sql", "select 1", "--db", "fifo.duckdb"],
        2,
        ["fifo.duckdb", "not a regular file"],
        [_fifo("fifo.duckdb")],
        timeout=15,
    ),
    Case(
        "results-fifo-db",
        ["results", "--db", "fifo.duckdb"],
        2,
        ["fifo.duckdb", "not a regular file"],
        [_fifo("fifo.duckdb")],
        timeout=15,
    ),
    Case(
        "run-fifo-db",
        ["run", Q, "--runs-dir", "runs", "--db", "fifo.duckdb", "-q"],
        2,
        ["fifo.duckdb", "not a regular file"],
        [_fifo("fifo.duckdb")],
        timeout=15,
    ),
    Case("validate-spec-folder", ["validate", "specdir"], 2, ["specdir", "folder"], [_folder("specdir")]),
    Case(
        "validate-spec-fifo",
        ["validate", "spec.fifo"],
        2,
        ["spec.fifo", "not a regular file"],
        [_fifo("spec.fifo")],
        timeout=15,
    ),
    Case(
        "results-out-fifo",
        ["results", "--db", "r.duckdb", "--out", "out.fifo"],
        2,
        ["out.fifo", "not a regular file"],
        [_fifo("out.fifo")],
        timeout=15,
    ),
    # 8. truncated and odd dbs
    Case(
        "run-half-db",
        ["run", Q, *OTHER, "--db", "half.duckdb", "--runs-dir", "runs", "-q"],
        2,
        ["half.duckdb"],
        [_half_db],
    ),
    Case(
        "sql-schema-version-negative",
        ["sql", "select 1", "--db", "neg.duckdb"],
        2,
        ["neg.duckdb", "schema_version"],
        [_bad_schema_version],
    ),
    Case(
        "run-schema-version-negative",
        ["run", Q, *OTHER, "--db", "neg.duckdb", "--runs-dir", "runs", "-q"],
        2,
        ["neg.duckdb", "schema_version"],
        [_bad_schema_version],
    ),
    Case(
        "merge-bad-grid-json",
        ["db", "merge", "badgrid.duckdb", "--db", "new.duckdb"],
        2,
        ["badgrid.duckdb", "grid_json"],
        [_bad_grid_json],
    ),
    Case(
        "merge-hard-link-of-destination",
        ["db", "merge", "hard.duckdb", "--db", "r.duckdb"],
        2,
        ["hard.duckdb", "destination"],
        [_sql_db_link],
    ),
    # smaller ones
    Case(
        "set-old-and-new-name",
        ["validate", Q, "--set", "sparsity.prune_rate=0.3", "--set", "sparsity.drop_fraction=0.4"],
        2,
        ["prune_rate", "drop_fraction"],
    ),
    Case("results-broken-db-no-out", ["results", "--db", "half.duckdb"], 2, ["half.duckdb"], [_half_db]),
]


def _expand(args: list[str], w: Path) -> list[str]:
    return [a.replace("{hash}", _hash(TRAINED)).replace("{run_id}", _run_id(w)) for a in args]


def _invoke(cli, case: Case, args: list[str], w: Path):
    if case.timeout is None:
        return cli(*args)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    try:
        p = subprocess.run(
            [sys.executable, "-m", "granet_cli.cli", *args],
            cwd=w,
            env=env,
            capture_output=True,
            text=True,
            timeout=case.timeout,
            preexec_fn=_limit_memory,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"{case.id}: still running after {case.timeout} s")
    return _Result(p.returncode, p.stdout, p.stderr)


def _limit_memory() -> None:
    """At most 3 GB of address space... torch's CUDA libraries reserve more virtual memory than that,
    so the limit is on the data segment: what an alias bomb would grow."""
    import resource

    limit = 1536 * 2**20
    resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))


@dataclass
class _Result:
    exit_code: int
    stdout: str
    stderr: str
    exception: BaseException | None = None

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_input_is_one_line_runs_nothing_touches_nothing(case, cli, template, tmp_path, monkeypatch):
    w = tmp_path / "w"
    shutil.copytree(template, w, symlinks=True)
    monkeypatch.chdir(w)
    for setup in case.setup:
        setup(w)
    before = _snapshot_safe(tmp_path)
    result = _invoke(cli, case, _expand(case.args, w), w)
    line = _check_one_error_line(result, case.code, case.words)
    assert len(line) < 400, line  # a bad value is echoed in short
    assert not (w / MARKER).exists(), "the checkpoint ran code"
    assert _snapshot_safe(tmp_path) == before


def _snapshot_safe(root: Path) -> dict[str, bytes | str | None]:
    """_snapshot that never opens a FIFO (reading one blocks) and tells links from files."""
    snap: dict[str, bytes | str | None] = {}
    for p in sorted(root.rglob("*")):
        key = str(p.relative_to(root))
        if p.is_symlink():
            snap[key] = "-> " + os.readlink(p)
        elif p.is_fifo():
            snap[key] = "fifo"
        else:
            snap[key] = p.read_bytes() if p.is_file() else None
    return snap


# ----------------------------------------------------------------------------- what sql prints
def test_sql_strips_terminal_escapes(cli, template, tmp_path, monkeypatch):
    monkeypatch.chdir(template)
    for extra in ([], ["--csv"]):
        res = cli(
            "sql", "select chr(27) || ']0;owned' || chr(7) || chr(27) || '[31mred' AS x", "--db", "r.duckdb", *extra
        )
        assert res.exit_code == 0, res.output
        assert "\x1b" not in res.stdout and "\x07" not in res.stdout, repr(res.stdout)
        assert "red" in res.stdout


def test_sql_still_answers_one_select(cli, template, monkeypatch):
    monkeypatch.chdir(template)
    res = cli("sql", "select count(*) AS n from runs", "--db", "r.duckdb", "--csv")
    assert res.exit_code == 0, res.output
    assert res.stdout.splitlines() == ["n", "1"]


# ----------------------------------------------------------------------------- checkpoints
def test_checkpoint_loads_with_weights_only_and_names_its_run(template):
    ckpt = torch.load(template / "runs" / _hash(TRAINED) / "checkpoint.pt", weights_only=True)
    assert ckpt["run_id"] == _run_id(template)
    assert ckpt["spec_hash"] == _hash(TRAINED)
    assert isinstance(ckpt["format_version"], int)


def test_resume_of_own_checkpoint_still_works(cli, template, tmp_path, monkeypatch):
    """An interrupted run (checkpoint after epoch 2 of 3, row `interrupted`) continues to the end."""
    from granet_cli.store import Store

    w = tmp_path / "w"
    shutil.copytree(template, w)
    monkeypatch.chdir(w)
    res = cli("run", Q, *OTHER, "--db", "r.duckdb", "--runs-dir", "runs", "-q")
    assert res.exit_code == 0, res.output
    run_id = json.loads((w / "runs" / _hash(OTHER) / "run.json").read_text())["run_id"]
    with Store(w / "r.duckdb") as st:
        st.fail_run(run_id, "interrupted", "test")
    res = cli("run", Q, *OTHER, "--db", "r.duckdb", "--runs-dir", "runs", "-q", "--resume")
    assert res.exit_code == 0, res.output


# ----------------------------------------------------------------------------- symlinks
def test_db_symlink_is_followed_never_replaced(cli, template, tmp_path, monkeypatch):
    """--db link.duckdb -> an empty file: the link stays a link, the file it points to gets the runs."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "target.duckdb").write_bytes(b"")
    os.symlink("real/target.duckdb", tmp_path / "link.duckdb")
    res = cli("db", "merge", str(template / "r.duckdb"), "--db", "link.duckdb")
    assert res.exit_code == 0, res.output
    assert (tmp_path / "link.duckdb").is_symlink()
    assert (tmp_path / "real" / "target.duckdb").stat().st_size > 0
    res = cli("sql", "select count(*) from runs", "--db", "real/target.duckdb", "--csv")
    assert res.stdout.splitlines()[-1] == "1"


def test_output_symlink_is_followed_never_replaced(cli, template, tmp_path, monkeypatch):
    monkeypatch.chdir(template)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "runs.csv").write_text("old\n")
    os.symlink(tmp_path / "out" / "runs.csv", tmp_path / "link.csv")
    res = cli("results", "--out", str(tmp_path / "link.csv"), "--db", "r.duckdb")
    assert res.exit_code == 0, res.output
    assert (tmp_path / "link.csv").is_symlink()
    assert (tmp_path / "out" / "runs.csv").read_text().startswith("run_id")


# ----------------------------------------------------------------------------- atomic outputs
@pytest.fixture
def tiny_disk(tmp_path):
    """A 1 MiB tmpfs (root only; skipped elsewhere): a real full disk."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True, check=False)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs: {r.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def _fill(disk: Path, leave: int) -> None:
    """Fill the disk up to `leave` bytes free."""
    free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
    if free > leave:
        with open(disk / "filler", "wb") as f:
            f.write(b"\0" * (free - leave))


OUTPUTS = {
    "report": (["report", "--db", "{tpl}/r.duckdb", "--out", "{disk}/rep", "--name", "r"], 2048),
    "export": (["export", "{tpl}/runs/{hash}", "--db", "{tpl}/r.duckdb", "--out", "{disk}/m.pt"], 4096),
    "results": (["results", "--db", "{tpl}/r.duckdb", "--out", "{disk}/runs.csv", "--table", "epochs"], 0),
}


@pytest.mark.parametrize("what", list(OUTPUTS))
def test_full_disk_leaves_the_old_output_intact(what, cli, template, tiny_disk, monkeypatch):
    monkeypatch.chdir(template)
    args, leave = OUTPUTS[what]
    args = [a.format(tpl=template, disk=tiny_disk, hash=_hash(TRAINED)) for a in args]
    res = cli(*args)
    assert res.exit_code == 0, res.output
    if what == "results":  # something to replace that is larger than what fits
        leave = 1024
    _fill(tiny_disk, leave)
    before = _snapshot_safe(tiny_disk)
    before.pop("filler")
    res = cli(*args)
    assert res.exit_code != 0, res.output
    assert "Traceback" not in res.output
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr
    after = _snapshot_safe(tiny_disk)
    after.pop("filler")
    assert after == before  # the old files, byte for byte, and no temp files left


def test_failed_rename_leaves_the_old_report(cli, template, tmp_path, monkeypatch):
    """A crash between writing and renaming: the old report set stays whole."""
    monkeypatch.chdir(template)
    out = tmp_path / "rep"
    assert cli("report", "--db", "r.duckdb", "--out", str(out), "--name", "r").exit_code == 0
    before = _snapshot_safe(out)
    calls = {"n": 0}
    real = os.replace

    def flaky(src, dst, *a, **k):
        calls["n"] += 1
        raise OSError(5, "Input/output error", str(dst))

    monkeypatch.setattr(os, "replace", flaky)
    res = cli("report", "--db", "r.duckdb", "--out", str(out), "--name", "r")
    monkeypatch.setattr(os, "replace", real)
    assert res.exit_code != 0
    assert calls["n"] >= 1
    assert _snapshot_safe(out) == before


def test_pt_and_safetensors_exports_have_their_own_sidecars(cli, template, tmp_path, monkeypatch):
    pytest.importorskip("safetensors")
    monkeypatch.chdir(template)
    for fmt in ("pt", "safetensors"):
        res = cli(
            "export", f"runs/{_hash(TRAINED)}", "--db", "r.duckdb", "--out", str(tmp_path / f"m.{fmt}"), "--format", fmt
        )
        assert res.exit_code == 0, res.output
    sides = sorted(p.name for p in tmp_path.glob("*.json"))
    assert len(sides) == 2, sides
    for fmt in ("pt", "safetensors"):
        res = cli("eval", str(tmp_path / f"m.{fmt}"), "--json")
        assert res.exit_code == 0, res.output


# ----------------------------------------------------------------------------- two sweeps with one name
def test_second_sweep_with_the_same_name_is_refused(cli, tmp_path, monkeypatch):
    from granet_cli.store import claim_sweep

    monkeypatch.chdir(tmp_path)
    with claim_sweep(tmp_path / "r.duckdb", "same"):
        res = cli(
            "sweep",
            Q,
            "--name",
            "same",
            "--methods",
            "gmp",
            "--densities",
            "0.1",
            "--db",
            "r.duckdb",
            "--runs-dir",
            "runs",
            *TRAINED,
        )
    _check_one_error_line(res, 2, ["same", "already running"])
    assert not (tmp_path / "r.duckdb").exists()


# ----------------------------------------------------------------------------- smaller ones
def test_markdown_cells_never_hold_a_live_link():
    from granet_cli.report import md_cell

    cell = md_cell("[click](javascript:alert(1)) <a href=x>")
    assert "](" not in cell.replace("\\]", "") and "<a" not in cell
    assert cell.replace("\\", "").startswith("[click](javascript:alert(1))")  # shown as text


def test_fetch_without_network_leaves_nothing(cli, tmp_path, monkeypatch):
    import urllib.error

    import torchvision.datasets.cifar as tvc
    import torchvision.datasets.utils as tvu

    def offline(*a, **k):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(tvu, "download_url", offline)
    monkeypatch.setattr(tvu, "download_and_extract_archive", offline)
    monkeypatch.setattr(tvc, "download_and_extract_archive", offline, raising=False)
    monkeypatch.chdir(tmp_path)
    _check_one_error_line(cli("data", "fetch", "cifar10", "--root", "data", "-q"), 2, ["CIFAR-10", "no network"])
    assert list(tmp_path.iterdir()) == []


def test_export_into_a_read_only_folder_is_one_line(cli, template, tmp_path, monkeypatch):
    if os.geteuid() == 0:
        ro = tmp_path / "ro"
        ro.mkdir()
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(ro)], capture_output=True)
        if r.returncode != 0:
            pytest.skip("cannot mount a read-only tmpfs")
    else:
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o555)
    try:
        monkeypatch.chdir(template)
        res = cli("export", f"runs/{_hash(TRAINED)}", "--db", "r.duckdb", "--out", str(ro / "m.pt"))
        _check_one_error_line(res, 2, ["--out", "m.pt"])
    finally:
        if os.geteuid() == 0:
            subprocess.run(["umount", "-l", str(ro)], check=False)


def test_run_refuses_a_schedule_of_millions_of_mask_updates(cli, tmp_path):
    """The bound `plan` applies holds for `run` too, before the model is built; nothing is written."""
    from granet_cli.spec import MASK_UPDATES_MAX

    db = tmp_path / "r.duckdb"
    res = cli(
        "run",
        QUICKSTART,
        "--set",
        "optim.epochs=20000",
        "--set",
        "sparsity.update_frequency=1",
        "--db",
        db,
        "--runs-dir",
        tmp_path / "runs",
        "-q",
    )
    assert res.exit_code == 2, res.output
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert len(lines) == 1 and f"{MASK_UPDATES_MAX:,}" in lines[0] and "Traceback" not in res.output
    assert not db.exists()
