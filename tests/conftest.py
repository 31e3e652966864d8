import os
import pickle
import subprocess
import sys
from pathlib import Path

import duckdb
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "experiments" / "quickstart.yaml"


@pytest.fixture(autouse=True)
def _isolated_db(tmp_path, monkeypatch):
    """No test writes to the user's results/granet.duckdb by accident."""
    monkeypatch.setenv("GRANET_DB", str(tmp_path / "default.duckdb"))
    monkeypatch.setenv("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "1"))


@pytest.fixture
def cli():
    from typer.testing import CliRunner

    from granet_cli.cli import app

    runner = CliRunner()

    def invoke(*args):
        return runner.invoke(app, [str(a) for a in args])

    return invoke


def rows(db, sql, *params):
    """Query a results database read-only, independently of granet's store."""
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(sql, params).fetchall()
    finally:
        con.close()


def write_fake_cifar10(root, per_batch=4):
    """A tiny CIFAR-10 in the python-pickle layout torchvision reads, under root/cifar-10-batches-py;
    returns {batch name: (uint8 data [n, 3072], labels)}."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    arrays = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, size=per_batch)]
        arrays[name] = (data, labels)
        with open(folder / name, "wb") as f:
            pickle.dump(
                {
                    "batch_label": name,
                    "data": data,
                    "labels": labels,
                    "filenames": [f"{name}_{i}.png" for i in range(per_batch)],
                },
                f,
            )
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump(
            {
                "label_names": [
                    "airplane",
                    "automobile",
                    "bird",
                    "cat",
                    "deer",
                    "dog",
                    "frog",
                    "horse",
                    "ship",
                    "truck",
                ],
                "num_cases_per_batch": per_batch,
                "num_vis": 3072,
            },
            f,
        )
    return arrays


#: a sweep small enough for tests: 2 epochs, pruning over the first
SMALL_SWEEP = ["--set", "optim.epochs=2", "--set", "sparsity.final_prune_epoch=1"]


def granet_sweep(tmp_path, *args, cwd=None, env=None, timeout=300, db=None):
    """`granet sweep ARGS` in a fresh process (its own Ray instance), its db and runs under tmp_path."""
    cmd = [sys.executable, "-m", "granet_cli.cli", "sweep", *map(str, args)]
    cmd += ["--db", str(db or tmp_path / "r.duckdb"), "--runs-dir", str(tmp_path / "runs")]
    return subprocess.run(cmd, cwd=cwd or ROOT, capture_output=True, text=True, timeout=timeout, env=env)
