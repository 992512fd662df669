"""Zeroth-order (forward-difference) gradient estimation through a black box, on the device.

For a per-sample scalar loss L(x) that can only be evaluated, not differentiated, the estimate at x is
    g(x) = d/eps * mean_m [ (L(x + eps*u_m) - L(x)) * u_m ],   u_m uniform on the unit sphere in R^d,
which approaches the true gradient as m grows and eps shrinks (E[d * (u.g) u] = g). All N*(m+1)
points of a batch are evaluated together, in full float32: not in bf16 (a 1e-3 difference vanishes there), and on
CUDA not in TF32 either, which cuDNN's convolutions use by default and which keeps 10 mantissa bits: a step of
eps/sqrt(d) = 3e-5 per pixel of a 32x32 query is below TF32's spacing of 5e-4 near 0.5, so most of it would be lost.
"""

import contextlib

import torch


def unit_directions(n, m, shape, device, generator=None):
    """n*m random directions, uniform on the unit sphere of dimension prod(shape): (n, m, *shape)."""
    u = torch.randn((n, m, *shape), device=device, generator=generator)
    return u / u.flatten(2).norm(dim=2).view(n, m, *([1] * len(shape)))


@contextlib.contextmanager
def ieee_float32():
    """CUDA convolutions and matrix products in IEEE float32 (no TF32) inside the block, as they were after it."""
    conv, matmul = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = conv, matmul


@torch.no_grad()
def forward_difference(loss_fn, x, m, eps, directions=None):
    """Estimate, per sample, d loss_fn(x)_i / d x_i for x of shape (N, *S).

    loss_fn maps a batch (K, *S) to per-sample losses (K,); it is called once on all N*(m+1) points.
    Returns (grad_estimate (N, *S), loss at x (N,)): row i estimates the gradient of loss_fn(x)_i with respect
    to x_i, d/eps * mean_m[(loss(x_i + eps*u_im) - loss(x_i)) * u_im] (DFME's rule, before any rescaling)."""
    n, shape = x.shape[0], x.shape[1:]
    d = x[0].numel()
    u = unit_directions(n, m, shape, x.device) if directions is None else directions
    points = torch.cat([x[:, None] + eps * u, x[:, None]], 1).flatten(0, 1)  # (N*(m+1), *S)
    with ieee_float32():
        losses = loss_fn(points).float().view(n, m + 1)
    diffs = losses[:, :m] - losses[:, m:]  # (N, m)
    grad = (diffs.view(n, m, *([1] * len(shape))) * u).mean(1) * (d / eps)
    return grad, losses[:, m]
