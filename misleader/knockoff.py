"""Knockoff Nets (Orekondy et al., CVPR 2019), random strategy, written against the counted BlackBox.

The attacker draws ``budget`` images uniformly from a query pool (the transfer set), asks the API once per
image, and trains a student on the answers with soft-label cross-entropy, -sum_c p_victim(c) log
softmax(student)(c); a label-only API gives one-hot answers, which makes it ordinary cross-entropy.
"""

import torch
import torch.nn.functional as F

from misleader.attack import one_hot_answers


def transfer_indices(pool_size, budget, generator):
    """``budget`` pool indices drawn uniformly without replacement; a budget larger than the pool takes the
    whole pool in a fresh random order as many times as needed."""
    rounds = -(-budget // pool_size)
    return torch.cat([torch.randperm(pool_size, generator=generator) for _ in range(rounds)])[:budget]


def to_channels(x, channels):
    """Pool images in [0, 1] as ``channels``-channel images: grey repeated to RGB, RGB to luminance."""
    if x.shape[1] == channels:
        return x
    if x.shape[1] == 1:
        return x.expand(-1, channels, -1, -1)
    gray = 0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]
    return gray.expand(-1, channels, -1, -1) if channels > 1 else gray


@torch.no_grad()
def query_transfer_set(victim, images, normalize, num_classes, batch_size=1000, memory_format=torch.contiguous_format):
    """Ask the victim about every image once, in batches: the (N, num_classes) answers the student learns from
    (probabilities, or one-hot labels from a label-only API)."""
    answers = []
    for i in range(0, images.shape[0], batch_size):
        x = normalize(images[i:i + batch_size]).contiguous(memory_format=memory_format)
        answers.append(one_hot_answers(victim(x), num_classes).float())
    return torch.cat(answers)


def soft_cross_entropy(logits, target):
    """Batch mean of -sum_c target_c * log_softmax(logits)_c."""
    return -(target * F.log_softmax(logits.float(), 1)).sum(1).mean()
