"""`granet results` (DuckDB COPY to CSV / Parquet / JSON) and `granet sql`, read-only."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
import time
from datetime import datetime

import duckdb
import pytest

from granet_cli.store import Store

from .conftest import rows

RUN_ORDER = "order by started_at nulls last, run_id"


@pytest.fixture
def db(tmp_path):
    """Three runs written through the store: two of sweep `s1` (completed), one alone (failed)."""
    path = tmp_path / "r.duckdb"
    with Store(path) as st:
        st.add_sweep("sw-1", "s1", {"methods": ["granet", "rigl"]}, created_at=datetime(2026, 1, 2, 3, 4, 5, 678901))
        for i, (rid, sweep, method, acc) in enumerate(
            [("a-1", "sw-1", "granet", 0.9123456789012345), ("b-2", "sw-1", "rigl", 0.875), ("c-3", None, "gmp", None)]
        ):
            st.start_run(
                {
                    "run_id": rid,
                    "sweep_id": sweep,
                    "spec_hash": f"h{i}",
                    "method": method,
                    "model": "mlp",
                    "dataset": "digits",
                    "target_density": 0.1,
                    "seed": i,
                    "spec_json": json.dumps({"method": method, "note": 'a, "quoted" text\nover two lines'}),
                    "started_at": datetime(2026, 1, 2, 3, 4, 10 + i, 123456),
                }
            )
            for epoch in (1, 2):
                st.add_epoch(
                    rid,
                    {
                        "epoch": epoch,
                        "step": 22 * epoch,
                        "lr": 0.05,
                        "train_loss": 1.0 / epoch,
                        "train_acc": 0.5,
                        "test_loss": 0.7,
                        "test_acc": 0.6 + i / 100 + epoch / 1000,
                        "density": 0.1,
                        "itop_rate": 0.2,
                        "seconds": 0.5,
                    },
                )
            if acc is not None:
                st.finish_run(
                    rid,
                    {"final_test_acc": acc, "best_test_acc": acc, "achieved_density": 0.1},
                    [{"name": "1.weight", "shape": [256, 64], "numel": 16384, "achieved_density": 0.1}],
                )
            else:
                st.fail_run(rid, "failed", "boom, with a comma")
    return path


def _columns(db, table):
    return [
        r[0]
        for r in rows(
            db,
            "select column_name from information_schema.columns where table_name = ? order by ordinal_position",
            table,
        )
    ]


def _one_error_line(result) -> str:
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert result.exit_code == 2, result.output
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def _same(csv_value: str, value):
    """A CSV cell against the db's typed value."""
    if value is None:
        return csv_value == ""
    if isinstance(value, bool):
        return csv_value == str(value).lower()
    if isinstance(value, float):
        return float(csv_value) == value
    if isinstance(value, int):
        return int(csv_value) == value
    if isinstance(value, datetime):
        return datetime.fromisoformat(csv_value) == value
    return csv_value == str(value)


def test_csv_round_trip_of_the_runs_table(db, cli, tmp_path):
    out = tmp_path / "runs.csv"
    before = db.read_bytes()
    result = cli("results", "--db", db, "--format", "csv", "--out", out)
    assert result.exit_code == 0, result.output
    assert "wrote 3 runs rows" in result.stdout
    with out.open(newline="") as f:
        reader = csv.reader(f)
        header, *body = list(reader)
    expected = rows(db, f"select * from runs {RUN_ORDER}")
    assert header == _columns(db, "runs")
    assert len(body) == len(expected) == 3
    for got, want in zip(body, expected):
        for col, g, w in zip(header, got, want):
            assert _same(g, w), (col, g, w)
    assert db.read_bytes() == before  # read-only: the file is untouched


def test_parquet_round_trip_is_exact(db, cli, tmp_path):
    out = tmp_path / "runs.parquet"
    result = cli("results", "--db", db, "--format", "parquet", "--out", out)
    assert result.exit_code == 0, result.output
    con = duckdb.connect()
    got = con.execute(f"select * from read_parquet(?) {RUN_ORDER}", [str(out)]).fetchall()
    names = [d[0] for d in con.description]
    assert names == _columns(db, "runs")
    assert got == rows(db, f"select * from runs {RUN_ORDER}")


def test_json_to_stdout_and_filters(db, cli):
    result = cli("results", "--db", db, "--format", "json", "--sweep", "s1")
    assert result.exit_code == 0, result.output
    got = json.loads(result.stdout)
    assert (
        [r["run_id"] for r in got]
        == [r[0] for r in rows(db, f"select run_id from runs where sweep_id = 'sw-1' {RUN_ORDER}")]
        == ["a-1", "b-2"]
    )
    assert got[0]["final_test_acc"] == 0.9123456789012345
    # epochs of one sweep, as CSV on stdout
    result = cli("results", "--db", db, "--table", "epochs", "--sweep", "sw-1")
    assert result.exit_code == 0, result.output
    body = list(csv.DictReader(io.StringIO(result.stdout)))
    want = rows(
        db,
        "select run_id, epoch, test_acc from epochs where run_id in "
        "(select run_id from runs where sweep_id = 'sw-1') order by run_id, epoch",
    )
    assert [(r["run_id"], int(r["epoch"]), float(r["test_acc"])) for r in body] == want and len(want) == 4
    result = cli("results", "--db", db, "--status", "failed", "--format", "json")
    assert [r["run_id"] for r in json.loads(result.stdout)] == ["c-3"]


def test_results_bad_input(db, cli, tmp_path):
    assert "--out" in _one_error_line(cli("results", "--db", db, "--format", "parquet"))
    assert "no such sweep" in _one_error_line(cli("results", "--db", db, "--sweep", "nope"))
    assert "not found" in _one_error_line(cli("results", "--db", tmp_path / "missing.duckdb"))
    assert "'xml'" in _one_error_line(cli("results", "--db", db, "--format", "xml"))
    assert "does not exist" in _one_error_line(cli("results", "--db", db, "--out", tmp_path / "no" / "f.csv"))
    assert not (tmp_path / "missing.duckdb").exists()


def test_sql_prints_a_table_and_csv(db, cli):
    query = "select method, count(*) as n, avg(final_test_acc) as acc from runs group by all order by method"
    result = cli("sql", query, "--db", db)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert any("method" in ln and "acc" in ln for ln in lines)
    for method, n, acc in rows(db, query):
        row = next(ln for ln in lines if f" {method} " in ln)
        assert str(n) in row and (acc is None or f"{acc:.6g}" in row)
    assert lines[-1] == "3 rows"
    result = cli("sql", query, "--db", db, "--csv")
    assert result.exit_code == 0, result.output
    header, *body = list(csv.reader(io.StringIO(result.stdout)))
    assert header == ["method", "n", "acc"]
    assert [(m, int(n), float(a) if a else None) for m, n, a in body] == rows(db, query)


def test_sql_is_read_only(db, cli):
    before = rows(db, "select count(*) from runs")
    line = _one_error_line(cli("sql", "delete from runs", "--db", db))
    assert "read-only" in line
    assert rows(db, "select count(*) from runs") == before
    assert _one_error_line(cli("sql", "selec nothing", "--db", db)).startswith("error: sql: ")


def test_sql_works_while_another_process_holds_the_db(db, cli):
    """A sweep holding the write lock: the read-only store reads a snapshot copy."""
    code = f"import duckdb, time\ncon = duckdb.connect({str(db)!r})\nprint('ready', flush=True)\ntime.sleep(60)"
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "ready"
        with pytest.raises(duckdb.Error):  # really locked
            duckdb.connect(str(db), read_only=True).close()
        t = time.monotonic()
        result = cli("sql", "select count(*) as n from runs", "--db", db, "--csv")
        assert result.exit_code == 0, result.output
        assert result.stdout.splitlines() == ["n", "3"]
        assert time.monotonic() - t < 30
    finally:
        holder.kill()
        holder.wait()
