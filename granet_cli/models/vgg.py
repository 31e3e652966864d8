"""CIFAR VGG-16/19 with BatchNorm, as the GraNet/GraSP reference `models/vgg.py`.

Conv3x3 (no bias) + BN + ReLU blocks with 'M' max-pools, global average pooling
(== the reference's AvgPool2d(2) on 32x32 input), then a single Linear(512, classes).
Pools use ceil_mode so inputs smaller than 32x32 (e.g. 8x8 digits) still fit.
"""

import torch.nn as nn

from ..registry import register_model

CFG: dict[int, list[int | str]] = {
    16: [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512],
    19: [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512],
}


class VGG(nn.Module):
    def __init__(self, depth: int, num_classes: int, in_channels: int = 3):
        super().__init__()
        layers: list[nn.Module] = []
        c = in_channels
        for v in CFG[depth]:
            if v == "M":
                layers.append(nn.MaxPool2d(2, ceil_mode=True))
            else:
                assert isinstance(v, int)  # CFG holds channel counts and "M"
                layers += [nn.Conv2d(c, v, 3, padding=1, bias=False), nn.BatchNorm2d(v), nn.ReLU(inplace=True)]
                c = v
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c, num_classes)
        for m in self.modules():  # the reference's _initialize_weights
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x):
        return self.classifier(self.pool(self.features(x)).flatten(1))


@register_model("vgg16")
def vgg16(num_classes: int, input_shape: tuple[int, ...]) -> nn.Module:
    return VGG(16, num_classes, input_shape[0])


@register_model("vgg19")
def vgg19(num_classes: int, input_shape: tuple[int, ...]) -> nn.Module:
    return VGG(19, num_classes, input_shape[0])
