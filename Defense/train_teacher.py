"""Stage 1: train the teacher (the model to protect) and keep its best epoch by validation accuracy."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from misleader import paths  # noqa: E402
from misleader.cli import Parser, add_common, main_wrapper, parse_model_stage  # noqa: E402
from misleader.data import Augment, num_batches  # noqa: E402
from misleader.errors import UserError  # noqa: E402
from misleader.loop import epoch_run, train_model  # noqa: E402
from misleader.runtime import autocast  # noqa: E402
from misleader.evaluate import accuracy  # noqa: E402
from misleader.train import make_optimizer, make_scheduler  # noqa: E402

# the reference defaults per dataset family: (optimizer, lr, weight decay, batch, epochs, schedule, milestones)
DEFAULTS = {
    "none": ("adam", 1e-3, 0.0, 256, 10, "none", ()),
    "crop_flip": ("sgd", 0.1, 5e-4, 128, 200, "multistep", (80, 120)),
    "crop": ("sgd", 0.1, 5e-4, 128, 200, "multistep", (80, 120)),
}


def parse(argv):
    p = add_common(Parser(description=__doc__))
    p.add_argument("--model", "--teacher_model", dest="model", default=None,
                   help="teacher architecture (default: lenet5 for MNIST-like data, resnet34_8x otherwise)")
    p.add_argument("--epochs", type=int, default=None, help="training epochs (default 10 MNIST-like, 200 CIFAR)")
    p.add_argument("--batch_size", type=int, default=None, help="batch size (default 256 MNIST-like, 128 CIFAR)")
    p.add_argument("--optimizer", choices=["adam", "sgd"], default=None, help="default adam MNIST-like, sgd CIFAR")
    p.add_argument("--lr", type=float, default=None, help="learning rate (default 1e-3 adam, 0.1 sgd)")
    p.add_argument("--weight_decay", type=float, default=None, help="default 0 MNIST-like, 5e-4 CIFAR")
    p.add_argument("--scheduler", choices=["none", "multistep", "cosine"], default=None,
                   help="per-step schedule (default none MNIST-like, multistep CIFAR)")
    p.add_argument("--milestones", type=int, nargs="*", default=None,
                   help="epochs at which multistep divides the rate by 10 (default 80 120 CIFAR; none MNIST-like, "
                        "so multistep there needs them)")
    return parse_model_stage(p, argv, paths.teacher_path,
                             "suffix of the output name, e.g. the config name: <dataset>-<arch>-<tag>.pt",
                             "checkpoint path (default Defense/cache/teacher/<dataset>-<arch>[-tag].pt)",
                             fill=family_defaults)


def family_defaults(args, info):
    """The flags left unset take the reference defaults of the dataset's family (DEFAULTS)."""
    opt, lr, wd, bs, ep, sched, ms = DEFAULTS[info.clean_aug]
    args.optimizer = args.optimizer or opt
    args.lr = args.lr if args.lr is not None else (1e-3 if args.optimizer == "adam" else 0.1)
    args.weight_decay = args.weight_decay if args.weight_decay is not None else wd
    args.batch_size = args.batch_size or bs
    args.epochs = args.epochs if args.epochs is not None else ep
    args.scheduler = args.scheduler or sched
    given = args.milestones is not None
    args.milestones = args.milestones if given else list(ms)
    if given and args.scheduler == "multistep" and any(not 1 <= m <= args.epochs for m in args.milestones):
        raise UserError(f"--milestones must be epochs from 1 to --epochs {args.epochs}, got "
                        f"{' '.join(map(str, args.milestones))} (a milestone outside them never divides the rate)")
    if args.scheduler == "multistep" and not args.milestones:
        raise UserError("--scheduler multistep needs --milestones (none given, and this dataset's family has no "
                        "default ones): without them the rate never changes")


def main(argv):
    train_model(parse(argv), "teacher-state", train)


def train(args, run, info, device, amp, fmt, model, data):
    optimizer = make_optimizer(args.optimizer, model.parameters(), args.lr, weight_decay=args.weight_decay)
    steps_per_epoch = num_batches(len(data.train), args.batch_size)
    scheduler = make_scheduler(args.scheduler, optimizer, args.epochs * steps_per_epoch,
                               [m * steps_per_epoch for m in args.milestones])
    aug = Augment(data, seed=args.seed + 1)
    loop, log = epoch_run(run, model, {"model": model, "optimizer": optimizer, "scheduler": scheduler}, aug, args,
                          "teacher")
    print(f"teacher {args.model} on {args.dataset}: {len(data.train)} train / {len(data.val)} val / "
          f"{len(data.test)} test images, device {device}, amp {amp or 'off'}, seed {args.seed}")

    def step(x, y):
        x = aug.clean(x).contiguous(memory_format=fmt)
        with autocast(device, amp):
            out = model(x)
        loss = F.cross_entropy(out.float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        return torch.stack([loss.detach(), (out.argmax(1) == y).sum().float()])

    def end_epoch(epoch, losses, seen, secs):
        val_acc = accuracy(model, data.val, data.normalize)
        log.log(epoch, {"train_loss": losses[:, 0].mean().item(), "train_acc": losses[:, 1].sum().item() / seen,
                        "val_acc": val_acc, "lr": optimizer.param_groups[0]["lr"]},
                extra={"images_per_s": seen / secs})
        return val_acc

    model.train()
    loop.run(data.train, args.batch_size, args.epochs, step, end_epoch, args.progress)
    loop.conclude(args.out, data, log, info, args)

if __name__ == "__main__":
    main_wrapper(main)
