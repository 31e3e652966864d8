"""WideResNet-d-k for CIFAR (Zagoruyko & Komodakis 2016), pre-activation blocks, no dropout."""

import torch.nn as nn
import torch.nn.functional as F

from ..registry import register_model


class WideBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.shortcut = None
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False)

    def forward(self, x):
        o = F.relu(self.bn1(x))
        y = self.conv1(o)
        y = self.conv2(F.relu(self.bn2(y)))
        return y + (x if self.shortcut is None else self.shortcut(o))


class WideResNet(nn.Module):
    def __init__(self, depth: int, k: int, num_classes: int, in_channels: int = 3):
        super().__init__()
        assert (depth - 4) % 6 == 0, f"depth must be 6n+4, got {depth}"
        n = (depth - 4) // 6
        widths = [16, 16 * k, 32 * k, 64 * k]
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False)
        blocks, c = [], widths[0]
        for stage, planes in enumerate(widths[1:]):
            for i in range(n):
                blocks.append(WideBlock(c, planes, 2 if stage > 0 and i == 0 else 1))
                c = planes
        self.blocks = nn.Sequential(*blocks)
        self.bn = nn.BatchNorm2d(c)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward(self, x):
        out = F.relu(self.bn(self.blocks(self.conv1(x))))
        return self.fc(self.pool(out).flatten(1))


@register_model("wrn28_10")
def wrn28_10(num_classes: int, input_shape: tuple[int, ...]) -> nn.Module:
    return WideResNet(28, 10, num_classes, input_shape[0])


@register_model("wrn16_8")
def wrn16_8(num_classes: int, input_shape: tuple[int, ...]) -> nn.Module:
    return WideResNet(16, 8, num_classes, input_shape[0])
