"""Method presets (DESIGN.md table) and the plain config the core runs from.

The core never sees Pydantic: `SparseConfig` is a dataclass with the same field
names as `spec.SparsitySpec`, so either can be handed to `Masking`.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

METHODS = ("granet", "granet_uniform", "rigl", "set", "gmp", "gmp_uniform", "static", "dense")
METHOD_ALIASES = {"dst": "rigl"}

#: "final" stands for the run's final_density.
PRESETS: dict[str, dict[str, Any]] = {
    "granet": dict(
        sparse_init="ERK", init_density=0.5, pruning_schedule="global", drop_and_grow=True, growth="gradient"
    ),
    "granet_uniform": dict(
        sparse_init="uniform", init_density=0.5, pruning_schedule="uniform", drop_and_grow=True, growth="gradient"
    ),
    "rigl": dict(
        sparse_init="ERK", init_density="final", pruning_schedule="none", drop_and_grow=True, growth="gradient"
    ),
    "set": dict(sparse_init="ERK", init_density="final", pruning_schedule="none", drop_and_grow=True, growth="random"),
    "gmp": dict(sparse_init="GMP", init_density=1.0, pruning_schedule="global", drop_and_grow=False, growth="gradient"),
    "gmp_uniform": dict(
        sparse_init="GMP", init_density=1.0, pruning_schedule="uniform", drop_and_grow=False, growth="gradient"
    ),
    "static": dict(
        sparse_init="ERK", init_density="final", pruning_schedule="none", drop_and_grow=False, growth="gradient"
    ),
    "dense": dict(
        sparse_init="dense", init_density=1.0, pruning_schedule="none", drop_and_grow=False, growth="gradient"
    ),
}
#: fields a preset decides
PRESET_FIELDS = ("sparse_init", "init_density", "pruning_schedule", "drop_and_grow", "growth")


def canonical_method(name: str) -> str:
    name = METHOD_ALIASES.get(name.lower(), name.lower())
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose from {', '.join(METHODS)} (alias: dst)")
    return name


@dataclass
class SparseConfig:
    """Everything the sparse core needs; field names match `spec.SparsitySpec`."""

    method: str = "granet"
    sparse_init: str | None = None
    init_density: float | None = None
    final_density: float = 0.1
    pruning_schedule: str | None = None  # none | global | uniform
    drop_and_grow: bool | None = None
    init_prune_epoch: int = 0
    final_prune_epoch: int | None = None
    update_frequency: int = 1000
    update_end_epoch: int | None = None
    prune_rate: float = 0.5
    prune_rate_min: float = 0.005
    pruning_rate: float = 0.5
    growth: str | None = None  # a name in rules.GROWTH_RULES: gradient | momentum | random | ...
    prune: str = "magnitude"  # magnitude | SET | threshold
    prune_threshold: float = 1e-3
    redistribution: str = "none"  # none | magnitude | nonzeros
    erk_power_scale: float = 1.0
    dense_first_layer: bool = False
    dense_classifier: bool = False
    classifier_min_density: float = 0.2

    def __post_init__(self) -> None:
        self.method = canonical_method(self.method)
        if self.method == "dense":
            self.final_density = 1.0
        for key, value in PRESETS[self.method].items():
            if getattr(self, key) is None:
                setattr(self, key, self.final_density if value == "final" else value)

    @classmethod
    def from_obj(cls, obj: Any) -> SparseConfig:
        """Copy the matching attributes of any config-like object (e.g. a SparsitySpec)."""
        if isinstance(obj, cls):
            return obj
        return cls(**{f.name: getattr(obj, f.name) for f in fields(cls) if hasattr(obj, f.name)})

    @property
    def gradual(self) -> bool:
        return self.pruning_schedule in ("global", "uniform")
