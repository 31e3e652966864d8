"""Reports: numbers in the tables are checked against statistics computed here.

The 95 % intervals and Welch's tests are recomputed by hand: the t critical values are
tabulated constants, Welch's t and Welch-Satterthwaite df are the textbook formulas, and the
p-value is the two-sided tail of Student's t at that t and df."""

from __future__ import annotations

import html
import json
import math
import re
import statistics
import xml.etree.ElementTree as ET
from datetime import datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path

import pytest

from granet_cli.report import ReportError, build_report, summary_tables
from granet_cli.store import Store

from ..conftest import ROOT

DASH = "–"
T0 = datetime(2024, 5, 1, 12, 0, 0)

# (method, target density) -> final accuracies of seeds 0..k-1 (fractions)
ACC = {
    ("granet", 0.02): [0.801, 0.812, 0.795],
    ("granet", 0.1): [0.902, 0.915, 0.899],
    ("rigl", 0.02): [0.771, 0.769, 0.780],
    ("rigl", 0.1): [0.905, 0.921, 0.918],
    ("set", 0.02): [0.760, 0.772, 0.751],
    ("set", 0.1): [0.880, 0.884, 0.890],
    ("static", 0.1): [0.851],  # single seed, and no run at 0.02
    ("dense", 1.0): [0.951, 0.948, 0.955],
}
BEST_ACC_OFFSET = 0.01  # best_test_acc = final + offset
FAILED = dict(method="rigl", density=0.1, seed=7, acc=0.999, error="CUDA error | out of memory")
DIVERGED = dict(method="set", density=0.02, seed=9, error="loss is NaN at epoch 4")


#: two-sided 95 % critical values t(0.975, df) from a t table (not from scipy)
T975 = {1: 12.706204736, 2: 4.302652730, 3: 3.182446305, 4: 2.776445105, 5: 2.570581836}


def ci_half(vals: list[float]) -> float | None:
    """Half-width of the t-based 95 % confidence interval of the mean, by hand."""
    n = len(vals)
    if n < 2:
        return None
    return T975[n - 1] * statistics.stdev(vals) / math.sqrt(n)


def welch_by_hand(a: list[float], b: list[float]) -> tuple[float, float, float, float]:
    """(mean difference, Welch's t, Welch-Satterthwaite df, two-sided p)."""
    from scipy.stats import t as student_t

    ma, mb = sum(a) / len(a), sum(b) / len(b)
    va = sum((x - ma) ** 2 for x in a) / (len(a) - 1)
    vb = sum((x - mb) ** 2 for x in b) / (len(b) - 1)
    se2 = va / len(a) + vb / len(b)
    t = (ma - mb) / math.sqrt(se2)
    df = se2**2 / ((va / len(a)) ** 2 / (len(a) - 1) + (vb / len(b)) ** 2 / (len(b) - 1))
    return ma - mb, t, df, 2 * float(student_t.sf(abs(t), df))


def cell(vals: list[float], scale: float = 100.0, decimals: int = 2, table_n: int = 3) -> str:
    """The expected cell text: mean ± CI half-width; (n=k) only where k is not the table's n."""
    text = f"{statistics.mean(vals) * scale:.{decimals}f}"
    half = ci_half(vals)
    if half is not None:
        text += f" ± {half * scale:.{decimals}f}"
    return text + ("" if len(vals) == table_n else f" (n={len(vals)})")


def flops(method: str, d: float, seed: int) -> float:
    return round(d * 1.5 + 0.001 * seed, 6) if method != "dense" else 1.0


def make_db(
    path: Path, *, dataset: str = "digits", model: str = "mlp", sweep: str | None = "sw1", masks: bool = True
) -> None:
    with Store(path) as st:
        if sweep:
            st.add_sweep(sweep, "paper-grid", {"method": ["granet", "rigl"]}, created_at=T0)
        i = 0
        for (method, d), vals in ACC.items():
            for seed, acc in enumerate(vals):
                i += 1
                rid = f"{dataset}-{model}-{method}-{d}-{seed}"
                st.start_run(
                    dict(
                        run_id=rid,
                        sweep_id=sweep,
                        spec_hash=rid,
                        method=method,
                        model=model,
                        dataset=dataset,
                        target_density=d,
                        seed=seed,
                        spec_json="{}",
                        started_at=T0 + timedelta(minutes=i),
                    )
                )
                for e in range(4):
                    st.add_epoch(rid, dict(epoch=e, step=10 * (e + 1), test_acc=acc * (e + 1) / 4, density=d))
                if masks and method != "dense":
                    st.add_mask_updates(
                        rid,
                        [
                            dict(step=s, target_density=d, dropped=3, grown=3, density=max(d, 1 - s / 40))
                            for s in (0, 10, 20, 30, 40)
                        ],
                    )
                st.finish_run(
                    rid,
                    dict(
                        final_test_acc=acc,
                        best_test_acc=acc + BEST_ACC_OFFSET,
                        achieved_density=d,
                        itop_rate=min(1.0, 2 * d),
                        train_flops_frac=flops(method, d, seed),
                        inference_flops_frac=d,
                        wall_seconds=10.0 + seed,
                    ),
                    [dict(name="fc.weight", shape=[10, 64], numel=640, achieved_density=d)],
                )
        for r, status, final in (
            (FAILED, "failed", dict(final_test_acc=FAILED["acc"], best_test_acc=FAILED["acc"])),
            (DIVERGED, "diverged", dict(final_test_acc=0.999)),
        ):
            st.start_run(
                dict(
                    run_id=f"{dataset}-{status}",
                    sweep_id=sweep,
                    spec_hash=status[0],
                    method=r["method"],
                    model=model,
                    dataset=dataset,
                    target_density=r["density"],
                    seed=r["seed"],
                    spec_json="{}",
                    started_at=T0,
                )
            )
            st.fail_run(f"{dataset}-{status}", status, r["error"], final)
        st.start_run(
            dict(
                run_id=f"{dataset}-running",
                sweep_id=sweep,
                spec_hash="r",
                method="granet",
                model=model,
                dataset=dataset,
                target_density=0.1,
                seed=5,
                spec_json="{}",
                started_at=T0,
            )
        )
        st.add_epoch(f"{dataset}-running", dict(epoch=0, test_acc=0.999))


# ------------------------------------------------------------------ markdown parsing
SEP_RE = re.compile(r"^\|(\s*:?-{3,}:?\s*\|)+$")


def split_row(line: str) -> list[str]:
    assert line.startswith("|") and line.endswith("|"), line
    parts = re.split(r"(?<!\\)\|", line[1:-1])
    return [p.strip() for p in parts]


def md_section(md: str, heading: str) -> str:
    start = md.index(heading + "\n")
    nxt = re.search(r"^#{1,3} ", md[start + len(heading) :], flags=re.M)
    return md[start : start + len(heading) + (nxt.start() if nxt else len(md))]


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


def holm_by_hand(ps: list[float]) -> list[float]:
    """Holm's step-down adjustment written out: sort, multiply the k-th smallest by (m - k), keep it
    monotone, cap at 1."""
    order = sorted(range(len(ps)), key=lambda i: ps[i])
    out, running = [0.0] * len(ps), 0.0
    for k, i in enumerate(order):
        running = max(running, min(1.0, (len(ps) - k) * ps[i]))
        out[i] = running
    return out


def expected_marks() -> dict[float, tuple[str | None, set[str]]]:
    """density -> (significantly best method or None, methods not significantly different from the
    best), by hand: the highest mean is best only if Welch's p, Holm-adjusted over every test of the
    table (all columns), is < 0.05 against every other sparse cell (a one-seed cell cannot be tested,
    so it blocks "best"); otherwise it and every testable cell with adjusted p >= 0.05 are marked."""
    tests = {}  # (density, other method) -> raw p of the top cell against it
    tops, others_of = {}, {}
    for d in DENSITIES:
        cands = {m: ACC[(m, d)] for m in SPARSE_METHODS if (m, d) in ACC}
        top = max(cands, key=lambda m: statistics.mean(cands[m]))
        tops[d], others_of[d] = top, {m: v for m, v in cands.items() if m != top}
        for m, v in others_of[d].items():
            if len(v) > 1:
                tests[(d, m)] = welch_by_hand(cands[top], v)[3]
    keys = list(tests)
    adjusted = dict(zip(keys, holm_by_hand([tests[k] for k in keys])))
    out = {}
    for d in DENSITIES:
        ps = {m: adjusted[(d, m)] for m in others_of[d] if (d, m) in adjusted}
        if len(ps) == len(others_of[d]) and all(p < 0.05 for p in ps.values()):
            out[d] = (tops[d], set())
        else:
            tied = {tops[d]} | {m for m, p in ps.items() if p >= 0.05}
            out[d] = (None, tied if len(tied) > 1 else set())
    return out


def test_the_fixture_covers_both_marks():
    """The data set has one column with a significant winner and one with a tie."""
    marks = expected_marks()
    assert marks[0.02] == ("granet", set())
    assert marks[0.1] == (None, {"rigl", "granet"})  # set is significantly worse, static has one seed


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
    section = md_section(md, "### Final test accuracy (%)")
    header, rows = md_table(section)
    assert header == ["method", "0.02", "0.1"]
    labels = [r[0].strip("*") for r in rows]
    # dense baseline first, then the fixed method order
    assert labels == ["dense (baseline)", "granet", "rigl", "set", "static"]
    marks = expected_marks()
    dense_txt = cell(ACC[("dense", 1.0)])
    assert f"Dense baseline (density 1.0): {dense_txt}." in section
    # n is stated once for the table; static (one seed) is the only cell that says its own n
    assert "n = 3 distinct seeds per cell unless the cell says otherwise." in section
    assert section.count("(n=") == 1
    for r in rows:
        method = r[0].strip("*")
        for d, raw in zip(DENSITIES, r[1:]):
            text, bold = unbold(raw)
            tie = text.endswith(" ≈")
            text = text.removesuffix(" ≈")
            if method == "dense (baseline)":
                assert text == dense_txt and not bold and not tie
                continue
            if (method, d) not in ACC:
                assert raw == DASH
                continue
            assert text == cell(ACC[(method, d)]), (method, d)
            assert bold == (marks[d][0] == method), (method, d, raw)
            assert tie == (method in marks[d][1]), (method, d, raw)
    # static has a single seed: no interval, its n in the cell
    assert rows[labels.index("static")][2] == f"{ACC[('static', 0.1)][0] * 100:.2f} (n=1)"
    # the failed/diverged runs are not averaged in: rigl@0.1 and set@0.02 equal their 3 completed seeds
    # (checked above), and the failed run's 99.90 appears nowhere
    assert "99.90" not in section


def test_markdown_budget_table(report):
    """Training/inference FLOPs, achieved density, ITOP and wall time in one compact table (the old
    one-table-per-column layout repeated the target density in most of them)."""
    res, _db, _tmp = report
    md = res.md_path.read_text(encoding="utf-8")
    for gone in ("### Training FLOPs", "### Inference FLOPs", "### Final achieved density", "### Wall time"):
        assert gone not in md
    section = md_section(md, "### Budget: densities, FLOPs, ITOP, wall time")
    header, rows = md_table(section)
    # overall_density and nonzero_density were never recorded in this db: their columns are left out, said so
    assert header == ["method", "target density", "final density", "train FLOPs", "infer. FLOPs", "ITOP", "wall s"]
    assert "Not recorded: nonzero weights, overall density." in md
    assert "Means over n = 3 seeds per row unless the row says otherwise." in section
    expected = [["dense (baseline)", "1", "1.0000", "1.000x", "1.000x", "1.000", "11.0"]]
    for m in ("granet", "rigl", "set", "static"):
        for d in DENSITIES:
            if (m, d) not in ACC:
                continue
            seeds = range(len(ACC[(m, d)]))
            label = m if len(seeds) == 3 else f"{m} (n={len(seeds)})"
            expected.append(
                [
                    label,
                    f"{d:g}",
                    f"{d:.4f}",
                    f"{statistics.mean(flops(m, d, s) for s in seeds):.3f}x",
                    f"{d:.3f}x",
                    f"{min(1.0, 2 * d):.3f}",
                    f"{statistics.mean(10.0 + s for s in seeds):.1f}",
                ]
            )
    assert rows == expected


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
    # every figure with data is linked; the ITOP plot has none here (no per-epoch itop_rate) and says so
    assert sorted(links) == sorted(
        f"paper-grid_files/digits-mlp-{k}.svg"
        for k in (
            "accuracy_vs_flops",
            "accuracy_vs_density",
            "accuracy_over_epochs",
            "density_over_steps",
            "mask_updates",
            "layer_density",
        )
    )
    assert "**ITOP rate over epochs:** _no ITOP rate recorded_" in md
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
    # only the significantly best cell is in <strong>; the tied ones are not
    marks = expected_marks()
    assert cell(ACC[("granet", 0.02)]) in p.strong
    for d in DENSITIES:
        for m in marks[d][1]:
            assert cell(ACC[(m, d)]) not in p.strong and f"{cell(ACC[(m, d)])} ≈" in page
    # the accuracy-vs-FLOPs figure is there, inline, with its points
    fig = re.search(r'<figure class="plot" id="digits-mlp-accuracy_vs_flops"[^>]*>(.*?)</figure>', page, flags=re.S)
    assert fig and "<svg" in fig.group(1) and "training FLOPs (fraction of dense)" in fig.group(1)
    # inference FLOPs == density here (as for an MLP): no inference panel repeating accuracy vs density
    assert "inference FLOPs (fraction of dense)" not in fig.group(1) and "No inference panel" in fig.group(0)
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
    assert t.n == 3 and t.best_cells() == {(1, 0)} and t.tied_cells() == {(1, 1), (2, 1)}
    from rich.console import Console

    con = Console(record=True, width=80)
    con.print(t.to_rich())
    out = con.export_text()
    assert max(len(line) for line in out.splitlines()) <= 80
    assert cell(ACC[("rigl", 0.1)]) + " ≈" in out and "dense (baseline)" in out and "…" not in out


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
    assert "no drop-and-grow updates recorded" in md and "no ITOP rate recorded" in md
    assert len(re.findall(r"!\[", md)) == 4  # FLOPs, density, epochs, layers
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
            st.start_run(
                dict(
                    run_id=rid,
                    sweep_id=None,
                    spec_hash=rid,
                    method="gmp",
                    model="resnet32",
                    dataset="cifar10",
                    target_density=0.05,
                    seed=seed,
                    spec_json="{}",
                    started_at=T0,
                )
            )
            st.finish_run(rid, dict(final_test_acc=acc), [])
    tables = summary_tables(db)
    assert [(t.dataset, t.model) for t in tables] == [("cifar10", "resnet32"), ("digits", "mlp")]
    c10 = tables[0]
    assert c10.header == ["method", "0.05"]
    assert c10.plain_rows() == [["gmp", cell([0.5, 0.6], table_n=2)]] == [["gmp", "55.00 ± 63.53"]]
    assert any("No completed dense baseline" in n for n in c10.notes)
    res = build_report(db, out_dir=tmp_path / "o", fmt="md")
    md = res.md_path.read_text(encoding="utf-8")
    assert "## cifar10 / resnet32" in md and "## digits / mlp" in md
    # the digits numbers are not mixed with cifar10
    digits = md_section(md, "## digits / mlp").split("### Difference to dense")[0]
    assert "55.00" not in digits and "n = 2 distinct seeds" not in digits
    assert "n = 2 distinct seeds per cell." in md.split("## cifar10 / resnet32")[1].split("## digits / mlp")[0]


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
        st.start_run(
            dict(
                run_id="x",
                sweep_id=None,
                spec_hash="x",
                method="rigl",
                model="mlp",
                dataset="digits",
                target_density=0.1,
                seed=0,
                spec_json="{}",
                started_at=T0,
            )
        )
        st.fail_run("x", "failed", "boom", dict(final_test_acc=0.9))
    with pytest.raises(ReportError, match="no completed runs"):
        build_report(only_failed, out_dir=tmp_path / "o")
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())

    garbage = tmp_path / "garbage.duckdb"
    garbage.write_bytes(b"\x00\x01not a database" * 100)
    with pytest.raises(ReportError) as ei:
        build_report(garbage, out_dir=tmp_path / "o")
    assert str(garbage) in str(ei.value)


# ------------------------------------------------------------------ statistics, JSON
def test_json_numbers_match_hand_computed_statistics(cli, tmp_path: Path):
    """`granet report --json`: every cell's mean, std, 95 % CI and n, GraNet's Welch comparisons and
    the differences to dense equal the textbook formulas evaluated here; stdout is one JSON object and
    nothing is written."""
    db = tmp_path / "r.duckdb"
    make_db(db, sweep=None)
    result = cli("report", "--db", db, "--json", "--out", tmp_path / "never")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert not (tmp_path / "never").exists()
    assert data["metric"] == "final_test_acc" and data["alpha"] == 0.05
    (g,) = data["groups"]
    main = g["main"]
    assert main["densities"] == DENSITIES and main["n"] == 3
    seen = 0
    for row in main["rows"]:
        method = "dense" if row["baseline"] else row["label"]
        for d, c in zip(DENSITIES, row["cells"]):
            if c is None:
                assert (method, d) not in ACC
                continue
            vals = ACC[(method, 1.0 if row["baseline"] else c["density"])]
            assert c["label"] == row["label"] and c["n"] == len(vals) and c["seeds"] == list(range(len(vals)))
            assert c["values"] == pytest.approx(vals, abs=1e-12)  # seed order, as make_db wrote them
            assert c["mean"] == pytest.approx(statistics.mean(vals), abs=1e-12)
            assert c["std"] == pytest.approx(statistics.stdev(vals) if len(vals) > 1 else 0.0, abs=1e-12)
            half = ci_half(vals)
            if half is None:
                assert c["ci95"] is None and c["ci95_interval"] is None
            else:
                assert c["ci95"] == pytest.approx(half, rel=1e-8)
                lo, hi = c["ci95_interval"]
                assert lo == pytest.approx(statistics.mean(vals) - half) and hi == pytest.approx(
                    statistics.mean(vals) + half
                )
            seen += 1
    assert seen == sum(len(DENSITIES) if m == "dense" else 1 for m, _d in ACC)
    # missing cells are null
    static = next(r for r in main["rows"] if r["label"] == "static")
    assert static["cells"][0] is None

    comps = {(c["other"], c["density"]): c for c in g["comparisons"]}
    assert set(comps) == {(m, d) for m in ("rigl", "set", "static") for d in DENSITIES if (m, d) in ACC}
    for (other, d), c in comps.items():
        a, b = ACC[("granet", d)], ACC[(other, d)]
        assert c["granet"] == "granet" and c["n_granet"] == len(a) and c["n_other"] == len(b)
        assert c["diff"] == pytest.approx(statistics.mean(a) - statistics.mean(b), abs=1e-12)
        if len(b) < 2:
            assert c["t"] is None and c["df"] is None and c["p"] is None
            continue
        _diff, t, df, p = welch_by_hand(a, b)
        assert (c["t"], c["df"], c["p"]) == (
            pytest.approx(t, rel=1e-9),
            pytest.approx(df, rel=1e-9),
            pytest.approx(p, rel=1e-7),
        )
    # spot values, so a wrong formula on both sides cannot agree by accident
    assert comps[("rigl", 0.02)]["t"] == pytest.approx(4.8738692, rel=1e-6)
    assert comps[("rigl", 0.02)]["df"] == pytest.approx(3.5226889, rel=1e-6)
    assert comps[("rigl", 0.02)]["p"] == pytest.approx(0.0112517, rel=1e-4)
    # the p shown and used for marks is Holm-adjusted over the table's tests, recomputed by hand
    tested = [c for c in comps.values() if c["p"] is not None]
    for c, want in zip(tested, holm_by_hand([c["p"] for c in tested])):
        assert c["p_holm"] == pytest.approx(want, rel=1e-12)

    dense = ACC[("dense", 1.0)]
    diffs = {(x["row"], x["density"]): x for x in g["dense_diff"]}
    assert set(diffs) == {(m, d) for (m, d) in ACC if m != "dense"}
    for (m, d), x in diffs.items():
        assert x["dense_row"] == "dense (baseline)"
        assert x["diff"] == pytest.approx(statistics.mean(ACC[(m, d)]) - statistics.mean(dense), abs=1e-12)
        if len(ACC[(m, d)]) > 1:
            assert x["p"] == pytest.approx(welch_by_hand(ACC[(m, d)], dense)[3], rel=1e-7)

    budget = {(x["row"], x["density"]): x for x in g["budget"]}
    x = budget[("granet", 0.02)]
    assert x["n"] == 3 and x["train_flops_frac"] == pytest.approx(
        statistics.mean(flops("granet", 0.02, s) for s in range(3))
    )
    assert x["wall_seconds"] == pytest.approx(11.0) and x["achieved_density"] == pytest.approx(0.02)
    assert {r["status"] for r in data["not_completed"]} == {"failed", "diverged", "running"}


def test_json_with_a_bad_db_is_one_error_line(cli, tmp_path: Path):
    result = cli("report", "--db", tmp_path / "missing.duckdb", "--json")
    assert result.exit_code == 2
    assert result.stdout == "" and "error:" in result.output and "Traceback" not in result.output


def test_rank_column_rules():
    from granet_cli.report.stats import rank_column

    hi, mid, lo = [0.90, 0.91, 0.92], [0.80, 0.81, 0.82], [0.70, 0.71, 0.72]
    assert rank_column([mid, hi, lo]).best == 1 and rank_column([mid, hi, lo]).tied == ()
    # a one-seed cell cannot be tested: the highest mean is no longer "significantly best"
    r = rank_column([hi, [0.5], lo])
    assert r.best is None and r.tied == ()  # and a tie of the top cell alone is no tie
    # not significantly different from the top: tied; significantly below it: not tied
    r = rank_column([hi, [0.89, 0.93, 0.90], lo])
    assert r.best is None and r.tied == (0, 1)
    # the top cell with one seed: nothing can be said
    assert rank_column([[0.99], hi]) == rank_column([[0.99], hi]).__class__(None, ())
    # fewer than two cells, or lower-is-better
    assert rank_column([hi, None]).best is None
    assert rank_column([mid, hi, lo], higher_is_better=False).best == 2


def test_zoom_limits_frame_the_data():
    from granet_cli.report.plots import zoom_limits

    lo, hi = zoom_limits([88.0, 91.5, 93.0, 90.2])
    assert 86.0 < lo < 88.0 and 93.0 < hi < 95.0  # not 0-100
    assert zoom_limits([]) is None
    lo, hi = zoom_limits([50.0, 50.0])
    assert lo < 50.0 < hi


# ------------------------------------------------------------------ published numbers
def test_published_data_file_rows_are_sourced():
    from granet_cli.report import PUBLISHED_CSV, load_published

    rows = load_published()
    assert rows, "the shipped published.csv is empty"
    text = PUBLISHED_CSV.read_text(encoding="utf-8")
    assert "MISSING" in text and "2106.10404" in text  # the GraNet numbers it lacks are named
    specs = " ".join(p.read_text() for p in (ROOT / "experiments").glob("*.yaml"))
    for r in rows:
        assert r["paper"] and r["table"] and r["source"]
        assert 0 < r["number"] < 100 and 0 < r["density"] <= 1 and r["epochs"] > 0
        assert f"name: {r['model']}" in specs and f"name: {r['dataset']}" in specs
        assert r["method"] in ("dense", "granet", "rigl", "gmp", "set", "static")


def test_published_numbers_beside_matching_cells(tmp_path: Path):
    """A cell whose recipe matches a published row (dataset, model, method, density, epochs) gets
    the published number and the gap; another epochs setting gets none."""
    db = tmp_path / "r.duckdb"
    measured = {
        ("rigl", 0.1, 100): [0.725, 0.731],
        ("dense", 1.0, 100): [0.770, 0.765],
        ("rigl", 0.2, 90): [0.741, 0.744],
    }
    with Store(db) as st:
        for (method, d, epochs), accs in measured.items():
            for seed, acc in enumerate(accs):
                rid = f"{method}-{d}-{epochs}-{seed}"
                spec = {"optim": {"epochs": epochs}, "sparsity": {"method": method, "final_density": d}}
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
    from granet_cli.report import load_published, report_json

    published = [p for p in load_published() if p["dataset"] == "imagenet"]
    (g,) = report_json(db)["groups"]
    got = sorted((x["row"], x["density"], x["published"], round(x["gap_pp"], 9)) for x in g["published"])
    expected = []
    for p in published:
        for (method, d, epochs), accs in measured.items():
            if (p["method"], p["density"], p["epochs"]) == (method, d, epochs):
                label = f"{'dense (baseline)' if method == 'dense' else method} (optim.epochs={epochs})"
                expected.append((label, d, p["number"], round(statistics.mean(accs) * 100 - p["number"], 9)))
    assert got == sorted(expected)
    # the 90-epoch row matches nothing
    assert {x[0] for x in got} == {"dense (baseline) (optim.epochs=100)", "rigl (optim.epochs=100)"}
    # and is never compared with the 100-epoch dense baseline either
    assert {x["row"] for x in g["dense_diff"]} == {"rigl (optim.epochs=100)"}
    res = build_report(db, out_dir=tmp_path / "o", fmt="md")
    section = md_section(res.md_path.read_text(encoding="utf-8"), "### Published numbers beside yours")
    _h, rows = md_table(section)
    rigl = [r for r in rows if r[0] == "rigl (optim.epochs=100)" and r[3] == "73.07"]
    assert len(rigl) == 1 and rigl[0][4] == f"{statistics.mean(measured[('rigl', 0.1, 100)]) * 100 - 73.07:+.2f}"
    # the runs' specs name no drop-and-grow settings and the source states no batch size: approximate
    assert rigl[0][5] == (
        "approximate recipe: update interval unset vs 100; drop fraction unset vs 0.3; "
        "not stated: batch size, end of updates"
    )
    assert rigl[0][2] == cell(measured[("rigl", 0.1, 100)], table_n=2)


def test_published_recipe_is_same_only_when_every_setting_is_stated_and_equal():
    from granet_cli.report.published import recipe_gaps

    full = {"recipe": {"batch_size": 4096.0, "update_frequency": 100.0, "drop_fraction": 0.3, "update_end_epoch": 75.0}}
    ours = {
        "data.batch_size": 4096,
        "sparsity.update_frequency": 100,
        "sparsity.drop_fraction": 0.3,
        "sparsity.update_end_epoch": 75,
    }
    assert recipe_gaps(full, ours, "rigl") == ([], [])
    assert recipe_gaps(full, {**ours, "sparsity.update_frequency": 4000}, "rigl") == (
        ["update interval 4000 vs 100"],
        [],
    )
    # a dense row is matched on what applies to it: the batch size
    assert recipe_gaps({"recipe": {"batch_size": 4096.0}}, {"data.batch_size": 4096}, "dense") == ([], [])


# ------------------------------------------------------------------ plots' data
def test_density_lines_start_at_the_initial_density(tmp_path: Path):
    """Step 0 of each line is the run's initial density (1.0 for GMP, init_density for GraNet, the
    target for RigL); lines are labelled by target density."""
    from granet_cli.report import density_lines, summary_tables

    db = tmp_path / "r.duckdb"
    with Store(db) as st:
        for method, init in (("granet", 0.5), ("rigl", None), ("gmp", None)):
            for d in (0.1, 0.2):
                rid = f"{method}-{d}"
                sp = {"method": method, "final_density": d, **({"init_density": init} if init else {})}
                st.start_run(
                    dict(
                        run_id=rid,
                        sweep_id=None,
                        spec_hash=rid,
                        method=method,
                        model="mlp",
                        dataset="digits",
                        target_density=d,
                        seed=0,
                        spec_json=json.dumps({"sparsity": sp}),
                        started_at=T0,
                    )
                )
                st.add_mask_updates(
                    rid,
                    [
                        dict(step=s, target_density=d, dropped=1, grown=1, density=d + 0.01 * (3 - s / 10))
                        for s in (10, 20, 30)
                    ],
                )
                st.add_epoch(rid, dict(epoch=1, step=45, test_acc=0.5, density=d))
                st.finish_run(rid, dict(final_test_acc=0.5), [])
    (main,) = summary_tables(db)
    with Store(db, read_only=True) as st:
        runs = {r["run_id"]: r for r in st.runs()}
        lines = density_lines(main, runs, st.mask_updates(list(runs)), st.epochs(list(runs)))
    starts = {lab: pts[0] for m, v in lines.items() for lab, pts in v}
    assert starts == {
        "granet d=0.1": (0, 0.5),
        "granet d=0.2": (0, 0.5),
        "rigl d=0.1": (0, 0.1),
        "rigl d=0.2": (0, 0.2),
        "gmp d=0.1": (0, 1.0),
        "gmp d=0.2": (0, 1.0),
    }
    ends = {lab: pts[-1] for m, v in lines.items() for lab, pts in v}
    assert all(end[0] == 45 for end in ends.values())  # extended to the end of training
    res = build_report(db, out_dir=tmp_path / "o", fmt="md")
    svg = next(p for p in res.plot_paths if p.name.endswith("density_over_steps.svg")).read_text()
    legend = re.findall(r"<text\b[^>]*>([^<]*)</text>", svg)
    assert set(starts) <= set(legend)  # the legend names each line by its target density


def test_terminal_table_fits_80_columns(tmp_path: Path, cli):
    """Five densities and rows labelled by long configuration differences still fit 80 columns,
    with no value truncated."""
    db = tmp_path / "r.duckdb"
    dens = [0.01, 0.02, 0.05, 0.1, 0.2]
    with Store(db) as st:
        for method in ("granet", "rigl"):
            for lr in (0.1, 0.05):
                for d in dens:
                    for seed in range(2):
                        rid = f"{method}-{lr}-{d}-{seed}"
                        spec = {"optim": {"lr": lr, "warmup_epochs": 5}, "sparsity": {"method": method}}
                        st.start_run(
                            dict(
                                run_id=rid,
                                sweep_id=None,
                                spec_hash=rid,
                                method=method,
                                model="mlp",
                                dataset="digits",
                                target_density=d,
                                seed=seed,
                                spec_json=json.dumps(spec),
                                started_at=T0,
                            )
                        )
                        st.finish_run(rid, dict(final_test_acc=0.5 + d + 0.01 * seed + lr / 10), [])
    (t,) = summary_tables(db)
    assert any(len(r.label) > 20 for r in t.rows)
    from rich.console import Console

    con = Console(record=True, width=80)
    con.print(t.to_rich())
    out = con.export_text()
    assert max(len(line) for line in out.splitlines()) <= 80 and "…" not in out
    for r in t.rows:
        for c in r.cells:
            assert f"{c.mean * 100:.2f}" in out
    result = cli("report", "--db", db, "--out", tmp_path / "o", "--format", "md")
    assert result.exit_code == 0, result.output
    assert max(len(line) for line in result.stdout.splitlines()) <= 80


def test_dense_difference_is_holm_corrected_and_toned_by_direction(report):
    """Every difference-to-dense cell shows its Holm-adjusted p (family: the table's tests, recomputed
    here); significant cells are bold with ▼ when below dense, ▲ when above, and red / green in HTML."""
    res, _db, _tmp = report
    md = res.md_path.read_text(encoding="utf-8")
    header, rows = md_table(md_section(md, "### Difference to dense (percentage points)"))
    dense = ACC[("dense", 1.0)]
    keys = [(m, d) for m in SPARSE_METHODS for d in DENSITIES if (m, d) in ACC and len(ACC[(m, d)]) > 1]
    adjusted = dict(zip(keys, holm_by_hand([welch_by_hand(ACC[k], dense)[3] for k in keys])))
    seen_worse = 0
    for r in rows:
        method = r[0]
        for d, raw in zip(DENSITIES, r[1:]):
            if (method, d) not in adjusted:
                continue
            p = adjusted[(method, d)]
            diff = statistics.mean(ACC[(method, d)]) - statistics.mean(dense)
            text, bold = unbold(html.unescape(raw).removesuffix(" ▼").removesuffix(" ▲"))
            shown = "p<0.001" if p < 0.001 else f"p={p:.3f}"
            assert text == f"{diff * 100:+.2f} ({shown})", (method, d, raw)
            assert bold == (p < 0.05), (method, d, raw)
            if bold:
                assert raw.endswith(" ▼" if diff < 0 else " ▲"), raw
                seen_worse += diff < 0
    assert seen_worse > 0  # the fixture has significantly worse cells: they are not shown as good news
    page = res.html_path.read_text(encoding="utf-8")
    assert '<td class="num worse"><strong>' in page and "td.worse strong { color: #a40e26; }" in page


def test_marks_are_worded_as_evidence_and_flag_low_power(report):
    res, _db, _tmp = report
    section = md_section(res.md_path.read_text(encoding="utf-8"), "### Final test accuracy (%)")
    assert "≈: not significantly different from the best (n = 3), which is not evidence that they are equal" in section
    assert "Holm's correction over the table's" in section
    assert "Low power: with n = 3 < 5 seeds per cell" in section
    assert "tied for best" not in section


def test_zero_variance_cells_that_differ_are_ranked():
    """Seeds that agree exactly leave no doubt: equal values with different means are a difference."""
    from granet_cli.report.stats import holm, rank_column

    r = rank_column([[0.99] * 3, [0.90] * 3, [0.80] * 3])
    assert r.best == 0 and r.tied == ()
    assert rank_column([[0.9] * 3, [0.9] * 3]).tied == (0, 1)  # the same values: no difference
    # a textbook Holm example: p = (0.01, 0.04, 0.03, 0.005) -> (0.03, 0.06, 0.06, 0.02)
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])


def test_welch_with_one_side_all_equal_is_exact_and_says_nothing_on_the_terminal():
    """Seeds that agree exactly on one side (97.56 on all three in the demo) made scipy's ttest_ind
    warn of 'catastrophic cancellation' on the report's terminal, for a correct result: the test is
    the textbook one, with no warning."""
    import warnings

    from granet_cli.report.stats import welch

    a, b = [0.9755555555555555] * 3, [0.97, 0.975, 0.99]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = welch(a, b)
    assert got is not None
    assert (got.diff, got.t, got.df, got.p) == pytest.approx(welch_by_hand(a, b), rel=1e-9)
