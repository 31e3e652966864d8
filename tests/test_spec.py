"""RunSpec validation: presets, cross-field rules, overrides, hashing."""

import pytest

from granet_cli.sparse.methods import SparseConfig
from granet_cli.spec import SpecError, load_run_spec, with_overrides

from .conftest import QUICKSTART


def problems(*overrides, path=None):
    with pytest.raises(SpecError) as e:
        load_run_spec(path, list(overrides))
    return e.value.problems


@pytest.mark.parametrize(
    "method,init,schedule,dng,growth,sparse_init",
    [
        ("granet", 0.5, "global", True, "gradient", "ERK"),
        ("granet_uniform", 0.5, "uniform", True, "gradient", "uniform"),
        ("rigl", 0.2, "none", True, "gradient", "ERK"),
        ("dst", 0.2, "none", True, "gradient", "ERK"),
        ("set", 0.2, "none", True, "random", "ERK"),
        ("gmp", 1.0, "global", False, "gradient", "GMP"),
        ("gmp_uniform", 1.0, "uniform", False, "gradient", "GMP"),
        ("static", 0.2, "none", False, "gradient", "ERK"),
    ],
)
@pytest.mark.parametrize("entry", ["spec", "core"])
def test_presets_fill_design_table(method, init, schedule, dng, growth, sparse_init, entry):
    # both entry points (the validated spec and the core's plain dataclass) fill the same table
    if entry == "spec":
        sp = load_run_spec(None, [f"sparsity.method={method}", "sparsity.final_density=0.2"]).sparsity
    else:
        sp = SparseConfig(method=method, final_density=0.2)
    assert (sp.init_density, sp.pruning_schedule, sp.drop_and_grow, sp.growth, sp.sparse_init) == (
        init,
        schedule,
        dng,
        growth,
        sparse_init,
    )


def test_dense_preset_and_explicit_fields_win():
    assert load_run_spec(None, ["sparsity.method=dense"]).sparsity.final_density == 1.0
    sp = load_run_spec(None, ["sparsity.method=set", "sparsity.growth=gradient"]).sparsity
    assert sp.growth == "gradient"
    assert SparseConfig(method="dense", final_density=0.1).final_density == 1.0
    assert SparseConfig(method="set", growth="gradient").growth == "gradient"


@pytest.mark.parametrize(
    "override,needle",
    [
        ("sparsity.final_density=1.5", "sparsity.final_density: must be in (0, 1], got 1.5"),
        ("sparsity.final_density=0", "sparsity.final_density: must be in (0, 1], got 0"),
        ("sparsity.init_density=-0.1", "sparsity.init_density: must be in (0, 1], got -0.1"),
        ("sparsity.method=bogus", "sparsity.method: unknown method 'bogus'"),
        ("sparsity.finl_density=0.1", "sparsity.finl_density: unknown field"),
        ("optim.lr=-1", "optim.lr:"),
        ("data.name=mnist", "data.name:"),
    ],
)
def test_field_errors_name_the_path(override, needle):
    assert any(needle in p for p in problems(override))


def test_cross_field_rules():
    assert any(
        p.startswith("sparsity.init_density: must be >= final_density")
        for p in problems("sparsity.init_density=0.05", "sparsity.final_density=0.1")
    )
    assert any(
        p.startswith("sparsity.final_prune_epoch: must be <= optim.epochs")
        for p in problems("optim.epochs=10", "sparsity.final_prune_epoch=20")
    )
    assert any(
        p.startswith("sparsity.init_prune_epoch: must be < final_prune_epoch")
        for p in problems("sparsity.init_prune_epoch=50", "sparsity.final_prune_epoch=50")
    )
    assert any(p.startswith("data.root:") for p in problems("data.name=cifar10"))
    # several problems at once: one line each
    assert len(problems("sparsity.final_density=2", "optim.epochs=0")) == 2


def test_overrides_parse_yaml_scalars_and_method_switch_reapplies_preset():
    spec = load_run_spec(QUICKSTART, ["optim.epochs=25", "optim.milestones=[0.3, 0.6]", "seed=3"])
    assert spec.optim.epochs == 25 and spec.optim.milestones == [0.3, 0.6] and spec.seed == 3
    # the quickstart sets init_density 0.5 for granet; switching method applies rigl's preset
    rigl = load_run_spec(QUICKSTART, ["sparsity.method=rigl"])
    assert rigl.sparsity.init_density == rigl.sparsity.final_density == 0.1
    again = with_overrides(spec, {"sparsity.method": "gmp", "sparsity.final_density": 0.05})
    assert (again.sparsity.init_density, again.sparsity.final_density, again.sparsity.final_prune_epoch) == (
        1.0,
        0.05,
        20,
    )


def test_spec_hash_stable_and_sensitive():
    a = load_run_spec(QUICKSTART)
    b = load_run_spec(QUICKSTART)
    assert a.spec_hash() == b.spec_hash()
    assert load_run_spec(QUICKSTART, ["name=other"]).spec_hash() == a.spec_hash()  # cosmetic
    assert load_run_spec(QUICKSTART, ["seed=1"]).spec_hash() != a.spec_hash()
    # the normalised spec hashes the same as the file it came from
    assert load_run_spec(QUICKSTART).spec_hash() == with_overrides(a, {}).spec_hash()


def test_bad_files(tmp_path):
    assert problems(path=tmp_path / "missing.yaml")[0].endswith("spec file not found")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    assert "not valid YAML" in problems(path=bad)[0]
    bad.write_text("- a list\n")
    assert "YAML mapping" in problems(path=bad)[0]
