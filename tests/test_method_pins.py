"""Tests that pin the method itself: each fails when one formula or one safeguard of the method is changed.

Every expected value here is computed from the method's definition (plain math or autograd), never by
calling the function under test, so a wrong formula in the library cannot also be the reference:
  - the member loss: KD to the *teacher* and the attack term KL(member || surrogate), with its T, alpha, lambda;
  - the defense step: what it optimises and that it clips at 5;
  - the prediction API: probabilities are softmax(logits), labels are the argmax;
  - DFME's generator step: the gradient it sends into the generator is that of minus the disagreement
    (the generator maximises the disagreement), and the step raises the disagreement;
  - the probability floor (1e-7) and the gradient clipping (5) in a setting that diverges without them;
  - non-finite losses in the defense and DFME stages: exit 3, the step named, the last good state kept.
"""

import math
import os
import subprocess
import sys

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from misleader import checkpoint
from misleader.data import Augment, load_dataset
from misleader.defense import DefenseStep
from misleader.dfme import DFME, DFMEConfig
from misleader.losses import member_loss
from misleader.models import Generator, create_model
from misleader.victim import BlackBox
from helpers import REPO


def cosine(a, b):
    return F.cosine_similarity(a.flatten(), b.flatten(), dim=0).item()


# ----------------------------------------------------------------------------- the member loss, by hand

def softmax_row(z):
    e = [math.exp(v - max(z)) for v in z]
    return [v / sum(e) for v in e]


def kl_rows(p_rows, q_rows):
    """Batch mean of sum_k p_k (log p_k - log q_k)."""
    return sum(sum(p * (math.log(p) - math.log(q)) for p, q in zip(pr, qr))
               for pr, qr in zip(p_rows, q_rows)) / len(p_rows)


def test_member_loss_matches_its_formula_on_small_tensors():
    """total = alpha*T^2*KL(teacher/T || member/T) + (1-alpha)*CE(member, y) - lambda*KL(member || surrogate),
    with distinct T, alpha, lambda, a teacher unlike the member, and a surrogate for which KL is asymmetric."""
    T, alpha, lam = 3.0, 0.4, 0.7
    member = [[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]]
    teacher = [[3.0, -1.0, 0.0], [-2.0, 2.5, 1.0]]
    y = [0, 1]
    m_proxy = [[2.0, 0.0, -1.0], [0.5, 1.5, -0.5]]
    s_proxy = [[-1.0, 0.5, 2.0], [1.0, -2.0, 0.0]]
    distil = kl_rows([softmax_row([v / T for v in r]) for r in teacher],
                     [softmax_row([v / T for v in r]) for r in member])
    ce = -sum(math.log(softmax_row(member[i])[y[i]]) for i in range(2)) / 2
    kd_expected = alpha * T * T * distil + (1 - alpha) * ce
    attack_expected = kl_rows([softmax_row(r) for r in m_proxy], [softmax_row(r) for r in s_proxy])
    reverse = kl_rows([softmax_row(r) for r in s_proxy], [softmax_row(r) for r in m_proxy])
    assert abs(attack_expected - reverse) > 0.1  # the test can tell the two directions apart

    total, kd, attack = member_loss(torch.tensor(member), torch.tensor(teacher), torch.tensor(y),
                                    torch.tensor(m_proxy), torch.tensor(s_proxy), T, alpha, lam)
    assert abs(kd.item() - kd_expected) < 1e-5, \
        f"KD term {kd.item():.6f}, expected alpha*T^2*KL(teacher||member at T) + (1-alpha)*CE = {kd_expected:.6f}"
    assert abs(attack.item() - attack_expected) < 1e-5, \
        (f"attack term {attack.item():.6f}, expected KL(member || surrogate) = {attack_expected:.6f} "
         f"(KL(surrogate || member) would be {reverse:.6f})")
    assert abs(total.item() - (kd_expected - lam * attack_expected)) < 1e-5, \
        f"total {total.item():.6f}, expected kd - lambda*attack = {kd_expected - lam * attack_expected:.6f}"


# ----------------------------------------------------------------------------- the defense step, by autograd

class FixedAug:
    """Deterministic stand-ins for the clean and attacker-proxy augmentations."""

    @staticmethod
    def clean(x):
        return x

    @staticmethod
    def proxy(x):
        return 0.5 * x.flip(-1) + 0.3


def reference_member_loss(member, teacher, surrogate, x, y, T, alpha, lam):
    """The member objective written out from its definition (no library loss functions)."""
    xa = FixedAug.proxy(x)
    log_t, log_m = F.log_softmax(teacher(x) / T, 1), F.log_softmax(member(x) / T, 1)
    kd = alpha * T * T * (log_t.exp() * (log_t - log_m)).sum(1).mean() + \
        (1 - alpha) * -F.log_softmax(member(x), 1).gather(1, y[:, None]).mean()
    log_p, log_q = F.log_softmax(member(xa), 1), F.log_softmax(surrogate(xa), 1).detach()
    attack = (log_p.exp() * (log_p - log_q)).sum(1).mean()
    return kd - lam * attack, kd, attack


def small_defense(lam, lr):
    torch.manual_seed(3)
    member, surrogate, teacher = (nn.Sequential(nn.Flatten(), nn.Linear(12, 5)) for _ in range(3))
    opt_m = torch.optim.SGD(member.parameters(), lr=lr)
    opt_s = torch.optim.SGD(surrogate.parameters(), lr=lr)
    step = DefenseStep(member, surrogate, teacher, FixedAug(), opt_m, opt_s, 2.5, 0.35, lam, 1, torch.device("cpu"))
    x = torch.randn(6, 1, 3, 4) * 8  # large enough inputs that the gradient norm exceeds the clip (5)
    y = torch.tensor([0, 1, 2, 3, 4, 0])
    return step, x, y


def flat(params):
    return torch.cat([p.detach().flatten() for p in params])


def test_member_step_descends_the_member_objective_clipped_at_5():
    """One SGD member step moves the member by -lr * g * min(1, 5/|g|), g the gradient of the objective
    KD(member, teacher) - lambda * KL(member || surrogate); the returned losses are that objective's terms."""
    lr, lam = 0.01, 0.8
    step, x, y = small_defense(lam, lr)
    ref_total, ref_kd, ref_attack = reference_member_loss(step.member, step.teacher, step.surrogate, x, y, 2.5, 0.35,
                                                          lam)
    grads = torch.autograd.grad(ref_total, list(step.member.parameters()))
    g = torch.cat([t.flatten() for t in grads])
    assert g.norm() > 10  # large enough that clipping at 5 matters
    before = flat(step.member.parameters())
    total, kd, attack = step.member_step(x, y)
    moved = flat(step.member.parameters()) - before
    assert abs(kd.item() - ref_kd.item()) < 1e-4, \
        f"member step's KD {kd.item():.5f} is not KD to the teacher ({ref_kd.item():.5f})"
    assert abs(attack.item() - ref_attack.item()) < 1e-4, \
        f"member step's attack term {attack.item():.5f} is not KL(member || surrogate) ({ref_attack.item():.5f})"
    assert abs(total.item() - ref_total.item()) < 1e-4, (total.item(), ref_total.item())
    assert cosine(moved, -g) > 0.9999, f"the member moved at cosine {cosine(moved, -g):.4f} to -grad of its objective"
    expected = lr * min(1.0, 5.0 / g.norm().item()) * g.norm().item()
    assert abs(moved.norm().item() - expected) < 1e-3 * expected, \
        f"the member moved {moved.norm().item():.5f}, expected lr * min(|g|, 5) = {expected:.5f}"


def test_surrogate_step_descends_kl_member_to_surrogate():
    """The simulated attacker minimises KL(softmax(member).detach() || softmax(surrogate)) on the proxy batch."""
    lr = 0.01
    step, x, y = small_defense(0.8, lr)
    xa = FixedAug.proxy(x)
    log_p = F.log_softmax(step.member(xa), 1).detach()
    log_q = F.log_softmax(step.surrogate(xa), 1)
    ref = (log_p.exp() * (log_p - log_q)).sum(1).mean()
    g = torch.cat([t.flatten() for t in torch.autograd.grad(ref, list(step.surrogate.parameters()))])
    before_m, before_s = flat(step.member.parameters()), flat(step.surrogate.parameters())
    loss = step.surrogate_step(x)
    moved = flat(step.surrogate.parameters()) - before_s
    assert abs(loss.item() - ref.item()) < 1e-5, (loss.item(), ref.item())
    assert cosine(moved, -g) > 0.9999, cosine(moved, -g)
    assert torch.equal(flat(step.member.parameters()), before_m)


# ----------------------------------------------------------------------------- the prediction API

def test_blackbox_answers_softmax_of_the_logits_and_their_argmax():
    torch.manual_seed(0)
    model = nn.Linear(6, 5)
    x = torch.randn(9, 6) * 3
    with torch.no_grad():
        logits = model(x)
    probs = BlackBox(model, 100)(x)
    err = (probs - torch.softmax(logits, 1)).abs().max().item()
    assert err < 1e-6, f"probabilities differ from softmax(logits) by up to {err:.3g}"
    assert torch.equal(BlackBox(model, 100, "label")(x), logits.argmax(1))
    assert torch.allclose(BlackBox(model, 100, "logits")(x), logits)


# ----------------------------------------------------------------------------- DFME's generator step

def tiny_dfme(loss, grad_m, batch_size=4):
    """DFME on 8x8 one-channel images with differentiable MLPs as victim and student."""
    torch.manual_seed(0)
    victim_model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.Tanh(), nn.Linear(32, 10))
    student = nn.Sequential(nn.Flatten(), nn.Linear(64, 24), nn.Tanh(), nn.Linear(24, 10))
    cfg = DFMEConfig(query_budget=10 ** 8, batch_size=batch_size, epoch_itrs=1, nz=16, grad_m=grad_m, loss=loss,
                     lr_G=1e-3)
    victim = BlackBox(victim_model, cfg.query_budget)
    attack = DFME(cfg, victim, student, Generator(nz=16, ngf=8, img_size=8, nc=1), 10, torch.device("cpu"), seed=0)
    return attack, victim_model, student


def disagreement(student, victim_model, x, loss):
    """Per-sample disagreement between student logits and the victim's logits recovered from its probabilities."""
    s = student(x)
    log_v = F.log_softmax(victim_model(x), 1)
    if loss == "l1":
        return (s - (log_v - log_v.mean(1, keepdim=True))).abs().mean(1)
    log_s = F.log_softmax(s, 1)
    return (log_v.exp() * (log_v - log_s)).sum(1)


def test_generator_step_sends_back_the_gradient_of_minus_the_disagreement():
    """The generator maximises the disagreement, so what generator_step feeds to x_pre.backward (the gradient
    of the loss the optimiser minimises) must point along autograd's gradient of minus the mean disagreement
    with respect to x_pre; in l1 mode DFME divides it by num_classes * N, in kl mode it does not."""
    for loss in ("l1", "kl"):
        attack, victim_model, student = tiny_dfme(loss, grad_m=1000)
        seen = {}
        sample = attack.sample

        def spy(grad=False, pre_x=False):
            x = sample(grad=grad, pre_x=pre_x)
            if pre_x:
                seen["x_pre"] = x.detach().clone()
                x.register_hook(lambda g: seen.__setitem__("sent", g.detach().clone()))
            return x

        attack.sample = spy
        z_seen = []
        hook = attack.generator.fc.register_forward_hook(lambda mod, inp, out: z_seen.append(inp[0].detach().clone()))
        attack.generator_step()
        hook.remove()
        n = seen["x_pre"].shape[0]
        x_pre = seen["x_pre"].clone().requires_grad_(True)
        before = disagreement(student.eval(), victim_model, torch.tanh(x_pre), loss).mean()
        (-before).backward()
        c = cosine(seen["sent"], x_pre.grad)
        assert c >= 0.8, f"{loss}: the gradient sent into the generator has cosine {c:.3f} with autograd's " \
                         f"gradient of minus the mean disagreement (the generator must maximise the disagreement)"
        scale = 10 if loss == "l1" else 1 / n  # sent = (d(-D_i)/dx_i) / (C*N) in l1 mode; autograd's is / N
        ratio = (seen["sent"].norm() / x_pre.grad.norm()).item() * scale
        assert 0.8 < ratio < 1.6, f"{loss}: gradient scale off by {ratio:.3f}"
        # and the update it made raises the disagreement on the batch it was computed on
        with torch.no_grad():
            after = disagreement(student, victim_model, torch.tanh(attack.generator(z_seen[0], pre_x=True)), loss)
        assert after.mean().item() > before.item(), \
            f"{loss}: the generator step lowered the disagreement ({before.item():.6f} -> {after.mean().item():.6f})"


# ----------------------------------------------------------------------------- floor and clipping

@pytest.fixture
def one_thread():
    """Small models train faster on one thread, and much faster on a CPU shared with other jobs."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_hard_min_max_training_is_held_by_the_probability_floor_and_the_clip(one_thread):
    """A setting that runs away without the method's two safeguards: lambda 20, learning rate 1, momentum 0.9.

    With them, every step is clipped to norm 5, so the weights move at most lr * sum_t |v_t| (v the momentum
    buffer, |v_t| <= 5 (1 - 0.9^t) / 0.1), and the attack KL is held at log(1/1e-7) = 16.1 once the member has
    pushed the surrogate's probabilities below the floor. Without clipping the member's weights grow by orders
    of magnitude past that bound within these 30 steps; with the floor at 1e-30 the attack KL runs to ~69."""
    lr, mom, lam, steps = 1.0, 0.9, 20.0, 30
    torch.manual_seed(0)
    data = load_dataset("synthetic", val_size=100)
    member, surrogate, teacher = (create_model("lenet5fifth", 10, 1) for _ in range(3))
    opt_m = torch.optim.SGD(member.parameters(), lr=lr, momentum=mom)
    opt_s = torch.optim.SGD(surrogate.parameters(), lr=lr, momentum=mom)
    step = DefenseStep(member, surrogate, teacher, Augment(data, seed=1), opt_m, opt_s, 2.0, 0.3, lam, 1,
                       torch.device("cpu"))
    start_m, start_s = flat(member.parameters()), flat(surrogate.parameters())
    g = torch.Generator().manual_seed(0)
    attack = []
    for i in range(steps):
        idx = torch.randint(0, len(data.train), (64,), generator=g)
        losses = step.step(data.train.x[idx], data.train.y[idx])
        assert torch.isfinite(losses).all(), f"step {i}: non-finite losses {losses.tolist()}"
        attack.append(losses[2].item())
    bound = lr * sum(5.0 * (1 - mom ** t) / (1 - mom) for t in range(1, steps + 1))
    for name, model, start in (("member", member, start_m), ("surrogate", surrogate, start_s)):
        moved = (flat(model.parameters()) - start).norm().item()
        assert moved <= bound, f"the {name}'s weights moved {moved:.4g}, more than clipped steps allow ({bound:.4g})"
    ceiling = math.log(1e7)
    assert max(attack) > 10, "this setting no longer drives the attack KL to the probability floor"
    assert max(attack) <= ceiling + 1e-3, \
        f"attack KL reached {max(attack):.2f}, above log(1/1e-7) = {ceiling:.2f}: the probability floor is not 1e-7"
    with torch.no_grad():
        assert torch.isfinite(member(data.normalize(data.val.x))).all()


# ----------------------------------------------------------------------------- non-finite losses in the entry points

PY = sys.executable


def poison(module, name, after):
    """Source that makes module.name's (first) returned loss NaN from call number after+1 on, so that the model
    it trains turns NaN, as in a real blow-up."""
    return f"""
import {module} as _m
_orig, _calls = _m.{name}, [0]
def _poisoned(*a, **k):
    _calls[0] += 1
    out = _orig(*a, **k)
    if _calls[0] <= {after}:
        return out
    if isinstance(out, tuple):
        return (out[0] * float('nan'),) + tuple(out[1:])
    return out * float('nan')
_m.{name} = _poisoned
"""


def save_teacher(root):
    torch.manual_seed(0)
    path = os.path.join(root, "Defense", "cache", "teacher", "synthetic-lenet5.pt")
    checkpoint.save(path, checkpoint.classifier_payload(create_model("lenet5", 10, 1), "lenet5", "synthetic", 10, 1))
    return path


@pytest.fixture(scope="module")
def poisoned(tmp_path_factory):
    """The defense and DFME entry points run as __main__, each in a fresh one-thread interpreter after a poison
    patch, both started together; each saves its state after every step (--save_every_min 0).
    Returns name -> (root, exit code, stderr)."""
    cases = {}
    root = str(tmp_path_factory.mktemp("defense_nan"))
    teacher = save_teacher(root)
    cases["defense"] = (root, "Defense/train_defense.py", poison("misleader.defense", "member_loss", after=11),
                        ["--teacher_path", teacher, "--defense_model", "lenet5fifth", "--epochs", "3", "--val_size",
                         "4500", "--batch_size", "64", "--out", os.path.join(root, "member.pt")])
    root = str(tmp_path_factory.mktemp("dfme_nan"))
    save_teacher(root)
    cases["dfme"] = (root, "DFME/dfme.py", poison("misleader.dfme", "student_loss", after=20),
                     ["--victim", "teacher", "--student_model", "lenet5fifth", "--query_budget", "0.03",
                      "--batch_size", "16", "--epoch_itrs", "3", "--ngf", "8", "--nz", "32", "--tag", "nan",
                      "--results", os.path.join(root, "results.csv")])
    env = {**os.environ, "MISLEADER_OFFLINE": "1", "PYTHONPATH": REPO, "OMP_NUM_THREADS": "1"}
    procs = {}
    for name, (root, script, patch, argv) in cases.items():
        script = os.path.join(REPO, script)
        code = "\n".join([patch, "import runpy, sys", f"sys.argv = [{script!r}] + sys.argv[1:]",
                          f"runpy.run_path({script!r}, run_name='__main__')"])
        argv = ["--dataset", "synthetic", "--progress", "0", "--save_every_min", "0",
                "--log_dir", os.path.join(root, "runs"), *argv]
        err = open(os.path.join(root, "stderr.txt"), "w+")
        procs[name] = (root, err, subprocess.Popen([PY, "-c", code, *argv], cwd=root, env=env,
                                                   stdout=subprocess.DEVNULL, stderr=err))
    done = {}
    for name, (root, err, proc) in procs.items():
        proc.wait(timeout=240)
        err.seek(0)
        done[name] = (root, proc.returncode, err.read())
        err.close()
    return done


def all_finite(state_dict):
    return all(torch.isfinite(v).all() for v in state_dict.values() if v.is_floating_point())


def test_non_finite_defense_loss_exits_3_naming_the_step_and_keeps_the_last_good_state(poisoned):
    """500 training images in batches of 64, 8 steps per epoch; the member loss turns NaN at step 11 (epoch 2,
    its 4th batch). The state kept must be the one after step 10 (epoch 1 done, 3 batches of the next), with
    finite weights, and no member is written."""
    root, code, stderr = poisoned["defense"]
    lines = stderr.strip().splitlines()
    assert code == 3, stderr[-2000:]
    assert len(lines) == 1 and "non-finite loss" in lines[0] and "at step 11;" in lines[0], stderr
    out_path = os.path.join(root, "member.pt")
    assert not os.path.isfile(out_path)
    st = torch.load(checkpoint.state_path(out_path), weights_only=True)
    assert (st["epoch"], st["batch"]) == (1, 3), f"state kept: (epoch, batch) = {(st['epoch'], st['batch'])}"
    assert all_finite(st["modules"]["member"]) and all_finite(st["modules"]["surrogate"])
    assert all(torch.isfinite(t).all() for t in st["partial"])


def test_non_finite_dfme_loss_exits_3_naming_the_iteration_and_keeps_the_last_good_state(poisoned):
    """3 iterations per epoch, 5 student steps per iteration; the student loss turns NaN in its 21st step, in
    iteration 4 (epoch 2). The state kept must be the one after iteration 3 (epoch 1 done, 1 iteration of
    epoch 2, 4 * 16 * 7 queries), with finite weights; no clone and no results row are written."""
    root, code, stderr = poisoned["dfme"]
    lines = stderr.strip().splitlines()
    assert code == 3, stderr[-2000:]
    assert len(lines) == 1 and "non-finite" in lines[0] and "iteration 4 " in lines[0], stderr
    out_path = os.path.join(root, "DFME", "cache", "synthetic-teacher-lenet5fifth-seed0-nan.pt")
    assert not os.path.isfile(out_path) and not os.path.isfile(os.path.join(root, "results.csv"))
    st = torch.load(checkpoint.state_path(out_path), weights_only=True)["attack"]
    progress = (st["epoch"], st["itr"], st["queries_used"])
    assert progress == (1, 1, 4 * 16 * 7), f"state kept: (epoch, iteration, queries) = {progress}"
    assert all_finite(st["student"]) and all_finite(st["generator"])
