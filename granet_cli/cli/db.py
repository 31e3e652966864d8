"""granet db merge: copy the runs and sweeps of other results files into --db."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .app import DbOpt, app, fail, out, resolve_db

db_app = typer.Typer(
    help="Results databases: merge the files of jobs that each wrote their own --db.", no_args_is_help=True
)
app.add_typer(db_app, name="db")


@db_app.command("merge")
def db_merge(
    sources: Annotated[list[Path], typer.Argument(help="granet results files to copy from (only read).")],
    db: DbOpt = None,
) -> None:
    """Copy every run (with epochs, layers, mask updates) and sweep of SOURCES into --db; run ids already
    there are kept, so merging a file again adds nothing. Every source is checked before anything is written."""
    from ..store import Store, StoreError

    db_path = resolve_db(db)
    try:
        for src in sources:
            if src.resolve() == db_path.resolve() or (src.exists() and db_path.exists() and src.samefile(db_path)):
                fail(f"results db {src}: is the destination --db itself")
            with Store(src, read_only=True) as check:
                check.sweeps()  # a source with invalid grid_json is refused before --db is created
        with Store(db_path) as st:
            for src in sources:
                n = st.merge_from(src)
                out.print(
                    f"{src}: {n['runs']} run(s) added ({n['epochs']} epochs), {n['skipped']} already in "
                    f"{db_path}; {n['sweeps']} sweep(s) added",
                    highlight=False,
                    soft_wrap=True,
                )
    except StoreError as e:
        fail(str(e))
