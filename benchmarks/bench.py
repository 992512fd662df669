"""Throughput of the hot loops with the real code paths: one JSON object per stage on stdout.

    python benchmarks/bench.py                 # all stages, issue settings (DFME batch 2048: ~2 min on 2 cores)
    python benchmarks/bench.py --quick         # smaller batches and fewer steps
    python benchmarks/bench.py --stages dfme --channels_last 0 --fast_upsample 0   # a lever off

Each stage runs in a fresh subprocess so that its peak resident memory (peak_rss_mb) is its own.
Data are random tensors of the real shapes (1x32x32, 10 classes): throughput does not depend on content.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from misleader.cli import Parser
from misleader.data import Augment, DataBundle, Split, dataset_info  # noqa: E402
from misleader.defense import DefenseStep  # noqa: E402
from misleader.dfme import DFME, DFMEConfig  # noqa: E402
from misleader.disguide import DisGUIDE, DisGUIDEConfig  # noqa: E402
from misleader.ensemble import SoftVotingEnsemble  # noqa: E402
from misleader.models import Generator, create_model  # noqa: E402
from misleader.runtime import amp_dtype, autocast, pick_device  # noqa: E402
from misleader.victim import BlackBox  # noqa: E402

STAGES = ("teacher", "defense", "victim", "dfme", "disguide")


def fake_bundle(n, device):
    info = dataset_info("fashionmnist")
    split = Split(torch.rand(n, 1, 32, 32, device=device), torch.randint(0, 10, (n,), device=device))
    return DataBundle(info, split, split, split, device)


def timed(fn, warmup, steps):
    for _ in range(warmup):
        fn()
    t0 = time.perf_counter()
    for _ in range(steps):
        fn()
    return time.perf_counter() - t0


def time_attack(attack, victim, iters):
    """(queries per second, seconds per iteration) over ``iters`` attack iterations after one warm-up; the
    queries are the victim's own count."""
    attack.iteration()
    used0 = victim.used
    secs = timed(attack.iteration, 0, iters)
    return (victim.used - used0) / secs, secs / iters


def bench_teacher(a, device, amp, fmt):
    bs, steps = 256, (20 if a.quick else 100)
    data = fake_bundle(bs * 8, device)
    model = create_model("lenet5", 10, 1).to(device, memory_format=fmt)
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    aug = Augment(data)
    i = [0]

    def step():
        j = (i[0] % 8) * bs
        i[0] += 1
        x = aug.clean(data.train.x[j:j + bs]).contiguous(memory_format=fmt)
        with autocast(device, amp):
            out = model(x)
        loss = F.cross_entropy(out.float(), data.train.y[j:j + bs])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    secs = timed(step, 5, steps)
    return {"images_per_s": bs * steps / secs, "batch_size": bs, "steps": steps}


def members(device, fmt):
    return [create_model(n, 10, 1).to(device, memory_format=fmt).eval() for n in ("lenet5", "lenet5half", "lenet5fifth")]


def bench_defense(a, device, amp, fmt):
    bs, steps = 256, (10 if a.quick else 50)
    data = fake_bundle(bs * 4, device)
    member, surrogate, teacher = (create_model("lenet5", 10, 1).to(device, memory_format=fmt) for _ in range(3))
    opt_m = torch.optim.SGD(member.parameters(), 0.1, momentum=0.9)
    opt_s = torch.optim.SGD(surrogate.parameters(), 0.01, momentum=0.9)
    trainer = DefenseStep(member, surrogate, teacher, Augment(data), opt_m, opt_s, 2.0, 0.3, 0.5, 1, device, amp, fmt)
    i = [0]

    def step():
        j = (i[0] % 4) * bs
        i[0] += 1
        trainer.step(data.train.x[j:j + bs], data.train.y[j:j + bs])

    secs = timed(step, 3, steps)
    # distinct images per step: the clean batch, one proxy batch per surrogate step, one for the member step
    return {"images_per_s": bs * (2 + 1) * steps / secs, "batch_size": bs, "a_iter": 1, "steps": steps}


def bench_victim(a, device, amp, fmt):
    bs, steps = 2048, (5 if a.quick else 20)
    victim = BlackBox(SoftVotingEnsemble(members(device, fmt)), 10**12, amp=amp)
    x = torch.randn(bs, 1, 32, 32, device=device).contiguous(memory_format=fmt)
    secs = timed(lambda: victim(x), 2, steps)
    return {"queries_per_s": bs * steps / secs, "batch_size": bs, "victim": "3-member LeNet ensemble"}


def bench_dfme(a, device, amp, fmt):
    bs, iters = (256, 2) if a.quick else (2048, 2)
    cfg = DFMEConfig(query_budget=10**12, batch_size=bs, grad_m=1)
    victim = BlackBox(SoftVotingEnsemble(members(device, fmt)), cfg.query_budget)
    gen = Generator(nz=cfg.nz, ngf=64, nc=1, fast_upsample=bool(a.fast_upsample)).to(device, memory_format=fmt)
    attack = DFME(cfg, victim, create_model("lenet5", 10, 1).to(device, memory_format=fmt), gen, 10, device, amp, fmt)
    rate, per_iteration = time_attack(attack, victim, iters)
    return {"queries_per_s": rate, "batch_size": bs, "grad_m": 1,
            "cost_per_iteration": cfg.cost_per_iteration, "seconds_per_iteration": per_iteration,
            "student": "lenet5", "victim": "3-member LeNet ensemble"}


def bench_disguide(a, device, amp, fmt):
    """The `pub` setting of fashionmnist_v2 (batch 256, 32-wide generator, 3 replay steps per iteration)."""
    iters = 3 if a.quick else 10
    cfg = DisGUIDEConfig(query_budget=10**12, batch_size=256, d_iter=1, replay_batch=0, rep_iter=3, replay_size=10**6)
    victim = BlackBox(SoftVotingEnsemble(members(device, fmt)), cfg.query_budget)
    gen = Generator(nz=cfg.nz, ngf=32, nc=1, fast_upsample=bool(a.fast_upsample)).to(device, memory_format=fmt)
    clones = [create_model("lenet5", 10, 1).to(device, memory_format=fmt) for _ in range(2)]
    attack = DisGUIDE(cfg, victim, clones, gen, 10, device, amp, fmt)  # its warm-up fills the replay with a batch
    rate, per_iteration = time_attack(attack, victim, iters)
    # where an iteration's time goes: its three kinds of step, each timed alone, and the generator's sample and the
    # victim's answer inside the fresh batch's step
    x = attack.sample(grad=False)
    parts = {"generator_step": attack.generator_step, "fresh_batch_step": attack.student_step,
             "replay_step": attack.replay_step, "generator_sample": lambda: attack.sample(grad=False),
             "victim_answer": lambda: victim(x)}
    seconds = {k: timed(fn, 0, iters) / iters for k, fn in parts.items()}
    return {"queries_per_s": rate, "batch_size": 256, "ngf": 32, "d_iter": 1, "rep_iter": 3,
            "seconds_per_iteration": per_iteration, **{f"seconds_{k}": v for k, v in seconds.items()},
            "clones": "2 x lenet5", "victim": "3-member LeNet ensemble"}


def run_stage(a):
    device = pick_device(a.device)
    amp = amp_dtype(a.amp, device)
    fmt = torch.channels_last if a.channels_last else torch.contiguous_format
    torch.manual_seed(0)
    out = globals()[f"bench_{a.stage}"](a, device, amp, fmt)
    peak = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else None
    out = {"stage": a.stage, **out, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
           "peak_cuda_mb": peak, "device": str(device), "amp": str(amp), "channels_last": a.channels_last,
           "fast_upsample": a.fast_upsample, "threads": torch.get_num_threads(), "quick": a.quick}
    # 4 significant digits (a rate of 14,100 keeps its units, a step of 0.5213 s its milliseconds)
    print(json.dumps({k: (float(f"{v:.4g}") if isinstance(v, float) else v) for k, v in out.items()}), flush=True)


def main():
    p = Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)  # errors: one line, exit 2
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--quick", action="store_true", help="smaller batches and fewer steps")
    p.add_argument("--stages", nargs="+", default=list(STAGES), choices=STAGES, help="which loops to time")
    p.add_argument("--amp", default="auto", choices=["auto", "off", "bf16"], help="as the entry points' --amp")
    p.add_argument("--channels_last", type=int, default=1, choices=[0, 1], help="channels_last memory format")
    p.add_argument("--fast_upsample", type=int, default=1, choices=[0, 1],
                   help="the generator's upsample+conv as one stride-2 transposed convolution (1) or interpolate then conv (0)")
    p.add_argument("--stage", default=None, help=argparse.SUPPRESS)  # internal: run one stage in this process
    a = p.parse_args()
    if a.stage:
        return run_stage(a)
    for stage in a.stages:
        argv = [sys.executable, __file__, "--stage", stage, "--device", a.device, "--amp", a.amp,
                "--channels_last", str(a.channels_last), "--fast_upsample", str(a.fast_upsample)]
        rc = subprocess.run(argv + (["--quick"] if a.quick else []), check=False).returncode
        if rc:
            sys.exit(f"bench.py: stage {stage} failed (exit code {rc}); its error is above")


if __name__ == "__main__":
    main()
