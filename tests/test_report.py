"""Reports: numbers in the tables are checked against statistics computed here."""

from __future__ import annotations

import re
import statistics
import xml.etree.ElementTree as ET
from datetime import datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path

import pytest

from granet_cli.report import ReportError, build_report, summary_tables
from granet_cli.store import Store

DASH = "–"
T0 = datetime(2024, 5, 1, 12, 0, 0)

# (method, target density) -> final accuracies of seeds 0..k-1 (fractions)
ACC = {
    ("granet", 0.02): [0.801, 0.812, 0.795],
    ("granet", 0.1): [0.902, 0.915, 0.899],
    ("rigl", 0.02): [0.781, 0.779, 0.790],
    ("rigl", 0.1): [0.905, 0.921, 0.918],
    ("set", 0.02): [0.760, 0.772, 0.751],
    ("set", 0.1): [0.880, 0.884, 0.890],
    ("static", 0.1): [0.851],  # single seed, and no run at 0.02
    ("dense", 1.0): [0.951, 0.948, 0.955],
}
BEST_ACC_OFFSET = 0.01  # best_test_acc = final + offset
FAILED = dict(method="rigl", density=0.1, seed=7, acc=0.999, error="CUDA error | out of memory")
DIVERGED = dict(method="set", density=0.02, seed=9, error="loss is NaN at epoch 4")


def cell(vals: list[float], scale: float = 100.0, decimals: int = 2, suffix: str = "") -> str:
    mean = statistics.mean(vals)
    std = statistics.stdev(vals) if len(vals) > 1 else 0.0
    return f"{mean * scale:.{decimals}f}{suffix} ± {std * scale:.{decimals}f} (n={len(vals)})"


def flops(method: str, d: float, seed: int) -> float:
    return round(d * 1.5 + 0.001 * seed, 6) if method != "dense" else 1.0


def make_db(path: Path, *, dataset: str = "digits", model: str = "mlp", sweep: str | None = "sw1",
            masks: bool = True) -> None:
    with Store(path) as st:
        if sweep:
            st.add_sweep(sweep, "paper-grid", {"method": ["granet", "rigl"]}, created_at=T0)
        i = 0
        for (method, d), vals in ACC.items():
            for seed, acc in enumerate(vals):
                i += 1
                rid = f"{dataset}-{model}-{method}-{d}-{seed}"
                st.start_run(dict(run_id=rid, sweep_id=sweep, spec_hash=rid, method=method, model=model,
                                  dataset=dataset, target_density=d, seed=seed, spec_json="{}",
                                  started_at=T0 + timedelta(minutes=i)))
                for e in range(4):
                    st.add_epoch(rid, dict(epoch=e, step=10 * (e + 1), test_acc=acc * (e + 1) / 4, density=d))
                if masks and method != "dense":
                    st.add_mask_updates(rid, [dict(step=s, target_density=d, dropped=3, grown=3,
                                                   density=max(d, 1 - s / 40)) for s in (0, 10, 20, 30, 40)])
                st.finish_run(rid, dict(final_test_acc=acc, best_test_acc=acc + BEST_ACC_OFFSET, final_density=d,
                                        itop_rate=min(1.0, 2 * d), train_flops_frac=flops(method, d, seed),
                                        inference_flops_frac=d, wall_seconds=10.0 + seed),
                              [dict(name="fc.weight", shape=[10, 64], numel=640, final_density=d)])
        f = FAILED
        st.start_run(dict(run_id=f"{dataset}-failed", sweep_id=sweep, spec_hash="f", method=f["method"], model=model,
                          dataset=dataset, target_density=f["density"], seed=f["seed"], spec_json="{}",
                          started_at=T0))
        st.fail_run(f"{dataset}-failed", "failed", f["error"], dict(final_test_acc=f["acc"], best_test_acc=f["acc"]))
        dv = DIVERGED
        st.start_run(dict(run_id=f"{dataset}-diverged", sweep_id=sweep, spec_hash="d", method=dv["method"],
                          model=model, dataset=dataset, target_density=dv["density"], seed=dv["seed"],
                          spec_json="{}", started_at=T0))
        st.fail_run(f"{dataset}-diverged", "diverged", dv["error"], dict(final_test_acc=0.999))
        st.start_run(dict(run_id=f"{dataset}-running", sweep_id=sweep, spec_hash="r", method="granet", model=model,
                          dataset=dataset, target_density=0.1, seed=5, spec_json="{}", started_at=T0))
        st.add_epoch(f"{dataset}-running", dict(epoch=0, test_acc=0.999))


# ------------------------------------------------------------------ markdown parsing
SEP_RE = re.compile(r"^\|(\s*:?-{3,}:?\s*\|)+$")


def split_row(line: str) -> list[str]:
    assert line.startswith("|") and line.endswith("|"), line
    parts = re.split(r"(?<!\\)\|", line[1:-1])
    return [p.strip() for p in parts]


def md_section(md: str, heading: str) -> str:
    start = md.index(heading + "\n")
    nxt = re.search(r"^#{1,3} ", md[start + len(heading):], flags=re.M)
    return md[start: start + len(heading) + (nxt.start() if nxt else len(md))]


def md_table(section: str) -> tuple[list[str], list[list[str]]]:
    lines = [ln for ln in section.splitlines() if ln.startswith("|")]
    assert len(lines) >= 3, section
    header = split_row(lines[0])
    assert SEP_RE.match(lines[1]), lines[1]
    rows = [split_row(ln) for ln in lines[2:]]
    assert all(len(r) == len(header) for r in rows)
    return header, rows


def unbold(text: str) -> tuple[str, bool]:
    m = re.fullmatch(r"\*\*(.*)\*\*", text)
    return (m.group(1), True) if m else (text, False)


SPARSE_METHODS = ["granet", "rigl", "set", "static"]
DENSITIES = [0.02, 0.1]


def expected_best() -> dict[float, str]:
    best = {}
    for d in DENSITIES:
        cands = {m: statistics.mean(ACC[(m, d)]) for m in SPARSE_METHODS if (m, d) in ACC}
        best[d] = max(cands, key=cands.get)
    return best


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("rep")
    db = tmp / "r.duckdb"
    make_db(db)
    res = build_report(db, sweep="paper-grid", out_dir=tmp / "out", fmt="both")
    return res, db, tmp


def test_files_named_after_sweep(report):
    res, _db, tmp = report
    assert res.md_path == tmp / "out" / "paper-grid.md"
    assert res.html_path == tmp / "out" / "paper-grid.html"
    assert res.md_path.exists() and res.html_path.exists()


def test_markdown_main_table(report):
    res, _db, _tmp = report
    md = res.md_path.read_text(encoding="utf-8")
    header, rows = md_table(md_section(md, "### Final test accuracy (%)"))
    assert header == ["method", "0.02", "0.1"]
    labels = [r[0].strip("*") for r in rows]
    # dense baseline first, then the fixed method order
    assert labels == ["dense (baseline)", "granet", "rigl", "set", "static"]
    best = expected_best()
    dense_txt = cell(ACC[("dense", 1.0)])
    assert f"Dense baseline (density 1.0): {dense_txt}" in md
    for r in rows:
        method = r[0].strip("*")
        for d, raw in zip(DENSITIES, r[1:]):
            text, bold = unbold(raw)
            if method == "dense (baseline)":
                assert text == dense_txt and not bold
                continue
            if (method, d) not in ACC:
                assert raw == DASH
                continue
            assert text == cell(ACC[(method, d)]), (method, d)
            assert bold == (best[d] == method), (method, d, raw)
    # static has a single seed: std shown as 0.00
    assert rows[labels.index("static")][2] == f"{ACC[('static', 0.1)][0] * 100:.2f} ± 0.00 (n=1)"
    # the failed/diverged runs are not averaged in: n=3 for rigl@0.1 and set@0.02, and 99.90 appears nowhere
    assert unbold(rows[labels.index("rigl")][2])[0].endswith("(n=3)")
    assert unbold(rows[labels.index("set")][1])[0].endswith("(n=3)")
    assert "99.90" not in md_section(md, "### Final test accuracy (%)")


def test_markdown_further_tables(report):
    res, _db, _tmp = report
    md = res.md_path.read_text(encoding="utf-8")
    _h, rows = md_table(md_section(md, "### Training FLOPs (fraction of dense)"))
    by = {r[0].strip("*"): r[1:] for r in rows}
    for m in ("granet", "rigl", "set"):
        for d, raw in zip(DENSITIES, by[m]):
            vals = [flops(m, d, s) for s in range(len(ACC[(m, d)]))]
            assert raw == cell(vals, 1.0, 3, "x")
    assert by["dense (baseline)"][0] == "1.000x ± 0.000 (n=3)"
    _h, rows = md_table(md_section(md, "### Wall time (s)"))
    by = {r[0].strip("*"): r[1:] for r in rows}
    assert by["granet"][0] == cell([10.0, 11.0, 12.0], 1.0, 1)
    assert by["static"] == [DASH, "10.0 ± 0.0 (n=1)"]
    for heading in ("### Inference FLOPs (fraction of dense)", "### ITOP rate (fraction of weights ever active)",
                    "### Final achieved density"):
        md_table(md_section(md, heading))


def test_markdown_not_completed_section(report):
    res, _db, _tmp = report
    md = res.md_path.read_text(encoding="utf-8")
    sec = md_section(md, "## Runs not completed (running / failed / diverged)")
    header, rows = md_table(sec)
    assert header == ["run_id", "method", "density", "seed", "status", "error"]
    by = {r[0]: r for r in rows}
    assert set(by) == {"digits-failed", "digits-diverged", "digits-running"}
    assert by["digits-failed"][1:5] == ["rigl", "0.1", "7", "failed"]
    assert by["digits-failed"][5] == FAILED["error"].replace("|", "\\|")
    assert by["digits-diverged"][4] == "diverged" and by["digits-diverged"][5] == DIVERGED["error"]
    assert by["digits-running"][4] == "running"


def test_markdown_plots(report):
    res, _db, tmp = report
    md = res.md_path.read_text(encoding="utf-8")
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert len(links) == 3
    for link in links:
        assert link.startswith("paper-grid_files/") and link.endswith(".svg")
        f = res.md_path.parent / link
        root = ET.fromstring(f.read_text(encoding="utf-8"))
        assert root.tag.endswith("svg")


class _Collect(HTMLParser):
    def __init__(self):
        super().__init__()
        self.svgs = 0
        self.refs: list[str] = []
        self.meta: list[dict] = []
        self.stack: list[str] = []
        self.strong: list[str] = []
        self._in_strong = False
        self.style = ""
        self._in_style = False
        self.tables = 0

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "svg":
            self.svgs += 1
        if tag == "table":
            self.tables += 1
        if tag in ("script", "link", "img", "iframe", "source", "use", "image"):
            for k in ("src", "href", "xlink:href"):
                if a.get(k):
                    self.refs.append(a[k])
        if tag == "script":
            self.refs.append("<script>")
        if tag == "meta":
            self.meta.append(a)
        if tag == "strong":
            self._in_strong = True
            self.strong.append("")
        if tag == "style":
            self._in_style = True

    def handle_endtag(self, tag):
        if tag == "strong":
            self._in_strong = False
        if tag == "style":
            self._in_style = False

    def handle_data(self, data):
        if self._in_strong:
            self.strong[-1] += data
        if self._in_style:
            self.style += data


def test_html(report):
    res, _db, _tmp = report
    page = res.html_path.read_text(encoding="utf-8")
    p = _Collect()
    p.feed(page)
    p.close()
    assert p.svgs >= 3
    assert not [r for r in p.refs if r.startswith(("http://", "https://", "//")) or r == "<script>"], p.refs
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)
    assert "@import" not in page and "url(http" not in page
    assert any(m.get("name") == "viewport" for m in p.meta)
    assert "overflow-x: auto" in p.style
    # the best cell per column is in <strong>
    best = expected_best()
    expected_strong = {cell(ACC[(best[d], d)]) for d in DENSITIES}
    assert expected_strong <= set(p.strong)
    # the failed run's error is listed, html-escaped by the parser round trip
    assert FAILED["error"] in page.replace("&#34;", '"')
    # each inline svg is well-formed XML
    svgs = re.findall(r"<svg\b.*?</svg>", page, flags=re.S)
    assert len(svgs) >= 3
    ids: list[str] = []
    for s in svgs:
        root = ET.fromstring(s)
        ids += [el.get("id") for el in root.iter() if el.get("id")]
    assert len(ids) == len(set(ids)), "duplicate ids across inline svgs"


def test_main_tables_and_rich(report):
    res, _db, _tmp = report
    (t,) = res.main_tables
    assert (t.dataset, t.model) == ("digits", "mlp")
    assert t.header == ["method", "0.02", "0.1"]
    rows = {r[0]: r[1:] for r in t.plain_rows()}
    assert rows["granet"] == [cell(ACC[("granet", 0.02)]), cell(ACC[("granet", 0.1)])]
    assert rows["static"][0] == DASH
    from rich.console import Console
    con = Console(record=True, width=200)
    con.print(t.to_rich())
    out = con.export_text()
    assert cell(ACC[("rigl", 0.1)]) in out and "dense (baseline)" in out


def test_best_metric_and_formats(tmp_path: Path):
    db = tmp_path / "r.duckdb"
    make_db(db, sweep=None, masks=False)
    (t,) = summary_tables(db, metric="best_test_acc")
    rows = {r[0]: r[1:] for r in t.plain_rows()}
    assert rows["set"][1] == cell([a + BEST_ACC_OFFSET for a in ACC[("set", 0.1)]])
    res = build_report(db, out_dir=tmp_path / "o", fmt="md")
    assert res.md_path == tmp_path / "o" / "granet-report.md" and res.html_path is None
    assert not (tmp_path / "o" / "granet-report.html").exists()
    md = res.md_path.read_text(encoding="utf-8")
    assert "no mask updates recorded" in md  # a plot without data says so
    assert len(re.findall(r"!\[", md)) == 2
    res = build_report(db, out_dir=tmp_path / "o", fmt="html", name="custom")
    assert res.md_path is None and res.html_path == tmp_path / "o" / "custom.html"
    assert "no mask updates recorded" in res.html_path.read_text(encoding="utf-8")
    with pytest.raises(ReportError):
        build_report(db, out_dir=tmp_path / "o", fmt="pdf")
    with pytest.raises(ReportError):
        build_report(db, out_dir=tmp_path / "o", metric="loss")
    with pytest.raises(ReportError, match="no sweep"):
        build_report(db, sweep="nope", out_dir=tmp_path / "o")


def test_groups_by_dataset_and_model(tmp_path: Path):
    db = tmp_path / "r.duckdb"
    make_db(db, sweep=None, masks=False)
    with Store(db) as st:
        for seed, acc in enumerate([0.5, 0.6]):
            rid = f"c10-{seed}"
            st.start_run(dict(run_id=rid, sweep_id=None, spec_hash=rid, method="gmp", model="resnet32",
                              dataset="cifar10", target_density=0.05, seed=seed, spec_json="{}", started_at=T0))
            st.finish_run(rid, dict(final_test_acc=acc), [])
    tables = summary_tables(db)
    assert [(t.dataset, t.model) for t in tables] == [("cifar10", "resnet32"), ("digits", "mlp")]
    c10 = tables[0]
    assert c10.header == ["method", "0.05"]
    assert c10.plain_rows() == [["gmp", cell([0.5, 0.6])]]
    assert any("No completed dense baseline" in n for n in c10.notes)
    res = build_report(db, out_dir=tmp_path / "o", fmt="md")
    md = res.md_path.read_text(encoding="utf-8")
    assert "## cifar10 / resnet32" in md and "## digits / mlp" in md
    # the digits numbers are not mixed with cifar10
    assert "(n=2)" not in md_section(md, "## digits / mlp").split("### Training FLOPs")[0]


def test_missing_and_empty_db(tmp_path: Path):
    missing = tmp_path / "nope.duckdb"
    with pytest.raises(ReportError, match="not found") as ei:
        build_report(missing, out_dir=tmp_path / "o")
    assert "\n" not in str(ei.value) and str(missing) in str(ei.value)
    assert not missing.exists()

    empty = tmp_path / "empty.duckdb"
    with Store(empty):
        pass
    with pytest.raises(ReportError, match="no completed runs"):
        build_report(empty, out_dir=tmp_path / "o")

    only_failed = tmp_path / "failed.duckdb"
    with Store(only_failed) as st:
        st.start_run(dict(run_id="x", sweep_id=None, spec_hash="x", method="rigl", model="mlp", dataset="digits",
                          target_density=0.1, seed=0, spec_json="{}", started_at=T0))
        st.fail_run("x", "failed", "boom", dict(final_test_acc=0.9))
    with pytest.raises(ReportError, match="no completed runs"):
        build_report(only_failed, out_dir=tmp_path / "o")
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())

    garbage = tmp_path / "garbage.duckdb"
    garbage.write_bytes(b"\x00\x01not a database" * 100)
    with pytest.raises(ReportError) as ei:
        build_report(garbage, out_dir=tmp_path / "o")
    assert str(garbage) in str(ei.value)
