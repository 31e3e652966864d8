"""Bookkeeping that follows the masks without deciding them: ITOP and FLOPs.

`Masking` calls every observer's `on_masks_changed(masking)` after the masks changed (before
they are applied) and `on_step(masking, dense_gradient)` once per training step, before that
step's mask update (the step trained with the masks in force until then); `dense_gradient` says
whether that step needed the dense weight gradient.
An observer with a `state_key` is saved under that key of `Masking.state_dict()`.
"""

from __future__ import annotations

from typing import Any, Protocol

from torch import Tensor

from .criteria import count
from .flops import FlopsMeter


class Masked(Protocol):
    """What an observer reads of a `Masking` (a protocol, so this module need not import it)."""

    def masks(self) -> dict[str, Tensor]: ...

    def layer_densities(self) -> dict[str, float]: ...


class MaskObserver(Protocol):
    @property
    def state_key(self) -> str | None: ...  # None: nothing to checkpoint

    def on_masks_changed(self, masking: Masked) -> None: ...

    def on_step(self, masking: Masked, dense_gradient: bool) -> None: ...

    def state_dict(self) -> Any: ...

    def load_state_dict(self, state: Any) -> None: ...


class ITOPTracker:
    """In-time over-parameterisation: which weights have ever been active."""

    state_key = "fired"

    def __init__(self, masks: dict[str, Tensor]):
        self.fired = {name: mask.clone() for name, mask in masks.items()}

    def on_masks_changed(self, masking: Masked) -> None:
        for name, mask in masking.masks().items():
            self.fired[name] |= mask

    def on_step(self, masking: Masked, dense_gradient: bool) -> None:
        pass

    def rate(self, total: int) -> float:
        return sum(count(f) for f in self.fired.values()) / total

    def state_dict(self) -> dict[str, Tensor]:
        return {name: f.clone() for name, f in self.fired.items()}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        for name, f in self.fired.items():
            f.copy_(state[name])


class FlopsObserver:
    """Feeds a `FlopsMeter` one training step at a time, at the current layer densities."""

    state_key = "flops"

    def __init__(self, meter: FlopsMeter):
        self.meter = meter
        self.sparse_forward = 0.0

    def on_masks_changed(self, masking: Masked) -> None:
        self.sparse_forward = self.meter.sparse_forward(masking.layer_densities())

    def on_step(self, masking: Masked, dense_gradient: bool) -> None:
        self.meter.add_step(self.sparse_forward, dense_gradient)

    def state_dict(self) -> dict:
        return self.meter.state_dict()

    def load_state_dict(self, state: dict | None) -> None:
        if state:  # checkpoints of runs without a FLOPs meter hold None
            self.meter.load_state_dict(state)
