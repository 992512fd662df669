"""Shared test helpers (not tests)."""

import torch.nn as nn


class Counting(nn.Module):
    """An independent count of every sample that reaches the wrapped model."""

    def __init__(self, model):
        super().__init__()
        self.model, self.seen = model, 0

    def forward(self, x):
        self.seen += x.shape[0]
        return self.model(x)
