"""The run spec's models (Pydantic v2): RunSpec and its sections, their validators, presets and hashes.

A spec is the single source of truth for a run: YAML -> RunSpec -> train.run. Method presets fill
every sparsity field the user did not set, so the normalised spec printed by `granet validate` is
what actually runs. SparsitySpec and DataSpec are generated from the core's `SparseConfig` and the
data layer's `DataConfig`, so each field is defined once. Imports no torch (`granet validate` stays fast).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import MISSING
from dataclasses import fields as dc_fields
from typing import TYPE_CHECKING, Any, Literal, get_type_hints

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator, model_validator

from ..data.base import DataConfig
from ..registry import DATASETS, MODELS
from ..sparse.methods import PRESET_FIELDS as CORE_PRESET_FIELDS
from ..sparse.methods import SparseConfig, canonical_method, fill_preset
from ..sparse.rules import GROWTH_RULES, REDISTRIBUTION_RULES, SPARSE_INITS
from ..sparse.scores import SCORES
from ..sparse.scores import names as score_names
from .errors import SpecError, echo, format_errors

#: fields a method preset decides: when `sparsity.method` is overridden (by --set or a
#: sweep grid), the base spec's values of these are dropped so the new preset applies
PRESET_FIELDS = CORE_PRESET_FIELDS


def _fields_of(config: type) -> dict[str, Any]:
    """A plain dataclass's fields as Pydantic fields: type, default (or factory), bounds and help
    text from its field metadata. How SparsitySpec and DataSpec are generated from the core's
    SparseConfig and the data layer's DataConfig, so each field is defined once."""
    hints = get_type_hints(config)
    out: dict[str, Any] = {}
    for f in dc_fields(config):
        meta = f.metadata
        kw: dict[str, Any] = {"description": meta.get("doc") or None, **meta.get("bounds", {})}
        if f.default_factory is not MISSING:
            kw["default_factory"] = f.default_factory
        else:
            kw["default"] = f.default
        out[f.name] = (hints[f.name], Field(**kw))
    return out


#: what torch.manual_seed and the results db's INTEGER seed column both take
SEED_MAX = 2**31 - 1
#: documented upper bounds, checked before anything is allocated (README "Errors and exit codes")
EPOCHS_MAX = 100_000  # optim.epochs x optim.multiplier
BATCH_MAX = 2**20  # data.batch_size, data.test_batch_size
SAMPLES_MAX = 2**27  # data.train_size, data.test_size (synthetic data)
SYNTHETIC_VALUES_MAX = 2**31  # (train_size + test_size) x prod(input_shape): float32 values generated
MASK_UPDATES_MAX = 100_000  # optim.epochs x steps per epoch / sparsity.update_frequency
#: models of granet_cli.models, read from their @register_model decorators without importing torch
MODEL_NAMES = MODELS.names()


class StrictModel(BaseModel):
    # strict: no bool -> number coercion (optim.lr: true), no "0.1" strings; ints still pass as
    # floats. allow_inf_nan=False: inf/.inf/1e400/nan are refused in every float field.
    model_config = ConfigDict(extra="forbid", validate_assignment=False, strict=True, allow_inf_nan=False)


def check_seed(v: int) -> int:
    if not 0 <= v <= SEED_MAX:
        raise ValueError(f"must be in [0, {SEED_MAX}] (2**31 - 1), got {v}")
    return v


class ModelSpec(StrictModel):
    name: str = Field("mlp", description="model registry name (granet_cli.models.MODEL_NAMES)")
    fan_in_init: bool = Field(False, description="kaiming fan-in init of conv/linear weights (ImageNet recipe)")


class _DataRules(StrictModel):
    """What DataSpec checks beyond types and bounds; its fields come from `data.base.DataConfig`."""

    @field_validator("name", check_fields=False)
    @classmethod
    def _dataset(cls, v: str) -> str:
        if v not in DATASETS.names():
            raise ValueError(f"unknown dataset {echo(repr(v))}; choose from {', '.join(DATASETS.names())}")
        return v

    @field_validator("batch_size", "test_batch_size", check_fields=False)
    @classmethod
    def _batch_bound(cls, v: int) -> int:
        if v > BATCH_MAX:
            raise ValueError(f"at most {BATCH_MAX} (2**20), got {echo(v)}")
        return v

    @field_validator("train_size", "test_size", check_fields=False)
    @classmethod
    def _samples_bound(cls, v: int) -> int:
        if v > SAMPLES_MAX:
            raise ValueError(f"at most {SAMPLES_MAX} (2**27), got {echo(v)}")
        return v

    @model_validator(mode="after")
    def _synthetic_size(self) -> Any:
        d: Any = self
        if d.name == "synthetic":
            values = (d.train_size + d.test_size) * math.prod(d.input_shape)
            if values > SYNTHETIC_VALUES_MAX:
                raise ValueError(
                    f"data.train_size: synthetic data of (train_size + test_size) x input_shape = {values:,} values; "
                    f"at most {SYNTHETIC_VALUES_MAX:,} (2**31)"
                )
        return self

    @field_validator("input_shape", check_fields=False)
    @classmethod
    def _positive_sizes(cls, v: list[int]) -> list[int]:
        bad = [d for d in v if d <= 0]
        if bad:
            raise ValueError(f"sizes must be positive integers, got {v}")
        return v


if TYPE_CHECKING:  # what a type checker sees: the rules plus the dataclass's fields

    class DataSpec(_DataRules, DataConfig): ...

else:
    DataSpec = create_model(
        "DataSpec", __base__=_DataRules, __module__=__name__, __doc__=DataConfig.__doc__, **_fields_of(DataConfig)
    )


class OptimSpec(StrictModel):
    optimizer: Literal["sgd", "adam"] = "sgd"
    lr: float = Field(0.1, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    nesterov: bool = False
    weight_decay: float = Field(5e-4, ge=0)
    epochs: int = Field(160, gt=0, le=EPOCHS_MAX)
    lr_schedule: Literal["multistep", "cosine", "constant"] = "multistep"
    milestones: list[float] = Field(
        default_factory=lambda: [0.5, 0.75], description="multistep: fractions of the epochs where lr *= gamma"
    )
    gamma: float = Field(0.1, gt=0)
    warmup_epochs: int = Field(0, ge=0)
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    grad_clip: float | None = Field(None, gt=0)
    multiplier: int = Field(
        1,
        ge=1,
        description=(
            "the reference's --multiplier: trains epochs x multiplier epochs, with init/final_prune_epoch, "
            "update_end_epoch and the lr milestones scaled by the same factor"
        ),
    )

    @field_validator("milestones")
    @classmethod
    def _fractions(cls, v: list[float]) -> list[float]:
        for m in v:
            if not 0 < m < 1:
                raise ValueError(f"milestones are fractions of training in (0, 1), got {m}")
        return sorted(v)


#: the reference's YAML names of renamed sparsity fields, still accepted: old name -> field
SPARSITY_ALIASES = {f.metadata["alias"]: f.name for f in dc_fields(SparseConfig) if "alias" in f.metadata}


def with_current_names(sparsity: dict[str, Any]) -> dict[str, Any]:
    """A raw `sparsity:` mapping with the reference's names renamed to the current ones (where the
    current name is not given too: validation refuses that)."""
    if not any(old in sparsity for old in SPARSITY_ALIASES):
        return sparsity
    out = dict(sparsity)
    for old, new in SPARSITY_ALIASES.items():
        if old in out and new not in out:
            out[new] = out.pop(old)
    return out


def canonical_key(path: str) -> str:
    """A dotted spec path with a renamed sparsity field written by its current name."""
    section, _, key = path.partition(".")
    if section == "sparsity" and key in SPARSITY_ALIASES:
        return f"sparsity.{SPARSITY_ALIASES[key]}"
    return path


class _SparsityRules(StrictModel):
    """What SparsitySpec checks beyond types and bounds; its fields come from `SparseConfig`."""

    @model_validator(mode="before")
    @classmethod
    def _reference_names(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        for old, new in SPARSITY_ALIASES.items():
            if old in data and new in data:
                raise ValueError(f"{old} and {new} are one setting ({old} is the reference's name): give one")
        return with_current_names(data)

    @field_validator("method", check_fields=False)
    @classmethod
    def _method(cls, v: str) -> str:
        return canonical_method(v)

    @field_validator("sparse_init", check_fields=False)
    @classmethod
    def _init(cls, v: str | None) -> str | None:
        if v is None:
            return v
        for known in SPARSE_INITS:
            if v.lower() == known.lower():
                return known
        raise ValueError(f"unknown sparse_init {v!r}; choose from {', '.join(SPARSE_INITS)}")

    @field_validator("growth", check_fields=False)
    @classmethod
    def _growth(cls, v: str | None) -> str | None:
        if v is not None and v not in GROWTH_RULES:
            raise ValueError(f"unknown growth {v!r}; choose from {', '.join(GROWTH_RULES)}")
        return v

    @field_validator("prune", check_fields=False)
    @classmethod
    def _prune(cls, v: str) -> str:
        if v not in SCORES:
            raise ValueError(f"unknown prune {v!r}; choose from {', '.join(SCORES)}")
        return v

    @field_validator("prune_score", check_fields=False)
    @classmethod
    def _prune_score(cls, v: str) -> str:
        exact = score_names(selection="top_k")
        if v not in exact:
            raise ValueError(f"unknown prune_score {v!r}; choose from {', '.join(exact)}")
        return v

    @field_validator("redistribution", check_fields=False)
    @classmethod
    def _redistribution(cls, v: str) -> str:
        if v not in REDISTRIBUTION_RULES:
            raise ValueError(f"unknown redistribution {v!r}; choose from {', '.join(REDISTRIBUTION_RULES)}")
        return v

    @field_validator("init_density", "final_density", check_fields=False)
    @classmethod
    def _density(cls, v: float | None) -> float | None:
        if v is not None and not 0 < v <= 1:
            raise ValueError(f"must be in (0, 1], got {v}")
        return v

    @property
    def gradual(self) -> bool:
        return getattr(self, "pruning_schedule", None) not in (None, "none")


#: Sparse-training settings; fields left unset are filled from the method preset. Generated from
#: the core's `SparseConfig`, the one definition of these fields.
if TYPE_CHECKING:  # what a type checker sees: the rules plus the dataclass's fields

    class SparsitySpec(_SparsityRules, SparseConfig): ...

else:
    SparsitySpec = create_model(
        "SparsitySpec",
        __base__=_SparsityRules,
        __module__=__name__,
        __doc__=SparseConfig.__doc__,
        **_fields_of(SparseConfig),
    )


class RunSpec(StrictModel):
    name: str | None = Field(None, description="free-form label shown in reports")
    model: ModelSpec = Field(default_factory=ModelSpec)
    data: DataSpec = Field(default_factory=DataSpec)
    optim: OptimSpec = Field(default_factory=OptimSpec)
    sparsity: SparsitySpec = Field(default_factory=SparsitySpec)
    seed: int = Field(0, description=f"0 .. {SEED_MAX} (torch and the results db take 31-bit seeds)")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    amp: bool = Field(False, description="mixed precision on CUDA")
    channels_last: bool = Field(False, description="channels_last memory format on CUDA")
    deterministic: bool = Field(True, description="deterministic algorithms (CPU results reproducible)")

    @field_validator("seed")
    @classmethod
    def _seed_range(cls, v: int) -> int:
        return check_seed(v)

    @model_validator(mode="after")
    def _fill_presets_and_check(self) -> RunSpec:
        sp = self.sparsity
        if self.optim.epochs * self.optim.multiplier > EPOCHS_MAX:
            raise ValueError(
                f"optim.epochs: epochs x multiplier = {self.optim.epochs * self.optim.multiplier:,}; "
                f"at most {EPOCHS_MAX:,}"
            )
        # object.__setattr__ keeps preset values out of model_fields_set, so a
        # re-validation with another method re-applies that method's preset.
        for key, value in fill_preset(dict(sp), sp.model_fields_set).items():
            object.__setattr__(sp, key, value)
        if sp.final_prune_epoch is None:
            default_end = max(1, round(self.optim.epochs * 110 / 160)) if sp.gradual else self.optim.epochs
            object.__setattr__(sp, "final_prune_epoch", default_end)
        problems = []
        # both filled above (every preset sets init_density)
        assert sp.init_density is not None and sp.final_prune_epoch is not None
        if sp.init_density < sp.final_density:
            problems.append(
                f"sparsity.init_density: must be >= final_density ({sp.final_density}), got {sp.init_density}"
            )
        # the prune epochs only matter to methods with a gradual schedule (gmp, granet)
        if sp.gradual and sp.final_prune_epoch > self.optim.epochs:
            problems.append(
                f"sparsity.final_prune_epoch: must be <= optim.epochs ({self.optim.epochs}), got {sp.final_prune_epoch}"
            )
        if sp.gradual and sp.init_prune_epoch >= sp.final_prune_epoch:
            problems.append(
                f"sparsity.init_prune_epoch: must be < final_prune_epoch ({sp.final_prune_epoch}) "
                f"for gradual pruning, got {sp.init_prune_epoch}"
            )
        if not sp.gradual and sp.sparse_init not in ("GMP", "dense") and sp.init_density != sp.final_density:
            problems.append(
                f"sparsity.init_density: method {sp.method} has no gradual pruning, so init_density "
                f"must equal final_density ({sp.final_density}), got {sp.init_density}"
            )
        if sp.sparse_init in ("GMP", "dense") and not sp.gradual and sp.final_density < 1.0:
            problems.append(
                f"sparsity.sparse_init: {sp.sparse_init} starts dense but method {sp.method} never prunes "
                f"to final_density {sp.final_density}"
            )
        if self.data.name in ("cifar10", "cifar100", "imagenet") and not self.data.root:
            problems.append(
                f"data.root: dataset {self.data.name} needs a local root folder"
                + (" to download into" if self.data.download else " (or data.download: true for cifar)")
            )
        if self.data.download and self.data.name == "imagenet":
            problems.append(
                "data.download: imagenet cannot be downloaded (licence); put it under data.root as "
                "<root>/train/<wnid>/*.JPEG and <root>/val/<wnid>/*.JPEG"
            )
        if self.model.name not in MODEL_NAMES:
            problems.append(
                f"model.name: unknown model {echo(repr(self.model.name))}; choose from {', '.join(MODEL_NAMES)}"
            )
        elif self.data.name == "synthetic" and self.model.name != "mlp" and len(self.data.input_shape) != 3:
            problems.append(
                f"data.input_shape: model {self.model.name} needs a (C, H, W) input shape, got {self.data.input_shape}"
            )
        if problems:
            raise ValueError("\n".join(problems))
        return self

    # ------------------------------------------------------------------ helpers
    def normalised(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def spec_hash(self) -> str:
        """Stable hash of the normalised spec, minus the cosmetic `name`."""
        return _hash(self.normalised(), drop=("name",))

    def config_hash(self) -> str:
        """The experiment a run belongs to: the spec hash without the seed (runs that differ only in
        their seed are repetitions of one experiment, and a report cell aggregates exactly those)."""
        return _hash(self.normalised(), drop=("name", "seed"))

    def scaled(self) -> RunSpec:
        """The spec the trainer runs: `optim.multiplier` applied (epochs, prune epochs and
        update_end_epoch multiplied; lr milestones are fractions of training, so they follow)."""
        k = self.optim.multiplier
        if k == 1:
            return self
        sp = self.sparsity
        sparsity = sp.model_copy(
            update={
                "init_prune_epoch": sp.init_prune_epoch * k,
                "final_prune_epoch": sp.final_prune_epoch * k if sp.final_prune_epoch is not None else None,
                "update_end_epoch": sp.update_end_epoch * k if sp.update_end_epoch is not None else None,
            }
        )
        optim = self.optim.model_copy(update={"epochs": self.optim.epochs * k, "multiplier": 1})
        return self.model_copy(update={"optim": optim, "sparsity": sparsity})


#: fields added after results were recorded: left out of the hashes while at their default, so
#: older runs keep their spec/config hash (sweeps still recognise them as done)
HASH_NEUTRAL_DEFAULTS = (
    ("data", "val_fraction", 0.0),
    ("optim", "multiplier", 1),
    ("sparsity", "prune_score", "magnitude"),
)
#: renamed sparsity fields enter the hashes under the name runs were recorded with before the rename
HASH_LEGACY_NAMES = {new: old for old, new in SPARSITY_ALIASES.items()}


def _hash(data: dict[str, Any], drop: tuple[str, ...]) -> str:
    data = {k: (dict(v) if isinstance(v, dict) else v) for k, v in data.items() if k not in drop}
    for section, key, default in HASH_NEUTRAL_DEFAULTS:
        if isinstance(data.get(section), dict) and data[section].get(key) == default:
            data[section].pop(key)
    if isinstance(data.get("sparsity"), dict):  # renamed fields hash under their old names
        data["sparsity"] = {HASH_LEGACY_NAMES.get(k, k): v for k, v in data["sparsity"].items()}
    if isinstance(data.get("data"), dict):  # where the files come from never changes a result
        data["data"].pop("download", None)
    blob = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def build_run_spec(data: dict[str, Any]) -> RunSpec:
    try:
        return RunSpec.model_validate(data)
    except ValidationError as e:
        raise SpecError(format_errors(e)) from None


def check_schedule_size(spec: RunSpec, steps_per_epoch: int) -> None:
    """Refuse (ValueError) a schedule of more than MASK_UPDATES_MAX mask updates: `plan` would list
    every event and a run would keep each in memory. Needs the dataset's steps per epoch."""
    sp = spec.scaled()
    updates = sp.optim.epochs * steps_per_epoch // sp.sparsity.update_frequency
    if updates > MASK_UPDATES_MAX:
        raise ValueError(
            f"sparsity.update_frequency: {sp.optim.epochs:,} epochs x {steps_per_epoch:,} steps / every "
            f"{sp.sparsity.update_frequency:,} steps = {updates:,} mask updates; at most {MASK_UPDATES_MAX:,} "
            "(raise update_frequency or lower optim.epochs)"
        )


def drop_preset_fields_if_method_changes(data: dict[str, Any], keys: set[str]) -> None:
    """When `keys` (dotted paths being overridden) change `sparsity.method`, drop the raw spec's
    preset-governed fields that are not overridden too, so the new method's preset applies."""
    sparsity = data.get("sparsity")
    if "sparsity.method" in keys and isinstance(sparsity, dict):
        for field in PRESET_FIELDS:
            if f"sparsity.{field}" not in keys:
                sparsity.pop(field, None)


def with_overrides(spec: RunSpec, overrides: dict[str, Any]) -> RunSpec:
    """A copy of `spec` with dotted-path overrides applied and re-validated from the user's own fields.

    Preset-filled fields are dropped before revalidation so that changing the method
    re-applies the new method's preset; when the method itself is overridden, the
    preset-governed fields the user set for the old method are dropped too.
    """
    data = spec.model_dump(mode="json", exclude_unset=True)
    data.setdefault("sparsity", {})
    overrides = {canonical_key(k): v for k, v in overrides.items()}
    drop_preset_fields_if_method_changes(data, set(overrides))
    for key, value in overrides.items():
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return build_run_spec(data)
