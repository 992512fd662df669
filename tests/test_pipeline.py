"""CONFIG=smoke end to end: teacher.sh, train.sh and test.sh in a scratch copy of the repository."""

import csv
import json
import os
import subprocess

import pytest
import torch
from helpers import copy_repo


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    root = tmp_path_factory.mktemp("repo")
    copy_repo(root, ("misleader", "Defense", "DFME", "configs", "teacher.sh", "train.sh", "test.sh", "compare.sh",
                     "report.sh"), ignore=("cache", "ensemble", "__pycache__"))
    env = {**os.environ, "CONFIG": "smoke", "MISLEADER_OFFLINE": "1", "PYTHONPATH": str(root)}
    logs = {}
    for stage in ("teacher.sh", "train.sh", "test.sh"):
        proc = subprocess.run(["bash", stage], cwd=root, env=env, capture_output=True, text=True, timeout=300)
        logs[stage] = proc.stdout + proc.stderr
        assert proc.returncode == 0, f"{stage} failed:\n{logs[stage][-3000:]}"
    return root, logs


def test_teacher_checkpoint_loads_safely_with_high_val_accuracy(smoke):
    root, _ = smoke
    ck = torch.load(root / "Defense/cache/teacher/synthetic-lenet5.pt", weights_only=True)
    assert ck["kind"] == "classifier" and ck["arch"] == "lenet5" and ck["num_classes"] == 10
    assert ck["metrics"]["val_acc"] > 0.9
    with open(root / "runs/teacher/synthetic-lenet5-seed0/params.json") as f:
        params = json.load(f)
    # what the flags resolved to on this machine, not only the flags ("auto" says nothing about where it ran)
    assert params["args"]["device"] == "auto" and params["resolved"]["device"] == "cpu"
    assert params["resolved"]["val_size"] == 1000 and params["resolved"]["torch_threads"] >= 1
    with open(root / "runs/teacher/synthetic-lenet5-seed0/metrics.csv") as f:
        assert len(list(csv.DictReader(f))) == 3  # one row per epoch


def test_train_writes_members_and_ensemble(smoke):
    root, logs = smoke
    ens = torch.load(root / "Defense/ensemble/synthetic.pt", weights_only=True)
    assert ens["kind"] == "ensemble" and ens["arch"] == ["lenet5", "lenet5half"]
    assert os.path.isfile(root / "Defense/cache/defense/synthetic-lenet5half.pt")
    assert "ensemble lenet5+lenet5half" in logs["train.sh"]


def test_attack_rows_respect_budget(smoke):
    root, logs = smoke
    with open(root / "results/results.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["attack"], r["victim"]) for r in rows] == [("dfme", "misleader"), ("dfme", "teacher"),
                                                          ("knockoff", "misleader"), ("knockoff", "teacher")]
    for r in rows:
        budget = 50000 if r["attack"] == "dfme" else 2000
        assert 0 < int(r["queries_used"]) <= int(r["query_budget"]) == budget
        assert r["seed"] == "0" and 0.0 <= float(r["clone_acc"]) <= 1.0
        assert r["git_commit"] and os.path.isfile(root / r["attack_path"])
    assert [r["queries_used"] for r in rows[2:]] == ["2000", "2000"]  # Knockoff asks once per pool image
    for r in rows[:2]:  # DFME runs whole iterations until the next would not fit: all but the last part of one
        s = dict(kv.split("=", 1) for kv in r["settings"].split())
        cost = int(s["batch_size"]) * (int(s["g_iter"]) * (int(s["grad_m"]) + 1) + int(s["d_iter"]))
        assert int(r["queries_used"]) == 50000 // cost * cost
    assert "pool=synthetic" in rows[2]["settings"] and rows[0]["query_range"] == "tanh"
    for r in (rows[0], rows[2]):  # an attack's params.json: where it ran and which victim file it attacked
        with open(root / r["run_dir"] / "params.json") as f:
            resolved = json.load(f)["resolved"]
        assert resolved["device"] == "cpu" and resolved["victim_path"] == r["victim_path"]
        assert f"{resolved['victim_acc']:.4f}" == f"{float(r['victim_acc']):.4f}"
    assert "victim_acc" in logs["test.sh"].splitlines()[-5]  # the closing table


def test_smoke_knockoff_learns(smoke):
    """Knockoff clones the synthetic teacher far above chance (10 %) from 2,000 pool images: a broken attack
    (targets, query order, loss) would leave its clone near chance."""
    root, _ = smoke
    with open(root / "results/results.csv") as f:
        rows = {(r["attack"], r["victim"]): float(r["clone_acc"]) for r in csv.DictReader(f)}
    assert rows[("knockoff", "teacher")] >= 0.5, rows


def test_smoke_dfme_learns(smoke):
    """The smoke config's DFME clones the synthetic teacher at twice chance or better (20 %): a broken
    zeroth-order estimate, generator step or student loss leaves the clone predicting one class (10.4 %)."""
    root, _ = smoke
    with open(root / "results/results.csv") as f:
        rows = {(r["attack"], r["victim"]): float(r["clone_acc"]) for r in csv.DictReader(f)}
    assert rows[("dfme", "teacher")] >= 0.2, rows


def test_logs_to_a_file_have_no_carriage_returns(smoke):
    """Output that is not a terminal gets plain progress lines (--progress auto), never tqdm's bars."""
    _, logs = smoke
    for stage, text in logs.items():
        assert "\r" not in text, stage


def test_compare_list_lines_run_in_parallel_and_skip_when_done(smoke):
    """compare.sh --list prints self-contained lines; two of them through xargs -P 2 add two rows to the one
    CSV (locked appends), and executing them again adds nothing (finished runs are skipped)."""
    root, _ = smoke
    env = {**os.environ, "CONFIG": "smoke", "MISLEADER_OFFLINE": "1", "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"}
    listing = subprocess.run(["bash", "compare.sh", "--list", "grid"], cwd=root, env=env, capture_output=True,
                             text=True, timeout=60)
    assert listing.returncode == 0, listing.stderr
    lines = listing.stdout.splitlines()
    assert lines[0].startswith("# phase 2") and not any("train_defense" in line for line in lines)
    picked = [line for line in lines if "knockoff.py" in line and "--seed 1 " in line
              and ("--label teacher " in line or "--label misleader " in line)]
    assert len(picked) == 2, lines

    def rows():
        with open(root / "results/results.csv") as f:
            return list(csv.DictReader(f))
    before = len(rows())
    for _ in range(2):
        proc = subprocess.run(["xargs", "-d", "\n", "-P", "2", "-I{}", "bash", "-c", "{}"], input="\n".join(picked),
                              cwd=root, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        new = rows()[before:]
        assert sorted((r["attack"], r["label"], r["seed"]) for r in new) == [("knockoff", "misleader", "1"),
                                                                             ("knockoff", "teacher", "1")]
    assert "already" in proc.stdout + proc.stderr  # the second pass skipped both
    bad = subprocess.run(["bash", "compare.sh", "--list", "nope"], cwd=root, env=env, capture_output=True, text=True)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1
    with open(root / "configs/badaware.sh", "w") as f:  # an aware setting that is not in the grid
        f.write('source configs/smoke.sh\nDFME_GRID=("a dfme --steps 0.5")\nAWARE_SETTINGS=(b)\n')
    bad = subprocess.run(["bash", "compare.sh", "--list"], cwd=root, env={**env, "CONFIG": "badaware"},
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "AWARE_SETTINGS: 'b'" in bad.stderr and bad.stdout == ""


def test_compare_variant_member_finds_the_untagged_teacher(smoke):
    """The smoke config has no TAG: a lambda = 0 member (tag lam0) must still read the untagged teacher."""
    root, _ = smoke
    env = {**os.environ, "CONFIG": "smoke", "MISLEADER_OFFLINE": "1", "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"}
    listing = subprocess.run(["bash", "compare.sh", "--list", "train"], cwd=root, env=env, capture_output=True,
                             text=True, timeout=60)
    first = next(line for line in listing.stdout.splitlines() if "train_defense.py" in line)
    assert "--tag lam0" in first
    proc = subprocess.run(["bash", "-c", first + " --epochs 1"], cwd=root, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    ck = torch.load(root / "Defense/cache/defense/synthetic-lenet5-lam0.pt", weights_only=True)
    assert ck["args"]["lambda_"] == 0.0 and ck["args"]["teacher_path"].endswith("synthetic-lenet5.pt")
