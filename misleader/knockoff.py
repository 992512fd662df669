"""Knockoff Nets (Orekondy et al., CVPR 2019), random strategy, written against the counted BlackBox.

The attacker draws ``budget`` images uniformly from a query pool (the transfer set), asks the API once per
image, and trains a student on the answers with soft-label cross-entropy, -sum_c p_victim(c) log
softmax(student)(c); a label-only API gives one-hot answers, which makes it ordinary cross-entropy.
"""

import time

import torch
import torch.nn.functional as F

from misleader.attack import AttackStage, one_hot_answers
from misleader.data import Augment, Split, _to_split, dataset_info, load_dataset, make_synthetic, num_batches
from misleader.errors import UserError
from misleader.loop import EpochLoop
from misleader.models import create_model
from misleader.runlog import RunLog
from misleader.runtime import autocast, seeded
from misleader.train import make_optimizer, make_scheduler

# a procedural pool's images are drawn for the attacker with seeds of their own (POOL_SEED + the run's seed), never
# the synthetic dataset's training (1234) or test (4321) images
POOL_SEED = 20_000


def query_pool(pool, data, budget, seed, data_root, split_seed):
    """(images in [0, 1] with the victim's channels, text for the settings column) of the attacker's pool: the
    victim's own training split (``pool`` = its dataset; never the validation images), another dataset's training
    split, or, for a procedural pool (the synthetic gratings), ``budget`` distinct images made for this run: a
    generator has no fixed size, so no query is spent twice on one image (the seed makes them the same against
    every victim)."""
    channels = data.info.in_channels
    if pool == data.info.name:
        return data.train.x, ""
    if pool.startswith("synthetic"):
        x = _to_split(*make_synthetic(budget, dataset_info(pool).in_channels, POOL_SEED + seed), data.device).x
        return to_channels(x, channels), f" pool_images={budget}"
    return to_channels(load_dataset(pool, data_root, None, split_seed, data.device).train.x, channels), ""


def transfer_indices(pool_size, budget, generator):
    """``budget`` pool indices drawn uniformly without replacement; a budget larger than the pool takes the
    whole pool in a fresh random order as many times as needed."""
    rounds = -(-budget // pool_size)
    return torch.cat([torch.randperm(pool_size, generator=generator) for _ in range(rounds)])[:budget]


def to_channels(x, channels):
    """Pool images in [0, 1] as ``channels``-channel images: grey repeated to RGB, RGB to luminance."""
    if x.shape[1] == channels:
        return x
    if x.shape[1] == 1:
        return x.expand(-1, channels, -1, -1)
    gray = 0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]
    return gray.expand(-1, channels, -1, -1) if channels > 1 else gray


@torch.no_grad()
def query_transfer_set(victim, images, normalize, num_classes, batch_size=1000, memory_format=torch.contiguous_format):
    """Ask the victim about every image once, in batches: the (N, num_classes) answers the student learns from
    (probabilities, or one-hot labels from a label-only API)."""
    answers = []
    for i in range(0, images.shape[0], batch_size):
        x = normalize(images[i:i + batch_size]).contiguous(memory_format=memory_format)
        answers.append(one_hot_answers(victim(x), num_classes).float())
    return torch.cat(answers)


def soft_cross_entropy(logits, target):
    """Batch mean of -sum_c target_c * log_softmax(logits)_c."""
    return -(target * F.log_softmax(logits.float(), 1)).sum(1).mean()


class TransferSet:
    """The queried images (pool indices) and the API's answers, saved with the run's state so that a resumed
    run never asks again; also the seconds and best test accuracy so far."""

    def __init__(self):
        self.idx = self.answers = None
        self.used, self.wall, self.best = 0, 0.0, -1.0

    def state_dict(self):
        return {"idx": self.idx, "answers": None if self.answers is None else self.answers.cpu(), "used": self.used,
                "wall": self.wall, "best": self.best}

    def load_state_dict(self, st):
        self.idx, self.answers, self.used, self.wall, self.best = (st[k] for k in ("idx", "answers", "used", "wall",
                                                                                  "best"))


def run_knockoff(args):
    """One Knockoff run of the parsed flags of DFME/knockoff.py: the transfer set asked once (kept in the run's
    state, so a resumed run never asks again), the student trained on it, the clone saved and its row recorded."""
    budget = round(args.query_budget * 1e6)
    if budget < 1:
        raise UserError(f"--query_budget must be at least one image (1e-06), got {args.query_budget:g}")
    stage = AttackStage(args, "knockoff", budget, "knockoff-state", "" if args.pool == args.dataset else args.pool)
    if stage.already_recorded():
        return
    info, data, dev = stage.info, stage.data, stage.device
    pool, pool_text = query_pool(args.pool, data, budget, args.seed, args.data_root, args.split_seed)
    student = seeded(args.seed, lambda: create_model(args.student_model, info.num_classes, info.in_channels))
    student = student.to(dev, memory_format=stage.fmt)
    opt = make_optimizer("sgd", student.parameters(), args.lr, 0.9, args.weight_decay)
    sched = make_scheduler("cosine", opt, args.epochs * num_batches(budget, args.batch_size))
    transfer, aug = TransferSet(), Augment(data, seed=args.seed + 1)
    loop = EpochLoop(stage.run, student, {"student": student, "opt": opt, "sched": sched, "transfer": transfer},
                     aug.g, torch.Generator().manual_seed(args.seed), keep_best=False)
    resumed = loop.resume()
    if transfer.answers is None:
        stage.run.defer_signals()  # a signal while asking waits for the answers to be saved: none is asked twice
        idx = transfer_indices(pool.shape[0], budget, torch.Generator().manual_seed(args.seed))
        t0 = time.time()
        answers = query_transfer_set(stage.victim, pool[idx.to(dev)], data.normalize, info.num_classes,
                                     args.query_batch, stage.fmt)
        transfer.idx, transfer.answers, transfer.used = idx, answers, stage.victim.used
        transfer.wall = time.time() - t0
        loop.save()
    stage.victim.used = transfer.used
    settings = (f"pool={args.pool}{pool_text} epochs={args.epochs} batch_size={args.batch_size} lr={args.lr:g} "
                f"weight_decay={args.weight_decay:g} augment={args.augment} victim_output={args.victim_output}")
    log = RunLog(args.log_dir, "knockoff", stage.run_name, {**vars(args), "settings": settings},
                 resume_step=loop.epoch if resumed else None, resolved=stage.resolved())
    print(f"Knockoff on {stage.label} ({stage.victim_path}, test acc {stage.victim_acc:.4f}): pool {args.pool}, "
          f"{stage.victim.used} queries ({args.victim_output}), student {args.student_model}, {args.epochs} epochs, "
          f"device {dev}, seed {args.seed}", flush=True)

    def step(x, target):
        if args.augment == "crop":
            x = aug.random_crop(x, pad=4)
        with autocast(dev, stage.amp):
            out = student(data.normalize(x).contiguous(memory_format=stage.fmt))
        loss = soft_cross_entropy(out, target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        return loss.detach()[None]

    def end_epoch(epoch, losses, seen, secs):
        acc, fid, val_acc = stage.evaluate(student)
        transfer.wall, transfer.best = transfer.wall + secs, max(transfer.best, acc)
        log.log(epoch, {"loss": losses[:, 0].mean().item(), "clone_acc": acc, "clone_val_acc": val_acc,
                        "fidelity": fid, "queries_used": stage.victim.used, "lr": opt.param_groups[0]["lr"]},
                extra={"images_per_s": seen / secs})
        return val_acc  # logged only: the clone is the last epoch's (keep_best=False)

    student.train()
    loop.run(Split(pool[transfer.idx.to(dev)], transfer.answers.to(dev)), args.batch_size, args.epochs, step,
             end_epoch, args.progress)
    stage.finish(student, transfer.best, transfer.wall, log.dir, settings, {"pool": args.pool})
    log.close()
