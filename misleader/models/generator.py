"""The DFME generator: a noise vector -> an image in [-1, 1]."""

import torch
import torch.nn as nn
import torch.nn.functional as F

# Nearest-neighbour x2 upsampling followed by a 3x3 convolution (padding 1) is one transposed
# convolution with stride 2, padding 1 and a 4x4 kernel: output row r takes input rows i with
# r - 2i in {-1, 0, 1, 2}, weighted (w2, w1 + w2, w0 + w1, w0) by the 3x3 kernel's rows; columns likewise.
# That needs 16 instead of 36 multiply-adds per output pixel, never materialises the upsampled
# tensor, and writes the output in place (no phase interleaving).
_FOLD = torch.tensor([[0.0, 0.0, 1.0], [0.0, 1.0, 1.0], [1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])  # 4x4 tap <- 3x3 taps


class UpConv(nn.Module):
    """Nearest x2 upsample then conv3x3 (padding 1). Same parameters either way; ``fast`` picks the
    transposed-convolution form, which is exact up to float rounding."""

    def __init__(self, cin, cout, fast=True):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, padding=1)
        self.fast = fast

    def forward(self, x):
        if not self.fast:
            return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))
        m = _FOLD.to(self.conv.weight.device, self.conv.weight.dtype)
        k = torch.einsum("yk,oikl,xl->ioyx", m, self.conv.weight, m)  # (cin, cout, 4, 4) as conv_transpose2d wants
        if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
            k = k.contiguous(memory_format=torch.channels_last)
        return F.conv_transpose2d(x, k, self.conv.bias, stride=2, padding=1)


class Generator(nn.Module):
    """linear -> BN -> (upsample, conv, BN, LeakyReLU) x2 -> conv -> BN without affine -> tanh."""

    def __init__(self, nz=256, ngf=64, img_size=32, nc=3, fast_upsample=True):
        super().__init__()
        self.nz, self.nc = nz, nc
        self.init_size = img_size // 4
        self.fc = nn.Linear(nz, 2 * ngf * self.init_size ** 2)
        self.bn0 = nn.BatchNorm2d(2 * ngf)
        self.up1 = UpConv(2 * ngf, 2 * ngf, fast_upsample)
        self.bn1 = nn.BatchNorm2d(2 * ngf)
        self.up2 = UpConv(2 * ngf, ngf, fast_upsample)
        self.bn2 = nn.BatchNorm2d(ngf)
        self.to_image = nn.Conv2d(ngf, nc, 3, padding=1)
        self.bn_out = nn.BatchNorm2d(nc, affine=False)

    def forward(self, z, pre_x=False, memory_format=torch.contiguous_format):
        """``memory_format`` is the layout of the feature maps and the image; channels_last lets the CPU's
        convolutions run about twice as fast (the values agree up to float rounding)."""
        x = self.fc(z).view(z.shape[0], -1, self.init_size, self.init_size).contiguous(memory_format=memory_format)
        x = self.bn0(x)
        x = F.leaky_relu(self.bn1(self.up1(x)), 0.2)
        x = F.leaky_relu(self.bn2(self.up2(x)), 0.2)
        x = self.bn_out(self.to_image(x))
        return x if pre_x else torch.tanh(x)
