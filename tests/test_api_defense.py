"""Output defenses on the served API (misleader/api_defense.py): each formula against a hand computation, the
counted BlackBox with a defense, the spec's errors, the misinformation stage, and every defense through a tiny
attack's entry point with the served utility in its results row."""

import csv
import functools
import importlib.util
import json
import math
import os
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from helpers import REPO, Counting

from misleader import api_defense, checkpoint, data, paths, report
from misleader.api_defense import adaptive_misinformation, reverse_sigmoid, rounding, topk
from misleader.data import dataset_info, load_dataset
from misleader.errors import UserError
from misleader.evaluate import predict
from misleader.losses import misinformation_loss
from misleader.models import create_model
from misleader.results import COLUMNS, append_row, read_rows
from misleader.victim import BlackBox, BudgetExceeded

X = torch.zeros(2, 1)  # the query batch, for the defenses that do not look at it


def _script(*parts):
    name = "entry_" + "_".join(parts).replace(".", "_")
    spec = importlib.util.spec_from_file_location(name, os.path.join(REPO, *parts))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class Fixed(nn.Module):
    """Answers the same logits for every input."""

    def __init__(self, logits):
        super().__init__()
        self.register_buffer("z", torch.tensor(logits))

    def forward(self, x):
        return self.z.expand(x.shape[0], -1)


def _close(a, b, tol=1e-6):
    a, b = torch.as_tensor(a, dtype=torch.float32), torch.tensor(b, dtype=torch.float32)
    assert torch.allclose(a, b, atol=tol), (a, b)


# ----------------------------------------------------------------------------- the formulas

def test_rounding_by_hand():
    p = torch.tensor([[0.123, 0.456, 0.421], [0.051, 0.949, 0.0]])
    _close(rounding(p, X, 1), [[0.1, 0.5, 0.4], [0.1, 0.9, 0.0]])
    _close(rounding(p, X, 2), [[0.12, 0.46, 0.42], [0.05, 0.95, 0.0]])
    _close(rounding(p, X, 0), [[0.0, 0.0, 0.0], [0.0, 1.0, 0.0]])  # not renormalised: a row may round to 0


def test_topk_by_hand():
    p = torch.tensor([[0.1, 0.5, 0.15, 0.25], [0.4, 0.1, 0.3, 0.2]])
    _close(topk(p, X, 2), [[0, 0.5 / 0.75, 0, 0.25 / 0.75], [0.4 / 0.7, 0, 0.3 / 0.7, 0]])
    assert torch.equal(topk(p, X, 1), torch.tensor([[0.0, 1, 0, 0], [1, 0, 0, 0]]))  # k=1: a one-hot label
    _close(topk(p, X, 4), p.tolist())


def _reverse_sigmoid_by_hand(p, beta, gamma):
    c = [min(max(v, 1e-9), 1 - 1e-9) for v in p]
    r = [beta * (v ** gamma / (v ** gamma + (1 - v) ** gamma) - 0.5) for v in c]  # sigmoid(gamma * logit(v))
    q = [min(max(v - s, 0.0), 1.0) for v, s in zip(c, r)]
    return [v / sum(q) for v in q]


def test_reverse_sigmoid_by_hand():
    # gamma = 1: sigmoid(logit(p)) = p, so q = p - beta (p - 1/2) = 0.5 p + 0.25 for beta 0.5
    _close(reverse_sigmoid(torch.tensor([[0.7, 0.2, 0.1]]), X, 0.5, 1.0), [[0.6 / 1.25, 0.35 / 1.25, 0.3 / 1.25]])
    # beta 3: q = 1.5 - 2 p, clipped to [0, 1]: [0.9, 0.06, 0.04] -> [0, 1, 1] -> [0, 1/2, 1/2]
    _close(reverse_sigmoid(torch.tensor([[0.9, 0.06, 0.04]]), X, 3.0, 1.0), [[0.0, 0.5, 0.5]])
    # any gamma, with p = 1 and 0 clipped to 1 - 1e-9 and 1e-9
    p = [[0.7, 0.2, 0.1], [1.0, 0.0, 0.0]]
    _close(reverse_sigmoid(torch.tensor(p), X, 0.7, 0.4), [_reverse_sigmoid_by_hand(r, 0.7, 0.4) for r in p])


def test_adaptive_misinformation_by_hand():
    p = torch.tensor([[0.9, 0.05, 0.05], [0.4, 0.35, 0.25]])
    e = [math.exp(v) for v in (0.0, 2.0, 1.0)]
    g = [v / sum(e) for v in e]  # the misinformation model's softmax
    want = []
    for row in p.tolist():
        a = 1 / (1 + math.exp(-10 * (0.5 - max(row))))  # sigmoid(nu (tau - max p)), tau 0.5, nu 10
        want.append([(1 - a) * v + a * w for v, w in zip(row, g)])
    got = adaptive_misinformation(p, X, 0.5, 10.0, Fixed([0.0, 2.0, 1.0]))
    _close(got, want)
    assert got[0, 0] > 0.88 and got[1].argmax() == 1  # confident: almost p; unsure: mostly g


# ----------------------------------------------------------------------------- specs

@pytest.mark.parametrize("spec,msg", [
    ("nosuch:k=1", "unknown defense 'nosuch'"), ("topk", "needs k=..."), ("topk:k=1,j=2", "'j=2' is not"),
    ("topk:k=1,k=2", "k given twice"), ("topk:k=0", "k must be a positive integer"),
    ("topk:k=1.5", "k must be a positive integer"), ("rounding:decimals=-1", "decimals must be an integer from 0"),
    ("reverse_sigmoid:beta=0.5", "needs gamma=..."), ("reverse_sigmoid:beta=nan,gamma=1", "beta must be a positive"),
    ("reverse_sigmoid:beta=0.5,gamma=0", "gamma must be a positive"), ("rounding:1", "'1' is not"),
    ("adaptive_misinformation:tau=2,nu=1,model=m.pt", "tau must be a number from 0 to 1"),
    ("adaptive_misinformation:tau=0.5,nu=1", "needs model=..."),
])
def test_bad_specs_are_user_errors(spec, msg):
    with pytest.raises(UserError, match=msg):
        api_defense.parse_spec(spec)


def test_specs_spelled_one_way_and_checked_against_the_dataset(tmp_path):
    assert api_defense.canonical(" topk: k = 1 ") == "topk:k=1"
    assert api_defense.canonical("reverse_sigmoid:gamma=0.20,beta=1") == "reverse_sigmoid:beta=1,gamma=0.2"
    assert api_defense.canonical("none") == api_defense.canonical("") == "none"
    info = dataset_info("synthetic")
    assert api_defense.build("none", info) is None
    assert api_defense.build("topk:k=10", info).slug == "topk-k10"
    with pytest.raises(UserError, match="at most the number of classes"):
        api_defense.build("topk:k=11", info)
    with pytest.raises(UserError, match="not found"):
        api_defense.build(f"adaptive_misinformation:tau=0.5,nu=1,model={tmp_path / 'none.pt'}", info)


def test_bad_spec_on_the_command_line_is_one_line_exit_2(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    mod = _script("DFME", "knockoff.py")
    monkeypatch.setattr(sys, "argv", ["knockoff.py", "--dataset", "synthetic", "--api_defense", "topk:k=0"])
    with pytest.raises(SystemExit) as e:
        mod.main_wrapper(mod.main)
    err = capsys.readouterr().err
    assert e.value.code == 2 and len(err.strip().splitlines()) == 1 and "k must be a positive integer" in err
    assert not os.listdir(tmp_path)  # stopped before anything was written


# ----------------------------------------------------------------------------- the counted API

def test_blackbox_with_a_defense_counts_and_refuses_before_answering():
    torch.manual_seed(0)
    model = Counting(nn.Linear(4, 3))
    defense = api_defense.APIDefense("rounding", {"decimals": 1})
    bb = BlackBox(model, budget=10, defense=defense)
    x = torch.randn(6, 4)
    got = bb(x)
    with torch.no_grad():
        assert torch.equal(got, rounding(torch.softmax(model.model(x), 1), x, 1))
    assert bb.used == model.seen == 6
    with pytest.raises(BudgetExceeded):
        bb(torch.randn(5, 4))
    assert bb.used == 6 and model.seen == 6  # refused before the model (and the defense) saw it
    bb(torch.randn(4, 4))
    assert bb.used == 10 and bb.left == 0
    with pytest.raises(ValueError, match="logits"):
        BlackBox(model, 10, output="logits", defense=defense)


def test_defense_sees_each_chunk_with_its_own_queries_and_label_is_the_defended_argmax():
    """Adaptive misinformation with a g that disagrees with the model: in label mode the API answers the argmax
    of the defended probabilities (here often g's class), not the model's."""
    torch.manual_seed(1)
    model, g = nn.Linear(4, 3), nn.Linear(4, 3)
    defense = api_defense.APIDefense("adaptive_misinformation", {"tau": 1.0, "nu": 50.0, "model": "g.pt"}, g)
    x = torch.randn(50, 4)
    with torch.no_grad():
        p = torch.softmax(model(x), 1)
        want = adaptive_misinformation(p, x, 1.0, 50.0, g)
    probs = BlackBox(model, 100, chunk=7, defense=defense)(x)
    _close(probs, want.tolist())
    labels = BlackBox(model, 100, output="label", chunk=7, defense=defense)(x)
    assert torch.equal(labels, want.argmax(1))
    assert (labels != p.argmax(1)).any()  # the defense changed some answers


def test_served_utility_by_hand():
    probs = torch.tensor([[0.6, 0.4], [0.3, 0.7], [0.45, 0.55]])
    y = torch.tensor([0, 0, 1])
    x = torch.zeros(3, 1)
    assert api_defense.served_utility(None, probs, x, y) == (pytest.approx(2 / 3), 0.0)
    # rounded to 0 decimals: [1, 0], [0, 1], [0, 1] (0.45 -> 0, 0.55 -> 1); L1 0.8, 0.6, 0.9
    acc, l1 = api_defense.served_utility(api_defense.APIDefense("rounding", {"decimals": 0}), probs, x, y,
                                         batch_size=2)
    assert acc == pytest.approx(2 / 3) and l1 == pytest.approx((0.8 + 0.6 + 0.9) / 3, abs=1e-6)


def test_older_results_files_get_the_raw_models_utility(tmp_path):
    old = COLUMNS[:COLUMNS.index("api_defense")]
    path = str(tmp_path / "r.csv")
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=old, extrasaction="ignore")
        w.writeheader()
        w.writerow({"dataset": "synthetic", "victim_acc": "0.9000", "seed": 0})
    append_row(path, {"dataset": "synthetic", "victim_acc": "0.9000", "seed": 1, "api_defense": "topk:k=1",
                      "served_acc": "0.8000", "served_l1": "0.100000"})
    rows = read_rows(path)
    assert [(r["api_defense"], r["served_acc"], r["served_l1"]) for r in rows] == [
        ("none", "0.9000", "0"), ("topk:k=1", "0.8000", "0.100000")]


def test_misinformation_thresholds_by_hand():
    """Four correct answers with top probabilities 0.9053, 0.8053, 0.6053, 0.4053 and a misinformation model
    that is always wrong: with a steep switch, tau just below a top probability misinforms every answer under
    it. Cost 0: tau up to 0.405 (nothing flips); 25 %: one flip allowed, tau 0.605; 50 %: 0.805; 100 %: 1."""
    p = torch.tensor([[0.9053, 0.0947, 0.0], [0.8053, 0.1947, 0.0], [0.6053, 0.3947, 0.0], [0.4053, 0.3, 0.2947]])
    g = torch.tensor([[0.0, 0.0, 1.0]] * 4)
    y = torch.zeros(4, dtype=torch.long)
    got = api_defense.misinformation_thresholds(p, g, y, nu=1e6, costs=[0.0, 0.25, 0.5, 1.0])
    assert [t for t, _ in got] == [0.405, 0.605, 0.805, 1.0]
    assert [a for _, a in got] == [1.0, 0.75, 0.5, 0.0]
    # the raw answer already wrong on the least confident image: the cost counts from the raw accuracy (3/4),
    # and misinforming that answer costs nothing, so at cost 0 tau goes up to 0.605
    y2 = torch.tensor([0, 0, 0, 1])
    assert api_defense.misinformation_thresholds(p, g, y2, nu=1e6, costs=[0.0])[0] == (0.605, 0.75)
    # a gentle switch (nu = 1) mixes: the 0.8053 answer flips once a = sigmoid(tau - 0.8053) > 0.8053 / 1.8053,
    # i.e. tau > 0.8053 + logit(0.8053 / 1.8053) = 0.58879, so the last tau with no flip on the grid is 0.588
    edge = 0.8053 + math.log(0.8053 / 1.8053 / (1 - 0.8053 / 1.8053))
    assert 0.588 < edge < 0.589
    assert api_defense.misinformation_thresholds(p[:2], g[:2], y[:2], nu=1.0, costs=[0.0])[0] == (0.588, 1.0)
    # and even at tau = 0 it moves sigmoid(-0.55) = 0.37 of this answer to g: nothing qualifies at cost 0
    assert api_defense.misinformation_thresholds(torch.tensor([[0.55, 0.45, 0.0]]), g[:1], y[:1], nu=1.0,
                                                 costs=[0.0, 1.0]) == [(None, None), (1.0, 0.0)]


def test_misinformation_thresholds_stop_at_the_first_tau_over_the_cost():
    """The served accuracy need not fall monotonically: here tau above 0.4053 breaks a right answer, and above
    0.6053 g puts a wrong one right, back to the raw accuracy. The owner raising tau stops at 0.405, not 0.905."""
    p = torch.tensor([[0.9053, 0.0947, 0.0], [0.0, 0.6053, 0.3947], [0.4053, 0.3, 0.2947]])
    g = torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    y = torch.zeros(3, dtype=torch.long)  # raw: right, wrong, right
    assert api_defense.misinformation_thresholds(p, g, y, nu=1e6, costs=[0.0]) == [(0.405, pytest.approx(2 / 3))]


# ----------------------------------------------------------------------------- the stage and the entry points

@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A scratch repository root with a random synthetic teacher and a 1-epoch misinformation model; synthetic
    images are generated once for the whole module."""
    root = tmp_path_factory.mktemp("api_defense")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(data, "make_synthetic", functools.lru_cache(maxsize=None)(data.make_synthetic))
        mp.setenv("MISLEADER_OFFLINE", "1")
        mp.chdir(root)
        torch.manual_seed(0)
        checkpoint.save(paths.teacher_path("synthetic", "lenet5"),
                        checkpoint.classifier_payload(create_model("lenet5", 10, 1), "lenet5", "synthetic", 10, 1))
        _script("Defense", "train_misinformation.py").main(
            ["--dataset", "synthetic", "--model", "lenet5fifth", "--epochs", "1", "--progress", "0",
             "--log_dir", str(root / "runs")])
        yield root


def test_misinformation_stage_trains_and_the_defense_loads_it(world):
    path = paths.misinfo_path("synthetic", "lenet5fifth")
    assert os.path.isfile(world / path)
    ck = checkpoint.load(str(world / path))
    assert ck["kind"] == "classifier" and ck["arch"] == "lenet5fifth" and ck["metrics"]["best_epoch"] == 1
    m = ck["metrics"]  # it learnt to avoid the truth: below chance (0.1) in probability, far below in top-1
    assert m["test_true_prob"] < 0.1 and m["test_acc"] < 0.05
    defense = api_defense.build(f"adaptive_misinformation:tau=0.9,nu=100,model={world / path}",
                                dataset_info("synthetic"))
    g = checkpoint.build_classifier(ck).eval()
    x, p = torch.randn(5, 1, 32, 32), torch.softmax(torch.randn(5, 10), 1)
    _close(defense(p, x), adaptive_misinformation(p, x, 0.9, 100.0, g).tolist())
    z, y = torch.tensor([[2.0, 0.0, -1.0]]), torch.tensor([0])
    p0 = math.exp(2) / (math.exp(2) + 1 + math.exp(-1))
    assert misinformation_loss(z, y).item() == pytest.approx(-math.log(1 - p0), rel=1e-6)


def test_every_defense_runs_through_an_attack_and_its_row_holds_the_served_utility(world, monkeypatch):
    """The smoke run of every defense: a tiny Knockoff per spec (and DFME under one), all in one results CSV;
    each row records the spec and the served utility, the report keeps them apart, verify passes."""
    monkeypatch.chdir(world)
    misinfo = paths.misinfo_path("synthetic", "lenet5fifth")
    specs = ["none", "rounding:decimals=1", "topk:k=1", "reverse_sigmoid:beta=0.7,gamma=0.4",
             f"adaptive_misinformation:tau=0.9,nu=100,model={misinfo}"]
    results = str(world / "results.csv")
    knockoff = _script("DFME", "knockoff.py")
    for spec in specs:
        knockoff.main(["--dataset", "synthetic", "--victim", "teacher", "--pool", "synthetic", "--query_budget",
                       "0.0003", "--epochs", "1", "--progress", "0", "--results", results, "--log_dir", "runs",
                       "--api_defense", spec])
    _script("DFME", "dfme.py").main(["--dataset", "synthetic", "--victim", "teacher", "--query_budget", "0.0005",
                                     "--batch_size", "16", "--grad_m", "1", "--epoch_itrs", "2", "--ngf", "8",
                                     "--nz", "8", "--progress", "0", "--results", results, "--log_dir", "runs",
                                     "--api_defense", "topk:k=1"])
    rows = read_rows(results)
    assert [r["api_defense"] for r in rows] == specs + ["topk:k=1"]
    assert [r["attack"] for r in rows] == ["knockoff"] * 5 + ["dfme"]
    assert len({r["attack_path"] for r in rows}) == 6  # a defended run never overwrites another's clone
    assert "+rounding-decimals1-knockoff" in rows[1]["attack_path"]
    for r in rows:
        assert 0 < int(r["queries_used"]) <= int(r["query_budget"])
        assert r["served_acc"] and r["served_l1"] and r["victim_acc"] == rows[0]["victim_acc"]
    assert rows[0]["served_acc"] == rows[0]["victim_acc"] and float(rows[0]["served_l1"]) == 0.0

    # the served utility recomputed by hand from the teacher: rounded probabilities, their argmax, the L1
    d = load_dataset("synthetic")
    teacher = checkpoint.build_classifier(checkpoint.load(paths.teacher_path("synthetic", "lenet5")))
    p = predict(teacher, d.normalize(d.test.x))
    q = torch.round(p * 10) / 10
    assert float(rows[1]["served_acc"]) == pytest.approx((q.argmax(1) == d.test.y).float().mean().item(), abs=1e-4)
    assert float(rows[1]["served_l1"]) == pytest.approx((q - p).abs().sum(1).mean().item(), abs=1e-5)
    onehot_l1 = 2 * (1 - p.max(1).values).mean().item()  # topk:k=1 moves 1 - max p onto the top class
    assert float(rows[2]["served_l1"]) == pytest.approx(onehot_l1, abs=1e-5)
    assert float(rows[2]["served_acc"]) == pytest.approx(float(rows[0]["victim_acc"]), abs=1e-4)

    summary = report.summarize(report.load_results(results))
    assert len(summary) == 6 and len({s["victim"] for s in summary}) == 6
    assert summary[1]["victim"] == "teacher (knockoff) (defense rounding:decimals=1)"
    assert summary[1]["served_acc"] == pytest.approx(float(rows[1]["served_acc"]))
    md = report.write_report(results, str(world / "report"))[0]
    with open(md) as f:
        assert "served test acc" in f.read()
    assert all(ok for *_, ok in report.verify(results))  # victim_acc and fidelity are the raw model's


def test_served_utility_and_tau_are_those_of_the_float32_api_under_bf16_autocast(world, monkeypatch, capsys):
    """The BlackBox serves float32 answers whatever --amp says; the served utility recorded in the row and the
    thresholds of choose_tau must describe that API, not a bfloat16 copy of it (answers near tau would move)."""
    monkeypatch.chdir(world)
    misinfo = paths.misinfo_path("synthetic", "lenet5fifth")
    spec = f"adaptive_misinformation:tau=0.5,nu=1000,model={misinfo}"
    results = str(world / "bf16.csv")
    _script("DFME", "knockoff.py").main(["--dataset", "synthetic", "--victim", "teacher", "--pool", "synthetic",
                                         "--query_budget", "0.0003", "--epochs", "1", "--progress", "0", "--amp",
                                         "bf16", "--results", results, "--log_dir", "runs", "--api_defense", spec])
    row = read_rows(results)[0]
    d = load_dataset("synthetic")
    x = d.normalize(d.test.x)
    p = predict(checkpoint.build_classifier(checkpoint.load(paths.teacher_path("synthetic", "lenet5"))), x)
    q = api_defense.build(spec, dataset_info("synthetic"))(p, x)
    assert float(row["victim_acc"]) == pytest.approx((p.argmax(1) == d.test.y).float().mean().item(), abs=1e-4)
    assert float(row["served_acc"]) == pytest.approx((q.argmax(1) == d.test.y).float().mean().item(), abs=1e-4)
    assert float(row["served_l1"]) == pytest.approx((q - p).abs().sum(1).mean().item(), abs=1e-5)
    tau = _script("Defense", "choose_tau.py")
    for amp in ("off", "bf16"):
        tau.main(["--dataset", "synthetic", "--victim", "teacher", "--teacher_model", "lenet5", "--misinfo", misinfo,
                  "--nu", "1000", "--cost", "1", "5", "--amp", amp])
    out = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("cost <=")]
    assert len(out) == 4 and out[:2] == out[2:]


def test_a_row_records_the_commit_of_the_code_that_ran_not_a_later_checkout(world, monkeypatch):
    """A long run whose checkout moves on (git pull mid-run) records the commit read when it started."""
    from misleader import attack
    monkeypatch.chdir(world)
    checkout = {"commit": "started"}
    monkeypatch.setattr(attack, "git_commit", lambda: checkout["commit"])
    finish = attack.AttackStage.finish

    def pulled_then_finish(self, *a, **kw):  # the checkout moves on while the attack trains
        checkout["commit"] = "pulled"
        return finish(self, *a, **kw)
    monkeypatch.setattr(attack.AttackStage, "finish", pulled_then_finish)
    results = str(world / "commit.csv")
    _script("DFME", "knockoff.py").main(["--dataset", "synthetic", "--victim", "teacher", "--pool", "synthetic",
                                        "--query_budget", "0.0003", "--epochs", "1", "--progress", "0",
                                        "--results", results, "--log_dir", "runs", "--tag", "commit"])
    assert [r["git_commit"] for r in read_rows(results)] == ["started"]


def test_choose_tau_picks_thresholds_on_validation_and_its_spec_serves_within_the_cost(world, monkeypatch, capsys):
    monkeypatch.chdir(world)
    misinfo = paths.misinfo_path("synthetic", "lenet5fifth")
    mod = _script("Defense", "choose_tau.py")
    mod.main(["--dataset", "synthetic", "--victim", "teacher", "--teacher_model", "lenet5", "--misinfo", misinfo,
              "--nu", "1000", "--cost", "0", "5", "20", "--out", "tau/chosen.json"])
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("cost <=")]
    assert len(lines) == 3
    specs = [ln.split("--api_defense ")[1] for ln in lines]
    with open(world / "tau" / "chosen.json") as f:  # --out records what was printed
        record = json.load(f)
    assert [t["api_defense"] for t in record["thresholds"]] == specs and record["victim"] == "teacher"
    assert [t["cost_pts"] for t in record["thresholds"]] == [0, 5, 20] and record["nu"] == 1000
    taus = [api_defense.parse_spec(s)[1]["tau"] for s in specs]
    assert taus[0] < taus[-1]  # a larger cost allows a larger threshold
    d = load_dataset("synthetic")
    teacher = checkpoint.build_classifier(checkpoint.load(paths.teacher_path("synthetic", "lenet5")))
    x = d.normalize(d.val.x)
    p = predict(teacher, x)
    raw = (p.argmax(1) == d.val.y).float().mean().item()
    for cost, spec, tau in zip([0, 5, 20], specs, taus):  # served as the API serves it: within the cost ...
        served, _ = api_defense.served_utility(api_defense.build(spec, dataset_info("synthetic")), p, x, d.val.y)
        assert served >= raw - cost / 100 - 1e-6
        if tau < 1:  # ... and the next step of tau costs more (the scan stopped there)
            nxt = api_defense.build(spec.replace(f"tau={tau:g},", f"tau={tau + 0.001:.3f},"), dataset_info("synthetic"))
            assert api_defense.served_utility(nxt, p, x, d.val.y)[0] < raw - cost / 100
    with pytest.raises(UserError, match="no such file"):
        mod.main(["--dataset", "synthetic", "--victim", "teacher", "--misinfo", "missing.pt"])


def test_dfme_and_its_maze_preset_keep_their_own_clone_and_row_without_a_setting(world, monkeypatch):
    """Without --setting, a MAZE-preset run of a victim and seed is not "already done" because the plain DFME run
    of them finished (nor overwrites its clone without --resume): its checkpoint name says maze."""
    monkeypatch.chdir(world)
    results = str(world / "maze.csv")
    flags = ["--dataset", "synthetic", "--victim", "teacher", "--query_budget", "0.0005", "--batch_size", "16",
             "--grad_m", "1", "--epoch_itrs", "2", "--ngf", "8", "--nz", "8", "--progress", "0", "--results",
             results, "--log_dir", "runs", "--resume", "1", "--tag", "mazepath"]
    dfme = _script("DFME", "dfme.py")
    dfme.main(flags)
    dfme.main(flags + ["--MAZE", "1"])
    rows = read_rows(results)
    assert [r["attack"] for r in rows] == ["dfme", "maze"]
    assert rows[0]["attack_path"] != rows[1]["attack_path"] and "-maze" in rows[1]["attack_path"]
    assert all(os.path.isfile(world / r["attack_path"]) for r in rows)


def test_a_finished_clone_is_never_run_again_over_for_a_results_file_without_its_row(world, monkeypatch):
    """--resume 1 with another --results file (RESULTS=mine.csv on a config with committed clones) used to start
    the finished attack from scratch and overwrite its clone; now it stops, one error, before anything is written."""
    monkeypatch.chdir(world)
    flags = ["--dataset", "synthetic", "--victim", "teacher", "--pool", "synthetic", "--query_budget", "0.0003",
             "--epochs", "1", "--progress", "0", "--log_dir", "runs", "--resume", "1", "--tag", "otherfile"]
    knockoff = _script("DFME", "knockoff.py")
    knockoff.main(flags + ["--results", str(world / "first.csv")])
    clone = read_rows(str(world / "first.csv"))[0]["attack_path"]
    before = os.stat(world / clone).st_mtime_ns, Path(world / clone).read_bytes()
    with pytest.raises(UserError, match="is a finished run whose row is not in .*second.csv"):
        knockoff.main(flags + ["--results", str(world / "second.csv")])
    assert (os.stat(world / clone).st_mtime_ns, Path(world / clone).read_bytes()) == before
    assert not os.path.exists(world / "second.csv")
    knockoff.main(flags + ["--results", str(world / "first.csv")])  # its own file: already done, as before
    assert len(read_rows(str(world / "first.csv"))) == 1


def test_an_ensemble_of_unchanged_members_is_kept_with_resume_and_rebuilt_when_a_member_changed(world, monkeypatch,
                                                                                                capsys):
    """train.sh and compare.sh rebuilt every ensemble on every run, rewriting the committed fashionmnist_v2
    ensembles (and their JSON) with this machine's numbers; --resume 1 keeps one whose members are unchanged."""
    monkeypatch.chdir(world)
    for i, arch in enumerate(("lenet5", "lenet5half")):
        torch.manual_seed(10 + i)
        checkpoint.save(paths.member_path("synthetic", arch, "ensres"),
                        checkpoint.classifier_payload(create_model(arch, 10, 1), arch, "synthetic", 10, 1))
    ensemble = _script("Defense", "ensemble.py")
    argv = ["--dataset", "synthetic", "--tag", "ensres", "--members", "lenet5:ensres", "lenet5half:ensres",
            "--resume", "1"]
    out = paths.ensemble_path("synthetic", "ensres")
    ensemble.main(argv)
    first = Path(out).read_bytes(), Path(out[:-3] + ".json").read_text(), os.stat(out).st_mtime_ns
    capsys.readouterr()
    ensemble.main(argv)
    assert "already done" in capsys.readouterr().out
    assert (Path(out).read_bytes(), Path(out[:-3] + ".json").read_text(), os.stat(out).st_mtime_ns) == first
    torch.manual_seed(99)  # a member retrained: the ensemble is built again from it
    checkpoint.save(paths.member_path("synthetic", "lenet5half", "ensres"),
                    checkpoint.classifier_payload(create_model("lenet5half", 10, 1), "lenet5half", "synthetic", 10, 1))
    ensemble.main(argv)
    assert "already done" not in capsys.readouterr().out
    new = checkpoint.load(out)["state_dict"][1]
    assert all(torch.equal(new[k], v) for k, v in
               checkpoint.load(paths.member_path("synthetic", "lenet5half", "ensres"))["state_dict"].items())


def test_a_finished_output_made_with_other_flags_is_not_taken_as_done(world, monkeypatch, capsys):
    """--resume 1 skipped a finished run without looking at its flags: a config's epochs changed, or a grid entry's
    flags changed under the same name, and the old output was taken for the new run. Now: one error naming the
    flag, the output untouched; the same flags still say "already done"."""
    monkeypatch.chdir(world)
    train = _script("Defense", "train_misinformation.py")
    argv = ["--dataset", "synthetic", "--model", "lenet5fifth", "--progress", "0", "--log_dir", str(world / "runs"),
            "--resume", "1"]
    path = world / paths.misinfo_path("synthetic", "lenet5fifth")
    before = Path(path).read_bytes()
    with pytest.raises(UserError, match="made by a run with --epochs 1, this run has --epochs 2"):
        train.main(argv + ["--epochs", "2"])
    assert Path(path).read_bytes() == before
    capsys.readouterr()
    train.main(argv + ["--epochs", "1"])
    assert "already done" in capsys.readouterr().out and Path(path).read_bytes() == before


def test_two_trainings_with_two_outputs_keep_two_log_folders(world, monkeypatch):
    """The teacher's and a member's log folder came from dataset, model, tag and seed, not from --out: a second run
    with another --out cleared the first's metrics.csv and events. The default folder name is as before."""
    monkeypatch.chdir(world)
    teacher = _script("Defense", "train_teacher.py")
    for out in ("ta.pt", "tb.pt"):
        teacher.main(["--dataset", "synthetic", "--epochs", "1", "--progress", "0", "--log_dir", "twologs",
                      "--out", str(world / out)])
    assert sorted(os.listdir(world / "twologs" / "teacher")) == ["ta-seed0", "tb-seed0"]
    for name in ("ta-seed0", "tb-seed0"):
        assert len(read_rows(str(world / "twologs" / "teacher" / name / "metrics.csv"))) == 1
    from misleader.runlog import stage_run_name
    args = _script("Defense", "train_defense.py").parse(["--dataset", "synthetic", "--tag", "v2"])
    assert stage_run_name(args) == "synthetic-lenet5-v2-seed0"  # the name the committed runs' folders have


@pytest.mark.parametrize("script,extra", [("DFME/knockoff.py", ["--pool", "synthetic", "--query_budget", "0.0003",
                                                                  "--epochs", "1", "--results", "split.csv"]),
                                          ("Defense/choose_tau.py", ["--misinfo", paths.misinfo_path("synthetic",
                                                                                                     "lenet5fifth")])])
def test_an_attack_or_threshold_on_a_victim_of_another_split_is_refused(world, monkeypatch, script, extra):
    """Attacks and choose_tau never checked the victim's train/validation split: a teacher trained with --val_size
    700 and a run with the default (1,000 for synthetic) would choose settings (or tau) on images the teacher
    trained on."""
    monkeypatch.chdir(world)
    torch.manual_seed(0)
    checkpoint.save(paths.teacher_path("synthetic", "lenet5", "val700"),
                    checkpoint.classifier_payload(create_model("lenet5", 10, 1), "lenet5", "synthetic", 10, 1,
                                                  args={"split_seed": 0, "val_size": 700}))
    folder, name = script.split("/")
    common = ["--dataset", "synthetic", "--victim", "teacher", "--teacher_tag", "val700", "--progress", "0",
              *extra]
    with pytest.raises(UserError, match="trained with --val_size 700, this run uses 1000"):
        _script(folder, name).main(common)
    with pytest.raises(UserError, match="trained with split seed 0, this run uses --split_seed 1"):
        _script(folder, name).main(common + ["--val_size", "700", "--split_seed", "1"])
