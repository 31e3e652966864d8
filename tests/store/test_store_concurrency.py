"""Many processes writing one results db (Slurm array jobs): short transactions, lock retries."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from granet_cli.store import SCHEMA_VERSION, Store, StoreError

from ..conftest import QUICKSTART, ROOT, rows
from .test_store import run_dict as store_run_dict

GRANET = Path(sys.executable).parent / "granet"


def run_dict(run_id: str, **kw) -> dict:
    """test_store's run row, outside any sweep, started now."""
    return store_run_dict(run_id, **{"sweep_id": None, "spec_json": "{}", "started_at": None, **kw})


def hold_lock(db: Path, seconds: float | None) -> subprocess.Popen:
    """A process that opens the db for writing with plain duckdb and keeps it open for `seconds`
    (None: until a line arrives on its stdin); returns once it holds the lock."""
    wait = "sys.stdin.readline()" if seconds is None else f"time.sleep({seconds})"
    code = textwrap.dedent(f"""
        import sys, time, duckdb
        con = duckdb.connect({str(db)!r})
        print("ready", flush=True)
        {wait}
        con.close()
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    return proc


def test_writer_holds_no_lock_between_calls(tmp_path: Path):
    """While a writer Store is open (a run in progress), another process can open the file for writing."""
    db = tmp_path / "r.duckdb"
    with Store(db) as st:
        st.start_run(run_dict("mine"))
        st.add_epoch("mine", dict(epoch=0, test_acc=0.5))
        code = (
            f"import duckdb; c = duckdb.connect({str(db)!r}); "
            "c.execute(\"INSERT INTO sweeps (sweep_id, name) VALUES ('theirs', 'x')\"); c.close()"
        )
        other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
        assert other.returncode == 0, other.stderr
        st.add_epoch("mine", dict(epoch=1, test_acc=0.6))  # and this store still writes afterwards
        assert st.find_sweep("theirs") == "theirs"
    assert rows(db, "SELECT epoch FROM epochs WHERE run_id = 'mine' ORDER BY epoch") == [(0,), (1,)]


def test_write_waits_for_a_lock_then_succeeds(tmp_path: Path):
    db = tmp_path / "r.duckdb"
    st = Store(db, lock_timeout=30)
    st.start_run(run_dict("r1"))
    holder = hold_lock(db, 1.5)
    try:
        t0 = time.monotonic()
        st.add_epoch("r1", dict(epoch=0, test_acc=0.5))
        waited = time.monotonic() - t0
    finally:
        holder.wait(timeout=30)
        st.close()
    assert 0.5 < waited < 20  # it waited for the holder (1.5 s after it was ready), then wrote
    assert 0.3 < st.lock_wait_seconds <= waited
    assert rows(db, "SELECT epoch, test_acc FROM epochs") == [(0, 0.5)]


def test_write_gives_up_after_lock_timeout(tmp_path: Path, monkeypatch):
    db = tmp_path / "r.duckdb"
    monkeypatch.setenv("GRANET_DB_LOCK_TIMEOUT", "0.5")
    st = Store(db)
    st.start_run(run_dict("r1"))
    holder = hold_lock(db, None)
    try:
        t0 = time.monotonic()
        with pytest.raises(StoreError) as ei:
            st.add_epoch("r1", dict(epoch=0, test_acc=0.5))
        waited = time.monotonic() - t0
    finally:
        holder.stdin.write("\n")
        holder.stdin.flush()
        holder.wait(timeout=30)
    msg = str(ei.value)
    assert "\n" not in msg and str(db) in msg
    assert "still locked by another process after 0.5 s" in msg and "GRANET_DB_LOCK_TIMEOUT" in msg
    assert 0.45 < waited < 5
    assert rows(db, "SELECT count(*) FROM epochs") == [(0,)]
    st.add_epoch("r1", dict(epoch=0, test_acc=0.5))  # the lock is gone: the same store writes again
    st.close()
    assert rows(db, "SELECT count(*) FROM epochs") == [(1,)]


@pytest.mark.parametrize("value", ["abc", "-1", "nan", "inf"])
def test_lock_timeout_env_is_validated(tmp_path: Path, monkeypatch, value: str):
    db = tmp_path / "r.duckdb"
    monkeypatch.setenv("GRANET_DB_LOCK_TIMEOUT", value)
    with pytest.raises(StoreError, match=r"GRANET_DB_LOCK_TIMEOUT=.*must be a number of seconds >= 0"):
        Store(db)
    assert not db.exists()


WRITER = textwrap.dedent("""
    import sys
    from granet_cli.store import Store
    db, rid, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    with Store(db) as st:
        st.start_run(dict(run_id=rid, spec_hash="h-" + rid, method="rigl", seed=0))
        for e in range(n):
            st.add_epoch(rid, dict(epoch=e, step=e, test_acc=e / n))
            st.add_mask_updates(rid, [dict(step=e, density=0.5), dict(step=e, density=0.4)])
        st.finish_run(rid, dict(final_test_acc=0.9), [dict(name="w", shape=[2], numel=2, achieved_density=0.5)])
""")


def test_many_writer_processes(tmp_path: Path):
    """Six processes, each a Store making 27 write transactions into one new file at the same time."""
    db = tmp_path / "shared.duckdb"
    n = 12
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(db), f"w{i}", str(n)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(6)
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0] * 6, [o[1][-500:] for o in outs]
    assert rows(db, "SELECT run_id, status FROM runs ORDER BY run_id") == [(f"w{i}", "completed") for i in range(6)]
    assert rows(db, "SELECT run_id, count(*) FROM epochs GROUP BY run_id ORDER BY run_id") == [
        (f"w{i}", n) for i in range(6)
    ]
    assert rows(db, "SELECT run_id, count(*) FROM mask_updates GROUP BY run_id ORDER BY run_id") == [
        (f"w{i}", 2 * n) for i in range(6)
    ]
    assert rows(db, "SELECT count(*) FROM layers") == [(6,)]
    assert rows(db, "SELECT value FROM granet_meta WHERE key = 'schema_version'") == [(str(SCHEMA_VERSION),)]


def test_concurrent_granet_runs_share_one_db(tmp_path: Path):
    """4 independent `granet run` processes (an array job), separate runs dirs, one --db."""
    db = tmp_path / "shared.duckdb"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    t0 = time.monotonic()
    procs = [
        subprocess.Popen(
            [
                str(GRANET),
                "run",
                str(QUICKSTART),
                "--set",
                "optim.epochs=3",
                "--set",
                "sparsity.final_prune_epoch=2",
                "--set",
                f"seed={seed}",
                "-q",
                "--runs-dir",
                str(tmp_path / f"runs{seed}"),
                "--db",
                str(db),
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for seed in range(4)
    ]
    outs = [p.communicate(timeout=550) for p in procs]
    wall = time.monotonic() - t0
    print(f"4 concurrent granet runs: {wall:.1f} s")
    assert [p.returncode for p in procs] == [0] * 4, [o[1][-800:] for o in outs]
    assert rows(db, "SELECT seed, status FROM runs ORDER BY seed") == [(s, "completed") for s in range(4)]
    per_run = rows(
        db,
        "SELECT r.seed, count(*), count(DISTINCT e.epoch) FROM runs r "
        "JOIN epochs e USING (run_id) GROUP BY r.seed ORDER BY r.seed",
    )
    assert per_run == [(s, 3, 3) for s in range(4)]
    # each row names the process that wrote it
    assert {r for r in rows(db, "SELECT pid, host FROM runs")} == {(p.pid, socket.gethostname()) for p in procs}


def test_same_process_conflict_fails_fast(tmp_path: Path):
    """A read-only store left open in this process blocks this process's writes: a quick, clear error
    (only another thread could release it), not a wait of the full lock timeout."""
    db = tmp_path / "r.duckdb"
    st = Store(db, lock_timeout=60)
    reader = Store(db, read_only=True)
    try:
        t0 = time.monotonic()
        with pytest.raises(StoreError, match="already open in this process"):
            st.start_run(run_dict("r1"))
        assert time.monotonic() - t0 < 10
    finally:
        reader.close()
    st.start_run(run_dict("r1"))
    st.close()
    assert rows(db, "SELECT run_id FROM runs") == [("r1",)]
