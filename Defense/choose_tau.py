"""Choose the adaptive-misinformation threshold tau of a served model on the validation split.

For each utility cost in --cost (points of top-1 accuracy), raises tau from 0 in steps of 0.001 and prints the
last tau before the served answers on the validation split lose more than that much accuracy against the model's
raw answers, and the --api_defense spec that serves it. The test set chooses nothing; an attack run then
measures the served test accuracy itself (results column served_acc). Needs the misinformation model
(Defense/train_misinformation.py). Both models run in float32, as the API serves them, whatever --amp says.
With --out, the choice is also written to a JSON file (the victim, the split, and per cost: tau, served accuracy,
share of answers mostly misinformation and the spec), so the thresholds a config uses can be traced to a file.
  python Defense/choose_tau.py --dataset fashionmnist --victim teacher --cost 0.5 1 2 --out runs/tau.json
"""

import json
import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from misleader import api_defense, checkpoint, paths  # noqa: E402
from misleader.cli import Parser, add_common, main_wrapper, mark_unused, tag_type  # noqa: E402
from misleader.data import dataset_info, load_dataset  # noqa: E402
from misleader.errors import UserError  # noqa: E402
from misleader.evaluate import predict  # noqa: E402
from misleader.runtime import setup  # noqa: E402


def parse(argv):
    p = add_common(Parser(description=__doc__))
    mark_unused(p, "seed", "amp", "log_dir", "run_name", "progress")
    p.add_argument("--victim", default="ensemble", help="the served model: ensemble, teacher or a checkpoint path "
                                                        "(as the attacks' --victim)")
    p.add_argument("--ensemble_tag", type=tag_type, default=None,
                   help="with --victim ensemble: Defense/ensemble/<dataset>-<tag>.pt")
    p.add_argument("--teacher_tag", type=tag_type, default=None, help="with --victim teacher: the teacher's tag")
    p.add_argument("--teacher_model", default=None, help="teacher architecture (default: the dataset's)")
    p.add_argument("--misinfo", default=None, help="the misinformation model (default Defense/cache/misinfo/"
                                                   "<dataset>-<teacher architecture>.pt)")
    p.add_argument("--nu", type=float, default=1000.0, help="steepness of the switch, as in the spec")
    p.add_argument("--cost", type=float, nargs="+", default=[0.5, 1.0, 2.0],
                   help="utility costs on the validation split, in points of top-1 accuracy")
    p.add_argument("--out", default=None, help="also write the thresholds to this JSON file (replaced atomically)")
    args = p.parse_args(argv)
    args.channels_last = 0
    if not (math.isfinite(args.nu) and args.nu > 0) or not all(0 <= c <= 100 for c in args.cost):
        p.error("--nu must be a positive number and every --cost from 0 to 100")
    if args.out and os.path.isdir(args.out):
        p.error(f"--out {args.out} is a folder; name a file, e.g. {os.path.join(args.out, 'tau.json')}")
    info = dataset_info(args.dataset)
    args.teacher_model = args.teacher_model or info.teacher_arch
    args.misinfo = args.misinfo or paths.misinfo_path(args.dataset, args.teacher_model)
    return args, info


def main(argv):
    args, info = parse(argv)
    if not os.path.isfile(args.misinfo):
        raise UserError(f"--misinfo {args.misinfo}: no such file (train it with Defense/train_misinformation.py, "
                        f"or train.sh with MISINFO_ARCH set in the config)")
    device, _, _ = setup(args)  # p and g in float32 whatever --amp: as the API serves them
    model, label, _ = checkpoint.load_victim(args.victim, info, args.teacher_model, args.ensemble_tag,
                                             args.teacher_tag, split=(args.split_seed, args.val_size))
    defense = api_defense.build(f"adaptive_misinformation:tau=0,nu={args.nu},model={args.misinfo}", info)
    data = load_dataset(args.dataset, args.data_root, args.val_size, args.split_seed, device)
    x, y = data.normalize(data.val.x), data.val.y
    p = predict(model.to(device).eval(), x)
    g = predict(defense.model.to(device).eval(), x)
    raw = (p.argmax(1) == y).float().mean().item()
    print(f"{label} on the validation split of {args.dataset} ({len(y)} images): raw top-1 {100 * raw:.2f} %; "
          f"misinformation model {args.misinfo}, nu {args.nu:g}")
    chosen = []
    for cost, (tau, acc) in zip(args.cost, api_defense.misinformation_thresholds(p, g, y, args.nu,
                                                                                [c / 100 for c in args.cost])):
        if tau is None:
            print(f"cost <= {cost:g} pts: no tau qualifies")
            chosen.append({"cost_pts": cost, "tau": None})
            continue
        share = (p.max(1).values < tau).float().mean().item()
        spec = api_defense.canonical(f"adaptive_misinformation:tau={tau},nu={args.nu},model={args.misinfo}")
        print(f"cost <= {cost:g} pts: tau {tau:g}, served top-1 {100 * acc:.2f} %, {100 * share:.1f} % of the "
              f"answers mostly misinformation | --api_defense {spec}")
        chosen.append({"cost_pts": cost, "tau": tau, "served_val_acc": round(acc, 6),
                       "misinformed_share": round(share, 6), "api_defense": spec})
    if args.out:
        record = {"victim": label, "dataset": args.dataset, "split_seed": args.split_seed, "val_images": len(y),
                  "raw_val_acc": round(raw, 6), "misinfo": args.misinfo, "nu": args.nu, "thresholds": chosen}
        checkpoint.write_atomic(args.out, lambda f: json.dump(record, f, indent=2), binary=False)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main_wrapper(main)
