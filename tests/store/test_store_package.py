"""The store package's shape: its public API resolves, its parts import no private names from
each other, and `granet_cli.store.columns` stays free to import (no DuckDB, no derived schema)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import granet_cli.store as store

PACKAGE = Path(store.__file__).parent


def test_every_public_name_resolves():
    for name in store.__all__:
        assert getattr(store, name) is not None, name
    assert store.MIGRATIONS is store.schema.MIGRATIONS  # one dict: a test may patch a step


def test_no_private_names_cross_modules():
    for path in PACKAGE.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.level or "granet_cli" in (node.module or "")):
                private = [a.name for a in node.names if a.name.startswith("_") and not a.name.endswith("__")]
                assert not private, f"{path.name} imports {private} from {node.module}"


def test_columns_import_loads_neither_duckdb_nor_the_schema():
    code = (
        "import sys; from granet_cli.store import columns; "
        "assert 'duckdb' not in sys.modules and 'granet_cli.store.schema' not in sys.modules"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
