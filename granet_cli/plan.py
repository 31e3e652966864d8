"""`granet plan`: the initial masks and the pruning schedule of a spec, without training."""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Any, cast

import torch
from torch import nn

from .data import dataset_info
from .models import build_model
from .sparse.masking import Masking
from .sparse.rules import needs_init_gradient
from .spec import RunSpec, check_schedule_size
from .train import SparsityError, empty_layers_problem


def build_plan(spec: RunSpec) -> dict[str, Any]:
    """Per-layer initial densities and the schedule's events (step, overall density)."""
    spec = spec.scaled()
    torch.manual_seed(spec.seed)
    info = dataset_info(**spec.data.model_dump())
    model = build_model(spec.model.name, info.num_classes, tuple(info.input_shape), fan_in_init=spec.model.fan_in_init)
    # The masks need no optimizer state before training; a real torch optimizer would import
    # torch._dynamo on construction (seconds of start-up for a command that trains nothing).
    optimizer = cast(torch.optim.Optimizer, SimpleNamespace(state={}, param_groups=[]))  # the masks read only these
    if needs_init_gradient(spec.sparsity):  # one synthetic batch stands in for data
        x = torch.randn(2, *info.input_shape)
        nn.functional.cross_entropy(model(x), torch.zeros(2, dtype=torch.long)).backward()
    steps_per_epoch = math.ceil(info.train_size / spec.data.batch_size)
    check_schedule_size(spec, steps_per_epoch)  # before any event list is built
    masking = Masking(model, optimizer, spec.sparsity, steps_per_epoch=steps_per_epoch, epochs=spec.optim.epochs)
    problem = empty_layers_problem(masking, spec.sparsity.final_density)
    if problem:
        raise SparsityError(f"sparsity.final_density: {problem}")
    return {
        "model": spec.model.name,
        "total_params": masking.total,
        "density": masking.density(),
        "layers": [{k: s[k] for k in ("name", "shape", "numel", "density")} for s in masking.layer_stats()],
        "schedule": masking.planned_schedule(),
    }


def steps_per_epoch(spec: RunSpec) -> int:
    return math.ceil(dataset_info(**spec.data.model_dump()).train_size / spec.data.batch_size)
