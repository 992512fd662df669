"""What every attack entry point shares: its flags, the victim behind the counted API, the clone's evaluation
(test accuracy, fidelity, validation accuracy), the attack checkpoint and the results row.

The attacker's code only ever receives ``AttackStage.victim`` (a BlackBox). Everything else here belongs to
the evaluator: it uses the victim model directly and costs no budget.
"""

import argparse
import datetime
import os

import torch.nn.functional as F

from misleader import api_defense, checkpoint, paths
from misleader.cli import add_common, add_run_flags, tag_type
from misleader.data import dataset_info, load_dataset
from misleader.errors import UserError
from misleader.loop import RunState
from misleader.results import check as check_results, has_row, record_row
from misleader.runlog import git_commit
from misleader.runtime import setup
from misleader.evaluate import accuracy, clone_metrics, predict
from misleader.victim import BlackBox


def add_attack_flags(p, budget_help):
    """Flags of every attack: the victim, its API, the budget, the clone, where results go."""
    add_common(p)
    p.add_argument("--victim", default="ensemble",
                   help="ensemble (Defense/ensemble/<dataset>[-tag].pt), teacher (Defense/cache/teacher/<dataset>-"
                        "<teacher_model>.pt), a checkpoint path, or your own model as FILE.py:FUNCTION (a function "
                        "returning an nn.Module that maps normalised 32x32 images to logits)")
    p.add_argument("--victim_weights", default=None,
                   help="with --victim FILE.py:FUNCTION: a plain state_dict file for the model (weights_only load)")
    p.add_argument("--ensemble_tag", type=tag_type, default=None,
                   help="with --victim ensemble: read Defense/ensemble/<dataset>-<tag>.pt")
    p.add_argument("--teacher_tag", type=tag_type, default=None,
                   help="with --victim teacher: read Defense/cache/teacher/<dataset>-<teacher_model>-<tag>.pt")
    p.add_argument("--teacher_model", default=None, help="teacher architecture for --victim teacher (default lenet5 "
                                                          "MNIST-like, resnet34_8x CIFAR)")
    p.add_argument("--victim_output", default="probs", choices=["probs", "label"],
                   help="what the victim API returns: probabilities (what a real API gives) or only the top-1 label "
                        "(the attacker then trains on one-hot answers)")
    p.add_argument("--api_defense", default="none",
                   help="an output defense of the API, applied to the victim's probabilities before the answer "
                        f"(and before the label): {api_defense.USAGE}. See misleader/api_defense.py")
    p.add_argument("--query_budget", type=float, help=budget_help)
    p.add_argument("--student_model", default="lenet5", help="clone architecture")
    p.add_argument("--label", default=None, help="name of this victim in results and reports (default: the victim)")
    p.add_argument("--setting", default="", type=_setting_name,
                   help="short name of this attack setting (letters, digits, '.', '_'), e.g. a grid point: written "
                        "to the results' setting column and appended to the checkpoint name, so settings of one "
                        "victim keep their own files; compare.sh picks each victim's strongest by it")
    p.add_argument("--config", default="", help="config name recorded in results.csv (set by the shell scripts)")
    p.add_argument("--results", default=paths.RESULTS_CSV,
                   help="CSV of the results rows (this run's row replaces an earlier row of the same run)")
    add_run_flags(p, "suffix of the saved attack checkpoint name (DFME/cache/<dataset>-<victim>[+<defense>][+label]"
                     "[-<attack>[-<pool>]][-<setting>]-<student>-seed<s>[-<tag>].pt; no <attack> part for DFME, "
                     "-maze for a MAZE-preset run without --setting)")
    return p


def _setting_name(text):
    if text and not all(c.isalnum() or c in "._" for c in text):
        raise argparse.ArgumentTypeError(f"{text!r}: use letters, digits, '.' and '_' only")
    return text


def finish_parse(args):
    info = dataset_info(args.dataset)
    args.teacher_model = args.teacher_model or info.teacher_arch
    args.api_defense = api_defense.canonical(args.api_defense)  # a bad spec stops here, one line, exit 2
    return args


def attack_out(args, label, defense, attack, variant=""):
    """The clone's path: DFME/cache/<dataset>-<name>-<student>-seed<s>[-tag].pt, where the name says the victim
    (``label``), a defended run or a label-only API, the attack and its variant (e.g. Knockoff's pool) and the
    --setting, so that none of them overwrites another's files."""
    name = label + (f"+{defense.slug}" if defense else "") + ("+label" if args.victim_output == "label" else "")
    # DFME runs keep the bare name; a MAZE-preset run without a --setting (compare.sh names its grid's "maze") says
    # so, so it never takes the plain DFME run of the same victim and seed for its own
    name = name if attack == "dfme" or (attack == "maze" and args.setting) else f"{name}-{attack}"
    name += "".join(f"-{v}" for v in (variant, args.setting) if v)
    return paths.attack_path(args.dataset, name, args.student_model, args.seed, args.tag)


class AttackStage:
    """The evaluator's side of one attack run: victim, data, counted API, output paths, final report.

    ``attack`` names the attack in paths and results ("dfme", "maze", "knockoff"); DFME's checkpoints keep
    their historical name (no attack part)."""

    def __init__(self, args, attack, budget, state_kind="attack-state", variant=""):
        self.args, self.attack = args, attack
        check_results(args.results)  # a results file that could not take the row stops the run before it starts
        self.device, self.amp, self.fmt = setup(args)
        self.info = info = dataset_info(args.dataset)
        model, victim_label, self.victim_path = checkpoint.load_victim(args.victim, info, args.teacher_model,
                                                               args.ensemble_tag, args.teacher_tag,
                                                               args.victim_weights, (args.split_seed, args.val_size))
        self.label = args.label or victim_label
        self.commit = git_commit()  # the code that runs, read now: a checkout that moves on mid-run does not change it
        self.defense = api_defense.build(args.api_defense, info)
        self.out = attack_out(args, self.label, self.defense, attack, variant)
        self.run = RunState(self.out, state_kind, args.student_model, args, also_writes=[args.results])
        self.run_name = args.run_name or os.path.basename(self.out)[:-3]
        self.data = load_dataset(args.dataset, args.data_root, args.val_size, args.split_seed, self.device)
        self.victim_model = model.to(self.device, memory_format=self.fmt).eval()
        self.test_x = self.data.normalize(self.data.test.x).contiguous(memory_format=self.fmt)
        probs = predict(self.victim_model, self.test_x)  # in float32, as the BlackBox serves it, whatever --amp
        self.victim_pred = probs.argmax(1)
        self.victim_acc = (self.victim_pred == self.data.test.y).float().mean().item()  # the raw model's
        if self.defense:
            self.defense.to(self.device, self.fmt)
        # utility as users get it: the served answers on the test set, computed here (no query counted)
        self.served_acc, self.served_l1 = api_defense.served_utility(self.defense, probs, self.test_x,
                                                                     self.data.test.y)
        if self.defense:
            print(f"API defense {args.api_defense}: served test acc {self.served_acc:.4f} (raw model "
                  f"{self.victim_acc:.4f}), mean L1 served - raw probabilities {self.served_l1:.4f}")
        self.victim = BlackBox(self.victim_model, budget, output=args.victim_output, defense=self.defense)

    def resolved(self):
        """What this run's flags resolved to, for params.json: device, amp, the victim's file and accuracy, the
        split's sizes."""
        return {"device": self.device, "amp": "off" if self.amp is None else "bf16", "victim_path": self.victim_path,
                "victim_acc": round(self.victim_acc, 6), "served_acc": round(self.served_acc, 6),
                "train_size": len(self.data.train), "val_size": len(self.data.val), "test_size": len(self.data.test)}

    def already_recorded(self):
        """--resume 1 on a run that finished (output saved, row written, no state left): say so. A finished clone
        whose row is not in this --results file (another CSV holds it) is not run again over it: UserError."""
        a = self.args
        if self.run.finished() and not has_row(a.results, self.out):
            raise UserError(f"{self.out} is a finished run whose row is not in {a.results}: give --results the CSV "
                            "that holds it, or delete the clone (or pass --resume 0) to run it again")
        return self.run.already_done(lambda: has_row(a.results, self.out), "repeat")

    def evaluate(self, student):
        """(test accuracy, fidelity to the victim on the test set, validation accuracy) of the clone."""
        acc, fid = clone_metrics(student, self.test_x, self.data.test.y, self.victim_pred)
        return acc, fid, accuracy(student, self.data.val, self.data.normalize)

    def finish(self, student, best_acc, wall, log_dir, settings, extra_payload=None):
        """Save the clone, record the results row (one per run: a rerun's replaces the earlier), remove the state
        file."""
        a = self.args
        clone_acc, fidelity, val_acc = self.evaluate(student)
        best = max(best_acc, clone_acc)
        metrics = {"clone_acc": clone_acc, "clone_best_acc": best, "fidelity": fidelity,
                   "queries_used": self.victim.used, "victim_acc": self.victim_acc, "api_defense": a.api_defense,
                   "served_acc": self.served_acc, "served_l1": self.served_l1, "clone_val_acc": val_acc}
        payload = checkpoint.classifier_payload(student, a.student_model, a.dataset, self.info.num_classes,
                                                self.info.in_channels, metrics, vars(a), a.seed, kind="attack")
        payload.update({"victim_path": self.victim_path, **(extra_payload or {})})
        checkpoint.save(self.out, payload)
        row = {"dataset": a.dataset, "victim": self.label, "victim_acc": f"{self.victim_acc:.4f}",
               "attack": self.attack, "student_model": a.student_model, "query_budget": self.victim.budget,
               "queries_used": self.victim.used, "clone_acc": f"{clone_acc:.4f}", "clone_best_acc": f"{best:.4f}",
               "fidelity": f"{fidelity:.4f}", "seed": a.seed, "probs_as_logits": int(getattr(a, "probs_as_logits", 0)),
               "query_range": getattr(a, "query_range", ""), "label": self.label, "config": a.config,
               "settings": settings, "victim_path": self.victim_path, "run_dir": log_dir, "attack_path": self.out,
               "wall_s": f"{wall:.1f}", "git_commit": self.commit, "date": datetime.date.today().isoformat(),
               "api_defense": a.api_defense, "served_acc": f"{self.served_acc:.4f}",
               "served_l1": f"{self.served_l1:.6f}", "setting": a.setting, "clone_val_acc": f"{val_acc:.4f}"}
        for old in record_row(a.results, row):  # one row per run: a rerun (or a resume that wrote it) replaces it
            print(f"results: replaced this run's earlier row in {a.results} (date {old.get('date', '?')}, clone acc "
                  f"{old.get('clone_acc', '?')})")
        self.run.close()
        served = f" (served {self.served_acc:.4f}, L1 {self.served_l1:.4f}, {a.api_defense})" if self.defense else ""
        print(f"done: victim {self.label} acc {self.victim_acc:.4f}{served} | {self.attack} clone {a.student_model} "
              f"acc {clone_acc:.4f} (best over epochs, test: {best:.4f}) fidelity {fidelity:.4f} | "
              f"{self.victim.used}/{self.victim.budget} queries | {self.victim.used / max(wall, 1e-9):.0f} queries/s | "
              f"saved {self.out}")
        return row


def one_hot_answers(answer, num_classes):
    """A label-only API's answer as the one-hot probability vectors an attacker trains on."""
    return F.one_hot(answer, num_classes).float() if answer.dim() == 1 else answer
