"""`granet run` end to end: database rows, resume, divergence, missing data, DDP."""

import os
import signal
import subprocess
import sys
import time

import pytest

from granet_cli import train
from granet_cli.spec import load_run_spec

from .conftest import QUICKSTART, ROOT, rows

FAST = ["--set", "optim.epochs=6", "--set", "sparsity.final_prune_epoch=4", "-q"]


def test_quickstart_completes_with_rows_and_target_density(cli, tmp_path):
    db = tmp_path / "r.duckdb"
    result = cli("run", QUICKSTART, "--db", db, "--runs-dir", tmp_path / "runs", "-q")
    assert result.exit_code == 0, result.output
    ((run_id, status, density, acc, best, flops_i, flops_t, itop),) = rows(
        db,
        "select run_id, status, achieved_density, final_test_acc, best_test_acc, inference_flops_frac, "
        "train_flops_frac, itop_rate from runs",
    )
    assert status == "completed"
    assert abs(density - 0.1) <= 0.001
    assert 0 <= acc <= best <= 1 and acc > 0.8
    assert flops_i < flops_t < 1 and itop >= density
    epochs = rows(db, "select epoch, density from epochs where run_id = ? order by epoch", run_id)
    assert [e for e, _ in epochs] == list(range(1, 31))
    assert abs(epochs[-1][1] - 0.1) <= 0.001
    layers = rows(db, "select numel, achieved_density from layers where run_id = ?", run_id)
    assert abs(sum(n * d for n, d in layers) / sum(n for n, _ in layers) - density) < 1e-9
    updates = rows(db, "select dropped, grown, reselected from mask_updates where run_id = ?", run_id)
    # every dropped weight is either replaced by a new connection or re-selected (it kept its value)
    assert updates and all(d == g + r for d, g, r in updates)
    assert sum(r for _d, _g, r in updates) > 0
    assert "final test accuracy" in result.stdout


def test_dense_quickstart_reaches_95_percent(cli, tmp_path):
    db = tmp_path / "d.duckdb"
    result = cli("run", QUICKSTART, "--set", "sparsity.method=dense", "--db", db, "--runs-dir", tmp_path / "runs", "-q")
    assert result.exit_code == 0, result.output
    ((acc, density),) = rows(db, "select final_test_acc, achieved_density from runs")
    assert acc >= 0.95 and density == 1.0


def test_resume_reproduces_uninterrupted_run(tmp_path):
    spec = load_run_spec(
        QUICKSTART,
        ["optim.epochs=5", "sparsity.final_prune_epoch=4", "sparsity.method=set", "sparsity.update_frequency=7"],
    )
    full = train.run(spec, tmp_path / "full")

    class Stop(Exception):
        pass

    def stop_at_3(row, updates):
        if row["epoch"] == 3:
            raise Stop

    with pytest.raises(Stop):
        train.run(spec, tmp_path / "cut", on_epoch=stop_at_3)
    replayed = []
    resumed = train.run(spec, tmp_path / "cut", resume=True, on_epoch=lambda r, u: replayed.append(r["epoch"]))
    assert replayed == [1, 2, 3, 4, 5]  # the 3 checkpointed epochs replayed, then 4 and 5 trained
    for key in ("final_test_acc", "best_test_acc", "achieved_density", "itop_rate", "train_flops_frac"):
        assert resumed.final[key] == full.final[key], key
    for a, b in zip(full.epochs, resumed.epochs):
        assert a["train_loss"] == b["train_loss"] and a["test_acc"] == b["test_acc"]
    assert resumed.mask_updates == full.mask_updates
    assert resumed.mask_digest == full.mask_digest


def test_cli_resume_after_kill(cli, tmp_path):
    db, runs = tmp_path / "k.duckdb", tmp_path / "runs"
    args = [
        QUICKSTART,
        "--set",
        "optim.epochs=100",
        "--set",
        "sparsity.final_prune_epoch=50",
        "--db",
        db,
        "--runs-dir",
        runs,
        "-q",
    ]
    proc = subprocess.Popen(
        [sys.executable, "-m", "granet_cli.cli", "run", *map(str, args)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.time() + 120
    while time.time() < deadline and not list(runs.glob("*/checkpoint.pt")):
        time.sleep(0.05)
    time.sleep(0.3)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    ((status, done),) = rows(db, "select status, (select count(*) from epochs) from runs")
    assert status == "running" and 0 < done < 100  # really interrupted mid-way
    result = cli("run", *args, "--resume")
    assert result.exit_code == 0, result.output
    ((run_count,),) = rows(db, "select count(*) from runs")
    ((status, density),) = rows(db, "select status, achieved_density from runs")
    epochs = [e for (e,) in rows(db, "select epoch from epochs order by epoch")]
    assert run_count == 1 and status == "completed" and abs(density - 0.1) <= 0.001
    assert epochs == list(range(1, 101))


def test_resume_without_checkpoint_is_exit_2(cli, tmp_path):
    result = cli("run", QUICKSTART, "--resume", "--db", tmp_path / "x.duckdb", "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 2 and "no interrupted run" in result.stderr


def test_nan_loss_ends_diverged(cli, tmp_path):
    db = tmp_path / "n.duckdb"
    result = cli(
        "run",
        QUICKSTART,
        "--set",
        "optim.lr=1e12",
        "--set",
        "optim.weight_decay=0",
        *FAST,
        "--db",
        db,
        "--runs-dir",
        tmp_path / "runs",
    )
    assert result.exit_code == 1
    ((status, error),) = rows(db, "select status, error from runs")
    assert status == "diverged" and ("nan" in error or "inf" in error)


def test_missing_cifar_root_is_clear_and_writes_no_run(cli, tmp_path):
    db = tmp_path / "c.duckdb"
    missing = tmp_path / "no-cifar-here"
    result = cli(
        "run",
        QUICKSTART,
        "--set",
        "data.name=cifar10",
        "--set",
        f"data.root={missing}",
        "--set",
        "model.name=lenet5",
        "--db",
        db,
        "--runs-dir",
        tmp_path / "runs",
    )
    assert result.exit_code == 2
    assert str(missing) in result.stderr and "cifar-10-batches-py" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not db.exists()  # nothing written: the results db is only created once a run starts


def test_invalid_spec_writes_nothing(cli, tmp_path):
    db = tmp_path / "never.duckdb"
    result = cli("run", QUICKSTART, "--set", "sparsity.final_density=1.5", "--db", db)
    assert result.exit_code == 2 and "sparsity.final_density" in result.stderr
    assert not db.exists()


def test_unreadable_db_is_exit_2(cli, tmp_path):
    db = tmp_path / "garbage.duckdb"
    db.write_bytes(os.urandom(4096))
    result = cli("run", QUICKSTART, "--db", db, *FAST)
    assert result.exit_code == 2 and str(db) in result.stderr


def test_two_process_ddp_run_completes_with_identical_masks(cli, tmp_path):
    db = tmp_path / "ddp.duckdb"
    result = cli(
        "run",
        QUICKSTART,
        "--nproc",
        2,
        "--set",
        "sparsity.method=set",
        "--set",
        "sparsity.update_frequency=5",
        *FAST,
        "--db",
        db,
        "--runs-dir",
        tmp_path / "runs",
    )
    assert result.exit_code == 0, result.output  # run_distributed refuses ranks whose masks differ
    ((status, density),) = rows(db, "select status, achieved_density from runs")
    assert status == "completed" and abs(density - 0.1) <= 0.001
    assert rows(db, "select count(*) from epochs") == [(6,)]


def test_cuda_requested_without_gpu_is_exit_2(cli, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    db = tmp_path / "g.duckdb"
    result = cli("run", QUICKSTART, "--set", "device=cuda", *FAST, "--db", db, "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 2 and "device: cuda" in result.stderr
    assert not db.exists()  # refused before the run started: nothing written


def test_top5_recorded_for_100_classes_only(cli, tmp_path):
    db = tmp_path / "t5.duckdb"
    synthetic = [
        "--set",
        "data.name=synthetic",
        "--set",
        "data.input_shape=[1,8,8]",
        "--set",
        "data.num_classes=100",
        "--set",
        "data.train_size=256",
        "--set",
        "data.test_size=200",
    ]
    result = cli("run", QUICKSTART, *synthetic, *FAST, "--db", db, "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 0, result.output
    for acc, acc5 in rows(db, "select test_acc, test_acc5 from epochs"):
        assert acc5 is not None and acc <= acc5 <= 1
    ((final, final5, sps),) = rows(db, "select final_test_acc, final_test_acc5, samples_per_second from runs")
    assert final <= final5 and sps > 0
    assert "top-5" in result.stdout
    digits_db = tmp_path / "d.duckdb"
    assert cli("run", QUICKSTART, *FAST, "--db", digits_db, "--runs-dir", tmp_path / "runs2").exit_code == 0
    assert rows(digits_db, "select count(*) from epochs where test_acc5 is not null") == [(0,)]
