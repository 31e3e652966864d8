"""`granet tune` end to end on the quickstart: Ray Tune's random search and Optuna with ASHA on the
validation split, the choice recomputed from the db rows (validation accuracy only), trials ASHA
stopped early, the seeds sweep of the chosen values, an instant rerun, and bad input."""

import json
import re
import signal
import subprocess
import sys
import time

import pytest

from ..conftest import QUICKSTART, ROOT, rows

EPOCHS = 4
FEW = ["--set", f"optim.epochs={EPOCHS}", "--set", "sparsity.final_prune_epoch=2"]
LR = "optim.lr=loguniform:0.01:0.3"


def granet_tune(tmp_path, *args, timeout=300):
    cmd = [sys.executable, "-m", "granet_cli.cli", "tune", str(QUICKSTART), *map(str, args), *FEW]
    cmd += ["--db", str(tmp_path / "r.duckdb"), "--runs-dir", str(tmp_path / "runs")]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def tuning_trials(db, name):
    """run_id -> (method, target density, status, lr, epochs rows, val_acc of the last epoch), from SQL."""
    found = rows(
        db,
        """
        SELECT r.run_id, r.method, r.target_density, r.status, r.spec_json,
               (SELECT count(*) FROM epochs e WHERE e.run_id = r.run_id),
               (SELECT e.val_acc FROM epochs e WHERE e.run_id = r.run_id ORDER BY e.epoch DESC LIMIT 1)
        FROM runs r JOIN sweeps s USING (sweep_id) WHERE s.name = ? ORDER BY r.started_at, r.run_id
        """,
        f"{name}:tuning",
    )
    return {
        r[0]: (r[1], r[2], r[3], json.loads(r[4])["optim"]["lr"], r[5], r[6])
        for r in found  # noqa: B035
    }


def expected_choice(trials):
    """(method, density) -> lr of the completed trial with the highest final validation accuracy."""
    best: dict = {}
    for method, density, status, lr, _n, val in trials.values():
        if status == "completed" and val is not None:
            cur = best.get((method, density))
            if cur is None or val > cur[1]:
                best[(method, density)] = (lr, val)
    return {k: v[0] for k, v in best.items()}


def seeds_runs(db, name):
    found = rows(
        db,
        "SELECT r.method, r.target_density, r.seed, r.status, r.spec_json FROM runs r "
        "JOIN sweeps s USING (sweep_id) WHERE s.name = ?",
        name,
    )
    return [(m, d, seed, st, json.loads(spec)) for m, d, seed, st, spec in found]


@pytest.mark.slow
@pytest.mark.ray
def test_random_search_with_asha_chooses_on_validation_and_reruns_over_seeds(tmp_path):
    db = tmp_path / "r.duckdb"
    args = ["--methods", "rigl", "--densities", "0.05,0.1", "--param", LR, "--samples", 4, "--seeds", "0,1"]
    proc = granet_tune(tmp_path, *args, "--name", "rs")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "validation split of 0.1" in proc.stdout

    trials = tuning_trials(db, "rs")
    assert len(trials) == 8  # 4 samples x 2 cells
    statuses = [t[2] for t in trials.values()]
    assert set(statuses) <= {"completed", "stopped"}, statuses
    for _m, _d, status, _lr, n_epochs, val in trials.values():
        assert val is not None  # every epoch of a tuning trial measured the validation split
        if status == "completed":
            assert n_epochs == EPOCHS
        else:  # ASHA ended it at a rung before the last epoch
            assert n_epochs < EPOCHS
    assert "stopped" in statuses  # 2 trials at once, rungs at epochs 1 and 2: ASHA stops some

    choice = expected_choice(trials)
    assert set(choice) == {("rigl", 0.05), ("rigl", 0.1)}
    seeds = seeds_runs(db, "rs")
    assert sorted((m, d, s) for m, d, s, _st, _sp in seeds) == [
        ("rigl", 0.05, 0),
        ("rigl", 0.05, 1),
        ("rigl", 0.1, 0),
        ("rigl", 0.1, 1),
    ]
    for m, d, _seed, status, spec in seeds:
        assert status == "completed"
        assert spec["optim"]["lr"] == pytest.approx(choice[(m, d)])
        assert spec["data"]["val_fraction"] == 0.1
    stored = json.loads(rows(db, "SELECT grid_json FROM sweeps WHERE name = 'rs:tuning'")[0][0])["tune"]
    assert stored["search"] == "random" and stored["samples"] == 4
    assert {k: v["values"][LR.split("=")[0]] for k, v in stored["chosen"].items()} == pytest.approx(
        {f"rigl d={d:g}": lr for (_m, d), lr in choice.items()}
    )

    check_report_tuning_section(tmp_path, db, trials, choice)
    # --checkpoint-every's default (60 s) with trials of about a second: one Tune checkpoint per
    # trial, at its last epoch (the marker beside it says which epoch)
    markers = list((tmp_path / "runs" / "ray").glob("rs-sw-*/*/checkpoint_*/granet_checkpoint.json"))
    assert sorted(json.loads(m.read_text())["epoch"] for m in markers) == [EPOCHS] * 4

    # the same command again: nothing runs, nothing is added
    start = time.monotonic()
    again = granet_tune(tmp_path, *args, "--name", "rs")
    assert again.returncode == 0, again.stdout + again.stderr
    assert time.monotonic() - start < 15
    assert len(tuning_trials(db, "rs")) == 8 and len(seeds_runs(db, "rs")) == 4


def check_report_tuning_section(tmp_path, db, trials, choice):
    """`granet report --sweep rs`: its tuning section says what the rows say; a report of all runs
    leaves the tuning trials out."""
    from granet_cli.report import build_report, report_json
    from granet_cli.report.tuning import tuning_section

    section = tuning_section(db, "rs")
    assert section is not None and section.samples == 4 and section.search == "random"
    assert [k for k, _ in section.space] == ["optim.lr"]
    by_cell = {c["cell"]: c for c in section.cells}
    for (m, d), lr in choice.items():
        cell = by_cell[f"{m} d={d:g}"]
        assert cell["values"] == f"optim.lr={lr:.4g}"
        statuses = [t[2] for t in trials.values() if (t[0], t[1]) == (m, d)]
        assert cell["counts"] == ", ".join(f"{statuses.count(s)} {s}" for s in sorted(set(statuses)))
    assert section.svg is not None and "<svg" in section.svg
    result = build_report(db, sweep="rs", out_dir=tmp_path / "reports", fmt="both")
    assert "## Tuning" in result.md_path.read_text() and "<h2>Tuning</h2>" in result.html_path.read_text()
    counts = report_json(db)["counts"]
    assert counts == {"completed": 4}  # the seeds sweep's runs only: no tuning trial is a result


@pytest.mark.slow
@pytest.mark.ray
def test_optuna_search_resumes_after_kill_9_without_repeating_trials(tmp_path):
    pytest.importorskip("optuna")
    db = tmp_path / "r.duckdb"
    args = ["--methods", "gmp", "--densities", "0.1", "--param", LR, "--param", "optim.momentum=choice:0.8,0.9"]
    args += ["--samples", 5, "--search", "optuna", "--name", "op"]
    cmd = [sys.executable, "-m", "granet_cli.cli", "tune", str(QUICKSTART), *map(str, args), *FEW]
    cmd += ["--db", str(db), "--runs-dir", str(tmp_path / "runs")]
    log = tmp_path / "first.txt"
    with open(log, "w") as out:
        driver = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and driver.poll() is None:
            if len(re.findall(r"(completed|stopped) after epoch", log.read_text())) >= 2:
                break
            time.sleep(0.2)
        assert driver.poll() is None, log.read_text()  # still searching: killed mid-search
        driver.kill()  # kill -9 of the driver
        driver.wait(timeout=30)
    time.sleep(2)  # its Ray instance's watchdog takes the workers down
    before = {r: t for r, t in tuning_trials(db, "op").items() if t[2] in ("completed", "stopped")}
    assert len(before) >= 2

    proc = granet_tune(tmp_path, *args)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    trials = tuning_trials(db, "op")
    finished = {r: t for r, t in trials.items() if t[2] in ("completed", "stopped")}
    assert len(finished) == 5  # the samples asked for: those done before the kill were not run again
    assert {r: finished[r] for r in before} == before  # kept as they were (statuses, epochs, val_acc)
    assert {t[2] for r, t in trials.items() if r not in finished} <= {"interrupted"}  # killed mid-trial

    choice = expected_choice(trials)
    [(m, d, seed, status, spec)] = seeds_runs(db, "op")
    assert (m, d, seed, status) == ("gmp", 0.1, 0, "completed")
    assert spec["optim"]["lr"] == pytest.approx(choice[("gmp", 0.1)])
    chosen_run = next(r for r, t in finished.items() if t[3] == pytest.approx(choice[("gmp", 0.1)]))
    chosen_spec = json.loads(rows(db, "SELECT spec_json FROM runs WHERE run_id = ?", chosen_run)[0][0])
    assert spec["optim"]["momentum"] == chosen_spec["optim"]["momentum"]


@pytest.mark.slow
@pytest.mark.ray
def test_grid_search_stopped_by_sigterm_resumes_and_runs_every_choice_to_the_end(tmp_path):
    """SIGTERM (a scheduler's kill) once one grid point has finished: exit 143 with the command that
    resumes, no row left `running`; that command then runs only the points not finished, each to
    its last epoch, and the seeds sweep takes the best of all of them."""
    db = tmp_path / "r.duckdb"
    choices = (0.02, 0.05, 0.2)
    args = ["--methods", "set", "--densities", "0.1", "--param", f"optim.lr=choice:{','.join(map(str, choices))}"]
    args += ["--search", "grid", "--scheduler", "none", "--name", "gr", "--max-concurrent", 1]
    cmd = [sys.executable, "-m", "granet_cli.cli", "tune", str(QUICKSTART), *map(str, args), *FEW]
    cmd += ["--set", "optim.epochs=12", "--db", str(db), "--runs-dir", str(tmp_path / "runs")]
    log = tmp_path / "first.txt"
    with open(log, "w") as out:
        driver = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and driver.poll() is None and "completed after epoch" not in log.read_text():
            time.sleep(0.2)
        assert driver.poll() is None, log.read_text()  # still searching
        driver.send_signal(signal.SIGTERM)
        assert driver.wait(timeout=60) == 143, log.read_text()
    said = " ".join(log.read_text().split())
    assert "terminated (SIGTERM); resume (finished trials are kept) with: granet tune" in said, said
    before = tuning_trials(db, "gr")
    statuses = sorted(t[2] for t in before.values())
    assert "completed" in statuses and "running" not in statuses, statuses
    assert set(statuses) <= {"completed", "interrupted"}
    done_before = {r: t for r, t in before.items() if t[2] == "completed"}

    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    trials = tuning_trials(db, "gr")
    completed = {r: t for r, t in trials.items() if t[2] == "completed"}
    assert sorted(t[3] for t in completed.values()) == list(choices)  # each grid point once, none twice
    assert all(t[4] == 12 for t in completed.values())  # to the last epoch
    assert {r: completed[r] for r in done_before} == done_before  # the finished one was not run again
    [(_m, _d, _seed, status, spec)] = seeds_runs(db, "gr")
    assert status == "completed" and spec["optim"]["lr"] == expected_choice(trials)[("set", 0.1)]


@pytest.mark.parametrize(
    "param, extra, says",
    [
        ("optim.lrr=uniform:0.01:0.1", [], "optim.lrr: unknown field"),
        ("optim.lr=uniform:0.01", [], "uniform needs two numbers"),
        ("optim.lr=gauss:0:1", [], "expected FIELD=DIST"),
        ("optim.momentum=uniform:0.5:1.5", [], "at 1.5: optim.momentum: Input should be less than 1"),
        ("sparsity.drop_fraction=uniform:0.1:1.5", [], "sparsity.drop_fraction"),
        ("optim.weight_decay=uniform:-1:0.1", [], "optim.weight_decay=uniform:-1:0.1: at -1.0"),  # no emoji
        ("optim.lr=uniform:0.01:0.1", ["--samples", "0"], "--samples: at least 1"),
        ("optim.lr=uniform:0.01:0.1", ["--search", "grid"], "--search grid: every --param must be a choice"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(cli, tmp_path, param, extra, says):
    db = tmp_path / "r.duckdb"
    result = cli("tune", QUICKSTART, "--param", param, *extra, "--db", db, "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and says in lines[0], result.output
    assert not db.exists() and not (tmp_path / "runs").exists()


def test_optuna_missing_is_one_line_exit_2(cli, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "optuna", None)  # import optuna raises ImportError
    db = tmp_path / "r.duckdb"
    result = cli("tune", QUICKSTART, "--param", "optim.lr=uniform:0.01:0.1", "--search", "optuna", "--db", db)
    assert result.exit_code == 2, result.output
    assert result.output.strip().splitlines() == [
        "error: --search optuna needs the optuna package: pip install 'granet[tune]'"
    ]
    assert not db.exists()


@pytest.mark.parametrize("search", ["random", "grid"])
def test_failed_trials_use_their_sample_and_only_interrupted_ones_are_drawn_again(search):
    """What a resumed (or rerun) tune still has to run: every trial that ended, failed included,
    used one sample, as in a search that was never interrupted; a trial a killed driver left
    `interrupted` did not. Grid search: the points that ended are not run again."""
    from granet_cli.sweep.tune import CellResult, plan_tune
    from granet_cli.sweep.tune_run import _grid_todo, _todo

    lrs = [0.01, 0.02, 0.05, 0.1, 0.2]
    tp = plan_tune(
        QUICKSTART,
        None,
        params=[f"optim.lr=choice:{','.join(map(str, lrs))}"],
        samples=len(lrs),
        search=search,
        scheduler="asha",
        methods="gmp",
        densities="0.1",
    )
    statuses = ["completed", "stopped", "failed", "diverged", "interrupted"]
    trials = [{"status": s, "params": {"optim.lr": lr}} for s, lr in zip(statuses, lrs, strict=True)]
    res = CellResult(tp.cells[0], trials=trials)
    assert _todo(tp, res) == 1  # 5 samples, 4 of them ended
    if search == "grid":
        assert _grid_todo(tp, res) == [{"optim.lr": 0.2}]  # the interrupted point's value, only
