"""Stage 2: distil the teacher into one defense member trained against a simulated attacker (MISLEADER).

The member minimises alpha*T^2*KL(teacher/T || member/T) + (1-alpha)*CE on clean batches minus
lambda * KL(member || surrogate) on attacker-proxy batches; the surrogate imitates the member.
Best epoch by validation accuracy of the member. Output: Defense/cache/defense/<dataset>-<arch>.pt.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from misleader import checkpoint, paths  # noqa: E402
from misleader.cli import Parser, add_common, add_run_flags, main_wrapper, tag_type  # noqa: E402
from misleader.data import Augment, dataset_info, load_dataset, num_batches  # noqa: E402
from misleader.loop import RunState, epoch_run  # noqa: E402
from misleader.defense import DefenseStep  # noqa: E402
from misleader.models import create_model  # noqa: E402
from misleader.runtime import setup  # noqa: E402
from misleader.evaluate import accuracy  # noqa: E402
from misleader.train import check_finite, make_optimizer, make_scheduler  # noqa: E402


def parse(argv):
    p = add_common(Parser(description=__doc__))
    p.add_argument("--teacher_model", default=None, help="teacher architecture (default lenet5 MNIST-like, resnet34_8x CIFAR)")
    p.add_argument("--teacher_tag", type=tag_type, default=None, help="tag of the teacher checkpoint (default: --tag)")
    p.add_argument("--teacher_path", default=None,
                   help="teacher checkpoint (default Defense/cache/teacher/<dataset>-<arch>[-teacher_tag].pt)")
    p.add_argument("--defense_model", default="lenet5", help="architecture of this member")
    p.add_argument("--attacker_model", default=None, help="architecture of the simulated attacker (default: as the member)")
    p.add_argument("--lambda_", type=float, default=0.5, help="weight of the attack term KL(member || surrogate)")
    p.add_argument("--T", type=float, default=2.0, help="distillation temperature")
    p.add_argument("--alpha", type=float, default=0.3, help="weight of the distillation KL against cross-entropy")
    p.add_argument("--epochs", type=int, default=10, help="training epochs (set explicitly; no budget-derived count)")
    p.add_argument("--batch_size", type=int, default=256, help="clean batch size (each proxy batch has the same size)")
    p.add_argument("--lr_defense", type=float, default=0.1, help="SGD learning rate of the member (cosine schedule)")
    p.add_argument("--lr_attacker", type=float, default=0.01, help="SGD learning rate of the surrogate (cosine schedule)")
    p.add_argument("--momentum", type=float, default=0.9, help="SGD momentum of both")
    p.add_argument("--weight_decay", type=float, default=5e-4, help="SGD weight decay of both")
    p.add_argument("--a_iter", type=int, default=1, help="surrogate optimizer steps per member step, each on a fresh proxy batch")
    add_run_flags(p, "suffix of the output name, to keep several members of one architecture",
                  "output path (default Defense/cache/defense/<dataset>-<arch>[-tag].pt)")
    args = p.parse_args(argv)
    info = dataset_info(args.dataset)
    args.teacher_model = args.teacher_model or info.teacher_arch
    args.attacker_model = args.attacker_model or args.defense_model
    args.teacher_tag = args.teacher_tag if args.teacher_tag is not None else args.tag
    args.teacher_path = args.teacher_path or paths.teacher_path(args.dataset, args.teacher_model, args.teacher_tag)
    args.out = args.out or paths.member_path(args.dataset, args.defense_model, args.tag)
    if args.epochs < 1 or args.batch_size < 1 or args.a_iter < 0:
        p.error("--epochs and --batch_size must be positive and --a_iter non-negative")
    if args.lambda_ < 0 or args.T <= 0 or not 0 <= args.alpha <= 1:
        p.error("need --lambda_ >= 0, --T > 0 and 0 <= --alpha <= 1")
    return args


def main(argv):
    args = parse(argv)
    device, amp, fmt = setup(args)
    info = dataset_info(args.dataset)
    member = create_model(args.defense_model, info.num_classes, info.in_channels).to(device, memory_format=fmt)
    surrogate = create_model(args.attacker_model, info.num_classes, info.in_channels).to(device, memory_format=fmt)
    teacher, tck = checkpoint.load_classifier(args.teacher_path, args.teacher_model, info, "teacher.sh / Defense/train_teacher.py")
    checkpoint.check_split(tck, args.teacher_path, args.split_seed, args.val_size, info)
    teacher = teacher.to(device, memory_format=fmt).eval()
    run = RunState(args.out, "defense-state", args.defense_model, args)
    if run.already_done():
        return
    data = load_dataset(args.dataset, args.data_root, args.val_size, args.split_seed, device)

    steps = num_batches(len(data.train), args.batch_size)
    opt_m = make_optimizer("sgd", member.parameters(), args.lr_defense, args.momentum, args.weight_decay)
    opt_s = make_optimizer("sgd", surrogate.parameters(), args.lr_attacker, args.momentum, args.weight_decay)
    sch_m = make_scheduler("cosine", opt_m, args.epochs * steps)
    sch_s = make_scheduler("cosine", opt_s, args.epochs * steps)
    aug = Augment(data, seed=args.seed + 1)
    trainer = DefenseStep(member, surrogate, teacher, aug, opt_m, opt_s, args.T, args.alpha, args.lambda_,
                          args.a_iter, device, amp, fmt)
    loop, log = epoch_run(run, member, {"member": member, "surrogate": surrogate, "opt_m": opt_m, "opt_s": opt_s,
                                        "sch_m": sch_m, "sch_s": sch_s}, aug, args, "defense")
    print(f"member {args.defense_model} (surrogate {args.attacker_model}, teacher {args.teacher_model}) on "
          f"{args.dataset}: lambda {args.lambda_} T {args.T} alpha {args.alpha} a_iter {args.a_iter}, "
          f"device {device}, amp {amp or 'off'}, seed {args.seed}")

    def step(x, y):
        losses = trainer.step(x, y)
        sch_m.step()
        sch_s.step()
        return losses

    def end_epoch(epoch, losses, seen, secs):
        check_finite(losses[:, 3], (epoch - 1) * steps, "surrogate loss")
        val_acc = accuracy(member, data.val, data.normalize)
        sur_acc = accuracy(surrogate, data.val, data.normalize)
        agree = trainer.proxy_agreement(data.val.x, seed=args.seed + 7)  # fixed augmentation: epochs comparable
        mean = losses.mean(0).tolist()
        images = seen * (2 + args.a_iter)  # distinct images: clean + a proxy batch per surrogate step + one for the member step
        log.log(epoch, {"loss": mean[0], "kd_loss": mean[1], "attack_kl": mean[2], "surrogate_loss": mean[3],
                        "val_acc": val_acc, "surrogate_val_acc": sur_acc, "proxy_agreement": agree,
                        "lr": opt_m.param_groups[0]["lr"]}, extra={"images_per_s": images / secs})
        return val_acc

    loop.run(data.train, args.batch_size, args.epochs, step, end_epoch, args.progress)
    loop.conclude(args.out, data, log, info, args)

if __name__ == "__main__":
    main_wrapper(main)
