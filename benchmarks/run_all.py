"""Run every benchmark of this folder (`make bench`), one subprocess each, in sequence.

Streams each benchmark's output and ends with the final line (the ratio) of each.
sweep_scaling.py is run when present; it gets --quick / --device only if it takes them.

    .venv/bin/python benchmarks/run_all.py [--quick] [--device auto|cpu|cuda]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

#: name -> extra arguments under --quick
BENCHMARKS = {
    "step_overhead": ["--steps", "4", "--warmup", "1"],
    "mask_update": ["--repeats", "1"],
    "memory": ["--steps", "1"],
    "sweep_scaling": ["--quick"],
    "cli_latency": ["--repeat", "1"],
}


def run(name: str, args: list[str]) -> tuple[int, str]:
    """Run one benchmark, streaming its output; returns (exit code, last output line)."""
    cmd = [sys.executable, "-u", str(HERE / f"{name}.py"), *args]
    print(f"=== {name}: {' '.join(cmd[2:])}", flush=True)
    start, last = time.perf_counter(), ""
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1) as proc:
        for line in proc.stdout:
            print(line, end="", flush=True)
            if line.strip():
                last = line.strip()
    print(f"=== {name}: exit {proc.returncode} after {time.perf_counter() - start:.0f} s\n", flush=True)
    return proc.returncode, last


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer steps and repeats: a smoke run")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    args = p.parse_args(argv)
    summary, failed = [], False
    for name, quick_args in BENCHMARKS.items():
        script = HERE / f"{name}.py"
        if not script.is_file():
            summary.append(f"{name}: skipped: not present")
            print(f"=== {name}: skipped: not present\n", flush=True)
            continue
        source = script.read_text()
        extra = []
        if "--device" in source:
            extra += ["--device", args.device]
        if args.quick and all(a in source for a in quick_args if a.startswith("--")):
            extra += quick_args
        code, last = run(name, extra)
        failed |= code != 0
        summary.append(last if code == 0 else f"{name}: FAILED (exit {code}): {last}")
    print("=== summary")
    for line in summary:
        print(line)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
