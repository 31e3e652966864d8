"""Layer-wise densities: ERK, ER and uniform ("sparse init" distributions).

ERK follows RigL's `get_mask_random` / GraNet's `init('ERK')`: a layer's density is
`eps * raw_l` with `raw_l = (sum(shape) / prod(shape)) ** power_scale`; `eps` makes the
kept count equal `density * total`. Layers whose density would exceed 1 become dense
and `eps` is solved again, repeatedly, until no layer exceeds 1.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence


def _raw_score(shape: Sequence[int], mode: str, power_scale: float) -> float:
    dims = list(shape[:2]) if mode == "ER" else list(shape)
    return (sum(dims) / math.prod(dims)) ** power_scale


def erk_densities(
    shapes: Mapping[str, Sequence[int]], density: float, *, power_scale: float = 1.0, mode: str = "ERK"
) -> dict[str, float]:
    """Per-layer densities for ERK (`mode="ERK"`) or ER (`mode="ER"`)."""
    if not 0 < density <= 1:
        raise ValueError(f"density must be in (0, 1], got {density}")
    if density >= 1:
        return {name: 1.0 for name in shapes}
    numel = {name: math.prod(shape) for name, shape in shapes.items()}
    raw = {name: _raw_score(shape, mode, power_scale) for name, shape in shapes.items()}
    dense: set[str] = set()
    while True:
        sparse = [n for n in shapes if n not in dense]
        if not sparse:  # every layer forced dense: only possible when density ~ 1
            return {name: 1.0 for name in shapes}
        rhs = sum(density * numel[n] for n in sparse) - sum((1 - density) * numel[n] for n in dense)
        divisor = sum(raw[n] * numel[n] for n in sparse)
        eps = rhs / divisor
        max_raw = max(raw[n] for n in sparse)
        if eps * max_raw > 1:
            dense.update(n for n in sparse if raw[n] == max_raw)
            continue
        return {name: 1.0 if name in dense else eps * raw[name] for name in shapes}


def uniform_densities(shapes: Mapping[str, Sequence[int]], density: float) -> dict[str, float]:
    return {name: float(density) for name in shapes}


def layer_densities(
    shapes: Mapping[str, Sequence[int]], density: float, distribution: str, power_scale: float = 1.0
) -> dict[str, float]:
    """Dispatch on the distribution name: ERK, ER or uniform."""
    if distribution in ("ERK", "ER"):
        return erk_densities(shapes, density, power_scale=power_scale, mode=distribution)
    if distribution == "uniform":
        return uniform_densities(shapes, density)
    raise ValueError(f"unknown layer-density distribution {distribution!r}")


def kept_count(density: float, numel: int) -> int:
    """Exact number of weights a layer keeps at `density` (the reference samples Bernoulli)."""
    return max(0, min(numel, round(density * numel)))
