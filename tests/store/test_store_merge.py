"""`granet db merge` / Store.merge_from: jobs that each wrote their own --db, copied into one file."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import duckdb

from granet_cli.store import Store

from ..conftest import rows
from .test_store_schema import make_legacy_db, sha

T0 = datetime(2024, 5, 1, 12, 0, 0)


def make_v2_db(path: Path, run_ids: list[str], *, acc: float, epochs: int = 4) -> None:
    with Store(path) as st:
        st.add_sweep("sw-new", "new grid", {"seed": [0]}, created_at=T0)
        for rid in run_ids:
            st.start_run(
                dict(
                    run_id=rid,
                    sweep_id="sw-new",
                    spec_hash="h-" + rid,
                    config_hash="c",
                    method="rigl",
                    seed=0,
                    started_at=T0,
                )
            )
            for e in range(epochs):
                st.add_epoch(
                    rid, dict(epoch=e, test_acc=acc, val_acc=acc - 0.01), mask_updates=[dict(step=e, density=0.5)]
                )
            st.finish_run(
                rid,
                dict(final_test_acc=acc, overall_density=0.3),
                [dict(name="fc.weight", shape=[2, 2], numel=4, achieved_density=0.5)],
            )


def test_merge_two_job_dbs(tmp_path: Path, cli):
    old = tmp_path / "job-old.duckdb"  # a v0 file: 2 completed runs of 3 epochs + 1 failed run
    make_legacy_db(old, 0)
    new = tmp_path / "job-new.duckdb"
    make_v2_db(new, ["a", "b"], acc=0.7)
    dest = tmp_path / "all.duckdb"
    make_v2_db(dest, ["b"], acc=0.2, epochs=1)  # run "b" is already here, with other numbers
    digests = (sha(old), sha(new))

    res = cli("db", "merge", old, new, "--db", dest)
    assert res.exit_code == 0, res.output
    assert "3 run(s) added (6 epochs), 0 already" in res.output
    assert "1 run(s) added (4 epochs), 1 already" in res.output
    assert (sha(old), sha(new)) == digests  # sources only read
    assert rows(dest, "SELECT run_id, status, final_test_acc FROM runs ORDER BY run_id") == [
        ("a", "completed", 0.7),
        ("b", "completed", 0.2),
        ("old-0", "completed", 0.8),
        ("old-1", "completed", 0.81),
        ("old-failed", "failed", None),
    ]
    assert rows(dest, "SELECT run_id, count(*) FROM epochs GROUP BY run_id ORDER BY run_id") == [
        ("a", 4),
        ("b", 1),
        ("old-0", 3),
        ("old-1", 3),
    ]
    assert rows(dest, "SELECT run_id, count(*) FROM mask_updates GROUP BY run_id ORDER BY run_id") == [
        ("a", 4),
        ("b", 1),
        ("old-0", 1),
        ("old-1", 1),
    ]
    assert rows(dest, "SELECT count(*) FROM layers") == [(4,)]
    # what the v0 file never had arrives empty; attempts as 1
    assert rows(dest, "SELECT attempts, config_hash, overall_density FROM runs WHERE run_id = 'old-0'") == [
        (1, None, None)
    ]
    assert rows(dest, "SELECT val_acc FROM epochs WHERE run_id = 'a' AND epoch = 0") == [(0.69,)]
    assert rows(dest, "SELECT sweep_id FROM sweeps ORDER BY sweep_id") == [("sw-new",), ("sw-old",)]
    # merging again adds nothing
    counts = "SELECT (SELECT count(*) FROM runs), (SELECT count(*) FROM epochs), (SELECT count(*) FROM sweeps)"
    assert rows(dest, counts) == [(5, 11, 2)]
    res = cli("db", "merge", old, new, "--db", dest)
    assert res.exit_code == 0 and "0 run(s) added" in res.output
    assert rows(dest, counts) == [(5, 11, 2)]


def test_merge_bad_sources_write_nothing(tmp_path: Path, cli):
    good = tmp_path / "good.duckdb"
    make_v2_db(good, ["a"], acc=0.5)
    dest = tmp_path / "dest.duckdb"
    res = cli("db", "merge", good, tmp_path / "missing.duckdb", "--db", dest)
    assert res.exit_code == 2 and "missing.duckdb: not found" in res.output
    assert res.output.count("\n") == 1 and not dest.exists()
    foreign = tmp_path / "theirs.duckdb"
    con = duckdb.connect(str(foreign))
    con.execute("CREATE TABLE runs (id INTEGER)")
    con.close()
    make_v2_db(dest, ["z"], acc=0.1)
    digest = sha(dest)
    res = cli("db", "merge", good, foreign, "--db", dest)
    assert res.exit_code == 2 and "not a granet results db" in res.output
    res = cli("db", "merge", dest, "--db", dest)
    assert res.exit_code == 2 and "destination" in res.output
    assert sha(dest) == digest
