"""Stage 4: DFME (data-free model extraction) against a victim behind the counted black-box API.

The victim is the MISLEADER ensemble, the bare teacher, or any checkpoint, read from the Defense stage's
paths. It answers probabilities; the attacker recovers logits as log p minus its mean. The attack stops
when the query budget cannot pay for another iteration; the queries actually used are reported.
One row per run is appended to results/results.csv.
"""

import argparse
import datetime
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
from tqdm import tqdm  # noqa: E402

from misleader import checkpoint, paths  # noqa: E402
from misleader.cli import Parser, add_common, add_run_flags, main_wrapper  # noqa: E402
from misleader.data import dataset_info, load_dataset  # noqa: E402
from misleader.dfme import MAZE_PRESET, DFME, DFMEConfig, attacker_models, settings_text  # noqa: E402
from misleader.loop import StopFlag  # noqa: E402
from misleader.results import append_row, has_row  # noqa: E402
from misleader.runlog import RunLog, git_commit  # noqa: E402
from misleader.runtime import setup  # noqa: E402
from misleader.train import accuracy, predict  # noqa: E402
from misleader.victim import BlackBox  # noqa: E402
from misleader.victims import resolve_victim  # noqa: E402


def parse(argv):
    p = add_common(Parser(description=__doc__))
    d = DFMEConfig()
    p.add_argument("--victim", default="ensemble",
                   help="ensemble (Defense/ensemble/<dataset>[-tag].pt), teacher (Defense/cache/teacher/<dataset>-"
                        "<teacher_model>.pt) or a checkpoint path")
    p.add_argument("--ensemble_tag", default=None, help="with --victim ensemble: read Defense/ensemble/<dataset>-<tag>.pt")
    p.add_argument("--teacher_tag", default=None, help="with --victim teacher: read Defense/cache/teacher/<dataset>-"
                                                        "<teacher_model>-<tag>.pt")
    p.add_argument("--ngf", type=int, default=64, help="generator width (DFME's is 64; smaller is faster on a CPU)")
    p.add_argument("--teacher_model", default=None, help="teacher architecture for --victim teacher (default lenet5 "
                                                          "MNIST-like, resnet34_8x CIFAR)")
    p.add_argument("--victim_output", default="probs", choices=["probs", "logits"],
                   help="what the victim API returns; probs is what a real API gives")
    p.add_argument("--query_budget", type=float, default=d.query_budget / 1e6, help="query budget in millions")
    p.add_argument("--batch_size", type=int, default=d.batch_size, help="generator / student batch size")
    p.add_argument("--epoch_itrs", type=int, default=d.epoch_itrs, help="iterations per epoch")
    p.add_argument("--g_iter", type=int, default=d.g_iter, help="generator steps per iteration")
    p.add_argument("--d_iter", type=int, default=d.d_iter, help="student steps per iteration")
    p.add_argument("--lr_S", type=float, default=d.lr_S, help="student SGD learning rate")
    p.add_argument("--lr_G", type=float, default=d.lr_G, help="generator learning rate")
    p.add_argument("--g_optimizer", choices=["adam", "sgd"], default=d.g_optimizer,
                   help="generator optimizer (MAZE: sgd with momentum 0.9 and weight decay --weight_decay)")
    p.add_argument("--nz", type=int, default=d.nz, help="generator latent size")
    p.add_argument("--grad_m", type=int, default=d.grad_m, help="random directions per zeroth-order estimate")
    p.add_argument("--grad_epsilon", type=float, default=d.grad_epsilon, help="finite-difference step")
    p.add_argument("--loss", choices=["l1", "kl"], default=d.loss, help="clone loss on logits")
    p.add_argument("--scheduler", choices=["multistep", "cosine", "none"], default=d.scheduler,
                   help="per-epoch schedule of both learning rates")
    p.add_argument("--steps", type=float, nargs="*", default=list(d.steps),
                   help="multistep milestones as fractions of the epochs")
    p.add_argument("--scale", type=float, default=d.scale, help="multistep factor")
    p.add_argument("--momentum", type=float, default=d.momentum, help="student SGD momentum")
    p.add_argument("--weight_decay", type=float, default=d.weight_decay,
                   help="student SGD weight decay (and the generator's with --g_optimizer sgd)")
    p.add_argument("--student_model", default="lenet5", help="clone architecture")
    p.add_argument("--MAZE", type=int, default=0, choices=[0, 1],
                   help="1 makes the MAZE preset the defaults: --loss kl --batch_size 128 --grad_m 10 --lr_G 1e-4 "
                        "--g_optimizer sgd --scheduler cosine; flags given explicitly still win")
    p.add_argument("--probs_as_logits", type=int, default=0, choices=[0, 1],
                   help="1 reproduces the earlier public evaluation, which fed the victim's probabilities to "
                        "log_softmax as if they were logits. It flattens the targets and weakens the attack; it "
                        "exists only to measure that handicap. Off by default")
    p.add_argument("--query_range", choices=["tanh", "data"], default=d.query_range,
                   help="what the generator's tanh output in [-1, 1] means to the victim. tanh (DFME): it is fed "
                        "as an already normalized image, so queries cover [-1, 1] in normalized units (on "
                        "Fashion-MNIST only raw pixels -0.07..0.64: no bright pixel can be asked about). data: it "
                        "is mapped onto raw pixels [0, 1] and normalized like the victim's data, so queries cover "
                        "exactly the valid images")
    p.add_argument("--label", default=None, help="name of this victim in results and reports (default: the victim)")
    p.add_argument("--config", default="", help="config name recorded in results.csv (set by test.sh)")
    p.add_argument("--results", default=paths.RESULTS_CSV, help="CSV to append this run's row to")
    add_run_flags(p, "suffix of the saved attack checkpoint name (DFME/cache/<dataset>-<victim>-<student>-seed<s>-<tag>.pt)")
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--MAZE", type=int, default=0)
    if pre.parse_known_args(argv)[0].MAZE == 1:
        p.set_defaults(**MAZE_PRESET)  # defaults only: what the user typed overrides them
    args = p.parse_args(argv)
    info = dataset_info(args.dataset)
    args.teacher_model = args.teacher_model or info.teacher_arch
    return args


def make_config(args):
    cfg = DFMEConfig(query_budget=int(round(args.query_budget * 1e6)), batch_size=args.batch_size,
                     epoch_itrs=args.epoch_itrs, g_iter=args.g_iter, d_iter=args.d_iter, lr_S=args.lr_S,
                     lr_G=args.lr_G, nz=args.nz, grad_m=args.grad_m, grad_epsilon=args.grad_epsilon, loss=args.loss,
                     scheduler=args.scheduler, steps=tuple(args.steps), scale=args.scale, momentum=args.momentum,
                     weight_decay=args.weight_decay, g_optimizer=args.g_optimizer,
                     probs_as_logits=bool(args.probs_as_logits), query_range=args.query_range)
    cfg.validate()
    return cfg


def main(argv):
    args = parse(argv)
    cfg = make_config(args)
    device, amp, fmt = setup(args)
    info = dataset_info(args.dataset)
    victim_model, victim_label, victim_path = resolve_victim(args.victim, info, args.teacher_model, args.ensemble_tag,
                                                                 args.teacher_tag)
    label = args.label or victim_label
    student, generator = attacker_models(args.student_model, info.num_classes, info.in_channels, cfg.nz, args.ngf,
                                         args.seed)
    out = paths.attack_path(args.dataset, label, args.student_model, args.seed, args.tag)
    checkpoint.check_writable(out)
    checkpoint.check_writable(args.results)
    data = load_dataset(args.dataset, args.data_root, args.val_size, args.split_seed, device)
    victim_model = victim_model.to(device, memory_format=fmt).eval()
    student = student.to(device, memory_format=fmt)
    generator = generator.to(device, memory_format=fmt)

    # Evaluation uses the victim model directly and costs no budget; the attack only holds `victim`.
    test_x = data.normalize(data.test.x).contiguous(memory_format=fmt)
    victim_pred = predict(victim_model, test_x, amp=amp).argmax(1)
    victim_acc = (victim_pred == data.test.y).float().mean().item()
    victim = BlackBox(victim_model, cfg.query_budget, output=args.victim_output)
    attack = DFME(cfg, victim, student, generator, info.num_classes, device, amp, fmt, seed=args.seed,
                  mean=info.mean, std=info.std)

    state_file = checkpoint.state_path(out)
    if args.resume and not os.path.isfile(state_file) and os.path.isfile(out) and has_row(args.results, out):
        print(f"already done: {out} exists and {args.results} has its row (--resume 1 does not repeat it)")
        return
    resumed = bool(args.resume) and os.path.isfile(state_file)
    if resumed:
        st = checkpoint.load(state_file)
        checkpoint.check(st, state_file, kind="attack-state", arch=args.student_model)
        attack.load_state_dict(st["attack"])
        print(f"resumed from {state_file}: epoch {attack.epoch}, iteration {attack.itr}, {victim.used} queries used")
    run_name = args.run_name or f"{args.dataset}-{label}-{args.student_model}-seed{args.seed}" + \
        (f"-{args.tag}" if args.tag else "")
    log = RunLog(args.log_dir, "dfme", run_name, {**vars(args), "epochs": cfg.epochs,
                                                   "cost_per_iteration": cfg.cost_per_iteration},
                 resume_step=attack.epoch if resumed else None)
    print(f"DFME{' (MAZE preset)' if args.MAZE else ''} on {label} ({victim_path}, test acc {victim_acc:.4f}): "
          f"student {args.student_model}, budget {cfg.query_budget} queries, {cfg.cost_per_iteration} per iteration, "
          f"{cfg.epochs} epochs, device {device}, amp {amp or 'off'}, seed {args.seed}")

    def save_state():
        checkpoint.save(state_file, {"format": checkpoint.FORMAT, "kind": "attack-state", "arch": args.student_model,
                                     "attack": attack.state_dict()})

    stop, last_save = StopFlag(), [time.time()]

    def on_iteration(a):
        stop.exit_if_set(save_state, state_file)
        if time.time() - last_save[0] > args.save_every_min * 60:
            save_state()
            last_save[0] = time.time()

    def on_epoch(a, stats):
        pred = predict(student, test_x, amp=amp).argmax(1)
        acc = (pred == data.test.y).float().mean().item()
        fid = (pred == victim_pred).float().mean().item()
        a.best_acc = max(a.best_acc, acc)
        val_acc = accuracy(student, data.val, data.normalize, amp)  # to choose attack settings without the test set
        loss_ok = torch.isfinite(torch.tensor([stats["loss_S"], stats["loss_G"]])).all()
        log.log(a.epoch, {"clone_acc": acc, "clone_val_acc": val_acc, "fidelity": fid,
                          "queries_used": stats["queries_used"], "loss_S": stats["loss_S"],
                          "loss_G": stats["loss_G"], "lr_S": stats["lr_S"], "lr_G": stats["lr_G"]},
                console=False, extra={"queries_per_s": stats["queries_per_s"]})
        bar.write(f"[epoch {a.epoch}/{cfg.epochs}] clone_acc {acc:.4f} best {a.best_acc:.4f} val {val_acc:.4f} "
                  f"fidelity {fid:.4f} queries {stats['queries_used']} loss_S {stats['loss_S']:.4f} "
                  f"loss_G {stats['loss_G']:.4f} ({stats['queries_per_s']:.0f} queries/s)")
        sys.stdout.flush()  # a log file being followed sees each epoch as it ends
        if not loss_ok:
            from misleader.errors import NonFiniteLoss
            raise NonFiniteLoss(f"non-finite DFME loss in epoch {a.epoch}; the last good state is {state_file}")
        save_state()
        last_save[0] = time.time()

    bar = tqdm(total=cfg.query_budget, initial=victim.used, unit="q", unit_scale=True, desc="queries",
               disable=not args.progress, file=sys.stdout)
    attack.run(on_epoch=on_epoch, on_iteration=on_iteration, progress=bar)
    bar.close()
    wall = attack.wall_s()  # the whole attack's time, across resumes

    pred = predict(student, test_x, amp=amp).argmax(1)
    clone_acc = (pred == data.test.y).float().mean().item()
    fidelity = (pred == victim_pred).float().mean().item()
    best = max(attack.best_acc, clone_acc)
    checkpoint.save(out, {"format": checkpoint.FORMAT, "kind": "attack", "arch": args.student_model,
                          "dataset": args.dataset, "num_classes": info.num_classes, "in_channels": info.in_channels,
                          "state_dict": student.state_dict(), "generator": generator.state_dict(),
                          "metrics": {"clone_acc": clone_acc, "clone_best_acc": best, "fidelity": fidelity,
                                      "queries_used": victim.used, "victim_acc": victim_acc},
                          "args": vars(args), "seed": args.seed, "victim_path": victim_path})
    row = {"dataset": args.dataset, "victim": label, "victim_acc": f"{victim_acc:.4f}",
           "attack": "maze" if args.MAZE else "dfme", "student_model": args.student_model,
           "query_budget": cfg.query_budget, "queries_used": victim.used, "clone_acc": f"{clone_acc:.4f}",
           "clone_best_acc": f"{best:.4f}", "fidelity": f"{fidelity:.4f}", "seed": args.seed,
           "probs_as_logits": int(args.probs_as_logits), "query_range": cfg.query_range, "label": label,
           "settings": settings_text(cfg, ngf=args.ngf, victim_output=args.victim_output),
           "config": args.config,
           "victim_path": victim_path, "run_dir": log.dir, "attack_path": out, "wall_s": f"{wall:.1f}",
           "git_commit": git_commit(), "date": datetime.date.today().isoformat()}
    if not (args.resume and has_row(args.results, out)):  # a run killed after writing its row adds it once
        append_row(args.results, row)
    log.close()
    if os.path.isfile(state_file):
        os.remove(state_file)
    print(f"done: victim {label} acc {victim_acc:.4f} | clone {args.student_model} acc {clone_acc:.4f} "
          f"(best {best:.4f}) fidelity {fidelity:.4f} | {victim.used}/{cfg.query_budget} queries | "
          f"{victim.used / wall:.0f} queries/s | saved {out}")


if __name__ == "__main__":
    main_wrapper(main)
