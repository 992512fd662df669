"""Stage 4: DFME (data-free model extraction) against a victim behind the counted black-box API.

The victim is the MISLEADER ensemble, the bare teacher, any checkpoint, or a model of your own. It answers
probabilities; the attacker recovers logits as log p minus its mean. With --victim_output label it answers
only the top-1 class: the student then imitates one-hot answers and the zeroth-order estimate carries almost
no signal (a small step rarely changes the label); it still runs, to measure that. The attack stops when the
query budget cannot pay for another iteration; the queries actually used are reported.
One row per run goes to results/results.csv (a rerun replaces its earlier row).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from misleader.attack import finish_parse  # noqa: E402
from misleader.cli import Parser, main_wrapper  # noqa: E402
from misleader.dfme import MAZE_PRESET, DFME, DFMEConfig, attacker_models  # noqa: E402
from misleader.generator_attack import (attacker_mirror, config_from_flags, generator_parser,  # noqa: E402
                                       run_generator_attack)

# DFME's own flags, name -> (type or choices, help[, default]); those it shares with DisGUIDE, in DFME's words, are
# misleader.generator_attack.FLAGS. Defaults come from DFMEConfig (and from MAZE_PRESET with --MAZE 1)
FLAGS = {"grad_m": (int, "random directions per zeroth-order estimate"),
         "grad_epsilon": (float, "finite-difference step"), "g_optimizer": (["adam", "sgd"], "generator optimizer"),
         "MAZE": ([0, 1], "1 makes the MAZE preset the defaults: --loss kl --batch_size 128 --grad_m 10 --lr_G 1e-4 "
                          "--g_optimizer sgd --scheduler cosine; flags given explicitly still win", 0),
         "probs_as_logits": ([0, 1], "1 reproduces the earlier public evaluation, which fed the victim's "
                                     "probabilities to log_softmax as if they were logits. It flattens the targets "
                                     "and weakens the attack; it exists only to measure that handicap. Off by "
                                     "default", 0)}


def parse(argv):
    p = generator_parser(__doc__, DFMEConfig(), FLAGS)
    pre = Parser(prog=p.prog, add_help=False)  # a bad --MAZE value: one line, exit 2, like every other flag
    pre.add_argument("--MAZE", type=int, default=0)
    if pre.parse_known_args(argv)[0].MAZE == 1:
        p.set_defaults(**MAZE_PRESET)  # defaults only: what the user typed overrides them
    return finish_parse(p.parse_args(argv))


def make_config(args):
    return config_from_flags(DFMEConfig, args)


def build(cfg, stage):
    """DFME's student and generator at --seed (the same weights for every victim), and the attack."""
    args, info = stage.args, stage.info
    student, generator = (m.to(stage.device, memory_format=stage.fmt) for m in attacker_models(
        args.student_model, info.num_classes, info.in_channels, cfg.nz, args.ngf, args.seed))
    attack = DFME(cfg, stage.victim, student, generator, info.num_classes, stage.device, stage.amp, stage.fmt,
                  seed=args.seed, mean=info.mean, std=info.std, mirror=attacker_mirror(cfg, args))
    return attack, f"student {args.student_model}", {}


def main(argv):
    args = parse(argv)
    run_generator_attack(args, make_config(args), "maze" if args.MAZE else "dfme", build, "dfme",
                         f"DFME{' (MAZE preset)' if args.MAZE else ''}")


if __name__ == "__main__":
    main_wrapper(main)
