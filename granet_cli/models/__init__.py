"""Model registry: `build_model(name, num_classes, input_shape, fan_in_init=False)`.

Every model takes [N, C, H, W] input of `input_shape` and returns logits
[N, num_classes]; its last `nn.Linear` is the classifier.
"""

from __future__ import annotations

from collections.abc import Callable

import torch.nn as nn

from . import imagenet, lenet, mlp, resnet32, resnet_cifar, vgg, wrn

Builder = Callable[[int, tuple[int, ...]], nn.Module]

_REGISTRY: dict[str, Builder] = {
    "mlp": mlp.mlp,
    "lenet5": lenet.lenet5,
    "resnet18": resnet_cifar.resnet18,
    "resnet32": resnet32.resnet32,
    "resnet50": resnet_cifar.resnet50,
    "vgg16": vgg.vgg16,
    "vgg19": vgg.vgg19,
    "wrn28_10": wrn.wrn28_10,
    "wrn16_8": wrn.wrn16_8,
    "resnet50_imagenet": imagenet.resnet50_imagenet,
}
MODEL_NAMES: tuple[str, ...] = tuple(_REGISTRY)


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
    builder = _REGISTRY.get(name)
    if builder is None:
        raise ModelError(f"model.name: unknown model {name!r}; choose from {', '.join(MODEL_NAMES)}")
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
