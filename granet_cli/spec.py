"""Validated run and sweep specifications (Pydantic v2).

A spec is the single source of truth for a run: YAML -> RunSpec -> train.run.
Method presets fill every sparsity field the user did not set, so the
normalised spec printed by `granet validate` is what actually runs.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .sparse.methods import METHODS, PRESETS, canonical_method
from .sparse.methods import PRESET_FIELDS as CORE_PRESET_FIELDS

SPARSE_INITS = (
    "ERK", "ER", "uniform", "GMP", "dense",
    "prune_uniform", "prune_global", "prune_and_grow_uniform", "prune_and_grow_global",
    "prune_structured", "prune_and_grow_structured",
)
#: sparse-init modes that start from a one-shot prune of a dense init
PRUNE_INITS = tuple(m for m in SPARSE_INITS if m.startswith("prune"))
#: sparse-init modes that need a gradient of the dense model before the mask exists
GRADIENT_INITS = tuple(m for m in PRUNE_INITS if "grow" in m)

#: fields a method preset decides: when `sparsity.method` is overridden (by --set or a
#: sweep grid), the base spec's values of these are dropped so the new preset applies
PRESET_FIELDS = CORE_PRESET_FIELDS


class SpecError(ValueError):
    """A spec problem, one `path: message` line per problem."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=False)


class ModelSpec(_Strict):
    name: str = Field("mlp", description="model registry name (granet_cli.models.MODEL_NAMES)")
    fan_in_init: bool = Field(False, description="kaiming fan-in init of conv/linear weights (ImageNet recipe)")


class DataSpec(_Strict):
    name: Literal["digits", "cifar10", "cifar100", "imagenet", "synthetic"] = "digits"
    root: str | None = Field(None, description="local dataset folder (cifar*/imagenet); never downloaded")
    batch_size: int = Field(128, gt=0)
    test_batch_size: int = Field(512, gt=0)
    num_workers: int = Field(0, ge=0)
    augment: bool = Field(True, description="the reference's training augmentation (cifar/imagenet)")
    # synthetic data only
    input_shape: list[int] = Field(default_factory=lambda: [3, 32, 32])
    num_classes: int = Field(10, gt=1)
    train_size: int = Field(512, gt=0)
    test_size: int = Field(256, gt=0)


class OptimSpec(_Strict):
    optimizer: Literal["sgd", "adam"] = "sgd"
    lr: float = Field(0.1, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    nesterov: bool = False
    weight_decay: float = Field(5e-4, ge=0)
    epochs: int = Field(160, gt=0)
    lr_schedule: Literal["multistep", "cosine", "constant"] = "multistep"
    milestones: list[float] = Field(default_factory=lambda: [0.5, 0.75],
                                    description="multistep: fractions of the epochs where lr *= gamma")
    gamma: float = Field(0.1, gt=0)
    warmup_epochs: int = Field(0, ge=0)
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    grad_clip: float | None = Field(None, gt=0)

    @field_validator("milestones")
    @classmethod
    def _fractions(cls, v: list[float]) -> list[float]:
        for m in v:
            if not 0 < m < 1:
                raise ValueError(f"milestones are fractions of training in (0, 1), got {m}")
        return sorted(v)


class SparsitySpec(_Strict):
    """Sparse-training settings; fields left unset are filled from the method preset."""

    method: str = "granet"
    sparse_init: str | None = None
    init_density: float | None = None
    final_density: float = 0.1
    pruning_schedule: Literal["none", "global", "uniform"] | None = None
    drop_and_grow: bool | None = None
    init_prune_epoch: int = Field(0, ge=0)
    final_prune_epoch: int | None = Field(None, ge=0, description="default: 110/160 of the epochs, as the paper")
    update_frequency: int = Field(1000, gt=0, description="steps between mask updates (dT)")
    update_end_epoch: int | None = Field(None, ge=0, description="no drop-and-grow after this epoch")
    prune_rate: float = Field(0.5, gt=0, le=1, description="initial drop fraction of drop-and-grow")
    prune_rate_min: float = Field(0.005, ge=0, le=1, description="drop fraction at the end of the cosine decay")
    pruning_rate: float = Field(0.5, gt=0, lt=1, description="one-shot prune fraction of prune_* sparse inits")
    growth: Literal["gradient", "momentum", "random"] | None = None
    prune: Literal["magnitude", "SET", "threshold"] = "magnitude"
    prune_threshold: float = Field(1e-3, gt=0, description="drop threshold of prune=threshold")
    redistribution: Literal["none", "magnitude", "nonzeros"] = "none"
    erk_power_scale: float = Field(1.0, ge=0)
    dense_first_layer: bool = False
    dense_classifier: bool = False
    classifier_min_density: float = Field(0.2, gt=0, le=1, description="floor of the classifier in _uniform pruning")

    @field_validator("method")
    @classmethod
    def _method(cls, v: str) -> str:
        return canonical_method(v)

    @field_validator("sparse_init")
    @classmethod
    def _init(cls, v: str | None) -> str | None:
        if v is None:
            return v
        for known in SPARSE_INITS:
            if v.lower() == known.lower():
                return known
        raise ValueError(f"unknown sparse_init {v!r}; choose from {', '.join(SPARSE_INITS)}")

    @field_validator("init_density", "final_density")
    @classmethod
    def _density(cls, v: float | None) -> float | None:
        if v is not None and not 0 < v <= 1:
            raise ValueError(f"must be in (0, 1], got {v}")
        return v

    @property
    def gradual(self) -> bool:
        return self.pruning_schedule not in (None, "none")


class RunSpec(_Strict):
    name: str | None = Field(None, description="free-form label shown in reports")
    model: ModelSpec = Field(default_factory=ModelSpec)
    data: DataSpec = Field(default_factory=DataSpec)
    optim: OptimSpec = Field(default_factory=OptimSpec)
    sparsity: SparsitySpec = Field(default_factory=SparsitySpec)
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    amp: bool = Field(False, description="mixed precision on CUDA")
    channels_last: bool = Field(False, description="channels_last memory format on CUDA")
    deterministic: bool = Field(True, description="deterministic algorithms (CPU results reproducible)")

    @model_validator(mode="after")
    def _fill_presets_and_check(self) -> "RunSpec":
        sp = self.sparsity
        preset = PRESETS[sp.method]
        explicit = sp.model_fields_set
        # object.__setattr__ keeps preset values out of model_fields_set, so a
        # re-validation with another method re-applies that method's preset.
        if sp.method == "dense":
            object.__setattr__(sp, "final_density", 1.0)
        for key, value in preset.items():
            if key == "final_density" or (key in explicit and getattr(sp, key) is not None):
                continue
            object.__setattr__(sp, key, sp.final_density if value == "final" else value)
        if sp.final_prune_epoch is None:
            default_end = max(1, round(self.optim.epochs * 110 / 160)) if sp.gradual else self.optim.epochs
            object.__setattr__(sp, "final_prune_epoch", default_end)
        problems = []
        if sp.init_density < sp.final_density:
            problems.append(f"sparsity.init_density: must be >= final_density ({sp.final_density}), got {sp.init_density}")
        if sp.final_prune_epoch > self.optim.epochs:
            problems.append(f"sparsity.final_prune_epoch: must be <= optim.epochs ({self.optim.epochs}), got {sp.final_prune_epoch}")
        if sp.gradual and sp.init_prune_epoch >= sp.final_prune_epoch:
            problems.append(f"sparsity.init_prune_epoch: must be < final_prune_epoch ({sp.final_prune_epoch}) "
                            f"for gradual pruning, got {sp.init_prune_epoch}")
        if not sp.gradual and sp.sparse_init not in ("GMP", "dense") and sp.init_density != sp.final_density:
            problems.append(f"sparsity.init_density: method {sp.method} has no gradual pruning, so init_density "
                            f"must equal final_density ({sp.final_density}), got {sp.init_density}")
        if sp.sparse_init in ("GMP", "dense") and not sp.gradual and sp.final_density < 1.0:
            problems.append(f"sparsity.sparse_init: {sp.sparse_init} starts dense but method {sp.method} never prunes "
                            f"to final_density {sp.final_density}")
        if self.data.name in ("cifar10", "cifar100", "imagenet") and not self.data.root:
            problems.append(f"data.root: dataset {self.data.name} needs a local root folder (nothing is downloaded)")
        if problems:
            raise ValueError("\n".join(problems))
        return self

    # ------------------------------------------------------------------ helpers
    def normalised(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def spec_hash(self) -> str:
        """Stable hash of the normalised spec, minus the cosmetic `name`."""
        data = self.normalised()
        data.pop("name", None)
        blob = json.dumps(data, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def format_errors(err: ValidationError, prefix: str = "") -> list[str]:
    """One `field.path: message` line per pydantic error."""
    lines = []
    for e in err.errors():
        path = ".".join(str(p) for p in e["loc"])
        msg = e["msg"]
        for noise in ("Value error, ", "Assertion failed, "):
            msg = msg.replace(noise, "")
        if e["type"] == "extra_forbidden":
            msg = "unknown field (check the spelling)"
        elif e["type"] == "literal_error":
            msg = f"{msg}, got {e.get('input')!r}"
        if not path:  # model-level validator: the message already names its fields
            lines.extend(f"{prefix}{line}" for line in msg.splitlines())
        else:
            lines.extend(f"{prefix}{path}: {line}" for line in msg.splitlines())
    return lines


def _parse_scalar(text: str) -> Any:
    """`--set` values are YAML scalars: 0.1 -> float, true -> bool, [1,2] -> list."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def _drop_preset_fields_if_method_changes(data: dict[str, Any], keys: set[str]) -> None:
    sparsity = data.get("sparsity")
    if "sparsity.method" in keys and isinstance(sparsity, dict):
        for field in PRESET_FIELDS:
            if f"sparsity.{field}" not in keys:
                sparsity.pop(field, None)


def apply_overrides(data: dict[str, Any], overrides: list[str] | None) -> dict[str, Any]:
    """Apply `key.path=value` overrides to a raw spec dict (before validation)."""
    problems = []
    _drop_preset_fields_if_method_changes(
        data, {item.split("=", 1)[0].strip() for item in overrides or [] if "=" in item})
    for item in overrides or []:
        if "=" not in item:
            problems.append(f"--set {item}: expected key.path=value")
            continue
        key, value = item.split("=", 1)
        parts = [p for p in key.strip().split(".") if p]
        if not parts:
            problems.append(f"--set {item}: empty key")
            continue
        node = data
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                problems.append(f"{key}: {part} is not a section")
                break
            node = child
        else:
            node[parts[-1]] = _parse_scalar(value)
    if problems:
        raise SpecError(problems)
    return data


def read_yaml(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise SpecError([f"{path}: spec file not found"])
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        raise SpecError([f"{path}: not valid YAML{where}"]) from None
    if not isinstance(data, dict):
        raise SpecError([f"{path}: a spec is a YAML mapping, got {type(data).__name__}"])
    return data


def build_run_spec(data: dict[str, Any]) -> RunSpec:
    try:
        return RunSpec.model_validate(data)
    except ValidationError as e:
        raise SpecError(format_errors(e)) from None


def load_run_spec(path: str | Path | None, overrides: list[str] | None = None) -> RunSpec:
    """YAML file (or the defaults when path is None) + `--set` overrides -> validated RunSpec."""
    data = read_yaml(path) if path is not None else {}
    data.pop("sweep", None)  # a sweep file's grid section is not part of the run
    return build_run_spec(apply_overrides(data, overrides))


def with_overrides(spec: RunSpec, overrides: dict[str, Any]) -> RunSpec:
    """A copy of `spec` with dotted-path overrides applied and re-validated from the user's own fields.

    Preset-filled fields are dropped before revalidation so that changing the method
    re-applies the new method's preset; when the method itself is overridden, the
    preset-governed fields the user set for the old method are dropped too.
    """
    data = spec.model_dump(mode="json", exclude_unset=True)
    data.setdefault("sparsity", {})
    _drop_preset_fields_if_method_changes(data, set(overrides))
    for key, value in overrides.items():
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return build_run_spec(data)


# ----------------------------------------------------------------------------- sweeps
class SweepSpec(_Strict):
    """The grid of `granet sweep`: methods x final densities x seeds over one base RunSpec.

    In YAML it is the top-level `sweep:` section of a run spec; everything else in the
    file is the base run. `dense` in `methods` means one dense run per seed.
    """

    name: str | None = Field(None, description="sweep name [default: sweep-<hash of base spec and grid>]")
    methods: list[str] = Field(default_factory=lambda: ["granet", "rigl", "gmp"])
    densities: list[float] = Field(default_factory=lambda: [0.05, 0.1, 0.2])
    seeds: list[int] = Field(default_factory=lambda: [0])
    cpus_per_trial: float | None = Field(None, gt=0, description="CPUs reserved per trial (torch threads) [default: 1]")
    gpus_per_trial: float | None = Field(None, ge=0, description="GPUs per trial [default: 1 when the cluster has GPUs]")
    max_concurrent: int | None = Field(None, gt=0, description="at most this many trials at once [default: as resources allow]")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str | None) -> str | None:
        if v is not None and not v.strip():
            raise ValueError("must not be empty")
        return v.strip() if v is not None else v

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
        return list(dict.fromkeys(v))


def build_sweep_spec(data: dict[str, Any]) -> SweepSpec:
    """A `sweep:` mapping (already merged with CLI flags) -> validated SweepSpec; SpecError lines start `sweep.`."""
    if not isinstance(data, dict):
        raise SpecError([f"sweep: a mapping of methods/densities/seeds/name, got {type(data).__name__}"])
    try:
        return SweepSpec.model_validate(data)
    except ValidationError as e:
        raise SpecError(format_errors(e, prefix="sweep.")) from None
