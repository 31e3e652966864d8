"""Sweep scaling: the same one-CPU trials through `granet sweep`, 2 at a time vs 1 at a time.

    .venv/bin/python benchmarks/sweep_scaling.py [--epochs 120] [--batch-size 16] [--quick] [--keep]

Quickstart (digits, MLP), methods granet,rigl,gmp x densities 0.1,0.2 (6 trials), seed 0, epochs raised
(and the batch size lowered, so an epoch is ~80 ms of work rather than ~35) so one trial takes
about 10 s on one core. Each configuration gets a fresh results db and runs folder
and is timed as a whole command (interpreter start, local Ray start, trials, db writes), so
the speed-up includes every fixed cost a user pays. The last line is the result:

    sweep_scaling: parallel speed-up = X.XXx (target >= 1.7)

--quick (the smoke run of `run_all.py --quick`): 2 trials (granet, rigl at density 0.1) of 2 epochs,
no runs without Ray; it goes through the same code and prints the same last line, but the
speed-up is dominated by fixed costs and means nothing.

For context it also times the same training without Ray, one process alone and two at once:
2 x alone / together is the most any 2-way parallelism can reach on the machine (on a VM whose
two vCPUs slow each other down, that ceiling is itself below 2). Fixed costs (starting Python
and Ray) are not parallel and are part of both sweep timings.

It also says what a sweep costs each trial: the train times of the one-at-a-time sweep's trials
(their `wall_seconds`: training plus the Tune reports and checkpoints inside it) over the same six
runs (same method, density and seed) trained alone without Ray, one after another, with the default
--checkpoint-every (pass --checkpoint-every 0 for a Tune checkpoint every epoch, the behaviour before
it existed):

    sweep_scaling: trial time in a sweep / alone = X.XXx (target <= 1.10)
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def training_sets(epochs: int, batch_size: int) -> list[str]:
    """The overrides every trial and every run alone share: one place, so they train the same."""
    return [
        f"optim.epochs={epochs}",
        f"sparsity.final_prune_epoch={max(1, epochs * 2 // 3)}",
        f"data.batch_size={batch_size}",
    ]


def timed_sweep(
    work: Path, max_concurrent: int, epochs: int, batch_size: int, grid: tuple[str, str], checkpoint_every: float
) -> tuple[float, str]:
    work.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "granet_cli.cli",
        "sweep",
        str(ROOT / "experiments" / "quickstart.yaml"),
        "--methods",
        grid[0],
        "--densities",
        grid[1],
        "--seeds",
        "0",
        *[arg for s in training_sets(epochs, batch_size) for arg in ("--set", s)],
        "--cpus-per-trial",
        "1",
        "--max-concurrent",
        str(max_concurrent),
        "--checkpoint-every",
        str(checkpoint_every),
        "--name",
        f"scaling-c{max_concurrent}",
        "--db",
        str(work / "results.duckdb"),
        "--runs-dir",
        str(work / "runs"),
    ]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env={**os.environ, "COLUMNS": "120"})
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout + proc.stderr)
        raise SystemExit(f"sweep with --max-concurrent {max_concurrent} failed (exit {proc.returncode})")
    return wall, proc.stdout


BARE = """
import sys, time
from granet_cli import train
from granet_cli.spec import load_run_spec
spec = load_run_spec(sys.argv[1], sys.argv[3:])
print(train.run(spec, sys.argv[2], threads=1).final["wall_seconds"])
"""


def bare_sets(epochs: int, batch_size: int, method: str = "granet", density: str = "0.1") -> list[str]:
    """The sweep's training of one of its points, as `--set` overrides of the quickstart."""
    return [*training_sets(epochs, batch_size), f"sparsity.method={method}", f"sparsity.final_density={density}"]


def start_bare(work: Path, tag: str, sets: list[str]) -> subprocess.Popen:
    """`train.run` of the quickstart with `sets`, one thread, no Ray, no db."""
    return subprocess.Popen(
        [sys.executable, "-c", BARE, str(ROOT / "experiments" / "quickstart.yaml"), str(work / f"bare-{tag}"), *sets],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )


def bare_seconds(p: subprocess.Popen) -> float:
    """A bare run's train time (its final `wall_seconds`, measured as a sweep trial's is)."""
    out, _ = p.communicate()
    if p.returncode != 0:
        raise SystemExit(f"bare training run failed (exit {p.returncode})")
    return float(out.strip().splitlines()[-1])


def bare_alone(work: Path, epochs: int, batch_size: int, grid: tuple[str, str]) -> dict[tuple[str, float], float]:
    """Each of the sweep's runs trained alone without Ray, one after another: (method, density) -> seconds."""
    alone = {}
    for method in grid[0].split(","):
        for density in grid[1].split(","):
            p = start_bare(work, f"alone-{method}-{density}", bare_sets(epochs, batch_size, method, density))
            alone[(method, float(density))] = bare_seconds(p)
    return alone


def bare_ceiling(work: Path, epochs: int, batch_size: int) -> list[float]:
    """Two of the same training at once without Ray (1 thread each): with the run alone, 2 x alone /
    together is the most any 2-way parallelism can give on this machine."""
    pair = [start_bare(work, tag, bare_sets(epochs, batch_size)) for tag in ("a", "b")]
    return [bare_seconds(p) for p in pair]


def trial_seconds(db: Path) -> dict[tuple[str, float], float]:
    """The completed trials' train times (runs.wall_seconds) by (method, density), read from the sweep's db."""
    import duckdb

    con = duckdb.connect(str(db), read_only=True)
    try:
        got = con.execute("SELECT method, target_density, wall_seconds FROM runs WHERE status = 'completed'").fetchall()
    finally:
        con.close()
    return {(m, round(d, 6)): w for m, d, w in got}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=120, help="epochs per trial (default 120)")
    ap.add_argument(
        "--batch-size",
        type=int,
        default=16,
        help="training batch size (default 16: ~10 s per trial on one core, ~80 ms per epoch)",
    )
    ap.add_argument(
        "--quick",
        action="store_true",
        help="smoke run (run_all.py --quick): 2 trials of 2 epochs, no timing without Ray (speed-up not meaningful)",
    )
    ap.add_argument("--keep", action="store_true", help="keep the temporary dbs and runs folders")
    ap.add_argument(
        "--checkpoint-every",
        type=float,
        default=60.0,
        help="the sweeps' --checkpoint-every (default 60; 0: every epoch)",
    )
    args = ap.parse_args()
    grid = ("granet,rigl,gmp", "0.1,0.2")  # methods, densities: 6 trials
    if args.quick:
        args.epochs, grid = 2, ("granet,rigl", "0.1")
    trials = len(grid[0].split(",")) * len(grid[1].split(","))
    base = Path(tempfile.mkdtemp(prefix="granet-sweep-scaling-"))
    try:
        results: dict[int, float] = {}
        each: dict[int, dict[tuple[str, float], float]] = {}
        for conc in (2, 1):
            wall, stdout = timed_sweep(
                base / f"c{conc}", conc, args.epochs, args.batch_size, grid, args.checkpoint_every
            )
            secs = trial_seconds(base / f"c{conc}" / "results.duckdb")
            if len(secs) != trials:  # failed trials, or the summary format changed under this parser
                sys.stderr.write(stdout)
                raise SystemExit(f"sweep with --max-concurrent {conc}: {len(secs)} of {trials} trials completed")
            results[conc], each[conc] = wall, secs
            total = sum(secs.values())
            print(
                f"max-concurrent {conc}: {trials} trials in {wall:6.1f} s wall "
                f"(trial train time {total:.1f} s total, {total / max(1, len(secs)):.1f} s each)",
                flush=True,
            )
        if not args.quick:
            alone = bare_alone(base, args.epochs, args.batch_size, grid)
            pair = bare_ceiling(base, args.epochs, args.batch_size)
            solo = alone[("granet", 0.1)]
            print(
                f"without Ray (same training, 1 thread): granet 0.1 alone {solo:.1f} s; two at once "
                f"{pair[0]:.1f} s and {pair[1]:.1f} s -> ceiling for 2-way parallelism "
                f"{2 * solo / max(pair):.2f}x on this machine"
            )
            for key in sorted(alone):
                print(
                    f"  {key[0]} {key[1]:g}: in the sweep {each[1][key]:.2f} s, alone {alone[key]:.2f} s "
                    f"({each[1][key] / alone[key]:.2f}x)"
                )
            in_sweep, by_itself = sum(each[1][k] for k in alone), sum(alone.values())
            print(
                f"sweep_scaling: trial time in a sweep / alone = {in_sweep / by_itself:.2f}x (target <= 1.10; "
                f"{in_sweep / trials:.2f} s vs {by_itself / trials:.2f} s a trial, --checkpoint-every "
                f"{args.checkpoint_every:g})"
            )
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        print(f"machine: {cpus} CPUs; per trial: {args.epochs} epochs at batch size {args.batch_size}, 1 CPU")
        if args.keep:
            print(f"kept {base}")
        print(f"sweep_scaling: parallel speed-up = {results[1] / results[2]:.2f}x (target >= 1.7)")
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
