import pytest
import torch
import torch.nn as nn
from helpers import Counting

from misleader.ensemble import SoftVotingEnsemble
from misleader.victim import BlackBox, BudgetExceeded, logits_from_probs


def test_logits_recovered_from_probabilities_up_to_a_row_constant():
    z = torch.randn(8, 10) * 4
    rec = logits_from_probs(torch.softmax(z, 1))
    assert torch.allclose(rec, z - z.mean(1, keepdim=True), atol=1e-4)


def test_probs_as_logits_flattens_the_targets():
    z = torch.randn(8, 10) * 4
    p = torch.softmax(z, 1)
    old = logits_from_probs(p, probs_as_logits=True)
    assert not torch.allclose(old, logits_from_probs(p), atol=0.1)
    assert torch.allclose(old, p - p.mean(1, keepdim=True), atol=1e-6)
    assert (old.max(1).values - old.min(1).values).max() <= 1.0


def test_blackbox_counts_and_refuses_before_answering():
    model = Counting(nn.Linear(4, 3))
    bb = BlackBox(model, budget=10)
    p = bb(torch.randn(6, 4))
    assert torch.allclose(p.sum(1), torch.ones(6)) and bb.used == 6 and bb.left == 4
    with pytest.raises(BudgetExceeded):
        bb(torch.randn(5, 4))
    assert bb.used == 6 and model.seen == 6  # the refused call never reached the model
    bb(torch.randn(4, 4))
    assert bb.used == 10 and bb.left == 0


def test_blackbox_output_modes():
    lin = nn.Linear(4, 3)
    x = torch.randn(5, 4)
    assert torch.equal(BlackBox(lin, 100, "label")(x), lin(x).argmax(1))
    assert torch.allclose(BlackBox(lin, 100, "logits")(x), lin(x).detach())
    with pytest.raises(ValueError):
        BlackBox(lin, 100, "scores")


def test_ensemble_rows_sum_to_one_and_single_member_is_its_softmax():
    a, b = nn.Linear(4, 5), nn.Linear(4, 5)
    x = torch.randn(7, 4)
    ens = SoftVotingEnsemble([a, b])
    p = ens.probs(x)
    assert torch.allclose(p.sum(1), torch.ones(7), atol=1e-6)
    assert torch.allclose(p, (torch.softmax(a(x), 1) + torch.softmax(b(x), 1)) / 2, atol=1e-6)
    single = SoftVotingEnsemble([a])
    assert torch.allclose(single.probs(x), torch.softmax(a(x), 1), atol=1e-6)
    assert torch.allclose(torch.softmax(single(x), 1), torch.softmax(a(x), 1), atol=1e-5)


def test_an_output_defense_runs_in_float32_outside_the_models_autocast():
    """The model may run under --amp; the defense (a misinformation model, a threshold on the top probability)
    sees the model's probabilities in float32 and runs outside autocast, as the served utility measures it."""
    seen = []

    def spy(p, x):
        seen.append((p.dtype, torch.is_autocast_enabled("cpu")))
        return p

    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    victim = BlackBox(model, 100, amp=torch.bfloat16, defense=spy)
    out = victim(torch.randn(5, 1, 2, 2))
    assert seen == [(torch.float32, False)]
    assert out.dtype == torch.float32 and out.shape == (5, 3)
