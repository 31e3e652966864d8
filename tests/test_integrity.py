"""Numbers that cannot lie, checked end to end through the CLI against the saved artefacts:
the checkpoint's weights, the DB rows, and recounts done here."""

import json

import pytest
import torch

from granet_cli.data import build_loaders
from granet_cli.data.split import stratified_split
from granet_cli.models import build_model
from granet_cli.spec import load_run_spec
from granet_cli.store.examples import unpack

from .conftest import QUICKSTART, rows


def _run(cli, tmp_path, *sets, db="r.duckdb", runs="runs"):
    args = ["run", QUICKSTART, "--db", tmp_path / db, "--runs-dir", tmp_path / runs, "-q"]
    for s in sets:
        args += ["--set", s]
    result = cli(*args)
    return result


def _checkpoint(tmp_path, *sets, runs="runs"):
    spec = load_run_spec(QUICKSTART, list(sets))
    ckpt = torch.load(tmp_path / runs / spec.spec_hash() / "checkpoint.pt", weights_only=False)
    return spec, ckpt


def _linear_weights(state):
    return {k: v for k, v in state.items() if k.endswith(".weight") and v.dim() == 2}


def test_one_shot_prune_at_the_last_step_is_in_the_checkpoint_and_the_accuracy(cli, tmp_path):
    """GMP's only pruning event is the last step of training: the reported model must be sparse."""
    sets = ("sparsity.method=gmp", "optim.epochs=2", "sparsity.final_prune_epoch=2", "sparsity.update_frequency=1000")
    result = _run(cli, tmp_path, *sets)
    assert result.exit_code == 0, result.output
    spec, ckpt = _checkpoint(tmp_path, *sets)
    weights = _linear_weights(ckpt["model"])
    total = sum(w.numel() for w in weights.values())
    nonzero = sum(int(torch.count_nonzero(w)) for w in weights.values())
    assert nonzero == round(0.1 * total)  # exactly the target, counted in the saved weights
    # momentum is zero wherever the weight is masked off
    state = ckpt["optimizer"]["state"]
    params = [p for group in ckpt["optimizer"]["param_groups"] for p in group["params"]]
    names = list(ckpt["model"].keys())
    masks = {k[: -len("_mask")]: v for k, v in ckpt["model"].items() if k.endswith("weight_mask")}
    assert set(masks) == set(weights)
    trainable = [n for n in names if not n.endswith("_mask")]
    for pid, name in zip(params, trainable):
        if name in masks and pid in state:
            assert torch.count_nonzero(state[pid]["momentum_buffer"][~masks[name]]) == 0
    ((density, acc),) = rows(tmp_path / "r.duckdb", "select achieved_density, final_test_acc from runs")
    assert density == pytest.approx(nonzero / total, abs=1e-12)
    # the recorded accuracy is the accuracy of these sparse weights, re-measured here
    loaders = build_loaders(**spec.data.model_dump(), seed=spec.seed)
    model = build_model(spec.model.name, loaders.info.num_classes, tuple(loaders.info.input_shape))
    model.load_state_dict({k: v for k, v in ckpt["model"].items() if not k.endswith("_mask")})
    model.eval()
    correct = count = 0
    with torch.no_grad():
        for x, y in loaders.test:
            correct += int((model(x).argmax(1) == y).sum())
            count += len(y)
    assert acc == pytest.approx(correct / count, abs=1e-12)


def test_overall_density_counts_layers_kept_dense(cli, tmp_path):
    sets = ("sparsity.dense_first_layer=true", "optim.epochs=3", "sparsity.final_prune_epoch=2")
    result = _run(cli, tmp_path, *sets)
    assert result.exit_code == 0, result.output
    _, ckpt = _checkpoint(tmp_path, *sets)
    weights = _linear_weights(ckpt["model"])
    masks = {k[: -len("_mask")]: v for k, v in ckpt["model"].items() if k.endswith("weight_mask")}
    first = "1.weight"
    assert first not in masks  # kept dense: no mask
    total = sum(w.numel() for w in weights.values())
    sparse_total = total - weights[first].numel()
    active = sum(int(m.sum()) for m in masks.values())
    nonzero_sparse = sum(int(torch.count_nonzero(w)) for k, w in weights.items() if k != first)
    ((final, nonzero, overall),) = rows(
        tmp_path / "r.duckdb", "select achieved_density, nonzero_density, overall_density from runs"
    )
    # densities are mask counts; the nonzero fraction is counted in the weights, and can only be lower
    assert final == pytest.approx(active / sparse_total, abs=1e-12)
    assert final == pytest.approx(0.1, abs=1e-3)
    assert nonzero == pytest.approx(nonzero_sparse / sparse_total, abs=1e-12)
    assert nonzero <= final
    assert all(torch.count_nonzero(weights[k][~m]) == 0 for k, m in masks.items())
    # the first layer is dense: every one of its weights counts
    assert overall == pytest.approx((active + weights[first].numel()) / total, abs=1e-12)
    assert overall > 0.3
    ((epoch_overall,),) = rows(tmp_path / "r.duckdb", "select overall_density from epochs where epoch = 3")
    assert epoch_overall == pytest.approx(overall, abs=1e-12)
    assert "overall density" in result.stdout and "nonzero weights" in result.stdout
    # the report's budget table shows the recounted nonzero fraction beside the mask density
    rep = cli("report", "--db", tmp_path / "r.duckdb", "--out", tmp_path / "rep", "--format", "md", "--name", "r")
    assert rep.exit_code == 0, rep.output
    md = (tmp_path / "rep" / "r.md").read_text(encoding="utf-8")
    budget = md[md.index("Budget: densities") :]
    header = next(line for line in budget.splitlines() if line.startswith("| method"))
    row = next(line for line in budget.splitlines() if line.startswith("| granet"))
    cells = dict(zip([c.strip() for c in header.split("|")], [c.strip() for c in row.split("|")]))
    assert cells["final density"] == f"{active / sparse_total:.4f}"
    assert cells["nonzero weights"] == f"{nonzero_sparse / sparse_total:.4f}"


def test_a_layer_left_without_weights_is_an_error_and_nothing_is_written(cli, tmp_path):
    result = _run(cli, tmp_path, "sparsity.method=static", "sparsity.final_density=0.00001")
    assert result.exit_code == 2
    assert "1.weight" in result.output and "no weight" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "r.duckdb").exists() or not rows(tmp_path / "r.duckdb", "select * from runs")


def test_fields_of_other_methods_do_not_fail_validation(cli):
    result = cli("validate", QUICKSTART, "--set", "sparsity.method=rigl", "--set", "optim.epochs=4")
    assert result.exit_code == 0, result.output
    # ...but they still do for a gradual method
    result = cli("validate", QUICKSTART, "--set", "optim.epochs=4")
    assert result.exit_code == 2 and "final_prune_epoch" in result.output


def test_validation_split_is_fixed_stratified_and_exact():
    labels = torch.tensor([0] * 50 + [1] * 30 + [2] * 20)
    train, val = stratified_split(labels, 100, 0.2)
    assert len(val) == 20 and len(train) == 80 and not set(train) & set(val)
    assert sorted(train + val) == list(range(100))
    per_class = torch.bincount(labels[val], minlength=3).tolist()
    assert per_class == [10, 6, 4]  # 20 % of each class
    assert stratified_split(labels, 100, 0.2) == (train, val)  # fixed, whatever the run seed


def test_selected_accuracy_is_test_acc_at_best_validation_epoch(cli, tmp_path):
    sets = ("data.val_fraction=0.2", "optim.epochs=6", "sparsity.final_prune_epoch=3")
    result = _run(cli, tmp_path, *sets)
    assert result.exit_code == 0, result.output
    db = tmp_path / "r.duckdb"
    epochs = rows(db, "select epoch, val_acc, test_acc from epochs order by epoch")
    assert len(epochs) == 6 and all(v is not None for _, v, _ in epochs)
    candidates = [(e, v, t) for e, v, t in epochs if e >= 3]  # measured at the target density
    best_val = max(v for _, v, _ in candidates)
    expected = next(t for _, v, t in candidates if v == best_val)  # earliest on a tie
    ((selected, best, final),) = rows(db, "select selected_test_acc, best_test_acc, final_test_acc from runs")
    assert selected == pytest.approx(expected, abs=1e-12)
    assert best == pytest.approx(max(t for _, _, t in epochs), abs=1e-12)
    assert final == pytest.approx(epochs[-1][2], abs=1e-12)
    # the training set shrank by the validation split: 1347 digits -> 269 held out
    spec = load_run_spec(QUICKSTART, list(sets))
    loaders = build_loaders(**spec.data.model_dump(), seed=0)
    assert len(loaders.val.dataset) == round(1347 * 0.2)
    assert len(loaders.train.dataset) == 1347 - round(1347 * 0.2)
    # per-example correctness of both reported models is stored: its means are the two accuracies,
    # and the final one is exactly what the checkpoint's weights get right, recounted here
    ((packed_final, packed_selected),) = rows(db, "select test_correct, selected_test_correct from runs")
    final_bits, selected_bits = unpack(packed_final), unpack(packed_selected)
    assert final_bits.size == selected_bits.size == 450 == len(loaders.test.dataset)
    assert final_bits.sum() == round(final * 450) and selected_bits.sum() == round(selected * 450)
    _, ckpt = _checkpoint(tmp_path, *sets)
    model = build_model(spec.model.name, loaders.info.num_classes, tuple(loaders.info.input_shape))
    model.load_state_dict({k: v for k, v in ckpt["model"].items() if not k.endswith("_mask")})
    model.eval()
    with torch.no_grad():
        recount = torch.cat([model(x).argmax(1) == y for x, y in loaders.test]).numpy()
    assert (recount == final_bits).all()


def test_multiplier_scales_epochs_and_prune_epochs(cli, tmp_path):
    sets = ("optim.multiplier=2", "optim.epochs=2", "sparsity.final_prune_epoch=1")
    result = _run(cli, tmp_path, *sets)
    assert result.exit_code == 0, result.output
    db = tmp_path / "r.duckdb"
    assert [e for (e,) in rows(db, "select epoch from epochs order by epoch")] == [1, 2, 3, 4]
    ((density,),) = rows(db, "select density from epochs where epoch = 2")
    assert density == pytest.approx(0.1, abs=1e-3)  # pruning ended at epoch 1 x 2
    ((early,),) = rows(db, "select density from epochs where epoch = 1")
    assert early > 0.1 + 1e-3
    (spec_json,) = rows(db, "select spec_json from runs")[0]
    assert json.loads(spec_json)["optim"]["multiplier"] == 2  # the recorded spec is the user's


def test_one_experiment_per_cell_and_n_counts_distinct_seeds(cli, tmp_path):
    """30-epoch and 2-epoch runs are different experiments; a seed run twice counts once."""
    base = ("sparsity.final_prune_epoch=2",)
    runs = [
        ("optim.epochs=30", "seed=0"),
        ("optim.epochs=2", "seed=0"),
        ("optim.epochs=2", "seed=0"),
        ("optim.epochs=2", "seed=1"),
    ]
    for i, sets in enumerate(runs):
        result = _run(cli, tmp_path, *base, *sets, runs=f"runs{i}")
        assert result.exit_code == 0, result.output
    db = tmp_path / "r.duckdb"
    assert rows(db, "select count(*) from runs where status = 'completed'") == [(4,)]
    result = cli("report", "--db", db, "--out", tmp_path / "rep", "--format", "md", "--name", "t")
    assert result.exit_code == 0, result.output
    md = (tmp_path / "rep" / "t.md").read_text()
    table = md.split("### Final test accuracy")[1].split("###")[0]
    lines = [ln for ln in table.splitlines() if ln.startswith("| granet")]
    assert len(lines) == 2, table
    by_epochs = {("optim.epochs=30" in ln): ln for ln in lines}
    # expected values recomputed from the DB rows: latest run per seed, per epochs setting
    latest = {}
    for spec_json, seed, acc, _ in rows(
        db, "select spec_json, seed, final_test_acc, finished_at from runs order by finished_at"
    ):
        latest[(json.loads(spec_json)["optim"]["epochs"], seed)] = acc
    assert sorted(latest) == [(2, 0), (2, 1), (30, 0)]
    mean = (latest[(2, 0)] + latest[(2, 1)]) / 2
    # n=2 seeds: the 95 % CI half-width is t(0.975, 1) * s / sqrt(2) = 12.7062 * |a - b| / 2
    half = 12.706204736 * abs(latest[(2, 0)] - latest[(2, 1)]) / 2
    assert by_epochs[False].split("|")[2].strip() == f"{100 * mean:.2f} ± {100 * half:.2f}"
    # the table states n once (the larger of the two equally common n's); the other cell says its own
    assert "n = 2 distinct seeds per cell unless the cell says otherwise" in table
    assert "(n=" not in by_epochs[False]
    assert by_epochs[True].split("|")[2].strip() == f"{100 * latest[(30, 0)]:.2f} (n=1)"
    assert "Provenance" in md and "torch" in md


def test_validation_split_data_loader_uses_every_class():
    spec = load_run_spec(QUICKSTART, ["data.val_fraction=0.1"])
    loaders = build_loaders(**spec.data.model_dump(), seed=0)
    ys = torch.cat([y for _, y in loaders.val])
    assert set(ys.tolist()) == set(range(10))
