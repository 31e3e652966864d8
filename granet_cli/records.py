"""Row shapes shared by every writer of the results db (`granet run`, the `granet sweep` driver).

Both commands record a run the same way: `record_for` is the `runs` row written when a
run starts, `store_final` picks the final metrics `Store.finish_run` / `Store.fail_run` take.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

from .spec import RunSpec
from .store.columns import FINAL_METRICS

#: the final metrics a run's row holds (defined in granet_cli/store/columns.py)
FINAL_KEYS = FINAL_METRICS


def store_final(final: dict) -> dict:
    return {k: final.get(k) for k in FINAL_KEYS}


def record_for(spec: RunSpec, run_id: str, sweep_id: str | None) -> dict:
    """The `runs` row written when a run starts.

    config_hash (the spec hash without the seed) groups the seeds of one experiment; a spec
    object without `config_hash()` records NULL rather than failing the run."""
    config_hash = getattr(spec, "config_hash", None)
    return {
        "run_id": run_id,
        "sweep_id": sweep_id,
        "spec_hash": spec.spec_hash(),
        "config_hash": config_hash() if callable(config_hash) else None,
        "method": spec.sparsity.method,
        "model": spec.model.name,
        "dataset": spec.data.name,
        "target_density": spec.sparsity.final_density,
        "seed": spec.seed,
        "spec_json": json.dumps(spec.normalised(), sort_keys=True),
        "started_at": datetime.now(UTC).replace(tzinfo=None),
    }
