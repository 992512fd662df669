"""LeNet-5 and two narrower variants, for 32x32 inputs."""

import torch
import torch.nn as nn


class LeNet5(nn.Module):
    """Three 5x5 convs (the last one reduces 5x5 to 1x1) followed by two linear layers."""

    def __init__(self, widths, num_classes=10, in_channels=3):
        super().__init__()
        c1, c2, c3, f = widths
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, c1, 5), nn.ReLU(inplace=True), nn.MaxPool2d(2),  # 32 -> 28 -> 14
            nn.Conv2d(c1, c2, 5), nn.ReLU(inplace=True), nn.MaxPool2d(2),  # 14 -> 10 -> 5
            nn.Conv2d(c2, c3, 5), nn.ReLU(inplace=True),  # 5 -> 1
        )
        self.classifier = nn.Sequential(
            nn.Linear(c3, f), nn.ReLU(inplace=True), nn.Linear(f, num_classes),
        )

    def forward(self, x):
        x = self.features(x)
        return self.classifier(torch.flatten(x, 1))


def lenet5(num_classes=10, in_channels=3):
    return LeNet5((6, 16, 120, 84), num_classes, in_channels)


def lenet5half(num_classes=10, in_channels=3):
    return LeNet5((3, 8, 60, 42), num_classes, in_channels)


def lenet5fifth(num_classes=10, in_channels=3):
    """A still smaller third member: widths (4, 10, 30, 30), 9,884 parameters on one channel, about a sixth of
    lenet5's 61,706 (the name is historical: not a fifth of each width)."""
    return LeNet5((4, 10, 30, 30), num_classes, in_channels)
