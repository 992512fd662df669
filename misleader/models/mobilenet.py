"""MobileNetV2 for 32x32 inputs: stride 1 in the stem and in the 24-channel stage."""

import torch
import torch.nn as nn
import torch.nn.functional as F

# (expansion t, output channels c, repeats n, first stride s); strides already in CIFAR form
CIFAR_CONFIG = [
    (1, 16, 1, 1),
    (6, 24, 2, 1),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
]


def conv_bn(in_ch, out_ch, kernel, stride=1, groups=1, relu=True):
    layers = [
        nn.Conv2d(in_ch, out_ch, kernel, stride=stride, padding=kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(out_ch),
    ]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    """Pointwise expand -> depthwise 3x3 -> linear pointwise project; residual when shapes match."""

    def __init__(self, in_ch, out_ch, expansion, stride):
        super().__init__()
        hidden = in_ch * expansion
        self.use_residual = stride == 1 and in_ch == out_ch
        self.block = nn.Sequential(
            conv_bn(in_ch, hidden, 1),
            conv_bn(hidden, hidden, 3, stride=stride, groups=hidden),
            conv_bn(hidden, out_ch, 1, relu=False),
        )

    def forward(self, x):
        out = self.block(x)
        return x + out if self.use_residual else out


class MobileNetV2(nn.Module):
    def __init__(self, num_classes=10, in_channels=3):
        super().__init__()
        layers, in_ch = [conv_bn(in_channels, 32, 3)], 32
        for t, c, n, s in CIFAR_CONFIG:
            for i in range(n):
                layers.append(InvertedResidual(in_ch, c, t, s if i == 0 else 1))
                in_ch = c
        layers.append(conv_bn(in_ch, 1280, 1))
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(1280, num_classes)

    def forward(self, x):
        x = F.adaptive_avg_pool2d(self.features(x), 1)
        return self.fc(torch.flatten(x, 1))


def mobilenet_v2(num_classes=10, in_channels=3):
    return MobileNetV2(num_classes, in_channels)
