"""DisGUIDE (Rosenthal et al., AAAI 2023): data-free extraction by two clones and a generator guided by their
disagreement, against a victim behind the counted black-box API.

Each iteration: g_iter generator steps through the two clones alone (the generator maximises their disagreement,
with a class-diversity term; no victim query, no zeroth-order estimate), then d_iter clone steps (a fresh generator
batch, sampled with the generator in train mode as DFME's (the published code: eval mode), is asked once; both
clones learn its answers plus --replay_batch earlier queries and answers from a replay buffer), then --rep_iter
clone steps on replayed queries alone. Queries per iteration: batch_size * d_iter; the attack stops when the budget
cannot pay for another. The clone reported (results row, checkpoint, clone_acc) is the FIRST clone: one
--student_model like DFME's student, starting from the weights DFME's student starts from at the same seed (the
generator too). The second clone's test accuracy is logged each epoch (clone2_acc).

Settings. The paper's method: two clones, a generator trained on their disagreement only, a class-diversity
term, experience replay. The defaults are DFME's, which DisGUIDE builds on: DFME's generator, Adam 1e-4; clone
SGD 0.1, momentum 0.9, weight decay 5e-4; batch 256; 1 generator and 5 clone steps per iteration (each on 256
fresh and --replay_batch 256 replayed queries); DFME's multistep schedule; l1 on recovered logits (--loss,
--target and --logit_floor as in DFME/dfme.py); replay of the last --replay_size 100,000 queries. The authors'
published CIFAR-10 script differs: clone SGD 0.03, milestones 0.4 0.8, 150 iterations per epoch, per iteration
1 generator step, 1 clone step on the fresh batch and 3 on replayed batches alone (--d_iter 1 --rep_iter 3
--replay_batch 0), the last 1,000,000 queries kept, diversity weight 0.2 on a disagreement measured as the
clones' mean per-class standard deviation (this repository's L1 distance divided by C*sqrt(2): about 2.8 here
with 10 classes), and it reports the clones' averaged softmax, where this repository reports the first clone;
its learning rate drops one epoch after a milestone's epoch, this repository's (DFME's) at its start.
Chosen here: disagreement = L1 distance between the clones' softmax outputs; diversity = negative entropy of the
batch's mean predicted class distribution, weight --div_weight 1. Adapted to 32x32 grayscale data: 1-channel
generator images, clones of --student_model (lenet5) instead of the paper's CIFAR ResNets, and this
repository's budgets rather than the paper's CIFAR ones.
One row per run (attack disguide) goes to results/results.csv (a rerun replaces its earlier row).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from misleader.attack import finish_parse  # noqa: E402
from misleader.cli import main_wrapper  # noqa: E402
from misleader.disguide import DisGUIDE, DisGUIDEConfig, disguide_models  # noqa: E402
from misleader.generator_attack import (attacker_mirror, config_from_flags, generator_parser,  # noqa: E402
                                       run_generator_attack)

# DisGUIDE's own flags: name -> (type, help), defaults from DisGUIDEConfig; the flags it shares with DFME
# (misleader.generator_attack.FLAGS) are DFME's, with the help in HELP
FLAGS = {"div_weight": (float, "weight of the class-diversity term in the generator's loss (chosen here)"),
         "replay_size": (int, "queries kept for experience replay, the last ones (chosen here; 0: no replay)"),
         "replay_batch": (int, "replayed queries added to each clone step's fresh batch (chosen here)"),
         "rep_iter": (int, "clone steps per iteration on --batch_size replayed queries alone, after the --d_iter "
                           "fresh ones (the published code's schedule: --d_iter 1 --rep_iter 3 --replay_batch 0); "
                           "0: none")}
HELP = {"batch_size": "fresh generator batch per step (queries per clone step)",
        "g_iter": "generator steps per iteration (no queries)", "d_iter": "clone steps per iteration",
        "lr_S": "clone SGD learning rate", "lr_G": "generator Adam learning rate", "momentum": "clone SGD momentum",
        "weight_decay": "clone SGD weight decay", "loss": "clone loss, as DFME/dfme.py's",
        "target": "what the clones match: recovered logits, the victim's probabilities or the top-1 label of each "
                  "answer (DFME/dfme.py)",
        "logit_floor": "probabilities below this are raised to it before log p (DFME/dfme.py); 0: off",
        "steps": "multistep milestones as fractions of the epochs (as DFME/dfme.py)",
        "query_range": "what the generator's tanh output means to the victim (as DFME/dfme.py)"}


def parse(argv):
    return finish_parse(generator_parser(__doc__, DisGUIDEConfig(), FLAGS, HELP).parse_args(argv))


def make_config(args):
    return config_from_flags(DisGUIDEConfig, args)


def build(cfg, stage):
    """The two clones and the generator at --seed (the first clone and the generator start where DFME's student
    and generator do), and the attack; the second clone is logged each epoch and saved."""
    args, info = stage.args, stage.info
    clone, generator, clone2 = (m.to(stage.device, memory_format=stage.fmt) for m in disguide_models(
        args.student_model, info.num_classes, info.in_channels, cfg.nz, args.ngf, args.seed))
    attack = DisGUIDE(cfg, stage.victim, (clone, clone2), generator, info.num_classes, stage.device, stage.amp,
                      stage.fmt, seed=args.seed, mean=info.mean, std=info.std, mirror=attacker_mirror(cfg, args))
    return attack, f"two {args.student_model} clones (the first reported)", {"clone2": clone2}


def main(argv):
    args = parse(argv)
    run_generator_attack(args, make_config(args), "disguide", build, "disguide", "DisGUIDE", "disguide-state")


if __name__ == "__main__":
    main_wrapper(main)
