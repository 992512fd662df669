"""The attack and defense as published: DFME's schedule and gradient scaling, the MAZE preset under explicit
flags, paired seeds, BatchNorm statistics of members, one data split per comparison."""

import importlib.util
import os

import pytest
import torch
import torch.nn as nn

from misleader import checkpoint
from misleader.data import Augment, dataset_info, load_dataset
from misleader.defense import DefenseStep
from misleader.dfme import DFME, DFMEConfig, attacker_models, lr_factor
from misleader.ensemble import SoftVotingEnsemble, ensemble_payload
from misleader.models import Generator, create_model
from misleader.victim import BlackBox
from helpers import REPO


def _script(path):
    spec = importlib.util.spec_from_file_location(os.path.basename(path)[:-3] + "_published", os.path.join(REPO, path))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# ---------------------------------------------------------------- 1. the learning-rate schedule

def _hand_table(epochs, changes, lr=0.1, scale=0.3):
    """lr_S of epochs 1..epochs; ``changes`` lists, per milestone, the first epoch at the next rate."""
    return [lr * scale ** sum(e >= c for c in changes) for e in range(1, epochs + 1)]


# DFME: milestones int(step * epochs), the schedulers stepped at the start of each epoch (counted from 1), so
# epoch e trains at lr * scale^(number of milestones <= e).
SCHEDULES = [
    (23, (0.5, 0.8), [11, 18]),      # int(11.5) = 11, int(18.4) = 18
    (23, (0.1, 0.3, 0.5), [2, 6, 11]),  # int(2.3) = 2, int(6.9) = 6, int(11.5) = 11
    (9, (0.1, 0.3, 0.5), [0, 2, 4]),    # int(0.9) = 0: the first epoch already trains decayed
]


@pytest.mark.parametrize("epochs,steps,changes", SCHEDULES)
def test_lr_schedule_matches_dfme(epochs, steps, changes):
    cfg = DFMEConfig(steps=steps)
    got = [cfg.lr_S * lr_factor(cfg, e, epochs) for e in range(1, epochs + 1)]
    assert got == pytest.approx(_hand_table(epochs, changes))


@pytest.mark.parametrize("epochs,steps,changes", SCHEDULES)
def test_attack_trains_each_epoch_at_the_published_rate(epochs, steps, changes):
    """The rate a real run logs for each epoch (the rate its steps used), over all the epochs it runs."""
    cost = 2 * (2 + 1)  # batch 2, grad_m 1, d_iter 1
    cfg = DFMEConfig(query_budget=cost * (epochs - 1) + cost - 1, batch_size=2, epoch_itrs=1, d_iter=1, nz=4,
                     steps=steps)
    assert cfg.epochs == epochs  # the budget pays for epochs - 1 iterations: the last epoch never runs
    victim = BlackBox(create_model("lenet5fifth", 10, 1), cfg.query_budget)
    attack = DFME(cfg, victim, create_model("lenet5fifth", 10, 1), Generator(nz=4, ngf=4, nc=1), 10,
                  torch.device("cpu"))
    seen = []
    attack.run(on_epoch=lambda a, stats: seen.append((stats["lr_S"], stats["lr_G"])))
    table = _hand_table(epochs, changes)[:epochs - 1]
    assert [s for s, _ in seen] == pytest.approx(table)
    assert [g for _, g in seen] == pytest.approx([t / 0.1 * 1e-4 for t in table])


def test_cosine_schedule_is_stepped_at_the_start_of_each_epoch():
    cfg = DFMEConfig(scheduler="cosine")
    assert lr_factor(cfg, 1, 4) == pytest.approx(0.5 * (1 + 0.7071067811865476))
    assert lr_factor(cfg, 4, 4) == pytest.approx(0.0)


# ---------------------------------------------------------------- 2. the zeroth-order gradient

class _Fixed(nn.Module):
    def __init__(self, w):
        super().__init__()
        self.w = nn.Parameter(w)

    def forward(self, x):
        return x.flatten(1) @ self.w


@pytest.mark.parametrize("loss", ["l1", "kl"])
def test_generator_gradient_follows_dfme_rule(loss):
    """4 samples, 3 fixed directions: d/eps * mean_m[(L(x+eps u) - L(x)) u], / (C * N) in l1 mode only."""
    torch.manual_seed(0)
    n, m, eps, c, shape = 4, 3, 1e-2, 5, (1, 2, 2)
    victim, student = _Fixed(torch.randn(4, c)), _Fixed(torch.randn(4, c))
    cfg = DFMEConfig(query_budget=10_000, batch_size=n, grad_m=m, grad_epsilon=eps, loss=loss, nz=4)
    attack = DFME(cfg, BlackBox(victim, cfg.query_budget), student, Generator(nz=4, ngf=4, nc=1), c,
                  torch.device("cpu"))
    x = torch.randn(n, *shape)
    u = torch.randn(n, m, *shape)
    u = u / u.flatten(2).norm(dim=2)[..., None, None, None]
    grad, value = attack.generator_gradient(x, u)

    @torch.no_grad()
    def hand_loss(point):  # one point: minus the disagreement between student and victim at tanh(point)
        q = torch.tanh(point)[None]
        p = torch.softmax(victim(q), 1)[0]
        s = student(q)[0]
        if loss == "l1":
            t = p.log() - p.log().mean()
            return -(s - t).abs().mean()
        return -(p * (p.log() - torch.log_softmax(s, 0))).sum()

    d = 4
    want = torch.zeros(n, *shape)
    for i in range(n):
        base = hand_loss(x[i])
        assert value[i].item() == pytest.approx(base.item(), abs=1e-5)
        for j in range(m):
            want[i] += (hand_loss(x[i] + eps * u[i, j]) - base) * u[i, j] / m
    want *= d / eps
    if loss == "l1":
        want /= c * n
    assert torch.allclose(grad, want, rtol=1e-3, atol=1e-6)


def test_maze_generator_sgd_has_weight_decay():
    cfg = DFMEConfig(query_budget=10_000, batch_size=4, nz=4, g_optimizer="sgd")
    attack = DFME(cfg, BlackBox(create_model("lenet5fifth", 10, 1), cfg.query_budget),
                  create_model("lenet5fifth", 10, 1), Generator(nz=4, ngf=4, nc=1), 10, torch.device("cpu"))
    group = attack.opt_G.param_groups[0]
    assert isinstance(attack.opt_G, torch.optim.SGD) and group["weight_decay"] == 5e-4 and group["momentum"] == 0.9


# ---------------------------------------------------------------- 3. explicit flags win over --MAZE 1

def test_explicit_flags_override_the_maze_preset():
    dfme = _script("DFME/dfme.py")
    cfg = dfme.make_config(dfme.parse(["--dataset", "synthetic", "--MAZE", "1", "--grad_m", "5"]))
    assert (cfg.grad_m, cfg.loss, cfg.batch_size, cfg.g_optimizer, cfg.scheduler) == (5, "kl", 128, "sgd", "cosine")
    cfg = dfme.make_config(dfme.parse(["--dataset", "synthetic", "--MAZE", "1", "--loss", "l1", "--batch_size", "64"]))
    assert (cfg.grad_m, cfg.loss, cfg.batch_size) == (10, "l1", 64)
    cfg = dfme.make_config(dfme.parse(["--dataset", "synthetic", "--grad_m", "5"]))
    assert (cfg.grad_m, cfg.loss, cfg.g_optimizer) == (5, "l1", "adam")


# ---------------------------------------------------------------- 4. paired seeds

def test_same_seed_same_attacker_start_whatever_the_victim(tmp_path):
    info = dataset_info("synthetic")
    t = create_model("lenet5", 10, 1)
    tpath = str(tmp_path / "teacher.pt")
    checkpoint.save(tpath, checkpoint.classifier_payload(t, "lenet5", "synthetic", 10, 1))
    ens = SoftVotingEnsemble([create_model(a, 10, 1) for a in ("lenet5half", "lenet5fifth", "lenet5")],
                             ["lenet5half", "lenet5fifth", "lenet5"])
    epath = str(tmp_path / "ensemble.pt")
    checkpoint.save(epath, ensemble_payload(ens, "synthetic", 10, 1))
    starts = []
    for path in (tpath, epath):
        torch.manual_seed(0)  # what the entry point's setup does; building the victim then draws from it
        checkpoint.load_victim(path, info, "lenet5")
        student, generator = attacker_models("lenet5", 10, 1, 16, 8, seed=3)
        starts.append((student.state_dict(), generator.state_dict()))
    (s1, g1), (s2, g2) = starts
    for a, b in ((s1, s2), (g1, g2)):
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    other = attacker_models("lenet5", 10, 1, 16, 8, seed=4)[0].state_dict()
    assert not torch.equal(other["classifier.2.weight"], starts[0][0]["classifier.2.weight"])


# ---------------------------------------------------------------- 5. BatchNorm statistics of a member

def _bn_setup():
    data = load_dataset("synthetic_rgb", val_size=10)
    torch.manual_seed(0)
    member, surrogate = create_model("resnet18_8x", 10, 3), create_model("resnet18_8x", 10, 3)
    opt = lambda m: torch.optim.SGD(m.parameters(), lr=0.0)  # noqa: E731  (rate 0: only statistics can change)
    aug = Augment(data, seed=1)
    step = DefenseStep(member, surrogate, create_model("lenet5", 10, 3), aug, opt(member), opt(surrogate), 2.0,
                       0.3, 0.5, 1, torch.device("cpu"))
    member.train()
    surrogate.train()
    return step, data.train.x[:4], data.train.y[:4]


def _running(model):
    return {k: v.clone() for k, v in model.named_buffers() if "running" in k or "num_batches" in k}


def test_surrogate_step_leaves_member_batchnorm_statistics_alone():
    step, x, _ = _bn_setup()
    before = _running(step.member)
    sur_before = _running(step.surrogate)
    step.surrogate_step(x)
    assert all(torch.equal(v, _running(step.member)[k]) for k, v in before.items())
    # the surrogate's own training step is the one pass that moves the surrogate's statistics
    assert not torch.equal(sur_before["stem.1.running_mean"], step.surrogate.stem[1].running_mean)


def test_member_statistics_come_from_the_clean_batch_only():
    """member_step moves the member's statistics exactly as its clean forward pass alone does: the proxy half
    moves nothing (nor the surrogate's statistics)."""
    step, x, y = _bn_setup()
    twin = create_model("resnet18_8x", 10, 3)
    twin.load_state_dict(step.member.state_dict())
    twin.train()
    before, sur_before = _running(step.member), _running(step.surrogate)
    state = step.aug.g.get_state()
    step.member_step(x, y)
    step.aug.g.set_state(state)
    with torch.no_grad():
        twin(step.aug.clean(x))  # member_step draws the clean batch first
    after, replay = _running(step.member), _running(twin)
    assert not torch.equal(after["stem.1.running_mean"], before["stem.1.running_mean"])  # the clean half moved them
    for k in after:
        assert torch.allclose(after[k].float(), replay[k].float(), atol=1e-6), k  # and nothing else did
    assert all(torch.equal(v, _running(step.surrogate)[k]) for k, v in sur_before.items())


# ---------------------------------------------------------------- 6. one data split per comparison

def test_members_with_other_init_seeds_share_the_teacher_split(tmp_path):
    """A member trained with --seed 2 validates on the split of --split_seed 0, the teacher's."""
    teacher_py, defense_py = _script("Defense/train_teacher.py"), _script("Defense/train_defense.py")
    common = ["--dataset", "synthetic", "--progress", "0", "--log_dir", str(tmp_path / "runs")]
    tpath, mpath = str(tmp_path / "t.pt"), str(tmp_path / "m.pt")
    teacher_py.main(common + ["--model", "lenet5fifth", "--epochs", "1", "--out", tpath])
    defense_py.main(common + ["--seed", "2", "--teacher_model", "lenet5fifth", "--teacher_path", tpath,
                              "--defense_model", "lenet5fifth", "--epochs", "1", "--out", mpath])
    ck = checkpoint.load(mpath)
    assert ck["args"]["split_seed"] == 0 and ck["seed"] == 2
    model = checkpoint.build_classifier(ck)
    from misleader.evaluate import accuracy

    split0 = load_dataset("synthetic", seed=0)
    assert accuracy(model, split0.val, split0.normalize) == pytest.approx(ck["metrics"]["val_acc"], abs=1e-6)
    # a member on another split than its teacher's is refused before training
    with pytest.raises(Exception, match="split seed 0"):
        defense_py.main(common + ["--split_seed", "1", "--teacher_model", "lenet5fifth", "--teacher_path", tpath,
                                  "--defense_model", "lenet5fifth", "--epochs", "1", "--out", str(tmp_path / "x.pt")])
    assert not os.path.exists(tmp_path / "x.pt")
