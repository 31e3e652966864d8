"""LeNet-5 style conv net.

Both 5x5 convs are 'same'-padded so the net works from 8x8 digits up to
28x28 / 32x32 images; the flatten size comes from a dummy forward.
"""

import torch
import torch.nn as nn

from ..registry import register_model


class LeNet5(nn.Module):
    def __init__(self, num_classes: int, input_shape: tuple[int, ...]):
        super().__init__()
        c, h, w = input_shape
        self.features = nn.Sequential(
            nn.Conv2d(c, 6, 5, padding=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2, ceil_mode=True),
            nn.Conv2d(6, 16, 5, padding=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2, ceil_mode=True),
            nn.Flatten(),
        )
        with torch.no_grad():
            flat = self.features(torch.zeros(1, c, h, w)).shape[1]
        self.classifier = nn.Sequential(
            nn.Linear(flat, 120),
            nn.ReLU(inplace=True),
            nn.Linear(120, 84),
            nn.ReLU(inplace=True),
            nn.Linear(84, num_classes),
        )

    def forward(self, x):
        return self.classifier(self.features(x))


@register_model("lenet5")
def lenet5(num_classes: int, input_shape: tuple[int, ...]) -> nn.Module:
    return LeNet5(num_classes, input_shape)
