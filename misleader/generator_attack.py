"""What the generator attacks' entry points (DFME/dfme.py, DFME/disguide.py) share: their flags, drawn from a
config's fields, the config built from the flags, and the run itself (resume, TensorBoard log, header line,
per-epoch evaluation and logging, progress bar, results row). Each entry point keeps only what differs: its
flags' help, its models and attack, its extra clones.
"""

import sys
from dataclasses import fields

from misleader import api_defense
from misleader.attack import AttackStage, add_attack_flags
from misleader.cli import Parser
from misleader.dfme import settings_text
from misleader.errors import UserError
from misleader.evaluate import clone_metrics
from misleader.progress import progress_bar
from misleader.runlog import RunLog

# The flags both generator attacks have, in DFME's words (DFME/dfme.py): name -> (type or choices, help[,
# default]); the default is the config's field of that name unless given. An attack built on DFME's passes its
# own wording for any of them (generator_parser's ``wording``).
FLAGS = {"batch_size": (int, "generator / student batch size"), "epoch_itrs": (int, "iterations per epoch"),
         "g_iter": (int, "generator steps per iteration"), "d_iter": (int, "student steps per iteration"),
         "lr_S": (float, "student SGD learning rate"), "lr_G": (float, "generator learning rate"),
         "nz": (int, "generator latent size"), "scale": (float, "multistep factor"),
         "momentum": (float, "SGD momentum of the student (and of an SGD generator)"),
         "weight_decay": (float, "student SGD weight decay (and the generator's with --g_optimizer sgd)"),
         "ngf": (int, "generator width (DFME's is 64; smaller is faster on a CPU)", 64),
         "loss": (["l1", "kl"], "clone loss on recovered logits"),
         "scheduler": (["multistep", "cosine", "none"],
                       "schedule of both learning rates, set at the start of each epoch as DFME does"),
         "steps": (float, "multistep milestones as fractions of the epochs: epoch e trains at lr * scale^(number of "
                          "milestones int(step * epochs) <= e)"),
         "query_range": (["tanh", "data"], "what the generator's tanh output in [-1, 1] means to the victim. tanh "
                                           "(DFME): an already normalized image (on Fashion-MNIST only raw pixels "
                                           "-0.07..0.64). data: raw pixels [0, 1], normalized like the victim's "
                                           "data, so queries cover exactly the valid images"),
         "logit_floor": (float, "adaptive attacker: probabilities below this (e.g. 1e-4) are raised to it before "
                                "log p and the mean correction, in the student's targets and the generator's loss "
                                "alike; 0: off (DFME as published)"),
         "target": (["logits", "probs", "label"], "what the student matches: recovered logits (DFME), the "
                                                  "victim's probabilities (l1 between softmax outputs; with --loss "
                                                  "kl, KL(victim || student), which equals the logits target's KL "
                                                  "up to rounding) or, adaptive attacker, the top-1 label of each "
                                                  "answer as a one-hot vector (compared as probs: with --loss kl, "
                                                  "cross-entropy); the generator maximises the same disagreement"),
         "mirror": ([0, 1], "adaptive attacker: 1 passes the clone's probabilities through the API's own output "
                            "defense (its published formula and --api_defense parameters; reverse_sigmoid only) "
                            "before comparing them with the answers; needs --target probs. 0: off")}


def generator_parser(doc, cfg, own, wording=None):
    """The parser of a generator attack: every attack's flags (misleader.attack), --query_budget defaulting to
    ``cfg``'s in millions, the flags of FLAGS (their help replaced by ``wording``'s, name -> text, where it
    has one), then the attack's ``own`` flags, entries as FLAGS's. A choices list gives the flag its choices' type;
    a tuple default makes a flag of any number of floats."""
    p = add_attack_flags(Parser(description=doc), "query budget in millions")
    p.set_defaults(query_budget=cfg.query_budget / 1e6)
    wording = wording or {}
    for name, (kind, text, *given) in {**FLAGS, **own}.items():
        default = given[0] if given else getattr(cfg, name)
        default = int(default) if isinstance(default, bool) else default  # a 0/1 flag: its help shows 0, not False
        opts = {"choices": kind, "type": type(kind[0])} if isinstance(kind, list) else {"type": kind}
        if isinstance(default, tuple):
            opts, default = {"type": float, "nargs": "*"}, list(default)
        p.add_argument(f"--{name}", default=default, help=wording.get(name, text), **opts)
    return p


def config_from_flags(cls, args):
    """A ``cls`` config (DFMEConfig or a subclass) from the parsed flags, validated: every field that is a flag,
    as the field's type where that is bool or tuple; --query_budget from millions to queries."""
    kw = {f.name: getattr(args, f.name) for f in fields(cls) if hasattr(args, f.name)}
    for f in fields(cls):
        if f.name in kw and isinstance(f.default, (bool, tuple)):
            kw[f.name] = type(f.default)(kw[f.name])
    cfg = cls(**{**kw, "query_budget": int(round(args.query_budget * 1e6))})
    cfg.validate()
    if args.victim_output == "label" and cfg.loss == "kl" and cfg.target == "logits":
        raise UserError("--loss kl with --target logits on a label-only API (--victim_output label) would train on "
                        "softmax(one-hot - its mean), a smoothed label (0.23 on the top class of 10); use --target "
                        "label (the cross-entropy on each answer's label)")
    attacker_mirror(cfg, args)  # a defense that cannot be mirrored stops here, before any data is loaded
    return cfg


def attacker_mirror(cfg, args):
    """With --mirror 1, the attacker's copy of the API's published defense (--api_defense), else None. A
    label-only API is refused: its one-hot answers are no defended probabilities to compare with."""
    if cfg.mirror and args.victim_output == "label":
        raise UserError("--mirror 1 compares the clone's defended probabilities with the API's; a label-only API "
                        "(--victim_output label) answers labels")
    return api_defense.mirror(args.api_defense) if cfg.mirror else None


def run_generator_attack(args, cfg, attack_name, build, log_name, title, state_kind="attack-state"):
    """One generator attack run from parsed flags and their config: the AttackStage (``attack_name`` in paths
    and results; nothing to do when --resume 1 finds the run recorded), then ``build(cfg, stage) -> (attack,
    models text, extra clones {name: module})``, the attack (a DFME or a subclass) on the stage's victim. Runs
    it to the end of the budget, resumed from the run's state if there is one: log under ``log_name``, a header
    line ``<title> on <victim> ...: <models text>, budget ...``, each epoch the reported clone's (attack.student)
    test and validation accuracy and fidelity, each extra clone's test accuracy as <name>_acc, the attack's
    losses and learning rates (TensorBoard steps: queries used), the state saved. At the end the results row
    and the saved clone, with the generator and the extra clones in its payload."""
    stage = AttackStage(args, attack_name, cfg.query_budget, state_kind)
    if stage.already_recorded():
        return
    attack, models, extra = build(cfg, stage)
    st = stage.run.load()
    resumed = st is not None
    if resumed:
        attack.load_state_dict(st["attack"])
        print(f"resumed from {stage.run.file}: epoch {attack.epoch}, iteration {attack.itr}, "
              f"{stage.victim.used} queries used")
    del st  # the loaded copy (a full replay buffer: 4 GB at 1M queries of 32x32) is not kept beside the live one
    log = RunLog(args.log_dir, log_name, stage.run_name, {**vars(args), "epochs": cfg.epochs,
                                                          "cost_per_iteration": cfg.cost_per_iteration},
                 resume_step=attack.epoch if resumed else None, tb_resume_step=stage.victim.used,
                 resolved=stage.resolved())
    print(f"{title} on {stage.label} ({stage.victim_path}, test acc {stage.victim_acc:.4f}): {models}, budget "
          f"{cfg.query_budget} queries, {cfg.cost_per_iteration} per iteration, {cfg.epochs} epochs, device "
          f"{stage.device}, amp {stage.amp or 'off'}, seed {args.seed}", flush=True)

    def state():
        return {"attack": attack.state_dict()}

    def on_epoch(a, stats):
        acc, fid, val_acc = stage.evaluate(a.student)  # val: to choose attack settings without the test set
        more = {f"{name}_acc": clone_metrics(m, stage.test_x, stage.data.test.y, stage.victim_pred)[0]
                for name, m in extra.items()}
        a.best_acc = max(a.best_acc, acc)
        log.log(a.epoch, {"clone_acc": acc, "clone_val_acc": val_acc, "fidelity": fid, **more,
                          **{k: stats[k] for k in ("queries_used", "loss_S", "loss_G", "lr_S", "lr_G")}},
                console=False, extra={"queries_per_s": stats["queries_per_s"]}, tb_step=stats["queries_used"])
        bar.write(f"[epoch {a.epoch}/{cfg.epochs}] clone_acc {acc:.4f} best_test {a.best_acc:.4f} val {val_acc:.4f} "
                  f"fidelity {fid:.4f}{''.join(f' {k} {v:.4f}' for k, v in more.items())} queries "
                  f"{stats['queries_used']} loss_S {stats['loss_S']:.4f} loss_G {stats['loss_G']:.4f} lr_S "
                  f"{stats['lr_S']:.4g} ({stats['queries_per_s']:.0f} queries/s)")
        sys.stdout.flush()  # a log file being followed sees each epoch as it ends
        stage.run.epoch_end(state)  # (a non-finite loss has stopped the run already, in DFME.run)

    bar = progress_bar(args.progress, cfg.query_budget, stage.victim.used, "queries", "q", file=sys.stdout,
                       unit_scale=True)
    attack.run(on_epoch=on_epoch, on_iteration=lambda a: stage.run.boundary(state), progress=bar)
    bar.close()
    stage.finish(attack.student, attack.best_acc, attack.wall_s(), log.dir,
                 settings_text(cfg, ngf=args.ngf, victim_output=args.victim_output),
                 {name: m.state_dict() for name, m in {"generator": attack.generator, **extra}.items()})
    log.close()
