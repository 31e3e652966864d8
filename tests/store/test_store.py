"""Results store (DuckDB): schema, round trips, atomicity, resume, errors."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pytest

from granet_cli.store import Store, StoreError, default_db_path

from ..conftest import rows

T0 = datetime(2024, 5, 1, 12, 0, 0)


def run_dict(run_id: str, **kw) -> dict:
    d = dict(
        run_id=run_id,
        sweep_id="sw1",
        spec_hash=f"hash-{run_id}",
        method="rigl",
        model="mlp",
        dataset="digits",
        target_density=0.1,
        seed=0,
        spec_json='{"a": 1}',
        started_at=T0,
    )
    d.update(kw)
    return d


FINAL = dict(
    final_test_acc=0.91,
    best_test_acc=0.93,
    achieved_density=0.1,
    itop_rate=0.42,
    train_flops_frac=0.15,
    inference_flops_frac=0.1,
    wall_seconds=12.5,
)


@pytest.fixture()
def db(tmp_path: Path) -> Path:
    return tmp_path / "sub" / "dir" / "r.duckdb"


def test_schema_created_with_parent_dirs(db: Path):
    with Store(db):
        pass
    assert db.exists()
    con = duckdb.connect(str(db), read_only=True)
    try:
        cols = {}
        for table, col, typ in con.execute(
            "SELECT table_name, column_name, data_type FROM information_schema.columns"
        ).fetchall():
            cols.setdefault(table, {})[col] = typ
        pks = con.execute(
            "SELECT table_name, constraint_column_names FROM duckdb_constraints() WHERE constraint_type = 'PRIMARY KEY'"
        ).fetchall()
    finally:
        con.close()
    assert set(cols) >= {"runs", "epochs", "layers", "mask_updates", "sweeps"}
    assert cols["runs"]["run_id"] == "VARCHAR"
    assert cols["runs"]["seed"] == "INTEGER"
    assert cols["runs"]["started_at"] == "TIMESTAMP"
    for c in (
        "final_test_acc",
        "best_test_acc",
        "achieved_density",
        "itop_rate",
        "train_flops_frac",
        "inference_flops_frac",
        "wall_seconds",
        "target_density",
        "final_test_acc5",
        "samples_per_second",
    ):
        assert cols["runs"][c] == "DOUBLE"
    assert set(cols["runs"]) == {
        "run_id",
        "sweep_id",
        "spec_hash",
        "method",
        "model",
        "dataset",
        "target_density",
        "seed",
        "status",
        "final_test_acc",
        "best_test_acc",
        "achieved_density",  # final_density until schema v4 (renamed in place)
        "itop_rate",
        "train_flops_frac",
        "inference_flops_frac",
        "wall_seconds",
        "final_test_acc5",
        "samples_per_second",
        "spec_json",
        "started_at",
        "finished_at",
        "error",
        # schema v2
        "overall_density",
        "selected_test_acc",
        "config_hash",
        "attempts",
        "pid",
        "host",
        # schema v3
        "nonzero_density",
        # schema v5
        "test_correct",
        "selected_test_correct",
    }
    for c in ("overall_density", "selected_test_acc"):
        assert cols["runs"][c] == "DOUBLE"
    assert cols["runs"]["config_hash"] == "VARCHAR" and cols["runs"]["host"] == "VARCHAR"
    assert cols["runs"]["attempts"] == "INTEGER" and cols["runs"]["pid"] == "INTEGER"
    assert cols["epochs"]["step"] == "BIGINT" and cols["epochs"]["epoch"] == "INTEGER"
    assert set(cols["epochs"]) == {
        "run_id",
        "epoch",
        "step",
        "lr",
        "train_loss",
        "train_acc",
        "test_loss",
        "test_acc",
        "density",
        "itop_rate",
        "seconds",
        "test_acc5",
        "val_loss",
        "val_acc",
        "overall_density",
    }
    assert cols["granet_meta"] == {"key": "VARCHAR", "value": "VARCHAR"}
    assert set(cols["layers"]) == {"run_id", "name", "shape", "numel", "achieved_density"}
    assert set(cols["mask_updates"]) == {
        "run_id",
        "step",
        "target_density",
        "dropped",
        "grown",
        "density",
        "reselected",
    }
    assert set(cols["sweeps"]) == {"sweep_id", "name", "created_at", "grid_json"}
    pk = {t: list(c) for t, c in pks}
    assert pk["runs"] == ["run_id"]
    assert pk["epochs"] == ["run_id", "epoch"]
    assert pk["sweeps"] == ["sweep_id"]
    assert pk["granet_meta"] == ["key"]
    meta = dict(rows(db, "SELECT key, value FROM granet_meta"))
    assert meta["schema_version"] == "5" and meta["created_by"].startswith("granet ")
    # reopening an existing db keeps the data (schema creation is idempotent)
    with Store(db) as st:
        st.start_run(run_dict("r1"))
    with Store(db) as st:
        assert [r["run_id"] for r in st.runs()] == ["r1"]


def test_round_trip(db: Path):
    layers = [
        dict(name="fc1.weight", shape=[64, 3, 3, 3], numel=1728, achieved_density=0.2),
        dict(name="fc2.weight", shape="[10, 64]", numel=640, achieved_density=0.05),
    ]
    with Store(db) as st:
        st.add_sweep("sw1", "my sweep", {"sparsity.final_density": [0.1, 0.2]})
        st.start_run(run_dict("r1"))
        assert st.runs()[0]["status"] == "running"
        for e in range(3):
            st.add_epoch(
                "r1",
                dict(
                    epoch=e,
                    step=100 * (e + 1),
                    lr=0.1,
                    train_loss=1.0 / (e + 1),
                    train_acc=0.5,
                    test_loss=0.9,
                    test_acc=0.6 + e / 10,
                    density=0.1,
                    itop_rate=0.3,
                    seconds=1.5,
                ),
            )
        # insert-or-replace of an existing epoch
        st.add_epoch("r1", dict(epoch=2, step=300, test_acc=0.85))
        st.add_mask_updates(
            "r1", [dict(step=s, target_density=0.1, dropped=5, grown=5, density=0.1) for s in (50, 150, 250)]
        )
        st.finish_run("r1", FINAL, layers)
    before = datetime.now(UTC).replace(tzinfo=None)
    with Store(db, read_only=True) as st:
        (run,) = st.runs()
        assert run["status"] == "completed"
        for k, v in FINAL.items():
            assert run[k] == pytest.approx(v)
        assert run["started_at"] == T0
        assert run["finished_at"] is not None and abs(run["finished_at"] - before) < timedelta(minutes=5)
        assert run["error"] is None
        assert run["spec_json"] == '{"a": 1}' and run["spec_hash"] == "hash-r1" and run["seed"] == 0
        ep = st.epochs(["r1"])
        assert [e["epoch"] for e in ep] == [0, 1, 2]
        assert ep[1]["test_acc"] == pytest.approx(0.7) and ep[1]["seconds"] == pytest.approx(1.5)
        assert ep[2]["test_acc"] == pytest.approx(0.85) and ep[2]["lr"] is None
        mu = st.mask_updates(["r1"])
        assert [m["step"] for m in mu] == [50, 150, 250]
        assert all(m["dropped"] == 5 and m["density"] == pytest.approx(0.1) for m in mu)
        ly = st.layers(["r1"])
        assert [(x["name"], x["shape"], x["numel"]) for x in ly] == [
            ("fc1.weight", "[64, 3, 3, 3]", 1728),
            ("fc2.weight", "[10, 64]", 640),
        ]
        assert st.epochs([]) == [] and st.epochs(["nope"]) == []
        assert st.find_sweep("sw1") == "sw1" and st.find_sweep("my sweep") == "sw1"
        assert st.find_sweep("other") is None


def test_add_epoch_needs_run(db: Path):
    with Store(db) as st:
        with pytest.raises(StoreError, match="unknown run"):
            st.add_epoch("ghost", dict(epoch=0, test_acc=0.5))
        with pytest.raises(StoreError):
            st.add_mask_updates("ghost", [dict(step=1, density=0.5)])
        st.start_run(run_dict("r1"))
        with pytest.raises(StoreError, match="unknown key"):
            st.add_epoch("r1", dict(epoch=0, tset_acc=0.5))
        assert st.epochs(["r1"]) == []


def test_finish_run_is_atomic(db: Path):
    good_layers = [dict(name="a", shape="[2, 2]", numel=4, achieved_density=0.5)]
    with Store(db) as st:
        st.start_run(run_dict("r1"))
        st.finish_run("r1", FINAL, good_layers)
        st.start_run(run_dict("r1"))  # resume -> running again, metrics cleared
        assert st.runs()[0]["status"] == "running"
        bad_layers = [
            dict(name="b", shape="[3]", numel=3, achieved_density=1.0),
            dict(name="c", shape="[3]", numel="not-a-number", achieved_density=1.0),
        ]
        with pytest.raises(StoreError):
            st.finish_run("r1", dict(FINAL, final_test_acc=0.99), bad_layers)
        (run,) = st.runs()
        assert run["status"] == "running"
        assert run["final_test_acc"] is None and run["finished_at"] is None
        # the DELETE and the first insert of the failed transaction were rolled back
        assert [(x["name"], x["numel"]) for x in st.layers(["r1"])] == [("a", 4)]
        # the connection is usable afterwards
        st.finish_run("r1", FINAL, good_layers)
        assert st.runs()[0]["status"] == "completed"


def test_fail_run(db: Path):
    with Store(db) as st:
        st.start_run(run_dict("r1"))
        st.start_run(run_dict("r2"))
        st.fail_run("r1", "diverged", "loss is nan at epoch 3", dict(final_test_acc=0.1, wall_seconds=3.0))
        st.fail_run("r2", "failed", "RuntimeError: boom")
        with pytest.raises(StoreError):
            st.fail_run("r2", "completed", "x")
        with pytest.raises(StoreError):
            st.fail_run("ghost", "failed", "x")
        runs = {r["run_id"]: r for r in st.runs()}
        assert runs["r1"]["status"] == "diverged" and runs["r1"]["error"] == "loss is nan at epoch 3"
        assert runs["r1"]["final_test_acc"] == pytest.approx(0.1) and runs["r1"]["wall_seconds"] == 3.0
        assert runs["r1"]["best_test_acc"] is None
        assert runs["r2"]["status"] == "failed" and runs["r2"]["final_test_acc"] is None
        assert [r["run_id"] for r in st.runs(status="diverged")] == ["r1"]
        assert st.completed_hashes() == set()


def test_resume_resets_run(db: Path):
    with Store(db) as st:
        st.start_run(run_dict("r1"))
        st.fail_run("r1", "failed", "killed", dict(final_test_acc=0.3))
        st.start_run(run_dict("r1", started_at=T0 + timedelta(hours=1), spec_json="{}"))
        (run,) = st.runs()
        assert run["status"] == "running"
        assert run["error"] is None and run["finished_at"] is None and run["final_test_acc"] is None
        assert run["started_at"] == T0  # original start kept
        assert run["spec_json"] == "{}"


def test_completed_hashes(db: Path):
    with Store(db) as st:
        st.add_sweep("sw1", "one", {})
        st.add_sweep("sw2", "two", {})
        for rid, sweep, done in [("a", "sw1", True), ("b", "sw1", False), ("c", "sw2", True), ("d", None, True)]:
            st.start_run(run_dict(rid, sweep_id=sweep))
            if done:
                st.finish_run(rid, FINAL, [])
        assert st.completed_hashes() == {"hash-a", "hash-c", "hash-d"}
        assert st.completed_hashes("sw1") == {"hash-a"}
        assert st.completed_hashes("sw2") == {"hash-c"}
        assert st.completed_hashes("nope") == set()
        assert {r["run_id"] for r in st.runs(sweep="sw1")} == {"a", "b"}
        assert [r["run_id"] for r in st.runs(sweep="sw1", status="completed")] == ["a"]


def test_truncate_after(db: Path):
    with Store(db) as st:
        st.start_run(run_dict("r1"))
        st.start_run(run_dict("r2"))
        for rid in ("r1", "r2"):
            for e in range(5):
                st.add_epoch(rid, dict(epoch=e, step=10 * e, test_acc=0.5))
            st.add_mask_updates(rid, [dict(step=s, density=0.5) for s in range(0, 50, 5)])
        st.truncate_after("r1", 2, 20)
        assert [e["epoch"] for e in st.epochs(["r1"])] == [0, 1, 2]
        assert [m["step"] for m in st.mask_updates(["r1"])] == [0, 5, 10, 15, 20]
        # other runs untouched
        assert len(st.epochs(["r2"])) == 5 and len(st.mask_updates(["r2"])) == 10
        # resumed epochs can be written again
        st.add_epoch("r1", dict(epoch=3, step=30, test_acc=0.9))
        assert st.epochs(["r1"])[-1]["test_acc"] == pytest.approx(0.9)


def test_find_sweep_latest_by_name(db: Path):
    with Store(db) as st:
        st.add_sweep("old", "grid", {"x": 1}, created_at=T0)
        st.add_sweep("new", "grid", {"x": 2}, created_at=T0 + timedelta(days=1))
        st.add_sweep("other", "misc", {}, created_at=T0 + timedelta(days=2))
        assert st.find_sweep("grid") == "new"
        assert st.find_sweep("old") == "old"
        st.add_sweep("old", "renamed", {"x": 3})  # upsert keeps created_at
        assert st.find_sweep("renamed") == "old"
        sw = {s["sweep_id"]: s for s in st.sweeps()}
        assert sw["old"]["grid"] == {"x": 3} and sw["old"]["created_at"] == T0


def test_read_only_missing_file(tmp_path: Path):
    p = tmp_path / "missing.duckdb"
    with pytest.raises(StoreError, match="not found") as ei:
        Store(p, read_only=True)
    assert str(p) in str(ei.value)
    assert not p.exists()


def test_read_only_refuses_writes(db: Path):
    with Store(db):
        pass
    with Store(db, read_only=True) as st:
        with pytest.raises(StoreError, match="read-only"):
            st.start_run(run_dict("r1"))


def test_garbage_file(tmp_path: Path):
    p = tmp_path / "garbage.duckdb"
    p.write_bytes(os.urandom(8192))
    for ro in (False, True):
        with pytest.raises(StoreError) as ei:
            Store(p, read_only=ro)
        msg = str(ei.value)
        assert str(p) in msg and "\n" not in msg


def test_default_db_path(monkeypatch, tmp_path: Path):
    monkeypatch.delenv("GRANET_DB", raising=False)
    assert default_db_path() == Path("results") / "granet.duckdb"
    monkeypatch.setenv("GRANET_DB", str(tmp_path / "x.duckdb"))
    assert default_db_path() == tmp_path / "x.duckdb"


def test_read_only_snapshot_while_locked(db: Path, monkeypatch):
    """A report can read a db that another process holds open for writing for long (the duckdb
    shell, an older granet): after a short wait it reads a snapshot copy."""
    monkeypatch.setenv("GRANET_DB_LOCK_TIMEOUT", "0.3")
    with Store(db) as st:
        st.start_run(run_dict("r1"))
        st.finish_run("r1", FINAL, [])
    holder = textwrap.dedent(f"""
        import sys, duckdb
        con = duckdb.connect({str(db)!r})
        print("ready", flush=True)
        sys.stdin.readline()
        con.close()
    """)
    proc = subprocess.Popen([sys.executable, "-c", holder], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        with Store(db, read_only=True) as st:
            assert st.completed_hashes() == {"hash-r1"}
        with pytest.raises(StoreError, match="locked"):
            Store(db, read_only=True, snapshot_if_locked=False)
    finally:
        proc.stdin.write("\n")
        proc.stdin.flush()
        proc.wait(timeout=30)


def test_add_epoch_with_mask_updates_is_one_transaction(db: Path):
    with Store(db) as st:
        st.start_run(run_dict("r1"))
        st.add_epoch("r1", dict(epoch=0, test_acc=0.5), mask_updates=[dict(step=3, density=0.4, dropped=2, grown=2)])
        with pytest.raises(StoreError):
            st.add_epoch(
                "r1",
                dict(epoch=1, test_acc=0.6),
                mask_updates=[dict(step=7, density=0.4), dict(step="not-a-step", density=0.4)],
            )
        with pytest.raises(StoreError, match="unknown key"):
            st.add_epoch("r1", dict(epoch=1), mask_updates=[dict(stp=7)])
    # the failed epoch and its first (valid) update were rolled back together
    assert rows(db, "SELECT epoch, test_acc FROM epochs") == [(0, 0.5)]
    assert rows(db, "SELECT step, density, dropped, grown FROM mask_updates") == [(3, 0.4, 2, 2)]
