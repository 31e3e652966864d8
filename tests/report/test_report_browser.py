"""The HTML report of a small real sweep-like set of runs, rendered by a real headless browser.

Debian's chromium (installed by `make browser`, which `make test` runs) loads the self-contained
report from disk: a full-page screenshot is written to the test's temporary folder (never to the
user's reports/), the DOM after
load is checked for every figure's drawn SVG paths, and each figure is screenshotted on its own so
that a plot which renders blank fails the test.  Without a browser the test is skipped and says why.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from ..conftest import QUICKSTART, rows

BROWSERS = ("chromium", "chromium-headless-shell", "chromium-browser")
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
#: every figure a report of real GraNet / RigL / dense runs draws
PLOTS = (
    "accuracy_vs_flops",
    "accuracy_vs_density",
    "accuracy_over_epochs",
    "density_over_steps",
    "itop_over_epochs",
    "mask_updates",
    "layer_density",
)
METHODS, DENSITIES, SEEDS = ("granet", "rigl"), (0.1, 0.2), (0, 1)


def _browser() -> str | None:
    return next((p for p in map(shutil.which, BROWSERS) if p), None)


def _chromium(browser: str, tmp: Path, *args: str) -> subprocess.CompletedProcess:
    profile = tmp / f"profile-{len(list(tmp.glob('profile-*')))}"
    profile.mkdir()
    cmd = [browser, *FLAGS, f"--user-data-dir={profile}", *args]
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=180, check=False)
    except subprocess.TimeoutExpired:
        pytest.fail(f"chromium did not finish within 180 s: {' '.join(cmd)}")


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """A small real results db (quickstart: GraNet and RigL at two densities, two seeds each, plus
    two dense runs, 2 epochs each) and its HTML report, written through the CLI."""
    from typer.testing import CliRunner

    from granet_cli.cli import app

    tmp = tmp_path_factory.mktemp("browser")
    db = tmp / "demo.duckdb"
    runner = CliRunner()
    base = [
        "run",
        str(QUICKSTART),
        "--db",
        str(db),
        "--runs-dir",
        str(tmp / "runs"),
        "-q",
        "--set",
        "optim.epochs=2",
        "--set",
        "sparsity.final_prune_epoch=1",
        "--set",
        "sparsity.update_frequency=8",
    ]
    points = [(m, d, s) for m in METHODS for d in DENSITIES for s in SEEDS] + [("dense", None, s) for s in SEEDS]
    for method, d, seed in points:
        sets = ["--set", f"sparsity.method={method}", "--set", f"seed={seed}"]
        if d is not None:
            sets += ["--set", f"sparsity.final_density={d}"]
        result = runner.invoke(app, base + sets)
        assert result.exit_code == 0, result.output
    assert rows(db, "select count(*) from runs where status = 'completed'") == [(len(points),)]
    result = runner.invoke(
        app, ["report", "--db", str(db), "--out", str(tmp / "rep"), "--name", "demo", "--format", "html"]
    )
    assert result.exit_code == 0, result.output
    assert max(len(line) for line in result.stdout.splitlines()) <= 80  # the terminal table fits
    return db, tmp / "rep" / "demo.html", tmp


class _Figures(HTMLParser):
    """figure.plot elements of a DOM: key -> number of <path> elements with a non-empty d, and the
    raw <svg> text (start to end offsets) for the per-figure screenshots."""

    def __init__(self):
        super().__init__()
        self.paths: dict[str, int] = {}
        self.empty: set[str] = set()
        self.current: str | None = None
        self.depth = 0

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "figure" and "plot" in (a.get("class") or "").split():
            self.current = a.get("data-plot")
            self.paths[self.current] = 0
            if a.get("data-empty"):
                self.empty.add(self.current)
        elif self.current and tag == "path" and (a.get("d") or "").strip():
            self.paths[self.current] += 1

    def handle_endtag(self, tag):
        if tag == "figure":
            self.current = None


@pytest.fixture(scope="module")
def browser() -> str:
    """The browser binary, or a skip that says why (before any run is trained for the report)."""
    path = _browser()
    if path is None:
        reason = f"no browser: none of {', '.join(BROWSERS)} is on PATH (`make browser` installs Debian's chromium)"
        print(reason)
        pytest.skip(reason)
    return path


def test_report_renders_in_a_real_browser(browser, demo):
    _db, html, tmp = demo
    url = html.resolve().as_uri()

    # 1. the DOM after load: every figure is there, with drawn paths, none empty
    dom = _chromium(browser, tmp, "--dump-dom", url)
    assert dom.returncode == 0, dom.stderr[-2000:]
    figs = _Figures()
    figs.feed(dom.stdout)
    assert tuple(figs.paths) == PLOTS, figs.paths
    assert not figs.empty, f"figures without data: {sorted(figs.empty)}"
    for key, n in figs.paths.items():
        assert n >= 10, f"{key}: only {n} drawn <path> elements"
    assert 'id="digits-mlp-accuracy_vs_flops"' in dom.stdout and "training FLOPs (fraction of dense)" in dom.stdout
    for table in ("dense_diff", "comparisons", "budget"):
        assert f'<table id="digits-mlp-{table}">' in dom.stdout

    # 2. the whole page as a user sees it (in the test's temporary folder, never the user's reports/)
    screenshot = tmp / "screenshot-demo.png"
    shot = _chromium(browser, tmp, f"--screenshot={screenshot}", "--window-size=1200,4000", url)
    assert shot.returncode == 0 and screenshot.exists(), shot.stderr[-2000:]
    img = _read_png(screenshot)
    assert img.shape[:2] == (4000, 1200)
    assert _ink(img) > 0.05, "the page screenshot is almost blank"

    # 3. each figure alone, so that one blank plot cannot hide behind the others
    svgs = re.findall(r"<figure class=\"plot\"[^>]*>\s*(<svg\b.*?</svg>)", html.read_text(encoding="utf-8"), flags=re.S)
    assert len(svgs) == len(PLOTS)
    w, h, cols = 580, 420, 2
    cells = "".join(
        f'<div style="position:absolute;left:{(i % cols) * w}px;top:{(i // cols) * h}px;width:{w}px;'
        f'height:{h}px;overflow:hidden">{svg}</div>'
        for i, svg in enumerate(svgs)
    )
    sheet = tmp / "sheet.html"
    sheet.write_text(
        "<!DOCTYPE html><html><head><meta charset='utf-8'><style>body{margin:0;background:#fff}"
        "svg{width:100%;height:100%}</style></head><body>" + cells + "</body></html>",
        encoding="utf-8",
    )
    nrows = -(-len(svgs) // cols)
    sheet_png = tmp / "sheet.png"
    shot = _chromium(
        browser, tmp, f"--screenshot={sheet_png}", f"--window-size={cols * w},{nrows * h}", sheet.resolve().as_uri()
    )
    assert shot.returncode == 0 and sheet_png.exists(), shot.stderr[-2000:]
    img = _read_png(sheet_png)
    for i, key in enumerate(PLOTS):
        r, c = divmod(i, cols)
        region = img[r * h : (r + 1) * h, c * w : (c + 1) * w]
        assert _ink(region) > 0.02, f"{key} renders (almost) blank"
        assert _coloured(region) > 150, f"{key}: no coloured data drawn"


def _read_png(path: Path):
    import matplotlib.image

    img = matplotlib.image.imread(str(path))
    return img[..., :3]


def _ink(img) -> float:
    """Fraction of pixels that are not (near) white."""
    return float((img.min(axis=2) < 0.9).mean())


def _coloured(img) -> int:
    """Pixels of a clearly saturated colour: the method-coloured lines and markers, not text or grid."""
    return int(((img.max(axis=2) - img.min(axis=2)) > 0.25).sum())


def test_real_runs_density_lines_start_at_their_initial_density(demo):
    """On real runs: GraNet's line starts at its init_density (0.5), RigL's at its target."""
    from granet_cli.report import density_lines, summary_tables
    from granet_cli.store import Store

    db, _html, _tmp = demo
    (main,) = summary_tables(db)
    with Store(db, read_only=True) as st:
        runs = {r["run_id"]: r for r in st.runs()}
        lines = density_lines(main, runs, st.mask_updates(list(runs)), st.epochs(list(runs)))
    starts = {lab: pts[0] for v in lines.values() for lab, pts in v}
    assert starts == {
        "granet d=0.1": (0, 0.5),
        "granet d=0.2": (0, 0.5),
        "rigl d=0.1": (0, 0.1),
        "rigl d=0.2": (0, 0.2),
    }
    # the last point is the achieved final density the runs table holds (lowest seed)
    finals = {
        (m, d): f
        for m, d, f in rows(
            db, "select method, target_density, achieved_density from runs where seed = 0 and method != 'dense'"
        )
    }
    for v in lines.values():
        for lab, pts in v:
            m, d = lab.split(" d=")
            assert pts[-1][1] == pytest.approx(finals[(m, float(d))], abs=1e-9)


def test_mixed_configuration_report_renders(browser, demo):
    """The demo's runs plus a user's own spec (device: cpu, other workers) with an lr grid, written to a
    copy of the db as real specs (no training): one section per recipe, no runtime field in any row
    label, and the page renders (not blank) in the browser."""
    from typer.testing import CliRunner

    from granet_cli.cli import app
    from granet_cli.spec import load_run_spec
    from granet_cli.store import Store

    db, _html, tmp = demo
    mixed = tmp / "mixed.duckdb"
    shutil.copy(db, mixed)
    base = ["optim.epochs=2", "sparsity.final_prune_epoch=1", "sparsity.update_frequency=8", "device=cpu"]
    with Store(mixed) as st:
        for lr in (0.01, 0.1):
            for method in METHODS:
                for seed in SEEDS:
                    sets = [*base, "data.num_workers=2", f"optim.lr={lr}", f"sparsity.method={method}", f"seed={seed}"]
                    spec = load_run_spec(QUICKSTART, sets)
                    rid = f"mine-{method}-{lr}-{seed}"
                    st.start_run(
                        dict(
                            run_id=rid,
                            spec_hash=rid,
                            method=method,
                            model="mlp",
                            dataset="digits",
                            target_density=0.1,
                            seed=seed,
                            spec_json=json.dumps(spec.normalised()),
                        )
                    )
                    st.finish_run(rid, dict(final_test_acc=0.8 + 0.01 * seed - abs(lr - 0.05)), [])
    result = CliRunner().invoke(
        app, ["report", "--db", str(mixed), "--out", str(tmp / "mixed"), "--name", "mixed", "--format", "html"]
    )
    assert result.exit_code == 0, result.output
    html = tmp / "mixed" / "mixed.html"
    dom = _chromium(browser, tmp, "--dump-dom", html.resolve().as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    headings = re.findall(r"<h2>digits / mlp, recipe ([^<]*)</h2>", dom.stdout)
    assert sorted(headings) == ["optim.lr=0.01", "optim.lr=0.05", "optim.lr=0.1"]
    labels = re.findall(r'<th scope="row">([^<]*)</th>', dom.stdout)
    assert labels and not [lab for lab in labels if "device" in lab or "num_workers" in lab]
    shot_png = tmp / "mixed.png"
    shot = _chromium(browser, tmp, f"--screenshot={shot_png}", "--window-size=1200,3000", html.resolve().as_uri())
    assert shot.returncode == 0 and shot_png.exists(), shot.stderr[-2000:]
    assert _ink(_read_png(shot_png)) > 0.05, "the mixed-configuration page is almost blank"
