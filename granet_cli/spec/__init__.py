"""Validated run and sweep specifications (Pydantic v2).

A spec is the single source of truth for a run: YAML -> RunSpec -> train.run.
Method presets fill every sparsity field the user did not set, so the
normalised spec printed by `granet validate` is what actually runs.

One job per module (none imports torch: `granet validate` stays fast):
    models    RunSpec and its sections (generated from the layers' plain configs), presets, bounds, hashes
    sweep     SweepSpec, the grid of `granet sweep`
    loading   the YAML file and `--set` overrides, read within their safety bounds
    errors    SpecError and Pydantic's errors as `path: message` lines

This module holds the names the rest of granet imports.
"""

from __future__ import annotations

from ..sparse.rules import GRADIENT_INITS, GROWTH_RULES, PRUNE_INITS, REDISTRIBUTION_RULES, SPARSE_INITS
from .errors import ECHO_MAX, SpecError, format_errors
from .loading import (
    YAML_BYTES_MAX,
    YAML_VALUES_MAX,
    DuplicateKeyError,
    SpecLoader,
    YamlTooLarge,
    apply_overrides,
    load_run_spec,
    read_yaml,
)
from .models import (
    BATCH_MAX,
    EPOCHS_MAX,
    HASH_LEGACY_NAMES,
    HASH_NEUTRAL_DEFAULTS,
    MASK_UPDATES_MAX,
    MODEL_NAMES,
    PRESET_FIELDS,
    SAMPLES_MAX,
    SEED_MAX,
    SPARSITY_ALIASES,
    SYNTHETIC_VALUES_MAX,
    DataSpec,
    ModelSpec,
    OptimSpec,
    RunSpec,
    SparsitySpec,
    build_run_spec,
    canonical_key,
    check_schedule_size,
    with_current_names,
    with_overrides,
)
from .sweep import SWEEP_NAME_MAX, SweepSpec, build_sweep_spec

__all__ = [
    "GRADIENT_INITS",
    "GROWTH_RULES",
    "PRUNE_INITS",
    "REDISTRIBUTION_RULES",
    "SPARSE_INITS",
    "ECHO_MAX",
    "SpecError",
    "format_errors",
    "YAML_BYTES_MAX",
    "YAML_VALUES_MAX",
    "DuplicateKeyError",
    "SpecLoader",
    "YamlTooLarge",
    "apply_overrides",
    "load_run_spec",
    "read_yaml",
    "BATCH_MAX",
    "EPOCHS_MAX",
    "HASH_LEGACY_NAMES",
    "HASH_NEUTRAL_DEFAULTS",
    "MASK_UPDATES_MAX",
    "MODEL_NAMES",
    "PRESET_FIELDS",
    "SAMPLES_MAX",
    "SEED_MAX",
    "SPARSITY_ALIASES",
    "SYNTHETIC_VALUES_MAX",
    "DataSpec",
    "ModelSpec",
    "OptimSpec",
    "RunSpec",
    "SparsitySpec",
    "build_run_spec",
    "canonical_key",
    "check_schedule_size",
    "with_current_names",
    "with_overrides",
    "SWEEP_NAME_MAX",
    "SweepSpec",
    "build_sweep_spec",
]
