"""The run recorder both `granet run` and the sweep driver write through, the signal guard around
its writes, and the one definition of the results db's columns. Rows are recounted with DuckDB."""

from __future__ import annotations

import os
import signal

import pytest

from granet_cli.interrupts import SignalGuard, Terminated
from granet_cli.recorder import RunRecorder
from granet_cli.records import record_for
from granet_cli.spec import load_run_spec
from granet_cli.store import Store, columns

from .conftest import QUICKSTART, rows


class FakeTracker:
    def __init__(self):
        self.epochs, self.closed = [], 0

    def log_epoch(self, row, updates=None):
        self.epochs.append((row["epoch"], len(updates or [])))

    def close(self):
        self.closed += 1


def epoch_row(epoch: int, acc: float) -> dict:
    return {"epoch": epoch, "step": 10 * epoch, "test_acc": acc, "density": 0.1}


def final(acc: float) -> dict:
    return {k: None for k in columns.FINAL_METRICS} | {"final_test_acc": acc, "achieved_density": 0.1}


def test_recorder_writes_a_run_like_the_db_expects(tmp_path):
    db = tmp_path / "r.duckdb"
    spec = load_run_spec(QUICKSTART)
    tracker = FakeTracker()
    opened = []

    def open_store():
        opened.append(1)
        return Store(db)

    rec = RunRecorder(spec, "run-1", open_store=open_store, owns_store=True, trackers=[tracker])
    assert not db.exists()  # nothing is created before the run starts
    rec.start()
    rec.epoch(epoch_row(1, 0.5), [{"step": 5, "target_density": 0.2, "dropped": 3, "grown": 3, "density": 0.2}])
    rec.epoch(epoch_row(2, 0.75))
    rec.finish("completed", final(0.75), [{"name": "fc", "shape": [2, 2], "numel": 4, "achieved_density": 0.25}], None)
    rec.close()
    assert opened == [1]
    assert rows(db, "SELECT status, final_test_acc, spec_hash, method, seed FROM runs") == [
        ("completed", 0.75, spec.spec_hash(), spec.sparsity.method, spec.seed)
    ]
    assert rows(db, "SELECT epoch, test_acc FROM epochs ORDER BY epoch") == [(1, 0.5), (2, 0.75)]
    assert rows(db, "SELECT step, dropped FROM mask_updates") == [(5, 3)]
    assert rows(db, "SELECT name, numel FROM layers") == [("fc", 4)]
    assert tracker.epochs == [(1, 1), (2, 0)] and tracker.closed == 1


def test_replay_restart_and_attempts(tmp_path):
    db = tmp_path / "r.duckdb"
    spec = load_run_spec(QUICKSTART)
    with Store(db) as store:
        rec = RunRecorder(spec, "run-2", sweep_id=None, store=store)
        rec.start(attempts=1)
        for e in (1, 2, 3):
            rec.epoch(epoch_row(e, 0.1 * e))
        rec.replay([epoch_row(1, 0.9)], [])  # continued from an epoch-1 checkpoint: its rows replace the run's
        assert rows(db, "SELECT epoch, test_acc FROM epochs") == [(1, 0.9)]
        rec.start(attempts=2)  # a retry
        rec.restart()  # with no checkpoint: starts over
        assert rows(db, "SELECT count(*) FROM epochs") == [(0,)]
        rec.finish("diverged", final(0.1), [], "loss became nan")
        rec.close()  # a shared store stays open
        assert store.run("run-2")["status"] == "diverged"
    assert rows(db, "SELECT status, attempts, error FROM runs") == [("diverged", 2, "loss became nan")]


def test_a_shared_buffer_writes_every_runs_epochs_together_and_loses_none(tmp_path, monkeypatch):
    """A sweep's driver: two runs' epochs wait in one EpochBuffer, none is in the db before `every`
    seconds, all of them after one flush (one transaction: DuckDB's commit count says so); finishing
    or stopping a run writes what waits first, and a restart forgets that run's waiting epochs only."""
    import granet_cli.recorder as recorder_module
    from granet_cli.recorder import EpochBuffer

    clock = [100.0]
    monkeypatch.setattr(recorder_module.time, "monotonic", lambda: clock[0])
    db = tmp_path / "r.duckdb"
    spec = load_run_spec(QUICKSTART)
    update = {"step": 5, "target_density": 0.2, "dropped": 3, "grown": 3, "density": 0.2}
    tracker = FakeTracker()
    with Store(db) as store:
        buffer = EpochBuffer(store, every=1.0)
        a = RunRecorder(spec, "run-a", store=store, buffer=buffer, trackers=[tracker])
        b = RunRecorder(spec, "run-b", store=store, buffer=buffer)
        a.start()
        b.start()
        a.epochs([(epoch_row(1, 0.1), [update]), (epoch_row(2, 0.2), [])])
        clock[0] += 0.6
        b.epoch(epoch_row(1, 0.5))
        buffer.flush_if_due()
        assert rows(db, "SELECT count(*) FROM epochs") == [(0,)]  # the oldest has waited 0.6 s
        assert tracker.epochs == [(1, 1), (2, 0)]  # trackers are not held back
        writes = []
        real = store.add_epoch_batches
        monkeypatch.setattr(store, "add_epoch_batches", lambda batches: (writes.append(len(batches)), real(batches)))
        clock[0] += 0.4
        buffer.flush_if_due()
        assert writes == [2]  # both runs in one call, one transaction
        assert rows(db, "SELECT run_id, epoch FROM epochs ORDER BY run_id, epoch") == [
            ("run-a", 1),
            ("run-a", 2),
            ("run-b", 1),
        ]
        assert rows(db, "SELECT run_id, step FROM mask_updates") == [("run-a", 5)]
        a.epoch(epoch_row(3, 0.3))
        b.epoch(epoch_row(2, 0.6))
        a.restart()  # a retry of run-a that starts over: its waiting epoch goes, run-b's stays
        buffer.flush()
        assert rows(db, "SELECT run_id, epoch FROM epochs ORDER BY run_id, epoch") == [("run-b", 1), ("run-b", 2)]
        a.epoch(epoch_row(1, 0.7))
        a.stop("interrupted", "Ctrl-C")  # what waits is written before the outcome
        b.epoch(epoch_row(3, 0.8))
        b.finish("completed", final(0.8), [], None)
        assert not buffer.pending
    assert rows(db, "SELECT run_id, max(epoch), count(*) FROM epochs GROUP BY run_id ORDER BY run_id") == [
        ("run-a", 1, 1),
        ("run-b", 3, 3),
    ]
    assert rows(db, "SELECT run_id, status FROM runs ORDER BY run_id") == [
        ("run-a", "interrupted"),
        ("run-b", "completed"),
    ]


def test_a_batch_of_epochs_lands_whole_or_not_at_all(tmp_path):
    """One transaction: a batch with a row the db refuses (a step that is no number, a run that was
    never started) writes none of its rows, not even another run's."""
    from granet_cli.store import StoreError

    db = tmp_path / "r.duckdb"
    spec = load_run_spec(QUICKSTART)
    with Store(db) as store:
        store.start_run(record_for(spec, "run-d", None))
        store.start_run(record_for(spec, "run-e", None))
        store.add_epochs("run-d", [epoch_row(1, 0.1), epoch_row(2, 0.2)], [])
        with pytest.raises(StoreError, match="unknown run"):
            store.add_epoch_batches([("run-e", [epoch_row(1, 0.3)], []), ("run-x", [epoch_row(1, 0.3)], [])])
        with pytest.raises(StoreError, match="Could not convert"):
            store.add_epochs("run-d", [epoch_row(3, 0.3), {"epoch": 4, "step": "not a number"}], [])
    assert rows(db, "SELECT run_id, epoch FROM epochs ORDER BY epoch") == [("run-d", 1), ("run-d", 2)]


def test_stop_never_raises_and_says_why(tmp_path):
    spec = load_run_spec(QUICKSTART)
    tracker = FakeTracker()
    rec = RunRecorder(spec, "run-3", store=None, open_store=lambda: Store(tmp_path / "s.duckdb"), trackers=[tracker])
    assert rec.stop("failed", "before start") == ""  # nothing recorded, nothing to say
    assert tracker.closed == 1

    class BrokenStore:
        def start_run(self, record):
            pass

        def fail_run(self, *args):
            raise RuntimeError("disk on fire")

    rec = RunRecorder(spec, "run-4", store=BrokenStore())
    rec.start()
    assert rec.stop("interrupted", "Ctrl-C") == (
        "; the results db could not record it either (disk on fire); its row stays 'running' until the next "
        "granet run of this spec marks it interrupted"
    )


def test_signal_guard_defers_a_signal_to_the_end_of_a_db_write():
    done = []
    with SignalGuard() as guard:
        with pytest.raises(Terminated):
            guard.db_write(lambda: (os.kill(os.getpid(), signal.SIGTERM), done.append("write finished")))
        assert done == ["write finished"]
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
        guard.stopping = True
        os.kill(os.getpid(), signal.SIGTERM)  # ignored while the outcome is being recorded
    assert signal.getsignal(signal.SIGTERM) is not guard._on_signal  # handlers restored


def test_a_fresh_db_has_exactly_the_defined_columns(tmp_path):
    db = tmp_path / "c.duckdb"
    Store(db).close()
    for table, cols in columns.TABLES.items():
        got = rows(
            db,
            "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = ? ORDER BY ordinal_position",
            table,
        )
        assert got == [(c.name, c.sql) for c in cols], table


def test_trainer_rows_must_match_the_columns():
    values = {k: 0.0 for k in columns.EPOCH_METRICS}
    assert list(columns.metric_row("epoch", values)) == list(columns.EPOCH_METRICS)
    with pytest.raises(columns.RowError, match=r"missing \['overall_density'\]"):
        columns.metric_row("epoch", {k: v for k, v in values.items() if k != "overall_density"})
    with pytest.raises(columns.RowError, match=r"unknown \['new_metric'\]"):
        columns.metric_row("final", {k: None for k in columns.FINAL_METRICS} | {"new_metric": 1.0})
    # every epoch metric but the bookkeeping (epoch, step) has a tracker tag
    assert set(columns.EPOCH_TAGS) == set(columns.EPOCH_METRICS) - {"epoch", "step"}


ADD_A_METRIC = r"""
import sys
from granet_cli.store import columns
current = int(sys.argv[2])
# the one line a new metric needs: an epochs column of a new schema version, with its tracker tag
columns.TABLES["epochs"] += (columns.Column("grad_norm", "DOUBLE", since=current + 1, tag="train/grad_norm"),)
columns.EPOCH_METRICS = tuple(c for c in columns.names("epochs") if c != "run_id")
columns.EPOCH_TAGS = {c.name: c.tag for c in columns.TABLES["epochs"] if c.tag}
from granet_cli.store import SCHEMA_VERSION, Store
assert SCHEMA_VERSION == current + 1, SCHEMA_VERSION
with Store(sys.argv[1]) as st:  # a db of the current version: migrated by the writer
    st.start_run(dict(run_id="r", spec_hash="h", method="rigl", seed=0))
    st.add_epoch("r", {"epoch": 1, "step": 4, "test_acc": 0.5, "grad_norm": 2.5})
"""


def test_a_metric_added_in_columns_reaches_the_db_by_migration(tmp_path):
    import subprocess
    import sys

    from granet_cli.store import SCHEMA_VERSION

    db = tmp_path / "current.duckdb"
    with Store(db) as st:
        st.start_run(dict(run_id="old", spec_hash="h0", method="gmp", seed=1))
    proc = subprocess.run(
        [sys.executable, "-c", ADD_A_METRIC, str(db), str(SCHEMA_VERSION)], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    assert rows(db, "SELECT value FROM granet_meta WHERE key = 'schema_version'") == [(str(SCHEMA_VERSION + 1),)]
    assert rows(db, "SELECT data_type FROM information_schema.columns WHERE column_name = 'grad_norm'") == [("DOUBLE",)]
    assert rows(db, "SELECT run_id, epoch, grad_norm FROM epochs") == [("r", 1, 2.5)]
    assert rows(db, "SELECT run_id FROM runs ORDER BY run_id") == [("old",), ("r",)]


def test_an_epoch_twice_in_one_batch_keeps_the_later_row(tmp_path):
    """Row by row, a later row of an epoch replaced the earlier; one multi-row INSERT OR REPLACE in
    DuckDB would keep the first, so a batch must keep the later one itself."""
    db = tmp_path / "r.duckdb"
    with Store(db) as store:
        store.start_run(record_for(load_run_spec(QUICKSTART), "run-f", None))
        store.add_epochs("run-f", [epoch_row(1, 0.1), epoch_row(2, 0.2), epoch_row(1, 0.9)], [])
    assert rows(db, "SELECT epoch, test_acc FROM epochs ORDER BY epoch") == [(1, 0.9), (2, 0.2)]


def test_batches_longer_than_one_statement_land_in_full(tmp_path):
    from granet_cli.store.writes import INSERT_CHUNK

    n = 2 * INSERT_CHUNK + 3  # three statements, the last of 3 rows
    db = tmp_path / "r.duckdb"
    updates = [{"step": s, "target_density": 0.2, "dropped": s % 7, "grown": 1, "density": 0.2} for s in range(n)]
    with Store(db) as store:
        store.start_run(record_for(load_run_spec(QUICKSTART), "run-g", None))
        store.add_epochs("run-g", [epoch_row(e, e / n) for e in range(1, n + 1)], updates)
    assert rows(db, "SELECT count(*), sum(epoch), max(epoch) FROM epochs") == [(n, n * (n + 1) // 2, n)]
    assert rows(db, "SELECT count(*), sum(step), sum(dropped) FROM mask_updates") == [
        (n, n * (n - 1) // 2, sum(s % 7 for s in range(n)))
    ]
