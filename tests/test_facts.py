"""What `granet validate` and the report's appendix show of a spec: only the data fields that apply,
the real data (shape, sizes), steps per epoch, mask updates, the machine and the versions.

The sizes are recomputed here from scikit-learn's own split (independent of granet's split file),
the mask updates by stepping a real `Masking` through a run's steps."""

from __future__ import annotations

import math
import subprocess
import sys
from types import SimpleNamespace
from typing import cast

import pytest

from granet_cli.facts import mask_updates, run_facts
from granet_cli.spec import load_run_spec

from .conftest import ROOT

QUICKSTART = ROOT / "experiments" / "quickstart.yaml"
NOT_FOR_DIGITS = ("input_shape", "train_size", "test_size", "num_classes", "augment", "root", "download")


def _digits_sizes() -> tuple[int, int]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    tr, te = train_test_split(range(len(d.target)), test_size=0.25, stratify=d.target, random_state=0)
    return len(tr), len(te)


def test_validate_shows_the_real_digits_data_and_only_its_fields(cli):
    n_train, n_test = _digits_sizes()
    r = cli("validate", QUICKSTART)
    assert r.exit_code == 0, r.stderr
    data_section = r.stdout.split("data:")[1].split("optim:")[0]
    for key in NOT_FOR_DIGITS:
        assert f"{key}:" not in data_section, key
    assert "batch_size: 64" in data_section and "val_fraction" in data_section
    spec = load_run_spec(QUICKSTART, None)
    steps = math.ceil(n_train / spec.data.batch_size)
    assert f"data 1x8x8, 10 classes, {n_train:,} train / 0 validation / {n_test:,} test" in r.stdout
    assert f"{steps} steps per epoch x {spec.optim.epochs} epochs" in r.stdout
    assert "mask updates:" in r.stdout and "this machine:" in r.stdout and "CPU cores" in r.stdout
    assert "torch 2." in r.stdout and "python 3." in r.stdout
    # with a validation split the training part shrinks by exactly round(n * fraction)
    r = cli("validate", QUICKSTART, "--set", "data.val_fraction=0.1")
    n_val = round(n_train * 0.1)
    assert f"{n_train - n_val:,} train / {n_val:,} validation / {n_test:,} test" in r.stdout


def test_other_datasets_keep_the_fields_they_read(cli):
    r = cli("validate", ROOT / "experiments" / "cifar10_vgg19_granet.yaml")
    assert r.exit_code == 0, r.stderr
    data = r.stdout.split("data:")[1].split("optim:")[0]
    assert "root:" in data and "augment:" in data and "input_shape" not in data and "train_size" not in data
    assert "data 3x32x32, 10 classes, 50,000 train / 0 validation / 10,000 test" in r.stdout
    r = cli("validate", QUICKSTART, "--set", "data.name=synthetic", "--set", "data.input_shape=[2,4,4]")
    assert r.exit_code == 0, r.stderr
    data = r.stdout.split("data:")[1].split("optim:")[0]
    assert "input_shape:" in data and "train_size: 512" in data and "augment" not in data
    assert "data 2x4x4, 10 classes, 512 train / 0 validation / 256 test" in r.stdout


def test_validate_and_dataset_info_stay_torch_free():
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from granet_cli.cli import app\n"
        f"r = CliRunner().invoke(app, ['validate', {str(QUICKSTART)!r}])\n"
        "assert r.exit_code == 0, r.output\n"
        "from granet_cli.data import dataset_info\n"
        "for name in ('digits', 'synthetic', 'cifar10', 'cifar100', 'imagenet'):\n"
        "    dataset_info(name)\n"
        "heavy = [m for m in ('torch', 'torchvision', 'numpy') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr


@pytest.mark.parametrize(
    "overrides",
    [
        [],
        ["sparsity.method=rigl"],
        ["sparsity.method=gmp"],
        ["sparsity.method=set", "sparsity.update_end_epoch=3"],
        ["sparsity.init_prune_epoch=2", "sparsity.final_prune_epoch=4", "sparsity.update_frequency=7"],
        ["sparsity.method=dense"],
    ],
)
def test_mask_update_counts_match_a_stepped_masking(overrides):
    import torch

    from granet_cli.models import build_model
    from granet_cli.sparse.masking import Masking
    from granet_cli.sparse.methods import SparseConfig

    spec = load_run_spec(QUICKSTART, ["optim.epochs=6", "sparsity.final_prune_epoch=5", *overrides])
    facts = run_facts(spec)
    spe = facts["steps_per_epoch"]
    model = build_model("mlp", 10, (1, 8, 8))
    opt = cast(torch.optim.Optimizer, SimpleNamespace(state={}, param_groups=[]))
    m = Masking(model, opt, SparseConfig.from_obj(spec.sparsity), steps_per_epoch=spe, epochs=spec.optim.epochs)
    total = spe * spec.optim.epochs
    pruning = sum(1 for t in range(1, total + 1) if m.schedule is not None and m.schedule.is_event(t))
    dg = sum(1 for t in range(1, total + 1) if m._drop_and_grow_due(t))
    assert (facts["pruning_events"], facts["drop_and_grow_updates"]) == (pruning, dg)
    assert mask_updates(SparseConfig.from_obj(spec.sparsity), spe, spec.optim.epochs) == (pruning, dg)
