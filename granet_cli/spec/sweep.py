"""The sweep grid's model: `SweepSpec` (the `sweep:` section of a spec file, merged with the CLI's
flags) and its validators; the base run it varies is a RunSpec (models.py)."""

from __future__ import annotations

import re
from typing import Any

from pydantic import Field, ValidationError, field_validator

from ..sparse.methods import canonical_method
from .errors import SpecError, format_errors
from .models import SEED_MAX, StrictModel, canonical_key

SWEEP_NAME_MAX = 100
_SWEEP_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


class SweepSpec(StrictModel):
    """The grid of `granet sweep`: methods x final densities x seeds over one base RunSpec.

    In YAML it is the top-level `sweep:` section of a run spec; everything else in the
    file is the base run. `dense` in `methods` means one dense run per seed.
    """

    name: str | None = Field(None, description="sweep name [default: sweep-<hash of base spec and grid>]")
    methods: list[str] = Field(default_factory=lambda: ["granet", "rigl", "gmp"])
    densities: list[float] = Field(default_factory=lambda: [0.05, 0.1, 0.2])
    seeds: list[int] = Field(default_factory=lambda: [0])
    cpus_per_trial: float | None = Field(None, gt=0, description="CPUs reserved per trial (torch threads) [default: 1]")
    gpus_per_trial: float | None = Field(
        None, ge=0, description="GPUs per trial [default: 1 when the cluster has GPUs]"
    )
    max_concurrent: int | None = Field(
        None, gt=0, description="at most this many trials at once [default: as resources allow]"
    )
    grid: dict[str, list[Any]] = Field(
        default_factory=dict,
        description=(
            "more grid axes: spec field path -> values, e.g. {optim.lr: [0.05, 0.1]} (x methods x densities x seeds)"
        ),
    )
    max_failures: int = Field(2, ge=0, description="retries of a trial (lost node, crash) from its last checkpoint")
    checkpoint_every: float = Field(
        60.0,
        ge=0,
        description="a trial's Tune checkpoint at most every this many seconds, and at its last epoch (0: every epoch)",
    )

    @field_validator("grid")
    @classmethod
    def _grid(cls, v: dict[str, list[Any]]) -> dict[str, list[Any]]:
        empty = [k for k, values in v.items() if not values]
        if empty:
            raise ValueError("\n".join(f"{k}: needs at least one value" for k in empty))
        grid: dict[str, list[Any]] = {}
        for k, values in v.items():
            key = canonical_key(k.strip())
            if key in grid:
                raise ValueError(f"{k.strip()}: the same field as {key} (the reference's name); grid it once")
            grid[key] = list(values)
        return grid

    @field_validator("name")
    @classmethod
    def _name(cls, v: str | None) -> str | None:
        if v is None:
            return v
        v = v.strip()
        if not v:
            raise ValueError("must not be empty")
        if len(v) > SWEEP_NAME_MAX:
            raise ValueError(f"at most {SWEEP_NAME_MAX} characters, got {len(v)}")
        if not _SWEEP_NAME.fullmatch(v):
            shown = v if len(v) <= 40 else v[:37] + "..."
            raise ValueError(f"use letters, digits, '.', '_' and '-' (starting with a letter or digit), got {shown!r}")
        return v

    @field_validator("methods")
    @classmethod
    def _methods(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("needs at least one method")
        out, problems = [], []
        for m in v:
            try:
                m = canonical_method(str(m))
            except ValueError as e:
                problems.append(str(e))
                continue
            if m not in out:
                out.append(m)
        if problems:
            raise ValueError("\n".join(problems))
        return out

    @field_validator("densities")
    @classmethod
    def _densities(cls, v: list[float]) -> list[float]:
        if not v:
            raise ValueError("needs at least one density")
        bad = [d for d in v if not 0 < d <= 1]
        if bad:
            raise ValueError("\n".join(f"must be in (0, 1], got {d:g}" for d in bad))
        return list(dict.fromkeys(float(d) for d in v))

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, v: list[int]) -> list[int]:
        if not v:
            raise ValueError("needs at least one seed")
        bad = [s for s in v if not 0 <= s <= SEED_MAX]
        if bad:
            raise ValueError("\n".join(f"must be in [0, {SEED_MAX}] (2**31 - 1), got {s}" for s in bad))
        return list(dict.fromkeys(v))


def build_sweep_spec(data: dict[str, Any]) -> SweepSpec:
    """A `sweep:` mapping (already merged with CLI flags) -> validated SweepSpec; SpecError lines start `sweep.`."""
    if not isinstance(data, dict):
        raise SpecError([f"sweep: a mapping of methods/densities/seeds/name, got {type(data).__name__}"])
    try:
        return SweepSpec.model_validate(data)
    except ValidationError as e:
        raise SpecError(format_errors(e, prefix="sweep.")) from None
