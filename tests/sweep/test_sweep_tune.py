"""`granet sweep` features on a local Ray instance: `--grid` sweeps, a spec with a relative
data.root run from another directory, resources checked before anything is written, and the
driver's idempotent rows when a trial is retried from a checkpoint (the callback alone)."""

import io
import json
import re
import subprocess
import sys
from types import SimpleNamespace

import pytest

from granet_cli.store import Store
from granet_cli.sweep import (
    EPOCHS_KEY,
    FINAL_KEY,
    REPLAY_KEY,
    Display,
    TrialOutcome,
    make_callback,
    plan_sweep,
)

from ..conftest import SMALL_SWEEP, granet_sweep, rows, write_fake_cifar10

SMALL = SMALL_SWEEP


def test_grid_sweep_over_lr_completes_with_points_labelled_by_lr(tmp_path):
    tb = tmp_path / "tb"
    r = granet_sweep(
        tmp_path,
        "--methods",
        "granet",
        "--densities",
        "0.1",
        "--grid",
        "optim.lr=0.05,0.1",
        *SMALL,
        "--tensorboard",
        tb,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    db = tmp_path / "r.duckdb"
    # every trial's epochs in TensorBoard, as the driver wrote them to the DB
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    for (run_id,) in rows(db, "select run_id from runs"):
        acc = EventAccumulator(str(tb / run_id))
        acc.Reload()
        got = [(e.step, e.value) for e in acc.Scalars("test/acc")]
        want = rows(db, "select epoch, test_acc from epochs where run_id = ? order by epoch", run_id)
        assert [s for s, _ in got] == [e for e, _ in want] == [1, 2]
        assert [v for _, v in got] == pytest.approx([v for _, v in want], rel=1e-6)
    # the report labels the two configurations by the field the grid varies, never pools them
    rep = subprocess.run(
        [
            sys.executable,
            "-m",
            "granet_cli.cli",
            "report",
            "--db",
            str(db),
            "--out",
            str(tmp_path / "rep"),
            "--format",
            "md",
            "--name",
            "g",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert rep.returncode == 0, rep.stdout + rep.stderr
    md = (tmp_path / "rep" / "g.md").read_text()
    assert "granet (optim.lr=0.05)" in md and "granet (optim.lr=0.1)" in md
    got = sorted(
        (json.loads(spec)["optim"]["lr"], status) for spec, status in rows(db, "select spec_json, status from runs")
    )
    assert got == [(0.05, "completed"), (0.1, "completed")]
    flat = " ".join(r.stdout.split())
    for lr in ("0.05", "0.1"):
        assert f"ok granet d=0.1 seed=0 lr={lr}: completed" in flat, r.stdout
    assert re.search(r"┃\s+seed\s+┃\s+lr\s+┃", r.stdout), r.stdout  # the summary table has an lr column
    (grid_json,) = rows(db, "select grid_json from sweeps")[0]
    assert json.loads(grid_json)["grid"] == {"optim.lr": [0.05, 0.1]}
    # the same command again: the same sweep, nothing to run
    r = granet_sweep(tmp_path, "--methods", "granet", "--densities", "0.1", "--grid", "optim.lr=0.1,0.05", *SMALL)
    assert r.returncode == 0 and "2 already done, 0 ran" in r.stdout, r.stdout + r.stderr


def test_sweep_of_a_spec_with_a_relative_data_root_runs_from_its_directory(tmp_path):
    """Tune starts trials in their own working folders: data.root: data/cifar10 must still be
    the folder beside where granet was started."""
    work = tmp_path / "project"
    write_fake_cifar10(work / "data" / "cifar10", per_batch=8)
    (work / "tiny.yaml").write_text(
        "model: {name: mlp}\ndata: {name: cifar10, root: data/cifar10, batch_size: 8, test_batch_size: 8}\n"
        "optim: {epochs: 2, lr: 0.01}\nsparsity: {method: rigl, final_density: 0.2, update_frequency: 2}\n"
    )
    r = granet_sweep(tmp_path, "tiny.yaml", "--methods", "rigl,dense", "--densities", "0.2", cwd=work)
    assert r.returncode == 0, r.stdout + r.stderr
    db = tmp_path / "r.duckdb"
    assert sorted(rows(db, "select method, status, dataset from runs")) == [
        ("dense", "completed", "cifar10"),
        ("rigl", "completed", "cifar10"),
    ]
    assert rows(db, "select count(*) from epochs") == [(4,)]
    (spec_json,) = rows(db, "select spec_json from runs where method = 'rigl'")[0]
    assert json.loads(spec_json)["data"]["root"] == "data/cifar10"  # the spec as written
    (grid_json,) = rows(db, "select grid_json from sweeps")[0]
    assert json.loads(grid_json)["cwd"] == str(work)


def test_trial_larger_than_this_machine_exits_2_and_writes_nothing(tmp_path):
    r = granet_sweep(tmp_path, "--methods", "granet", "--densities", "0.1", "--cpus-per-trial", "64", *SMALL)
    assert r.returncode == 2, r.stdout + r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --cpus-per-trial 64 --gpus-per-trial 0: no node"), r.stderr
    assert "Traceback" not in r.stdout + r.stderr
    assert not (tmp_path / "r.duckdb").exists() and not (tmp_path / "runs").exists()


def test_a_retried_trial_replaces_its_rows_instead_of_appending(tmp_path):
    """The driver callback fed what Tune delivers when a trial's node dies after epoch 3 and the
    retry continues from its epoch-2 checkpoint: every epoch and mask update is stored once."""
    plan = plan_sweep(None, ["optim.epochs=4", "sparsity.final_prune_epoch=2"], methods="rigl", densities="0.1")
    (point,) = plan.points
    t = TrialOutcome(point, f"{point.spec_hash[:8]}-x")
    from rich.console import Console

    console = io.StringIO()
    display = Display(Console(file=console, width=200), plan, 1, None)

    def epoch(e):
        return {
            "epoch": e,
            "step": 10 * e,
            "lr": 0.05,
            "train_loss": 1.0 / e,
            "train_acc": 0.5,
            "test_loss": 1.0,
            "test_acc": 0.5 + e / 100,
            "density": 0.1,
            "itop_rate": 0.2,
            "seconds": 0.1,
        }

    def update(e):
        return [{"step": 10 * e, "target_density": 0.1, "dropped": e, "grown": e, "density": 0.1}]

    error = tmp_path / "error.txt"
    error.write_text(
        "Failure # 1\nThe actor died unexpectedly before finishing this task.\n"
        "The actor died because its node has died. Node Id: 0123456789abcdef\n"
    )
    trial = SimpleNamespace(
        config={"point": {"run_id": t.run_id}},
        error_file=str(error),
        pickled_error_file=None,
        num_failures=1,
        node_ip=None,
    )
    with Store(tmp_path / "r.duckdb") as store:
        cb = make_callback(store, plan, {t.run_id: t}, display, max_failures=2)
        cb.on_trial_start(0, [], trial)
        for e in (1, 2, 3):  # the first attempt: epoch 3 reached the driver, its node then died
            cb.on_trial_result(
                0,
                [],
                trial,
                {EPOCHS_KEY: json.dumps([[epoch(e), update(e)]]), "node_ip": "10.0.0.9"},
            )
        cb.on_trial_recover(0, [], trial)
        # the retry: the epoch-2 checkpoint's rows in one report, then epochs 3 and 4 again
        cb.on_trial_result(
            0, [], trial, {REPLAY_KEY: json.dumps({"epochs": [epoch(1), epoch(2)], "updates": update(1) + update(2)})}
        )
        # epochs 3 and 4 in one report (a trial batches the epochs of a second)
        cb.on_trial_result(0, [], trial, {EPOCHS_KEY: json.dumps([[epoch(e), update(e)] for e in (3, 4)])})
        final = {"final_test_acc": 0.54, "best_test_acc": 0.54, "achieved_density": 0.1, "wall_seconds": 3.0}
        cb.on_trial_result(
            0, [], trial, {FINAL_KEY: json.dumps({"status": "completed", "error": None, "final": final, "layers": []})}
        )
    db = tmp_path / "r.duckdb"
    assert rows(db, "select epoch, step from epochs order by epoch") == [(e, 10 * e) for e in (1, 2, 3, 4)]
    assert rows(db, "select step, dropped from mask_updates order by step") == [(10 * e, e) for e in (1, 2, 3, 4)]
    assert rows(db, "select status, attempts, wall_seconds from runs") == [("completed", 2, 3.0)]
    out = " ".join(console.getvalue().split())
    assert "rigl d=0.1 seed=0: node 10.0.0.9 lost during epoch 4; retrying 1/2" in out, out
    assert "attempt 2 continues from its epoch-2 checkpoint" in out, out
