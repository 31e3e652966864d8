"""FLOPs accounting as in the RigL paper's appendix.

Only conv and linear multiply-adds count. A sparse forward costs
`sum_l density_l * F_l`; backward ~ 2x forward, so a training step costs
3x the sparse forward. Gradient-based growth needs one dense weight gradient
per mask update (RigL: `2 f_S + f_D` on that step instead of `3 f_S`);
momentum growth needs a dense gradient on every step.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn


def layer_macs(model: nn.Module, sample_input: torch.Tensor) -> dict[str, int]:
    """Dense multiply-adds per sample of every Conv/Linear module, keyed by `<module>.weight`."""
    macs: dict[str, int] = {}
    hooks = []

    def hook(name: str):
        def record(module: nn.Conv1d | nn.Conv2d | nn.Conv3d | nn.Linear, inputs, output: torch.Tensor) -> None:
            per_sample_outputs = output.numel() // output.shape[0]
            if isinstance(module, nn.Linear):
                positions = per_sample_outputs // module.out_features
            else:
                positions = per_sample_outputs // module.out_channels
            macs[f"{name}.weight"] = positions * module.weight.numel()

        return record

    for name, module in model.named_modules():
        if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)):
            hooks.append(module.register_forward_hook(hook(name)))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(sample_input[:1])
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    return macs


class FlopsMeter:
    """Accumulates training FLOPs step by step; reports fractions of the dense model."""

    def __init__(self, macs: Mapping[str, int]):
        self.macs = dict(macs)
        self.dense_forward = sum(self.macs.values())
        self.train_flops = 0.0  # in units of multiply-adds per sample
        self.steps = 0

    def sparse_forward(self, densities: Mapping[str, float]) -> float:
        """Forward cost with the given per-layer densities (layers not named are dense)."""
        return sum(m * densities.get(name, 1.0) for name, m in self.macs.items())

    def inference_fraction(self, densities: Mapping[str, float]) -> float:
        return self.sparse_forward(densities) / self.dense_forward if self.dense_forward else 1.0

    def add_step(self, sparse_forward: float, dense_gradient: bool) -> None:
        """One training step: 3 f_S, or 2 f_S + f_D when a dense weight gradient is needed."""
        self.train_flops += (2 * sparse_forward + self.dense_forward) if dense_gradient else 3 * sparse_forward
        self.steps += 1

    def training_fraction(self) -> float:
        if not self.steps or not self.dense_forward:
            return 1.0
        return self.train_flops / (3 * self.dense_forward * self.steps)

    def state_dict(self) -> dict:
        return {"train_flops": self.train_flops, "steps": self.steps}

    def load_state_dict(self, state: Mapping) -> None:
        self.train_flops = float(state["train_flops"])
        self.steps = int(state["steps"])
