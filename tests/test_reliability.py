"""Resume after SIGKILL / SIGTERM, determinism, non-finite losses and bad checkpoints, via the real entry points."""

import csv
import os
import random
import re
import signal
import subprocess
import sys
import time

import pytest
import torch

from misleader import checkpoint
from misleader.models import create_model
from helpers import REPO

PY = sys.executable


def env():
    # one thread per child: these runs are tiny and often two at a time on two cores
    return {**os.environ, "MISLEADER_OFFLINE": "1", "PYTHONPATH": REPO, "OMP_NUM_THREADS": "1"}


def script(*parts):
    return os.path.join(REPO, *parts)


def save_teacher(root, arch="lenet5"):
    torch.manual_seed(0)
    path = os.path.join(root, "Defense", "cache", "teacher", f"synthetic-{arch}.pt")
    checkpoint.save(path, checkpoint.classifier_payload(create_model(arch, 10, 1), arch, "synthetic", 10, 1))
    return path


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


DFME_ARGS = ["--dataset", "synthetic", "--victim", "teacher", "--query_budget", "0.02", "--batch_size", "64",
             "--epoch_itrs", "10", "--ngf", "8", "--nz", "32", "--progress", "0"]


def dfme(root, name, *extra):
    return [PY, script("DFME", "dfme.py"), *DFME_ARGS, "--run_name", name, "--tag", name,
            "--results", os.path.join(root, f"results-{name}.csv"), *extra]


def test_dfme_killed_with_sigkill_and_resumed_matches_uninterrupted_run(tmp_path):
    root = str(tmp_path)
    save_teacher(root)
    # the uninterrupted reference runs beside the interrupted one (one thread each, two cores)
    full = subprocess.Popen(dfme(root, "full"), cwd=root, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    state = os.path.join(root, "DFME", "cache", "synthetic-teacher-lenet5-seed0-cut.state.pt")
    proc = subprocess.Popen(dfme(root, "cut", "--save_every_min", "0.0005"), cwd=root, env=env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not os.path.isfile(state) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    time.sleep(random.uniform(0.2, 1.5))
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert os.path.isfile(state)
    saved = torch.load(state, weights_only=True)["attack"]
    assert saved["queries_used"] > 0  # saved after an iteration: there is work to skip
    resumed = subprocess.run(dfme(root, "cut", "--resume", "1"), cwd=root, env=env(), check=True,
                             capture_output=True, text=True, timeout=240).stdout
    assert full.wait(timeout=240) == 0, full.stderr.read()
    # it started from the saved epoch, iteration and query count, and ran only the epochs after the saved one
    where = re.search(r"resumed from \S+: epoch (\d+), iteration (\d+), (\d+) queries used", resumed)
    assert where, f"the resumed run does not say it resumed:\n{resumed[-2000:]}"
    assert tuple(map(int, where.groups())) == (saved["epoch"], saved["itr"], saved["queries_used"]), \
        f"'{where.group(0)}', but the state held epoch {saved['epoch']}, iteration {saved['itr']}, " \
        f"{saved['queries_used']} queries used"
    epochs_run = [int(e) for e in re.findall(r"\[epoch (\d+)/", resumed)]  # its per-epoch lines
    full, cut = read_csv(os.path.join(root, "results-full.csv")), read_csv(os.path.join(root, "results-cut.csv"))
    assert len(full) == len(cut) == 1
    for key in ("queries_used", "clone_acc", "clone_best_acc", "fidelity"):
        assert full[0][key] == cut[0][key], key
    assert int(cut[0]["queries_used"]) <= int(cut[0]["query_budget"])
    m_full = read_csv(os.path.join(root, "runs", "dfme", "full", "metrics.csv"))
    m_cut = read_csv(os.path.join(root, "runs", "dfme", "cut", "metrics.csv"))
    assert m_full == m_cut  # no duplicated or lost rows, same numbers
    assert epochs_run == list(range(saved["epoch"] + 1, len(m_full) + 1)), \
        f"the resumed run ran epochs {epochs_run}; the state held {saved['epoch']} of {len(m_full)}"
    assert not os.path.isfile(state)
    # rerunning with resume once finished neither repeats the attack nor adds a row
    out = subprocess.run(dfme(root, "cut", "--resume", "1"), cwd=root, env=env(), capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0 and "already done" in out.stdout
    assert len(read_csv(os.path.join(root, "results-cut.csv"))) == 1


def test_resume_without_state_starts_fresh_and_clears_stale_logs(tmp_path):
    """--resume 1 with no state file is a fresh run: an earlier run's metrics rows and TensorBoard
    events in the same run folder are removed, not mixed into the new curves."""
    root = str(tmp_path)
    save_teacher(root)
    run_dir = os.path.join(root, "runs", "dfme", "stale")
    os.makedirs(run_dir)
    with open(os.path.join(run_dir, "metrics.csv"), "w") as f:
        f.write("step,clone_acc\n1,0.999\n2,0.999\n3,0.999\n4,0.999\n")
    stale_events = os.path.join(run_dir, "events.out.tfevents.1.stale")
    with open(stale_events, "wb") as f:
        f.write(b"old")
    subprocess.run(dfme(root, "stale", "--resume", "1"), cwd=root, env=env(), check=True, capture_output=True,
                   timeout=240)
    assert not os.path.exists(stale_events)
    rows = read_csv(os.path.join(run_dir, "metrics.csv"))
    assert [int(r["step"]) for r in rows] == list(range(1, len(rows) + 1))
    assert all(r["clone_acc"] != "0.999" for r in rows) and "queries_used" in rows[0]


def teacher(root, name, *extra):
    return [PY, script("Defense", "train_teacher.py"), "--dataset", "synthetic", "--epochs", "4", "--batch_size", "64",
            "--progress", "0", "--run_name", name, "--out", os.path.join(root, f"{name}.pt"), *extra]


def test_teacher_sigterm_saves_state_and_resume_gives_identical_metrics(tmp_path):
    root = str(tmp_path)
    full = subprocess.Popen(teacher(root, "full"), cwd=root, env=env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)  # the reference, beside the interrupted run
    proc = subprocess.Popen(teacher(root, "cut"), cwd=root, env=env(), stdout=subprocess.PIPE, text=True)
    for line in proc.stdout:  # wait for the second epoch's line, then stop it in the middle of the third
        if line.startswith("[2]"):
            break
    time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    rest = proc.stdout.read()
    proc.wait(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, rest
    assert "state saved" in rest and os.path.isfile(os.path.join(root, "cut.state.pt"))
    assert not os.path.isfile(os.path.join(root, "cut.pt"))
    saved = torch.load(os.path.join(root, "cut.state.pt"), weights_only=True)
    assert saved["epoch"] >= 2 and saved["batch"] >= 1  # stopped after the second epoch, within a later one
    resumed = subprocess.run(teacher(root, "cut", "--resume", "1"), cwd=root, env=env(), check=True,
                             capture_output=True, text=True, timeout=240).stdout
    assert full.wait(timeout=240) == 0, full.stderr.read()
    # it started from the saved epoch and batch and logged only the epochs after the saved one
    assert f": epoch {saved['epoch']} done, batch {saved['batch']} of the next" in resumed, \
        f"the resumed run does not say it resumed at epoch {saved['epoch']}, batch {saved['batch']}:\n{resumed[-2000:]}"
    epochs_run = [int(e) for e in re.findall(r"(?:^|\r)\[(\d+)\] ", resumed, re.M)]  # its per-epoch log lines
    assert epochs_run == list(range(saved["epoch"] + 1, 5)), \
        f"the resumed run logged epochs {epochs_run}; the state held {saved['epoch']} of 4"
    a = read_csv(os.path.join(root, "runs", "teacher", "full", "metrics.csv"))
    b = read_csv(os.path.join(root, "runs", "teacher", "cut", "metrics.csv"))
    assert len(a) == 4 and a == b
    ca = torch.load(os.path.join(root, "full.pt"), weights_only=True)
    cb = torch.load(os.path.join(root, "cut.pt"), weights_only=True)
    assert ca["metrics"] == cb["metrics"]


def test_same_seed_gives_identical_metrics_files(tmp_path):
    root = str(tmp_path)
    procs = []
    for name in ("a", "b"):  # at the same time: what two runs share is only the seed
        args = teacher(root, name)
        args[args.index("4")] = "2"
        procs.append(subprocess.Popen(args, cwd=root, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
    assert [p.wait(timeout=240) for p in procs] == [0, 0], [p.stderr.read() for p in procs]
    a = open(os.path.join(root, "runs", "teacher", "a", "metrics.csv")).read()
    b = open(os.path.join(root, "runs", "teacher", "b", "metrics.csv")).read()
    assert a == b and a.count("\n") == 3


def test_non_finite_loss_exits_3_and_keeps_no_output(tmp_path):
    root = str(tmp_path)
    args = teacher(root, "nan", "--optimizer", "sgd", "--lr", "1e30")
    out = subprocess.run(args, cwd=root, env=env(), capture_output=True, text=True, timeout=240)
    assert out.returncode == 3, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "non-finite loss at step" in lines[0]
    assert not os.path.isfile(os.path.join(root, "nan.pt"))


@pytest.mark.parametrize("case", ["wrong_arch", "wrong_classes", "unwritable", "corrupt"])
def test_bad_checkpoints_and_outputs_exit_2_with_one_line(tmp_path, case):
    root = str(tmp_path)
    path = save_teacher(root)
    args = [PY, script("Defense", "train_defense.py"), "--dataset", "synthetic", "--teacher_path", path,
            "--out", os.path.join(root, "member.pt"), "--epochs", "1"]
    if case == "wrong_arch":
        args += ["--teacher_model", "lenet5half"]
        expect = "arch='lenet5', expected 'lenet5half'"
    elif case == "wrong_classes":
        ck = torch.load(path, weights_only=True)
        ck["num_classes"] = 100
        checkpoint.save(path, ck)
        expect = "num_classes=100, expected 10"
    elif case == "unwritable":
        blocker = os.path.join(root, "file")
        open(blocker, "w").close()
        args[args.index("--out") + 1] = os.path.join(blocker, "member.pt")
        expect = "cannot write"
    else:
        with open(path, "r+b") as f:
            f.truncate(100)
        expect = "truncated or corrupt"
    out = subprocess.run(args, cwd=root, env=env(), capture_output=True, text=True, timeout=120)
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2 and len(lines) == 1 and expect in lines[0], out.stderr
    assert not os.path.isfile(os.path.join(root, "member.pt"))
