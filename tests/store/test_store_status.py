"""Run statuses, the writer's pid/host, attempts, and reaping runs whose process died."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import duckdb
import pytest

from granet_cli.records import FINAL_KEYS, record_for, store_final
from granet_cli.spec import load_run_spec as load_spec
from granet_cli.store import RUN_STATUSES, RunStatus, Store, StoreError

from ..conftest import QUICKSTART, rows

START = (
    "import sys; from granet_cli.store import Store; "
    "Store(sys.argv[1]).start_run(dict(run_id=sys.argv[2], spec_hash=sys.argv[3], method='rigl', seed=0)); "
)


def start_in_child(db: Path, run_id: str, spec_hash: str = "h", *, then: str = "") -> subprocess.Popen:
    """Another process registers a run (and then runs `then`)."""
    return subprocess.Popen(
        [sys.executable, "-c", START + then, str(db), run_id, spec_hash],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_status_constants():
    assert set(RUN_STATUSES) == {"running", "completed", "failed", "diverged", "interrupted", "stopped"}
    assert [s.value for s in RunStatus] == list(RUN_STATUSES)
    assert RunStatus.INTERRUPTED == "interrupted" and str(RunStatus.FAILED) == "failed"


def test_start_run_records_writer_and_attempts(tmp_path: Path):
    db = tmp_path / "r.duckdb"
    with Store(db) as st:
        st.start_run(dict(run_id="r1", spec_hash="s1", config_hash="c1"))
        assert rows(db, "SELECT pid, host, attempts, config_hash, status FROM runs") == [
            (os.getpid(), socket.gethostname(), 1, "c1", "running")
        ]
        st.fail_run("r1", RunStatus.INTERRUPTED, "killed", dict(overall_density=0.3, selected_test_acc=0.7))
        assert rows(
            db, "SELECT status, error, overall_density, selected_test_acc, finished_at IS NOT NULL FROM runs"
        ) == [("interrupted", "killed", 0.3, 0.7, True)]
        st.start_run(dict(run_id="r1", spec_hash="s1", config_hash="c1"))  # resumed: one more attempt
        st.start_run(dict(run_id="r1", spec_hash="s1", config_hash="c1"))
        assert rows(db, "SELECT status, attempts, error, overall_density FROM runs") == [("running", 3, None, None)]
        st.start_run(dict(run_id="r2", attempts=4))  # a sweep retry under a new run id says which attempt
        st.start_run(dict(run_id="r1", attempts=7))
        assert rows(db, "SELECT run_id, attempts FROM runs ORDER BY run_id") == [("r1", 7), ("r2", 4)]
        with pytest.raises(StoreError, match="unknown key"):
            st.start_run(dict(run_id="r3", pid=1))
        with pytest.raises(StoreError, match="failed, diverged, interrupted"):
            st.fail_run("r1", "running", "x")
        st.finish_run("r2", dict(overall_density=0.11, selected_test_acc=0.93), [])
        st.add_epoch("r2", dict(epoch=0, val_loss=0.4, val_acc=0.8, overall_density=0.12))
        (r2,) = [r for r in st.runs() if r["run_id"] == "r2"]
        assert (r2["status"], r2["overall_density"], r2["selected_test_acc"]) == ("completed", 0.11, 0.93)
        assert [(e["val_loss"], e["val_acc"], e["overall_density"]) for e in st.epochs(["r2"])] == [(0.4, 0.8, 0.12)]


def _zombie_pid(proc: subprocess.Popen) -> None:
    """Wait until `proc` has exited but is not reaped (a zombie: its pid still exists)."""
    for _ in range(600):
        try:
            with open(f"/proc/{proc.pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    return
        except FileNotFoundError:
            break
        time.sleep(0.05)
    pytest.skip("no /proc zombie state to observe on this platform")


def test_reap_orphans(tmp_path: Path):
    db = tmp_path / "r.duckdb"
    st = Store(db)
    gone = subprocess.run([sys.executable, "-c", START, str(db), "gone", "h1"], capture_output=True, text=True)
    assert gone.returncode == 0, gone.stderr
    gone2 = subprocess.run([sys.executable, "-c", START, str(db), "gone2", "h2"], capture_output=True, text=True)
    assert gone2.returncode == 0, gone2.stderr
    finished = subprocess.run(
        [sys.executable, "-c", START + "Store(sys.argv[1]).finish_run(sys.argv[2], {}, [])", str(db), "finished", "h1"],
        capture_output=True,
        text=True,
    )
    assert finished.returncode == 0, finished.stderr
    alive = start_in_child(db, "alive", "h1", then="print('ready', flush=True); sys.stdin.readline()")
    assert alive.stdout.readline().strip() == "ready"
    zombie = start_in_child(db, "zombie", "h1")
    _zombie_pid(zombie)
    st.start_run(dict(run_id="mine", spec_hash="h1"))
    st.start_run(dict(run_id="elsewhere", spec_hash="h1"))
    st.start_run(dict(run_id="legacy", spec_hash="h1"))
    st.close()
    pids = dict(rows(db, "SELECT run_id, pid FROM runs"))
    assert pids["alive"] == alive.pid and pids["zombie"] == zombie.pid and pids["mine"] == os.getpid()
    con = duckdb.connect(str(db))  # a row of another machine (same dead pid), and a v1 row without pid/host
    con.execute("UPDATE runs SET host = 'node-17', pid = ? WHERE run_id = 'elsewhere'", [pids["gone"]])
    con.execute("UPDATE runs SET host = NULL, pid = NULL WHERE run_id = 'legacy'")
    con.close()

    def status() -> dict:
        return dict(rows(db, "SELECT run_id, status FROM runs"))

    with Store(db) as st:
        assert st.reap_orphans(spec_hash="h2") == 1  # only that spec's rows are judged
        assert status()["gone2"] == "interrupted" and status()["gone"] == "running"
        assert st.reap_orphans() == 2  # gone, and the zombie (exited, not yet waited for)
        assert status() == {
            "gone": "interrupted",
            "gone2": "interrupted",
            "finished": "completed",
            "alive": "running",
            "zombie": "interrupted",
            "mine": "running",
            "elsewhere": "running",
            "legacy": "running",
        }
        assert rows(db, "SELECT error FROM runs WHERE run_id IN ('gone', 'zombie') ORDER BY run_id") == [
            (f"interrupted (process {pids['gone']} gone)",),
            (f"interrupted (process {zombie.pid} gone)",),
        ]
        assert st.reap_orphans() == 0  # nothing left to reap while 'alive' runs
        alive.stdin.write("\n")
        alive.stdin.flush()
        alive.wait(timeout=60)
        zombie.wait(timeout=60)
        assert st.reap_orphans() == 1
        assert status()["alive"] == "interrupted"


def test_record_for_carries_config_hash():
    """config_hash groups the seeds of one experiment: equal across seeds, different across configs."""
    base = load_spec(QUICKSTART)
    seed1 = load_spec(QUICKSTART, ["seed=1"])
    other = load_spec(QUICKSTART, ["sparsity.final_density=0.2"])
    recs = [record_for(s, "r", None) for s in (base, seed1, other)]
    assert recs[0]["config_hash"] == recs[1]["config_hash"] != recs[2]["config_hash"]
    assert recs[0]["spec_hash"] != recs[1]["spec_hash"]
    assert recs[0]["config_hash"] not in (recs[0]["spec_hash"], None)
    # a spec object without config_hash() (an older spec module) records NULL instead of failing
    stub = SimpleNamespace(
        spec_hash=lambda: "h",
        sparsity=SimpleNamespace(method="rigl", final_density=0.1),
        model=SimpleNamespace(name="mlp"),
        data=SimpleNamespace(name="digits"),
        seed=0,
        normalised=lambda: {},
    )
    assert record_for(stub, "r", None)["config_hash"] is None
    assert {"overall_density", "selected_test_acc"} <= set(FINAL_KEYS)
    assert store_final({"overall_density": 0.4, "x": 1})["overall_density"] == 0.4
