"""`granet tune`'s search space: `--param FIELD=DIST` parsed and checked against the spec (no Ray).

    uniform:LOW:HIGH      a float in [LOW, HIGH]
    loguniform:LOW:HIGH   a float in [LOW, HIGH], uniform in log space (LOW > 0)
    int:LOW:HIGH          an integer in [LOW, HIGH] (both ends included)
    choice:V1,V2,..  one of the values (YAML scalars, as --set and --grid read them)

A field is any spec field by its dotted path (as `--set` / `--grid`). A range is checked by
validating the spec at both of its ends, a choice at every value: a range outside the field's
bounds is refused before anything runs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ..spec import RunSpec, SpecError, with_overrides
from .plan import parse_grid_flags

KINDS = ("uniform", "loguniform", "int", "choice")


@dataclass(frozen=True)
class Dist:
    """One searched field: its distribution and its arguments (low, high) or the choices."""

    key: str
    kind: str
    args: tuple[Any, ...]

    def describe(self) -> str:
        if self.kind == "choice":
            return f"choice of {', '.join(str(v) for v in self.args)}"
        return f"{self.kind} [{self.args[0]:g}, {self.args[1]:g}]"

    def to_tune(self):
        """The Ray Tune domain (tune.uniform, tune.loguniform, tune.randint, tune.choice)."""
        from ray import tune

        low, high = (self.args + (None, None))[:2]
        if self.kind == "uniform":
            return tune.uniform(low, high)
        if self.kind == "loguniform":
            return tune.loguniform(low, high)
        if self.kind == "int":
            return tune.randint(low, high + 1)  # randint excludes its upper end
        return tune.choice(list(self.args))

    def record(self) -> dict[str, Any]:
        return {"kind": self.kind, "args": list(self.args)}


def _number(text: str, kind: str) -> float | int:
    value = int(text) if kind == "int" else float(text)
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(text)
    return value


def parse_param(item: str, problems: list[str]) -> Dist | None:
    """`optim.lr=loguniform:0.01:0.3` -> Dist; a problem line (and None) when it does not parse."""
    key, sep, text = item.partition("=")
    key = key.strip()
    kind, _, rest = text.strip().partition(":")
    if not sep or not key or kind not in KINDS or not rest:
        problems.append(
            f"--param {item}: expected FIELD=DIST with DIST one of uniform:LOW:HIGH, loguniform:LOW:HIGH, int:LOW:HIGH, "
            "choice:V1,V2,... (e.g. optim.lr=loguniform:0.01:0.3)"
        )
        return None
    if kind == "choice":
        values = parse_grid_flags([f"{key}={rest}"], problems).get(key)
        if not values:
            return None
        return Dist(key, kind, tuple(dict.fromkeys(values)))
    ends = rest.split(":")
    try:
        if len(ends) != 2:
            raise ValueError(rest)
        low, high = (_number(e.strip(), kind) for e in ends)
    except ValueError:
        what = "integers" if kind == "int" else "numbers"
        problems.append(f"--param {item}: {kind} needs two {what} LOW:HIGH")
        return None
    if not low < high:
        problems.append(f"--param {item}: LOW must be below HIGH")
        return None
    if kind == "loguniform" and low <= 0:
        problems.append(f"--param {item}: loguniform needs LOW > 0")
        return None
    return Dist(key, kind, (low, high))


def parse_params(flags: list[str] | None, base: RunSpec, reserved: set[str]) -> list[Dist]:
    """Every --param parsed and checked against `base` (each end of a range, each choice validated);
    SpecError with one line per problem."""
    problems: list[str] = []
    dists: list[Dist] = []
    for item in flags or []:
        dist = parse_param(item, problems)
        if dist is None:
            continue
        if dist.key in reserved or dist.key in {d.key for d in dists}:
            why = "given twice" if dist.key not in reserved else "set by --methods/--densities/--seeds"
            problems.append(f"--param {dist.key}: {why}")
            continue
        for value in dist.args:
            try:
                with_overrides(base, {dist.key: value})
            except SpecError as e:
                problems.extend(f"--param {item}: at {value}: {line}" for line in e.problems)
                break
        else:
            dists.append(dist)
    if not flags:
        problems.append("--param: give at least one field to search, e.g. --param optim.lr=loguniform:0.01:0.3")
    if problems:
        raise SpecError(problems)
    return dists


def sample_params(config: dict, keys: list[str]) -> dict[str, Any]:
    """A trial's chosen values from its Tune config (a grid combo or one top-level key per field)."""
    combo = config.get("combo")
    if isinstance(combo, dict):
        return {k: combo[k] for k in keys}
    return {k: config[k] for k in keys}


def plain(value: Any) -> Any:
    """numpy scalars (what Tune's samplers return) as Python numbers, for specs and JSON."""
    item = getattr(value, "item", None)
    return item() if callable(item) else value
