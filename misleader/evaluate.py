"""Evaluation, in one place: predictions, accuracy, and the clone metrics every attack and the report's
verification use (test accuracy and fidelity, the agreement of clone and victim on the test set)."""

import torch
import torch.nn.functional as F


@torch.no_grad()
def predict(model, x, normalize=None, batch_size=2048, probs=True):
    """Softmax (or raw) outputs of model on x, in batches, in eval mode, computed in float32 whatever the run's
    --amp: every number a run reports (accuracy, fidelity, validation accuracy, the served answers) is the
    float32 model's, as the API serves it (bf16 moves a few top-1 answers: 8 of the v2 teacher's 10,000)."""
    was_training = model.training
    model.eval()
    outs = []
    for i in range(0, x.shape[0], batch_size):
        xb = x[i:i + batch_size]
        if normalize is not None:
            xb = normalize(xb)
        with torch.autocast(xb.device.type, enabled=False):  # float32 even inside a caller's autocast
            out = model(xb).float()
        outs.append(F.softmax(out, 1) if probs else out)
    model.train(was_training)
    return torch.cat(outs)


def accuracy(model, split, normalize):
    pred = predict(model, split.x, normalize, probs=False).argmax(1)
    return (pred == split.y).float().mean().item()


def clone_metrics(student, test_x, test_y, victim_pred):
    """(test accuracy, fidelity) of a clone: test_x is the normalised test set, victim_pred the victim's top-1
    answers on it (computed once per victim)."""
    pred = predict(student, test_x).argmax(1)
    return (pred == test_y).float().mean().item(), (pred == victim_pred).float().mean().item()


def true_class_prob(model, split, normalize):
    """(mean probability ``model`` gives the true class, its top-1 accuracy) on a split."""
    p = predict(model, split.x, normalize)
    return p.gather(1, split.y[:, None]).mean().item(), (p.argmax(1) == split.y).float().mean().item()
