"""Pieces shared by the training loops: optimisers, schedules, evaluation, finiteness checks."""

import math

import torch
import torch.nn.functional as F

from misleader.errors import NonFiniteLoss, UserError
from misleader.runtime import autocast


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


@torch.no_grad()
def predict(model, x, normalize=None, batch_size=2048, amp=None, probs=True):
    """Softmax (or raw) outputs of model on x, in batches, in eval mode; fp32 result."""
    was_training = model.training
    model.eval()
    outs = []
    for i in range(0, x.shape[0], batch_size):
        xb = x[i:i + batch_size]
        if normalize is not None:
            xb = normalize(xb)
        with autocast(xb.device, amp):
            out = model(xb).float()
        outs.append(F.softmax(out, 1) if probs else out)
    model.train(was_training)
    return torch.cat(outs)


def accuracy(model, split, normalize, amp=None):
    pred = predict(model, split.x, normalize, amp=amp, probs=False).argmax(1)
    return (pred == split.y).float().mean().item()


def check_finite(losses, step0, what="loss"):
    """losses: 1-D tensor of per-step losses; raise NonFiniteLoss naming the first bad step."""
    bad = ~torch.isfinite(losses)
    if bad.any():
        i = int(bad.nonzero()[0, 0])
        raise NonFiniteLoss(f"non-finite {what} at step {step0 + i}; the last good checkpoint is kept")
