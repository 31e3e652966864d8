"""Models by name: `build_model(name, num_classes, input_shape, fan_in_init=False)`.

Every model takes [N, C, H, W] input of `input_shape` and returns logits [N, num_classes]; its
last `nn.Linear` is the classifier. A model is one file here with `@register_model("name")` on its
builder `fn(num_classes, input_shape) -> nn.Module` (see `granet_cli.registry`); its module is
imported when it is first built.
"""

from __future__ import annotations

from collections.abc import Callable

import torch.nn as nn

from ..registry import MODELS

Builder = Callable[[int, tuple[int, ...]], nn.Module]

MODEL_NAMES: tuple[str, ...] = MODELS.names()


class ModelError(ValueError):
    """Unknown model name or an input shape the model cannot take."""


def fan_in_init_(model: nn.Module) -> nn.Module:
    """Kaiming-normal fan-in init of every Conv2d/Linear weight, biases zero (ImageNet recipe)."""
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return model


def build_model(name: str, num_classes: int, input_shape: tuple[int, ...], *, fan_in_init: bool = False) -> nn.Module:
    """A registered model by name (timm-style plain arguments: no spec object needed)."""
    if name not in MODEL_NAMES:
        raise ModelError(f"model.name: unknown model {name!r}; choose from {', '.join(MODEL_NAMES)}")
    builder: Builder = MODELS.get(name)
    shape = tuple(int(d) for d in input_shape)
    if name != "mlp" and len(shape) != 3:
        raise ModelError(f"model.name: {name} needs a (C, H, W) input shape, got {shape}")
    model = builder(int(num_classes), shape)
    if fan_in_init:
        fan_in_init_(model)
    return model


def classifier(model: nn.Module) -> nn.Linear:
    """The model's classifier: its last nn.Linear."""
    return [m for m in model.modules() if isinstance(m, nn.Linear)][-1]


__all__ = ["MODEL_NAMES", "ModelError", "build_model", "classifier", "fan_in_init_"]
