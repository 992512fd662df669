"""Knockoff Nets and attacking a model of one's own: query accounting, the transfer set, label-only answers,
--victim FILE.py:FUNCTION."""

import csv
import importlib.util
import os
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from helpers import REPO, Counting

from misleader import checkpoint
from misleader.errors import UserError
from misleader.knockoff import query_transfer_set, soft_cross_entropy, to_channels, transfer_indices
from misleader.models import create_model
from misleader.victim import BlackBox, BudgetExceeded


def _knockoff():
    spec = importlib.util.spec_from_file_location("knockoff_entry", os.path.join(REPO, "DFME", "knockoff.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_transfer_set_is_asked_once_per_image_and_counted():
    model = Counting(create_model("lenet5fifth", 10, 1))
    victim = BlackBox(model, budget=250)
    images = torch.rand(250, 1, 32, 32)
    answers = query_transfer_set(victim, images, lambda x: x, 10, batch_size=64)
    assert victim.used == model.seen == 250 and answers.shape == (250, 10)
    assert torch.allclose(answers.sum(1), torch.ones(250))
    with torch.no_grad():
        assert torch.allclose(answers, F.softmax(model.model(images), 1), atol=1e-6)
    seen = model.seen
    with pytest.raises(BudgetExceeded):  # an over-budget call is refused before any answer
        query_transfer_set(victim, images[:1], lambda x: x, 10)
    assert model.seen == seen and victim.used == 250


def test_label_only_answers_are_one_hot():
    model = create_model("lenet5fifth", 10, 1)
    images = torch.rand(20, 1, 32, 32)
    answers = query_transfer_set(BlackBox(model, 20, output="label"), images, lambda x: x, 10)
    with torch.no_grad():
        top1 = model(images).argmax(1)
    assert torch.equal(answers, F.one_hot(top1, 10).float())


def test_transfer_indices_uniform_without_replacement_then_repeat():
    g = torch.Generator().manual_seed(0)
    idx = transfer_indices(100, 60, g)
    assert len(set(idx.tolist())) == 60 and idx.max() < 100
    idx = transfer_indices(100, 250, g)
    assert len(idx) == 250 and all((idx[:200] == i).sum() == 2 for i in range(100))


def test_soft_cross_entropy_by_hand_and_channels():
    logits = torch.tensor([[2.0, 0.0, -1.0]])
    p = torch.tensor([[0.5, 0.3, 0.2]])
    z = torch.log(torch.exp(logits).sum())
    want = -(0.5 * (2 - z) + 0.3 * (0 - z) + 0.2 * (-1 - z))
    assert soft_cross_entropy(logits, p).item() == pytest.approx(want.item(), rel=1e-6)
    rgb = torch.rand(2, 3, 4, 4)
    gray = to_channels(rgb, 1)
    assert torch.allclose(gray[:, 0], 0.299 * rgb[:, 0] + 0.587 * rgb[:, 1] + 0.114 * rgb[:, 2])
    assert to_channels(gray, 3).shape == (2, 3, 4, 4)


def _user_model_file(tmp_path, body="return Net()"):
    path = tmp_path / "my_model.py"
    path.write_text(
        "import torch.nn as nn\n\n"
        "class Net(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.f = nn.Sequential(nn.Flatten(), nn.Linear(32 * 32, 10))\n\n"
        "    def forward(self, x):\n"
        "        return self.f(x)\n\n"
        f"def build():\n    {body}\n")
    return str(path)


def test_knockoff_attacks_a_model_from_a_python_file(tmp_path, monkeypatch):
    """--victim FILE.py:build with --victim_weights: the row counts exactly the images asked, the clone learns."""
    monkeypatch.chdir(tmp_path)
    file = _user_model_file(tmp_path)
    spec = importlib.util.spec_from_file_location("my_model", file)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    torch.manual_seed(5)
    net = mod.build()
    weights = str(tmp_path / "w.pt")
    torch.save(net.state_dict(), weights)
    results = str(tmp_path / "r.csv")
    _knockoff().main(["--dataset", "synthetic", "--victim", f"{file}:build", "--victim_weights", weights,
                      "--pool", "synthetic", "--query_budget", "0.0015", "--epochs", "2", "--progress", "0",
                      "--results", results, "--log_dir", str(tmp_path / "runs")])
    with open(results) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 1
    r = rows[0]
    assert (r["attack"], r["victim"], r["queries_used"], r["query_budget"]) == ("knockoff", "my_model", "1500", "1500")
    assert "pool=synthetic" in r["settings"]
    ck = checkpoint.load(r["attack_path"])
    assert ck["metrics"]["queries_used"] == 1500 and ck["pool"] == "synthetic"
    # the victim the row names is the file's model with those weights: its accuracy is recomputable
    from misleader.data import load_dataset
    from misleader.evaluate import accuracy

    data = load_dataset("synthetic")
    assert float(r["victim_acc"]) == pytest.approx(accuracy(net, data.test, data.normalize), abs=1e-4)
    from misleader import report  # and report.sh --verify 1 rebuilds it from the file and the weights

    checks = report.verify(results)  # victim_acc, clone_acc, fidelity, queries_used, clone_val_acc
    assert all(ok for *_, ok in checks) and [c[1] for c in checks][-1] == "clone_val_acc" and len(checks) == 5


def test_a_procedural_pool_spends_every_query_on_an_image_of_its_own(tmp_path, monkeypatch):
    """The synthetic gratings as an attacker's pool are a generator, not a fixed set: a budget above the synthetic
    dataset's 4,000 training images still asks about as many distinct images as it has queries, never the
    evaluator's own synthetic images, and the same seed draws the same images against every victim."""
    from misleader import knockoff
    from misleader.data import load_dataset
    monkeypatch.chdir(tmp_path)
    asked = []
    real = knockoff.query_transfer_set

    def recording(victim, images, *a, **kw):
        asked.append(images.clone())
        return real(victim, images, *a, **kw)
    entry = _knockoff()
    monkeypatch.setattr(knockoff, "query_transfer_set", recording)
    file = _user_model_file(tmp_path)
    results = str(tmp_path / "r.csv")
    for seed in (0, 0, 1):
        entry.main(["--dataset", "synthetic", "--victim", f"{file}:build", "--pool", "synthetic_rgb", "--query_budget",
                    "0.0045", "--epochs", "1", "--progress", "0", "--results", results, "--seed", str(seed),
                    "--tag", f"t{len(asked)}", "--log_dir", str(tmp_path / "runs")])
    x = asked[0]
    assert x.shape == (4500, 1, 32, 32) and torch.unique(x.flatten(1), dim=0).shape[0] == 4500  # 4,000 before
    assert torch.equal(asked[1], x) and not torch.equal(asked[2], x)  # paired by seed
    own = load_dataset("synthetic_rgb")  # the evaluator's images are not among them
    evaluator = torch.cat([own.train.x, own.val.x, own.test.x])
    evaluator = 0.299 * evaluator[:, 0:1] + 0.587 * evaluator[:, 1:2] + 0.114 * evaluator[:, 2:3]
    assert not (torch.cdist(x[:500].flatten(1), evaluator.flatten(1)).min(1).values < 1e-4).any()
    with open(results) as f:
        rows = list(csv.DictReader(f))
    assert "pool=synthetic_rgb pool_images=4500 " in rows[0]["settings"] and rows[0]["queries_used"] == "4500"


def test_a_signal_while_asking_keeps_the_answers_and_the_resumed_run_asks_nothing_again(tmp_path, monkeypatch):
    """SIGINT in the middle of the query phase: the answers bought so far are not thrown away uncounted; the run
    finishes asking, saves the transfer set, exits 130, and --resume 1 trains on it without a single new query."""
    import signal

    from misleader.victim import BlackBox
    monkeypatch.chdir(tmp_path)
    asked, real = [], BlackBox.__call__

    def counted(self, x):
        asked.append(x.shape[0])
        if len(asked) == 2:  # what SIGINT does now: the installed handler, or Python's KeyboardInterrupt
            handler = signal.getsignal(signal.SIGINT)
            if not callable(handler) or handler is signal.default_int_handler:
                raise KeyboardInterrupt
            handler(signal.SIGINT, None)
        return real(self, x)
    monkeypatch.setattr(BlackBox, "__call__", counted)
    file = _user_model_file(tmp_path)
    argv = ["--dataset", "synthetic", "--victim", f"{file}:build", "--pool", "synthetic", "--query_budget", "0.002",
            "--query_batch", "500", "--epochs", "1", "--progress", "0", "--results", str(tmp_path / "r.csv"),
            "--log_dir", str(tmp_path / "runs")]
    old = signal.getsignal(signal.SIGINT)
    try:
        with pytest.raises((SystemExit, KeyboardInterrupt)):
            _knockoff().main(argv)
        _knockoff().main(argv + ["--resume", "1"])
    finally:
        signal.signal(signal.SIGINT, old)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    assert sum(asked) == 2000  # not 500 lost + 2000 asked again
    with open(tmp_path / "r.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 1 and rows[0]["queries_used"] == "2000"


def test_a_results_file_that_cannot_take_the_row_stops_the_run_before_it_overwrites_anything(tmp_path, monkeypatch):
    """A --results file with columns this version does not write is refused before the run starts, not after it
    spent its budget and replaced the earlier clone at its path."""
    monkeypatch.chdir(tmp_path)
    file = _user_model_file(tmp_path)
    argv = ["--dataset", "synthetic", "--victim", f"{file}:build", "--pool", "synthetic", "--query_budget", "0.0005",
            "--epochs", "1", "--progress", "0", "--log_dir", str(tmp_path / "runs")]
    _knockoff().main(argv + ["--results", str(tmp_path / "r.csv")])
    with open(tmp_path / "r.csv") as f:
        clone = next(csv.DictReader(f))["attack_path"]
    before = Path(clone).read_bytes()
    (tmp_path / "bad.csv").write_text("bogus,dataset\n1,synthetic\n")
    with pytest.raises(UserError, match="columns this version does not write"):
        _knockoff().main(argv + ["--results", str(tmp_path / "bad.csv"), "--seed", "0"])
    assert Path(clone).read_bytes() == before


@pytest.mark.parametrize("body,weights,msg", [
    ("return 3", None, "not a torch.nn.Module"),
    ("return Net()", "missing.pt", "not found"),
    ("return nn.Linear(4, 10)", None, "fails on a"),
    ("raise ValueError('no such layer')", None, r"build\(\) failed \(ValueError: no such layer\)"),
])
def test_bad_user_victims_are_one_line_errors(tmp_path, body, weights, msg):
    from misleader.data import dataset_info
    
    file = _user_model_file(tmp_path, body)
    with pytest.raises(UserError, match=msg):
        checkpoint.load_victim(f"{file}:build", dataset_info("synthetic"), "lenet5",
                       weights=str(tmp_path / weights) if weights else None)
    with pytest.raises(UserError, match="defines no function"):
        checkpoint.load_victim(f"{file}:nothing", dataset_info("synthetic"), "lenet5")


def test_the_students_learning_rate_answers_to_dfmes_name_too():
    """--lr_S (the student's learning rate in DFME and DisGUIDE) sets Knockoff's --lr: one spelling for one knob
    across the attacks, recorded under one name."""
    parse = _knockoff().parse
    base = ["--dataset", "synthetic"]
    assert parse(base + ["--lr_S", "0.01"]).lr == parse(base + ["--lr", "0.01"]).lr == 0.01
    assert parse(base).lr == 0.05 and not hasattr(parse(base + ["--lr_S", "0.01"]), "lr_S")
