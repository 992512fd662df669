"""Resumable runs. ``RunState`` is what every stage (teacher, defense member, DFME, Knockoff) shares: the
owner lock on its output, the state file ``<out>.state.pt`` with the run's defining flags, "already done"
on --resume 1, saves every few minutes and on SIGINT/SIGTERM, cleanup at the end. ``EpochLoop`` is the
epoch loop of the stages that train over a data split (teacher, defense, Knockoff): resumable at any batch,
saved every epoch, stopped with exit code 3 by a non-finite loss. ``train_model`` is the head of the stages
that train one classifier (teacher, misinformation model): run, seeding, model, data.

EpochLoop's state holds every model, optimiser and schedule (``stateful``), the RNG states, the position
(epoch, batch), the partial epoch's losses and the best-so-far model, so a run killed at any moment and
resumed produces the same metrics as an uninterrupted one.
"""

import os
import signal
import sys
import time

import torch

from misleader import checkpoint, runlock
from misleader.data import batches, dataset_info, load_dataset, num_batches
from misleader.models import create_model
from misleader.progress import progress_bar
from misleader.runlog import RunLog, stage_run_name
from misleader.runtime import setup
from misleader.train import check_finite

SAVE_COST_RATIO = 20  # a state is saved again only after 20 times as long as its last save took (about 5 % of the run)


class StopFlag:
    """SIGINT / SIGTERM set a flag; the loop saves its state at the next step boundary and exits 128+signum."""

    def __init__(self):
        self.signum = None
        for s in (signal.SIGINT, signal.SIGTERM):
            signal.signal(s, self._handler)

    def _handler(self, signum, frame):
        self.signum = signum

    def exit_if_set(self, save, where):
        if self.signum is not None:
            save()
            print(f"signal {self.signum}: state saved to {where}; rerun with --resume 1 to continue", flush=True)
            sys.exit(128 + self.signum)


class RunState:
    """One run's output and state file. Taking it locks the output for this process (a second process on the
    same run exits 2); ``kind`` and ``arch`` are checked when the state is loaded, and so are the defining
    flags of ``args`` (checkpoint.run_flags)."""

    def __init__(self, out, kind, arch, args, also_writes=()):
        for path in (out, *also_writes):
            checkpoint.check_writable(path)
        runlock.own(out)  # one process per run, before anything of it is written
        self.out, self.kind, self.arch, self.args = out, kind, arch, args
        self.file = checkpoint.state_path(out)
        self.save_every, self.last_save, self.stop = args.save_every_min * 60, time.time(), None
        self.save_secs = 0.0  # how long the last save took

    def finished(self):
        """--resume 1 and the run's output exists with no state file left."""
        return bool(self.args.resume) and os.path.isfile(self.out) and not os.path.isfile(self.file)

    def already_done(self, recorded=None, what="retrain"):
        """--resume 1 on a finished run (and ``recorded()``, if given): say so; the caller returns. An output made
        with other defining flags is a UserError, never taken as done."""
        done = self.finished() and (recorded is None or recorded())
        if done:
            checkpoint.check_done_flags(checkpoint.load(self.out), self.out, self.args)
            print(f"already done: {self.out} exists (--resume 1 does not {what} it)")
        return done

    def load(self):
        """With --resume 1 and a state file: its contents, checked against this run; else None."""
        if not (self.args.resume and os.path.isfile(self.file)):
            return None
        st = checkpoint.check(checkpoint.load(self.file), self.file, kind=self.kind, arch=self.arch)
        checkpoint.check_flags(st, self.file, self.args)
        return st

    def save(self, payload):
        t0 = time.time()
        checkpoint.save(self.file, checkpoint.payload(self.kind, self.arch, flags=checkpoint.run_flags(self.args),
                                                      **payload))
        self.last_save = time.time()
        self.save_secs = self.last_save - t0

    def _cheap(self):
        """The last save took at most 1/SAVE_COST_RATIO of the time since it: saving now keeps saving near that
        share of the run (DisGUIDE's replay buffer makes a state of 4 GB at 1M queries, some 40 s to write)."""
        return time.time() - self.last_save >= SAVE_COST_RATIO * self.save_secs

    def epoch_end(self, payload):
        """At an epoch end: save ``payload()`` when saving is cheap (a small state: every epoch)."""
        if self._cheap():
            self.save(payload())

    def defer_signals(self):
        """From now on SIGINT/SIGTERM only set a flag that the next ``boundary`` acts on (say, while queries are
        spent that the state saved at that boundary keeps)."""
        if self.stop is None:
            self.stop = StopFlag()

    def boundary(self, payload):
        """At a step boundary: on SIGINT/SIGTERM save ``payload()`` and exit 128+signal; every save_every_min
        minutes save it (with save_every_min > 0 no sooner than SAVE_COST_RATIO times the last save's duration)."""
        self.defer_signals()
        self.stop.exit_if_set(lambda: self.save(payload()), self.file)
        if time.time() - self.last_save > self.save_every and (self.save_every == 0 or self._cheap()):
            self.save(payload())

    def close(self):
        """The run finished: its state file goes."""
        if os.path.isfile(self.file):
            os.remove(self.file)


def train_model(args, kind, train):
    """The head of a stage that trains one classifier, ``args.model``, into ``args.out`` (the teacher, the
    misinformation model): the run (RunState of state kind ``kind``); nothing more when --resume 1 finds it done.
    Else setup(args) seeds every RNG, the model is initialised right after it, the dataset is loaded, and
    ``train(args, run, info, device, amp, fmt, model, data)`` does the rest, the model on the device."""
    info = dataset_info(args.dataset)
    run = RunState(args.out, kind, args.model, args)
    if run.already_done():
        return
    device, amp, fmt = setup(args)
    model = create_model(args.model, info.num_classes, info.in_channels)  # seeded by setup
    data = load_dataset(args.dataset, args.data_root, args.val_size, args.split_seed, device)
    train(args, run, info, device, amp, fmt, model.to(device, memory_format=fmt), data)


def epoch_run(run, model, stateful, aug, args, stage):
    """The EpochLoop of a stage that trains ``model`` over a data split (augmentation ``aug``, data order seeded by
    --seed), resumed where the run's state left it, and the run's log under ``stage``: (loop, log)."""
    loop = EpochLoop(run, model, stateful, aug.g, torch.Generator().manual_seed(args.seed))
    resumed = loop.resume()
    log = RunLog(args.log_dir, stage, stage_run_name(args), vars(args), resume_step=loop.epoch if resumed else None,
                 resolved={"device": next(model.parameters()).device, "train_size": len(aug.bundle.train),
                           "val_size": len(aug.bundle.val)})
    return loop, log


class EpochLoop:
    """Runs ``step(x, y) -> 1-D loss tensor`` over shuffled batches for a number of epochs.

    ``end_epoch(epoch, losses (n_steps, k), seen, secs) -> val_acc`` evaluates and logs; the loop keeps
    the state of ``model`` at the best val_acc (with keep_best; else the last epoch's). ``losses[:, 0]`` is
    checked for finiteness. ``run`` (a RunState) holds the files."""

    def __init__(self, run, model, stateful, aug_gen, order_gen, keep_best=True):
        self.files, self.arch, self.state_file = run, run.arch, run.file
        self.model, self.stateful, self.aug_gen, self.order = model, stateful, aug_gen, order_gen
        self.epoch, self.batch, self.epoch_order = 0, 0, order_gen.get_state()
        self.partial, self.seen = [], 0
        self.steps = 0  # batches per epoch, set by run(): the partial epoch starts at step epoch * steps
        self.best_acc, self.best_epoch, self.best_state = -1.0, -1, None
        self.keep_best = keep_best  # False: the model after the last epoch is the result (an attacker's clone)

    def state(self):
        return {"epoch": self.epoch, "batch": self.batch, "epoch_order": self.epoch_order,
                "rng": checkpoint.rng_snapshot(self.aug_gen), "partial": [t.cpu() for t in self.partial],
                "seen": self.seen, "best_acc": self.best_acc, "best_epoch": self.best_epoch,
                "best_state": self.best_state, "modules": {k: v.state_dict() for k, v in self.stateful.items()}}

    def save(self):
        self.files.save(self.checked_state())

    def checked_state(self):
        if self.partial:
            check_finite(torch.stack(self.partial)[:, 0], self.epoch * self.steps, "loss before saving")
        return self.state()

    def resume(self):
        """Load the state file if --resume 1 and there is one; returns True when it did."""
        st = self.files.load()
        if st is None:
            return False
        for k, v in self.stateful.items():
            v.load_state_dict(st["modules"][k])
        checkpoint.rng_restore(st["rng"], self.aug_gen)
        self.epoch, self.batch, self.epoch_order = st["epoch"], st["batch"], st["epoch_order"]
        self.partial, self.seen = list(st["partial"]), st["seen"]
        self.best_acc, self.best_epoch, self.best_state = st["best_acc"], st["best_epoch"], st["best_state"]
        print(f"resumed from {self.state_file}: epoch {self.epoch} done, batch {self.batch} of the next")
        return True

    def run(self, split, batch_size, epochs, step, end_epoch, progress="auto"):
        steps = self.steps = num_batches(len(split), batch_size)
        while self.epoch < epochs:
            self.order.set_state(self.epoch_order)  # the epoch's permutation, the same after a resume
            it = batches(split, batch_size, generator=self.order)
            t0 = time.time()
            bar = progress_bar(progress, steps, self.batch, f"epoch {self.epoch + 1}/{epochs}", "batches", leave=False)
            for i, (x, y) in enumerate(it):
                if i < self.batch:
                    continue
                self.partial.append(step(x, y))
                self.seen += x.shape[0]
                self.batch = i + 1
                bar.update(1)
                self.files.boundary(self.checked_state)
            bar.close()
            losses = torch.stack(self.partial)
            check_finite(losses[:, 0], self.epoch * steps, "loss")
            self.epoch += 1
            val_acc = end_epoch(self.epoch, losses, self.seen, time.time() - t0)
            if val_acc > self.best_acc:
                self.best_acc, self.best_epoch = val_acc, self.epoch
                if self.keep_best:  # (an attacker's clone is its last epoch's: no copy to keep)
                    self.best_state = {k: v.detach().clone().cpu() for k, v in self.model.state_dict().items()}
            self.batch, self.partial, self.seen, self.epoch_order = 0, [], 0, self.order.get_state()
            self.save()
        if self.keep_best:
            self.model.load_state_dict(self.best_state)

    def conclude(self, out, data, log, info, args):
        """After run(): test accuracy of the best model, the final checkpoint, the last scalars, cleanup."""
        from misleader.evaluate import accuracy

        test_acc = accuracy(self.model, data.test, data.normalize)
        metrics = {"val_acc": self.best_acc, "test_acc": test_acc, "best_epoch": self.best_epoch}
        checkpoint.save(out, checkpoint.classifier_payload(self.model, self.arch, info.name, info.num_classes,
                                                           info.in_channels, metrics, vars(args), args.seed))
        log.scalars(args.epochs, {"test_acc": test_acc, "best_val_acc": self.best_acc})
        log.close()
        self.files.close()
        print(f"saved {out} (best epoch {self.best_epoch}): val_acc {self.best_acc:.4f} test_acc {test_acc:.4f}")
