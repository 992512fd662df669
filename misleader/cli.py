"""Shared argparse pieces and the wrapper that turns user errors into one line and exit code 2."""

import argparse
import math
import sys

from misleader.data import dataset_info
from misleader.errors import NonFiniteLoss, UserError
from misleader.models import MODEL_NAMES


class DefaultsFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows a flag's default after its help unless there is none to show (None, "", False for a flag without a
    value) or the help already says it in parentheses: '(default 5000; ...) (default: None)' told two stories."""

    def _get_help_string(self, action):
        text = action.help or ""
        if action.default in (None, "", argparse.SUPPRESS) or "(default" in text or text.startswith("not used") or \
                (action.default is False and action.nargs == 0):
            return text
        return super()._get_help_string(action)


class Parser(argparse.ArgumentParser):
    """ArgumentParser whose errors are one line on stderr and exit code 2."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", DefaultsFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message):
        sys.stderr.write(f"{self.prog}: error: {message} (see --help)\n")
        sys.exit(2)

    def parse_known_args(self, args=None, namespace=None):
        """Every number must be finite: argparse's float() takes "nan" and "inf", which pass every range check
        (a comparison with nan is false) and end a run with a traceback or train on nonsense."""
        ns, rest = super().parse_known_args(args, namespace)
        for key, value in vars(ns).items():
            for v in value if isinstance(value, (list, tuple)) else [value]:
                if isinstance(v, float) and not math.isfinite(v):
                    self.error(f"argument --{key}: {v} is not a finite number")
        return ns, rest


def tag_type(text):
    """argparse type of a --tag: it becomes part of file names, so no '/' (or anything but letters, digits, .-_)."""
    if text and not all(c.isalnum() or c in "._-" for c in text):
        raise argparse.ArgumentTypeError(f"{text!r}: a tag is part of file names: use letters, digits, '.', '_' and "
                                         "'-' only")
    return text


def _val_size(text):
    n = int(text)
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1 (every stage chooses its epoch or records the clone on "
                                         f"the validation split), got {n}")
    return n


def add_common(p, seed_default=0):
    """Flags every entry point shares."""
    p.add_argument("--dataset", default="fashionmnist",
                   help="dataset name: mnist, fashionmnist, cifar10, cifar100, svhn, synthetic, synthetic_rgb")
    p.add_argument("--data_root", default="data", help="folder with datasets in torchvision's on-disk layout")
    p.add_argument("--val_size", type=_val_size, default=None,
                   help="images carved from the training set for validation (default 5000; 1000 for synthetic; at "
                        "least 1: every stage chooses or records on it)")
    p.add_argument("--seed", type=int, default=seed_default, help="seed for weights, data order and augmentation")
    p.add_argument("--split_seed", type=int, default=0,
                   help="seed of the train/validation split; keep it fixed across a comparison (teacher, members, "
                        "attacks) so that no model's validation images are another's training images")
    p.add_argument("--device", default="auto", help="auto (CUDA when present, else CPU), cpu, cuda or cuda:N")
    p.add_argument("--amp", default="auto", choices=["auto", "off", "bf16"],
                   help="mixed precision of training steps: auto = bf16 on a CUDA GPU that computes it natively "
                        "(compute capability 8+), else fp32 (always on CPU); bf16 forces it (slow on CPUs without "
                        "AMX); the API's answers and every evaluation stay float32")
    p.add_argument("--log_dir", default="runs", help="TensorBoard root shared by every stage; a run writes to a subfolder")
    p.add_argument("--run_name", default=None, help="subfolder of --log_dir for this run (default: derived from the flags)")
    p.add_argument("--progress", default="auto", choices=["auto", "0", "1"],
                   help="auto: tqdm bars on a terminal, else a plain progress line at most every 30 s; 1: bars "
                        "always; 0: none")
    return p


def mark_unused(p, *dests):
    """Say in --help that this entry point ignores common flags ``dests`` (it takes them so that the shell
    scripts can pass every stage the same ones)."""
    for action in p._actions:
        if action.dest in dests:
            action.help = "not used by this entry point (taken so that every stage accepts the common flags)"


def add_run_flags(p, tag_help, out_help=None):
    """Flags of every training entry point: memory format, output naming, resume."""
    p.add_argument("--channels_last", type=int, default=1, choices=[0, 1], help="1 uses channels_last memory format")
    p.add_argument("--tag", type=tag_type, default=None, help=tag_help)
    if out_help:
        p.add_argument("--out", default=None, help=out_help)
    p.add_argument("--resume", type=int, default=0, choices=[0, 1],
                   help="1 continues from the run's .state.pt (written at epoch ends, every --save_every_min minutes "
                        "and on SIGINT/SIGTERM) and skips a run that already finished")
    p.add_argument("--save_every_min", type=float, default=5.0,
                   help="also save resumable state every N minutes (0: after every step). A state slow to write "
                        "(DisGUIDE's replay buffer: 4 GB at 1M queries) is written, at epoch ends too, no sooner "
                        "than 20 times its last write's duration after it, so saving stays near 5 %% of the run")
    return p


def parse_model_stage(p, argv, out_path, tag_help, out_help, fill=None):
    """Parse ``argv`` for a stage that trains one classifier, --model, into --out (the teacher, the
    misinformation model); ``p`` holds its flags but the run flags, added here. After parsing, ``fill(args, info)``
    sets the stage's own defaults from the dataset's info; --model defaults to the dataset's teacher architecture,
    --out to out_path(dataset, model, tag). --epochs and --batch_size must be positive and --model known: errors
    (exit 2) before any file is touched."""
    add_run_flags(p, tag_help, out_help)
    args = p.parse_args(argv)
    info = dataset_info(args.dataset)
    if fill is not None:
        fill(args, info)
    args.model = args.model or info.teacher_arch
    args.out = args.out or out_path(args.dataset, args.model, args.tag)
    if args.epochs < 1 or args.batch_size < 1:
        p.error("--epochs and --batch_size must be positive")
    if args.model not in MODEL_NAMES:
        p.error(f"unknown model '{args.model}'; valid models: {', '.join(MODEL_NAMES)}")
    return args


def main_wrapper(main):
    """Run main(argv); UserError -> one line + exit 2, NonFiniteLoss -> one line + exit 3."""
    try:
        main(sys.argv[1:])
    except UserError as e:
        sys.stderr.write(f"error: {e}\n")
        sys.exit(2)
    except NonFiniteLoss as e:
        sys.stderr.write(f"error: {e}\n")
        sys.exit(3)
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        sys.exit(130)
