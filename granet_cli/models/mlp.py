"""Three-layer MLP: flatten -> 256 -> 128 -> num_classes."""

import math

import torch.nn as nn

from ..registry import register_model


@register_model("mlp")
def mlp(num_classes: int, input_shape: tuple[int, ...]) -> nn.Module:
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(math.prod(input_shape), 256),
        nn.ReLU(inplace=True),
        nn.Linear(256, 128),
        nn.ReLU(inplace=True),
        nn.Linear(128, num_classes),
    )
