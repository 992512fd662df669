"""Attackers that adapt to the defense (issue 18): DFME's --logit_floor and --target probs against hand
computations, and DisGUIDE (two clones, a generator guided by their disagreement, experience replay): its
losses by hand, its query count, its query-free generator step, its resume, and a smoke run through the
entry point as configs/load.sh calls it."""

import csv
import importlib.util
import io
import math
import os
import shutil
import subprocess
import sys

import pytest
import torch
import torch.nn as nn
from helpers import REPO, Counting

from misleader import checkpoint
from misleader.api_defense import APIDefense, mirror, parse_spec, reverse_sigmoid
from misleader.dfme import DFME, DFMEConfig, answer_targets, attacker_models, settings_text
from misleader.disguide import (DisGUIDE, DisGUIDEConfig, Replay, class_diversity, clone_disagreement,
                                disguide_models, generator_loss)
from misleader.errors import UserError
from misleader.losses import per_sample_disagreement, student_loss
from misleader.models import Generator, create_model
from misleader.victim import BlackBox

CPU = torch.device("cpu")


class FixedAnswer(nn.Module):
    """A victim whose softmax is the same probability vector ``p`` for every query (its logits are log p)."""

    def __init__(self, p):
        super().__init__()
        self.register_buffer("logp", torch.as_tensor(p).float().log())  # log 0 = -inf: softmax answers 0

    def forward(self, x):
        return self.logp.expand(x.shape[0], -1)


class FixedStudent(nn.Module):
    """A 'student' that answers row 0 of ``logits`` for images of zeros, row 1 for brighter ones (X_PRE)."""

    def __init__(self, logits):
        super().__init__()
        self.register_buffer("z", torch.as_tensor(logits).float())
        self.w = nn.Parameter(torch.zeros(()))  # something for the optimiser

    def forward(self, x):
        return self.z[(x[:, 0, 0, 0] > 0.2).long()] + 0 * self.w


X_PRE = torch.tensor([0.0, 0.5]).view(2, 1, 1, 1).expand(2, 1, 32, 32).contiguous()  # sample 0 and sample 1
NO_STEP = torch.zeros(2, 1, 1, 32, 32)  # one zero direction per sample: the loss at x_pre is what is checked


P = [0.9, 0.0999, 1e-4, 0.0]  # one answer with a tiny and a zero probability
S = [[1.0, -1.0, 0.5, 0.0], [0.0, 2.0, -1.0, 0.3]]  # student logits for a batch of two


def hand_logits(p, floor):
    """log max(p, floor) minus its mean, computed in plain Python (floor 0: log of float32's smallest normal)."""
    logs = [math.log(max(v, floor, torch.finfo(torch.float32).tiny)) for v in p]
    return [v - sum(logs) / len(logs) for v in logs]


def hand_softmax(z):
    e = [math.exp(v) for v in z]
    return [v / sum(e) for v in e]


def dfme_on(p, api_defense=None, **kw):
    """DFME against FixedAnswer(p), served through ``api_defense`` (a spec) if given; a --mirror config gets
    the attacker's copy of that defense."""
    cfg = DFMEConfig(query_budget=10_000, batch_size=2, nz=4, **kw)
    defense = api_defense and APIDefense(*parse_spec(api_defense))
    victim = BlackBox(FixedAnswer(p), cfg.query_budget, defense=defense)
    return DFME(cfg, victim, FixedStudent(S), Generator(nz=4, ngf=4, nc=1), len(p), CPU,
                mirror=mirror(api_defense) if cfg.mirror else None)


# ----------------------------------------------------------------------------- --logit_floor

@pytest.mark.parametrize("floor", [0.0, 1e-3])
def test_logit_floor_targets_by_hand_in_student_and_generator_loss(floor):
    """Probabilities below the floor are raised to it before log p and the mean correction; the student's
    targets and the zeroth-order loss both use the floored logits."""
    want = torch.tensor([hand_logits(P, floor)] * 2)
    attack = dfme_on(P, logit_floor=floor)
    x = torch.tanh(X_PRE)
    assert torch.allclose(attack.victim_targets(x), want, atol=1e-4)
    assert torch.allclose(attack.victim_logits(x), want, atol=1e-4)
    # the student's loss is l1 to those targets
    hand_l1 = sum(abs(S[i][c] - want[i, c].item()) for i in range(2) for c in range(4)) / 8
    assert student_loss(torch.tensor(S), attack.victim_targets(x)).item() == pytest.approx(hand_l1, rel=1e-5)
    # the generator's loss at x_pre is minus the per-sample l1 against the same floored targets
    _, value = attack.generator_gradient(X_PRE, NO_STEP)
    for i in range(2):
        hand = -sum(abs(S[i][c] - want[i, c].item()) for c in range(4)) / 4
        assert value[i].item() == pytest.approx(hand, rel=1e-5)
    if floor:  # the floor bounds the targets' range: log(0.9 / 1e-3), against ~87 without it
        assert (want.max() - want.min()).item() == pytest.approx(math.log(0.9 / 1e-3), rel=1e-6)


def test_logit_floor_leaves_label_answers_and_applies_to_raw_logits_through_softmax():
    onehot = answer_targets(torch.tensor([2]), "label", 4, "logits", 1e-3)
    assert torch.allclose(onehot, torch.tensor([[-0.25, -0.25, 0.75, -0.25]]))
    z = torch.tensor([[3.0, 0.0, -20.0, 1.0]])
    p = hand_softmax(z[0].tolist())
    got = answer_targets(z, "logits", 4, "logits", 1e-3)
    assert torch.allclose(got, torch.tensor([hand_logits(p, 1e-3)]), atol=1e-5)


# ----------------------------------------------------------------------------- --target probs

def test_probs_target_l1_by_hand_in_student_and_generator_loss():
    attack = dfme_on(P, target="probs")
    targets = attack.victim_targets(torch.tanh(X_PRE))
    assert torch.allclose(targets, torch.tensor([P] * 2), atol=1e-6)  # the victim's probabilities, as answered
    per = [sum(abs(q - p) for q, p in zip(hand_softmax(S[i]), P)) / 4 for i in range(2)]
    assert student_loss(torch.tensor(S), targets, "l1", "probs").item() == pytest.approx(sum(per) / 2, rel=1e-5)
    _, value = attack.generator_gradient(X_PRE, NO_STEP)
    assert value.tolist() == pytest.approx([-v for v in per], rel=1e-5)


def test_probs_target_kl_by_hand_and_equal_to_the_logits_kl():
    """KL(victim || student) with 0 log 0 = 0; on probabilities without zeros it equals the logits target's KL."""
    p = torch.tensor([P, [0.5, 0.25, 0.125, 0.125]])
    got = per_sample_disagreement(torch.tensor(S), p, "kl", "probs")
    for i in range(2):
        q = hand_softmax(S[i])
        hand = sum(pi * (math.log(pi) - math.log(qi)) for pi, qi in zip(p[i].tolist(), q) if pi > 0)
        assert got[i].item() == pytest.approx(hand, rel=1e-5)
    assert student_loss(torch.tensor(S), p, "kl", "probs").item() == pytest.approx(got.mean().item(), rel=1e-6)
    positive = p[1:]
    logits_kl = student_loss(torch.tensor(S[1:]), answer_targets(positive, "probs", 4), "kl")
    assert logits_kl.item() == pytest.approx(student_loss(torch.tensor(S[1:]), positive, "kl", "probs").item(),
                                             rel=1e-5)


# ----------------------------------------------------------------------------- --target label

def test_label_target_is_the_answers_top1_whatever_was_served():
    p = torch.tensor([[0.2, 0.5, 0.3], [0.6, 0.1, 0.3]])
    want = torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    assert torch.equal(answer_targets(p, "probs", 3, "label"), want)
    assert torch.equal(answer_targets(p.log() + 7.0, "logits", 3, "label"), want)  # raw logits: the same top-1
    assert torch.equal(answer_targets(torch.tensor([1, 0]), "label", 3, "label"), want)  # a label-only API


def test_label_target_by_hand_in_student_and_generator_loss():
    """--target label with --loss kl: cross-entropy of the student on the top-1 of each answer, in the student's
    loss and (negated) in the generator's; with l1, the L1 between softmax and the one-hot vector."""
    attack = dfme_on(P, target="label", loss="kl")
    targets = attack.victim_targets(torch.tanh(X_PRE))
    assert torch.equal(targets, torch.tensor([[1.0, 0.0, 0.0, 0.0]] * 2))
    ce = [-math.log(hand_softmax(S[i])[0]) for i in range(2)]
    assert student_loss(torch.tensor(S), targets, "kl", "label").item() == pytest.approx(sum(ce) / 2, rel=1e-5)
    _, value = attack.generator_gradient(X_PRE, NO_STEP)
    assert value.tolist() == pytest.approx([-v for v in ce], rel=1e-5)
    l1 = [(sum(hand_softmax(S[i])[1:]) + 1 - hand_softmax(S[i])[0]) / 4 for i in range(2)]
    assert student_loss(torch.tensor(S), targets, "l1", "label").item() == pytest.approx(sum(l1) / 2, rel=1e-5)


@pytest.mark.parametrize("kw,msg", [({"target": "probs", "logit_floor": 1e-4}, "no effect with --target probs"),
                                    ({"probs_as_logits": True, "logit_floor": 1e-4}, "cannot be combined"),
                                    ({"probs_as_logits": True, "target": "probs"}, "cannot be combined"),
                                    ({"logit_floor": 0.3}, "times 4 classes"),
                                    ({"logit_floor": -1.0}, r"in \[0, 1\)"),
                                    ({"target": "x"}, "logits, probs, label"),
                                    ({"target": "label", "logit_floor": 1e-4}, "no effect with --target label"),
                                    ({"target": "label", "mirror": True,
                                      "api_defense": "reverse_sigmoid:beta=1,gamma=0.1"}, "needs --target probs")])
def test_bad_target_options_are_user_errors(kw, msg):
    with pytest.raises(UserError, match=msg):
        dfme_on(P, **kw)


def _entry(name):
    spec = importlib.util.spec_from_file_location(f"entry_{name}", os.path.join(REPO, "DFME", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_options_reach_the_config_and_the_settings_column_only_when_used():
    dfme = _entry("dfme")
    plain = dfme.make_config(dfme.parse(["--dataset", "synthetic"]))
    assert (plain.logit_floor, plain.target) == (0.0, "logits")
    assert "logit_floor" not in settings_text(plain) and "target" not in settings_text(plain)  # rows as before
    cfg = dfme.make_config(dfme.parse(["--dataset", "synthetic", "--logit_floor", "1e-4"]))
    assert cfg.logit_floor == 1e-4 and "logit_floor=0.0001" in settings_text(cfg).split()
    cfg = dfme.make_config(dfme.parse(["--dataset", "synthetic", "--target", "probs", "--loss", "kl"]))
    assert "target=probs" in settings_text(cfg).split() and "loss=kl" in settings_text(cfg).split()


# ----------------------------------------------------------------------------- --mirror (reverse sigmoid)

RS = {"beta": 1.0, "gamma": 0.1}


def hand_reverse_sigmoid(p, beta, gamma):
    """misleader/api_defense.py's documented formula in plain Python: p clipped to [1e-9, 1 - 1e-9],
    q = clip(p - beta * (sigmoid(gamma * logit(p)) - 1/2), 0, 1), normalised."""
    q = []
    for v in p:
        c = min(max(v, 1e-9), 1 - 1e-9)
        r = beta * (1 / (1 + math.exp(-gamma * math.log(c / (1 - c)))) - 0.5)
        q.append(min(max(c - r, 0.0), 1.0))
    return [v / sum(q) for v in q]


def test_mirrored_losses_by_hand_in_student_and_generator_loss():
    """--mirror 1: the clone's softmax goes through the API's reverse sigmoid before KL / L1 against the answers,
    in the student's loss and in the generator's zeroth-order loss."""
    served = hand_reverse_sigmoid(P, **RS)
    attack = dfme_on(P, target="probs", loss="kl", mirror=True, api_defense="reverse_sigmoid:beta=1,gamma=0.1")
    x = torch.tanh(X_PRE)
    targets = attack.victim_targets(x)
    assert torch.allclose(targets, torch.tensor([served] * 2), atol=1e-6)  # the API's answer, as served
    hand = []
    for i in range(2):
        m = hand_reverse_sigmoid(hand_softmax(S[i]), **RS)
        hand.append(sum(a * math.log(a / q) for a, q in zip(served, m)))
    got = student_loss(torch.tensor(S), targets, "kl", "probs", attack.mirror)
    assert got.item() == pytest.approx(sum(hand) / 2, rel=1e-5)
    _, value = attack.generator_gradient(X_PRE, NO_STEP)
    assert value.tolist() == pytest.approx([-v for v in hand], rel=1e-5)
    m0 = hand_reverse_sigmoid(hand_softmax(S[0]), **RS)
    l1 = per_sample_disagreement(torch.tensor(S[:1]), targets[:1], "l1", "probs", attack.mirror)
    assert l1.item() == pytest.approx(sum(abs(a - q) for a, q in zip(served, m0)) / 4, rel=1e-5)
    # and the gradient reaches the clone's logits through the mirrored defense (autograd against a difference)
    z = torch.tensor(S, requires_grad=True)
    student_loss(z, targets, "kl", "probs", attack.mirror).backward()
    e = torch.zeros(2, 4, dtype=torch.float64)
    e[0, 1] = 1e-4
    zd = torch.tensor(S, dtype=torch.float64)
    fd = (student_loss(zd + e, targets.double(), "kl", "probs", attack.mirror) -
          student_loss(zd - e, targets.double(), "kl", "probs", attack.mirror)) / 2e-4
    assert z.grad[0, 1].item() == pytest.approx(fd.item(), rel=1e-3)


def test_mirroring_recovers_probabilities_that_reverse_sigmoid_hides():
    """Free logits fitted to reverse-sigmoid answers: through the mirrored defense they land near the model's
    own probabilities; fitted to the answers directly, they learn the distorted answers (what --mirror is for)."""
    torch.manual_seed(0)
    p = torch.softmax(torch.randn(64, 10), 1)
    answers = mirror("reverse_sigmoid:beta=1,gamma=0.1")(p)
    l1 = {}
    for mirrored in (None, mirror("reverse_sigmoid:beta=1,gamma=0.1")):
        z = torch.zeros(64, 10, requires_grad=True)
        opt = torch.optim.Adam([z], lr=0.05)
        for _ in range(400):
            opt.zero_grad()
            student_loss(z, answers, "kl", "probs", mirrored).backward()
            opt.step()
        l1[mirrored is not None] = (torch.softmax(z.detach(), 1) - p).abs().sum(1).mean().item()
    assert l1[True] < 0.1 < 0.3 < l1[False]  # measured: 0.05 and 0.40 (the answers are 0.40 L1 from p)


@pytest.mark.parametrize("flags,msg", [
    (["--target", "probs", "--mirror", "1"], "needs --api_defense reverse_sigmoid"),
    (["--target", "probs", "--mirror", "1", "--api_defense", "reverse_sigmoid:beta=1,gamma=0.1", "--victim_output",
      "label"], "label-only API"),
    (["--target", "probs", "--mirror", "1", "--api_defense", "rounding:decimals=1"], "got --api_defense rounding"),
    (["--mirror", "1", "--api_defense", "reverse_sigmoid:beta=1,gamma=0.1"], "needs --target probs")])
def test_mirror_without_a_mirrorable_defense_or_probability_targets_is_a_user_error(flags, msg):
    for name in ("dfme", "disguide"):
        entry = _entry(name)
        with pytest.raises(UserError, match=msg):
            entry.make_config(entry.parse(["--dataset", "synthetic", *flags]))


def test_kl_on_recovered_logits_of_label_answers_is_refused_for_the_label_target():
    """A label-only API's answer as recovered logits (one-hot minus its mean) under --loss kl is a smoothed label
    (softmax: 0.23 on the top class of 10), a silently weak attack: refused, naming --target label, which runs."""
    from misleader.dfme import answer_targets
    smoothed = torch.softmax(answer_targets(torch.tensor([3]), "label", 10, "logits"), 1)
    assert smoothed[0, 3].item() == pytest.approx(math.e / (math.e + 9), abs=1e-6)  # 0.232 on the top class
    for name in ("dfme", "disguide"):
        entry = _entry(name)
        with pytest.raises(UserError, match="use --target label"):
            entry.make_config(entry.parse(["--dataset", "synthetic", "--victim_output", "label", "--loss", "kl"]))
        cfg = entry.make_config(entry.parse(["--dataset", "synthetic", "--victim_output", "label", "--loss", "kl",
                                             "--target", "label"]))
        assert cfg.target == "label"
        entry.make_config(entry.parse(["--dataset", "synthetic", "--victim_output", "label"]))  # l1: as before


def test_mirror_reaches_the_settings_column_only_when_used():
    entry = _entry("disguide")
    plain = entry.make_config(entry.parse(["--dataset", "synthetic", "--target", "probs"]))
    assert not plain.mirror and "mirror" not in settings_text(plain)
    cfg = entry.make_config(entry.parse(["--dataset", "synthetic", "--target", "probs", "--mirror", "1",
                                         "--api_defense", "reverse_sigmoid:beta=1,gamma=0.1"]))
    assert cfg.mirror is True and "mirror=True" in settings_text(cfg).split()


# ----------------------------------------------------------------------------- DisGUIDE

def test_disguide_losses_by_hand():
    a, b = torch.tensor(S), torch.tensor([[0.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]])
    pa, pb = [hand_softmax(r) for r in S], [[0.25] * 4] * 2
    dis = [sum(abs(x - y) for x, y in zip(pa[i], pb[i])) for i in range(2)]
    assert clone_disagreement(a, b).tolist() == pytest.approx(dis, rel=1e-5)
    mean = [(pa[0][c] + pa[1][c] + pb[0][c] + pb[1][c]) / 4 for c in range(4)]
    div = sum(m * math.log(m) for m in mean)
    assert class_diversity(a, b).item() == pytest.approx(div, rel=1e-5)
    loss, d, v = generator_loss(a, b, 0.5)
    assert loss.item() == pytest.approx(-sum(dis) / 2 + 0.5 * div, rel=1e-5)
    assert class_diversity(torch.zeros(3, 4)).item() == pytest.approx(-math.log(4), rel=1e-6)  # even spread


def test_class_diversity_has_a_finite_gradient_when_a_class_probability_underflows():
    """A class no clone ever predicts (its softmax underflows to exactly 0) gives xlogy's 0 * log 0 a 0/0
    gradient: NaN in the generator's weights, then a NonFiniteLoss that a resume repeats forever. The loss and the
    gradient of every other class must stay what they were."""
    z = torch.tensor([[0.0, 1.0, -120.0], [0.5, 0.0, -120.0]], requires_grad=True)  # exp(-120) is 0 in float32
    v = class_diversity(z)
    v.backward()
    assert torch.isfinite(z.grad).all()
    p = torch.softmax(z.detach(), 1).mean(0)
    assert p[2].item() == 0.0 and v.item() == pytest.approx((p[:2] * p[:2].log()).sum().item(), rel=1e-6)
    z2 = z.detach()[:, :2].clone().requires_grad_(True)  # the same classes without the empty one: same gradient
    class_diversity(z2).backward()
    assert torch.allclose(z.grad[:, :2], z2.grad, rtol=1e-5, atol=1e-7)


def test_replay_keeps_the_last_queries_and_round_trips():
    r = Replay(5, CPU)
    for start in (0, 3, 7):  # 3 + 4 + 2 queries: the last five are 4..8
        n = {0: 3, 3: 4, 7: 2}[start]
        x = torch.arange(start, start + n).float().view(n, 1)
        r.add(x, 10 * x)
    assert len(r) == 5 and sorted(r.x.flatten().tolist()) == [4, 5, 6, 7, 8]
    xs, ts = r.sample(50, torch.Generator().manual_seed(0))
    assert set(xs.flatten().tolist()) <= {4, 5, 6, 7, 8} and torch.equal(ts, 10 * xs)
    buf = io.BytesIO()
    torch.save(r.state_dict(), buf)
    buf.seek(0)
    back = Replay(5, CPU)
    back.load_state_dict(torch.load(buf, weights_only=True))
    back.add(torch.tensor([[9.0]]), torch.tensor([[90.0]]))  # replaces the oldest (4), as in the original
    r.add(torch.tensor([[9.0]]), torch.tensor([[90.0]]))
    assert torch.equal(back.x, r.x) and torch.equal(back.t, r.t) and back.pos == r.pos


def make_disguide(budget=1000, **kw):
    torch.manual_seed(0)
    cfg = DisGUIDEConfig(query_budget=budget, batch_size=16, epoch_itrs=3, nz=16, **{"replay_batch": 8, **kw})
    cfg.validate()
    victim_model = Counting(create_model("lenet5fifth", 10, 1))
    victim = BlackBox(victim_model, cfg.query_budget)
    c1, g, c2 = disguide_models("lenet5fifth", 10, 1, 16, 8, seed=0)
    attack = DisGUIDE(cfg, victim, (c1, c2), g, 10, CPU, seed=0)
    return attack, victim, victim_model


def test_disguide_mirrored_clone_step_by_hand():
    """DisGUIDE --mirror 1 behind reverse sigmoid: each clone's loss is KL(served answer || reverse sigmoid of the
    clone's softmax), averaged over the two clones."""
    spec = "reverse_sigmoid:beta=1,gamma=0.1"
    torch.manual_seed(0)
    cfg = DisGUIDEConfig(query_budget=1000, batch_size=16, epoch_itrs=3, nz=16, replay_batch=8, loss="kl",
                         target="probs", mirror=True)
    teacher = create_model("lenet5fifth", 10, 1)
    victim = BlackBox(teacher, cfg.query_budget, defense=APIDefense(*parse_spec(spec)))
    c1, g, c2 = disguide_models("lenet5fifth", 10, 1, 16, 8, seed=0)
    attack = DisGUIDE(cfg, victim, (c1, c2), g, 10, CPU, seed=0, mirror=mirror(spec))
    x = torch.randn(16, 1, 32, 32)
    attack.sample = lambda grad=False, pre_x=False: x
    with torch.no_grad():
        served = reverse_sigmoid(torch.softmax(teacher(x), 1), x, 1.0, 0.1)
        hand = [(served * (served / reverse_sigmoid(torch.softmax(c(x), 1), x, 1.0, 0.1)).log()).sum(1).mean()
                for c in (c1, c2)]
    assert attack.student_step().item() == pytest.approx(sum(hand).item() / 2, rel=1e-5)


def test_disguide_query_count_equals_its_victim_calls():
    attack, victim, counted = make_disguide(500)  # 16 * 5 = 80 queries per iteration -> 6 iterations, 480
    assert attack.cfg.cost_per_iteration == 80
    iterations = attack.run()
    assert iterations == 500 // 80 == 6
    assert victim.used == counted.seen == iterations * 80 <= 500
    assert len(attack.replay) == 480  # every answered query was kept, none twice


def test_disguide_clone_step_queries_come_from_the_generator_in_train_mode():
    """The clone steps' queries are sampled with the generator in train mode (batch statistics), as DFME's student
    steps: eval mode (the published code's) left the clones at chance on the fashionmnist_v2 ensemble."""
    attack, victim, counted = make_disguide()
    attack.generator.train()
    attack.generator_step()  # moves the running statistics away from their initial values
    seen = []
    counted.register_forward_hook(lambda m, i, o: seen.append(i[0].clone()))
    state = {k: v.clone() for k, v in attack.generator.state_dict().items()}
    rng = torch.Generator().set_state(attack.rng.get_state())
    z = torch.randn(attack.cfg.batch_size, attack.cfg.nz, generator=rng)
    with torch.no_grad():
        want_eval = attack.to_query(attack.generator.eval()(z).float())
        want_train = attack.to_query(attack.generator.train()(z).float())
    attack.generator.load_state_dict(state)  # undo that train-mode forward's running statistics
    attack.student_step()
    assert len(seen) == 1 and torch.allclose(seen[0], want_train, atol=1e-6)
    assert not torch.allclose(seen[0], want_eval, atol=1e-3)
    assert attack.generator.training


def test_disguide_generator_step_asks_the_victim_nothing_and_leaves_the_clones():
    attack, victim, counted = make_disguide()
    clones = [{k: v.clone() for k, v in c.state_dict().items()} for c in attack.clones]
    gen = {k: v.clone() for k, v in attack.generator.state_dict().items() if "running" not in k}
    attack.generator.train()
    attack.generator_step()
    assert victim.used == counted.seen == 0
    assert all(all(torch.equal(v, c.state_dict()[k]) for k, v in before.items())
               for before, c in zip(clones, attack.clones))
    assert all(p.grad is None for c in attack.clones for p in c.parameters())
    assert any(not torch.equal(v, attack.generator.state_dict()[k]) for k, v in gen.items())
    # a clone step asks exactly one fresh batch and trains on it plus the replayed queries
    seen = []
    hook = attack.clones[0].register_forward_hook(lambda m, i, o: seen.append(i[0].shape[0]))
    attack.student_step()
    attack.student_step()
    hook.remove()
    assert victim.used == counted.seen == 32 and seen == [16, 16 + 8]


@pytest.mark.parametrize("kw", [{}, {"d_iter": 1, "rep_iter": 3, "replay_batch": 0}], ids=["default", "published"])
def test_disguide_state_round_trip_continues_identically(kw):
    full, victim_full, _ = make_disguide(500, **kw)
    full.run()
    part, _, _ = make_disguide(500, **kw)
    for _ in range(2):  # inside the first epoch (3 iterations): a resume mid-epoch
        part.iteration()
    buf = io.BytesIO()
    torch.save(part.state_dict(), buf)
    buf.seek(0)
    resumed, victim_resumed, _ = make_disguide(500, **kw)
    resumed.load_state_dict(torch.load(buf, weights_only=True))
    resumed.run()
    assert victim_resumed.used == victim_full.used
    for ca, cb in zip(full.clones, resumed.clones):
        for a, b in zip(ca.state_dict().values(), cb.state_dict().values()):
            assert torch.allclose(a.float(), b.float(), atol=1e-5)


def test_replay_only_clone_steps_follow_the_fresh_ones_and_ask_nothing():
    """--rep_iter 3 --d_iter 1 --replay_batch 0 (the published code's schedule): per iteration one clone step on
    the fresh batch (its queries the only ones asked), then three on batch_size replayed queries alone, each the
    clones' loss on queries and answers drawn from the buffer; the clone loss reported is the mean of the four."""
    attack, victim, counted = make_disguide(160, d_iter=1, rep_iter=3, replay_batch=0)
    assert attack.cfg.cost_per_iteration == 16
    seen = []
    hook = attack.clones[0].register_forward_hook(lambda m, i, o: seen.append(i[0].shape[0]) if m.training else None)
    calls = []
    step = attack.replay_step
    attack.replay_step = lambda: calls.append(len(attack.replay)) or step()
    attack.iteration()
    attack.iteration()
    hook.remove()
    assert victim.used == counted.seen == 32  # the replay steps asked nothing
    assert seen == [16] * 8 and calls == [16, 16, 16, 32, 32, 32]  # after each fresh batch joined the buffer
    # a replay step by hand: the clones' mean l1 loss on the batch the attack's own RNG draws from the buffer
    rng = torch.Generator().set_state(attack.rng.get_state())
    xs, ts = attack.replay.sample(16, rng)
    with torch.no_grad():
        hand = sum(student_loss(c(xs), ts, "l1", "logits", None) for c in attack.clones) / 2
    assert step().item() == pytest.approx(hand.item(), rel=1e-5)
    assert "rep_iter=3" in settings_text(attack.cfg).split() and "rep_iter" not in settings_text(DisGUIDEConfig())
    for bad, msg in (({"rep_iter": -1}, "--rep_iter must not be negative"),
                     ({"rep_iter": 2, "replay_size": 0}, "--replay_size 0 keeps none"),
                     ({"replay_batch": 0}, "--replay_size 100000 keeps queries that nothing reads")):
        with pytest.raises(UserError, match=msg):
            DisGUIDEConfig(**bad).validate()


def test_a_saved_replay_holds_its_filled_slots_only():
    """A buffer of 100,000 slots with 5 filled saves about 5 slots' worth, not the whole buffer (a view of the
    first slots would make torch.save write all of them)."""
    r = Replay(100_000, CPU)
    r.add(torch.ones(5, 10), torch.ones(5, 10))
    buf = io.BytesIO()
    torch.save(r.state_dict(), buf)
    assert buf.tell() < 20_000  # the whole buffer: 2 x 100,000 x 10 x 4 bytes = 8 MB


def test_first_clone_and_generator_start_where_dfme_does():
    c1, g, c2 = disguide_models("lenet5", 10, 1, 16, 8, seed=3)
    s, g_dfme = attacker_models("lenet5", 10, 1, 16, 8, seed=3)
    for a, b in ((c1, s), (g, g_dfme)):
        assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())
    assert not torch.equal(c1.state_dict()["classifier.2.weight"], c2.state_dict()["classifier.2.weight"])


MIRRORING = "--api_defense reverse_sigmoid:beta=1,gamma=0.1 --target probs --loss kl --mirror 1"


@pytest.mark.parametrize("extra", ["", MIRRORING])
def test_disguide_smoke_run_through_load_sh_writes_one_row(tmp_path, extra):
    """CONFIG=smoke's disguide_attack (configs/load.sh) against a saved teacher: one row, attack disguide; the
    same behind reverse sigmoid with the attacker mirroring it."""
    for d in ("configs", "DFME"):
        os.makedirs(tmp_path / d)
    for f in os.listdir(os.path.join(REPO, "configs")):
        shutil.copy(os.path.join(REPO, "configs", f), tmp_path / "configs" / f)
    shutil.copy(os.path.join(REPO, "DFME", "disguide.py"), tmp_path / "DFME" / "disguide.py")
    torch.manual_seed(0)
    checkpoint.save(str(tmp_path / "Defense/cache/teacher/synthetic-lenet5.pt"),
                    checkpoint.classifier_payload(create_model("lenet5", 10, 1), "lenet5", "synthetic", 10, 1))
    env = {**os.environ, "CONFIG": "smoke", "MISLEADER_OFFLINE": "1", "PYTHONPATH": REPO, "OMP_NUM_THREADS": "1",
           "DEVICE": "cpu", "PROGRESS": "0", "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"]}
    # 0.001M = 1000 queries at 32 * 5 = 160 per iteration (smoke's DFME_BATCH=32): 6 iterations, 960 queries
    cmd = ("set -euo pipefail; source configs/load.sh; "
           f"disguide_attack teacher 0 --victim teacher --query_budget 0.001 {extra}")
    proc = subprocess.run(["bash", "-c", cmd], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    with open(tmp_path / "results" / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 1
    row = rows[0]
    assert row["attack"] == "disguide" and row["victim"] == "teacher" and row["config"] == "smoke"
    assert int(row["queries_used"]) == 960 <= int(row["query_budget"]) == 1000
    assert "replay_batch=64" in row["settings"].split() and "batch_size=32" in row["settings"].split()
    assert ("mirror=True" in row["settings"].split()) == bool(extra)
    assert row["api_defense"] == ("reverse_sigmoid:beta=1,gamma=0.1" if extra else "none")
    saved = torch.load(tmp_path / row["attack_path"], weights_only=True)
    assert "clone2" in saved and "generator" in saved
    assert not os.path.exists(checkpoint.state_path(str(tmp_path / row["attack_path"])))  # finished: none left
