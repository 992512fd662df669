"""Losses of the defense (distillation, attack-aware member loss, surrogate loss), of the adaptive-misinformation
model and of DFME."""

import torch
import torch.nn.functional as F

PROB_FLOOR = 1e-7  # probabilities inside the attack KL are clamped here, which bounds it by log(1/1e-7) ~ 16.1


def kd_loss(student_logits, teacher_logits, y, T, alpha):
    """alpha*T^2*KL(softmax(t/T) || softmax(s/T)) + (1-alpha)*CE(s, y), KL averaged over the batch."""
    kl = F.kl_div(F.log_softmax(student_logits / T, 1), F.log_softmax(teacher_logits / T, 1),
                  reduction="batchmean", log_target=True)
    return alpha * T * T * kl + (1 - alpha) * F.cross_entropy(student_logits, y)


def clamped_kl(p_logits, q_logits, floor=PROB_FLOOR):
    """Batch-mean KL(softmax(p) || softmax(q)) with both probability vectors clamped below at ``floor``.

    The clamp bounds the value and stops the gradient of probabilities already at the floor, so a loss
    that maximises this KL cannot push logits to infinity."""
    p = F.softmax(p_logits.float(), 1).clamp(min=floor)
    q = F.softmax(q_logits.float(), 1).clamp(min=floor)
    return (p * (p.log() - q.log())).sum(1).mean()


def member_loss(member_clean, teacher_clean, y, member_proxy, surrogate_proxy, T, alpha, lambda_):
    """MISLEADER member loss: KD on clean data minus lambda * KL(member || surrogate) on proxy data.

    Returns (total, kd, attack_kl); the surrogate's outputs are detached here."""
    kd = kd_loss(member_clean.float(), teacher_clean.float(), y, T, alpha)
    attack = clamped_kl(member_proxy, surrogate_proxy.detach())
    return kd - lambda_ * attack, kd, attack


def surrogate_loss(member_proxy, surrogate_proxy):
    """The simulated attacker imitates the member: KL(softmax(member).detach() || softmax(surrogate))."""
    return clamped_kl(member_proxy.detach(), surrogate_proxy)


TARGETS = ("logits", "probs", "label")  # "label": the answer's top-1 as a one-hot vector, compared as "probs"
MIRROR_FLOOR = 1e-12  # a mirrored clone answer inside the KL's log is clamped here (reverse sigmoid clips at 0)
MIRROR_SPACE = "a mirrored defense applies to the answers' probabilities: use space 'probs'"


def student_loss(student_logits, target, kind="l1", space="logits", mirror=None):
    """DFME clone loss, a batch mean. space "logits" (DFME): ``target`` holds the victim's (recovered) logits; L1
    between logits, or KL(victim || student) for the MAZE-style 'kl'. space "probs": ``target`` holds the
    victim's probabilities; L1 between softmax(student) and them, or the same KL(victim || student).
    ``mirror`` (space "probs" only): a differentiable map of probabilities applied to softmax(student) first, the
    attacker's copy of a published output defense (misleader.api_defense.mirror), so the clone's answers are
    compared with the API's as the API would have served them. space "label": ``target`` holds one-hot vectors
    (the top-1 of each answer), compared as in "probs" (KL is then the cross-entropy)."""
    if space in ("probs", "label"):
        return per_sample_disagreement(student_logits, target, kind, space, mirror).mean()
    if space != "logits":
        raise ValueError(f"unknown target space '{space}'")
    if mirror is not None:
        raise ValueError(MIRROR_SPACE)
    if kind == "l1":
        return F.l1_loss(student_logits, target)
    if kind == "kl":
        return F.kl_div(F.log_softmax(student_logits, 1), F.log_softmax(target, 1),
                        reduction="batchmean", log_target=True)
    raise ValueError(f"unknown loss '{kind}'")


def per_sample_disagreement(student_logits, target, kind="l1", space="logits", mirror=None):
    """Per-sample clone loss (L1 averaged over classes, or KL), the quantity the generator maximises; ``target``,
    ``space`` and ``mirror`` as in student_loss."""
    if kind not in ("l1", "kl"):
        raise ValueError(f"unknown loss '{kind}'")
    if mirror is not None:
        if space != "probs":
            raise ValueError(MIRROR_SPACE)
        served = mirror(F.softmax(student_logits, 1))
        if kind == "l1":
            return (served - target).abs().mean(1)
        return (torch.xlogy(target, target) - target * served.clamp(min=MIRROR_FLOOR).log()).sum(1)
    if space in ("probs", "label"):
        if kind == "l1":
            return (F.softmax(student_logits, 1) - target).abs().mean(1)
        return (torch.xlogy(target, target) - target * F.log_softmax(student_logits, 1)).sum(1)
    if kind == "l1":
        return (student_logits - target).abs().mean(1)
    return F.kl_div(F.log_softmax(student_logits, 1), F.log_softmax(target, 1),
                    reduction="none", log_target=True).sum(1)


def misinformation_loss(logits, y):
    """The misinformation model's loss: batch mean of -log(1 - softmax(logits)_y), without forming 1 - p (no
    cancellation, no clamp needed)."""
    z = logits.float()
    others = z.scatter(1, y[:, None], float("-inf"))
    return (torch.logsumexp(z, 1) - torch.logsumexp(others, 1)).mean()
