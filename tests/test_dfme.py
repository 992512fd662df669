import time

import pytest
import torch
from helpers import Counting

from misleader.dfme import DFME, DFMEConfig
from misleader.errors import UserError
from misleader.models import Generator, create_model
from misleader.victim import BlackBox, BudgetExceeded


def make_attack(budget, mean=(0.0,), std=(1.0,), **kw):
    torch.manual_seed(0)
    cfg = DFMEConfig(query_budget=budget, batch_size=16, epoch_itrs=3, nz=16, **kw)
    cfg.validate()  # as the entry point does, before the victim API is built
    victim_model = Counting(create_model("lenet5fifth", 10, 1))
    victim = BlackBox(victim_model, cfg.query_budget)
    attack = DFME(cfg, victim, create_model("lenet5fifth", 10, 1), Generator(nz=16, ngf=8, nc=1), 10,
                  torch.device("cpu"), seed=0, mean=mean, std=std)
    return attack, victim, victim_model


def test_budget_is_never_exceeded_and_equals_iterations_times_cost():
    budget = 1000  # cost per iteration 16*(1*2+5) = 112 -> 8 iterations, 896 queries
    attack, victim, counted = make_attack(budget)
    iterations = attack.run()
    assert attack.cfg.cost_per_iteration == 112
    assert iterations == budget // 112
    assert victim.used == counted.seen == iterations * 112 <= budget
    with pytest.raises(BudgetExceeded):
        victim(torch.zeros(victim.left + 1, 1, 32, 32))
    assert victim.used == counted.seen


def test_epochs_follow_the_published_formula():
    cfg = DFMEConfig(query_budget=2_000_000, batch_size=256, epoch_itrs=50)
    assert cfg.cost_per_iteration == 256 * 7
    assert cfg.epochs == 2_000_000 // (256 * 7 * 50) + 1


@pytest.mark.parametrize("budget,msg", [(0, "positive"), (100, "minimum is 0.000112M")])
def test_bad_budgets_are_user_errors(budget, msg):
    with pytest.raises(UserError, match=msg):
        make_attack(budget)


def test_probs_as_logits_changes_the_targets():
    attack, _, counted = make_attack(10_000)
    x = torch.randn(16, 1, 32, 32)
    honest = attack.victim_logits(x)
    attack.cfg.probs_as_logits = True
    flattened = attack.victim_logits(x)
    with torch.no_grad():
        p = torch.softmax(counted.model(x), 1)
    assert torch.allclose(honest, p.log() - p.log().mean(1, keepdim=True), atol=1e-4)  # centred log-probabilities
    assert torch.allclose(flattened, p - p.mean(1, keepdim=True), atol=1e-6)  # the probabilities themselves


def test_state_round_trip_continues_identically():
    """Resuming from a saved state gives the same models and query count as an uninterrupted run."""
    full, victim_full, _ = make_attack(1000)
    full.run()
    part, victim_part, _ = make_attack(1000)
    for _ in range(3):
        part.iteration()
    state = part.state_dict()
    resumed, victim_resumed, _ = make_attack(1000)
    resumed.load_state_dict(state)
    resumed.run()
    assert victim_resumed.used == victim_full.used
    for a, b in zip(full.student.state_dict().values(), resumed.student.state_dict().values()):
        assert torch.allclose(a.float(), b.float(), atol=1e-5)


def test_a_resume_after_the_last_paid_iteration_still_closes_and_logs_the_last_epoch():
    """A state saved after the last iteration the budget pays for, before its epoch closed (a SIGTERM or a timed
    save there): the resumed run asks nothing more, but evaluates and logs that epoch as an uninterrupted run does."""
    full, _, _ = make_attack(1000)  # 8 iterations of 112 queries, epochs of 3, 3 and 2 iterations
    logged = []
    full.run(on_epoch=lambda a, stats: logged.append((a.epoch, stats["queries_used"])))
    assert logged == [(1, 336), (2, 672), (3, 896)]

    class Stop(Exception):
        pass

    part, _, _ = make_attack(1000)
    saved, part_logged = {}, []

    def save_then_stop(a):
        if a.victim.used == 896:
            saved.update(a.state_dict())
            raise Stop

    with pytest.raises(Stop):
        part.run(on_epoch=lambda a, stats: part_logged.append((a.epoch, stats["queries_used"])),
                 on_iteration=save_then_stop)
    resumed, victim, counted = make_attack(1000)
    resumed.load_state_dict(saved)
    resumed_logged = []
    assert resumed.run(on_epoch=lambda a, stats: resumed_logged.append((a.epoch, stats["queries_used"]))) == 0
    assert part_logged + resumed_logged == logged and resumed.epoch == 3
    assert victim.used == 896 and counted.seen == 0  # nothing asked after the resume


@pytest.mark.parametrize("query_range", ["tanh", "data"])
def test_query_range_decides_which_images_the_victim_sees(query_range):
    """tanh: queries stay in [-1, 1] normalized units; data: they cover the normalized image of raw [0, 1]."""
    mean, std = 0.2860, 0.3530  # Fashion-MNIST: raw [0, 1] is [-0.81, 2.02] normalized
    attack, _, counted = make_attack(1000, mean=(mean,), std=(std,), query_range=query_range)
    ends = attack.to_query(torch.tensor([-1.0, 0.0, 1.0]).view(3, 1, 1, 1)).flatten()
    attack.run()
    assert counted.seen > 0
    if query_range == "tanh":
        assert torch.allclose(ends, torch.tensor([-1.0, 0.0, 1.0]))
        assert -1 <= counted.lo and counted.hi <= 1
    else:
        lo, hi = (0 - mean) / std, (1 - mean) / std
        assert torch.allclose(ends, torch.tensor([lo, (0.5 - mean) / std, hi]), atol=1e-6)
        assert lo - 1e-5 <= counted.lo and counted.hi <= hi + 1e-5
        assert counted.hi > 1.2  # brighter than any tanh-range query can be (raw pixel 0.71 and up)


def test_wall_time_carries_across_a_resume():
    """After a resume, wall_s() counts the earlier process's seconds too (results.csv's wall_s, queries/s)."""
    whole, _, _ = make_attack(1000)
    whole.run()
    stopped = whole.wall_s()
    time.sleep(0.05)
    assert stopped > 0 and whole.wall_s() == stopped  # the clock stops when run() returns
    part, _, _ = make_attack(1000)
    for _ in range(3):
        part.iteration()
    state = part.state_dict()
    state["wall_s"] = 1000.0  # as if the first process had run for 1000 s before it was stopped
    resumed, _, _ = make_attack(1000)
    resumed.load_state_dict(state)
    assert resumed.wall_s() == 1000.0
    assert resumed.run() == 5  # the 8 iterations the budget pays for, less the 3 done before
    assert 1000.0 < resumed.wall_s() < 1000.0 + 60
    assert resumed.state_dict()["wall_s"] == resumed.wall_s()


@pytest.mark.parametrize("fmt", [torch.contiguous_format, torch.channels_last])
def test_the_generator_runs_in_the_attacks_memory_format(fmt):
    """--channels_last 1 reaches the generator's feature maps (its convolutions are where DFME spends its time),
    not only the queries it hands the victim."""
    torch.manual_seed(0)
    cfg = DFMEConfig(query_budget=1000, batch_size=4, epoch_itrs=3, nz=16)
    gen = Generator(nz=16, ngf=8, nc=1).to(memory_format=fmt)
    attack = DFME(cfg, BlackBox(create_model("lenet5fifth", 10, 1), 1000),
                  create_model("lenet5fifth", 10, 1).to(memory_format=fmt), gen, 10, torch.device("cpu"),
                  memory_format=fmt, seed=0)
    seen = []
    gen.up2.register_forward_hook(lambda m, inp, out: seen.append((inp[0].is_contiguous(memory_format=fmt),
                                                                    out.is_contiguous(memory_format=fmt))))
    attack.sample(grad=False)
    attack.sample(grad=True, pre_x=True)
    assert seen == [(True, True), (True, True)]
