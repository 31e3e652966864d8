"""`granet validate` and `granet plan` as a user runs them."""

import json
import math

from granet_cli.sparse.density import erk_densities

from ..conftest import QUICKSTART, ROOT


def test_validate_prints_normalised_spec(cli):
    result = cli("validate", QUICKSTART)
    assert result.exit_code == 0
    assert "pruning_schedule: global" in result.stdout and "spec_hash" in result.stdout


def test_validate_broken_spec_exits_2_with_field_path(cli, tmp_path):
    spec = tmp_path / "broken.yaml"
    spec.write_text(QUICKSTART.read_text().replace("final_density: 0.1", "final_density: 1.5"))
    result = cli("validate", spec)
    assert result.exit_code == 2
    assert "sparsity.final_density: must be in (0, 1], got 1.5" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_every_recipe_validates(cli):
    recipes = sorted((ROOT / "experiments").glob("*.yaml"))
    assert len(recipes) >= 14
    for recipe in recipes:
        result = cli("validate", recipe)
        assert result.exit_code == 0, (recipe, result.stderr)


def test_plan_json_resnet50_granet(cli):
    spec = ROOT / "experiments" / "cifar10_resnet50_granet.yaml"
    result = cli("plan", spec, "--set", "sparsity.final_density=0.05", "--json")
    assert result.exit_code == 0, result.stderr
    plan = json.loads(result.stdout)
    assert set(plan) == {"model", "total_params", "density", "layers", "schedule"}
    assert plan["model"] == "resnet50"
    layers = plan["layers"]
    assert plan["total_params"] == sum(l["numel"] for l in layers) == sum(math.prod(l["shape"]) for l in layers)
    # ERK at init density 0.5, exact per-layer counts
    want = erk_densities({l["name"]: l["shape"] for l in layers}, 0.5)
    for layer in layers:
        assert layer["density"] == round(want[layer["name"]] * layer["numel"]) / layer["numel"]
    kept = sum(l["density"] * l["numel"] for l in layers)
    assert abs(kept - round(0.5 * plan["total_params"])) <= len(layers)
    # cubic schedule: steps of 1000 from 1000 to tf = 110 epochs x ceil(50000/128) steps
    spe = math.ceil(50000 / 128)
    t0, tf = 0, 110 * spe
    steps = [e["step"] for e in plan["schedule"]]
    assert steps == list(range(1000, tf, 1000)) + [tf]
    for event in plan["schedule"]:
        want_d = 0.05 + (0.5 - 0.05) * (1 - (event["step"] - t0) / (tf - t0)) ** 3
        assert abs(event["density"] - round(want_d * plan["total_params"]) / plan["total_params"]) < 1e-12
    assert plan["schedule"][-1]["density"] == round(0.05 * plan["total_params"]) / plan["total_params"]


def test_plan_no_schedule_for_rigl_and_tables(cli):
    result = cli("plan", QUICKSTART, "--set", "sparsity.method=rigl", "--json")
    plan = json.loads(result.stdout)
    assert plan["schedule"] == [] and abs(plan["density"] - 0.1) < 0.01
    human = cli("plan", QUICKSTART)
    assert human.exit_code == 0 and "gradual pruning" in human.stdout and "steps/epoch: 22" in human.stdout


def test_plan_bad_model_is_one_line_exit_2(cli):
    result = cli("plan", QUICKSTART, "--set", "model.name=resnet9000")
    assert result.exit_code == 2 and "resnet9000" in result.stderr


def test_report_on_missing_or_empty_db_is_exit_2(cli, tmp_path):
    missing = tmp_path / "missing.duckdb"
    result = cli("report", "--db", missing, "--out", tmp_path / "rep")
    assert result.exit_code == 2 and str(missing) in result.stderr
    assert not (tmp_path / "rep").exists()
    from granet_cli.store import Store

    empty = tmp_path / "empty.duckdb"
    Store(empty).close()
    result = cli("report", "--db", empty, "--out", tmp_path / "rep")
    assert result.exit_code == 2 and "no completed runs" in result.stderr


def test_report_bad_format_is_exit_2(cli, tmp_path):
    result = cli("report", "--db", tmp_path / "x.duckdb", "--format", "pdf")
    assert result.exit_code == 2 and "--format" in result.stderr
