import math

import pytest
import torch

from misleader.data import Augment, load_dataset
from misleader.defense import DefenseStep, proxy_kl
from misleader.losses import PROB_FLOOR, clamped_kl, kd_loss, member_loss, surrogate_loss
from misleader.models import create_model


def softmax_row(z):
    e = [math.exp(v - max(z)) for v in z]
    return [v / sum(e) for v in e]


def test_kd_loss_matches_hand_computation_on_2x3():
    s = [[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]]
    t = [[2.0, 0.0, 1.0], [1.0, 1.0, -2.0]]
    y = [1, 2]
    T, alpha = 2.0, 0.3
    kl = 0.0
    ce = 0.0
    for i in range(2):
        p_t = softmax_row([v / T for v in t[i]])
        p_s = softmax_row([v / T for v in s[i]])
        kl += sum(pt * (math.log(pt) - math.log(ps)) for pt, ps in zip(p_t, p_s))
        ce += -math.log(softmax_row(s[i])[y[i]])
    expected = alpha * T * T * kl / 2 + (1 - alpha) * ce / 2
    got = kd_loss(torch.tensor(s), torch.tensor(t), torch.tensor(y), T, alpha).item()
    assert abs(got - expected) < 1e-5


def test_clamped_kl_equals_kl_when_no_clamp_and_is_bounded():
    p, q = torch.randn(5, 10), torch.randn(5, 10)
    lp, lq = p.log_softmax(1), q.log_softmax(1)
    plain = (lp.exp() * (lp - lq)).sum(1).mean()
    assert torch.allclose(clamped_kl(p, q), plain, atol=1e-5)
    huge = torch.zeros(2, 10)
    huge[:, 0] = 1e4
    other = torch.zeros(2, 10)
    other[:, 1] = 1e4
    value = clamped_kl(huge, other)
    assert torch.isfinite(value) and value <= -math.log(PROB_FLOOR) + 1e-3


def test_member_loss_detaches_surrogate_and_surrogate_loss_detaches_member():
    d = torch.randn(4, 10, requires_grad=True)
    f = torch.randn(4, 10, requires_grad=True)
    total, kd, attack = member_loss(d, torch.randn(4, 10), torch.tensor([0, 1, 2, 3]), d, f, 2.0, 0.3, 0.5)
    total.backward()
    assert f.grad is None and d.grad is not None
    assert torch.allclose(total, kd - 0.5 * attack)
    d.grad = None
    surrogate_loss(d, f).backward()
    assert d.grad is None and f.grad is not None


def _setup(lambda_, seed=0, lr=0.1):
    torch.manual_seed(seed)
    data = load_dataset("synthetic", val_size=100)
    member = create_model("lenet5", 10, 1)
    surrogate = create_model("lenet5half", 10, 1)
    teacher = create_model("lenet5", 10, 1)
    aug = Augment(data, seed=1)
    opt_m = torch.optim.SGD(member.parameters(), lr=lr)
    opt_s = torch.optim.SGD(surrogate.parameters(), lr=lr)
    step = DefenseStep(member, surrogate, teacher, aug, opt_m, opt_s, 2.0, 0.3, lambda_, 1, torch.device("cpu"))
    return data, step


def test_attack_term_pushes_member_away_from_surrogate():
    kls = {}
    for lam in (0.0, 2.0):
        data, step = _setup(lam)
        x, y = data.train.x[:128], data.train.y[:128]
        xa = step.aug.proxy(x)
        step.aug.proxy = lambda _x, xa=xa: xa  # the member step sees exactly this attacker batch
        for _ in range(3):
            step.member_step(x, y)
        kls[lam] = proxy_kl(step.member, step.surrogate, xa)
    assert kls[2.0] > kls[0.0] + 1e-3, kls


def test_surrogate_step_lowers_its_loss():
    data, step = _setup(0.5, lr=0.05)
    x = data.train.x[:128]
    xa = step.aug.proxy(x)
    step.aug.proxy = lambda _x: xa

    def loss():
        with torch.no_grad():
            return surrogate_loss(step.member(xa), step.surrogate(xa)).item()

    before = loss()
    step.surrogate_step(x)
    assert loss() < before


def test_clone_metrics_are_accuracy_against_the_labels_and_fidelity_against_the_victim():
    """By hand: a model that predicts [0, 1, 2, 2, 1]; labels [0, 1, 1, 2, 0] (3 of 5 right), the victim's top-1
    [0, 2, 2, 2, 1] (4 of 5 agree). Swapping the two would pass for each other in every other test."""
    import torch.nn.functional as F
    from torch import nn

    from misleader.evaluate import clone_metrics

    class Fixed(nn.Module):
        def forward(self, x):
            return F.one_hot(x[:, 0, 0, 0].long(), 3).float() * 5

    x = torch.tensor([0.0, 1, 2, 2, 1]).view(5, 1, 1, 1)
    acc, fid = clone_metrics(Fixed(), x, torch.tensor([0, 1, 1, 2, 0]), torch.tensor([0, 2, 2, 2, 1]))
    assert (acc, fid) == (pytest.approx(0.6), pytest.approx(0.8))


def test_the_cosine_schedule_never_takes_a_step_at_rate_zero():
    from misleader.train import make_scheduler
    w = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([w], lr=1.0)
    total, rates = 10, []
    sched = make_scheduler("cosine", opt, total)
    for _ in range(total):
        rates.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert rates[0] == 1.0 and all(a > b for a, b in zip(rates, rates[1:]))
    assert rates[-1] == pytest.approx(0.5 * (1 + math.cos(math.pi * 9 / 11))) and rates[-1] > 0
