"""What callers read from a results db: runs, their epochs, layers and mask updates, and sweeps.

Rows come back as dicts keyed by the column lists of schema.py, in a fixed order; a column an
older file lacks reads as NULL, one it has under an older name (columns.RENAMED) reads under
today's, so a report can read every granet db ever written without migrating it.
"""

from __future__ import annotations

import json

from ..text import one_line
from .errors import StoreError
from .schema import (
    COLUMN_TYPES,
    EPOCH_COLUMNS,
    LAYER_COLUMNS,
    MASK_UPDATE_COLUMNS,
    RUN_COLUMNS,
    RunStatus,
    file_column,
)
from .transactions import Transactions


class Reads(Transactions):
    """The store's queries (see Transactions._query: a writer store attaches read-only per call)."""

    def star(self, table: str) -> str:
        """``*`` of ``table`` under today's column names: an older file's renamed columns (a
        read-only store does not migrate) are selected under their new name, in their place."""
        have = self._columns.get(table, set())
        renames = [(old, c) for c in COLUMN_TYPES[table] if (old := file_column(table, c, self._version)) != c]
        renames = [(old, c) for old, c in renames if old in have]
        return "*" + (f" RENAME ({', '.join(f'{old} AS {c}' for old, c in renames)})" if renames else "")

    def completed_hashes(self, sweep_id: str | None = None) -> set[str]:
        """spec_hash of every 'completed' run (of one sweep when sweep_id is given)."""
        sql = "SELECT DISTINCT spec_hash FROM runs WHERE status = ? AND spec_hash IS NOT NULL"
        params: list = [RunStatus.COMPLETED.value]
        if sweep_id is not None:
            sql += " AND sweep_id = ?"
            params.append(sweep_id)
        return {r["spec_hash"] for r in self._query(sql, params)}

    def runs(self, *, sweep: str | None = None, status: str | None = None) -> list[dict]:
        """runs rows as dicts (all RUN_COLUMNS), filtered by sweep_id and/or status,
        ordered by started_at then run_id."""
        where, params = [], []
        if sweep is not None:
            where.append("sweep_id = ?")
            params.append(sweep)
        if status is not None:
            where.append("status = ?")
            params.append(str(status))
        sql = f"SELECT {self._select('runs', RUN_COLUMNS)} FROM runs"
        if where:
            sql += " WHERE " + " AND ".join(where)
        return self._query(sql + " ORDER BY started_at NULLS LAST, run_id", params)

    def run(self, run_id: str) -> dict | None:
        rows = self._query(f"SELECT {self._select('runs', RUN_COLUMNS)} FROM runs WHERE run_id = ?", [run_id])
        return rows[0] if rows else None

    def _rows_of_runs(self, table: str, columns: tuple[str, ...], run_ids: list[str], order: str) -> list[dict]:
        if not run_ids:
            return []
        return self._query(
            f"SELECT run_id, {self._select(table, columns)} FROM {table} WHERE list_contains(?, run_id) "
            f"ORDER BY run_id, {order}",
            [list(run_ids)],
        )

    def epochs(self, run_ids: list[str]) -> list[dict]:
        """epochs rows (run_id + EPOCH_COLUMNS) of the given runs, ordered by run_id, epoch."""
        return self._rows_of_runs("epochs", EPOCH_COLUMNS, run_ids, "epoch")

    def mask_updates(self, run_ids: list[str]) -> list[dict]:
        """mask_updates rows (run_id + MASK_UPDATE_COLUMNS), ordered by run_id, step."""
        return self._rows_of_runs("mask_updates", MASK_UPDATE_COLUMNS, run_ids, "step")

    def layers(self, run_ids: list[str]) -> list[dict]:
        """layers rows (run_id + LAYER_COLUMNS), ordered by run_id, name."""
        return self._rows_of_runs("layers", LAYER_COLUMNS, run_ids, "name")

    def sweeps(self) -> list[dict]:
        """sweeps rows (grid_json decoded into 'grid'), newest first."""
        rows = self._query(
            "SELECT sweep_id, name, created_at, grid_json FROM sweeps ORDER BY created_at DESC NULLS LAST, sweep_id"
        )
        for r in rows:
            try:
                r["grid"] = json.loads(r["grid_json"]) if r["grid_json"] else {}
            except ValueError as e:
                raise StoreError(
                    f"results db {self.path}: sweep {one_line(r['sweep_id'], 40)} has invalid sweeps.grid_json "
                    f"({one_line(e, 80)})"
                ) from None
        return rows

    def sweep(self, sweep_id: str) -> dict | None:
        return next((s for s in self.sweeps() if s["sweep_id"] == sweep_id), None)

    def find_sweep(self, name_or_id: str) -> str | None:
        """sweep_id of the sweep with this id, else of the latest-created sweep with this name."""
        rows = self._query("SELECT sweep_id FROM sweeps WHERE sweep_id = ?", [name_or_id])
        if rows:
            return rows[0]["sweep_id"]
        rows = self._query(
            "SELECT sweep_id FROM sweeps WHERE name = ? ORDER BY created_at DESC NULLS LAST, sweep_id DESC LIMIT 1",
            [name_or_id],
        )
        return rows[0]["sweep_id"] if rows else None
