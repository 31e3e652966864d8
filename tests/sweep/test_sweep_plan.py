"""Sweep planning without Ray: `--grid` / `grid:` axes, labels and trial names, the sweep's identity
(a name reused for another grid is refused), relative paths, the largest-node check, and finding
the checkpoints an earlier invocation left in storage."""

import json

import pytest
import yaml

from granet_cli.spec import SpecError
from granet_cli.store import Store
from granet_cli.sweep import MARKER, SweepError, check_feasible, find_checkpoints, plan_sweep, resolve_paths

from ..conftest import QUICKSTART, ROOT, rows

SMALL = ["optim.epochs=2", "sparsity.final_prune_epoch=1"]


def test_grid_flags_multiply_the_grid_and_label_the_points():
    plan = plan_sweep(
        None,
        SMALL,
        methods="granet,rigl",
        densities="0.1",
        seeds="0,1",
        grid=["optim.lr=0.05,0.1", "optim.milestones=[0.5,0.75],[0.25]"],
    )
    assert len(plan.points) == 2 * 1 * 2 * 2 * 2
    lrs = sorted({p.spec.optim.lr for p in plan.points})
    assert lrs == [0.05, 0.1]
    assert sorted({tuple(p.spec.optim.milestones) for p in plan.points}) == [(0.25,), (0.5, 0.75)]
    p = next(
        p
        for p in plan.points
        if p.method == "rigl" and p.seed == 1 and p.spec.optim.lr == 0.1 and p.spec.optim.milestones == [0.25]
    )
    assert p.label == "rigl d=0.1 seed=1 lr=0.1 milestones=0.25"
    assert p.trial_name == "rigl_d0.1_s1_lr0.1_milestones0.25"
    assert len({pt.spec_hash for pt in plan.points}) == len(plan.points)
    # the plain sweep has other points, hence another default name and id
    plain = plan_sweep(None, SMALL, methods="granet,rigl", densities="0.1", seeds="0,1")
    assert plain.name != plan.name and plain.sweep_id != plan.sweep_id
    # ... and the grid's order does not matter
    again = plan_sweep(
        None,
        SMALL,
        methods="granet,rigl",
        densities="0.1",
        seeds="0,1",
        grid=["optim.milestones=[0.25],[0.5,0.75]", "optim.lr=0.1,0.05"],
    )
    assert (again.name, again.sweep_id, again.identity) == (plan.name, plan.sweep_id, plan.identity)


def test_long_trial_names_are_cut_and_stay_unique_and_filesystem_safe():
    plan = plan_sweep(
        None,
        SMALL,
        methods="granet",
        densities="0.1",
        grid=[
            "data.batch_size=16,32",
            "optim.weight_decay=0.0001,0.0005",
            "optim.momentum=0.85,0.9",
            "sparsity.update_frequency=10,20",
        ],
    )
    names = [p.trial_name for p in plan.points]
    assert len(set(names)) == len(names) == 16
    assert all(len(n) <= 60 and all(c.isalnum() or c in "_.-" for c in n) for n in names), names


def test_yaml_grid_section_and_flag_per_key(tmp_path):
    spec = tmp_path / "s.yaml"
    spec.write_text(
        (ROOT / "experiments" / "quickstart.yaml").read_text() + "sweep:\n  methods: [granet]\n  densities: [0.1]\n"
        "  grid:\n    optim.lr: [0.01, 0.02]\n    sparsity.update_frequency: [10, 20]\n"
    )
    plan = plan_sweep(spec, SMALL)
    assert plan.grid.grid == {"optim.lr": [0.01, 0.02], "sparsity.update_frequency": [10, 20]}
    assert sorted((p.spec.optim.lr, p.spec.sparsity.update_frequency) for p in plan.points) == [
        (0.01, 10),
        (0.01, 20),
        (0.02, 10),
        (0.02, 20),
    ]
    # a --grid flag replaces that key of the file's grid and keeps the others
    flag = plan_sweep(spec, SMALL, grid=["optim.lr=0.3"])
    assert sorted((p.spec.optim.lr, p.spec.sparsity.update_frequency) for p in flag.points) == [(0.3, 10), (0.3, 20)]
    assert plan.grid_record()["grid"] == plan.grid.grid


@pytest.mark.parametrize(
    "flag, expected",
    [
        ("optim.lrr=0.1", "sweep.grid.optim.lrr: unknown spec field"),
        ("optim=0.1", "sweep.grid.optim: a whole section"),
        ("seed=1,2", "sweep.grid.seed: vary it with --seeds"),
        ("sparsity.final_density=0.1", "sweep.grid.sparsity.final_density: vary it with --densities"),
        ("optim.lr", "--grid optim.lr: expected KEY=V1,V2"),
        ("optim.lr=", "--grid optim.lr: needs at least one value"),
        ("optim.lr=-1,0.1", "method=granet density=0.1 seed=0 optim.lr=-1: optim.lr:"),
    ],
)
def test_bad_grid_is_one_line_per_problem(flag, expected):
    with pytest.raises(SpecError) as e:
        plan_sweep(None, SMALL, methods="granet", densities="0.1", grid=[flag])
    assert len(e.value.problems) == 1 and e.value.problems[0].startswith(expected), e.value.problems


def test_bad_grid_in_the_cli_exits_2_and_writes_nothing(cli, tmp_path):
    db = tmp_path / "r.duckdb"
    r = cli(
        "sweep",
        "--grid",
        "optim.lr=abc",
        "--methods",
        "granet",
        "--densities",
        "0.1",
        "--db",
        db,
        "--runs-dir",
        tmp_path / "runs",
    )
    assert r.exit_code == 2
    assert r.stderr.startswith("error: method=granet density=0.1 seed=0 optim.lr=abc: optim.lr:"), r.stderr
    assert not db.exists() and not (tmp_path / "runs").exists()
    r = cli("sweep", "--gpus-per-trial", "1.5", "--db", db)
    assert r.exit_code == 2 and "sweep.gpus_per_trial: above 1 a trial takes whole GPUs, got 1.5" in r.stderr


BOTH_NAMES = "are one setting (one is the reference's name): give one"


@pytest.mark.parametrize(
    "flags, file_grid, expected",
    [
        (  # both names as --grid flags, either order
            ["sparsity.prune_rate=0.3", "sparsity.drop_fraction=0.4"],
            None,
            f"--grid sparsity.prune_rate and sparsity.drop_fraction {BOTH_NAMES}",
        ),
        (
            ["sparsity.drop_fraction=0.4", "sparsity.prune_rate=0.3"],
            None,
            f"--grid sparsity.drop_fraction and sparsity.prune_rate {BOTH_NAMES}",
        ),
        (  # both names in the file's grid: section, with an unrelated --grid flag beside it
            ["optim.lr=0.05"],
            {"sparsity.prune_rate": [0.3], "sparsity.drop_fraction": [0.4]},
            "sweep.grid: sparsity.prune_rate: the same field as sparsity.drop_fraction",
        ),
    ],
    ids=["flags", "flags-new-first", "file-and-other-flag"],
)
def test_old_and_new_name_of_one_field_in_a_grid_exit_2_and_write_nothing(cli, tmp_path, flags, file_grid, expected):
    spec = QUICKSTART
    if file_grid is not None:
        data = yaml.safe_load(QUICKSTART.read_text())
        data["sweep"] = {"grid": file_grid}
        spec = tmp_path / "sweep.yaml"
        spec.write_text(yaml.safe_dump(data))
    db, runs = tmp_path / "r.duckdb", tmp_path / "runs"
    grid = [a for f in flags for a in ("--grid", f)]
    r = cli("sweep", spec, *grid, "--methods", "rigl", "--densities", "0.1", "--db", db, "--runs-dir", runs)
    assert r.exit_code == 2, r.output
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], r.stderr
    assert not db.exists() and not runs.exists()


def test_a_name_reused_for_another_grid_is_refused_before_anything_runs(cli, tmp_path):
    db = tmp_path / "r.duckdb"
    first = plan_sweep(None, SMALL, methods="granet", densities="0.1", name="mine")
    with Store(db) as st:  # what a first `granet sweep --name mine ...` recorded
        st.add_sweep(first.sweep_id, first.name, first.grid_record())
    before = rows(db, "select sweep_id, name, grid_json from sweeps")
    for extra in (
        ["--densities", "0.2"],
        ["--densities", "0.1", "--set", "optim.lr=0.2"],
        ["--densities", "0.1", "--grid", "optim.lr=0.05,0.1"],
    ):
        for dry in ([], ["--dry-run"]):
            r = cli(
                "sweep",
                "--methods",
                "granet",
                "--name",
                "mine",
                *extra,
                *dry,
                *sum((["--set", s] for s in SMALL), []),
                "--db",
                db,
                "--runs-dir",
                tmp_path / "runs",
            )
            assert r.exit_code == 2, (extra, r.stdout, r.stderr)
            lines = r.stderr.strip().splitlines()
            assert len(lines) == 1 and "sweep name 'mine' is already used" in lines[0], r.stderr
    assert rows(db, "select sweep_id, name, grid_json from sweeps") == before
    assert rows(db, "select count(*) from runs") == [(0,)] and not (tmp_path / "runs").exists()
    # the same grid under that name is the same sweep
    r = cli(
        "sweep",
        "--methods",
        "granet",
        "--densities",
        "0.1",
        "--name",
        "mine",
        "--dry-run",
        *sum((["--set", s] for s in SMALL), []),
        "--db",
        db,
    )
    assert r.exit_code == 0 and "0 done, 1 to run" in r.stdout


def test_relative_data_root_resolves_against_the_start_directory(tmp_path):
    spec = tmp_path / "c.yaml"
    spec.write_text("data: {name: cifar10, root: data/c10}\nsparsity: {method: rigl}\noptim: {epochs: 1}\n")
    plan = plan_sweep(spec, [], methods="rigl", densities="0.1", cwd=tmp_path / "start")
    (p,) = plan.points
    assert p.spec.data.root == "data/c10"  # what the db keeps: the spec as written (same hash as `granet run`)
    assert plan.run_spec(p).data.root == str(tmp_path / "start" / "data" / "c10")
    assert plan.run_spec(p).spec_hash() != p.spec_hash
    assert plan.grid_record()["cwd"] == str(tmp_path / "start")
    for root in ("/abs/c10", "~/c10", "s3://bucket/c10"):
        s = p.spec.model_copy(update={"data": p.spec.data.model_copy(update={"root": root})})
        assert resolve_paths(s, tmp_path).data.root == root


def _node(ip, cpu, gpu=0, alive=True):
    return {"NodeManagerAddress": ip, "Alive": alive, "Resources": {"CPU": cpu, **({"GPU": gpu} if gpu else {})}}


def test_resources_are_checked_against_the_largest_node_not_the_total():
    two_small = [_node("10.0.0.1", 1), _node("10.0.0.2", 1)]
    check_feasible(two_small, 1, 0)
    with pytest.raises(SweepError) as e:
        check_feasible(two_small, 2, 0)  # 2 CPUs in all, but a trial runs on one node
    msg = str(e.value)
    assert msg.startswith("--cpus-per-trial 2 --gpus-per-trial 0: no node") and "has 1 CPUs and 0 GPUs" in msg
    assert "2 CPUs and 0 GPUs in all" in msg and "\n" not in msg
    gpus = [_node("10.0.0.1", 32), _node("10.0.0.2", 8, gpu=4), _node("10.0.0.3", 64, gpu=8, alive=False)]
    check_feasible(gpus, 8, 0.25)
    check_feasible(gpus, 4, 4)
    with pytest.raises(SweepError, match=r"largest node \(10\.0\.0\.2\) has 8 CPUs and 4 GPUs"):
        check_feasible(gpus, 4, 8)  # the 8-GPU node is dead
    with pytest.raises(SweepError, match="largest node"):
        check_feasible(gpus, 16, 1)  # a node with 16 CPUs has no GPU; the GPU node has 8 CPUs


def test_find_checkpoints_picks_the_highest_epoch_per_point(tmp_path):
    exp = tmp_path / "store" / "exp"

    def ck(trial, n, spec_hash, epoch, marker=True):
        d = exp / trial / f"checkpoint_{n:06d}"
        d.mkdir(parents=True)
        if marker:
            (d / MARKER).write_text(json.dumps({"spec_hash": spec_hash, "epoch": epoch, "run_id": f"r-{trial}"}))

    ck("a_00000", 0, "h1", 3)
    ck("a_00000", 1, "h1", 4)
    ck("a_00007", 0, "h1", 2)  # a later attempt that got less far
    ck("b_00001", 0, "h2", 1)
    ck("b_00001", 1, "h2", 2, marker=False)  # being written
    (exp / "experiment_state.json").write_text("{}")
    found = find_checkpoints(str(tmp_path / "store"), "exp")
    assert {h: (c["epoch"], c["path"]) for h, c in found.items()} == {
        "h1": (4, str(exp / "a_00000" / "checkpoint_000001")),
        "h2": (1, str(exp / "b_00001" / "checkpoint_000000")),
    }
    assert found["h1"]["run_id"] == "r-a_00000"
    assert find_checkpoints(str(tmp_path / "nothing"), "exp") == {}


def test_interrupted_sweep_hint_is_a_complete_pasteable_command(cli, tmp_path):
    """The resume hint printed on Ctrl-C/SIGTERM, pasted into a shell, is the same sweep."""
    import shlex

    from granet_cli.cli.sweep import sweep_command

    db, runs = tmp_path / "with space" / "r.duckdb", tmp_path / "runs dir"
    hint = sweep_command(
        QUICKSTART,
        ["optim.epochs=2", "sparsity.final_prune_epoch=1"],
        db,
        runs,
        name="my-sweep",
        methods="granet",
        densities="0.1,0.2",
        seeds="0",
        grid=["optim.lr=0.05,0.1"],
        address=None,
        storage_path=None,
        max_failures=1,
    )
    argv = shlex.split(hint)
    assert argv[:2] == ["granet", "sweep"] and str(db) in argv and str(runs) in argv
    result = cli(*argv[1:], "--dry-run")
    assert result.exit_code == 0, result.output
    assert "0 done, 4 to run" in result.output  # 2 densities x 2 learning rates, the same grid
