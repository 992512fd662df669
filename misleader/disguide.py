"""DisGUIDE: disagreement-guided data-free model extraction (Rosenthal et al., AAAI 2023), written against the
counted BlackBox.

Two clones learn the victim's answers; the generator is trained through the clones alone to maximise their
disagreement, so generator steps ask the victim nothing and need no zeroth-order estimate. Per iteration:
g_iter generator steps (minimise  -disagreement + div_weight * class_diversity  on a fresh batch, the clones
fixed), then d_iter clone steps (a fresh batch is asked once; both clones learn its answers together with
replay_batch earlier queries and answers drawn from the replay buffer), then rep_iter clone steps on
batch_size replayed queries and answers alone (the published code's schedule: d_iter 1, rep_iter 3, replay_batch
0). Queries per iteration: batch_size * d_iter.

What is the paper's and what is chosen here: see DFME/disguide.py's help. The loop, schedule, query mapping,
target options (loss, target, logit_floor, mirror: the clone steps only) and resumable state are DFME's
(misleader.dfme); the reported clone is the first one, ``student``.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from misleader.dfme import DFME, DFMEConfig
from misleader.errors import UserError
from misleader.losses import student_loss
from misleader.models import Generator, create_model
from misleader.runtime import autocast, seeded


@dataclass
class DisGUIDEConfig(DFMEConfig):
    """DFME's settings (misleader.dfme.DFMEConfig, the same defaults) and DisGUIDE's own. DFME's zeroth-order
    estimate (grad_m, grad_epsilon), its choice of generator optimiser (Adam here) and its earlier-code handicap
    (probs_as_logits) do not apply: ``unused`` keeps them out of the settings text and the state."""

    div_weight: float = 1.0  # weight of the class-diversity term in the generator's loss
    replay_size: int = 100_000  # queries kept for replay (the last ones; 0: no replay)
    replay_batch: int = 256  # replayed queries added to each clone step's fresh batch
    rep_iter: int = 0  # clone steps per iteration on batch_size replayed queries alone, after the d_iter fresh ones

    unused = ("grad_m", "grad_epsilon", "g_optimizer", "probs_as_logits")
    cost_formula = "batch_size*d_iter"

    @property
    def cost_per_iteration(self):
        return self.batch_size * self.d_iter  # generator steps ask the victim nothing

    def validate(self):
        super().validate()
        for name in ("replay_size", "replay_batch", "div_weight", "rep_iter"):
            if getattr(self, name) < 0:
                raise UserError(f"--{name} must not be negative, got {getattr(self, name)}")
        if self.replay_size == 0 and self.rep_iter:
            raise UserError(f"--rep_iter {self.rep_iter} trains on replayed queries, but --replay_size 0 keeps none")
        if self.replay_size and not (self.replay_batch or self.rep_iter):
            raise UserError(f"--replay_size {self.replay_size} keeps queries that nothing reads (--replay_batch 0 "
                            "and --rep_iter 0): give --replay_size 0, or --replay_batch or --rep_iter above 0")


def disguide_models(arch, num_classes, in_channels, nz, ngf, seed):
    """(clone 1, generator, clone 2) from their own RNG seeded with ``seed`` (global RNG left as it was). Clone 1
    and the generator are drawn first, in DFME's order, so they start from the weights of DFME's student and
    generator at the same seed (misleader.dfme.attacker_models); clone 2 is drawn after them."""
    return seeded(seed, lambda: (create_model(arch, num_classes, in_channels),
                                 Generator(nz=nz, ngf=ngf, nc=in_channels),
                                 create_model(arch, num_classes, in_channels)))


def clone_disagreement(logits_a, logits_b):
    """Per sample: the L1 distance between the two clones' softmax outputs (twice their total variation
    distance; with two clones, proportional to the per-class standard deviation summed over classes)."""
    return (F.softmax(logits_a, 1) - F.softmax(logits_b, 1)).abs().sum(1)


def class_diversity(*logits):
    """The negative entropy of the mean predicted class distribution over the batch and the clones: lowest
    (-log C) when the batch is spread evenly over the classes, 0 when every prediction is one class."""
    p = torch.stack([F.softmax(z, 1) for z in logits]).mean((0, 1))
    # a class whose probability underflows to 0 would give xlogy a 0/0 (NaN) gradient; clamped at the smallest
    # normal float it adds nothing to the gradient, and every other class's term is unchanged to the bit
    p = p.clamp_min(torch.finfo(p.dtype).tiny)
    return torch.xlogy(p, p).sum()


def generator_loss(logits_a, logits_b, div_weight):
    """(loss the generator minimises, mean disagreement, diversity term): -disagreement + div_weight*diversity."""
    dis, div = clone_disagreement(logits_a, logits_b).mean(), class_diversity(logits_a, logits_b)
    return -dis + div_weight * div, dis, div


class Replay:
    """The last ``capacity`` queries and the targets learnt from their answers, on the attack's device (a ring:
    once full, each new query replaces the oldest). Replay costs no queries: the answers are kept."""

    def __init__(self, capacity, device):
        self.capacity, self.device = int(capacity), device
        self.x = self.t = None
        self.n = self.pos = 0  # filled slots, next slot to write

    def __len__(self):
        return self.n

    def add(self, x, t):
        if self.capacity == 0:
            return
        x, t = x.detach()[-self.capacity:], t.detach()[-self.capacity:]
        if self.x is None:
            self.x = torch.empty((self.capacity, *x.shape[1:]), dtype=x.dtype, device=self.device)
            self.t = torch.empty((self.capacity, *t.shape[1:]), dtype=t.dtype, device=self.device)
        idx = (self.pos + torch.arange(x.shape[0], device=self.device)) % self.capacity
        self.x[idx], self.t[idx] = x, t
        self.pos, self.n = (self.pos + x.shape[0]) % self.capacity, min(self.n + x.shape[0], self.capacity)

    def sample(self, k, generator):
        """k stored (query, target) pairs drawn uniformly with replacement."""
        i = torch.randint(self.n, (k,), device=self.device, generator=generator)
        return self.x[i], self.t[i]

    def state_dict(self):
        # a copy of the filled slots: a view would make torch.save write the whole buffer, filled or not
        return {"x": None if self.x is None else self.x[:self.n].to("cpu", copy=self.n < self.capacity),
                "t": None if self.t is None else self.t[:self.n].to("cpu", copy=self.n < self.capacity),
                "pos": self.pos}

    def load_state_dict(self, st):
        self.x = self.t = None
        self.n = self.pos = 0
        if st["x"] is not None and st["x"].shape[0]:
            self.add(st["x"].to(self.device), st["t"].to(self.device))
            self.pos = st["pos"]


class DisGUIDE(DFME):
    """The attack's state: two clones (``student`` is the first, the one reported), the generator, the replay
    buffer, optimisers, RNG, progress. DFME's run loop, schedule, sampling and resumable state, with DisGUIDE's
    generator and clone steps. One SGD optimiser holds both clones' parameters (SGD's update is per parameter,
    so this is two optimisers with one learning rate)."""

    name = "DisGUIDE"

    def __init__(self, cfg, victim, clones, generator, num_classes, device, amp=None,
                 memory_format=torch.contiguous_format, seed=0, mean=(0.0,), std=(1.0,), mirror=None):
        if len(clones) != 2:
            raise ValueError(f"DisGUIDE trains two clones, got {len(clones)}")
        self.clones = tuple(clones)
        # DFME's setup with the first clone as the student; its Adam generator (g_optimizer is not a DisGUIDE flag)
        super().__init__(cfg, victim, clones[0], generator, num_classes, device, amp, memory_format, seed, mean, std,
                         mirror)
        self.replay = Replay(min(cfg.replay_size, cfg.query_budget), device)

    def trained_parameters(self):
        return [p for c in self.clones for p in c.parameters()]

    def generator_step(self):
        """One generator update through the clones alone: no victim call. Returns the generator's loss."""
        for c in self.clones:
            c.eval().requires_grad_(False)  # the gradient goes to the generator only
        x = self.sample(grad=True)
        with autocast(self.device, self.amp):
            outs = [c(x) for c in self.clones]
        loss, _, _ = generator_loss(outs[0].float(), outs[1].float(), self.cfg.div_weight)
        self.opt_G.zero_grad(set_to_none=True)
        loss.backward()
        self.opt_G.step()
        for c in self.clones:
            c.train().requires_grad_(True)
        return loss.item()

    def iteration(self):
        """DFME's iteration (generator steps, then d_iter clone steps on fresh batches), then rep_iter clone
        steps on replayed queries alone. The clone loss reported is the mean over all its clone steps."""
        g_loss, s_loss = super().iteration()
        rep = self.cfg.rep_iter if len(self.replay) else 0
        if rep:
            s_loss = (s_loss * self.cfg.d_iter + sum(self.replay_step() for _ in range(rep)).item()) / \
                (self.cfg.d_iter + rep)
        return g_loss, s_loss

    def student_step(self):
        """One update of both clones: a fresh batch asked once (batch_size queries, sampled with the generator in
        train mode) plus replayed queries and answers, then the fresh batch joins the buffer. Returns the clones'
        mean loss."""
        cfg = self.cfg
        x = self.sample(grad=False)  # in train mode (batch statistics), as DFME; the published code samples in eval
        # mode, which left the clones at chance on the fashionmnist_v2 ensemble (README, DisGUIDE)
        t = self.victim_targets(x)
        xs, ts = x, t
        if cfg.replay_batch and len(self.replay):
            xr, tr = self.replay.sample(cfg.replay_batch, self.rng)
            xs, ts = torch.cat([x, xr]).contiguous(memory_format=self.fmt), torch.cat([t, tr])
        self.replay.add(x, t)
        return self.clone_update(xs, ts)

    def replay_step(self):
        """One update of both clones on batch_size replayed queries and answers alone (no query). Returns the
        clones' mean loss."""
        xs, ts = self.replay.sample(self.cfg.batch_size, self.rng)
        return self.clone_update(xs.contiguous(memory_format=self.fmt), ts)

    def clone_update(self, xs, ts):
        """One SGD step of both clones towards targets ``ts`` on queries ``xs``; the clones' mean loss."""
        cfg = self.cfg
        losses = []
        for c in self.clones:
            with autocast(self.device, self.amp):
                out = c(xs)
            losses.append(student_loss(out.float(), ts, cfg.loss, cfg.target, self.mirror))
        loss = sum(losses)
        self.opt_S.zero_grad(set_to_none=True)
        loss.backward()
        self.opt_S.step()
        return loss.detach() / len(losses)

    def state_dict(self):
        return {**super().state_dict(), "clone2": self.clones[1].state_dict(), "replay": self.replay.state_dict()}

    def load_state_dict(self, st):
        super().load_state_dict(st)
        self.clones[1].load_state_dict(st["clone2"])
        self.replay.load_state_dict(st["replay"])
