"""Soft-voting ensemble: p(x) = mean_k softmax(member_k(x))."""

import torch
import torch.nn as nn
import torch.nn.functional as F

from misleader import checkpoint
from misleader.models import create_model


class SoftVotingEnsemble(nn.Module):
    """forward(x) returns log of the averaged probabilities, so softmax(forward(x)) is exactly p(x)."""

    def __init__(self, members, archs=None):
        super().__init__()
        self.members = nn.ModuleList(members)
        self.archs = list(archs or [type(m).__name__ for m in members])

    def probs(self, x):
        return torch.stack([F.softmax(m(x).float(), 1) for m in self.members]).mean(0)

    def forward(self, x):
        return self.probs(x).clamp(min=torch.finfo(torch.float32).tiny).log()


def ensemble_payload(ens, dataset, num_classes, in_channels, metrics=None, args=None, seed=None, sources=None):
    return checkpoint.payload("ensemble", list(ens.archs), dataset=dataset, num_classes=num_classes,
                              in_channels=in_channels, state_dict=[checkpoint.cpu_state(m) for m in ens.members],
                              sources=list(sources or []), metrics=dict(metrics or {}), args=dict(args or {}),
                              seed=seed)


def built_from(ckpt, members, archs, sources):
    """True when the ensemble checkpoint ``ckpt`` holds exactly these member models (same files, architectures
    and weights, bit for bit): a rebuild would hold the same members, so --resume 1 keeps the file as it is."""
    if list(ckpt.get("sources") or []) != list(sources) or list(ckpt.get("arch") or []) != list(archs):
        return False
    for saved, model in zip(ckpt["state_dict"], members):
        now = checkpoint.cpu_state(model)
        if saved.keys() != now.keys() or not all(torch.equal(saved[k], now[k]) for k in now):
            return False
    return True


def load_ensemble(ckpt):
    members = []
    for arch, sd in zip(ckpt["arch"], ckpt["state_dict"]):
        m = create_model(arch, ckpt["num_classes"], ckpt["in_channels"])
        m.load_state_dict(sd)
        members.append(m)
    return SoftVotingEnsemble(members, ckpt["arch"])
