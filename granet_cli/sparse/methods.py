"""Method presets (the README's method table) and the plain config the core runs from.

The core never sees Pydantic: `SparseConfig` is a plain dataclass and the one definition of the
sparsity settings; `spec.SparsitySpec` is generated from its fields, so either can be handed to
`Masking`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from typing import Any, Literal

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


def fill_preset(values: dict[str, Any], explicit: Iterable[str]) -> dict[str, Any]:
    """The one place presets are applied: the method's preset values for every preset field not in
    `explicit` (or explicit but None). `values` holds at least `method` (canonical) and `final_density`.
    Dense always trains at density 1.0."""
    method = values["method"]
    final = 1.0 if method == "dense" else values["final_density"]
    filled = {"final_density": final}
    explicit = set(explicit)
    for key, value in PRESETS[method].items():
        if key in explicit and values.get(key) is not None:
            continue
        filled[key] = final if value == "final" else value
    return filled


def _setting(default: Any, doc: str = "", *, alias: str | None = None, **bounds: float) -> Any:
    """A SparseConfig field with what validation needs as plain metadata: `doc`, numeric `bounds`
    (ge/gt/le/lt) and the reference's YAML name as `alias`. The spec layer (Pydantic) builds
    `SparsitySpec` from these, so the sparsity fields are defined here once."""
    meta: dict[str, Any] = {"doc": doc, "bounds": bounds}
    if alias:
        meta["alias"] = alias
    return field(default=default, metadata=meta)


@dataclass
class SparseConfig:
    """Everything the sparse core needs, and the one definition of the sparsity settings:
    `spec.SparsitySpec` is generated from these fields (types, defaults, bounds, docs, aliases)."""

    method: str = _setting("granet", "granet | granet_uniform | rigl | set | gmp | gmp_uniform | static | dense")
    sparse_init: str | None = _setting(None, "initial mask: a name in sparse.rules.SPARSE_INITS (preset)")
    init_density: float | None = _setting(None, "density at the start (preset: 0.5 granet, 1.0 gmp, else final)")
    final_density: float = _setting(0.1, "target density after pruning")
    pruning_schedule: Literal["none", "global", "uniform"] | None = _setting(None, "gradual pruning (preset)")
    drop_and_grow: bool | None = _setting(None, "drop-and-grow mask updates (preset)")
    init_prune_epoch: int = _setting(0, "first epoch of gradual pruning", ge=0)
    final_prune_epoch: int | None = _setting(None, "default: 110/160 of the epochs, as the paper", ge=0)
    update_frequency: int = _setting(1000, "steps between mask updates (dT)", gt=0)
    update_end_epoch: int | None = _setting(None, "no drop-and-grow after this epoch", ge=0)
    drop_fraction: float = _setting(
        0.5, "initial drop fraction of drop-and-grow (cosine-decayed)", alias="prune_rate", gt=0, le=1
    )
    drop_fraction_min: float = _setting(
        0.005, "drop fraction at the end of the cosine decay", alias="prune_rate_min", ge=0, le=1
    )
    init_prune_fraction: float = _setting(
        0.5, "one-shot prune fraction of the prune_* sparse inits", alias="pruning_rate", gt=0, lt=1
    )
    growth: str | None = _setting(None, "growth rule: a name in sparse.rules.GROWTH_RULES (preset)")
    prune: str = _setting("magnitude", "drop criterion of drop-and-grow: a name in sparse.scores.SCORES")
    prune_threshold: float = _setting(1e-3, "drop threshold of prune=threshold", gt=0)
    prune_score: str = _setting(
        "magnitude", "score of gradual pruning and of the one-shot prune inits: a name in sparse.scores.SCORES"
    )
    redistribution: str = _setting("none", "per-layer regrowth budget: a name in sparse.rules.REDISTRIBUTION_RULES")
    erk_power_scale: float = _setting(1.0, "ERK's power scale", ge=0)
    dense_first_layer: bool = _setting(False, "keep the first layer dense")
    dense_classifier: bool = _setting(False, "keep the classifier dense")
    classifier_min_density: float = _setting(0.2, "floor of the classifier in _uniform pruning", gt=0, le=1)

    def __post_init__(self) -> None:
        self.method = canonical_method(self.method)
        explicit = [key for key in PRESET_FIELDS if getattr(self, key) is not None]
        for key, value in fill_preset(self.__dict__, explicit).items():
            setattr(self, key, value)

    @classmethod
    def from_obj(cls, obj: Any) -> SparseConfig:
        """Copy the matching attributes of any config-like object (e.g. a SparsitySpec)."""
        if isinstance(obj, cls):
            return obj
        return cls(**{f.name: getattr(obj, f.name) for f in fields(cls) if hasattr(obj, f.name)})

    @property
    def gradual(self) -> bool:
        return self.pruning_schedule in ("global", "uniform")
