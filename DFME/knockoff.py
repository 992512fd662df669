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

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from misleader.attack import add_attack_flags, finish_parse  # noqa: E402
from misleader.cli import Parser, main_wrapper  # noqa: E402
from misleader.data import DATASET_NAMES  # noqa: E402
from misleader.knockoff import run_knockoff  # noqa: E402


def parse(argv):
    p = add_attack_flags(Parser(description=__doc__), "query budget in millions of images (0.02 = 20,000)")
    p.set_defaults(query_budget=0.02)
    p.add_argument("--pool", default=None, help=f"query pool: {', '.join(DATASET_NAMES)} (default: the victim's "
                                                "dataset, its training split)")
    p.add_argument("--epochs", type=int, default=30, help="epochs over the transfer set")
    p.add_argument("--batch_size", type=int, default=128, help="student batch size")
    p.add_argument("--lr", "--lr_S", type=float, default=0.05,
                   help="student SGD learning rate (momentum 0.9, cosine schedule); --lr_S is DFME's name for it")
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
    run_knockoff(parse(argv))


if __name__ == "__main__":
    main_wrapper(main)
