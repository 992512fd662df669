"""DenseNet-121 for 32x32 inputs: a single 3x3 stem conv, no initial pooling."""

import torch
import torch.nn as nn
import torch.nn.functional as F


class Bottleneck(nn.Module):
    """BN-ReLU-conv1x1 (to 4*growth) then BN-ReLU-conv3x3 (to growth); output is concatenated to the input."""

    def __init__(self, in_ch, growth):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_ch)
        self.conv1 = nn.Conv2d(in_ch, 4 * growth, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(4 * growth)
        self.conv2 = nn.Conv2d(4 * growth, growth, 3, padding=1, bias=False)

    def forward(self, x):
        out = self.conv1(F.relu(self.bn1(x)))
        out = self.conv2(F.relu(self.bn2(out)))
        return torch.cat([x, out], dim=1)


class Transition(nn.Module):
    """BN-ReLU-conv1x1 to fewer channels, then 2x2 average pooling."""

    def __init__(self, in_ch, out_ch):
        super().__init__()
        self.bn = nn.BatchNorm2d(in_ch)
        self.conv = nn.Conv2d(in_ch, out_ch, 1, bias=False)

    def forward(self, x):
        return F.avg_pool2d(self.conv(F.relu(self.bn(x))), 2)


class DenseNet(nn.Module):
    def __init__(self, blocks, growth=32, compression=0.5, num_classes=10, in_channels=3):
        super().__init__()
        ch = 2 * growth
        layers = [nn.Conv2d(in_channels, ch, 3, padding=1, bias=False)]
        for i, n in enumerate(blocks):
            for _ in range(n):
                layers.append(Bottleneck(ch, growth))
                ch += growth
            if i != len(blocks) - 1:
                out_ch = int(ch * compression)
                layers.append(Transition(ch, out_ch))
                ch = out_ch
        layers += [nn.BatchNorm2d(ch), nn.ReLU(inplace=True)]
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(ch, num_classes)

    def forward(self, x):
        x = F.adaptive_avg_pool2d(self.features(x), 1)
        return self.fc(torch.flatten(x, 1))


def densenet121(num_classes=10, in_channels=3):
    return DenseNet([6, 12, 24, 16], growth=32, num_classes=num_classes, in_channels=in_channels)
