"""`granet export` / `eval` / `bench-sparse`: a finished quickstart run out as a usable sparse model."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from granet_cli.sparse_bench import CSRLinear, CSRUnfoldConv2d
from granet_cli.spec import load_run_spec

from .conftest import QUICKSTART, rows


@pytest.fixture(scope="module")
def done(tmp_path_factory):
    """One finished quickstart run (CPU, deterministic; 6 epochs, the last mask update 7 steps before
    the end, so every active weight has been trained): its db, runs dir and run id."""
    from typer.testing import CliRunner

    from granet_cli.cli import app

    base = tmp_path_factory.mktemp("export")
    db, runs = base / "r.duckdb", base / "runs"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a shared 2-core machine: no oversubscription
    try:
        result = CliRunner().invoke(
            app,
            [
                "run",
                str(QUICKSTART),
                "--db",
                str(db),
                "--runs-dir",
                str(runs),
                "-q",
                "--set",
                "device=cpu",
                "--set",
                "optim.epochs=6",
                "--set",
                "sparsity.final_prune_epoch=4",
            ],
        )
    finally:
        torch.set_num_threads(threads)
    assert result.exit_code == 0, result.output
    ((run_id,),) = rows(db, "select run_id from runs where status = 'completed'")
    return {"db": db, "runs": runs, "run_id": run_id, "base": base}


def _one_error_line(result) -> str:
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert result.exit_code == 2, result.output
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def _digits_accuracy(state: dict, spec) -> float:
    """Test accuracy recomputed here: the mlp built by hand from the spec, the digits test split by
    scikit-learn (the same fixed stratified split and train-set normalisation the README documents)."""
    import numpy as np
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x_tr, x_te, _y_tr, y_te = train_test_split(
        d.images / 16.0, d.target, test_size=0.25, stratify=d.target, random_state=0
    )
    x = torch.tensor((x_te - x_tr.mean()) / x_tr.std(), dtype=torch.float32).reshape(len(x_te), -1)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, 10))
    net.load_state_dict({k: v for k, v in state.items() if not k.endswith("weight_mask")})
    assert spec.model.name == "mlp"
    with torch.no_grad():
        pred = net(x).argmax(1).numpy()
    return float(np.mean(pred == y_te))


def test_export_pt_loads_weights_only_and_eval_gives_the_db_accuracy(done, cli, tmp_path):
    db, runs, run_id = done["db"], done["runs"], done["run_id"]
    out = tmp_path / "model.pt"
    result = cli("export", run_id[:6], "--db", db, "--runs-dir", runs, "--out", out)
    assert result.exit_code == 0, result.output
    state = torch.load(out, map_location="cpu", weights_only=True)  # torch's safe default loader
    assert isinstance(state, dict) and all(isinstance(v, torch.Tensor) for v in state.values())

    masks = {k[: -len(".weight_mask")] + ".weight": v for k, v in state.items() if k.endswith(".weight_mask")}
    assert set(masks) == {"1.weight", "3.weight", "5.weight"}  # every Linear of the mlp
    layers = {
        name: (numel, dens)
        for name, numel, dens in rows(db, "select name, numel, achieved_density from layers where run_id = ?", run_id)
    }
    active_total = 0
    for name, mask in masks.items():
        weight = state[name]
        assert mask.dtype == torch.bool and mask.shape == weight.shape
        active = int(mask.sum())
        assert int(torch.count_nonzero(weight)) == active, name  # nonzeros are exactly the mask's weights
        assert not torch.any(weight[~mask]), name  # masked weights are zeros
        numel, dens = layers[name]
        assert weight.numel() == numel and active == round(dens * numel), name
        active_total += active
    ((achieved_density, db_acc, spec_json),) = rows(
        db, "select achieved_density, final_test_acc, spec_json from runs where run_id = ?", run_id
    )
    assert active_total / sum(m.numel() for m in masks.values()) == pytest.approx(achieved_density, abs=1e-12)

    side = json.loads(out.with_name(out.name + ".json").read_text())
    assert side["spec"] == json.loads(spec_json)
    assert side["run_id"] == run_id and side["weights"] == "model.pt"
    assert side["metrics"]["final_test_acc"] == db_acc
    assert side["active_weights"] == active_total

    result = cli("eval", out, "--db", db, "--json")
    assert result.exit_code == 0, result.output
    res = json.loads(result.stdout)
    assert res["test_acc"] == db_acc and res["samples"] == 450
    spec = load_run_spec(QUICKSTART)
    assert _digits_accuracy(state, spec) == pytest.approx(db_acc, abs=1e-12)
    text = cli("eval", out, "--db", db)
    assert f"test accuracy {100 * db_acc:.2f} %" in text.stdout and "(the same)" in text.stdout


def test_export_safetensors_holds_the_same_tensors(done, cli, tmp_path):
    pytest.importorskip("safetensors")
    from safetensors.torch import load_file

    db, runs, run_id = done["db"], done["runs"], done["run_id"]
    assert cli("export", run_id, "--db", db, "--runs-dir", runs, "--out", tmp_path / "a.pt").exit_code == 0
    result = cli("export", run_id, "--db", db, "--runs-dir", runs, "--format", "safetensors", "--out", tmp_path)
    assert result.exit_code == 0, result.output
    st = tmp_path / f"{run_id}.safetensors"
    a, b = torch.load(tmp_path / "a.pt", weights_only=True), load_file(str(st))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    res = json.loads(cli("eval", st, "--json").stdout)
    ((db_acc,),) = rows(db, "select final_test_acc from runs where run_id = ?", run_id)
    assert res["test_acc"] == db_acc


def test_eval_straight_from_the_run_and_its_folder(done, cli):
    db, runs, run_id = done["db"], done["runs"], done["run_id"]
    ((db_acc, spec_hash),) = rows(db, "select final_test_acc, spec_hash from runs where run_id = ?", run_id)
    for ref in (run_id, runs / spec_hash):
        result = cli("eval", ref, "--db", db, "--runs-dir", runs, "--json")
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)["test_acc"] == db_acc


def test_bad_input_is_one_line_and_writes_nothing(done, cli, tmp_path):
    db, runs, run_id = done["db"], done["runs"], done["run_id"]
    out = tmp_path / "x.pt"
    assert "no such run" in _one_error_line(cli("export", "zzzz", "--db", db, "--runs-dir", runs, "--out", out))
    assert "no checkpoint" in _one_error_line(
        cli("export", run_id, "--db", db, "--runs-dir", tmp_path / "none", "--out", out)
    )
    assert "not found" in _one_error_line(cli("export", run_id, "--db", tmp_path / "missing.duckdb", "--out", out))
    assert not out.exists() and not out.with_name(out.name + ".json").exists()
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a torch file")
    junk.with_suffix(".json").write_text(json.dumps({"format": "granet-export", "spec": {}, "weights": "junk.pt"}))
    assert "not a readable model file" in _one_error_line(cli("eval", junk))
    lone = tmp_path / "lone.pt"
    torch.save({"w": torch.zeros(2)}, lone)
    assert "no sidecar" in _one_error_line(cli("eval", lone))
    assert "file not found" in _one_error_line(cli("eval", tmp_path / "nope.pt"))
    assert "Invalid value for '--format'" in _one_error_line(cli("export", run_id, "--db", db, "--format", "onnx"))


def test_bench_reports_speedup_next_to_the_flops_fraction(done, cli, tmp_path):
    db, runs, run_id = done["db"], done["runs"], done["run_id"]
    result = cli(
        "bench-sparse", run_id, "--db", db, "--runs-dir", runs, "--repeats", "3", "--batch-size", "8", "--json"
    )
    assert result.exit_code == 0, result.output
    res = json.loads(result.stdout)
    ((achieved_density,),) = rows(db, "select achieved_density from runs where run_id = ?", run_id)
    # an mlp's per-sample MACs of a Linear are its weight count: the fraction is the overall density
    assert res["flops_fraction"] == pytest.approx(achieved_density, abs=1e-9)
    assert [layer["kind"] for layer in res["layers"]] == ["Linear"] * 3
    assert res["max_abs_diff"] < 1e-4 and res["dense_ms"] > 0 and res["sparse_ms"] > 0
    assert res["speedup"] == pytest.approx(res["dense_ms"] / res["sparse_ms"])
    text = cli("export", run_id, "--db", db, "--runs-dir", runs, "--out", tmp_path, "--bench", "--repeats", "2")
    assert text.exit_code == 0, text.output
    assert "measured speed-up" in text.stdout and "theoretical: 0.1000 of the dense FLOPs" in text.stdout


@pytest.mark.parametrize(
    "kw",
    [
        {"stride": 1, "padding": 1},
        {"stride": 2, "padding": 0},
        {"stride": 1, "padding": 2, "dilation": 2, "bias": False},
    ],
)
def test_csr_layers_compute_what_the_dense_ones_do(kw):
    torch.manual_seed(0)
    conv = nn.Conv2d(6, 8, 3, **kw)
    lin = nn.Linear(40, 12)
    with torch.no_grad():
        for m in (conv, lin):
            m.weight.mul_(torch.rand_like(m.weight) < 0.2)  # an unstructured 20 % mask
    x = torch.randn(3, 6, 11, 9)
    torch.testing.assert_close(CSRUnfoldConv2d(conv)(x), conv(x), atol=1e-5, rtol=1e-4)
    z = torch.randn(5, 7, 40)
    torch.testing.assert_close(CSRLinear(lin)(z), lin(z), atol=1e-5, rtol=1e-4)


def test_sweep_trial_checkpoints_are_found_in_tune_storage(done, cli, tmp_path):
    """A sweep run's checkpoint lives in Ray Tune's storage, <runs-dir>/ray/<name>-<sweep_id>/<trial>/
    checkpoint_NNNNNN/ beside a granet_checkpoint.json marker: the newest one of *this* run is used."""
    import shutil

    import duckdb

    db = tmp_path / "sweep.duckdb"
    shutil.copy(done["db"], db)
    con = duckdb.connect(str(db))
    con.execute("update runs set sweep_id = 'sw-1'")
    con.close()
    run_id = done["run_id"]
    ((spec_hash, db_acc),) = rows(db, "select spec_hash, final_test_acc from runs where run_id = ?", run_id)
    real = done["runs"] / spec_hash / "checkpoint.pt"
    trial = tmp_path / "runs" / "ray" / "demo-sw-1" / "trial_0"
    for n, owner, good in ((5, run_id, False), (6, run_id, True), (9, "other-run", False)):
        ck = trial / f"checkpoint_{n:06d}"
        ck.mkdir(parents=True)
        if good:
            shutil.copy(real, ck / "checkpoint.pt")
        else:
            (ck / "checkpoint.pt").write_bytes(b"not this one")
        (ck / "granet_checkpoint.json").write_text(
            json.dumps({"run_id": owner, "spec_hash": spec_hash, "sweep_id": "sw-1", "epoch": n, "step": 22 * n})
        )
    result = cli("export", run_id, "--db", db, "--runs-dir", tmp_path / "runs", "--out", tmp_path / "m.pt")
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "m.pt.json").read_text())["sweep_id"] == "sw-1"
    for ref in (tmp_path / "m.pt", trial / "checkpoint_000006"):
        res = cli("eval", ref, "--db", db, "--json")
        assert res.exit_code == 0, res.output
        assert json.loads(res.stdout)["test_acc"] == db_acc


def test_an_ambiguous_prefix_says_which_run_is_which(done, cli, tmp_path):
    """A prefix matching two runs is refused with each run's method, target density, seed and status."""
    import shutil
    from datetime import datetime

    from granet_cli.store import Store

    db = tmp_path / "two.duckdb"
    shutil.copy(done["db"], db)
    run_id = done["run_id"]
    twin = run_id[:4] + "zzzz-0000"
    with Store(db) as st:
        st.start_run(dict(run_id=twin, method="rigl", target_density=0.2, seed=5, started_at=datetime(2026, 1, 1)))
    ((method, density, seed),) = rows(db, "select method, target_density, seed from runs where run_id = ?", run_id)
    line = _one_error_line(cli("export", run_id[:4], "--db", db, "--runs-dir", done["runs"], "--out", tmp_path / "x"))
    assert f"prefix matches 2 runs: {run_id} ({method} {density:g} seed {seed} completed)" in line
    assert f"{twin} (rigl 0.2 seed 5 running)" in line
