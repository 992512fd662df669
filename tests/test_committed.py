"""The fashionmnist_v2 evaluation's checkpoints are committed: every one of its rows in results/results.csv must have
its checkpoints in a clean clone, with the row's query count; the newest rows' victim and clone accuracy, fidelity
and validation accuracy are recomputed (all of them: `bash report.sh --config fashionmnist_v2 --verify 1`).

The first evaluation's checkpoints lived on one machine only and were lost with it; this test is what keeps that
from happening again: a row added without its checkpoints, or whose query count no longer matches them, fails
here.
"""
import os

import pytest

from misleader import data as D
from misleader import report
from helpers import REPO, copy_repo

CSV = os.path.join(REPO, "results", "results.csv")
CONFIG = "fashionmnist_v2"


ARCHS = ("lenet5", "lenet5half", "lenet5fifth")  # MISLEADER's members, and those of its variants and lambda = 0
KNOBS = ("lam0.1", "lam1", "lam2", "aiter3", "aiter5")  # trained so far
VICTIMS = ["Defense/cache/teacher/fashionmnist-lenet5-v2.pt", "Defense/cache/defense/fashionmnist-lenet5-v2.pt",
           "Defense/cache/defense/fashionmnist-lenet5half-v2.pt",
           "Defense/cache/defense/fashionmnist-lenet5fifth-v2.pt", "Defense/ensemble/fashionmnist-v2.pt",
           # the controls: the same members trained with lambda = 0, and three lenet5 members (seeds 1-3)
           *[f"Defense/cache/defense/fashionmnist-{a}-v2-lam0.pt" for a in ARCHS],
           "Defense/ensemble/fashionmnist-v2-lam0.pt",
           *[f"Defense/cache/defense/fashionmnist-lenet5-v2-homo{i}.pt" for i in (1, 2, 3)],
           "Defense/ensemble/fashionmnist-v2-homo.pt",
           # MISLEADER trained again from seed 1 (the variant seed1)
           *[f"Defense/cache/defense/fashionmnist-{a}-v2-seed1.pt" for a in ARCHS],
           "Defense/ensemble/fashionmnist-v2-seed1.pt",
           # MISLEADER's knobs (the MISLEADER_VARIANTS of configs/fashionmnist.sh): other lambda or a_iter
           *[f"Defense/cache/defense/fashionmnist-{a}-v2-{knob}.pt" for knob in KNOBS
             for a in ARCHS],
           *[f"Defense/ensemble/fashionmnist-v2-{knob}.pt" for knob in KNOBS]]


def _rows():
    """The fashionmnist_v2 rows of results/results.csv (the columns verify reads)."""
    return report.filter_config(report.load_results(CSV, report.VERIFY_COLUMNS), CONFIG, CSV)


def _need_fashion():
    if not os.path.isdir(D.SYSTEM_FASHION_MNIST) and not os.path.isdir(os.path.join(REPO, "data", "FashionMNIST")):
        pytest.skip("Fashion-MNIST is not on this machine (Debian's dataset-fashion-mnist)")


def test_committed_victims_load_and_score_what_they_recorded():
    """Every committed victim scores the test and validation accuracy it recorded. An ensemble's members are the
    committed member files (its ``sources``, weights equal bit for bit), so its accuracy is computed from their
    softmax outputs, already computed for the members themselves, averaged as the ensemble averages them; the
    loaded ensemble's own forward is checked against that average on the first 512 images of each split."""
    import torch

    from misleader import checkpoint
    from misleader.ensemble import built_from
    from misleader.evaluate import predict
    _need_fashion()
    info = D.dataset_info("fashionmnist")
    data = D.load_dataset("fashionmnist", os.path.join(REPO, "data"))
    splits = {"test_acc": data.test, "val_acc": data.val}
    probs, members = {}, {}  # committed member path -> {metric: softmax outputs on its split}; -> (model, arch)
    for rel in VICTIMS:
        path = os.path.join(REPO, rel)
        model = checkpoint.load_victim(path, info, None)[0].eval()
        ck = checkpoint.load(path)
        if ck["kind"] == "ensemble":
            assert all(src in probs for src in ck["sources"]), (rel, ck["sources"])  # members scored first
            assert built_from(ck, [members[src][0] for src in ck["sources"]],
                              [members[src][1] for src in ck["sources"]], ck["sources"]), rel
            out = {m: torch.stack([probs[src][m] for src in ck["sources"]]).mean(0) for m in splits}
            for m, split in splits.items():
                head = predict(model, split.x[:512], data.normalize)
                assert torch.allclose(head, out[m][:512], atol=1e-6), (rel, m)
        else:
            out = probs[rel] = {m: predict(model, split.x, data.normalize) for m, split in splits.items()}
            members[rel] = (model, ck["arch"])
        for m, split in splits.items():
            acc = (out[m].argmax(1) == split.y).float().mean().item()
            assert acc == pytest.approx(ck["metrics"][m], abs=1e-6), (rel, m)


# rows whose accuracies are recomputed here (the newest; about 1.5 s each on one core): the whole evaluation's
# rows would take minutes, so `bash report.sh --config fashionmnist_v2 --verify 1` recomputes them all
RECOMPUTED = 8


def test_every_fashionmnist_v2_row_verifies_from_committed_checkpoints():
    """Every row's checkpoints are committed and hold its query count; the newest rows' accuracies recompute."""
    rows = _rows()
    assert rows, f"no {CONFIG} rows in {CSV}"
    _need_fashion()
    newest = set(range(max(0, len(rows) - RECOMPUTED), len(rows)))
    res = report.verify(CSV, data_root=os.path.join(REPO, "data"), device="cpu", config=CONFIG, recompute=newest)
    wrong = [(i, f, c, v) for i, f, c, v, ok in res if not ok]
    assert not wrong
    assert {i for i, *_ in res} == set(range(len(rows)))
    assert {i for i, f, *_ in res if f == "clone_acc"} == newest


def test_teacher_sh_keeps_the_committed_v2_teacher(tmp_path):
    """CONFIG=fashionmnist_v2 bash teacher.sh must not retrain the committed teacher (another CPU gives other weights,
    and the committed rows were made against these)."""
    import hashlib
    import subprocess

    rel = VICTIMS[0]
    copy_repo(tmp_path, ("misleader", "Defense", "configs", "teacher.sh"), ignore=("__pycache__", "*.lock"))
    digest = hashlib.md5(open(tmp_path / rel, "rb").read()).hexdigest()
    env = {**os.environ, "CONFIG": CONFIG, "MISLEADER_OFFLINE": "1", "PYTHONPATH": str(tmp_path)}
    env.pop("RESUME", None)
    proc = subprocess.run(["bash", "teacher.sh"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "already done" in proc.stdout
    assert hashlib.md5(open(tmp_path / rel, "rb").read()).hexdigest() == digest


def test_committed_clone_checkpoints_hold_the_clone_only():
    """A committed attack checkpoint keeps the clone and its record, not the generator (4.4 MB each) nor
    DisGUIDE's second clone (README, "Why fashionmnist_v2"), so the repository grows by about 0.25 MB a run: the
    rule of `python DFME/slim.py` (checkpoint.slim_attack) finds nothing to drop in any of them."""
    from misleader import checkpoint
    fat = []
    for r in _rows():
        path = os.path.join(REPO, r["attack_path"])
        extra = checkpoint.slim_attack(checkpoint.load(path), path)[1]
        if extra:
            fat.append((r["attack_path"], extra))
    assert not fat
