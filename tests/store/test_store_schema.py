"""Results db schema versions: recognising a granet db, migrating older ones, refusing others.

The older files are built here with the CREATE TABLE statements those granet versions ran
(v0: before top-5 / samples-per-second; v1: before granet_meta), and every check on the
result is made with plain duckdb (conftest ``rows``), not through the store.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from datetime import datetime
from pathlib import Path

import duckdb
import pytest

from granet_cli import store as store_mod
from granet_cli.store import EPOCH_COLUMNS, RUN_COLUMNS, SCHEMA_VERSION, Store, StoreError
from granet_cli.store import columns as columns_def

from ..conftest import QUICKSTART, rows

T0 = datetime(2024, 5, 1, 12, 0, 0)

# granet's schema before commit 30c2b23 (v0), verbatim
V0_SCHEMA = (
    "CREATE TABLE sweeps (sweep_id VARCHAR PRIMARY KEY, name VARCHAR, created_at TIMESTAMP, grid_json VARCHAR)",
    """CREATE TABLE runs (
        run_id VARCHAR PRIMARY KEY, sweep_id VARCHAR, spec_hash VARCHAR, method VARCHAR, model VARCHAR,
        dataset VARCHAR, target_density DOUBLE, seed INTEGER, status VARCHAR, final_test_acc DOUBLE,
        best_test_acc DOUBLE, final_density DOUBLE, itop_rate DOUBLE, train_flops_frac DOUBLE,
        inference_flops_frac DOUBLE, wall_seconds DOUBLE, spec_json VARCHAR, started_at TIMESTAMP,
        finished_at TIMESTAMP, error VARCHAR)""",
    """CREATE TABLE epochs (
        run_id VARCHAR, epoch INTEGER, step BIGINT, lr DOUBLE, train_loss DOUBLE, train_acc DOUBLE,
        test_loss DOUBLE, test_acc DOUBLE, density DOUBLE, itop_rate DOUBLE, seconds DOUBLE,
        PRIMARY KEY (run_id, epoch))""",
    "CREATE TABLE layers (run_id VARCHAR, name VARCHAR, shape VARCHAR, numel BIGINT, final_density DOUBLE)",
    """CREATE TABLE mask_updates (run_id VARCHAR, step BIGINT, target_density DOUBLE, dropped BIGINT,
        grown BIGINT, density DOUBLE)""",
)
# v1: what granet wrote from 30c2b23 until granet_meta (v2)
V1_EXTRA = (
    "ALTER TABLE runs ADD COLUMN final_test_acc5 DOUBLE",
    "ALTER TABLE runs ADD COLUMN samples_per_second DOUBLE",
    "ALTER TABLE epochs ADD COLUMN test_acc5 DOUBLE",
)
V0_RUN_COLS = {
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
    "final_density",
    "itop_rate",
    "train_flops_frac",
    "inference_flops_frac",
    "wall_seconds",
    "spec_json",
    "started_at",
    "finished_at",
    "error",
}
V2_RUN_ADDED = {
    "final_test_acc5",
    "samples_per_second",
    "overall_density",
    "selected_test_acc",
    "config_hash",
    "attempts",
    "pid",
    "host",
}
V2_EPOCH_ADDED = {"test_acc5", "val_loss", "val_acc", "overall_density"}


def make_legacy_db(path: Path, version: int, *, runs: int = 2, epochs: int = 3) -> None:
    """A results file as granet v0/v1 left it: a sweep, `runs` completed runs of `epochs` epochs each
    (final_test_acc 0.8 + i / 100), with layers and mask updates, plus one failed run."""
    con = duckdb.connect(str(path))
    try:
        for stmt in V0_SCHEMA + (V1_EXTRA if version >= 1 else ()):
            con.execute(stmt)
        con.execute("INSERT INTO sweeps VALUES ('sw-old', 'old grid', ?, '{\"seed\": [0, 1]}')", [T0])
        for i in range(runs):
            rid = f"old-{i}"
            con.execute(
                "INSERT INTO runs (run_id, sweep_id, spec_hash, method, model, dataset, target_density, seed, status,"
                " final_test_acc, best_test_acc, final_density, itop_rate, train_flops_frac, inference_flops_frac,"
                " wall_seconds, spec_json, started_at, finished_at, error) VALUES"
                " (?, 'sw-old', ?, 'granet', 'mlp', 'digits', 0.1, ?, 'completed', ?, ?, 0.1, 0.5, 0.2, 0.1, 3.5,"
                " '{}', ?, ?, NULL)",
                [rid, f"h{i}", i, 0.8 + i / 100, 0.85 + i / 100, T0, T0],
            )
            for e in range(epochs):
                con.execute(
                    "INSERT INTO epochs (run_id, epoch, step, lr, test_acc, density) VALUES (?, ?, ?, 0.1, ?, 0.1)",
                    [rid, e, 10 * (e + 1), 0.5 + e / 10],
                )
            con.execute("INSERT INTO layers VALUES (?, 'fc.weight', '[10, 64]', 640, 0.1)", [rid])
            con.execute("INSERT INTO mask_updates VALUES (?, 5, 0.1, 3, 3, 0.1)", [rid])
        con.execute(
            "INSERT INTO runs (run_id, sweep_id, spec_hash, method, status, error, started_at, spec_json) "
            "VALUES ('old-failed', 'sw-old', 'hf', 'rigl', 'failed', 'boom', ?, '{}')",
            [T0],
        )
    finally:
        con.close()


def renamed(cols: set[str], table: str) -> set[str]:
    """Column names after every rename since (columns.RENAMED)."""
    for v in sorted(columns_def.RENAMED):
        cols = {columns_def.RENAMED[v].get(table, {}).get(c, c) for c in cols}
    return cols


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def columns(db: Path, table: str) -> set[str]:
    return {r[0] for r in rows(db, "SELECT column_name FROM information_schema.columns WHERE table_name = ?", table)}


def tables(db: Path) -> set[str]:
    return {r[0] for r in rows(db, "SELECT table_name FROM information_schema.tables")}


@pytest.mark.parametrize("version", [0, 1])
def test_older_granet_db_is_migrated(tmp_path: Path, version: int):
    db = tmp_path / f"v{version}.duckdb"
    make_legacy_db(db, version)
    before = rows(db, "SELECT run_id, status, final_test_acc, best_test_acc, wall_seconds FROM runs ORDER BY run_id")
    with Store(db) as st:
        st.start_run(dict(run_id="new", spec_hash="hn", config_hash="cn", method="rigl", seed=0, started_at=T0))
        st.add_epoch("new", dict(epoch=0, test_acc=0.4, val_acc=0.45, overall_density=0.2))
    meta = dict(rows(db, "SELECT key, value FROM granet_meta"))
    assert meta["schema_version"] == str(SCHEMA_VERSION)
    assert meta[f"migrated_from_v{version}_by"].startswith("granet ")
    assert columns(db, "runs") == renamed(V0_RUN_COLS, "runs") | V2_RUN_ADDED | set(columns_def.names("runs"))
    assert columns(db, "runs") == set(columns_def.names("runs"))
    assert columns(db, "epochs") >= V2_EPOCH_ADDED
    # the old rows are untouched; the columns they never had are NULL, attempts is 1
    assert (
        rows(
            db,
            "SELECT run_id, status, final_test_acc, best_test_acc, wall_seconds FROM runs "
            "WHERE run_id <> 'new' ORDER BY run_id",
        )
        == before
    )
    assert rows(
        db,
        "SELECT count(*) FROM runs WHERE run_id <> 'new' AND attempts = 1 AND pid IS NULL "
        "AND config_hash IS NULL AND overall_density IS NULL",
    ) == [(3,)]
    assert rows(db, "SELECT count(*) FROM epochs WHERE run_id LIKE 'old-%'") == [(6,)]
    assert rows(db, "SELECT count(*) FROM layers") == [(2,)] and rows(db, "SELECT count(*) FROM mask_updates") == [(2,)]
    # the measured density (final_density before v4) kept its values under its new name
    assert rows(db, "SELECT run_id, achieved_density FROM runs WHERE run_id <> 'new' ORDER BY run_id") == [
        ("old-0", 0.1),
        ("old-1", 0.1),
        ("old-failed", None),
    ]
    assert rows(db, "SELECT achieved_density FROM layers") == [(0.1,), (0.1,)]
    assert rows(db, "SELECT config_hash, attempts FROM runs WHERE run_id = 'new'") == [("cn", 1)]
    assert rows(db, "SELECT val_acc, overall_density FROM epochs WHERE run_id = 'new'") == [(0.45, 0.2)]
    # migrating is done once: the next writer open leaves the file byte-identical
    digest = sha(db)
    with Store(db) as st:
        assert len(st.runs()) == 4
    assert sha(db) == digest


def test_migration_is_one_transaction(tmp_path: Path, monkeypatch):
    """v0 -> latest runs several steps; the second failing rolls back the first as well."""
    db = tmp_path / "v0.duckdb"
    make_legacy_db(db, 0)
    real_step = store_mod.MIGRATIONS[1]

    def broken_step(con):
        real_step(con)
        con.execute("SELECT * FROM no_such_table")

    monkeypatch.setitem(store_mod.MIGRATIONS, 1, broken_step)
    with pytest.raises(StoreError, match="no_such_table"):
        Store(db)
    assert columns(db, "runs") == V0_RUN_COLS  # not even v1's columns stayed
    assert "test_acc5" not in columns(db, "epochs")
    assert "granet_meta" not in tables(db)
    assert rows(db, "SELECT count(*) FROM runs") == [(3,)]
    monkeypatch.setitem(store_mod.MIGRATIONS, 1, real_step)
    Store(db).close()
    assert rows(db, "SELECT value FROM granet_meta WHERE key = 'schema_version'") == [(str(SCHEMA_VERSION),)]


def _foreign_db(path: Path) -> None:
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE runs (id INTEGER, who VARCHAR)")
    con.execute("INSERT INTO runs VALUES (1, 'someone else')")
    con.close()


def test_foreign_duckdb_file_refused_untouched(tmp_path: Path, cli):
    db = tmp_path / "theirs.duckdb"
    _foreign_db(db)
    digest = sha(db)
    listing = sorted(p.name for p in tmp_path.iterdir())
    for read_only in (False, True):
        with pytest.raises(StoreError) as ei:
            Store(db, read_only=read_only)
        msg = str(ei.value)
        assert "\n" not in msg and str(db) in msg and "not a granet results db" in msg
        assert "missing tables: sweeps, epochs, layers, mask_updates" in msg
    # the CLI: one line, exit 2, nothing written
    res = cli(
        "run",
        QUICKSTART,
        "--db",
        db,
        "--runs-dir",
        tmp_path / "runs",
        "--set",
        "optim.epochs=1",
        "--set",
        "sparsity.final_prune_epoch=1",
        "-q",
    )
    assert res.exit_code == 2
    assert "not a granet results db" in res.output and "Traceback" not in res.output
    res = cli("report", "--db", db, "--out", tmp_path / "reports")
    assert res.exit_code == 2 and "not a granet results db" in res.output
    assert sha(db) == digest
    assert sorted(p.name for p in tmp_path.iterdir() if p.name not in ("runs", "reports")) == listing  # no .wal
    assert rows(db, "SELECT * FROM runs") == [(1, "someone else")]


def test_granet_lookalike_missing_columns_refused(tmp_path: Path):
    """Five tables with granet's names but not its columns are not a granet db either."""
    db = tmp_path / "lookalike.duckdb"
    con = duckdb.connect(str(db))
    for t in ("sweeps", "runs", "epochs", "layers", "mask_updates"):
        con.execute(f"CREATE TABLE {t} (run_id VARCHAR)")
    con.close()
    digest = sha(db)
    with pytest.raises(StoreError, match="missing columns: sweeps.sweep_id"):
        Store(db)
    assert sha(db) == digest


def test_newer_schema_refused_for_writing(tmp_path: Path):
    db = tmp_path / "future.duckdb"
    with Store(db) as st:
        st.start_run(dict(run_id="r", method="rigl", started_at=T0))
    con = duckdb.connect(str(db))
    future = SCHEMA_VERSION + 1
    con.execute("UPDATE granet_meta SET value = ? WHERE key = 'schema_version'", [str(future)])
    con.close()
    digest = sha(db)
    with pytest.raises(StoreError, match=rf"newer granet \(schema v{future}"):
        Store(db)
    assert sha(db) == digest
    with Store(db, read_only=True) as st:  # reading what it knows still works
        assert [r["run_id"] for r in st.runs()] == ["r"]


def test_empty_duckdb_file_gets_the_schema(tmp_path: Path):
    db = tmp_path / "empty.duckdb"
    duckdb.connect(str(db)).close()
    assert tables(db) == set()
    Store(db).close()
    assert tables(db) == {"granet_meta", "sweeps", "runs", "epochs", "layers", "mask_updates"}


def test_read_only_reads_v0_without_writing(tmp_path: Path):
    """report / sweep --dry-run open read-only: an old file is read as it is, new columns as NULL."""
    db = tmp_path / "v0.duckdb"
    make_legacy_db(db, 0)
    digest = sha(db)
    with Store(db, read_only=True) as st:
        assert st.schema_version() == 0
        runs = st.runs()
        assert [r["run_id"] for r in runs] == ["old-0", "old-1", "old-failed"]
        assert all(set(r) == set(RUN_COLUMNS) for r in runs)
        assert [r["final_test_acc"] for r in runs[:2]] == [pytest.approx(0.8), pytest.approx(0.81)]
        for r in runs:
            for c in V2_RUN_ADDED:
                assert r[c] is None, c
        # the file's final_density reads under today's name
        assert [r["achieved_density"] for r in runs] == [0.1, 0.1, None]
        assert [(x["run_id"], x["achieved_density"]) for x in st.layers(["old-0"])] == [("old-0", 0.1)]
        assert [r["run_id"] for r in st.runs(status="completed", sweep="sw-old")] == ["old-0", "old-1"]
        eps = st.epochs(["old-0", "old-1"])
        assert [(e["run_id"], e["epoch"]) for e in eps] == [(f"old-{i}", e) for i in (0, 1) for e in range(3)]
        assert all(set(e) == {"run_id", *EPOCH_COLUMNS} for e in eps)
        assert [e["test_acc"] for e in eps[:3]] == [pytest.approx(0.5), pytest.approx(0.6), pytest.approx(0.7)]
        assert all(e[c] is None for e in eps for c in V2_EPOCH_ADDED)
        assert [m["step"] for m in st.mask_updates(["old-0"])] == [5]
        assert st.find_sweep("old grid") == "sw-old"
    assert sha(db) == digest
    assert not db.with_name(db.name + ".wal").exists()


def test_report_and_dry_run_read_v0_without_writing(tmp_path: Path, cli):
    db = tmp_path / "v0.duckdb"
    make_legacy_db(db, 0)
    digest = sha(db)
    res = cli("report", "--db", db, "--out", tmp_path / "reports", "--name", "old", "--format", "md")
    assert res.exit_code == 0, res.output
    md = (tmp_path / "reports" / "old.md").read_text()
    assert "| granet | 80.50 ±" in md  # the mean of final_test_acc 0.80 and 0.81 (the failed run left out)
    res = cli("sweep", "--dry-run", "--db", db)
    assert res.exit_code == 0, res.output
    assert sha(db) == digest
    assert not db.with_name(db.name + ".wal").exists()


def test_zero_byte_file_gets_the_schema(tmp_path: Path):
    """A 0-byte file (``touch``, ``mktemp``, a create that hit a full disk) is a new, empty db."""
    db = tmp_path / "touched.duckdb"
    db.touch()
    old = db.stat().st_mtime - 60
    os.utime(db, (old, old))  # not one being created by another process this instant
    with pytest.raises(StoreError, match="not a DuckDB database"):
        Store(db, read_only=True)  # a reader never writes
    assert db.stat().st_size == 0
    with Store(db) as st:
        st.start_run(dict(run_id="r1"))
    assert rows(db, "SELECT run_id FROM runs") == [("r1",)]
    assert tables(db) == {"granet_meta", "sweeps", "runs", "epochs", "layers", "mask_updates"}


# ------------------------------------------------------------------ v3 -> v4: final_density renamed
def make_v3_db(path: Path) -> None:
    """A results file as granet wrote it at schema v3, when the measured density of the sparsified
    layers was called final_density (the spec's name for the target) in runs and layers: four
    completed runs (two methods x two seeds) with two layers each, written by today's store and
    turned back into v3."""
    with Store(path) as st:
        for i, (method, seed, acc) in enumerate(
            (("granet", 0, 0.8), ("granet", 1, 0.82), ("rigl", 0, 0.78), ("rigl", 1, 0.75))
        ):
            rid = f"r{i}"
            st.start_run(
                dict(
                    run_id=rid,
                    spec_hash=rid,
                    method=method,
                    model="mlp",
                    dataset="digits",
                    target_density=0.1,
                    seed=seed,
                    spec_json="{}",
                    started_at=T0,
                )
            )
            st.finish_run(
                rid,
                dict(final_test_acc=acc, best_test_acc=acc, achieved_density=0.1 - i / 1000, wall_seconds=1.0 + i),
                [
                    dict(name="fc1.weight", shape=[64, 64], numel=4096, achieved_density=0.05 + i / 100),
                    dict(name="fc2.weight", shape=[10, 64], numel=640, achieved_density=0.5 - i / 100),
                ],
            )
    con = duckdb.connect(str(path))
    try:
        for table in ("runs", "layers"):
            con.execute(f"ALTER TABLE {table} RENAME COLUMN achieved_density TO final_density")
        con.execute("UPDATE granet_meta SET value = '3' WHERE key = 'schema_version'")
    finally:
        con.close()


def schema_of(db: Path) -> list[tuple]:
    return rows(
        db,
        "SELECT table_name, ordinal_position, column_name, data_type, column_default FROM information_schema.columns "
        "ORDER BY table_name, ordinal_position",
    )


V3_RUNS = "SELECT run_id, {} FROM runs ORDER BY run_id"
V3_LAYERS = "SELECT run_id, name, {} FROM layers ORDER BY run_id, name"


def test_v3_db_renamed_by_a_writer(tmp_path: Path):
    """A writer renames runs/layers.final_density to achieved_density in place (one transaction):
    the values stay, the file then has a new file's schema, and a second open writes nothing."""
    db = tmp_path / "v3.duckdb"
    make_v3_db(db)
    assert SCHEMA_VERSION >= 4 and "achieved_density" not in columns(db, "runs") | columns(db, "layers")
    runs, layers = rows(db, V3_RUNS.format("final_density")), rows(db, V3_LAYERS.format("final_density"))
    assert len(runs) == 4 and len(layers) == 8 and all(r[-1] is not None for r in runs + layers)
    with Store(db) as st:
        assert st.schema_version() == SCHEMA_VERSION
        assert [(r["run_id"], r["achieved_density"]) for r in st.runs()] == runs
    meta = dict(rows(db, "SELECT key, value FROM granet_meta"))
    assert meta["schema_version"] == str(SCHEMA_VERSION) and meta["migrated_from_v3_by"].startswith("granet ")
    assert rows(db, V3_RUNS.format("achieved_density")) == runs
    assert rows(db, V3_LAYERS.format("achieved_density")) == layers
    assert "final_density" not in columns(db, "runs") | columns(db, "layers")
    fresh = tmp_path / "fresh.duckdb"
    Store(fresh).close()
    assert schema_of(db) == schema_of(fresh)  # same columns, in the same places, as a new file's
    digest = sha(db)
    with Store(db) as st:
        assert len(st.runs()) == 4
    assert sha(db) == digest


def test_v3_db_rename_rolls_back_with_the_migration(tmp_path: Path, monkeypatch):
    """The rename is part of the one migration transaction: a failing step leaves final_density."""
    db = tmp_path / "v3.duckdb"
    make_v3_db(db)
    digest_rows = rows(db, V3_RUNS.format("final_density"))
    real_step = store_mod.MIGRATIONS[3]

    def broken_step(con):
        real_step(con)
        con.execute("SELECT * FROM no_such_table")

    monkeypatch.setitem(store_mod.MIGRATIONS, 3, broken_step)
    with pytest.raises(StoreError, match="no_such_table"):
        Store(db)
    assert rows(db, V3_RUNS.format("final_density")) == digest_rows
    assert rows(db, "SELECT value FROM granet_meta WHERE key = 'schema_version'") == [("3",)]


def test_v3_db_read_as_it_is_shows_the_densities_of_the_migrated_one(tmp_path: Path, cli):
    """report, results, sweep --dry-run and the store's reads open an old file read-only: it stays byte-identical,
    and they show the measured density under its new name, as they do after the migration."""
    old, new = tmp_path / "old" / "r.duckdb", tmp_path / "new" / "r.duckdb"
    old.parent.mkdir()
    new.parent.mkdir()
    make_v3_db(old)
    shutil.copyfile(old, new)
    Store(new).close()  # migrated
    assert "achieved_density" in columns(new, "runs") and "final_density" in columns(old, "runs")
    digest = sha(old)
    seen: dict[Path, dict] = {}
    for db in (old, new):
        with Store(db, read_only=True) as st:
            runs, layers = st.runs(), st.layers([f"r{i}" for i in range(4)])
        assert [r["achieved_density"] for r in runs] == [pytest.approx(0.1 - i / 1000) for i in range(4)]
        res = cli("report", "--db", db, "--json", "--out", tmp_path / "never")
        assert res.exit_code == 0, res.output
        (group,) = json.loads(res.stdout)["groups"]
        res = cli("report", "--db", db, "--out", db.parent / "reports", "--name", "r", "--format", "md")
        assert res.exit_code == 0, res.output
        md = (db.parent / "reports" / "r.md").read_text(encoding="utf-8").replace(str(db), "DB")
        md = re.sub(r"- generated: .*", "", md)
        # the per-layer density plot (matplotlib's clip-path / marker ids are random)
        svg = (db.parent / "reports" / "r_files" / "digits-mlp-layer_density.svg").read_text(encoding="utf-8")
        svg = re.sub(r"\b[a-z][0-9a-f]{10}\b", "ID", svg)
        exports = {}
        for table in ("runs", "layers"):
            res = cli("results", "--db", db, "--table", table, "--format", "csv", "-q")
            assert res.exit_code == 0, res.output
            exports[table] = res.stdout
        seen[db] = dict(runs=runs, layers=layers, group=group, md=md, svg=svg, exports=exports)
    res = cli("sweep", "--dry-run", "--db", old)
    assert res.exit_code == 0, res.output
    assert sha(old) == digest
    assert not old.with_name(old.name + ".wal").exists()
    a, b = seen[old], seen[new]
    assert a["runs"] == b["runs"] and a["layers"] == b["layers"]
    assert len(a["layers"]) == 8 and all(x["achieved_density"] is not None for x in a["layers"])
    assert a["group"] == b["group"]
    budget = {x["row"]: x for x in a["group"]["budget"]}
    assert budget["granet"]["achieved_density"] == pytest.approx(0.0995)
    assert budget["rigl"]["achieved_density"] == pytest.approx(0.0975)
    assert a["md"] == b["md"] and "| granet | 0.1 | 0.0995 | 1.5 |" in a["md"]
    assert "| method | target density | final density | wall s |" in a["md"]  # the header users know
    assert a["svg"] == b["svg"]
    assert a["exports"] == b["exports"]
    for table in ("runs", "layers"):
        header = a["exports"][table].splitlines()[0].split(",")
        assert "achieved_density" in header and "final_density" not in header
