"""The DFME generator: a noise vector -> an image in [-1, 1]."""

import torch
import torch.nn as nn
import torch.nn.functional as F

# Nearest-neighbour x2 upsampling followed by a 3x3 convolution equals, for each of the four output
# phases (a, b) in {0,1}^2, a 2x2 convolution of the low-resolution input: rows (i-1, i) with kernel rows
# (w0, w1+w2) for even output rows, rows (i, i+1) with (w0+w1, w2) for odd ones; columns likewise.
# Computing the four phases directly needs 16 instead of 36 multiply-adds per output pixel and never
# materialises the upsampled tensor.
_PHASE = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]],    # even: (w0, w1 + w2)
                       [[1.0, 1.0, 0.0], [0.0, 0.0, 1.0]]])   # odd:  (w0 + w1, w2)


class UpConv(nn.Module):
    """Nearest x2 upsample then conv3x3 (padding 1). Same parameters either way; ``fast`` picks the
    phase-decomposed computation, which is exact up to float rounding."""

    def __init__(self, cin, cout, fast=True):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, padding=1)
        self.fast = fast

    def forward(self, x):
        if not self.fast:
            return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))
        w, b = self.conv.weight, self.conv.bias
        m = _PHASE.to(w.device, w.dtype)
        k = torch.einsum("ayk,oikl,bxl->aboiyx", m, w, m).flatten(0, 2)  # (4*cout, cin, 2, 2), phase-major
        n, _, h, wd = x.shape
        cout = w.shape[0]
        # One 2x2 convolution of the padded input gives every phase at every offset; phase (a, b) is
        # the (h, w) window starting at (a, b) of its channel block.
        y = F.conv2d(F.pad(x, (1, 1, 1, 1)), k, b.repeat(4)).view(n, 2, 2, cout, h + 1, wd + 1)
        rows = [torch.stack([y[:, a, c, :, a:a + h, c:c + wd] for c in (0, 1)], -1) for a in (0, 1)]
        return torch.stack(rows, 3).reshape(n, cout, 2 * h, 2 * wd)  # (n, cout, h, 2, w, 2) interleaved


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

    def forward(self, z, pre_x=False):
        x = self.bn0(self.fc(z).view(z.shape[0], -1, self.init_size, self.init_size))
        x = F.leaky_relu(self.bn1(self.up1(x)), 0.2)
        x = F.leaky_relu(self.bn2(self.up2(x)), 0.2)
        x = self.bn_out(self.to_image(x))
        return x if pre_x else torch.tanh(x)
