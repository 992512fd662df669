"""Knockoff Nets (Orekondy et al., CVPR 2019), random strategy, written against the counted BlackBox.

The attacker draws ``budget`` images uniformly from a query pool (the transfer set), asks the API once per
image, and trains a student on the answers with soft-label cross-entropy, -sum_c p_victim(c) log
softmax(student)(c); a label-only API gives one-hot answers, which makes it ordinary cross-entropy.
"""

import torch
import torch.nn.functional as F

from misleader.attack import one_hot_answers
from misleader.data import _to_split, dataset_info, load_dataset, make_synthetic

# a procedural pool's images are drawn for the attacker with seeds of their own (POOL_SEED + the run's seed), never
# the synthetic dataset's training (1234) or test (4321) images
POOL_SEED = 20_000


def query_pool(pool, data, budget, seed, data_root, split_seed):
    """(images in [0, 1] with the victim's channels, text for the settings column) of the attacker's pool: the
    victim's own training split (``pool`` = its dataset; never the validation images), another dataset's training
    split, or, for a procedural pool (the synthetic gratings), ``budget`` distinct images made for this run: a
    generator has no fixed size, so no query is spent twice on one image (the seed makes them the same against
    every victim)."""
    channels = data.info.in_channels
    if pool == data.info.name:
        return data.train.x, ""
    if pool.startswith("synthetic"):
        x = _to_split(*make_synthetic(budget, dataset_info(pool).in_channels, POOL_SEED + seed), data.device).x
        return to_channels(x, channels), f" pool_images={budget}"
    return to_channels(load_dataset(pool, data_root, None, split_seed, data.device).train.x, channels), ""


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
