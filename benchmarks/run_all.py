"""Run every benchmark of this folder, one subprocess each, and check each result.

    .venv/bin/python benchmarks/run_all.py [--quick] [--jobs N] [--device auto|cpu|cuda] [NAME ...]

Without --quick it is the full run (`make bench`): one benchmark at a time, output streamed.
--quick is the smoke run that the test suite makes (tests/test_benchmarks.py): a tiny model,
1-2 repeats, the fewest sweep trials, two benchmarks at a time (--jobs 2; each one's output
is printed when it ends), so every benchmark goes through its code in well under a minute on
two cores; its numbers mean nothing.

Each benchmark's stdout is streamed, and its last non-empty line must be its *ratio line*,
the result in one line:

    <name>: <what is measured> = <number>[x| s] (target <bound>)[anything more]

e.g. `step_overhead: sparse/dense step time = 1.017x (target <= 1.05)`. run_all ends with a
summary, one line per benchmark (its ratio line, or FAILED and why), and exits 1 when any
benchmark exited non-zero or did not end with its ratio line. A missed target is reported in
the ratio line itself and is not a failure here: timings depend on the machine.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent

#: the result line each benchmark prints last; `name` must be the benchmark's own name
RATIO_LINE = re.compile(r"^(?P<name>\w+): (?P<what>[^=]+?) = (?P<value>\d+(?:\.\d+)?)(?:x| s)? \(target [^)]+\)")


@dataclass(frozen=True)
class Benchmark:
    quick: tuple[str, ...]  #: extra arguments under --quick
    device: bool = True  #: takes --device auto|cpu|cuda


#: every benchmark, in the order started (the longest first, for --jobs 2);
#: tests/test_benchmarks.py checks that each *.py here is listed
BENCHMARKS: dict[str, Benchmark] = {
    "sweep_scaling": Benchmark(("--quick",), device=False),
    "step_overhead": Benchmark(("--model", "lenet5", "--batch", "8", "--steps", "2", "--warmup", "1")),
    "mask_update": Benchmark(("--model", "lenet5", "--repeats", "2")),
    "memory": Benchmark(("--model", "lenet5", "--steps", "1")),
    "cli_latency": Benchmark(("--quick",), device=False),
}
_PRINT = threading.Lock()


@dataclass(frozen=True)
class Outcome:
    name: str
    code: int
    last: str  #: last non-empty stdout line
    seconds: float

    @property
    def ratio(self) -> float | None:
        """The number of the ratio line, None when the last line is not this benchmark's ratio line."""
        match = RATIO_LINE.match(self.last)
        return float(match["value"]) if match and match["name"] == self.name else None

    @property
    def ok(self) -> bool:
        return self.code == 0 and self.ratio is not None

    def summary(self) -> str:
        if self.code != 0:
            return f"{self.name}: FAILED (exit {self.code}); last line: {self.last or '(none)'}"
        if self.ratio is None:
            return f"{self.name}: FAILED (no ratio line); last line: {self.last or '(none)'}"
        return self.last


def run(name: str, script: Path, args: list[str], stream: bool = True) -> Outcome:
    """Run one benchmark. With `stream`, its stdout is printed as it comes (stderr passes straight
    through); without (benchmarks side by side), both are printed in one piece when it ends."""
    cmd = [sys.executable, "-u", str(script), *args]
    header = f"=== {name}: {' '.join(cmd[2:])}"
    start = time.perf_counter()
    if stream:
        print(header, flush=True)
        lines = []
        with subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, bufsize=1) as proc:
            assert proc.stdout is not None
            for line in proc.stdout:
                print(line, end="", flush=True)
                lines.append(line)
        code, err = proc.returncode, ""
    else:
        done = subprocess.run(cmd, capture_output=True, text=True)
        code, lines, err = done.returncode, done.stdout.splitlines(keepends=True), done.stderr
    seconds = time.perf_counter() - start
    footer = f"=== {name}: exit {code} after {seconds:.1f} s\n"
    with _PRINT:
        if not stream:
            print(header, "".join(lines), sep="\n", end="", flush=True)
            sys.stderr.write(err)
            sys.stderr.flush()
        print(footer, flush=True)
    last = next((line.strip() for line in reversed(lines) if line.strip()), "")
    return Outcome(name, code, last, seconds)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke run: tiny model, fewest repeats and trials")
    p.add_argument("--jobs", type=int, help="benchmarks run side by side (default: 2 with --quick, else 1)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("names", nargs="*", metavar="NAME", help=f"only these (default all: {', '.join(BENCHMARKS)})")
    args = p.parse_args(argv)
    unknown = [n for n in args.names if n not in BENCHMARKS]
    if unknown:
        p.error(f"unknown benchmark {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")
    jobs = max(1, args.jobs or (2 if args.quick else 1))

    def one(name: str) -> Outcome:
        bench = BENCHMARKS[name]
        extra = ["--device", args.device] if bench.device else []
        return run(name, HERE / f"{name}.py", extra + (list(bench.quick) if args.quick else []), stream=jobs == 1)

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        outcomes = list(pool.map(one, args.names or BENCHMARKS))
    failed = [o.name for o in outcomes if not o.ok]
    mode = "quick (a smoke run: the numbers mean nothing)" if args.quick else "full"
    took = time.perf_counter() - start
    print(f"=== summary: {len(outcomes)} benchmarks, {mode}, {jobs} at a time, {took:.1f} s")
    for outcome in outcomes:
        print(outcome.summary())
    if failed:
        print(f"=== failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
