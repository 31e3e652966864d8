"""Store: the one object callers use, assembled from one class per concern.

Connection (opening, file checks, errors) <- Transactions (per-call attach, schema at open,
transactions, queries) <- Reads, Writes, Merging. Each part stays small enough to read on its own;
callers see one class.
"""

from __future__ import annotations

from .merge import Merging
from .writes import Writes


class Store(Writes, Merging):
    """A results db.  Use as a context manager (``with Store(path) as st: ...``).

    A writer store (the default) creates the schema in a new file, migrates an older granet
    db, refuses any other DuckDB file, and then holds no connection to the file between calls
    (see the package docstring: many processes can write one db).  ``read_only=True`` holds one
    shared-lock connection for the store's lifetime and never writes.  ``lock_timeout``
    (seconds; default ``$GRANET_DB_LOCK_TIMEOUT`` or 60) bounds every wait for another
    process's lock."""
