import os
from pathlib import Path

import duckdb
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
