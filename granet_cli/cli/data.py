"""granet data fetch: download and verify CIFAR-10/100."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from .app import QuietOpt, app, fail, out

data_app = typer.Typer(
    help="Datasets: fetch CIFAR-10/100 with torchvision's own download and checksums.", no_args_is_help=True
)
app.add_typer(data_app, name="data")


class FetchDataset(StrEnum):
    cifar10 = "cifar10"
    cifar100 = "cifar100"
    imagenet = "imagenet"


@data_app.command("fetch")
def data_fetch(
    dataset: Annotated[
        FetchDataset, typer.Argument(help="cifar10 or cifar100 (imagenet cannot be downloaded: a clear error).")
    ],
    root: Annotated[Path, typer.Option("--root", help="Folder to download into; use it as data.root.")] = Path("data"),
    quiet: QuietOpt = False,
) -> None:
    """Download and verify (md5) CIFAR-10/100 into ROOT, as torchvision does; nothing happens if already there."""
    from ..data.base import DataError
    from ..fetch import fetch

    try:
        folder = fetch(str(dataset), root, quiet=quiet)
    except DataError as e:
        fail(str(e))
    out.print(f"{dataset}: verified at {folder}; use --set data.root={root}", highlight=False, soft_wrap=True)
