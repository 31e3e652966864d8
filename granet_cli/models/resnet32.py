"""Classic CIFAR ResNet-32 (He et al. 2016): 3 stages of 5 BasicBlocks, 16/32/64 filters.

Shortcuts that change shape are 1x1 conv + BN projections (as in the GraNet/GraSP
`models/resnet.py`, which uses the same structure with widths 32/64/128).
"""

import torch.nn as nn

from ..registry import register_model
from .resnet_cifar import BasicBlock


class CifarResNet(nn.Module):
    def __init__(self, depth: int, num_classes: int, in_channels: int = 3, widths=(16, 32, 64)):
        super().__init__()
        assert (depth - 2) % 6 == 0, f"depth must be 6n+2, got {depth}"
        n = (depth - 2) // 6
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False),
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(inplace=True),
        )
        blocks, in_planes = [], widths[0]
        for stage, planes in enumerate(widths):
            for i in range(n):
                blocks.append(BasicBlock(in_planes, planes, 2 if stage > 0 and i == 0 else 1))
                in_planes = planes
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(widths[-1], num_classes)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)

    def forward(self, x):
        return self.fc(self.pool(self.blocks(self.stem(x))).flatten(1))


@register_model("resnet32")
def resnet32(num_classes: int, input_shape: tuple[int, ...]) -> nn.Module:
    return CifarResNet(32, num_classes, input_shape[0])
