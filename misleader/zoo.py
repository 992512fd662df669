"""Zeroth-order (forward-difference) gradient estimation through a black box, on the device.

For a per-sample scalar loss L(x) that can only be evaluated, not differentiated, the estimate at x is
    g(x) = d/eps * mean_m [ (L(x + eps*u_m) - L(x)) * u_m ],   u_m uniform on the unit sphere in R^d,
which approaches the true gradient as m grows and eps shrinks (E[d * (u.g) u] = g). All N*(m+1)
points of a batch are evaluated together, in float32 (a 1e-3 difference vanishes in bf16).
"""

import torch


def unit_directions(n, m, shape, device, generator=None):
    """n*m random directions, uniform on the unit sphere of dimension prod(shape): (n, m, *shape)."""
    u = torch.randn((n, m, *shape), device=device, generator=generator)
    return u / u.flatten(2).norm(dim=2).view(n, m, *([1] * len(shape)))


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
    losses = loss_fn(points).float().view(n, m + 1)
    diffs = losses[:, :m] - losses[:, m:]  # (N, m)
    grad = (diffs.view(n, m, *([1] * len(shape))) * u).mean(1) * (d / eps)
    return grad, losses[:, m]
