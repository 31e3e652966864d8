"""A report stays readable with many configurations (issue 21): the quickstart demo's runs plus a
user's own spec (``device: cpu``, other workers) with a learning-rate grid, written to the db as the
real specs would be (RunSpec, no training).  Runtime fields never split a cell or label a row, fields
that do not apply to a method never label it, comparisons stay within one recipe, and more than six
configurations give one section per recipe.  Expected values are recomputed here from the rows."""

from __future__ import annotations

import json
import re
import statistics
from datetime import datetime, timedelta

from granet_cli.report import report_json
from granet_cli.spec import load_run_spec
from granet_cli.store import Store

from ..conftest import ROOT

T0 = datetime(2024, 6, 1, 9, 0, 0)
QUICKSTART = ROOT / "experiments" / "quickstart.yaml"
DEMO_METHODS = ("granet", "rigl", "gmp", "dense")
DENSITIES = (0.05, 0.1, 0.2)
#: never in a row label: runtime fields, and sparsity fields that do not apply to the row's method
RUNTIME = ("device", "num_workers", "data.root", "deterministic", "channels_last", "test_batch_size")
NOT_FOR = {
    "dense": ("sparsity.",),
    "rigl": ("prune_epoch", "init_prune_fraction", "prune_score"),
    "gmp": ("drop_fraction", "growth", "update_end_epoch", "init_prune_fraction"),
    "granet": ("init_prune_fraction",),
}


def acc_of(method: str, density: float, seed: int, lr: float) -> float:
    base = {"dense": 0.97, "granet": 0.95, "rigl": 0.93, "gmp": 0.94}[method]
    return round(base - 0.1 * (0.2 - min(density, 0.2)) - abs(lr - 0.05) + 0.003 * seed, 6)


def _spec(method: str, density: float, seed: int, user: bool, lr: float) -> str:
    sets = [f"sparsity.method={method}", f"seed={seed}", f"optim.lr={lr}"]
    if method != "dense":
        sets.append(f"sparsity.final_density={density}")
    if user:  # the user's own copy of the spec: runs on the CPU with workers
        sets += ["device=cpu", "data.num_workers=2", "name=mine"]
    return json.dumps(load_run_spec(QUICKSTART, sets).normalised())


def runs_to_write(lr_grid: tuple[float, ...], user_methods: tuple[str, ...]) -> list[dict]:
    out = []
    for method in DEMO_METHODS:  # the demo: granet, rigl, gmp at three densities and dense, seeds 0-2
        for d in (1.0,) if method == "dense" else DENSITIES:
            out += [dict(method=method, density=d, seed=s, user=False, lr=0.05) for s in (0, 1, 2)]
    for lr in lr_grid:  # the user's sweep at density 0.1; at lr 0.05 (the demo's) seeds 3 and 4
        seeds = (3, 4) if lr == 0.05 else (0, 1, 2)
        out += [dict(method=m, density=0.1, seed=s, user=True, lr=lr) for m in user_methods for s in seeds]
    return out


def write_db(path, runs: list[dict]) -> None:
    with Store(path) as st:
        for i, r in enumerate(runs):
            rid = f"{'user' if r['user'] else 'demo'}-{r['method']}-{r['density']}-{r['lr']}-{r['seed']}"
            r["run_id"] = rid
            r["acc"] = acc_of(r["method"], r["density"], r["seed"], r["lr"])
            st.start_run(
                dict(
                    run_id=rid,
                    sweep_id=None,
                    spec_hash=rid,
                    method=r["method"],
                    model="mlp",
                    dataset="digits",
                    target_density=r["density"],
                    seed=r["seed"],
                    spec_json=_spec(r["method"], r["density"], r["seed"], r["user"], r["lr"]),
                    started_at=T0 + timedelta(minutes=i),
                )
            )
            st.finish_run(rid, dict(final_test_acc=r["acc"], achieved_density=r["density"]), [])


def _labels(group: dict) -> list[str]:
    labels = [r["label"] for r in group["main"]["rows"]]
    labels += [e["row"] for e in group["dense_diff"]]
    labels += [x for e in group["comparisons"] for x in (e["granet"], e["other"])]
    return labels


def _check_labels(groups: list[dict]) -> None:
    for g in groups:
        for label in _labels(g):
            assert not any(f in label for f in RUNTIME), label
            method = label.split(" ")[0]
            inside = label[len(method) :]
            assert not any(f in inside for f in NOT_FOR.get(method, ())), label
            assert inside.count(",") < 2, label  # at most two fields: no four-line labels


def test_many_configurations_one_section_per_recipe(tmp_path):
    db = tmp_path / "r.duckdb"
    runs = runs_to_write((0.01, 0.05, 0.1), ("granet", "rigl"))
    write_db(db, runs)
    data = report_json(db)
    groups = data["groups"]
    # 4 demo rows + granet and rigl at lr 0.01 and 0.1 = 8 configurations > 6: one section per lr
    assert sorted(g["recipe"] for g in groups) == ["optim.lr=0.01", "optim.lr=0.05", "optim.lr=0.1"]
    _check_labels(groups)
    for g in groups:
        lr = float(g["recipe"].split("=")[1])
        rows = {r["label"]: r for r in g["main"]["rows"]}
        expected_methods = set(DEMO_METHODS) if lr == 0.05 else {"granet", "rigl"}
        assert {r["method"] for r in g["main"]["rows"]} == expected_methods
        # one recipe: no row needs a label beyond its method
        assert set(rows) == {("dense (baseline)" if m == "dense" else m) for m in expected_methods}
        assert any("8 configurations in 3 training recipes" in n and "--sweep" in n for n in g["main"]["notes"])
        for method in ("granet", "rigl"):
            densities = g["main"]["densities"]
            cell = rows[method]["cells"][densities.index(0.1)]
            mine = [r for r in runs if r["method"] == method and r["density"] == 0.1 and r["lr"] == lr]
            # runtime fields do not split a cell: the demo's (device auto) and the user's (cpu) runs pool
            assert sorted(cell["run_ids"]) == sorted(r["run_id"] for r in mine)
            assert cell["n"] == (5 if lr == 0.05 else 3)
            assert abs(cell["mean"] - statistics.fmean(r["acc"] for r in mine)) < 1e-12
        for e in g["comparisons"]:  # the comparisons stay inside the section's recipe
            assert e["granet"] in rows and e["other"] in rows


def test_comparisons_within_one_recipe_when_not_split(tmp_path):
    db = tmp_path / "r.duckdb"
    runs = [r for r in runs_to_write((0.1,), ("granet",)) if r["method"] in ("granet", "rigl", "dense")]
    write_db(db, runs)
    (g,) = report_json(db)["groups"]
    assert g["recipe"] == ""
    _check_labels([g])
    labels = {r["label"] for r in g["main"]["rows"]}
    assert labels == {
        "dense (baseline) (optim.lr=0.05)",
        "granet (optim.lr=0.05)",
        "granet (optim.lr=0.1)",
        "rigl (optim.lr=0.05)",
    }
    lr = {lab: re.search(r"optim\.lr=([0-9.]+)", lab).group(1) for lab in labels}  # type: ignore[union-attr]
    pairs = {(e["granet"], e["other"]) for e in g["comparisons"]}
    assert pairs == {("granet (optim.lr=0.05)", "rigl (optim.lr=0.05)")}
    assert all(lr[a] == lr[b] for a, b in pairs)
    # granet at lr 0.1 has no dense baseline of its recipe: no difference to dense for it
    assert {e["row"] for e in g["dense_diff"]} == {"granet (optim.lr=0.05)", "rigl (optim.lr=0.05)"}


def test_terminal_tables_name_their_recipe(tmp_path, cli):
    db = tmp_path / "r.duckdb"
    write_db(db, runs_to_write((0.01, 0.05, 0.1), ("granet", "rigl")))
    r = cli("report", "--db", db, "--out", tmp_path / "out", "--format", "md")
    assert r.exit_code == 0, r.output
    text = " ".join(r.output.split())
    for lr in ("0.01", "0.05", "0.1"):
        assert f"digits / mlp, recipe optim.lr={lr}: Final test accuracy (%)" in text
    assert "`granet report --sweep NAME` reports one sweep" in text
    assert max(len(line) for line in r.output.splitlines()) <= 80
    assert "device" not in r.output and "num_workers" not in r.output
