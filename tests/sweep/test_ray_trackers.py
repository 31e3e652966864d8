"""`granet sweep --wandb PROJECT / --mlflow DIR`: Ray Tune's own W&B and MLflow logger callbacks,
in their local modes (WANDB_MODE=offline, an MLflow file store): no network, no server.

One real tiny sweep (2 trials x 2 epochs on the digits quickstart) logs to both; what the trackers
hold is read back with their own readers and compared with the results db. The refusals run
in-process: a package missing, no W&B login, bad values: exit 2, one line, nothing written."""

import json
import os
import struct
import sys
from pathlib import Path

import pytest

from ..conftest import QUICKSTART, SMALL_SWEEP, granet_sweep, rows

SMALL = SMALL_SWEEP
PROJECT = "granet-test"


def _wandb_records(path):
    """The records of an offline run's `.wandb` file (LevelDB's log format behind a 7-byte W&B
    header: 32 KiB blocks of chunks [crc32 u32, length u16, type u8]; type 1 = whole, 2/3/4 =
    first/middle/last piece), each parsed as wandb's protobuf Record."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B", data[:7]
    pos, block, buf = 7, 32768, b""
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:  # a block's tail too short for a chunk header is padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if kind == 0:  # zeros up to the end of the block
            pos += left
            continue
        buf += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(buf)
            yield record
            buf = b""


def _items(items):
    return {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in items}


def test_sweep_logs_every_trial_to_mlflow_and_wandb_offline_as_the_db(tmp_path, monkeypatch):
    """One sweep with both trackers (one test: under xdist a shared fixture would sweep once per worker)."""
    pytest.importorskip("wandb")
    pytest.importorskip("mlflow")
    tmp = tmp_path
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "MLFLOW_"))}
    env.update(
        WANDB_MODE="offline",  # nothing leaves this machine; no login needed
        WANDB_DIR=str(tmp / "wb"),
        WANDB_SILENT="true",
        HOME=str(tmp / "home"),  # no ~/.netrc or W&B settings of the user's
        GRANET_DB=str(tmp / "default.duckdb"),
        OMP_NUM_THREADS="1",
    )
    r = granet_sweep(
        tmp,
        "--methods",
        "granet,rigl",
        "--densities",
        "0.1",
        *SMALL,
        "--wandb",
        PROJECT,
        "--mlflow",
        tmp / "mlruns",  # a folder: MLflow's file store
        env=env,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "wandb.ai" not in r.stdout + r.stderr  # offline: no sync hint, no URL
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3's file store asks for it
    _check_mlflow(tmp)
    _check_wandb(tmp)


def _db(tmp):
    db = tmp / "r.duckdb"
    (sweep_name,) = rows(db, "select name from sweeps")[0]
    runs = {
        run_id: dict(zip(("method", "density", "seed", "spec_hash", "final_test_acc", "status"), rest))
        for run_id, *rest in rows(
            db, "select run_id, method, target_density, seed, spec_hash, final_test_acc, status from runs"
        )
    }
    epochs = {
        run_id: rows(
            db, "select epoch, test_acc, test_loss, density from epochs where run_id = ? order by epoch", run_id
        )
        for run_id in runs
    }
    return sweep_name, runs, epochs


def _check_mlflow(tmp):
    """One MLflow run per trial in the sweep's experiment, per-epoch history and final test accuracy as the db."""
    from mlflow.tracking import MlflowClient

    sweep_name, runs, epochs = _db(tmp)
    assert len(runs) == 2 and {r["status"] for r in runs.values()} == {"completed"}
    client = MlflowClient(tracking_uri=(tmp / "mlruns").as_uri())
    experiment = client.get_experiment_by_name(sweep_name)  # the experiment is the sweep's name
    assert experiment is not None
    logged = client.search_runs([experiment.experiment_id])
    assert sorted(r.data.tags["granet.run_id"] for r in logged) == sorted(runs)  # one MLflow run per trial
    for run in logged:
        run_id = run.data.tags["granet.run_id"]
        want = runs[run_id]
        assert run.info.run_name.endswith(f"-{run_id}")
        assert run.info.status == "FINISHED" and run.data.tags["granet.status"] == "completed"
        params = run.data.params
        assert params["run_id"] == run_id and params["spec_hash"] == want["spec_hash"]
        assert (params["method"], float(params["density"]), int(params["seed"])) == (
            want["method"],
            want["density"],
            want["seed"],
        )
        assert params["sweep"] == sweep_name and params["spec.optim.epochs"] == "2"
        for tag, col in (("test/acc", 1), ("test/loss", 2), ("sparsity/density", 3)):
            history = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, tag))
            db_rows = epochs[run_id]
            assert [s for s, _ in history] == [e[0] for e in db_rows] == [1, 2], tag  # one point per epochs row
            assert [v for _, v in history] == pytest.approx([e[col] for e in db_rows], rel=1e-6), tag
        assert run.data.metrics["final/test_acc"] == pytest.approx(want["final_test_acc"], rel=1e-6)


def _check_wandb(tmp):
    """One offline W&B run per trial under $WANDB_DIR, its history and summary as the db."""
    sweep_name, runs, epochs = _db(tmp)
    folders = sorted((tmp / "wb" / "wandb").glob("offline-run-*"))
    assert len(folders) == 2, folders  # one offline run per trial, under $WANDB_DIR
    seen = set()
    for folder in folders:
        (path,) = folder.glob("*.wandb")
        run_record, config, history, summary = None, {}, [], {}
        for record in _wandb_records(path):
            kind = record.WhichOneof("record_type")
            if kind == "run":
                run_record = record.run
                config.update(_items(record.run.config.update))
            elif kind == "config":
                config.update(_items(record.config.update))
            elif kind == "history":
                history.append(_items(record.history.item))
            elif kind == "summary":
                summary.update(_items(record.summary.update))
        assert run_record is not None
        run_id = config["run_id"]
        seen.add(run_id)
        want = runs[run_id]
        assert run_record.display_name.endswith(f"-{run_id}")
        assert (run_record.project, run_record.run_group) == (PROJECT, sweep_name)
        assert (config["method"], config["density"], config["seed"], config["spec_hash"]) == (
            want["method"],
            want["density"],
            want["seed"],
            want["spec_hash"],
        )
        assert config["spec"]["optim"]["epochs"] == 2 and config["status"] == "completed"
        got = [(h["epoch"], h["test/acc"]) for h in history]
        db_rows = epochs[run_id]
        assert [e for e, _ in got] == [e[0] for e in db_rows] == [1, 2]  # one history row per epochs row
        assert [v for _, v in got] == pytest.approx([e[1] for e in db_rows], rel=1e-6)
        assert summary["final/test_acc"] == pytest.approx(want["final_test_acc"], rel=1e-6)
        assert summary["test/acc"] == pytest.approx(want["final_test_acc"], rel=1e-6)
    assert seen == set(runs)


# ----------------------------------------------------------------------------- refusals
def _refused(result, db) -> str:
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert result.exit_code == 2, result.output
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    assert not db.exists()
    return lines[0]


def _sweep_args(tmp_path, *extra):
    return (
        "sweep",
        QUICKSTART,
        "--methods",
        "granet",
        "--densities",
        "0.1",
        "--db",
        tmp_path / "r.duckdb",
        "--runs-dir",
        tmp_path / "runs",
        *extra,
    )


@pytest.mark.parametrize(
    ("module", "flag", "install"),
    [("wandb", "--wandb", "granet-cli[wandb]"), ("mlflow", "--mlflow", "granet-cli[mlflow]")],
)
def test_tracker_package_missing_is_one_line_and_writes_nothing(cli, tmp_path, monkeypatch, module, flag, install):
    monkeypatch.setitem(sys.modules, module, None)  # import <module> -> ImportError
    monkeypatch.setenv("WANDB_MODE", "offline")
    value = "proj" if flag == "--wandb" else tmp_path / "mlruns"
    line = _refused(cli(*_sweep_args(tmp_path, flag, value)), tmp_path / "r.duckdb")
    assert f"{flag} needs the {module} package" in line and "pip install" in line and install in line
    assert not (tmp_path / "runs").exists() and not (tmp_path / "mlruns").exists()


def test_wandb_without_login_outside_offline_mode_is_refused(cli, tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    for var in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_SETUP_API_KEY_HOOK"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    line = _refused(cli(*_sweep_args(tmp_path, "--wandb", "proj")), tmp_path / "r.duckdb")
    assert "not logged in" in line and "WANDB_MODE=offline" in line


def test_mlflow_folder_that_is_a_file_is_refused(cli, tmp_path):
    pytest.importorskip("mlflow")
    (tmp_path / "mlruns").write_text("not a folder")
    line = _refused(cli(*_sweep_args(tmp_path, "--mlflow", tmp_path / "mlruns")), tmp_path / "r.duckdb")
    assert line.startswith("error: --mlflow ") and "not a folder" in line


def test_mlflow_experiment_needs_mlflow(cli, tmp_path):
    line = _refused(cli(*_sweep_args(tmp_path, "--mlflow-experiment", "x")), tmp_path / "r.duckdb")
    assert "--mlflow-experiment needs --mlflow" in line


def test_mlflow_value_becomes_a_tracking_uri():
    from granet_cli.sweep.trackers import local_mlflow_folder, mlflow_tracking_uri

    assert mlflow_tracking_uri("http://127.0.0.1:5000") == "http://127.0.0.1:5000"
    assert mlflow_tracking_uri("sqlite:///mlflow.db") == "sqlite:///mlflow.db"
    uri = mlflow_tracking_uri("some dir/mlruns")  # a folder, relative to where granet started
    assert uri.startswith("file:///") and "some%20dir" in uri
    assert local_mlflow_folder(uri) == Path("some dir/mlruns").resolve()
    assert local_mlflow_folder("http://127.0.0.1:5000") is None
