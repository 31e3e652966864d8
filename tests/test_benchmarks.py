"""The benchmarks cannot rot: `benchmarks/run_all.py --quick` runs every one of them (tiny model,
fewest repeats and sweep trials) and each must end with its ratio line, so a change that breaks a
benchmark fails `make test`. The numbers of a quick run mean nothing and are not checked."""

import importlib.util
import math
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
#: the contract of benchmarks/README.md: `<name>: <what> = <number>[x| s] (target <bound>)...`
RATIO = r": [^=]+ = (\d+(?:\.\d+)?)(?:x| s)? \(target [^)]+\)"


def load_run_all():
    """benchmarks/run_all.py as a fresh module (the folder is not a package)."""
    spec = importlib.util.spec_from_file_location("benchmarks_run_all", BENCH / "run_all.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it executes
    spec.loader.exec_module(module)
    return module


def benchmark_scripts() -> set[str]:
    """Every benchmark script of the folder: each *.py but the runner itself."""
    return {p.stem for p in BENCH.glob("*.py")} - {"run_all"}


def test_every_benchmark_script_is_run_by_run_all():
    assert set(load_run_all().BENCHMARKS) == benchmark_scripts()


@pytest.mark.slow
@pytest.mark.ray  # sweep_scaling runs two local `granet sweep`s
def test_quick_run_runs_every_benchmark_and_each_prints_its_ratio_line(tmp_path):
    r = subprocess.run(
        [sys.executable, str(BENCH / "run_all.py"), "--quick"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=480,
    )
    out = r.stdout
    assert r.returncode == 0, out[-6000:] + r.stderr[-6000:]
    assert "=== summary" in out, out[-3000:]
    summary = out.split("=== summary", 1)[1].splitlines()[1:]
    names = benchmark_scripts()
    assert len(names) >= 5
    for name in names:
        assert re.search(rf"^=== {name}: exit 0 after [\d.]+ s$", out, re.M), f"{name} did not exit 0"
        lines = [line for line in summary if line.startswith(f"{name}: ")]
        assert len(lines) == 1, (name, summary)
        match = re.match(re.escape(name) + RATIO, lines[0])
        assert match, f"{name}: no ratio line in the summary: {lines[0]!r}"
        value = float(match[1])
        assert math.isfinite(value) and value > 0, lines[0]


# ----------------------------------------------------------------------------- the checks of run_all
FAKES = {
    # prints its ratio line, and the quick argument when given it
    "good": "import sys\nprint('noise')\nprint('good: thing = 1.50x (target <= 2)', *sys.argv[1:])",
    "crash": "print('crash: thing = 1.00x (target <= 2)')\nraise SystemExit(3)",
    "silent": "print('silent: measured 1.0 but no ratio line')",
    "stranger": "print('good: thing = 1.50x (target <= 2)')",  # another benchmark's ratio line
}


@pytest.fixture
def fake_run_all(tmp_path, monkeypatch):
    run_all = load_run_all()
    for name, code in FAKES.items():
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(code) + "\n")
    monkeypatch.setattr(run_all, "HERE", tmp_path)
    monkeypatch.setattr(
        run_all, "BENCHMARKS", {name: run_all.Benchmark(("--quick-flag",), device=False) for name in FAKES}
    )
    return run_all


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_run_all_fails_when_a_benchmark_crashes_or_ends_without_its_ratio_line(fake_run_all, capsys, jobs):
    assert fake_run_all.main(["--quick", "--jobs", jobs]) == 1
    out = capsys.readouterr().out
    summary = out.split("=== summary", 1)[1].splitlines()[1:]
    assert summary[:4] == [
        "good: thing = 1.50x (target <= 2) --quick-flag",
        "crash: FAILED (exit 3); last line: crash: thing = 1.00x (target <= 2)",
        "silent: FAILED (no ratio line); last line: silent: measured 1.0 but no ratio line",
        "stranger: FAILED (no ratio line); last line: good: thing = 1.50x (target <= 2)",
    ]
    assert summary[4] == "=== failed: crash, silent, stranger"


def test_run_all_passes_when_every_benchmark_prints_its_ratio_line(fake_run_all, capsys):
    assert fake_run_all.main(["good"]) == 0  # full run: no quick arguments
    out = capsys.readouterr().out
    assert out.splitlines()[-1] == "good: thing = 1.50x (target <= 2)"
    assert "noise" in out  # the benchmark's output is shown, not only its last line
