"""`granet sweep` refuses what `granet run` refuses before its first write, and never retries
granet's own (deterministic) errors raised during training: such a trial is recorded failed after
exactly one attempt. Each Ray test runs `granet sweep` in a subprocess with its own Ray instance."""

import re
from pathlib import Path

import pytest

from granet_cli.sweep import plan_sweep, preflight

from ..conftest import granet_sweep, rows


def test_preflight_says_each_distinct_problem_once_and_names_its_points():
    """Seeds share a configuration (checked once); two densities too low for the first layer are
    two problems, each naming its point; the density that fits is no problem."""
    plan = plan_sweep(None, None, methods="granet_uniform", densities="0.1,0.00001,0.00002", seeds="0,1")
    configs = preflight.distinct(plan.points, plan.run_spec)
    assert len(configs) == 3
    lines = preflight.problems(configs)
    assert len(lines) == 2, lines
    assert lines[0].startswith("granet_uniform d=1e-05 seed=0: sparsity.final_density: density 1e-05 leaves layer")
    assert lines[1].startswith("granet_uniform d=2e-05 seed=0: sparsity.final_density: density 2e-05 leaves layer")


@pytest.mark.ray
def test_sweep_without_its_data_exits_2_with_one_line_and_writes_nothing(tmp_path):
    missing = tmp_path / "no-cifar"
    r = granet_sweep(
        tmp_path,
        *("--methods", "granet,rigl", "--densities", "0.1,0.2", "--seeds", "0,1"),
        *("--set", "data.name=cifar10", "--set", f"data.root={missing}", "--set", "model.name=resnet18"),
        *("--set", "optim.epochs=2", "--set", "sparsity.final_prune_epoch=1"),
    )
    assert r.returncode == 2, r.stdout + r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr  # 8 points, 4 configurations, one problem
    assert lines[0].startswith(f"error: data.root: CIFAR-10 not found at {missing}"), r.stderr
    assert "ray:" not in r.stdout and "Traceback" not in r.stdout + r.stderr
    assert not (tmp_path / "r.duckdb").exists() and not (tmp_path / "runs").exists()


@pytest.mark.ray
def test_sparse_core_error_during_training_fails_the_trial_once_never_retried(tmp_path):
    """Pruning to density 1e-4 empties a layer at the first mask update: during epoch 1 (pruning
    done by epoch 1) or during epoch 3 (by epoch 3, after two checkpoints a retry could go on
    from). Each trial is recorded failed after exactly one attempt, though --max-failures is 2."""
    args = [
        *("--methods", "granet", "--densities", "0.0001", "--grid", "sparsity.final_prune_epoch=1,3"),
        *("--set", "optim.epochs=4", "--set", "sparsity.final_prune_epoch=3", "--set", "sparsity.update_frequency=10"),
        *("--max-failures", "2"),
    ]
    r = granet_sweep(tmp_path, *args)
    assert r.returncode == 1, r.stdout + r.stderr
    out = " ".join(r.stdout.split())
    assert "retrying" not in out and "Traceback" not in r.stdout + r.stderr, r.stdout
    db = tmp_path / "r.duckdb"
    got = rows(
        db,
        "select r.status, r.attempts, r.error, count(e.epoch) from runs r left join epochs e using (run_id) "
        "group by all order by count(e.epoch)",
    )
    assert [(s, a, n) for s, a, _, n in got] == [("failed", 1, 0), ("failed", 1, 2)], got
    assert re.search(r"^SparsityError: pruning at step \d+: .*\(during epoch 1 .*not retried\)$", got[0][2])
    assert re.search(r"^SparsityError: pruning at step \d+: .*\(during epoch 3 .*not retried\)$", got[1][2])
    # the local Ray instance is gone with its session folder; its logs were kept, and said where
    kept = re.search(r"Ray's logs of this sweep: (\S+)", out)
    assert kept and Path(kept.group(1)).parent == tmp_path / "runs" / "ray-logs", out
    assert (Path(kept.group(1)) / "raylet.out").is_file()
    assert not (Path("/tmp/ray") / Path(kept.group(1)).name).exists()
    # Tune saw no error at all (it writes error.txt for every failed attempt)
    assert not list((tmp_path / "runs" / "ray").rglob("error.txt"))
    assert rows(db, "select count(*) from sweeps") == [(1,)]
    plan = plan_sweep(
        None,
        ["optim.epochs=4", "sparsity.final_prune_epoch=3", "sparsity.update_frequency=10"],
        methods="granet",
        densities="0.0001",
        grid=["sparsity.final_prune_epoch=1,3"],
    )
    assert sorted(h for (h,) in rows(db, "select spec_hash from runs")) == sorted(p.spec_hash for p in plan.points)
