"""Stage 4: DFME (data-free model extraction) against a victim behind the counted black-box API.

The victim is the MISLEADER ensemble, the bare teacher, any checkpoint, or a model of your own. It answers
probabilities; the attacker recovers logits as log p minus its mean. With --victim_output label it answers
only the top-1 class: the student then imitates one-hot answers and the zeroth-order estimate carries almost
no signal (a small step rarely changes the label); it still runs, to measure that. The attack stops when the
query budget cannot pay for another iteration; the queries actually used are reported.
One row per run is appended to results/results.csv.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from misleader.attack import AttackStage, add_attack_flags, finish_parse  # noqa: E402
from misleader.cli import Parser, main_wrapper  # noqa: E402
from misleader.dfme import MAZE_PRESET, DFME, DFMEConfig, attacker_models, settings_text  # noqa: E402
from misleader.errors import NonFiniteLoss  # noqa: E402
from misleader.progress import progress_bar  # noqa: E402
from misleader.runlog import RunLog  # noqa: E402

# flag -> (type, help); defaults come from DFMEConfig (and from MAZE_PRESET with --MAZE 1)
FLAGS = {"batch_size": (int, "generator / student batch size"), "epoch_itrs": (int, "iterations per epoch"),
         "g_iter": (int, "generator steps per iteration"), "d_iter": (int, "student steps per iteration"),
         "lr_S": (float, "student SGD learning rate"), "lr_G": (float, "generator learning rate"),
         "nz": (int, "generator latent size"), "grad_m": (int, "random directions per zeroth-order estimate"),
         "grad_epsilon": (float, "finite-difference step"), "scale": (float, "multistep factor"),
         "momentum": (float, "SGD momentum of the student (and of an SGD generator)"),
         "weight_decay": (float, "student SGD weight decay (and the generator's with --g_optimizer sgd)")}


def parse(argv):
    d = DFMEConfig()
    p = add_attack_flags(Parser(description=__doc__), "query budget in millions")
    p.set_defaults(query_budget=d.query_budget / 1e6)
    for name, (kind, text) in FLAGS.items():
        p.add_argument(f"--{name}", type=kind, default=getattr(d, name), help=text)
    p.add_argument("--ngf", type=int, default=64, help="generator width (DFME's is 64; smaller is faster on a CPU)")
    p.add_argument("--g_optimizer", choices=["adam", "sgd"], default=d.g_optimizer, help="generator optimizer")
    p.add_argument("--loss", choices=["l1", "kl"], default=d.loss, help="clone loss on recovered logits")
    p.add_argument("--scheduler", choices=["multistep", "cosine", "none"], default=d.scheduler,
                   help="schedule of both learning rates, set at the start of each epoch as DFME does")
    p.add_argument("--steps", type=float, nargs="*", default=list(d.steps),
                   help="multistep milestones as fractions of the epochs: epoch e trains at lr * scale^(number of "
                        "milestones int(step * epochs) <= e)")
    p.add_argument("--MAZE", type=int, default=0, choices=[0, 1],
                   help="1 makes the MAZE preset the defaults: --loss kl --batch_size 128 --grad_m 10 --lr_G 1e-4 "
                        "--g_optimizer sgd --scheduler cosine; flags given explicitly still win")
    p.add_argument("--probs_as_logits", type=int, default=0, choices=[0, 1],
                   help="1 reproduces the earlier public evaluation, which fed the victim's probabilities to "
                        "log_softmax as if they were logits. It flattens the targets and weakens the attack; it "
                        "exists only to measure that handicap. Off by default")
    p.add_argument("--query_range", choices=["tanh", "data"], default=d.query_range,
                   help="what the generator's tanh output in [-1, 1] means to the victim. tanh (DFME): an already "
                        "normalized image (on Fashion-MNIST only raw pixels -0.07..0.64). data: raw pixels [0, 1], "
                        "normalized like the victim's data, so queries cover exactly the valid images")
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--MAZE", type=int, default=0)
    if pre.parse_known_args(argv)[0].MAZE == 1:
        p.set_defaults(**MAZE_PRESET)  # defaults only: what the user typed overrides them
    return finish_parse(p.parse_args(argv))


def make_config(args):
    names = [*FLAGS, "g_optimizer", "loss", "scheduler", "query_range"]
    cfg = DFMEConfig(query_budget=int(round(args.query_budget * 1e6)), steps=tuple(args.steps),
                     probs_as_logits=bool(args.probs_as_logits), **{k: getattr(args, k) for k in names})
    cfg.validate()
    return cfg


def main(argv):
    args = parse(argv)
    cfg = make_config(args)
    stage = AttackStage(args, "maze" if args.MAZE else "dfme", cfg.query_budget)
    if stage.already_recorded():
        return
    info, dev, fmt = stage.info, stage.device, stage.fmt
    student, generator = attacker_models(args.student_model, info.num_classes, info.in_channels, cfg.nz, args.ngf,
                                         args.seed)
    student, generator = student.to(dev, memory_format=fmt), generator.to(dev, memory_format=fmt)
    attack = DFME(cfg, stage.victim, student, generator, info.num_classes, dev, stage.amp, fmt, seed=args.seed,
                  mean=info.mean, std=info.std)
    st = stage.run.load()
    if st is not None:
        attack.load_state_dict(st["attack"])
        print(f"resumed from {stage.run.file}: epoch {attack.epoch}, iteration {attack.itr}, "
              f"{stage.victim.used} queries used")
    log = RunLog(args.log_dir, "dfme", stage.run_name, {**vars(args), "epochs": cfg.epochs,
                                                         "cost_per_iteration": cfg.cost_per_iteration},
                 resume_step=attack.epoch if st is not None else None, tb_resume_step=stage.victim.used)
    print(f"DFME{' (MAZE preset)' if args.MAZE else ''} on {stage.label} ({stage.victim_path}, test acc "
          f"{stage.victim_acc:.4f}): student {args.student_model}, budget {cfg.query_budget} queries, "
          f"{cfg.cost_per_iteration} per iteration, {cfg.epochs} epochs, device {dev}, amp {stage.amp or 'off'}, "
          f"seed {args.seed}", flush=True)

    def state():
        return {"attack": attack.state_dict()}

    def on_epoch(a, stats):
        acc, fid, val_acc = stage.evaluate(student)  # val: to choose attack settings without the test set
        a.best_acc = max(a.best_acc, acc)
        log.log(a.epoch, {"clone_acc": acc, "clone_val_acc": val_acc, "fidelity": fid,
                          "queries_used": stats["queries_used"], "loss_S": stats["loss_S"],
                          "loss_G": stats["loss_G"], "lr_S": stats["lr_S"], "lr_G": stats["lr_G"]},
                console=False, extra={"queries_per_s": stats["queries_per_s"]}, tb_step=stats["queries_used"])
        bar.write(f"[epoch {a.epoch}/{cfg.epochs}] clone_acc {acc:.4f} best {a.best_acc:.4f} val {val_acc:.4f} "
                  f"fidelity {fid:.4f} queries {stats['queries_used']} loss_S {stats['loss_S']:.4f} "
                  f"loss_G {stats['loss_G']:.4f} lr_S {stats['lr_S']:.4g} ({stats['queries_per_s']:.0f} queries/s)")
        sys.stdout.flush()  # a log file being followed sees each epoch as it ends
        if not torch.isfinite(torch.tensor([stats["loss_S"], stats["loss_G"]])).all():
            raise NonFiniteLoss(f"non-finite DFME loss in epoch {a.epoch}; the last good state is {stage.run.file}")
        stage.run.save(state())

    bar = progress_bar(args.progress, cfg.query_budget, stage.victim.used, "queries", "q", file=sys.stdout,
                       unit_scale=True)
    attack.run(on_epoch=on_epoch, on_iteration=lambda a: stage.run.boundary(state), progress=bar)
    bar.close()
    stage.finish(student, attack.best_acc, attack.wall_s(), log.dir,
                 settings_text(cfg, ngf=args.ngf, victim_output=args.victim_output),
                 {"generator": generator.state_dict()})
    log.close()


if __name__ == "__main__":
    main_wrapper(main)
