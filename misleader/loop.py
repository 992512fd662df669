"""The epoch loop of the teacher and defense stages: resumable at any batch, saved every epoch and every
few minutes, stopped cleanly by SIGINT/SIGTERM, stopped with exit code 3 by a non-finite loss.

State lives in ``<out>.state.pt`` and holds every model, optimiser and schedule (``stateful``), the RNG
states, the position (epoch, batch), the partial epoch's losses and the best-so-far model, so a run
killed at any moment and resumed produces the same metrics as an uninterrupted one.
"""

import os
import signal
import sys
import time

import torch
from tqdm import tqdm

from misleader import checkpoint
from misleader.data import batches, num_batches
from misleader.train import check_finite


def already_done(out, resume):
    """--resume 1 on a run whose output exists and has no state file left: say so; the caller returns."""
    done = bool(resume) and os.path.isfile(out) and not os.path.isfile(checkpoint.state_path(out))
    if done:
        print(f"already done: {out} exists (--resume 1 does not retrain it)")
    return done


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


class EpochLoop:
    """Runs ``step(x, y) -> 1-D loss tensor`` over shuffled batches for a number of epochs.

    ``end_epoch(epoch, losses (n_steps, k), seen, secs) -> val_acc`` evaluates and logs; the loop keeps
    the state of ``model`` at the best val_acc. ``losses[:, 0]`` is checked for finiteness."""

    def __init__(self, kind, arch, state_file, model, stateful, aug_gen, order_gen, save_every_min=5.0):
        self.kind, self.arch, self.state_file = kind, arch, state_file
        self.model, self.stateful, self.aug_gen, self.order = model, stateful, aug_gen, order_gen
        self.save_every = save_every_min * 60
        self.epoch, self.batch, self.epoch_order = 0, 0, order_gen.get_state()
        self.partial, self.seen = [], 0
        self.best_acc, self.best_epoch, self.best_state = -1.0, -1, None

    def state(self):
        return {"format": checkpoint.FORMAT, "kind": self.kind, "arch": self.arch, "epoch": self.epoch,
                "batch": self.batch, "epoch_order": self.epoch_order,
                "rng": checkpoint.rng_snapshot(self.aug_gen), "partial": [t.cpu() for t in self.partial],
                "seen": self.seen, "best_acc": self.best_acc, "best_epoch": self.best_epoch,
                "best_state": self.best_state, "modules": {k: v.state_dict() for k, v in self.stateful.items()}}

    def save(self):
        if self.partial:
            check_finite(torch.stack(self.partial)[:, 0], 0, "loss before saving")
        checkpoint.save(self.state_file, self.state())

    def resume(self):
        """Load the state file if there is one; returns True when it did."""
        if not os.path.isfile(self.state_file):
            return False
        st = checkpoint.check(checkpoint.load(self.state_file), self.state_file, kind=self.kind, arch=self.arch)
        for k, v in self.stateful.items():
            v.load_state_dict(st["modules"][k])
        checkpoint.rng_restore(st["rng"], self.aug_gen)
        self.epoch, self.batch, self.epoch_order = st["epoch"], st["batch"], st["epoch_order"]
        self.partial, self.seen = list(st["partial"]), st["seen"]
        self.best_acc, self.best_epoch, self.best_state = st["best_acc"], st["best_epoch"], st["best_state"]
        print(f"resumed from {self.state_file}: epoch {self.epoch} done, batch {self.batch} of the next")
        return True

    def run(self, split, batch_size, epochs, step, end_epoch, progress=True):
        steps = num_batches(len(split), batch_size)
        stop, last_save = StopFlag(), time.time()
        while self.epoch < epochs:
            self.order.set_state(self.epoch_order)  # the epoch's permutation, the same after a resume
            it = batches(split, batch_size, generator=self.order)
            t0 = time.time()
            bar = tqdm(total=steps, initial=self.batch, desc=f"epoch {self.epoch + 1}/{epochs}", disable=not progress,
                       leave=False)
            for i, (x, y) in enumerate(it):
                if i < self.batch:
                    continue
                self.partial.append(step(x, y))
                self.seen += x.shape[0]
                self.batch = i + 1
                bar.update(1)
                stop.exit_if_set(self.save, self.state_file)
                if time.time() - last_save > self.save_every:
                    self.save()
                    last_save = time.time()
            bar.close()
            losses = torch.stack(self.partial)
            check_finite(losses[:, 0], self.epoch * steps, "loss")
            self.epoch += 1
            val_acc = end_epoch(self.epoch, losses, self.seen, time.time() - t0)
            if val_acc > self.best_acc:
                self.best_acc, self.best_epoch = val_acc, self.epoch
                self.best_state = {k: v.detach().clone().cpu() for k, v in self.model.state_dict().items()}
            self.batch, self.partial, self.seen, self.epoch_order = 0, [], 0, self.order.get_state()
            self.save()
            last_save = time.time()
        self.model.load_state_dict(self.best_state)

    def conclude(self, out, data, amp, log, info, args):
        """After run(): test accuracy of the best model, the final checkpoint, the last scalars, cleanup."""
        from misleader.train import accuracy

        test_acc = accuracy(self.model, data.test, data.normalize, amp)
        metrics = {"val_acc": self.best_acc, "test_acc": test_acc, "best_epoch": self.best_epoch}
        checkpoint.save(out, checkpoint.classifier_payload(self.model, self.arch, info.name, info.num_classes,
                                                           info.in_channels, metrics, vars(args), args.seed))
        log.scalars(args.epochs, {"test_acc": test_acc, "best_val_acc": self.best_acc})
        log.close()
        if os.path.isfile(self.state_file):
            os.remove(self.state_file)
        print(f"saved {out} (best epoch {self.best_epoch}): val_acc {self.best_acc:.4f} test_acc {test_acc:.4f}")
