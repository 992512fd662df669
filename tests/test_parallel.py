"""Runs in parallel lose nothing: concurrent appends to one results CSV, one owner per run, resumes that match
their flags. The attacks are tiny smoke runs through the real entry point, in a scratch folder."""

import argparse
import csv
import fcntl
import os
import re
import shlex
import shutil
import signal
import subprocess
import time

import pytest
import torch

from misleader.errors import UserError
from misleader.results import COLUMNS, EARLIER_VALUES, read_rows
from test_reliability import PY, dfme, env, read_csv, save_teacher

# Smaller than test_reliability's attack (argparse keeps the last value given): a few seconds on a busy CPU.
SMALL = ["--query_budget", "0.001", "--batch_size", "16", "--epoch_itrs", "4"]
OUT = os.path.join("DFME", "cache", "synthetic-teacher-lenet5-seed0-{}.pt")  # relative to the run's folder

WRITER = r"""
import fcntl, os, sys
from misleader.results import record_row
path, gate, who = sys.argv[1], sys.argv[2], sys.argv[3]
open(f"{gate}-{who}", "w").close()  # ready
fcntl.flock(os.open(gate, os.O_RDONLY), fcntl.LOCK_SH)  # the test holds it exclusively until all are ready
for i in range(25):
    record_row(path, {"dataset": "synthetic", "victim": who, "seed": i, "settings": "lr_S=0.1 " * 40,
                      "attack_path": f"DFME/cache/{who}-{i}.pt"})
    if i % 5 == 4:  # the run of seed i - 2 made again: its row replaced while the others write
        record_row(path, {"dataset": "synthetic", "victim": who, "seed": i - 2, "settings": "again",
                          "attack_path": f"DFME/cache/{who}-{i - 2}.pt"})
"""


def test_eight_writers_append_every_row_once_under_one_header(tmp_path):
    """8 processes x 25 runs' rows through the real record_row, started at the same instant, 5 runs of each made
    twice (the second row replaces the first): into a new file, then into a file with an older header and 2000
    rows of earlier runs, whose columns the first writer to hold the lock upgrades while the others wait."""
    for earlier in (0, 2000):
        path = str(tmp_path / f"results-{earlier}.csv")
        if earlier:
            with open(path, "w", newline="") as f:
                # from before query_range and every later column existed
                w = csv.DictWriter(f, fieldnames=COLUMNS[:COLUMNS.index("query_range")])
                w.writeheader()
                w.writerows({"dataset": "synthetic", "victim": "earlier", "seed": i} for i in range(earlier))
        eight_writers(path, str(tmp_path / f"gate-{earlier}"))

        with open(path, newline="") as f:
            text = f.read()
        lines = text.splitlines()
        header = ",".join(COLUMNS)
        assert lines[0] == header and lines.count(header) == 1
        assert text.endswith("\n") and all(len(r) == len(COLUMNS) for r in csv.reader(lines)), "a torn line"
        rows = read_rows(path)
        new = [r for r in rows if r["victim"] != "earlier"]
        assert sorted((r["victim"], int(r["seed"])) for r in new) == [(f"w{k}", i) for k in range(8)
                                                                      for i in range(25)]
        assert sorted(int(r["seed"]) for r in new if r["settings"] == "again") == sorted([2, 7, 12, 17, 22] * 8)
        old = [r for r in rows if r["victim"] == "earlier"]
        assert [int(r["seed"]) for r in old] == list(range(earlier))
        assert {r["query_range"] for r in old} <= {EARLIER_VALUES["query_range"]}


def eight_writers(path, gate_path):
    """Start 8 writer processes, wait until each waits on the gate, open it: the kernel wakes all at once."""
    gate = os.open(gate_path, os.O_CREAT | os.O_RDWR)
    fcntl.flock(gate, fcntl.LOCK_EX)
    writers = [subprocess.Popen([PY, "-c", WRITER, path, gate_path, f"w{k}"], env=env()) for k in range(8)]
    deadline = time.time() + 60
    while not all(os.path.exists(f"{gate_path}-w{k}") for k in range(8)) and time.time() < deadline:
        time.sleep(0.01)
    time.sleep(0.2)  # from "ready" to waiting on the gate
    os.close(gate)
    assert [p.wait(timeout=60) for p in writers] == [0] * 8


HOLDER = r"""
import sys
from misleader import runlock
runlock.own(sys.argv[1])
print("held", flush=True)
sys.stdin.read()
"""


def test_run_lock_refuses_a_second_owner_and_dies_with_its_holder(tmp_path):
    from misleader import runlock

    out = str(tmp_path / "cache" / "run.pt")
    holder = subprocess.Popen([PY, "-c", HOLDER, out], env=env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(UserError, match=rf"^already running: {re.escape(out)}, pid {holder.pid}$"):
            runlock.own(out)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
    lock = runlock.own(out)  # the kernel released the killed holder's lock
    try:
        assert runlock.own(out) is lock  # the same process asking again keeps its lock
        with open(runlock.lock_path(out)) as f:
            assert f.read().strip() == str(os.getpid())
    finally:
        lock.release()
    assert os.listdir(tmp_path / "cache") == ["run.pt.lock"]  # the lock file, nothing else


def test_epoch_loop_resume_refuses_other_defining_flags(tmp_path):
    """Teacher and defense members: EpochLoop's state records the flags; logging-only flags may differ."""
    from misleader.loop import EpochLoop, RunState

    out = str(tmp_path / "m.pt")
    model = torch.nn.Linear(2, 2)

    def loop(**changed):
        args = argparse.Namespace(**{"lr": 0.1, "milestones": [2, 3], "epochs": 4, "progress": "1", "resume": 1,
                                     "save_every_min": 5.0, "log_dir": "runs", **changed})
        return EpochLoop(RunState(out, "teacher-state", "linear", args), model, {"model": model}, torch.Generator(),
                         torch.Generator())

    loop().save()
    assert loop(progress="0", save_every_min=0.5, log_dir="elsewhere").resume()
    with pytest.raises(UserError, match=r"--lr 0\.1, this run has --lr 0\.2"):
        loop(lr=0.2).resume()
    with pytest.raises(UserError, match=r"--milestones 2 3, this run has --milestones 2 4"):
        loop(milestones=[2, 4]).resume()


def test_same_attack_launched_twice_through_xargs_runs_once(tmp_path):
    """The same command line twice under xargs -P 2: one attack runs, the other exits 2 with one line and
    writes nothing; the results CSV ends with the run's row exactly once."""
    root = str(tmp_path)
    save_teacher(root)
    line = " ".join(shlex.quote(a) for a in dfme(root, "twice", *SMALL))
    proc = subprocess.run(["xargs", "-P", "2", "-L", "1", "sh", "-c", '"$0" "$@"; echo "exit $?"'],
                          input=f"{line}\n{line}\n", cwd=root, env=env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert sorted(re.findall(r"^exit \d+$", proc.stdout, re.M)) == ["exit 0", "exit 2"], proc.stdout + proc.stderr
    out = OUT.format("twice")
    refused = [x for x in proc.stderr.splitlines() if x.startswith("error:")]
    assert len(refused) == 1 and re.fullmatch(rf"error: already running: {re.escape(out)}, pid \d+", refused[0])
    assert proc.stdout.count("done: ") == 1
    rows = read_csv(os.path.join(root, "results-twice.csv"))
    assert len(rows) == 1 and rows[0]["attack_path"] == out
    # the refused process wrote nothing: one TensorBoard file, each epoch's metrics once, no state left
    run_dir = os.path.join(root, "runs", "dfme", "twice")
    assert len([n for n in os.listdir(run_dir) if n.startswith("events.out.tfevents")]) == 1
    steps = [int(r["step"]) for r in read_csv(os.path.join(run_dir, "metrics.csv"))]
    assert steps == list(range(1, len(steps) + 1))
    assert sorted(os.listdir(os.path.join(root, "DFME", "cache"))) == [os.path.basename(out),
                                                                       os.path.basename(out) + ".lock"]


def test_a_run_repeated_replaces_its_row_and_the_table_shows_this_invocations_rows(tmp_path):
    """Running an attack again without --resume (a fresh clone repeating a committed run, or a user redoing one)
    leaves one row for it, the new one: two rows for one seed would stop the report. Another run keeps its row;
    ``python -m misleader.results --since FILE`` lists the rows whose clone was written after FILE."""
    root = str(tmp_path)
    save_teacher(root)
    csv_path = os.path.join(root, "results-again.csv")
    other = dfme(root, "other", *SMALL, "--seed", "1")
    other[other.index("--results") + 1] = csv_path
    assert subprocess.run(other, cwd=root, env=env(), check=False, capture_output=True, timeout=300).returncode == 0
    first = subprocess.run(dfme(root, "again", *SMALL), cwd=root, env=env(), check=False, capture_output=True,
                           text=True, timeout=300)
    marker = os.path.join(root, "started")
    open(marker, "w").close()
    again = subprocess.run(dfme(root, "again", *SMALL, "--seed", "0"), cwd=root, env=env(), check=False,
                           capture_output=True, text=True, timeout=300)
    assert first.returncode == again.returncode == 0, first.stderr + again.stderr
    assert "replaced" not in first.stdout and again.stdout.count("results: replaced this run's earlier row") == 1
    rows = read_rows(csv_path)
    assert [r["attack_path"] for r in rows] == [OUT.format("other").replace("seed0", "seed1"), OUT.format("again")]
    table = subprocess.run([PY, "-m", "misleader.results", csv_path, "--since", marker], cwd=root, env=env(),
                           check=False, capture_output=True, text=True, timeout=60)
    lines = table.stdout.strip().splitlines()
    assert table.returncode == 0 and len(lines) == 2 and lines[0].split()[-1] == "seed"
    assert lines[1].split()[-1] == "0"  # the repeated run's row (seed 0), not the other run's (seed 1)


@pytest.fixture(scope="module")
def killed(tmp_path_factory):
    """An attack stopped (SIGSTOP) after its first saved state, a second launch of it while it lives, then
    SIGKILL. Returns (snapshot folder of the killed run, its pid, the second launch)."""
    root = str(tmp_path_factory.mktemp("killed"))
    save_teacher(root)
    cmd = dfme(root, "cut", *SMALL, "--query_budget", "0.0015")
    state = os.path.join(root, OUT.format("cut")[:-3] + ".state.pt")
    a = subprocess.Popen(cmd + ["--save_every_min", "0.0005"], cwd=root, env=env(), stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not os.path.isfile(state) and time.time() < deadline and a.poll() is None:
        time.sleep(0.02)
    a.send_signal(signal.SIGSTOP)
    try:
        assert a.poll() is None and os.path.isfile(state), "the attack ended before it could be stopped"
        second = subprocess.run(cmd + ["--resume", "1"], cwd=root, env=env(), capture_output=True, text=True,
                                timeout=120)
    finally:
        a.send_signal(signal.SIGKILL)
        a.wait(timeout=30)
    snapshot = root + "-snapshot"
    shutil.copytree(root, snapshot)
    return snapshot, a.pid, second


def fresh_copy(killed, tmp_path):
    root = str(tmp_path / "run")
    shutil.copytree(killed[0], root)
    return root


def test_resume_with_another_query_budget_exits_2_and_changes_nothing(killed, tmp_path):
    root = fresh_copy(killed, tmp_path)
    assert os.path.isfile(os.path.join(root, OUT.format("cut")[:-3] + ".state.pt"))
    before = tree(root)
    proc = subprocess.run(dfme(root, "cut", *SMALL, "--query_budget", "0.003", "--resume", "1"), cwd=root, env=env(),
                          capture_output=True, text=True, timeout=120)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert "--query_budget 0.0015, this run has --query_budget 0.003" in lines[0]
    assert tree(root) == before  # state, logs: every byte as it was, nothing added


def tree(root):
    """Every file under root and its bytes, but lock files (a refused resume owned the run for a moment: the
    lock file names its pid)."""
    files = {}
    for folder, _, names in os.walk(root):
        for n in names:
            if n.endswith(".lock"):
                continue
            with open(os.path.join(folder, n), "rb") as f:
                files[os.path.relpath(os.path.join(folder, n), root)] = f.read()
    return files


def test_sigkilled_run_does_not_block_its_resume(killed, tmp_path):
    _, pid, second = killed
    out = OUT.format("cut")
    assert second.returncode == 2 and second.stderr.strip() == f"error: already running: {out}, pid {pid}", \
        second.stderr  # while the run lived, a second launch was refused
    root = fresh_copy(killed, tmp_path)
    with open(os.path.join(root, out + ".lock")) as f:
        assert f.read().strip() == str(pid)  # the killed run's lock file is still there, its lock is not
    # logging-only flags may differ on resume
    proc = subprocess.run(dfme(root, "cut", *SMALL, "--query_budget", "0.0015", "--resume", "1", "--progress", "1",
                               "--save_every_min", "7"), cwd=root, env=env(), capture_output=True, text=True,
                          timeout=240)
    assert proc.returncode == 0, proc.stderr
    assert "resumed from" in proc.stdout
    rows = read_csv(os.path.join(root, "results-cut.csv"))
    assert len(rows) == 1 and int(rows[0]["queries_used"]) <= 1500
    assert not os.path.exists(os.path.join(root, out[:-3] + ".state.pt"))


def test_a_state_slow_to_write_is_saved_less_often(tmp_path, monkeypatch):
    """Every epoch end wrote the whole state: DisGUIDE's 4 GB replay buffer took ~40 s a write, a quarter of each
    epoch at 1M queries. Now a state is written again only after SAVE_COST_RATIO times its last write's duration,
    at epoch ends and at the --save_every_min boundaries; a cheap state is still written every epoch, and
    --save_every_min 0 still writes after every step."""
    from misleader import loop as L

    clock = [1000.0]
    monkeypatch.setattr(L.time, "time", lambda: clock[0])
    cost = [40.0]

    def slow_save(path, payload):  # a write that takes cost[0] seconds
        clock[0] += cost[0]
    monkeypatch.setattr(L.checkpoint, "save", slow_save)
    args = argparse.Namespace(resume=0, save_every_min=5.0)
    run = L.RunState(str(tmp_path / "m.pt"), "attack-state", "lenet5", args)
    saves = []

    def payload():
        saves.append(clock[0])
        return {}
    run.epoch_end(payload)  # nothing saved yet: cheap so far
    assert len(saves) == 1 and run.save_secs == 40.0
    clock[0] += 160.0  # an epoch later: 160 s < 20 x 40 s
    run.epoch_end(payload)
    run.boundary(payload)  # also past --save_every_min (5 min)? no: 200 s since the last save
    clock[0] += 200.0  # 360 s: past 5 min, still under 800 s
    run.boundary(payload)
    assert len(saves) == 1
    clock[0] += 440.0  # 800 s after the last save
    run.boundary(payload)
    assert len(saves) == 2
    cheap = L.RunState(str(tmp_path / "c.pt"), "attack-state", "lenet5", args)
    cost[0] = 0.01  # a small state: every epoch end
    for _ in range(2):
        clock[0] += 1.0
        cheap.epoch_end(payload)
    assert len(saves) == 4
    every = L.RunState(str(tmp_path / "n.pt"), "attack-state", "lenet5", argparse.Namespace(resume=0,
                                                                                              save_every_min=0))
    cost[0] = 5.0
    for _ in range(3):
        clock[0] += 0.001
        every.boundary(payload)
    assert len(saves) == 7
