"""torchvision's ImageNet ResNet-50, randomly initialised (weights are never loaded)."""

import torch.nn as nn

from ..registry import register_model


@register_model("resnet50_imagenet")
def resnet50_imagenet(num_classes: int, input_shape: tuple[int, ...]) -> nn.Module:
    import torchvision  # only here: importing it costs seconds the CIFAR and digits models never need

    model = torchvision.models.resnet50(weights=None, num_classes=num_classes)
    if input_shape[0] != 3:
        model.conv1 = nn.Conv2d(input_shape[0], 64, 7, stride=2, padding=3, bias=False)
    return model
