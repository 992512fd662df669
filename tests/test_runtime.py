"""Decided once per run (misleader.runtime, misleader.evaluate): the device, the precision of training steps, and
evaluation in float32 whatever that precision."""

import pytest
import torch
from torch import nn

from misleader import runtime
from misleader.errors import UserError
from misleader.evaluate import predict


def test_evaluation_is_float32_whatever_the_runs_amp():
    """predict (and with it accuracy, fidelity, validation accuracy) ran under the run's autocast: with bf16 (CUDA's
    default) a clone's fidelity compared a bf16 clone with the float32 victim, and 8 of the v2 teacher's 10,000
    test answers moved. Evaluation is float32, and autocast around it changes nothing."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    x = torch.randn(256, 1, 8, 8)
    exact = predict(model, x)
    with runtime.autocast(torch.device("cpu"), torch.bfloat16):  # a training step's context around an evaluation
        inside = predict(model, x)
    assert exact.dtype == inside.dtype == torch.float32 and torch.equal(exact, inside)
    assert torch.allclose(exact, torch.softmax(model(x), 1), atol=1e-6)


def test_device_and_precision_choices_on_machines_this_one_is_not(monkeypatch):
    """--device cuda:7 on a one-GPU machine passed the check and failed later with CUDA's own error; --amp auto
    chose bf16 on a GPU that only emulates it (slowly). Both decided here, with CUDA's answers stubbed."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert runtime.pick_device("cuda:0") == torch.device("cuda:0")
    with pytest.raises(UserError, match="cuda:7: this machine has 1 CUDA device"):
        runtime.pick_device("cuda:7")
    gpu = torch.device("cuda:1")
    asked = []
    monkeypatch.setattr(torch.version, "hip", None)
    for capability, expected in (((9, 0), torch.bfloat16), ((8, 0), torch.bfloat16), ((7, 5), None)):
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda d=None, c=capability: asked.append(d) or c)
        assert runtime.amp_dtype("auto", gpu) == expected
        assert runtime.amp_dtype("bf16", gpu) == torch.bfloat16  # asked for: given
    assert asked == [gpu] * 3  # the run's own device, not the current one
    assert runtime.amp_dtype("auto", torch.device("cpu")) is None
