"""`granet report --interval ci|std` and the per-seed appendix: every number recomputed here from the
values the test wrote (statistics.stdev, the t table), never by the report's code."""

from __future__ import annotations

import json
import math
import statistics

from granet_cli.report import build_report, report_json

from .test_report import ACC, ci_half, make_db, md_section, md_table


def expected_cell(vals: list[float], interval: str, table_n: int = 3) -> str:
    text = f"{statistics.mean(vals) * 100:.2f}"
    if len(vals) > 1:
        half = statistics.stdev(vals) if interval == "std" else ci_half(vals)
        assert half is not None
        text += f" ± {half * 100:.2f}"
    return text + ("" if len(vals) == table_n else f" (n={len(vals)})")


def _main_rows(data: dict) -> dict[str, dict]:
    return {r["label"]: r for r in data["groups"][0]["main"]["rows"]}


def test_interval_std_cells_and_notes(tmp_path):
    db = tmp_path / "r.duckdb"
    make_db(db)
    for interval in ("ci", "std"):
        data = report_json(db, interval=interval)
        assert data["interval"] == interval
        rows = _main_rows(data)
        main = data["groups"][0]["main"]
        densities = main["densities"]
        for (method, d), vals in ACC.items():
            label = "dense (baseline)" if method == "dense" else method
            j = 0 if method == "dense" else densities.index(d)
            c = rows[label]["cells"][j]
            assert c["text"] == expected_cell(vals, interval), (method, d)
            assert math.isclose(c["std"], statistics.stdev(vals)) if len(vals) > 1 else True
        note = " ".join(main["notes"])
        if interval == "std":
            assert "standard deviation over seeds" in note and "not a confidence interval" in note
            assert "95 % confidence interval" not in note
        else:
            assert "95 % confidence interval over seeds" in note


def test_per_seed_values_in_json_and_appendix(tmp_path):
    db = tmp_path / "r.duckdb"
    make_db(db)
    data = report_json(db)
    per_seed = data["groups"][0]["main"]["per_seed"]
    expected = {
        (f"digits-mlp-{m}-{d}-{seed}", seed, round(acc, 9))
        for (m, d), vals in ACC.items()
        for seed, acc in enumerate(vals)
    }
    got = {(v["run_id"], v["seed"], round(v["value"], 9)) for v in per_seed}
    assert got == expected  # every completed run once; the failed/diverged/running ones never
    for row in data["groups"][0]["main"]["rows"]:
        for c in row["cells"]:
            if c is not None:
                assert len(c["run_ids"]) == len(c["values"]) == len(c["seeds"])

    res = build_report(db, out_dir=tmp_path / "out", fmt="both", interval="std")
    assert res.md_path is not None and res.html_path is not None
    md = res.md_path.read_text()
    assert "mean ± standard deviation over seeds" in md
    header, rows = md_table(md_section(md, "#### digits / mlp: Final test accuracy (%)"))
    assert header == ["row", "density", "seed", "run_id", "value"]
    table = {r[3].strip("`"): r for r in rows}
    assert set(table) == {rid for rid, _s, _v in expected}
    for (m, d), vals in ACC.items():
        for seed, acc in enumerate(vals):
            r = table[f"digits-mlp-{m}-{d}-{seed}"]
            assert r[1] == (f"{d:g}") and r[2] == str(seed) and r[4] == f"{acc * 100:.2f}"
    html_text = res.html_path.read_text()
    assert 'id="digits-mlp-per-seed"' in html_text
    assert all(f"<code>{rid}</code>" in html_text for rid, _s, _v in expected)


def test_cli_interval_option(tmp_path, cli):
    db = tmp_path / "r.duckdb"
    make_db(db)
    r = cli("report", "--db", db, "--interval", "std", "--json")
    assert r.exit_code == 0, r.output
    data = json.loads(r.output)
    assert data["interval"] == "std"
    vals = ACC[("granet", 0.1)]
    cell = _main_rows(data)["granet"]["cells"][data["groups"][0]["main"]["densities"].index(0.1)]
    assert cell["text"] == expected_cell(vals, "std")
    r = cli("report", "--db", db, "--interval", "sem", "--json")
    assert r.exit_code == 2
