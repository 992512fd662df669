"""Shared test helpers (not tests)."""

import torch.nn as nn


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
