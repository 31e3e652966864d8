"""``granet db merge``: copy the runs and sweeps of another granet results db into this one.

For jobs that each wrote their own ``--db`` (a shared filesystem without working file locks).
The source is opened read-only (any schema version) and read through the store's own queries;
everything it adds lands in one transaction of the destination.
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import StoreError
from .reads import Reads
from .schema import EPOCH_COLUMNS, LAYER_COLUMNS, MASK_UPDATE_COLUMNS, RUN_COLUMNS
from .writes import insert_rows


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether two paths are one file (a symlink or a hard link of it too)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


class Merging(Reads):
    """``merge_from``: the destination writes through its own transactions; the source is a
    read-only store of the same class."""

    def merge_from(self, source: str | os.PathLike) -> dict[str, int]:
        """Copy the runs (with their epochs, layers and mask updates) and the sweeps of another
        granet results db into this one, in one transaction; returns counts.

        For jobs that each wrote their own ``--db`` (a shared filesystem without working file
        locks).  The source is only read (any schema version; columns it lacks arrive as NULL,
        attempts as 1).  A run_id or sweep_id already here is kept as it is, so merging the same
        file twice adds nothing."""
        src_path = Path(source)
        if not self._memory and (os.path.realpath(src_path) == self._target or same_file(src_path, self._target)):
            raise StoreError(f"results db {self.path}: cannot merge a db into itself")
        with type(self)(src_path, read_only=True, lock_timeout=self.lock_timeout) as src:
            runs, sweeps = src.runs(), src.sweeps()
            ids = [r["run_id"] for r in runs]
            children = {
                "epochs": (EPOCH_COLUMNS, src.epochs(ids)),
                "layers": (LAYER_COLUMNS, src.layers(ids)),
                "mask_updates": (MASK_UPDATE_COLUMNS, src.mask_updates(ids)),
            }
        counts = {"runs": 0, "skipped": 0, "epochs": 0, "layers": 0, "mask_updates": 0, "sweeps": 0}
        with self._tx() as con:
            have = {r[0] for r in con.execute("SELECT run_id FROM runs").fetchall()}
            new = [r for r in runs if r["run_id"] not in have]
            new_ids = {r["run_id"] for r in new}
            counts["runs"], counts["skipped"] = len(new), len(runs) - len(new)
            for r in new:
                r["attempts"] = 1 if r["attempts"] is None else r["attempts"]
            insert_rows(con, "runs", RUN_COLUMNS, [[r[c] for c in RUN_COLUMNS] for r in new])
            for table, (cols, rows_) in children.items():
                mine = [[r["run_id"], *(r[c] for c in cols)] for r in rows_ if r["run_id"] in new_ids]
                insert_rows(con, table, ("run_id", *cols), mine)
                counts[table] = len(mine)
            have_sweeps = {r[0] for r in con.execute("SELECT sweep_id FROM sweeps").fetchall()}
            new_sweeps = [s for s in sweeps if s["sweep_id"] not in have_sweeps]
            sweep_columns = ("sweep_id", "name", "created_at", "grid_json")
            insert_rows(con, "sweeps", sweep_columns, [[s[c] for c in sweep_columns] for s in new_sweeps])
            counts["sweeps"] = len(new_sweeps)
        return counts
