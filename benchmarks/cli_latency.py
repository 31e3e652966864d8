"""CLI start-up latency: what a user waits for before any work starts.

Targets (issue: fast start): `granet validate` < 0.3 s, `granet --help` <= 0.5 s, `granet plan` on
the quickstart <= 3 s, and `granet run` on the quickstart spends <= 2.5 s outside training (process
wall time minus the epochs' own seconds as recorded in the results DB). Each command runs
several times; the median is reported next to its target, measured side by side in one run.
The last line is the headline, `validate` against its target:

    cli_latency: granet validate = 0.23 s (target < 0.3 s)

    python benchmarks/cli_latency.py [--repeat 5] [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import duckdb

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "experiments" / "quickstart.yaml"
GRANET = [sys.executable, "-m", "granet_cli.cli"]
VALIDATE_TARGET = 0.3  # seconds, `granet validate` on the quickstart


def timed(args: list[str]) -> float:
    t = time.perf_counter()
    subprocess.run(GRANET + args, cwd=ROOT, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t


def torch_floor(i: int) -> float:
    """What any torch training pays before its first step: `import torch` plus the first optimizer
    (torch 2.14 imports torch._dynamo when an optimizer is constructed). Reported for reference."""
    code = "import torch; torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)"
    t = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True)
    return time.perf_counter() - t


def outside_training(tmp: Path, i: int, epochs: int | None) -> float:
    """Wall time of a quickstart `granet run` minus the time its epochs report."""
    db = tmp / f"run{i}.duckdb"
    extra = ["--set", f"optim.epochs={epochs}", "--set", "sparsity.final_prune_epoch=1"] if epochs else []
    wall = timed(["run", str(QUICKSTART), "--db", str(db), "--runs-dir", str(tmp / f"runs{i}"), "-q", *extra])
    con = duckdb.connect(str(db), read_only=True)
    try:
        (epoch_seconds,) = con.execute("select sum(seconds) from epochs").fetchone()
    finally:
        con.close()
    return wall - float(epoch_seconds)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="smoke run (run_all.py --quick): once each, a 2-epoch run")
    args = ap.parse_args()
    repeat, epochs = (1, 2) if args.quick else (args.repeat, None)
    with tempfile.TemporaryDirectory() as tmp:
        cases = {
            "granet --help": (lambda i: timed(["--help"]), 0.5),
            "granet validate quickstart": (lambda i: timed(["validate", str(QUICKSTART)]), VALIDATE_TARGET),
            "granet plan quickstart": (lambda i: timed(["plan", str(QUICKSTART)]), 3.0),
            "granet run quickstart, outside training": (lambda i: outside_training(Path(tmp), i, epochs), 2.5),
            "  reference: import torch + first optimizer": (torch_floor, 2.5),
        }
        timed(["--help"])  # warm the file cache once
        print(f"{'command':42s} {'median s':>9s} {'target s':>9s} {'ratio':>6s}")
        medians = {}
        for name, (fn, target) in cases.items():
            med = medians[name] = statistics.median(fn(i) for i in range(repeat))
            print(f"{name:42s} {med:9.2f} {target:9.2f} {med / target:6.2f}  {'ok' if med <= target else 'OVER'}")
    validate = medians["granet validate quickstart"]
    print(f"cli_latency: granet validate = {validate:.2f} s (target < {VALIDATE_TARGET} s)")


if __name__ == "__main__":
    main()
