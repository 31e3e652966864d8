"""Validated run and sweep specifications (Pydantic v2).

A spec is the single source of truth for a run: YAML -> RunSpec -> train.run.
Method presets fill every sparsity field the user did not set, so the
normalised spec printed by `granet validate` is what actually runs.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import stat
from dataclasses import MISSING
from dataclasses import fields as dc_fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_type_hints

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator, model_validator

from .data.base import DataConfig
from .registry import DATASETS, MODELS
from .safe_io import kind_of
from .sparse.methods import PRESET_FIELDS as CORE_PRESET_FIELDS
from .sparse.methods import SparseConfig, canonical_method, fill_preset
from .sparse.rules import GRADIENT_INITS, GROWTH_RULES, PRUNE_INITS, REDISTRIBUTION_RULES, SPARSE_INITS  # noqa: F401
from .sparse.scores import SCORES
from .sparse.scores import names as score_names

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


class SpecError(ValueError):
    """A spec problem, one `path: message` line per problem."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


#: what torch.manual_seed and the results db's INTEGER seed column both take
SEED_MAX = 2**31 - 1
#: documented upper bounds, checked before anything is allocated (README "Errors and exit codes")
EPOCHS_MAX = 100_000  # optim.epochs x optim.multiplier
BATCH_MAX = 2**20  # data.batch_size, data.test_batch_size
SAMPLES_MAX = 2**27  # data.train_size, data.test_size (synthetic data)
SYNTHETIC_VALUES_MAX = 2**31  # (train_size + test_size) x prod(input_shape): float32 values generated
YAML_BYTES_MAX = 2**20  # a spec file, and one --set value
YAML_VALUES_MAX = 100_000  # values a YAML document expands to, aliases counted at every use
ECHO_MAX = 80  # characters of a bad value an error message repeats
MASK_UPDATES_MAX = 100_000  # optim.epochs x steps per epoch / sparsity.update_frequency
#: models of granet_cli.models, read from their @register_model decorators without importing torch
MODEL_NAMES = MODELS.names()
SWEEP_NAME_MAX = 100
_SWEEP_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


class _Strict(BaseModel):
    # strict: no bool -> number coercion (optim.lr: true), no "0.1" strings; ints still pass as
    # floats. allow_inf_nan=False: inf/.inf/1e400/nan are refused in every float field.
    model_config = ConfigDict(extra="forbid", validate_assignment=False, strict=True, allow_inf_nan=False)


def _echo(value: Any) -> str:
    """At most ECHO_MAX characters of a bad value, for an error message."""
    text = str(value)
    return text if len(text) <= ECHO_MAX else text[: ECHO_MAX - 3] + "..."


def _check_seed(v: int) -> int:
    if not 0 <= v <= SEED_MAX:
        raise ValueError(f"must be in [0, {SEED_MAX}] (2**31 - 1), got {v}")
    return v


class ModelSpec(_Strict):
    name: str = Field("mlp", description="model registry name (granet_cli.models.MODEL_NAMES)")
    fan_in_init: bool = Field(False, description="kaiming fan-in init of conv/linear weights (ImageNet recipe)")


class _DataRules(_Strict):
    """What DataSpec checks beyond types and bounds; its fields come from `data.base.DataConfig`."""

    @field_validator("name", check_fields=False)
    @classmethod
    def _dataset(cls, v: str) -> str:
        if v not in DATASETS.names():
            raise ValueError(f"unknown dataset {_echo(repr(v))}; choose from {', '.join(DATASETS.names())}")
        return v

    @field_validator("batch_size", "test_batch_size", check_fields=False)
    @classmethod
    def _batch_bound(cls, v: int) -> int:
        if v > BATCH_MAX:
            raise ValueError(f"at most {BATCH_MAX} (2**20), got {_echo(v)}")
        return v

    @field_validator("train_size", "test_size", check_fields=False)
    @classmethod
    def _samples_bound(cls, v: int) -> int:
        if v > SAMPLES_MAX:
            raise ValueError(f"at most {SAMPLES_MAX} (2**27), got {_echo(v)}")
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


class OptimSpec(_Strict):
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


class _SparsityRules(_Strict):
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


class RunSpec(_Strict):
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
        return _check_seed(v)

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
                f"model.name: unknown model {_echo(repr(self.model.name))}; choose from {', '.join(MODEL_NAMES)}"
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


def format_errors(err: ValidationError, prefix: str = "") -> list[str]:
    """One `field.path: message` line per pydantic error."""
    lines: list[str] = []
    for e in err.errors():
        path = ".".join(str(p) for p in e["loc"])
        msg = e["msg"]
        for noise in ("Value error, ", "Assertion failed, "):
            msg = msg.replace(noise, "")
        if e["type"] == "extra_forbidden":
            msg = "unknown field (check the spelling)"
        elif e["type"] == "literal_error":
            msg = f"{msg}, got {_echo(repr(e.get('input')))}"
        elif isinstance(e.get("input"), bool) and e["type"] in ("float_type", "int_type"):
            msg = f"expected a number, not a boolean ({str(e['input']).lower()})"
        elif (
            e["type"] not in ("value_error", "assertion_error", "missing")
            and "got" not in msg
            and not isinstance(e.get("input"), dict)
        ):
            msg = f"{msg}, got {_echo(repr(e.get('input')))}"
        if not path:  # model-level validator: the message already names its fields
            lines.extend(f"{prefix}{line}" for line in msg.splitlines())
        else:
            lines.extend(f"{prefix}{path}: {line}" for line in msg.splitlines())
    return lines


def _parse_scalar(text: str, key: str) -> Any:
    """`--set` values are YAML scalars: 0.1 -> float, true -> bool, [1,2] -> list (bounded like a spec file)."""
    if len(text) > YAML_BYTES_MAX:
        raise SpecError([f"--set {_echo(key)}: a value of {len(text):,} characters; at most {YAML_BYTES_MAX:,}"])
    try:
        return yaml.load(text, Loader=SpecLoader)  # a SafeLoader subclass
    except YamlTooLarge as e:
        raise SpecError([f"--set {_echo(key)}: {e}"]) from None
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
    if isinstance(data.get("sparsity"), dict):  # so that a `--set` by either name replaces the file's value
        data["sparsity"] = with_current_names(data["sparsity"])
    _drop_preset_fields_if_method_changes(
        data, {canonical_key(item.split("=", 1)[0].strip()) for item in overrides or [] if "=" in item}
    )
    given: dict[str, str] = {}
    for item in overrides or []:
        raw = item.split("=", 1)[0].strip()
        first = given.setdefault(canonical_key(raw), raw)
        if "=" in item and first != raw:
            problems.append(f"--set {first} and {raw} are one setting (one is the reference's name): give one")
    for item in overrides or []:
        if "=" not in item:
            problems.append(f"--set {_echo(item)}: expected key.path=value")
            continue
        key, value = item.split("=", 1)
        parts = [p for p in canonical_key(key.strip()).split(".") if p]
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
            node[parts[-1]] = _parse_scalar(value, key.strip())
    if problems:
        raise SpecError(problems)
    return data


class DuplicateKeyError(yaml.constructor.ConstructorError):
    """A key given twice in one YAML mapping (plain YAML keeps the last one silently)."""


class YamlTooLarge(yaml.YAMLError):
    """A YAML document that expands to too many values (an alias bomb) or refers to itself."""


def _expanded_values(root: yaml.Node) -> int:
    """How many values `root` stands for with every alias expanded where it is used (iterative,
    memoised by node: a billion-laughs document is counted in microseconds, never built)."""
    sizes: dict[int, int] = {}
    open_: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        kids: list[yaml.Node] = []
        if isinstance(node, yaml.SequenceNode):
            kids = list(node.value)
        elif isinstance(node, yaml.MappingNode):
            kids = [n for pair in node.value for n in pair]
        if done:
            open_.discard(id(node))
            sizes[id(node)] = min(1 + sum(sizes[id(k)] for k in kids), YAML_VALUES_MAX + 1)
            continue
        if id(node) in sizes:
            continue
        if id(node) in open_:
            raise YamlTooLarge("a YAML alias refers to a value that contains it (a recursive alias)")
        open_.add(id(node))
        stack.append((node, True))
        stack.extend((k, False) for k in kids if id(k) not in sizes)
    return sizes[id(root)]


class SpecLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses duplicate keys and reads YAML 1.2 floats (`1e-3` is a number,
    not the string PyYAML's YAML 1.1 makes of it, so strict float fields accept it). A document
    that expands to more than YAML_VALUES_MAX values through aliases (an alias bomb: 400 bytes
    that stand for a billion strings) is refused before anything is built from it."""

    def compose_document(self) -> Any:
        node = super().compose_document()
        if node is not None and _expanded_values(node) > YAML_VALUES_MAX:
            raise YamlTooLarge(
                f"expands to more than {YAML_VALUES_MAX:,} values through aliases (an alias bomb?); refused"
            )
        return node

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.get(key)
                except TypeError:  # unhashable key: SafeLoader reports it
                    continue
                if first is not None:
                    raise DuplicateKeyError(
                        None, None, f"duplicate key {key!r} (first given on line {first + 1})", key_node.start_mark
                    )
                seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep)


SpecLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"), list("-+0123456789")
)


def read_yaml(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    try:
        mode = os.stat(p).st_mode
    except OSError:
        raise SpecError([f"{path}: spec file not found"]) from None
    if not stat.S_ISREG(mode):  # a FIFO would block the read forever
        raise SpecError([f"{path}: is {kind_of(mode)}, not a regular file (a spec is a YAML file)"])
    try:
        if p.stat().st_size > YAML_BYTES_MAX:
            raise SpecError([f"{path}: a spec file of {p.stat().st_size:,} bytes; at most {YAML_BYTES_MAX:,}"])
        raw = p.read_bytes()
    except OSError as e:
        raise SpecError([f"{path}: cannot read the spec file ({e.strerror or e})"]) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise SpecError([f"{path}: not a text (UTF-8) YAML file (undecodable byte at offset {e.start})"]) from None
    try:
        data = yaml.load(text, Loader=SpecLoader)  # a SafeLoader subclass
    except DuplicateKeyError as e:
        assert e.problem_mark is not None  # SpecLoader always gives the duplicate key's mark
        raise SpecError([f"{path}: line {e.problem_mark.line + 1}: {e.problem}"]) from None
    except YamlTooLarge as e:
        raise SpecError([f"{path}: {e}"]) from None
    except RecursionError:
        raise SpecError([f"{path}: nested too deeply to be a spec"]) from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        if isinstance(e, yaml.reader.ReaderError):
            where = f" (character {e.character!r} at offset {e.position} is not allowed)"
        raise SpecError([f"{path}: not valid YAML{where}"]) from None
    if data is None or data == {}:
        raise SpecError(
            [f"{path}: the spec file is empty (write the fields of the run, e.g. as in experiments/quickstart.yaml)"]
        )
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


def with_overrides(spec: RunSpec, overrides: dict[str, Any]) -> RunSpec:
    """A copy of `spec` with dotted-path overrides applied and re-validated from the user's own fields.

    Preset-filled fields are dropped before revalidation so that changing the method
    re-applies the new method's preset; when the method itself is overridden, the
    preset-governed fields the user set for the old method are dropped too.
    """
    data = spec.model_dump(mode="json", exclude_unset=True)
    data.setdefault("sparsity", {})
    overrides = {canonical_key(k): v for k, v in overrides.items()}
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
