"""Time schedules of the core: Zhu & Gupta cubic pruning and the cosine drop fraction."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class CubicSchedule:
    """density(t) = final + (init - final) * (1 - (t - t0) / (tf - t0)) ** 3.

    Pruning events happen at every step `t >= 1` that is a multiple of `every`
    with `t0 <= t < tf`, plus a closing event at `tf` itself, where the formula
    gives `final` exactly; from then on the density stays at `final`.
    """

    init_density: float
    final_density: float
    t0: int
    tf: int
    every: int

    def density_at(self, t: int) -> float:
        if t <= self.t0:
            return self.init_density
        if t >= self.tf:
            return self.final_density
        frac = (t - self.t0) / (self.tf - self.t0)
        return self.final_density + (self.init_density - self.final_density) * (1 - frac) ** 3

    def is_event(self, t: int) -> bool:
        if self.tf <= self.t0:
            return False
        return t == self.tf or (t >= 1 and t % self.every == 0 and self.t0 <= t < self.tf)

    def events(self) -> list[int]:
        if self.tf <= self.t0:
            return []
        first = max(self.every, math.ceil(self.t0 / self.every) * self.every)
        steps = list(range(first, self.tf, self.every))
        return steps + [self.tf]


def cosine_drop_fraction(step: int, total_steps: int, start: float, end: float = 0.005) -> float:
    """Drop fraction after `step` steps: CosineAnnealingLR(start -> end over total_steps)."""
    if total_steps <= 0:
        return start
    step = min(max(step, 0), total_steps)
    return end + (start - end) * (1 + math.cos(math.pi * step / total_steps)) / 2
