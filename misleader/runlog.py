"""Run logging: params.json, metrics.csv, TensorBoard scalars and one console line per epoch.

Every stage writes under one TensorBoard root (``--log_dir``, default ``runs/``):
``runs/<stage>/<run_name>/{params.json, metrics.csv, events.out.tfevents.*}``.
"""

import csv
import json
import os
import platform
import subprocess
import sys

import torch

from misleader.checkpoint import write_atomic

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def git_commit(repo=REPO):
    """The commit the code runs at, "-dirty" when a tracked file outside results/ differs from it (the runs
    themselves append to the tracked results/results.csv: that says nothing about the code)."""
    try:
        out = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=repo, capture_output=True, text=True,
                             timeout=5)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)results"],
                               cwd=repo, capture_output=True, text=True, timeout=5).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "") if out.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def versions():
    import torchvision

    return {"python": platform.python_version(), "torch": torch.__version__, "torchvision": torchvision.__version__,
            "platform": platform.platform(), "cuda": torch.version.cuda if torch.cuda.is_available() else None}


def stage_run_name(args):
    """A training stage's log folder name: --run_name, else its output's file name and seed, so two runs with two
    outputs never share (and clear) one folder."""
    return args.run_name or os.path.splitext(os.path.basename(args.out))[0] + f"-seed{args.seed}"


class RunLog:
    """One run's logs. ``log(step, metrics)`` writes a CSV row, TensorBoard scalars and a console line."""

    def __init__(self, log_dir, stage, run_name, args, resume_step=None, tb_resume_step=None, resolved=None):
        """``resolved``: what the flags turned into on this machine (device, amp, the victim's file...), recorded
        in params.json beside the flags with the host and PyTorch's thread count."""
        self.dir = os.path.join(log_dir, stage, run_name)
        os.makedirs(self.dir, exist_ok=True)
        self.csv_path = os.path.join(self.dir, "metrics.csv")
        import socket

        import torch

        here = {"hostname": socket.gethostname(), "torch_threads": torch.get_num_threads(), **(resolved or {})}
        self.params = {"args": dict(args), "argv": sys.argv, "git_commit": git_commit(), "versions": versions(),
                       "resolved": {k: str(v) if not isinstance(v, (int, float, str)) else v for k, v in here.items()}}
        write_atomic(os.path.join(self.dir, "params.json"),
                     lambda f: json.dump(self.params, f, indent=2, sort_keys=True, default=str), binary=False)
        self.fields = None
        if resume_step is not None and os.path.isfile(self.csv_path):
            self._truncate(resume_step)
        else:  # a fresh run replaces an earlier run of the same name
            for name in os.listdir(self.dir):
                if name == "metrics.csv" or name.startswith("events.out.tfevents"):
                    os.remove(os.path.join(self.dir, name))
        from torch.utils.tensorboard import SummaryWriter

        tb_resume_step = resume_step if tb_resume_step is None else tb_resume_step  # when TensorBoard counts otherwise
        self.tb = SummaryWriter(self.dir, purge_step=None if resume_step is None else tb_resume_step + 1)

    def _truncate(self, last_step):
        """On resume, keep only the rows up to last_step so none is duplicated."""
        with open(self.csv_path, newline="") as f:
            rows = [r for r in csv.DictReader(f) if int(r["step"]) <= last_step]
        if rows:
            self.fields = list(rows[0])

        def write(f):
            if rows:
                w = csv.DictWriter(f, fieldnames=self.fields)
                w.writeheader()
                w.writerows(rows)
        write_atomic(self.csv_path, write, binary=False)  # a kill here keeps the curve as it was

    def scalars(self, step, metrics, prefix=""):
        for k, v in metrics.items():
            self.tb.add_scalar(prefix + k, v, step)

    def log(self, step, metrics, console=True, extra=None, tb_step=None):
        """Append {step, **metrics} to metrics.csv, write them as scalars (at ``tb_step`` if given, e.g. the
        queries used, else at ``step``), and print one line."""
        row = {"step": step, **{k: _fmt(v) for k, v in metrics.items()}}
        new_file = not os.path.isfile(self.csv_path) or os.path.getsize(self.csv_path) == 0
        if self.fields is None:
            self.fields = list(row)
        with open(self.csv_path, "a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=self.fields, extrasaction="ignore")
            if new_file:
                w.writeheader()
            w.writerow(row)
        tb_step = step if tb_step is None else tb_step
        self.scalars(tb_step, metrics)
        if extra:
            self.scalars(tb_step, extra)
        if console:
            shown = {**metrics, **(extra or {})}
            print(f"[{step}] " + "  ".join(f"{k} {_fmt(v)}" for k, v in shown.items()), flush=True)

    def close(self):
        self.tb.flush()
        self.tb.close()


def _fmt(v):
    if isinstance(v, float):
        return float(f"{v:.6g}")
    return v
