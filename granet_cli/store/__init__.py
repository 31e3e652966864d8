"""The DuckDB results store: the only package that talks to DuckDB.

One file (default ``results/granet.duckdb``, or ``$GRANET_DB``) holds every run, its per-epoch
metrics, per-layer final densities, mask-update history and the sweeps the runs belong to.
Accuracies are fractions in [0, 1]; timestamps are stored as naive UTC.

Every multi-statement write runs inside ``BEGIN``/``COMMIT`` and is rolled back on error, so a
crash mid-write never leaves a half-finished run behind.  All SQL is parameterised; column names
only ever come from the fixed lists of columns.py.

Schema versions (schema.py).  A granet db is recognisable: table ``granet_meta(key, value)`` holds
``schema_version`` (``SCHEMA_VERSION``) and the granet version that created it.  A *writer*
migrates an older granet db explicitly, one numbered step at a time (``MIGRATIONS``), all steps in
one transaction: a migration that fails leaves the file as it was.  Any other DuckDB file (say,
someone's own db with a ``runs`` table) is refused with a one-line error before anything is
written: granet never adds tables to, or "repairs", a database that is not its own.  A
*read-only* store never writes and reads every older granet schema, missing columns reading as
NULL and renamed ones (columns.RENAMED) under today's name.

Concurrency (locking.py, transactions.py, connection.py).  DuckDB lets one process at a time open
a file for writing, so a writer ``Store`` holds nothing between calls: each call attaches the file,
runs one short transaction and detaches it again, and a lock conflict is retried with bounded
exponential backoff plus jitter for up to ``$GRANET_DB_LOCK_TIMEOUT`` seconds (default 60).  A
read-only store (``granet report``, ``sweep --dry-run``) holds a shared lock for its lifetime, and
reads a private snapshot copy of a file that stays locked (``snapshot_if_locked``).  This relies on
the file lock: on a shared filesystem the lock must work across machines (NFSv4 or Lustre/GPFS
with POSIX locks enabled); where it does not, give each job its own ``--db`` and copy them into
one afterwards (``merge_from``, ``granet db merge``; merge.py).

A full disk is reported as ``StoreError("results db <path>: no space left on device")``; the
transaction is rolled back and the file stays readable.

The parts: columns.py (every column, defined once), schema.py, errors.py, locking.py,
connection.py, transactions.py, reads.py, writes.py, merge.py, and db.py (``Store``, built from
them).  This module re-exports the public API and loads a part on first use: importing
``granet_cli.store.columns`` (the trainer, the trackers and the run records do) imports neither
DuckDB nor the schema derived from the columns.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the names for static tools; at run time __getattr__ below loads them
    from .connection import DEFAULT_DB_PATH, SANDBOX, default_db_path
    from .db import Store
    from .errors import StoreError
    from .locking import DEFAULT_LOCK_TIMEOUT, LOCK_TIMEOUT_ENV, READ_LOCK_WAIT, claim_sweep, lock_timeout_from_env
    from .schema import (
        ADDED_IN,
        COLUMN_TYPES,
        EPOCH_COLUMNS,
        FAIL_STATUSES,
        FINAL_COLUMNS,
        LAYER_COLUMNS,
        MASK_UPDATE_COLUMNS,
        META_TABLE,
        MIGRATIONS,
        PRIMARY_KEYS,
        RUN_COLUMNS,
        RUN_STATUSES,
        SCHEMA_VERSION,
        START_COLUMNS,
        TABLES,
        V0_COLUMNS,
        RunStatus,
    )

#: the public API (ruff checks it against the imports above)
__all__ = [
    "DEFAULT_DB_PATH",
    "SANDBOX",
    "default_db_path",
    "Store",
    "StoreError",
    "DEFAULT_LOCK_TIMEOUT",
    "LOCK_TIMEOUT_ENV",
    "READ_LOCK_WAIT",
    "claim_sweep",
    "lock_timeout_from_env",
    "ADDED_IN",
    "COLUMN_TYPES",
    "EPOCH_COLUMNS",
    "FAIL_STATUSES",
    "FINAL_COLUMNS",
    "LAYER_COLUMNS",
    "MASK_UPDATE_COLUMNS",
    "META_TABLE",
    "MIGRATIONS",
    "PRIMARY_KEYS",
    "RUN_COLUMNS",
    "RUN_STATUSES",
    "SCHEMA_VERSION",
    "START_COLUMNS",
    "TABLES",
    "V0_COLUMNS",
    "RunStatus",
]
#: the parts, cheapest first: a name is looked up in the first part that defines it
_PARTS = ("errors", "locking", "schema", "connection", "db")


def __getattr__(name: str) -> Any:
    """Load the part that defines the public ``name`` on first use (PEP 562)."""
    if name in __all__:
        for part in _PARTS:
            module = importlib.import_module(f".{part}", __name__)
            if name in vars(module):
                globals()[name] = value = vars(module)[name]
                return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
