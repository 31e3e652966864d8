"""`granet report --latex`: the .tex compiles with a real LaTeX engine and the PDF shows the numbers.

pdflatex, bibtex and pdftotext come from Debian's texlive-latex-recommended and poppler-utils
(`make latex` installs them, `make test` runs it); where they are missing the tests skip and say why.
The main table's cells are checked against means and intervals computed in the test (test_report's
hand-computed statistics), the published numbers against granet_cli/data/published.csv."""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
from pathlib import Path

import pytest

from granet_cli.report import build_report, load_published
from granet_cli.report.latex import escape
from granet_cli.store import Store

from .test_report import ACC, T0, cell, make_db

TOOLS = ("pdflatex", "bibtex", "pdftotext")
pytestmark = pytest.mark.slow


def _need_tools() -> None:
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        reason = (
            f"no LaTeX: {', '.join(missing)} not on PATH (`make latex` installs Debian's "
            "texlive-latex-recommended and poppler-utils)"
        )
        print(reason)
        pytest.skip(reason)


def _compile(tex: Path, *, bib: bool = False) -> str:
    """pdflatex (bibtex, pdflatex twice when ``bib``) in the .tex's folder; the PDF's text."""

    def run(*cmd: str) -> None:
        p = subprocess.run(cmd, cwd=tex.parent, capture_output=True, text=True, timeout=120)
        assert p.returncode == 0, f"{' '.join(cmd)} failed:\n{p.stdout[-3000:]}"

    latex = ("pdflatex", "-interaction=nonstopmode", "-halt-on-error", tex.name)
    run(*latex)
    if bib:
        run("bibtex", tex.stem)
        run(*latex)
    run(*latex)
    out = subprocess.run(["pdftotext", tex.with_suffix(".pdf").name, "-"], cwd=tex.parent, capture_output=True)
    assert out.returncode == 0
    return " ".join(out.stdout.decode("utf-8").split())


def test_report_tex_compiles_with_tables_figures_and_labels(tmp_path: Path, cli):
    _need_tools()
    db = tmp_path / "r.duckdb"
    make_db(db)
    r = cli("report", "--db", db, "--sweep", "paper-grid", "--out", tmp_path / "out", "--format", "md", "--latex")
    tex_path = tmp_path / "out" / "paper-grid.tex"
    assert r.exit_code == 0, r.output
    assert f"wrote{tex_path}" in "".join(r.output.split())  # the terminal may wrap the path
    tex = tex_path.read_text(encoding="utf-8")
    for key in ("main", "dense_diff", "budget"):
        assert f"\\label{{tab:digits-mlp:{key.replace('_', '-')}}}" in tex
    assert "\\toprule" in tex and "\\midrule" in tex and "\\bottomrule" in tex
    # significantly worse than dense: red, never green (the fixture's sparse cells are all below dense)
    diff_table = tex.split("label{tab:digits-mlp:dense-diff}")[1].split("end{table}")[0]
    assert "\\textcolor{red!70!black}" in diff_table and "green" not in diff_table
    # a PDF beside every SVG, each included by the .tex
    svgs = sorted(p.stem for p in (tmp_path / "out" / "paper-grid_files").glob("*.svg"))
    pdfs = sorted(p.stem for p in (tmp_path / "out" / "paper-grid_files").glob("*.pdf"))
    assert svgs and pdfs == svgs
    for stem in pdfs:
        assert f"{{paper-grid_files/{stem}.pdf}}" in tex
        assert (tmp_path / "out" / "paper-grid_files" / f"{stem}.pdf").read_bytes().startswith(b"%PDF")
    assert (tmp_path / "out" / "paper-grid.bib").exists()

    text = _compile(tex_path)
    # the main table's cells, recomputed here from the per-seed accuracies
    for (method, d), vals in ACC.items():
        expected = cell(vals)
        assert expected in text, (method, d, expected)
    # captions state n, the interval and the test
    assert "n = 3 distinct seeds" in text and "95 % confidence interval" in text and "Welch" in text
    assert "Holm" in text
    # difference to dense: granet at 0.1 minus dense, in percentage points
    dense = statistics.mean(ACC[("dense", 1.0)])
    diff = (statistics.mean(ACC[("granet", 0.1)]) - dense) * 100
    assert f"{diff:+.2f}".replace("+", "") in text
    # the budget table and a figure caption
    assert "Budget" in text and "Figure 1" in text


def test_published_numbers_cited_from_the_bib_and_labels_escaped(tmp_path: Path):
    """A published number shown gets a .bib entry cited beside it; row labels holding every LaTeX
    special character print as typed."""
    _need_tools()
    db = tmp_path / "r.duckdb"
    odd = ("a_b%c&d#e$f", "x{y}~z^w\\v")
    with Store(db) as st:
        for method, d, accs in (("rigl", 0.1, [0.725, 0.731]), ("dense", 1.0, [0.770, 0.765])):
            for value in odd:
                for seed, acc in enumerate(accs):
                    rid = f"{method}-{value}-{seed}"
                    spec = {"optim": {"epochs": 100, "note": value}, "sparsity": {"method": method}}
                    st.start_run(
                        dict(
                            run_id=rid,
                            sweep_id=None,
                            spec_hash=rid,
                            method=method,
                            model="resnet50_imagenet",
                            dataset="imagenet",
                            target_density=d,
                            seed=seed,
                            spec_json=json.dumps(spec),
                            started_at=T0,
                        )
                    )
                    st.finish_run(rid, dict(final_test_acc=acc), [])
    res = build_report(db, out_dir=tmp_path / "out", fmt="md", name="pub", latex=True)
    assert res.tex_path is not None
    bib = (tmp_path / "out" / "pub.bib").read_text(encoding="utf-8")
    shown = [
        p
        for p in load_published()
        if p["dataset"] == "imagenet" and (p["method"], p["density"]) in (("rigl", 0.1), ("dense", 1.0))
    ]
    assert shown
    assert bib.count("@misc{") == len({(p["paper"], p["table"], p["source"]) for p in shown})
    text = _compile(res.tex_path, bib=True)
    for p in shown:
        assert f"{p['number']:.2f}" in text
    assert "References" in text and "Evci" in text and "[?]" not in text
    for value in odd:
        assert value in text, value


def test_escape_prints_every_special_character(tmp_path: Path):
    _need_tools()
    raw = "a_b%c&d#e$f{g}h~i^j\\k<l>m|n 95.1 ± 0.2 – ≈ −3 ▲ é"
    (tmp_path / "e.tex").write_text(
        "\\documentclass{article}\\usepackage[utf8]{inputenc}\\usepackage{amssymb}"
        f"\\begin{{document}}{escape(raw)}\\end{{document}}\n",
        encoding="utf-8",
    )
    text = _compile(tmp_path / "e.tex")
    assert "a_b%c&d#e$f{g}h~i^j\\k<l>m|n 95.1 ± 0.2" in text
    assert "e" in text.split("▲")[-1]
