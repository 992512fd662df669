import torch
import torch.nn as nn

from misleader import zoo
from misleader.losses import per_sample_disagreement
from misleader.victim import logits_from_probs


def cosine(a, b):
    return torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0).item()


def test_directions_are_unit_vectors():
    u = zoo.unit_directions(3, 5, (1, 4, 4), "cpu")
    assert torch.allclose(u.flatten(2).norm(dim=2), torch.ones(3, 5), atol=1e-6)


def test_forward_difference_matches_autograd_on_smooth_function():
    torch.manual_seed(0)
    w = torch.randn(16, 16) / 4

    def loss_fn(x):
        return torch.sin(x.flatten(1) @ w).sum(1) + 0.5 * (x.flatten(1) ** 2).sum(1)

    x = torch.randn(3, 1, 4, 4)
    est, value = zoo.forward_difference(loss_fn, x, m=2000, eps=1e-3)
    xg = x.clone().requires_grad_(True)
    loss_fn(xg).sum().backward()  # row i of the estimate is d loss_i / d x_i
    assert torch.allclose(value, loss_fn(x))
    assert cosine(est, xg.grad) > 0.9
    ratio = est.norm() / xg.grad.norm()
    assert 0.8 < ratio < 1.25


def test_estimate_through_softmax_victim_and_student_matches_autograd():
    """The DFME generator loss: -L1(student(tanh x), log p_victim(tanh x) - mean) per sample."""
    torch.manual_seed(1)
    victim = nn.Sequential(nn.Flatten(), nn.Linear(16, 32), nn.Tanh(), nn.Linear(32, 10))
    student = nn.Sequential(nn.Flatten(), nn.Linear(16, 10))

    def loss_fn(points):
        x = torch.tanh(points)
        target = logits_from_probs(torch.softmax(victim(x), 1))
        return -per_sample_disagreement(student(x), target)

    x = torch.randn(2, 1, 4, 4)
    with torch.no_grad():
        est, _ = zoo.forward_difference(loss_fn, x, m=2000, eps=1e-3)
    xg = x.clone().requires_grad_(True)
    loss_fn(xg).sum().backward()  # row i of the estimate is d loss_i / d x_i
    assert cosine(est, xg.grad) > 0.9
    assert 0.8 < (est.norm() / xg.grad.norm()).item() < 1.25  # the scale too (d / eps), not only the direction


def test_the_loss_differences_are_taken_without_tf32_and_the_settings_come_back():
    """On CUDA cuDNN convolutions run in TF32 by default (10 mantissa bits), which would swallow most of an eps*u
    step; the estimate's losses are evaluated with TF32 off, and the caller's settings are restored after it (also
    when the loss raises). The flags exist and are read on CPU too, so this runs without a GPU."""
    seen = []

    def loss(points):
        seen.append((torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32))
        return points.flatten(1).sum(1)

    before = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    try:
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = True
        zoo.forward_difference(loss, torch.zeros(2, 1, 4, 4), m=2, eps=1e-3)
        assert seen == [(False, False)]
        assert (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32) == (True, True)

        def broken(points):
            raise RuntimeError("victim down")
        try:
            zoo.forward_difference(broken, torch.zeros(2, 1, 4, 4), m=2, eps=1e-3)
        except RuntimeError:
            pass
        assert (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32) == (True, True)
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = before

