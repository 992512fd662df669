"""Stage 3: build the soft-voting ensemble from trained members and report test accuracies.

Reads Defense/cache/defense/<dataset>-<arch>[-tag].pt for each --members entry and the teacher from
Defense/cache/teacher/, writes Defense/ensemble/<dataset>[-tag].pt and a JSON of accuracies beside it.
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from misleader import checkpoint, paths  # noqa: E402
from misleader.cli import Parser, add_common, main_wrapper, mark_unused, tag_type  # noqa: E402
from misleader.data import dataset_info, load_dataset  # noqa: E402
from misleader.ensemble import SoftVotingEnsemble, built_from, ensemble_payload  # noqa: E402
from misleader.runtime import pick_device  # noqa: E402
from misleader.evaluate import accuracy  # noqa: E402


def parse(argv):
    p = add_common(Parser(description=__doc__))
    mark_unused(p, "amp", "log_dir", "run_name", "progress")
    p.add_argument("--members", nargs="+", required=True,
                   help="member names, each ARCH or ARCH:TAG, read from Defense/cache/defense/<dataset>-ARCH[-TAG].pt")
    p.add_argument("--teacher_model", default=None, help="teacher architecture, for the comparison line")
    p.add_argument("--teacher_tag", type=tag_type, default=None, help="tag of the teacher checkpoint (default: --tag)")
    p.add_argument("--tag", type=tag_type, default=None,
                   help="suffix of the ensemble name: Defense/ensemble/<dataset>-<tag>.pt")
    p.add_argument("--out", default=None, help="output path (default Defense/ensemble/<dataset>[-tag].pt)")
    p.add_argument("--resume", type=int, default=0, choices=[0, 1],
                   help="1 keeps an ensemble (and its JSON) that already holds these members' current weights")
    args = p.parse_args(argv)
    info = dataset_info(args.dataset)
    args.teacher_model = args.teacher_model or info.teacher_arch
    args.teacher_tag = args.teacher_tag if args.teacher_tag is not None else args.tag
    args.out = args.out or paths.ensemble_path(args.dataset, args.tag)
    return args


def main(argv):
    args = parse(argv)
    device = pick_device(args.device)
    info = dataset_info(args.dataset)
    members, archs, sources = [], [], []
    for spec in args.members:
        arch, _, tag = spec.partition(":")
        path = paths.member_path(args.dataset, arch, tag or None)
        model, ck = checkpoint.load_classifier(path, arch, info, "train.sh / Defense/train_defense.py")
        checkpoint.check_split(ck, path, args.split_seed, args.val_size, info)
        members.append(model.to(device).eval())
        archs.append(arch)
        sources.append(path)
    checkpoint.check_writable(args.out)
    json_path = args.out[:-3] + ".json" if args.out.endswith(".pt") else args.out + ".json"
    if args.resume and os.path.isfile(args.out) and os.path.isfile(json_path) and \
            built_from(checkpoint.load(args.out), members, archs, sources):
        print(f"already done: {args.out} holds these members' weights (--resume 1 does not rebuild it)")
        return
    data = load_dataset(args.dataset, args.data_root, args.val_size, args.split_seed, device)
    ens = SoftVotingEnsemble(members, archs)
    report = {"dataset": args.dataset, "members": {}, "teacher": None}
    tpath = paths.teacher_path(args.dataset, args.teacher_model, args.teacher_tag)
    if os.path.isfile(tpath):
        teacher = checkpoint.load_classifier(tpath, args.teacher_model, info, "teacher.sh")[0].to(device)
        report["teacher"] = {"arch": args.teacher_model, "test_acc": accuracy(teacher, data.test, data.normalize)}
    for spec, m in zip(args.members, members):
        report["members"][spec] = {"test_acc": accuracy(m, data.test, data.normalize),
                                   "val_acc": accuracy(m, data.val, data.normalize)}
    report["ensemble"] = {"test_acc": accuracy(ens, data.test, data.normalize),
                          "val_acc": accuracy(ens, data.val, data.normalize)}
    checkpoint.save(args.out, ensemble_payload(ens, args.dataset, info.num_classes, info.in_channels,
                                               report["ensemble"], vars(args), args.seed, sources))
    checkpoint.write_atomic(json_path, lambda f: json.dump(report, f, indent=2), binary=False)
    if report["teacher"]:
        print(f"teacher  {args.teacher_model:<14} test_acc {report['teacher']['test_acc']:.4f}")
    for spec, r in report["members"].items():
        print(f"member   {spec:<14} test_acc {r['test_acc']:.4f}")
    print(f"ensemble {'+'.join(archs):<14} test_acc {report['ensemble']['test_acc']:.4f}")
    print(f"saved {args.out} and {json_path}")


if __name__ == "__main__":
    main_wrapper(main)
