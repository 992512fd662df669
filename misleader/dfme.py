"""DFME: data-free model extraction (Truong et al., 2021), written against the counted BlackBox.

Per iteration: g_iter generator steps (zeroth-order gradients through the victim), then d_iter
student steps (the student imitates the victim's recovered logits on fresh generator samples).
The attack holds nothing but the BlackBox; evaluation of the clone happens in a callback.

Two options adapt the attacker to a defense whose answers put many classes near zero probability (both off
by default, DFME as published): ``logit_floor`` raises probabilities below it to it before log p and the mean
correction, and ``target="probs"`` has the student match the victim's probabilities instead of recovered
logits (``target="label"``: the top-1 label of each answer, for a defense that bends the probabilities but
keeps their argmax); either applies to the student's targets and to the generator's zeroth-order loss alike. A
third, ``mirror`` (with ``target="probs"``), adapts it to a published output defense given by a formula (reverse
sigmoid): the student's probabilities pass through the same defense before they are compared with the answers.
"""

import math
import time
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from misleader import zoo
from misleader.errors import NonFiniteLoss, UserError
from misleader.losses import TARGETS, per_sample_disagreement, student_loss
from misleader.models import Generator, create_model
from misleader.runtime import autocast, seeded
from misleader.victim import logits_from_probs


@dataclass
class DFMEConfig:
    query_budget: int = 2_000_000  # in queries (the CLI takes millions)
    batch_size: int = 256
    epoch_itrs: int = 50
    g_iter: int = 1
    d_iter: int = 5
    lr_S: float = 0.1
    lr_G: float = 1e-4
    nz: int = 256
    grad_m: int = 1
    grad_epsilon: float = 1e-3
    loss: str = "l1"
    scheduler: str = "multistep"
    steps: tuple = (0.5, 0.8)  # DFME's 2M-query schedule; DFME's CIFAR runs use 0.1 0.3 0.5
    scale: float = 0.3
    momentum: float = 0.9
    weight_decay: float = 5e-4
    g_optimizer: str = "adam"  # MAZE: sgd
    probs_as_logits: bool = False
    query_range: str = "tanh"  # "tanh": tanh(G(z)) is the normalized input (DFME); "data": see query_map
    # Attackers that adapt to a defense whose answers put classes near zero probability (off: DFME as published)
    logit_floor: float = 0.0  # probabilities below it are raised to it before log p and the mean correction
    target: str = "logits"  # what the student matches: recovered logits (DFME), the probabilities or top-1 labels
    mirror: bool = False  # the attacker applies the API's published output defense to its clone's probabilities

    # not fields: how a subclass (misleader.disguide's config) differs
    unused = ()  # fields the attack ignores: left at their defaults, out of the settings text and the state
    cost_formula = "batch_size*(g_iter*(grad_m+1)+d_iter)"  # cost_per_iteration, as the budget error names it

    @property
    def cost_per_iteration(self):
        return self.batch_size * (self.g_iter * (self.grad_m + 1) + self.d_iter)

    @property
    def epochs(self):
        return self.query_budget // (self.cost_per_iteration * self.epoch_itrs) + 1

    def validate(self):
        if self.query_budget <= 0:
            raise UserError(f"--query_budget must be positive, got {self.query_budget / 1e6:g}M")
        if self.query_budget < self.cost_per_iteration:
            raise UserError(f"--query_budget {self.query_budget} queries is less than one iteration's cost of "
                            f"{self.cost_per_iteration} = {self.cost_formula}; minimum is "
                            f"{self.cost_per_iteration / 1e6:g}M")
        for name in ("batch_size", "epoch_itrs", "g_iter", "d_iter", "grad_m", "nz"):
            if getattr(self, name) < 1:
                raise UserError(f"--{name} must be at least 1, got {getattr(self, name)}")
        if self.grad_epsilon <= 0:
            raise UserError(f"--grad_epsilon must be positive, got {self.grad_epsilon}")
        if self.query_range not in ("tanh", "data"):
            raise UserError(f"--query_range must be tanh or data, got {self.query_range}")
        if self.g_optimizer not in ("adam", "sgd"):
            raise UserError(f"--g_optimizer must be adam or sgd, got {self.g_optimizer}")
        if self.scheduler not in ("multistep", "cosine", "none"):
            raise UserError(f"--scheduler must be multistep, cosine or none, got {self.scheduler}")
        check_targets(self)

    def as_dict(self):
        """The fields and their values (dataclasses.asdict), less those in ``unused``."""
        return {k: v for k, v in asdict(self).items() if k not in self.unused}


def check_targets(cfg, num_classes=None):
    """The target options (--loss, --target, --logit_floor, --mirror) of an attack config, as UserErrors; with
    ``num_classes``, also that the floor leaves room for an answer (floor * classes < 1)."""
    if cfg.loss not in ("l1", "kl"):
        raise UserError(f"--loss must be l1 or kl, got {cfg.loss}")
    if cfg.target not in TARGETS:
        raise UserError(f"--target must be {', '.join(TARGETS)}, got {cfg.target}")
    if not 0 <= cfg.logit_floor < 1:
        raise UserError(f"--logit_floor must be in [0, 1), got {cfg.logit_floor:g}")
    if num_classes is not None and cfg.logit_floor * num_classes >= 1:
        raise UserError(f"--logit_floor {cfg.logit_floor:g} times {num_classes} classes is not below 1: every "
                        "answer would be flattened to the uniform distribution")
    if cfg.logit_floor and cfg.target != "logits":
        raise UserError(f"--logit_floor clips recovered logits; it has no effect with --target {cfg.target}")
    if cfg.mirror and cfg.target != "probs":
        raise UserError("--mirror 1 compares the clone's probabilities, passed through the API's defense, with the "
                        "answers: it needs --target probs")
    if cfg.probs_as_logits and (cfg.logit_floor or cfg.target != "logits"):
        raise UserError("--probs_as_logits 1 reproduces earlier code's handicap; it cannot be combined with "
                        f"--logit_floor or --target {cfg.target}")


def answer_targets(answer, output, num_classes, target="logits", logit_floor=0.0, probs_as_logits=False):
    """What the attacker trains on, from one victim answer of the given BlackBox output mode.

    target "logits" (DFME): probabilities are raised to ``logit_floor`` (0: off), then log p minus its mean
    (victim.logits_from_probs); a raw-logits answer is centred, or with a floor taken through its softmax
    first; a label answer (label-only API) is the one-hot vector minus its mean (no floor). target "probs": the
    probabilities (softmax of a raw-logits answer; the one-hot vector of a label). target "label": the one-hot
    vector of the answer's top-1 class, whatever the API served (an attacker that keeps only the argmax)."""
    if target == "label" and output != "label":
        answer, output = answer.argmax(1), "label"
    if output == "label":
        answer = F.one_hot(answer, num_classes).float()
        return answer if target in ("probs", "label") else answer - answer.mean(1, keepdim=True)
    if output != "probs" and (target == "probs" or logit_floor):
        answer, output = F.softmax(answer.float(), 1), "probs"
    if output != "probs":
        return answer - answer.mean(1, keepdim=True)
    if target == "probs":
        return answer
    if logit_floor:
        answer = answer.clamp(min=logit_floor)
    return logits_from_probs(answer, probs_as_logits)


# MAZE's settings on top of DFME's: KL loss, batch 128, 10 directions, SGD generator (momentum 0.9, weight decay
# 5e-4, as DFME's MAZE mode) at 1e-4, cosine schedule. The entry point applies them as defaults: flags win.
MAZE_PRESET = {"loss": "kl", "batch_size": 128, "grad_m": 10, "lr_G": 1e-4, "g_optimizer": "sgd", "scheduler": "cosine"}


def query_map(query_range, mean, std):
    """(scale, shift) with query = scale * tanh(G(z)) + shift, per channel, shaped (1, C, 1, 1).

    "tanh" is DFME's choice: the tanh output is fed as an already normalized image, so queries span
    [-1, 1] in normalized units whatever the data (on Fashion-MNIST, raw pixels -0.07..0.64 only).
    "data" maps [-1, 1] onto raw pixels [0, 1] and normalizes them like the victim's data, so the
    queries span exactly the valid images."""
    mean, std = torch.as_tensor(mean).view(1, -1, 1, 1), torch.as_tensor(std).view(1, -1, 1, 1)
    if query_range == "tanh":
        return torch.ones_like(std), torch.zeros_like(mean)
    return 0.5 / std, (0.5 - mean) / std


# off by default, and then left out of the settings text (rows written before they existed keep their text)
ADAPTIVE_DEFAULTS = {"logit_floor": 0.0, "target": "logits", "mirror": False, "rep_iter": 0}


def settings_text(cfg, **extra):
    """The attack's defining settings as one 'key=value ...' string (results.csv's settings column): every
    field of the config (cfg.as_dict(): a DFMEConfig or a subclass's) except those with columns of their own
    (query_budget, probs_as_logits, query_range).
    logit_floor, target and mirror appear only when they are not DFME's (off, logits, off), DisGUIDE's rep_iter
    only when not 0: a plain row keeps the text of the rows written before they existed, so the report still
    groups them together."""
    fields = {k: v for k, v in cfg.as_dict().items() if k not in ("query_budget", "probs_as_logits", "query_range")}
    for k, published in ADAPTIVE_DEFAULTS.items():
        if fields.get(k) == published:
            del fields[k]
    fields.update(extra)
    return " ".join(f"{k}={','.join(f'{x:g}' for x in v) if isinstance(v, (tuple, list)) else v}"
                    for k, v in fields.items())


def attacker_models(student_arch, num_classes, in_channels, nz, ngf, seed):
    """Student and generator initialised from their own RNG seeded with ``seed``, whatever the caller did to
    the global RNG before (building a victim draws from it): paired seeds start every victim's attack from
    the same weights. The global RNG is left as it was."""
    return seeded(seed, lambda: (create_model(student_arch, num_classes, in_channels),
                                 Generator(nz=nz, ngf=ngf, nc=in_channels)))


def milestones(cfg, epochs):
    """DFME's multistep milestones: int(step * epochs) for each step (0 included)."""
    return [int(st * epochs) for st in cfg.steps]


def lr_factor(cfg, epoch, epochs):
    """The factor on both base learning rates while epoch ``epoch`` (counted from 1) trains.

    DFME steps its schedulers at the *start* of every epoch, so epoch e trains at
    lr * scale^(number of milestones <= e) (a milestone at 0 starts decayed), and with the cosine
    schedule at lr * (1 + cos(pi * e / epochs)) / 2."""
    if cfg.scheduler == "multistep":
        return cfg.scale ** sum(m <= epoch for m in milestones(cfg, epochs))
    if cfg.scheduler == "cosine":
        return 0.5 * (1 + math.cos(math.pi * epoch / epochs))
    return 1.0


class DFME:
    """The attack's state: student, generator, their optimisers and schedules, RNG, progress.

    ``amp`` is used for the generator and for the student's training steps only; every evaluation
    that enters a finite difference (victim and student at the perturbed points) stays float32.
    ``mean``/``std`` are the victim data's normalization constants, used by ``cfg.query_range``. ``mirror``
    (with cfg.mirror): the attacker's copy of the API's published defense (misleader.api_defense.mirror), applied
    to the student's probabilities in its loss and in the generator's."""

    name = "DFME"  # in error messages

    def __init__(self, cfg, victim, student, generator, num_classes, device, amp=None,
                 memory_format=torch.contiguous_format, seed=0, mean=(0.0,), std=(1.0,), mirror=None):
        cfg.validate()
        check_targets(cfg, num_classes)
        if bool(cfg.mirror) != (mirror is not None):
            raise ValueError("cfg.mirror and the mirror function go together")
        self.mirror = mirror
        self.q_scale, self.q_shift = (t.to(device) for t in query_map(cfg.query_range, mean, std))
        self.cfg, self.victim, self.student, self.generator = cfg, victim, student, generator
        self.num_classes, self.device, self.amp, self.fmt = num_classes, device, amp, memory_format
        self.opt_S = torch.optim.SGD(self.trained_parameters(), lr=cfg.lr_S, momentum=cfg.momentum,
                                     weight_decay=cfg.weight_decay)
        if cfg.g_optimizer == "sgd":
            self.opt_G = torch.optim.SGD(generator.parameters(), lr=cfg.lr_G, momentum=cfg.momentum,
                                         weight_decay=cfg.weight_decay)
        else:
            self.opt_G = torch.optim.Adam(generator.parameters(), lr=cfg.lr_G)
        self._start(seed)

    def trained_parameters(self):
        """What the student optimiser trains (an attack with several clones trains them all)."""
        return list(self.student.parameters())

    def _start(self, seed):
        """RNG, first epoch's learning rates, progress counters: the state before the first iteration."""
        self.rng = torch.Generator(device=self.device).manual_seed(seed)
        self.set_lr(1)
        self.epoch, self.itr = 0, 0  # completed epochs, completed iterations within the current epoch
        self.best_acc = -1.0
        self.last = {}
        self.sums = {"g": 0.0, "s": 0.0, "n": 0, "used0": 0, "secs": 0.0}  # the running epoch, saved with the state
        self.wall_before, self._run_t0 = 0.0, None  # seconds spent in run() by earlier processes / this call's start

    def wall_s(self):
        """Seconds spent in run() over the whole attack, including processes before a resume."""
        return self.wall_before + (time.time() - self._run_t0 if self._run_t0 is not None else 0.0)

    def to_query(self, t):
        """The image the victim is asked about, from the generator's tanh output."""
        return (t * self.q_scale + self.q_shift).contiguous(memory_format=self.fmt)

    # -- victim answers as the attacker sees them
    def victim_logits(self, x):
        """probs: log p (p raised to --logit_floor first, if set) minus its mean; label (a label-only API): the
        one-hot answer minus its mean, which carries no zeroth-order signal (a small step rarely changes the
        label); logits: as given, centred. One victim call of x.shape[0] queries."""
        return answer_targets(self.victim(x), self.victim.output, self.num_classes, "logits", self.cfg.logit_floor,
                              self.cfg.probs_as_logits)

    def victim_targets(self, x):
        """What the student matches and the generator's loss compares with: victim_logits, or with --target
        probs the victim's probabilities. One victim call of x.shape[0] queries."""
        cfg = self.cfg
        return answer_targets(self.victim(x), self.victim.output, self.num_classes, cfg.target, cfg.logit_floor,
                              cfg.probs_as_logits)

    def sample(self, grad=False, pre_x=False):
        z = torch.randn(self.cfg.batch_size, self.cfg.nz, device=self.device, generator=self.rng)
        with torch.set_grad_enabled(grad), autocast(self.device, self.amp):
            x = self.generator(z, pre_x=pre_x, memory_format=self.fmt).float()
        return x.contiguous(memory_format=self.fmt) if pre_x else self.to_query(x)

    def generator_gradient(self, x_pre, u):
        """DFME's zeroth-order estimate of d(-disagreement)/d x_pre, the gradient sent back into G.

        Per sample: d/eps * mean_m[(L(x + eps*u_m) - L(x)) * u_m] with L the negative per-sample disagreement
        at tanh(.), against victim_targets (--target and --logit_floor apply here as in the student's targets);
        in l1 mode DFME then divides by (num_classes * N), in kl mode it does not.
        Returns (gradient, L at x_pre)."""
        cfg = self.cfg

        def loss_at(points):  # what the generator maximises, per point; float32 (a mirrored defense: float64 inside)
            x = self.to_query(torch.tanh(points))
            return -per_sample_disagreement(self.student(x).float(), self.victim_targets(x), cfg.loss, cfg.target,
                                            self.mirror)

        grad, loss = zoo.forward_difference(loss_at, x_pre, cfg.grad_m, cfg.grad_epsilon, u)
        if cfg.loss == "l1":
            grad = grad / (self.num_classes * x_pre.shape[0])
        return grad, loss

    def generator_step(self):
        cfg = self.cfg
        self.student.eval()
        x_pre = self.sample(grad=True, pre_x=True)
        u = zoo.unit_directions(x_pre.shape[0], cfg.grad_m, x_pre.shape[1:], self.device, self.rng)
        grad, loss = self.generator_gradient(x_pre.detach().float(), u)
        self.opt_G.zero_grad(set_to_none=True)
        x_pre.backward(grad.to(x_pre.dtype))
        self.opt_G.step()
        self.student.train()
        return loss.mean().item()

    def student_step(self):
        x = self.sample(grad=False)
        target = self.victim_targets(x)
        with autocast(self.device, self.amp):
            out = self.student(x)
        loss = student_loss(out.float(), target, self.cfg.loss, self.cfg.target, self.mirror)
        self.opt_S.zero_grad(set_to_none=True)
        loss.backward()
        self.opt_S.step()
        return loss.detach()

    def iteration(self):
        cfg = self.cfg
        self.generator.train()
        g_loss = sum(self.generator_step() for _ in range(cfg.g_iter)) / cfg.g_iter
        s_loss = sum(self.student_step() for _ in range(cfg.d_iter)).item() / cfg.d_iter
        self.itr += 1
        return g_loss, s_loss

    def set_lr(self, epoch):
        """Both learning rates for epoch ``epoch`` (counted from 1), by ``lr_factor``."""
        f = lr_factor(self.cfg, epoch, self.cfg.epochs)
        self.opt_S.param_groups[0]["lr"], self.opt_G.param_groups[0]["lr"] = self.cfg.lr_S * f, self.cfg.lr_G * f

    def can_continue(self):
        """Another iteration is paid for, or an epoch has iterations but is not closed yet (a state saved after the
        last paid iteration, before its epoch's evaluation: the resumed run closes and logs it, asking nothing)."""
        pending = self.sums["n"] > 0 or self.itr > 0
        return (self.victim.left >= self.cfg.cost_per_iteration or pending) and self.epoch < self.cfg.epochs

    def run(self, on_epoch=None, on_iteration=None, progress=None):
        """Train until the budget cannot pay for another iteration. on_epoch(self, stats) evaluates and
        logs; on_iteration(self) may save state. Returns the number of iterations run in this call.
        An iteration with a non-finite loss raises NonFiniteLoss (iterations counted from 0 over the whole
        attack) before on_iteration sees it; the attack's state is then broken and must not be saved."""
        self.wall_before, self._run_t0 = self.wall_s(), time.time()
        try:
            return self._run(on_epoch, on_iteration, progress)
        finally:  # stop the clock: wall_s() is the attack's time, not the time since
            self.wall_before, self._run_t0 = self.wall_s(), None

    def _run(self, on_epoch, on_iteration, progress):
        cfg, done = self.cfg, 0
        while self.can_continue():
            self.set_lr(self.epoch + 1)  # DFME's schedule: decided at the start of the epoch
            sums = self.sums
            if sums["n"] == 0:
                sums["used0"] = self.victim.used
            while self.itr < cfg.epoch_itrs and self.victim.left >= cfg.cost_per_iteration:
                t0 = time.time()
                g, s = self.iteration()
                if not (math.isfinite(g) and math.isfinite(s)):  # stop before on_iteration can save the broken state
                    at = self.epoch * cfg.epoch_itrs + self.itr - 1
                    raise NonFiniteLoss(f"non-finite {self.name} loss at iteration {at} (epoch {self.epoch + 1}): "
                                        f"loss_G {g:.4g}, loss_S {s:.4g}; the last good state is kept")
                sums["g"], sums["s"], sums["n"], done = sums["g"] + g, sums["s"] + s, sums["n"] + 1, done + 1
                sums["secs"] += time.time() - t0
                if progress is not None:
                    progress.update(cfg.cost_per_iteration)
                if on_iteration is not None:
                    on_iteration(self)
            self.epoch += 1
            self.itr = 0
            n = max(sums["n"], 1)
            self.last = {"loss_G": sums["g"] / n, "loss_S": sums["s"] / n,
                         "lr_S": self.opt_S.param_groups[0]["lr"], "lr_G": self.opt_G.param_groups[0]["lr"],
                         "queries_used": self.victim.used,
                         "queries_per_s": (self.victim.used - sums["used0"]) / max(sums["secs"], 1e-9)}
            self.sums = {"g": 0.0, "s": 0.0, "n": 0, "used0": self.victim.used, "secs": 0.0}
            if on_epoch is not None:
                on_epoch(self, self.last)
        return done

    # -- resumable state
    def state_dict(self):
        return {"student": self.student.state_dict(), "generator": self.generator.state_dict(),
                "opt_S": self.opt_S.state_dict(), "opt_G": self.opt_G.state_dict(),
                "rng": self.rng.get_state(), "torch_rng": torch.get_rng_state(), "epoch": self.epoch,
                "itr": self.itr, "best_acc": self.best_acc, "queries_used": self.victim.used, "sums": dict(self.sums),
                "wall_s": self.wall_s(),
                "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.cfg.as_dict().items()}}

    def load_state_dict(self, st):
        self.student.load_state_dict(st["student"])
        self.generator.load_state_dict(st["generator"])
        self.opt_S.load_state_dict(st["opt_S"])
        self.opt_G.load_state_dict(st["opt_G"])
        self.rng.set_state(st["rng"])
        torch.set_rng_state(st["torch_rng"])
        self.epoch, self.itr, self.best_acc = st["epoch"], st["itr"], st["best_acc"]
        self.victim.used = st["queries_used"]
        self.sums = dict(st["sums"])
        self.wall_before, self._run_t0 = float(st.get("wall_s", 0.0)), None
