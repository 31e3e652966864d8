"""Every bad input and every fault: one `error:` line, the right exit code, nothing touched (issue #10).

The table below is the promise of README "Errors and exit codes": each case is
(command, expected exit code, words the one error line must hold). For every case the
output holds no traceback, and the whole working folder (results db, runs dir, spec files,
the default db of $GRANET_DB) is byte-identical afterwards, with and without an existing
results db. The fault tests below the table interrupt, kill and starve real runs.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from granet_cli.records import record_for
from granet_cli.spec import load_run_spec
from granet_cli.store import Store

from .conftest import QUICKSTART, ROOT, rows

Q = str(QUICKSTART)
SHORT = ["--set", "optim.epochs=3", "--set", "sparsity.final_prune_epoch=2"]


# ----------------------------------------------------------------------------- the world a case runs in
def _spec_files(w: Path) -> None:
    (w / "binary.yaml").write_bytes(bytes(range(256)) * 4)
    (w / "latin1.yaml").write_bytes("name: caf\xe9\nmodel: {name: mlp}\n".encode("latin-1"))
    (w / "empty.yaml").write_text("")
    (w / "comments.yaml").write_text("# nothing but a comment\n\n")
    (w / "dup.yaml").write_text("model: {name: mlp}\noptim:\n  lr: 0.1\n  lr: 0.2\n")
    (w / "dup_top.yaml").write_text("seed: 1\nmodel: {name: mlp}\nseed: 2\n")
    base = QUICKSTART.read_text()
    (w / "bad_sweep.yaml").write_text(base + "\nsweep:\n  methods: [granet, bogus]\n")
    (w / "bad_sweep_seed.yaml").write_text(base + "\nsweep:\n  seeds: [0, 3000000000]\n")
    (w / "good_sweep.yaml").write_text(base + "\nsweep:\n  methods: [granet, gmp]\n  densities: [0.1, 0.2]\n")


def _quickstart_hash() -> str:
    return load_run_spec(QUICKSTART).spec_hash()


def _completed_run(w: Path) -> None:
    """The quickstart's run, completed in the db, with its run.json and (dummy) checkpoint left behind."""
    spec = load_run_spec(QUICKSTART)
    run_id = f"{spec.spec_hash()[:8]}-c0mp1e7e"
    with Store(w / "r.duckdb") as st:
        st.start_run(record_for(spec, run_id, None))
        st.finish_run(run_id, {"final_test_acc": 0.9, "best_test_acc": 0.91}, [])
    d = w / "runs" / spec.spec_hash()
    d.mkdir(parents=True)
    (d / "run.json").write_text(json.dumps({"run_id": run_id, "spec_hash": spec.spec_hash()}))
    (d / "checkpoint.pt").write_bytes(b"not read before the refusal")


def _corrupt_run_json(w: Path) -> None:
    d = w / "runs" / _quickstart_hash()
    d.mkdir(parents=True)
    (d / "run.json").write_text('{"run_id": "abc')
    (d / "checkpoint.pt").write_bytes(b"x")


def _run_json_without_id(w: Path) -> None:
    d = w / "runs" / _quickstart_hash()
    d.mkdir(parents=True)
    (d / "run.json").write_text("[1, 2]")
    (d / "checkpoint.pt").write_bytes(b"x")


def _runs_file(w: Path) -> None:
    (w / "runs_file").write_text("I am a file, not a folder\n")


@dataclass
class Case:
    id: str
    args: list[str]
    code: int
    words: list[str]
    setup: list = field(default_factory=list)
    needs_db: bool = False  # the case only makes sense with an existing results db (it is made by setup)


RUN = ["run", "--db", "r.duckdb", "--runs-dir", "runs"]
SWEEP = ["sweep", "--db", "r.duckdb", "--runs-dir", "runs"]
COMMANDS = {"validate": ["validate"], "plan": ["plan"], "run": RUN, "sweep": SWEEP}

CASES: list[Case] = []
# spec files that are not YAML specs: validate, plan, run and sweep alike
for cmd, prefix in COMMANDS.items():
    CASES += [
        Case(f"{cmd}-binary-spec", [*prefix, "binary.yaml"], 2, ["binary.yaml", "not a text (UTF-8)"]),
        Case(f"{cmd}-latin1-spec", [*prefix, "latin1.yaml"], 2, ["latin1.yaml", "UTF-8", "offset 9"]),
        Case(f"{cmd}-empty-spec", [*prefix, "empty.yaml"], 2, ["empty.yaml", "empty"]),
        Case(f"{cmd}-comments-only-spec", [*prefix, "comments.yaml"], 2, ["comments.yaml", "empty"]),
        Case(
            f"{cmd}-duplicate-key",
            [*prefix, "dup.yaml"],
            2,
            ["dup.yaml", "line 4", "duplicate key 'lr'", "first given on line 3"],
        ),
        Case(
            f"{cmd}-unknown-model",
            [*prefix, Q, "--set", "model.name=foo"],
            2,
            ["model.name", "unknown model 'foo'", "resnet50"],
        ),
        Case(f"{cmd}-unknown-dataset", [*prefix, Q, "--set", "data.name=mnist"], 2, ["data.name", "mnist"]),
    ]
CASES += [
    Case("validate-duplicate-top-level-key", ["validate", "dup_top.yaml"], 2, ["line 3", "duplicate key 'seed'"]),
    # numbers: finite, and no booleans standing in for them
    *[
        Case(f"validate-lr-{v}", ["validate", Q, "--set", f"optim.lr={v}"], 2, ["optim.lr", want])
        for v, want in (
            ("inf", "valid number"),
            (".inf", "finite number"),
            ("1e400", "finite number"),
            ("-.inf", "finite number"),
            (".nan", "finite number"),
            ("true", "not a boolean"),
        )
    ],
    Case("validate-epochs-true", ["validate", Q, "--set", "optim.epochs=true"], 2, ["optim.epochs", "not a boolean"]),
    Case(
        "validate-density-false",
        ["validate", Q, "--set", "sparsity.final_density=false"],
        2,
        ["sparsity.final_density", "not a boolean"],
    ),
    Case(
        "validate-milestone-nan",
        ["validate", Q, "--set", "optim.milestones=[0.5, .nan]"],
        2,
        ["optim.milestones", "finite"],
    ),
    Case("run-lr-1e400", [*RUN, Q, "--set", "optim.lr=1e400"], 2, ["optim.lr", "finite number"]),
    Case("run-epochs-true", [*RUN, Q, "--set", "optim.epochs=true"], 2, ["optim.epochs", "not a boolean"]),
    # input shapes
    *[
        Case(
            f"plan-input-shape-{name}",
            ["plan", Q, "--set", "data.name=synthetic", "--set", f"data.input_shape={v}"],
            2,
            ["data.input_shape", want],
        )
        for name, v, want in (
            ("negative", "[-1,3]", "positive"),
            ("empty", "[]", "at least 1"),
            ("zero", "[0]", "positive"),
            ("four-dims", "[1,2,3,4]", "at most 3"),
        )
    ],
    Case(
        "plan-conv-model-flat-shape",
        ["plan", Q, "--set", "data.name=synthetic", "--set", "data.input_shape=[64]", "--set", "model.name=lenet5"],
        2,
        ["data.input_shape", "lenet5", "(C, H, W)"],
    ),
    # seeds: what torch and the db's INTEGER column take
    Case("run-seed-huge", [*RUN, Q, "--set", "seed=99999999999999999999"], 2, ["seed", "[0, 2147483647]"]),
    Case("run-seed-2**31", [*RUN, Q, "--set", "seed=2147483648"], 2, ["seed", "got 2147483648"]),
    Case("run-seed-negative", [*RUN, Q, "--set", "seed=-1"], 2, ["seed", "got -1"]),
    Case("sweep-seed-3e9", [*SWEEP, Q, "--seeds", "0,1,3000000000"], 2, ["sweep.seeds", "got 3000000000"]),
    # sweep names
    Case("sweep-name-300-chars", [*SWEEP, Q, "--name", "n" * 300], 2, ["sweep.name", "at most 100", "got 300"]),
    Case("sweep-name-markup", [*SWEEP, Q, "--name", "<script>alert(1)</script>"], 2, ["sweep.name", "letters, digits"]),
    Case("sweep-name-slash", [*SWEEP, Q, "--name", "../../etc"], 2, ["sweep.name"]),
    # granet validate checks a sweep: section too
    Case("validate-sweep-section-method", ["validate", "bad_sweep.yaml"], 2, ["sweep.methods", "bogus"]),
    Case("validate-sweep-section-seed", ["validate", "bad_sweep_seed.yaml"], 2, ["sweep.seeds", "3000000000"]),
    # --runs-dir that cannot be a folder: refused before the db or Ray
    Case(
        "run-runs-dir-is-a-file",
        ["run", "--db", "r.duckdb", "--runs-dir", "runs_file", Q],
        2,
        ["--runs-dir runs_file", "not a folder"],
        setup=[_runs_file],
    ),
    Case(
        "run-runs-dir-under-a-file",
        ["run", "--db", "r.duckdb", "--runs-dir", "runs_file/sub", Q],
        2,
        ["--runs-dir runs_file/sub", "runs_file is not a folder"],
        setup=[_runs_file],
    ),
    Case(
        "sweep-runs-dir-is-a-file",
        ["sweep", "--db", "r.duckdb", "--runs-dir", "runs_file", Q, "--methods", "gmp", "--densities", "0.1"],
        2,
        ["--runs-dir runs_file", "not a folder"],
        setup=[_runs_file],
    ),
    # --resume: read-only checks first, and no db is created for a refusal
    Case("resume-without-checkpoint", [*RUN, Q, "--resume"], 2, ["--resume", "no interrupted run", "no checkpoint"]),
    Case(
        "resume-corrupt-run-json",
        [*RUN, Q, "--resume"],
        2,
        ["--resume", "run.json is corrupt", "without --resume"],
        setup=[_corrupt_run_json],
    ),
    Case(
        "resume-run-json-not-a-mapping", [*RUN, Q, "--resume"], 2, ["run.json is corrupt"], setup=[_run_json_without_id]
    ),
    Case(
        "resume-completed-run",
        [*RUN, Q, "--resume"],
        2,
        ["--resume", "-c0mp1e7e", "already completed", "r.duckdb"],
        setup=[_completed_run],
        needs_db=True,
    ),
]


def _snapshot(root: Path) -> dict[str, bytes | None]:
    """Every file and folder under root, with the bytes of every file."""
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))}


def _check_one_error_line(result, code: int, words: list[str]) -> str:
    assert "Traceback" not in result.output and "Traceback" not in result.stderr, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code == code, (result.exit_code, result.output)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]


#: every case without and with an existing results db, except those only meaningful with one
CASE_DB = [(c, with_db) for c in CASES for with_db in (False, True) if with_db or not c.needs_db]


@pytest.mark.parametrize("case,with_db", CASE_DB, ids=[f"{c.id}-{'existing-db' if d else 'no-db'}" for c, d in CASE_DB])
def test_bad_input_is_one_line_exit_code_and_touches_nothing(case, with_db, cli, tmp_path, monkeypatch):
    w = tmp_path / "w"
    w.mkdir()
    monkeypatch.chdir(w)
    _spec_files(w)
    if with_db and not case.needs_db:
        with Store(w / "r.duckdb") as st:  # an existing results db with a sweep in it
            st.add_sweep("sw-existing", "existing", {"methods": ["granet"]})
        (w / "runs" / "keep").mkdir(parents=True)
        (w / "runs" / "keep" / "note.txt").write_text("left alone")
    for setup in case.setup:
        setup(w)
    before = _snapshot(tmp_path)
    result = cli(*case.args)
    _check_one_error_line(result, case.code, case.words)
    assert _snapshot(tmp_path) == before  # no db file created or changed, no runs dir, no sweeps row


def test_validate_accepts_a_good_sweep_section(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _spec_files(tmp_path)
    result = cli("validate", "good_sweep.yaml")
    assert result.exit_code == 0, result.output
    assert "4 points valid" in result.stdout  # 2 methods x 2 densities x 1 seed


def test_float_fields_still_take_ints_and_exponents(cli):
    spec = load_run_spec(
        QUICKSTART, ["optim.lr=1", "optim.weight_decay=1e-4", "sparsity.final_density=1e-1", "seed=2147483647"]
    )
    assert (spec.optim.lr, spec.optim.weight_decay, spec.sparsity.final_density) == (1.0, 0.0001, 0.1)
    assert spec.seed == 2**31 - 1
    # a YAML exponent without a dot (`1e-3`, a string to YAML 1.1) is the number it looks like
    assert (
        load_run_spec(QUICKSTART, ["optim.lr=1e-3"]).spec_hash()
        == load_run_spec(QUICKSTART, ["optim.lr=0.001"]).spec_hash()
    )


def test_unwritable_runs_dir_is_refused_before_anything_is_written(cli, tmp_path, monkeypatch):
    """A read-only folder: chmod for a normal user; root ignores modes, so a read-only tmpfs."""
    ro = tmp_path / "ro"
    ro.mkdir()
    mounted = False
    if os.geteuid() == 0:
        r = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(ro)], capture_output=True, check=False
        )
        if r.returncode != 0:
            pytest.skip(f"running as root and cannot mount a read-only tmpfs: {r.stderr.decode().strip()}")
        mounted = True
    else:
        ro.chmod(0o555)
    try:
        monkeypatch.chdir(tmp_path)
        before = _snapshot(tmp_path)
        for args in (
            ["run", Q, "--db", "r.duckdb", "--runs-dir", "ro/runs"],
            ["sweep", Q, "--db", "r.duckdb", "--runs-dir", "ro/runs", "--methods", "gmp", "--densities", "0.1"],
            ["run", Q, "--db", "r.duckdb", "--runs-dir", "ro"],
        ):
            _check_one_error_line(cli(*args), 2, ["--runs-dir ro", "is not writable"])
        assert _snapshot(tmp_path) == before
    finally:
        if mounted:
            subprocess.run(["umount", str(ro)], check=False)
        else:
            ro.chmod(0o755)


def test_debug_shows_the_traceback_behind_the_line(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _spec_files(tmp_path)
    plain = cli("validate", "binary.yaml")
    assert plain.exit_code == 2 and "Traceback" not in plain.output
    debug = cli("--debug", "validate", "binary.yaml")
    assert debug.exit_code == 2 and "Traceback" in debug.stderr and "not a text (UTF-8)" in debug.stderr


def test_an_unanticipated_error_is_one_line_unless_debug(cli, monkeypatch):
    import granet_cli.plan

    def boom(spec):
        raise ZeroDivisionError("boom in the planner")

    monkeypatch.setattr(granet_cli.plan, "build_plan", boom)
    result = cli("plan", Q)
    line = _check_one_error_line(result, 1, ["internal error", "ZeroDivisionError", "boom in the planner", "--debug"])
    assert "Traceback" not in line
    debug = cli("--debug", "plan", Q)
    assert isinstance(debug.exception, ZeroDivisionError)  # re-raised: Python prints its traceback


# ----------------------------------------------------------------------------- faults during a run
def _granet(*args: str) -> list[str]:
    return [sys.executable, "-m", "granet_cli.cli", *args]


def _start_and_wait_for_checkpoint(args: list[str], runs: Path) -> subprocess.Popen:
    proc = subprocess.Popen(
        _granet(*args), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    deadline = time.time() + 300
    while time.time() < deadline and not list(runs.glob("*/checkpoint.pt")) and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, proc.communicate()
    assert list(runs.glob("*/checkpoint.pt")), "no checkpoint within 300 s"
    return proc


LONG = ["--set", "optim.epochs=40", "--set", "sparsity.final_prune_epoch=20"]


@pytest.mark.parametrize(
    "sig,code,what",
    [(signal.SIGTERM, 143, "terminated (SIGTERM)"), (signal.SIGINT, 130, "interrupted (Ctrl-C)")],
    ids=["SIGTERM", "Ctrl-C"],
)
def test_signal_marks_interrupted_then_the_printed_hint_resumes(sig, code, what, cli, tmp_path, monkeypatch):
    db, runs = tmp_path / "my db.duckdb", tmp_path / "runs"
    args = ["run", Q, *LONG, "--set", "name=it's mine", "--db", str(db), "--runs-dir", str(runs), "-q"]
    proc = _start_and_wait_for_checkpoint(args, runs)
    os.kill(proc.pid, sig)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == code, (stdout, stderr)
    assert "Traceback" not in stdout + stderr
    ((status, error),) = rows(db, "select status, error from runs")
    ((done,),) = rows(db, "select count(*) from epochs")
    assert status == "interrupted" and what in error and 0 < done < 40, (status, error, done)
    hint = [ln for ln in stderr.splitlines() if ln.startswith("continue with: ")]
    assert len(hint) == 1, stderr
    argv = shlex.split(hint[0].removeprefix("continue with: "))
    assert argv[:3] == ["granet", "run", Q] and argv[-1] == "--resume"
    for flag in ("--db", "--runs-dir"):
        assert flag in argv
    assert argv[argv.index("--db") + 1] == str(db) and argv[argv.index("--runs-dir") + 1] == str(runs)
    assert [argv[i + 1] for i, a in enumerate(argv) if a == "--set"] == [
        "optim.epochs=40",
        "sparsity.final_prune_epoch=20",
        "name=it's mine",
    ]

    # the resume runs out of disk saving its first checkpoint: one line, the row resumable, not 'running'
    run_dir = next(runs.glob("*/checkpoint.pt")).parent
    _checkpoint_writes_hit_a_full_disk(monkeypatch)
    full = cli(*args, "--resume")
    monkeypatch.undo()
    _check_one_error_line(full, 1, [f"no space left on {run_dir}", "recorded as interrupted", "--resume"])
    assert not list(run_dir.glob(".checkpoint.pt.*"))  # the partial file is gone
    ((status,),) = rows(db, "select status from runs")
    assert status == "interrupted"

    # the printed command, pasted into a shell, finishes the run: one row, every epoch once
    resumed = subprocess.run(_granet(*argv[1:]), cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
    assert resumed.returncode == 0, resumed.stderr
    assert rows(db, "select count(*), min(status), max(status) from runs") == [(1, "completed", "completed")]
    assert [e for (e,) in rows(db, "select epoch from epochs order by epoch")] == list(range(1, 41))


def _checkpoint_writes_hit_a_full_disk(monkeypatch) -> None:
    """The temporary file a checkpoint is written to (then renamed) is a link to /dev/full: ENOSPC."""
    import tempfile

    real = tempfile.mkstemp

    def mkstemp(suffix=None, prefix=None, dir=None, text=False):
        if prefix and prefix.startswith(".checkpoint.pt."):
            path = Path(dir) / f"{prefix}full{suffix or ''}"
            path.symlink_to("/dev/full")
            return os.open(path, os.O_WRONLY), str(path)
        return real(suffix=suffix, prefix=prefix, dir=dir, text=text)

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)


def test_checkpoint_disk_full_on_the_first_epoch_records_failed(cli, tmp_path, monkeypatch):
    db, runs = tmp_path / "r.duckdb", tmp_path / "runs"
    run_dir = runs / load_run_spec(QUICKSTART, ["optim.epochs=3", "sparsity.final_prune_epoch=2"]).spec_hash()
    _checkpoint_writes_hit_a_full_disk(monkeypatch)  # every checkpoint write: ENOSPC
    result = cli("run", Q, *SHORT, "--db", db, "--runs-dir", runs, "-q")
    line = _check_one_error_line(result, 1, [f"no space left on {run_dir}", "recorded as failed"])
    assert "--resume" not in line  # nothing to resume from
    ((status, error),) = rows(db, "select status, error from runs")
    assert status == "failed" and "no space left on" in error


def test_results_db_failure_mid_run_is_one_line_and_resumable(cli, tmp_path, monkeypatch):
    from granet_cli.store import StoreError

    db, runs = tmp_path / "r.duckdb", tmp_path / "runs"
    real_add_epochs = Store.add_epochs  # what a run's epochs are written through

    def add_epochs(self, run_id, rows_, mask_updates=None):
        if any(row["epoch"] == 2 for row in rows_):
            raise StoreError(f"results db {db}: IO Error: No space left on device")
        return real_add_epochs(self, run_id, rows_, mask_updates)

    monkeypatch.setattr(Store, "add_epochs", add_epochs)
    result = cli("run", Q, *SHORT, "--db", db, "--runs-dir", runs, "-q")
    _check_one_error_line(result, 1, ["No space left on device", "recorded as interrupted", "--resume"])
    assert rows(db, "select status from runs") == [("interrupted",)]  # never a stale 'running' row
    assert rows(db, "select epoch from epochs") == [(1,)]
    monkeypatch.setattr(Store, "add_epochs", real_add_epochs)
    again = cli("run", Q, *SHORT, "--db", db, "--runs-dir", runs, "-q", "--resume")
    assert again.exit_code == 0, again.output
    assert rows(db, "select count(*), min(status) from runs") == [(1, "completed")]
    assert [e for (e,) in rows(db, "select epoch from epochs order by epoch")] == [1, 2, 3]


def test_killed_run_is_reaped_as_interrupted_by_the_next_run(cli, tmp_path):
    if not hasattr(Store, "reap_orphans"):
        pytest.skip("the results db has no orphan reaping yet (Store.reap_orphans)")
    db, runs = tmp_path / "k.duckdb", tmp_path / "runs"
    args = ["run", Q, *LONG, "--db", str(db), "--runs-dir", str(runs), "-q"]
    proc = _start_and_wait_for_checkpoint(args, runs)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate()
    ((killed, status),) = rows(db, "select run_id, status from runs")
    assert status == "running"  # nobody could mark it: the process is gone
    result = cli(*args)
    assert result.exit_code == 0, result.output
    assert rows(db, "select status from runs where run_id = ?", killed) == [("interrupted",)]
    assert rows(db, "select count(*) from runs where status = 'completed' and run_id <> ?", killed) == [(1,)]


# ----------------------------------------------------------------------------- sweeps and reports
def test_sweep_in_which_every_trial_diverges_exits_1(cli, tmp_path):
    db = tmp_path / "s.duckdb"
    result = cli(
        "sweep",
        Q,
        "--methods",
        "gmp",
        "--densities",
        "0.1",
        "--set",
        "optim.lr=1e12",
        "--set",
        "optim.weight_decay=0",
        "--set",
        "optim.epochs=2",
        "--set",
        "sparsity.final_prune_epoch=1",
        "--db",
        db,
        "--runs-dir",
        tmp_path / "runs",
        "-q",
    )
    assert "Traceback" not in result.output
    assert result.exit_code == 1, result.output
    assert "every trial of this sweep failed or diverged" in result.stderr
    assert rows(db, "select status from runs") == [("diverged",)]


def test_markdown_report_escapes_the_sweep_name(tmp_path):
    from granet_cli.report import build_report

    db = tmp_path / "r.duckdb"
    evil = "<script>alert(1)</script> | *x*"
    with Store(db) as st:  # a name from before sweep names were checked
        st.add_sweep("sw-evil", evil, {"methods": ["granet"]})
        st.start_run(
            {
                "run_id": "r1",
                "sweep_id": "sw-evil",
                "spec_hash": "h1",
                "method": "granet",
                "model": "mlp",
                "dataset": "digits",
                "target_density": 0.1,
                "seed": 0,
                "spec_json": "{}",
            }
        )
        st.add_epoch("r1", {"epoch": 1, "step": 10, "test_acc": 0.9, "density": 0.1})
        st.finish_run("r1", {"final_test_acc": 0.9, "best_test_acc": 0.9, "achieved_density": 0.1}, [])
    res = build_report(db, sweep="sw-evil", out_dir=tmp_path / "rep", fmt="md", name="evil")
    md = res.md_path.read_text()
    assert "<script>" not in md and "&lt;script&gt;alert(1)&lt;/script&gt;" in md
    assert "\\| *x*" in md  # a pipe cannot open a table cell either
