"""One definition of the sparsity settings, and the renamed fields.

`prune_rate` (drop fraction of drop-and-grow), `prune_rate_min` and `pruning_rate` (one-shot
prune fraction of the prune_* inits) are now `drop_fraction`, `drop_fraction_min` and
`init_prune_fraction`; the reference's names stay accepted everywhere a spec is written, and the
hashes runs were recorded under do not change.
"""

import dataclasses

import pytest
import yaml

from granet_cli.sparse.methods import SparseConfig
from granet_cli.spec import SpecError, build_run_spec, load_run_spec, with_overrides

from .conftest import QUICKSTART

RENAMED = {"prune_rate": "drop_fraction", "prune_rate_min": "drop_fraction_min", "pruning_rate": "init_prune_fraction"}


def test_validated_spec_has_exactly_the_core_fields_and_defaults():
    spec = load_run_spec(None, ["sparsity.method=rigl"])
    core = SparseConfig(method="rigl", final_density=spec.sparsity.final_density)
    names = [f.name for f in dataclasses.fields(SparseConfig)]
    assert list(type(spec.sparsity).model_fields) == names
    # the rigl preset fills the same values on both sides, and final_prune_epoch is the one field
    # the spec fills beyond the core (it needs optim.epochs)
    spec_values = spec.sparsity.model_dump()
    core_values = dataclasses.asdict(core)
    assert {k for k in names if spec_values[k] != core_values[k]} == {"final_prune_epoch"}


@pytest.mark.parametrize(
    "field,bad,needle",
    [
        ("drop_fraction", 0, "greater than 0"),
        ("drop_fraction", 1.5, "less than or equal to 1"),
        ("drop_fraction_min", -0.1, "greater than or equal to 0"),
        ("init_prune_fraction", 1, "less than 1"),
        ("update_frequency", 0, "greater than 0"),
        ("classifier_min_density", 0, "greater than 0"),
    ],
)
def test_core_bounds_are_enforced_by_the_spec(field, bad, needle):
    with pytest.raises(SpecError) as e:
        load_run_spec(None, [f"sparsity.{field}={bad}"])
    assert any(p.startswith(f"sparsity.{field}:") and needle in p for p in e.value.problems), e.value.problems


def _quickstart_with_reference_names(tmp_path, **values):
    data = yaml.safe_load(QUICKSTART.read_text())
    sparsity = data["sparsity"]
    for old, new in RENAMED.items():
        if new in sparsity:
            sparsity[old] = sparsity.pop(new)
    sparsity.update(values)
    path = tmp_path / "reference_names.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_reference_names_are_accepted_and_hash_as_before(tmp_path):
    old_file = _quickstart_with_reference_names(tmp_path, prune_rate=0.3, pruning_rate=0.25, prune_rate_min=0.01)
    spec = load_run_spec(old_file)
    assert (spec.sparsity.drop_fraction, spec.sparsity.init_prune_fraction, spec.sparsity.drop_fraction_min) == (
        0.3,
        0.25,
        0.01,
    )
    new = load_run_spec(QUICKSTART, ["sparsity.drop_fraction=0.3", "sparsity.init_prune_fraction=0.25"])
    new = with_overrides(new, {"sparsity.drop_fraction_min": 0.01})
    assert spec.spec_hash() == new.spec_hash()
    # the quickstart's hashes as granet recorded them before the rename (results dbs hold these)
    plain = load_run_spec(QUICKSTART)
    assert (plain.spec_hash(), plain.config_hash()) == ("0ae581e0602f4505", "2ca9b03e40e3f1e3")


def test_either_name_overrides_the_file(tmp_path):
    old_file = _quickstart_with_reference_names(tmp_path, prune_rate=0.3)
    assert load_run_spec(old_file, ["sparsity.drop_fraction=0.2"]).sparsity.drop_fraction == 0.2
    assert load_run_spec(QUICKSTART, ["sparsity.prune_rate=0.2"]).sparsity.drop_fraction == 0.2
    spec = load_run_spec(QUICKSTART)
    assert with_overrides(spec, {"sparsity.prune_rate": 0.4}).sparsity.drop_fraction == 0.4


def test_both_names_in_one_file_are_refused(tmp_path):
    path = _quickstart_with_reference_names(tmp_path, prune_rate=0.3)
    data = yaml.safe_load(path.read_text())
    data["sparsity"]["drop_fraction"] = 0.4
    with pytest.raises(SpecError) as e:
        build_run_spec(data)
    assert e.value.problems == [
        "sparsity: prune_rate and drop_fraction are one setting (prune_rate is the reference's name): give one"
    ]


def test_stored_spec_json_with_reference_names_still_loads():
    # runs.spec of a db written before the rename: the normalised spec with the old keys
    stored = load_run_spec(QUICKSTART).normalised()
    for old, new in RENAMED.items():
        stored["sparsity"][old] = stored["sparsity"].pop(new)
    spec = build_run_spec(stored)
    assert spec.spec_hash() == load_run_spec(QUICKSTART).spec_hash()


def test_grid_by_reference_name_varies_the_renamed_field(tmp_path):
    from granet_cli.sweep import plan_sweep

    small = ["optim.epochs=2", "sparsity.final_prune_epoch=1"]
    plan = plan_sweep(None, small, methods="rigl", densities="0.1", seeds="0", grid=["sparsity.prune_rate=0.2,0.4"])
    assert sorted(p.spec.sparsity.drop_fraction for p in plan.points) == [0.2, 0.4]
    assert plan.grid.grid == {"sparsity.drop_fraction": [0.2, 0.4]}
    # a file's grid by the old name and a --grid flag by the new one name the same axis: the flag wins
    data = yaml.safe_load(QUICKSTART.read_text())
    data["sweep"] = {"grid": {"sparsity.prune_rate": [0.1, 0.3]}}
    spec = tmp_path / "sweep.yaml"
    spec.write_text(yaml.safe_dump(data))
    flag = plan_sweep(spec, small, methods="rigl", densities="0.1", seeds="0", grid=["sparsity.drop_fraction=0.25"])
    assert [p.spec.sparsity.drop_fraction for p in flag.points] == [0.25]
    both = dict(data, sweep={"grid": {"sparsity.prune_rate": [0.1], "sparsity.drop_fraction": [0.2]}})
    spec.write_text(yaml.safe_dump(both))
    with pytest.raises(SpecError) as e:
        plan_sweep(spec, small, methods="rigl", densities="0.1", seeds="0")
    assert any("the same field as sparsity.drop_fraction" in line for line in e.value.problems), e.value.problems
