"""`granet sweep` end to end: Ray Tune trials, the driver-only DuckDB writes, resume after a
kill, a failing trial, grid validation, and joining a separately started local Ray cluster.

Every Ray test runs `granet sweep` in a subprocess: the Ray instance it starts lives and dies
with that process (the cluster test starts its own `ray start --head` and stops it by signal).
"""

import io
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from granet_cli import train
from granet_cli.store import Store
from granet_cli.sweep import (
    EPOCHS_KEY,
    FINAL_KEY,
    MARKER,
    Display,
    SweepOutcome,
    TrialOutcome,
    experiment_name,
    make_callback,
    plan_sweep,
)

from ..conftest import ROOT, SMALL_SWEEP, granet_sweep, rows
from .test_cluster import _alive, _comm, _descendants

SMALL = SMALL_SWEEP
SMALL_OVERRIDES = ["optim.epochs=2", "sparsity.final_prune_epoch=1"]


def already_done_ran(stdout: str) -> tuple[int, int]:
    m = re.search(r"(\d+) already done, (\d+) ran", stdout)
    assert m, stdout
    return int(m.group(1)), int(m.group(2))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ----------------------------------------------------------------------------- no Ray needed
def test_invalid_grid_exits_2_names_the_field_and_creates_no_db(cli, tmp_path):
    db = tmp_path / "r.duckdb"
    result = cli(
        "sweep", "--methods", "granet,bogus", "--densities", "0.1,1.5", "--db", db, "--runs-dir", tmp_path / "runs"
    )
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert any("sweep.methods" in ln and "bogus" in ln for ln in lines), result.stderr
    assert any("sweep.densities" in ln and "1.5" in ln for ln in lines), result.stderr
    assert not db.exists()

    # a grid value that is valid on its own but not for one method: every bad point is listed
    result = cli("sweep", "--methods", "granet,rigl", "--densities", "0.1,0.6", "--seeds", "0,1", "--db", db)
    assert result.exit_code == 2
    bad = [ln for ln in result.stderr.splitlines() if "sparsity.init_density" in ln]
    assert len(bad) == 2 and all("method=granet density=0.6" in ln for ln in bad), result.stderr
    assert not db.exists() and not (tmp_path / "runs").exists()


def test_yaml_sweep_section_and_flag_overrides(tmp_path):
    spec = tmp_path / "s.yaml"
    spec.write_text(
        (ROOT / "experiments" / "quickstart.yaml").read_text()
        + "sweep:\n  name: mine\n  methods: [rigl, dense]\n  densities: [0.2]\n  seeds: [0, 1]\n"
    )
    plan = plan_sweep(spec, SMALL_OVERRIDES)
    assert plan.name == "mine" and plan.grid.methods == ["rigl", "dense"]
    assert [(p.method, p.density, p.seed) for p in plan.points] == [
        ("rigl", 0.2, 0),
        ("rigl", 0.2, 1),
        ("dense", 1.0, 0),
        ("dense", 1.0, 1),
    ]
    assert plan.points[2].spec.sparsity.final_density == 1.0
    flags = plan_sweep(spec, SMALL_OVERRIDES, seeds="3", name="other")
    assert flags.name == "other" and [p.seed for p in flags.points] == [3, 3]
    assert flags.sweep_id != plan.sweep_id
    # the default name (and so the id) is a function of base spec and grid only
    a = plan_sweep(None, SMALL_OVERRIDES, methods="granet,rigl", densities="0.1,0.2")
    b = plan_sweep(None, SMALL_OVERRIDES, methods="rigl,granet", densities="0.2,0.1")
    assert a.name.startswith("sweep-") and (a.name, a.sweep_id) == (b.name, b.sweep_id)


def test_driver_callback_writes_run_rows_and_diverged(tmp_path):
    """The Tune callback alone (fed fake trials): the same rows as `granet run`, diverged kept."""
    import ray.cloudpickle

    plan = plan_sweep(None, SMALL_OVERRIDES, methods="granet,rigl", densities="0.1")
    trials = [TrialOutcome(p, f"{p.spec_hash[:8]}-x{i}") for i, p in enumerate(plan.points)]
    by_run = {t.run_id: t for t in trials}
    from rich.console import Console

    display = Display(Console(file=io.StringIO()), plan, len(trials), None)
    with Store(tmp_path / "r.duckdb") as store:
        cb = make_callback(store, plan, by_run, display)
        ray.cloudpickle.dumps(cb)  # Tune pickles its RunConfig, callbacks included
        fake = [SimpleNamespace(config={"point": {"run_id": t.run_id}}, error_file=None) for t in trials]
        row = {
            "epoch": 1,
            "step": 10,
            "lr": 0.05,
            "train_loss": 1.0,
            "train_acc": 0.5,
            "test_loss": 1.0,
            "test_acc": 0.6,
            "density": 0.1,
            "itop_rate": 0.2,
            "seconds": 0.1,
        }
        final = {
            "final_test_acc": 0.6,
            "best_test_acc": 0.6,
            "achieved_density": 0.1,
            "itop_rate": 0.2,
            "train_flops_frac": 0.3,
            "inference_flops_frac": 0.1,
            "wall_seconds": 1.0,
            "samples_per_second": 9.0,
        }
        upd = [{"step": 10, "target_density": 0.1, "dropped": 3, "grown": 3, "density": 0.1}]
        for f in fake:
            cb.on_trial_start(0, [], f)
            cb.on_trial_result(0, [], f, {EPOCHS_KEY: json.dumps([[row, upd]])})
        layers = [{"name": "fc1.weight", "shape": "[64, 64]", "numel": 4096, "achieved_density": 0.1}]
        cb.on_trial_result(
            0,
            [],
            fake[0],
            {FINAL_KEY: json.dumps({"status": "completed", "error": None, "final": final, "layers": layers})},
        )
        cb.on_trial_result(
            0,
            [],
            fake[1],
            {
                FINAL_KEY: json.dumps(
                    {"status": "diverged", "error": "loss became nan at epoch 2", "final": final, "layers": []}
                )
            },
        )
        cb.on_trial_complete(0, [], fake[0])
        cb.on_trial_complete(0, [], fake[1])
        got = {r["run_id"]: r for r in store.runs(sweep=plan.sweep_id)}
        assert got[trials[0].run_id]["status"] == "completed"
        assert got[trials[1].run_id]["status"] == "diverged"
        assert got[trials[1].run_id]["error"] == "loss became nan at epoch 2"
        assert got[trials[0].run_id]["spec_hash"] == plan.points[0].spec_hash
        assert len(store.epochs([t.run_id for t in trials])) == 2
        assert len(store.mask_updates([t.run_id for t in trials])) == 2
        assert len(store.layers([trials[0].run_id])) == 1
    out = SweepOutcome(plan, trials, 0, 0, 1.0)
    assert out.count("completed") == 1 and out.count("diverged") == 1


# ----------------------------------------------------------------------------- Ray Tune sweeps
def test_a_retry_that_waits_for_room_is_said_once(tmp_path):
    """The callback alone: a retried trial still pending after a few seconds waits for a node with
    room for it (a lost node's trial, while the others are busy): said once, with what it needs."""
    from rich.console import Console

    plan = plan_sweep(None, SMALL_OVERRIDES, methods="granet", densities="0.1")
    t = TrialOutcome(plan.points[0], "r-1", status="running", attempts=2, waiting_since=time.monotonic() - 60)
    text = io.StringIO()
    display = Display(Console(file=text, width=200), plan, 1, None)
    with Store(tmp_path / "r.duckdb") as store:
        cb = make_callback(store, plan, {t.run_id: t}, display)
        need = SimpleNamespace(required_resources={"CPU": 2.0, "GPU": 0.5})
        trial = SimpleNamespace(config={"point": {"run_id": t.run_id}}, status="PENDING", placement_group_factory=need)
        cb.on_step_end(0, [trial])
        cb.on_step_end(1, [trial])
    said = re.findall(r"granet d=0\.1 seed=0: attempt 2 waits for a node with 2 CPU \+ 0\.5 GPU free", text.getvalue())
    assert len(said) == 1, text.getvalue()


def test_sweep_2x2_completes_tagged_and_rerun_runs_nothing(tmp_path):
    db = tmp_path / "r.duckdb"
    args = ["--methods", "granet,rigl", "--densities", "0.1,0.2", *SMALL]
    r = granet_sweep(tmp_path, *args)
    assert r.returncode == 0, r.stdout + r.stderr
    assert already_done_ran(r.stdout) == (0, 4)
    plan = plan_sweep(None, SMALL_OVERRIDES, methods="granet,rigl", densities="0.1,0.2")
    runs = rows(db, "select run_id, sweep_id, status, spec_hash, method, target_density, final_test_acc from runs")
    assert len(runs) == 4
    assert {r_[1] for r_ in runs} == {plan.sweep_id} and all(r_[2] == "completed" for r_ in runs)
    assert {r_[3] for r_ in runs} == {p.spec_hash for p in plan.points}
    assert {(r_[4], r_[5]) for r_ in runs} == {(m, d) for m in ("granet", "rigl") for d in (0.1, 0.2)}
    assert rows(db, "select name from sweeps where sweep_id = ?", plan.sweep_id) == [(plan.name,)]
    per_run = dict(rows(db, "select run_id, count(*) from epochs group by run_id"))
    assert sorted(per_run.values()) == [2, 2, 2, 2] and set(per_run) == {r_[0] for r_ in runs}
    assert rows(db, "select count(distinct run_id) from layers") == [(4,)]

    # each trial is the same train.run as `granet run` (CPU runs are deterministic)
    point = next(p for p in plan.points if p.method == "granet" and p.density == 0.1)
    direct = train.run(point.spec, tmp_path / "direct", threads=1)
    stored = next(r_[6] for r_ in runs if r_[3] == point.spec_hash)
    assert stored == direct.final["final_test_acc"]

    r = granet_sweep(tmp_path, *args)
    assert r.returncode == 0, r.stdout + r.stderr
    assert already_done_ran(r.stdout) == (4, 0)
    assert rows(db, "select count(*) from runs") == [(4,)]

    r = granet_sweep(tmp_path, *args, "--dry-run")
    assert r.returncode == 0 and r.stdout.count("done") >= 4 and "to run" not in r.stdout.replace("0 to run", "")
    fresh = tmp_path / "fresh.duckdb"
    r = granet_sweep(tmp_path, *args, "--dry-run", db=fresh)
    assert r.returncode == 0 and "0 done, 4 to run" in r.stdout and not fresh.exists()


def test_corrupt_checkpoint_fails_its_trial_once_and_the_others_complete(tmp_path):
    """A point whose checkpoint in storage is corrupt would fail on every attempt: it is recorded
    failed with its error after one attempt (never retried, though --max-failures is 1), and the
    other points complete."""
    db = tmp_path / "r.duckdb"
    args = ["--methods", "granet,rigl", "--densities", "0.1", "--max-failures", "1", *SMALL]
    plan = plan_sweep(None, SMALL_OVERRIDES, methods="granet,rigl", densities="0.1")
    victim = next(p for p in plan.points if p.method == "rigl")
    # the layout an earlier, killed invocation leaves: <storage>/<experiment>/<trial>/checkpoint_N/
    bad = tmp_path / "runs" / "ray" / experiment_name(plan) / "rigl_old_trial" / "checkpoint_000000"
    bad.mkdir(parents=True)
    (bad / MARKER).write_text(json.dumps({"spec_hash": victim.spec_hash, "run_id": "gone", "epoch": 1, "step": 22}))
    (bad / train.CHECKPOINT).write_bytes(b"not a torch checkpoint")

    r = granet_sweep(tmp_path, *args)
    assert r.returncode == 1, r.stdout + r.stderr
    got = {h: (s, e) for h, s, e in rows(db, "select spec_hash, status, error from runs")}
    status, error = got[victim.spec_hash]
    assert status == "failed" and f"continuing from checkpoint {bad} failed" in error, error
    assert "not retried" in error, error
    assert rows(db, "select attempts from runs where spec_hash = ?", victim.spec_hash) == [(1,)]
    assert "retrying" not in r.stdout, r.stdout
    others = [p.spec_hash for p in plan.points if p is not victim]
    assert all(got[h] == ("completed", None) for h in others)
    assert "Traceback" not in r.stdout + r.stderr

    shutil.rmtree(bad.parent)  # fixed: the rerun runs the failed point only, from epoch 0
    r = granet_sweep(tmp_path, *args)
    assert r.returncode == 0, r.stdout + r.stderr
    assert already_done_ran(r.stdout) == (1, 1)
    statuses = sorted(s for (s,) in rows(db, "select status from runs where spec_hash = ?", victim.spec_hash))
    assert statuses == ["completed", "failed"]


#: epochs of the killed sweep's trials: ~3 s each, so that when one has completed another has been
#: training for longer than the driver's db writes trail it (about 2 s; at 20 epochs, ~1 s trials
#: on an idle machine, the sweep could finish before the test saw a trial mid-way)
KILL_EPOCHS = 60


@pytest.mark.slow
def test_killed_sweep_resumes_only_missing_points(tmp_path):
    db = tmp_path / "r.duckdb"
    args = [
        "--methods",
        "granet,rigl,gmp",
        "--densities",
        "0.1,0.2",
        "--set",
        f"optim.epochs={KILL_EPOCHS}",
        "--set",
        f"sparsity.final_prune_epoch={KILL_EPOCHS // 2}",
        "--name",
        "kill-me",
        "--checkpoint-every",  # a Tune checkpoint every epoch: the killed trials resume from one
        "0",
    ]
    cmd = [
        sys.executable,
        "-m",
        "granet_cli.cli",
        "sweep",
        *args,
        "--db",
        str(db),
        "--runs-dir",
        str(tmp_path / "runs"),
    ]
    log = open(tmp_path / "sweep.log", "w")
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + 150
        while time.time() < deadline and proc.poll() is None:
            time.sleep(0.3)
            if not db.exists():
                continue
            try:  # the sweep holds the write lock: this reads a snapshot copy
                with Store(db, read_only=True) as st:
                    completed, running = st.runs(status="completed"), st.runs(status="running")
                    trained = st.epochs([r["run_id"] for r in running])  # each epoch row comes with a checkpoint
            except Exception:
                continue
            if completed and trained:
                break
        else:
            pytest.fail("no completed run while others were training: " + (tmp_path / "sweep.log").read_text())
        started = _descendants(proc.pid)  # the Ray instance and the trials of this driver
        assert started
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        log.close()
    # nothing the driver started outlives it (its watchdog ends them), nor its Ray session folder
    deadline = time.time() + 30
    while [p for p in started if _alive(p)] and time.time() < deadline:
        time.sleep(0.5)
    assert not [(p, _comm(p)) for p in started if _alive(p)]
    assert not list(Path("/tmp/ray").glob(f"session_*_{proc.pid}"))
    done_before = {h for (h,) in rows(db, "select spec_hash from runs where status = 'completed'")}
    left_running = {rid for (rid,) in rows(db, "select run_id from runs where status = 'running'")}
    assert done_before and left_running and len(done_before) < 6

    r = granet_sweep(tmp_path, *args)
    assert r.returncode == 0, r.stdout + r.stderr
    assert already_done_ran(r.stdout) == (len(done_before), 6 - len(done_before))
    assert rows(db, "select count(*), count(distinct spec_hash) from runs where status = 'completed'") == [(6, 6)]
    assert rows(db, "select count(*) from runs where status = 'running'") == [(0,)]
    # a run that was training when the driver died goes on from its last checkpoint in storage,
    # as the same run (one more attempt); one that had no checkpoint yet stays interrupted
    # and its point starts over as a new run
    flat = " ".join(r.stdout.split())
    resumed = re.findall(r"(\w+ d=[\d.]+ seed=\d): resuming from epoch (\d+)", flat)
    assert resumed and all(int(e) >= 1 for _, e in resumed), r.stdout
    after = {rid: (st, att) for rid, st, att in rows(db, "select run_id, status, attempts from runs")}
    continued = {rid for rid in left_running if after[rid][0] == "completed"}
    assert len(continued) == len(resumed) and all(after[rid][1] == 2 for rid in continued), after
    assert all(after[rid] == ("interrupted", 1) for rid in left_running - continued), after
    # no row twice, none missing: every completed run has epochs 1..KILL_EPOCHS once
    per_run = rows(
        db,
        "select r.run_id, count(e.epoch), count(distinct e.epoch), min(e.epoch), max(e.epoch) "
        "from runs r join epochs e using (run_id) where r.status = 'completed' group by r.run_id",
    )
    assert len(per_run) == 6 and all(row[1:] == (KILL_EPOCHS, KILL_EPOCHS, 1, KILL_EPOCHS) for row in per_run), per_run
    # and a continued run ends exactly where an uninterrupted one does, mask updates included
    plan = plan_sweep(
        None,
        [f"optim.epochs={KILL_EPOCHS}", f"sparsity.final_prune_epoch={KILL_EPOCHS // 2}"],
        methods="granet,rigl,gmp",
        densities="0.1,0.2",
        name="kill-me",
    )
    rid = sorted(continued)[0]
    (h,) = rows(db, "select spec_hash from runs where run_id = ?", rid)[0]
    direct = train.run(next(p for p in plan.points if p.spec_hash == h).spec, tmp_path / "direct", threads=1)
    assert rows(db, "select final_test_acc, achieved_density, itop_rate from runs where run_id = ?", rid) == [
        (direct.final["final_test_acc"], direct.final["achieved_density"], direct.final["itop_rate"])
    ]
    assert rows(db, "select step, dropped, grown from mask_updates where run_id = ? order by step", rid) == [
        (u["step"], u["dropped"], u["grown"]) for u in direct.mask_updates
    ]


@pytest.mark.slow
@pytest.mark.ray
def test_sigterm_to_a_sweep_driver_exits_143_and_leaves_its_run_interrupted(tmp_path):
    """SIGTERM (`kill`, a scheduler's time limit) stops a sweep as it stops `granet run`: exit 143
    (README "Errors and exit codes"; Ctrl-C is 130), the running trial recorded interrupted, and the
    resume hint on stderr."""
    db = tmp_path / "r.duckdb"
    args = [
        "--methods",
        "granet",
        "--densities",
        "0.1",
        "--set",
        "optim.epochs=150",  # ~8 s: its first epochs reach the db (~2 s behind) well before its end
        "--set",
        "sparsity.final_prune_epoch=10",
    ]
    cmd = [sys.executable, "-m", "granet_cli.cli", "sweep", *args, "--name", "term-me", "--db", str(db)]
    cmd += ["--runs-dir", str(tmp_path / "runs")]
    out_log, err_log = tmp_path / "out.log", tmp_path / "err.log"
    with open(out_log, "w") as o, open(err_log, "w") as e:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=o, stderr=e, start_new_session=True)
    try:
        deadline = time.time() + 150
        while time.time() < deadline and proc.poll() is None:
            time.sleep(0.3)
            try:  # the sweep holds the write lock: this reads a snapshot copy
                with Store(db, read_only=True) as st:
                    running = st.runs(status="running")
                    if running and st.epochs([r["run_id"] for r in running]):
                        break
            except Exception:
                continue
        else:
            pytest.fail("no trial trained an epoch: " + out_log.read_text() + err_log.read_text())
        proc.send_signal(signal.SIGTERM)  # the driver alone, as `kill PID` does
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
    out, err = out_log.read_text(), err_log.read_text()
    assert proc.returncode == 143, out + err
    assert "terminated (SIGTERM); resume (completed points are skipped) with: granet sweep" in err, err
    assert "Traceback" not in out + err
    assert rows(db, "select status from runs") == [("interrupted",)]


@pytest.mark.slow
@pytest.mark.ray
def test_sweep_joins_a_separately_started_local_cluster(tmp_path):
    ray_bin = Path(sys.executable).with_name("ray")
    if not ray_bin.exists():
        pytest.skip("no `ray` executable beside the interpreter")
    port = free_port()
    temp = tempfile.mkdtemp(prefix="granet-ray-", dir="/tmp")  # short: Ray's socket paths have a length limit
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    env.pop("RAY_ADDRESS", None)
    log_path = tmp_path / "ray.log"
    log = open(log_path, "w")
    head = subprocess.Popen(
        [
            str(ray_bin),
            "start",
            "--head",
            f"--port={port}",
            "--num-cpus=2",
            "--include-dashboard=false",
            f"--dashboard-port={free_port()}",
            f"--dashboard-agent-listen-port={free_port()}",
            "--node-ip-address=127.0.0.1",
            f"--temp-dir={temp}",
            "--disable-usage-stats",
            "--block",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.time() + 90
        while "Ray runtime started" not in log_path.read_text():
            assert head.poll() is None and time.time() < deadline, log_path.read_text()
            time.sleep(0.5)
        r = granet_sweep(
            tmp_path, "--address", f"127.0.0.1:{port}", "--methods", "granet", "--densities", "0.1", *SMALL, env=env
        )
        assert r.returncode == 0, r.stdout + r.stderr
        assert f"cluster at 127.0.0.1:{port}" in r.stdout
        assert rows(tmp_path / "r.duckdb", "select status from runs") == [("completed",)]
    finally:
        head.send_signal(signal.SIGTERM)  # `ray start --block` stops its own processes on SIGTERM
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait(timeout=30)
        log.close()
        shutil.rmtree(temp, ignore_errors=True)
