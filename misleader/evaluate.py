"""Evaluation, in one place: predictions, accuracy, and the clone metrics every attack and the report's
verification use (test accuracy and fidelity, the agreement of clone and victim on the test set)."""

import torch
import torch.nn.functional as F

from misleader.runtime import autocast


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


def clone_metrics(student, test_x, test_y, victim_pred, amp=None):
    """(test accuracy, fidelity) of a clone: test_x is the normalised test set, victim_pred the victim's top-1
    answers on it (computed once per victim)."""
    pred = predict(student, test_x, amp=amp).argmax(1)
    return (pred == test_y).float().mean().item(), (pred == victim_pred).float().mean().item()


def true_class_prob(model, split, normalize, amp):
    """(mean probability ``model`` gives the true class, its top-1 accuracy) on a split."""
    p = predict(model, split.x, normalize, amp=amp)
    return p.gather(1, split.y[:, None]).mean().item(), (p.argmax(1) == split.y).float().mean().item()
