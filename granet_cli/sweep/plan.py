"""Planning a `granet sweep` (no Ray import): the grid, its points, the sweep's identity, the db state.

    plan_sweep(...)  -> SweepPlan   every grid point built and validated, nothing written
    prior_state(...) -> {spec_hash: runs row}   what an earlier run of this sweep already did

A grid is methods x densities x seeds x every `grid:` field (`--grid KEY=V1,V2`, any spec
field path). The sweep's identity is the set of its points (base spec, overrides and grid
all end up in the points' spec hashes): the default name is a hash of it, and a name that
is already used in the results db by a sweep with other points is refused (`check_identity`),
so two different sweeps never merge under one name.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from ..spec import (
    RunSpec,
    SpecError,
    SpecLoader,
    SweepSpec,
    build_sweep_spec,
    canonical_key,
    load_run_spec,
    read_yaml,
    with_overrides,
)

DEFAULT_SPEC = Path("experiments") / "quickstart.yaml"
#: statuses that count as "done": a rerun of the sweep skips these points
DONE_STATUSES = ("completed", "diverged")
INTERRUPTED = "interrupted"
#: spec fields a `grid:` may not vary: each has its own axis (or does not change the run)
GRID_RESERVED = {
    "seed": "--seeds / sweep.seeds",
    "sparsity.method": "--methods / sweep.methods",
    "sparsity.final_density": "--densities / sweep.densities",
    "name": "nothing (it is cosmetic)",
}
TRIAL_NAME_MAX = 60


class SweepError(RuntimeError):
    """A problem starting the sweep (Ray, resources, a name already used); one line."""


def default_spec_path() -> Path:
    """experiments/quickstart.yaml of the working directory, else the one beside this package."""
    if DEFAULT_SPEC.is_file():
        return DEFAULT_SPEC
    shipped = Path(__file__).resolve().parents[1] / DEFAULT_SPEC
    return shipped if shipped.is_file() else DEFAULT_SPEC


def fmt_value(value: Any) -> str:
    """A grid value as it is shown: floats short (`0.001`, `1e-05`), lists comma-joined."""
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return ",".join(fmt_value(v) for v in value)
    return str(value)


def slug(text: str) -> str:
    """`text` safe as a file or folder name (trial and experiment names)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-.") or "x"


def short_keys(keys: list[str]) -> dict[str, str]:
    """Grid key -> its label: the last path component (`optim.lr` -> `lr`), the full path when
    two keys share their last component."""
    last = [k.rsplit(".", 1)[-1] for k in keys]
    return {k: (s if last.count(s) == 1 else k) for k, s in zip(keys, last)}


# ----------------------------------------------------------------------------- the plan
@dataclass(frozen=True)
class Point:
    """One grid point: a fully validated RunSpec (and the grid-field values that made it)."""

    method: str
    density: float  # target final density (1.0 for dense)
    seed: int
    spec: RunSpec
    params: tuple[tuple[str, Any], ...] = ()  # (grid key, value), in grid order

    @property
    def spec_hash(self) -> str:
        return self.spec.spec_hash()

    def _params_text(self, sep: str) -> list[str]:
        names = short_keys([k for k, _ in self.params])
        return [f"{names[k]}{sep}{fmt_value(v)}" for k, v in self.params]

    @property
    def label(self) -> str:
        return " ".join([f"{self.method} d={self.density:g} seed={self.seed}", *self._params_text("=")])

    @property
    def trial_name(self) -> str:
        """Short and filesystem-safe: `granet_d0.1_s0_lr0.05`; a long one is cut and made unique by its hash."""
        name = slug("_".join([f"{self.method}_d{self.density:g}_s{self.seed}", *self._params_text("")]))
        if len(name) > TRIAL_NAME_MAX:
            name = name[: TRIAL_NAME_MAX - 9].rstrip("-_.") + "_" + self.spec_hash[:8]
        return name


@dataclass
class SweepPlan:
    name: str
    sweep_id: str
    spec_path: Path
    base: RunSpec
    grid: SweepSpec
    points: list[Point]
    overrides: list[str] = field(default_factory=list)
    #: the directory granet was started in: relative paths of the specs resolve against it
    cwd: Path = field(default_factory=Path.cwd)

    @property
    def identity(self) -> str:
        return points_identity(p.spec_hash for p in self.points)

    @property
    def grid_keys(self) -> list[str]:
        return list(self.grid.grid)

    def grid_record(self) -> dict[str, Any]:
        """What `store.add_sweep` keeps: the grid, the base spec and every point's spec_hash."""
        return {
            "spec": str(self.spec_path),
            "overrides": list(self.overrides),
            "cwd": str(self.cwd),
            "methods": self.grid.methods,
            "densities": self.grid.densities,
            "seeds": self.grid.seeds,
            "grid": self.grid.grid,
            "identity": self.identity,
            "base_spec_hash": self.base.spec_hash(),
            "base_spec": self.base.normalised(),
            "points": [
                {
                    "method": p.method,
                    "density": p.density,
                    "seed": p.seed,
                    "spec_hash": p.spec_hash,
                    **({"params": dict(p.params)} if p.params else {}),
                }
                for p in self.points
            ],
        }

    def run_spec(self, point: Point) -> RunSpec:
        """The spec a trial runs: `point.spec` with a relative data.root made absolute against
        `cwd` (Ray Tune starts trials in their own working folders). The results db keeps
        `point.spec` as written, so its spec_hash is the one `granet run` gives the same spec."""
        return resolve_paths(point.spec, self.cwd)


def points_identity(hashes) -> str:
    return hashlib.sha256(json.dumps(sorted(set(hashes))).encode()).hexdigest()[:16]


def resolve_paths(spec: RunSpec, cwd: Path) -> RunSpec:
    root = spec.data.root
    if not root or "://" in root or root.startswith("~") or Path(root).is_absolute():
        return spec
    absolute = os.path.normpath(Path(cwd) / root)
    return spec.model_copy(update={"data": spec.data.model_copy(update={"root": absolute})})


def _split_values(text: str) -> list[str]:
    """`0.05,0.1` -> ['0.05', '0.1']; commas inside [...] / {...} / quotes stay (`[0.5,0.75],[0.3]`)."""
    out, depth, quote, cur = [], 0, None, ""
    for ch in text:
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        elif ch == "," and depth == 0:
            out.append(cur)
            cur = ""
            continue
        cur += ch
    out.append(cur)
    return [v.strip() for v in out if v.strip()]


def parse_grid_flags(flags: list[str] | None, problems: list[str]) -> dict[str, list]:
    """`--grid optim.lr=0.05,0.1` (repeatable) -> {"optim.lr": [0.05, 0.1]}; values are YAML scalars."""
    import yaml

    grid: dict[str, list] = {}
    given: dict[str, str] = {}  # field -> the name it was first given by
    for item in flags or []:
        raw, sep, values = item.partition("=")
        key = canonical_key(raw.strip())
        if not sep or not key:
            problems.append(f"--grid {item}: expected KEY=V1,V2 (a spec field path, e.g. optim.lr=0.05,0.1)")
            continue
        first = given.setdefault(key, raw.strip())
        if first != raw.strip():  # as --set: the reference's name and the current one of one field
            problems.append(f"--grid {first} and {raw.strip()} are one setting (one is the reference's name): give one")
            continue
        parsed = []
        for v in _split_values(values):
            try:
                parsed.append(yaml.load(v, Loader=SpecLoader))  # as --set: `1e-3` is a number (strict specs)
            except yaml.YAMLError:
                parsed.append(v)
        if not parsed:
            problems.append(f"--grid {key}: needs at least one value")
            continue
        grid[key] = parsed
    return grid


def _field_problem(key: str) -> str | None:
    """None if `key` names a RunSpec field (a leaf or a section's field), else the problem."""
    if key in GRID_RESERVED:
        return f"sweep.grid.{key}: vary it with {GRID_RESERVED[key]}, not grid"
    model: type[BaseModel] = RunSpec
    parts = key.split(".")
    for i, part in enumerate(parts):
        info = model.model_fields.get(part)
        if info is None:
            where = ".".join(parts[:i]) or "the spec"
            return f"sweep.grid.{key}: unknown spec field (no {part!r} in {where}; check the spelling)"
        ann = info.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            if i == len(parts) - 1:
                return f"sweep.grid.{key}: a whole section; grid its fields (e.g. {key}.{next(iter(ann.model_fields))})"
            model = ann
        elif i < len(parts) - 1:
            return f"sweep.grid.{key}: {'.'.join(parts[: i + 1])} is a value, not a section"
    return None


def _parse_list(
    text: str | None, convert: Callable[[str], Any], flag: str, what: str, problems: list[str]
) -> list | None:
    if text is None:
        return None
    values = []
    for item in (t.strip() for t in text.split(",")):
        if not item:
            continue
        try:
            values.append(convert(item))
        except ValueError:
            problems.append(f"{flag}: {item!r} is not {what}")
    return values


def _order_free(values: list) -> list:
    return sorted(values, key=lambda v: json.dumps(v, sort_keys=True, default=str))


def sweep_identity(base: RunSpec, grid: SweepSpec) -> tuple[str, str]:
    """(name, sweep_id): the default name hashes the base spec and the grid (order-free);
    the id is derived from the name, so the same sweep maps to the same id every time."""
    name = grid.name
    if name is None:
        key: dict[str, Any] = {
            "base": base.spec_hash(),
            "methods": sorted(grid.methods),
            "densities": sorted(grid.densities),
            "seeds": sorted(grid.seeds),
        }
        if grid.grid:  # absent when empty: sweeps of methods x densities x seeds keep their names
            key["grid"] = {k: _order_free(v) for k, v in grid.grid.items()}
        name = "sweep-" + hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:8]
    return name, "sw-" + hashlib.sha256(name.encode()).hexdigest()[:12]


def expand_grid(base: RunSpec, grid: SweepSpec) -> list[Point]:
    """Every point of the grid, each re-validated; SpecError lists the problems of ALL points.

    `dense` gives one point per seed (the densities do not apply). The method is only
    overridden when it differs from the base spec's, so preset fields the user set for the
    base method (e.g. GraNet's init_density) stay when that method is swept.
    """
    points: list[Point] = []
    problems: list[str] = []
    seen: set[str] = set()
    keys = list(grid.grid)
    combos = list(itertools.product(*(grid.grid[k] for k in keys))) if keys else [()]
    for method in grid.methods:
        for density in [1.0] if method == "dense" else grid.densities:
            for seed in grid.seeds:
                for combo in combos:
                    overrides: dict[str, Any] = {"seed": seed}
                    if method != base.sparsity.method:
                        overrides["sparsity.method"] = method
                    if method != "dense":
                        overrides["sparsity.final_density"] = density
                    params = tuple(zip(keys, combo))
                    overrides.update(params)
                    label = " ".join(
                        [
                            f"method={method} density={density:g} seed={seed}",
                            *(f"{k}={fmt_value(v)}" for k, v in params),
                        ]
                    )
                    try:
                        spec = with_overrides(base, overrides)
                    except SpecError as e:
                        problems.extend(f"{label}: {line}" for line in e.problems)
                        continue
                    point = Point(method, density, seed, spec, params)
                    if point.spec_hash not in seen:
                        seen.add(point.spec_hash)
                        points.append(point)
    if problems:
        raise SpecError(problems)
    return points


def plan_sweep(
    spec_path: Path | None,
    overrides: list[str] | None = None,
    *,
    methods: str | None = None,
    densities: str | None = None,
    seeds: str | None = None,
    name: str | None = None,
    cpus_per_trial: float | None = None,
    gpus_per_trial: float | None = None,
    max_concurrent: int | None = None,
    grid: list[str] | None = None,
    max_failures: int | None = None,
    cwd: Path | None = None,
    checkpoint_every: float | None = None,
) -> SweepPlan:
    """Base spec + the file's `sweep:` section + CLI flags (which win; `--grid` per key) -> a validated plan.

    Raises SpecError with one line per problem (of the flags, the grid, the base spec and
    every grid point); nothing is written anywhere."""
    path = Path(spec_path) if spec_path is not None else default_spec_path()
    section = read_yaml(path).get("sweep") or {}
    if not isinstance(section, dict):
        raise SpecError(
            [f"{path}: sweep: a mapping of methods/densities/seeds/grid/name, got {type(section).__name__}"]
        )
    problems: list[str] = []
    flags = {
        "methods": _parse_list(methods, str, "--methods", "a method", problems),
        "densities": _parse_list(densities, float, "--densities", "a number", problems),
        "seeds": _parse_list(seeds, int, "--seeds", "an integer", problems),
        "name": name,
        "cpus_per_trial": cpus_per_trial,
        "gpus_per_trial": gpus_per_trial,
        "max_concurrent": max_concurrent,
        "max_failures": max_failures,
        "checkpoint_every": checkpoint_every,
    }
    merged = {**section, **{k: v for k, v in flags.items() if v is not None}}
    grid_flags = parse_grid_flags(grid, problems)
    if grid_flags:
        grid_value = merged.get("grid")
        base_grid = grid_value if isinstance(grid_value, dict) else {}
        # a flag replaces the file's axis by either name; the file's other keys stay as written, so
        # that its own old-and-new-name pair is still refused by the sweep spec's validation
        base_grid = {k: v for k, v in base_grid.items() if canonical_key(str(k).strip()) not in grid_flags}
        merged["grid"] = {**base_grid, **grid_flags}
    sweep = base = None
    try:
        sweep = build_sweep_spec(merged)
    except SpecError as e:
        problems.extend(e.problems)
    if sweep is not None:
        problems.extend(p for p in (_field_problem(k) for k in sweep.grid) if p)
        gpus = sweep.gpus_per_trial
        if gpus is not None and gpus > 1 and gpus != int(gpus):
            problems.append(
                f"sweep.gpus_per_trial: above 1 a trial takes whole GPUs, got {gpus:g} "
                "(fractions below 1 let several trials share one GPU)"
            )
    try:
        base = load_run_spec(path, overrides)
    except SpecError as e:
        problems.extend(f"base spec: {line}" for line in e.problems)
    if problems or sweep is None or base is None:
        raise SpecError(problems)
    points = expand_grid(base, sweep)
    sweep_name, sweep_id = sweep_identity(base, sweep)
    return SweepPlan(
        sweep_name,
        sweep_id,
        path,
        base,
        sweep,
        points,
        list(overrides or []),
        Path(cwd) if cwd is not None else Path.cwd(),
    )


# ----------------------------------------------------------------------------- db state
def pick(rows: list[dict]) -> dict[str, dict]:
    """spec_hash -> the most telling run: completed, else diverged, else the latest."""
    rank = {"completed": 3, "diverged": 2}
    best: dict[str, dict] = {}
    for r in rows:  # ordered by started_at
        cur = best.get(r["spec_hash"])
        if cur is None or rank.get(r["status"], 0) >= rank.get(cur["status"], 0):
            best[r["spec_hash"]] = r
    return best


def _identity_of(grid: dict) -> str | None:
    if grid.get("identity"):
        return grid["identity"]
    points = grid.get("points")
    return points_identity(p["spec_hash"] for p in points) if points else None


def identity_problem(sweep_row: dict | None, plan: SweepPlan) -> str | None:
    """A one-line problem if the db already has a sweep of this name (id) with other points."""
    if sweep_row is None:
        return None
    theirs = _identity_of(sweep_row.get("grid") or {})
    if theirs is None or theirs == plan.identity:
        return None
    before = sweep_row.get("grid") or {}
    n = len(before.get("points") or [])
    return (
        f"sweep name {plan.name!r} is already used in this results db by a sweep with a different base spec or "
        f"grid ({n} points, spec {before.get('spec', '?')}); rerun that one with the same spec, --set and "
        f"grid, or give this one another --name"
    )


def read_state(db_path: Path, plan: SweepPlan, *, refuse_running: bool = True) -> dict[str, dict]:
    """Read-only (works while another process holds the db; never creates it): this sweep's runs
    by spec_hash. SweepError if the sweep's name belongs to a sweep with other points, or (with
    `refuse_running`) if a driver of this sweep still runs on this machine."""
    from ..store import Store

    if not Path(db_path).exists():
        return {}
    with Store(db_path, read_only=True) as st:
        problem = identity_problem(st.sweep(plan.sweep_id), plan)
        if problem:
            raise SweepError(problem)
        rows = st.runs(sweep=plan.sweep_id)
    live = [r for r in rows if refuse_running and r["status"] == "running" and _driver_alive(r)]
    if live:
        raise SweepError(
            f"sweep {plan.name!r} is already running (driver pid {live[0]['pid']} on this machine, "
            f"{len(live)} trial(s) in progress); wait for it, or stop it and run this command again"
        )
    return pick(rows)


def _driver_alive(row: dict) -> bool:
    """Whether the process that recorded this 'running' row (a sweep driver) still runs here."""
    import socket

    pid, host = row.get("pid"), row.get("host")
    if not pid or host != socket.gethostname() or pid == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def prior_state(db_path: Path, sweep_id: str | SweepPlan) -> dict[str, dict]:
    """This sweep's runs by spec_hash, read-only. Given the plan (not just its id) a name
    already used by another sweep is refused (SweepError)."""
    from ..store import Store

    if isinstance(sweep_id, SweepPlan):
        return read_state(db_path, sweep_id, refuse_running=False)
    if not Path(db_path).exists():
        return {}
    with Store(db_path, read_only=True) as st:
        return pick(st.runs(sweep=sweep_id))


def point_state(row: dict | None) -> str:
    if row is None or row["status"] not in DONE_STATUSES:
        return "to run"
    return "done" if row["status"] == "completed" else f"done ({row['status']})"


# ----------------------------------------------------------------------------- outcomes
@dataclass
class TrialOutcome:
    point: Point
    run_id: str | None = None
    status: str = "pending"  # pending | running | completed | diverged | failed | interrupted
    error: str | None = None
    final: dict = field(default_factory=dict)
    ran: bool = False  # ran in this invocation (False: done by an earlier one)
    resume_from: str | None = None  # a checkpoint in storage an earlier invocation left
    resume_epoch: int = 0  # its epoch
    attempts: int = 0  # attempts in this invocation (Tune retries included)
    prior_attempts: int = 0  # attempts of the same run by earlier invocations (a resumed run)
    fresh_attempt: bool = False  # a Tune retry that has not reported yet
    last_epoch: int = 0  # last epoch reported by the current attempt
    node_ip: str | None = None  # where the current attempt runs
    node_id: str | None = None  # the Ray node id of that node
    waiting_since: float | None = None  # a retry not started yet: since when (time.monotonic())


@dataclass
class SweepOutcome:
    plan: SweepPlan
    trials: list[TrialOutcome]
    already_done: int
    interrupted_marked: int
    wall_seconds: float
    interrupted: bool = False
    terminated: bool = False  # interrupted by SIGTERM (exit 143), not Ctrl+C (exit 130)
    resumed: int = 0  # trials continued from a checkpoint of an earlier invocation
    retries: int = 0  # Tune retries (lost nodes, crashed trials) in this invocation
    ray_logs: str | None = None  # where Ray's logs are, said when a trial failed or was retried

    @property
    def ran(self) -> list[TrialOutcome]:
        return [t for t in self.trials if t.ran]

    def count(self, status: str) -> int:
        return sum(t.status == status for t in self.ran)
