"""Shared test helpers (not tests)."""

import os
import shutil

import torch.nn as nn

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def copy_repo(dest, items, ignore=("__pycache__",)):
    """The repository's ``items`` (folders and files) copied into ``dest``, folders without ``ignore``'s patterns."""
    for item in items:
        src = os.path.join(REPO, item)
        if os.path.isdir(src):
            shutil.copytree(src, os.path.join(dest, item), ignore=shutil.ignore_patterns(*ignore))
        else:
            shutil.copy(src, os.path.join(dest, item))


class Counting(nn.Module):
    """An independent count of every sample that reaches the wrapped model."""

    def __init__(self, model):
        super().__init__()
        self.model, self.seen = model, 0

    def forward(self, x):
        self.seen += x.shape[0]
        self.lo = min(getattr(self, "lo", float("inf")), x.min().item())  # the range of every input seen
        self.hi = max(getattr(self, "hi", float("-inf")), x.max().item())
        return self.model(x)
