"""Pieces shared by the training loops: optimisers, schedules, finiteness checks."""

import math

import torch

from misleader.errors import NonFiniteLoss, UserError


def make_optimizer(name, params, lr, momentum=0.9, weight_decay=5e-4):
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    raise UserError(f"unknown optimizer '{name}'; valid: sgd, adam")


def make_scheduler(name, optimizer, total_steps, milestones=(), gamma=0.1):
    """Per-step schedules. 'cosine' starts at the full rate and ends one step above zero, so no step
    is taken at rate 0; 'multistep' multiplies by gamma at each milestone (in steps); 'none' is constant."""
    if name == "cosine":
        return torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total_steps) / (total_steps + 1))))
    if name == "multistep":
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(milestones), gamma=gamma)
    if name == "none":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    raise UserError(f"unknown scheduler '{name}'; valid: cosine, multistep, none")


def check_finite(losses, step0, what="loss"):
    """losses: 1-D tensor of per-step losses; raise NonFiniteLoss naming the first bad step."""
    bad = ~torch.isfinite(losses)
    if bad.any():
        i = int(bad.nonzero()[0, 0])
        raise NonFiniteLoss(f"non-finite {what} at step {step0 + i}; the last good checkpoint is kept")
