"""Knockoff Nets (random strategy) against a victim behind the counted black-box API.

The attacker draws --query_budget images (in millions: 0.02 = 20,000) uniformly from a query pool, asks the
API once per image, and trains the student for --epochs on those answers with soft-label cross-entropy
(one-hot answers for --victim_output label). Pools: the victim's own training images (--pool fashionmnist for
a Fashion-MNIST victim: the worst case for the defender), the procedural gratings (--pool synthetic or
synthetic_rgb: data from another distribution), or any registered dataset; the validation split of the
pool's dataset is never drawn. One row per run goes to results/results.csv (a rerun replaces its earlier
row).
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from misleader.attack import AttackStage, add_attack_flags, finish_parse  # noqa: E402
from misleader.cli import Parser, main_wrapper  # noqa: E402
from misleader.data import DATASET_NAMES, Augment, Split, num_batches  # noqa: E402
from misleader.errors import UserError  # noqa: E402
from misleader.knockoff import query_pool, query_transfer_set, soft_cross_entropy, transfer_indices  # noqa: E402
from misleader.loop import EpochLoop  # noqa: E402
from misleader.models import create_model  # noqa: E402
from misleader.runlog import RunLog  # noqa: E402
from misleader.runtime import autocast, seeded  # noqa: E402
from misleader.train import make_optimizer, make_scheduler  # noqa: E402


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


def parse(argv):
    p = add_attack_flags(Parser(description=__doc__), "query budget in millions of images (0.02 = 20,000)")
    p.set_defaults(query_budget=0.02)
    p.add_argument("--pool", default=None, help=f"query pool: {', '.join(DATASET_NAMES)} (default: the victim's "
                                                "dataset, its training split)")
    p.add_argument("--epochs", type=int, default=30, help="epochs over the transfer set")
    p.add_argument("--batch_size", type=int, default=128, help="student batch size")
    p.add_argument("--lr", type=float, default=0.05, help="student SGD learning rate (momentum 0.9, cosine schedule)")
    p.add_argument("--weight_decay", type=float, default=5e-4, help="student SGD weight decay")
    p.add_argument("--augment", choices=["none", "crop"], default="crop",
                   help="augmentation of the pool images while training (crop: random 32x32 crop, 4-pixel padding)")
    p.add_argument("--query_batch", type=int, default=1000, help="images per API call")
    args = finish_parse(p.parse_args(argv))
    args.pool = args.pool or args.dataset
    if args.pool not in DATASET_NAMES:
        p.error(f"--pool must be one of {', '.join(DATASET_NAMES)}, got {args.pool}")
    if args.epochs < 1 or args.batch_size < 1 or args.query_batch < 1:
        p.error("--epochs, --batch_size and --query_batch must be positive")
    return args


def main(argv):
    args = parse(argv)
    budget = int(round(args.query_budget * 1e6))
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
                 resume_step=loop.epoch if resumed else None)
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


if __name__ == "__main__":
    main_wrapper(main)
