"""The set-up checks of `granet run` (data present, model builds, masks fit, device exists), for
one spec or every distinct configuration of a sweep, before anything is written.

A run makes these checks by setting itself up (`train.setup`); a problem there is granet's own,
deterministic error: `granet run` exits 2 with its line, `granet sweep` refuses before its first
write and never retries a trial that raised one (see `own_errors`)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


def own_errors() -> tuple[type[Exception], ...]:
    """granet's own errors: raised by the input (spec, data, sizes), so the same on every attempt."""
    from pydantic import ValidationError

    from .. import train
    from ..data import DataError
    from ..distributed import DistributedSetupError
    from ..models import ModelError
    from ..spec import SpecError

    return (
        DataError,
        ModelError,
        train.ResumeError,
        train.DeviceError,
        train.SparsityError,
        DistributedSetupError,
        SpecError,
        ValidationError,
    )


def one_line(e: BaseException) -> str:
    return " ".join(str(e).split())


def problem(spec_json: str, threads: int | None = None) -> str | None:
    """The one-line problem that stops this spec at set-up, else None (the run path's own checks)."""
    from .. import train
    from ..spec import RunSpec

    try:
        train.setup(RunSpec.model_validate_json(spec_json), threads=threads)
    except own_errors() as e:
        return one_line(e)
    return None


def problems(configs: list[tuple[str, str]], threads: int | None = None) -> list[str]:
    """One line per distinct problem of `configs` ([(label, spec json)], one per distinct
    configuration): a problem all of them share is said once, else with the labels it stops."""
    found: dict[str, list[str]] = {}
    for label, spec_json in configs:
        why = problem(spec_json, threads)
        if why is not None:
            found.setdefault(why, []).append(label)
    return [why if len(labels) == len(configs) else f"{_labels(labels)}: {why}" for why, labels in found.items()]


def _labels(labels: list[str], shown: int = 3) -> str:
    more = len(labels) - shown
    return ", ".join(labels[:shown]) + (f" and {more} more" if more > 0 else "")


def distinct(points: Iterable[Any], run_spec) -> list[tuple[str, str]]:
    """(label, spec json) of the first point of every configuration: points that differ only in their
    seed set up alike (same data, model and masks), so each configuration is checked once."""
    import json

    seen: dict[str, tuple[str, str]] = {}
    for p in points:
        spec = run_spec(p)
        seen.setdefault(spec.config_hash(), (p.label, json.dumps(spec.normalised())))
    return list(seen.values())
