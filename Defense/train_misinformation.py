"""The misinformation model g of the adaptive-misinformation API defense (Kariyappa and Qureshi, CVPR 2020).

g is trained on the training split to put low probability on the true class: it minimises -log(1 - g(x)_y),
computed stably as -(logsumexp_{j != y} z_j - logsumexp_j z_j) from its logits z. The epoch kept is the one
with the lowest mean true-class probability on the validation split. Output: a classifier checkpoint,
Defense/cache/misinfo/<dataset>-<arch>[-tag].pt, for --api_defense adaptive_misinformation:...,model=PATH.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from misleader import checkpoint, paths  # noqa: E402
from misleader.cli import Parser, add_common, main_wrapper, parse_model_stage  # noqa: E402
from misleader.data import Augment  # noqa: E402
from misleader.evaluate import true_class_prob  # noqa: E402
from misleader.loop import epoch_run, train_model  # noqa: E402
from misleader.losses import misinformation_loss  # noqa: E402
from misleader.runtime import autocast  # noqa: E402
from misleader.train import make_optimizer  # noqa: E402


def parse(argv):
    p = add_common(Parser(description=__doc__))
    p.add_argument("--model", default=None, help="architecture of g (default: the dataset's teacher architecture)")
    p.add_argument("--epochs", type=int, default=5, help="training epochs")
    p.add_argument("--batch_size", type=int, default=256, help="batch size")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (constant)")
    p.add_argument("--weight_decay", type=float, default=0.0, help="Adam weight decay")
    return parse_model_stage(p, argv, paths.misinfo_path, "suffix of the output name: <dataset>-<arch>-<tag>.pt",
                             "checkpoint path (default Defense/cache/misinfo/<dataset>-<arch>[-tag].pt)")


def main(argv):
    train_model(parse(argv), "misinfo-state", train)


def train(args, run, info, device, amp, fmt, model, data):
    optimizer = make_optimizer("adam", model.parameters(), args.lr, weight_decay=args.weight_decay)
    aug = Augment(data, seed=args.seed + 1)
    loop, log = epoch_run(run, model, {"model": model, "optimizer": optimizer}, aug, args, "misinfo")
    print(f"misinformation model {args.model} on {args.dataset}: {len(data.train)} train images, device {device}, "
          f"seed {args.seed}")

    def step(x, y):
        with autocast(device, amp):
            out = model(aug.clean(x).contiguous(memory_format=fmt))
        loss = misinformation_loss(out, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return torch.stack([loss.detach(), (out.argmax(1) == y).sum().float()])

    def end_epoch(epoch, losses, seen, secs):
        val_p, val_acc = true_class_prob(model, data.val, data.normalize)
        log.log(epoch, {"train_loss": losses[:, 0].mean().item(), "train_acc": losses[:, 1].sum().item() / seen,
                        "val_true_prob": val_p, "val_acc": val_acc}, extra={"images_per_s": seen / secs})
        return 1.0 - val_p  # the loop keeps the highest: the epoch with the least probability on the truth

    model.train()
    loop.run(data.train, args.batch_size, args.epochs, step, end_epoch, args.progress)
    test_p, test_acc = true_class_prob(model, data.test, data.normalize)
    metrics = {"val_true_prob": 1.0 - loop.best_acc, "test_true_prob": test_p, "test_acc": test_acc,
               "best_epoch": loop.best_epoch}
    checkpoint.save(args.out, checkpoint.classifier_payload(model, args.model, info.name, info.num_classes,
                                                            info.in_channels, metrics, vars(args), args.seed))
    log.scalars(args.epochs, {"test_true_prob": test_p, "test_acc": test_acc})
    log.close()
    run.close()
    print(f"saved {args.out} (best epoch {loop.best_epoch}): true-class probability val {metrics['val_true_prob']:.4f}"
          f" test {test_p:.4f}, test acc {test_acc:.4f}")


if __name__ == "__main__":
    main_wrapper(main)
