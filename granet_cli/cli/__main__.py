"""`python -m granet_cli.cli`: the same as the `granet` console script."""

from . import app

app()
