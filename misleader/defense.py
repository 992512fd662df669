"""One MISLEADER member trained against a simulated attacker (the surrogate), one min-max step at a time.

Per clean batch x (images in [0, 1]):
  1. a_iter surrogate steps, each on a fresh attacker-proxy batch aug.proxy(x):
     minimise KL(softmax(member(xa)).detach() || softmax(surrogate(xa)));
  2. one member step on x and another fresh proxy batch xa:
     minimise KD(member(x), teacher(x), y; T, alpha) - lambda * KL(softmax(member(xa)) || softmax(surrogate(xa))).
Both steps clip the gradient norm at 5. BatchNorm running statistics: the member's move only on its clean
batch, never on a proxy batch (its test-time statistics are those of clean data); the surrogate's move only in
its own training step, on the proxy data a real attacker would train on. Every other forward pass normalises
with its batch's statistics and leaves the running ones as they are.
"""

import contextlib

import torch
import torch.nn.functional as F

from misleader.losses import member_loss, surrogate_loss
from misleader.runtime import autocast

CLIP = 5.0


@contextlib.contextmanager
def frozen_bn_stats(*models):
    """Forward passes inside use batch statistics (as in training) but leave BatchNorm running statistics
    and counters untouched."""
    bns = [m for model in models for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
           and m.track_running_stats]
    for m in bns:
        m.track_running_stats = False
    try:
        yield
    finally:
        for m in bns:
            m.track_running_stats = True


class DefenseStep:
    def __init__(self, member, surrogate, teacher, aug, opt_member, opt_surrogate, T, alpha, lambda_, a_iter,
                 device, amp=None, memory_format=torch.contiguous_format):
        self.member, self.surrogate, self.teacher, self.aug = member, surrogate, teacher.eval(), aug
        self.opt_m, self.opt_s = opt_member, opt_surrogate
        self.T, self.alpha, self.lambda_, self.a_iter = T, alpha, lambda_, a_iter
        self.device, self.amp, self.fmt = device, amp, memory_format

    def _fwd(self, model, x):
        with autocast(self.device, self.amp):
            return model(x.contiguous(memory_format=self.fmt)).float()

    def surrogate_step(self, x):
        xa = self.aug.proxy(x)
        with torch.no_grad(), frozen_bn_stats(self.member):
            target = self._fwd(self.member, xa)
        loss = surrogate_loss(target, self._fwd(self.surrogate, xa))
        self.opt_s.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.surrogate.parameters(), CLIP)
        self.opt_s.step()
        return loss.detach()

    def member_step(self, x, y):
        xc, xa = self.aug.clean(x), self.aug.proxy(x)
        with torch.no_grad(), frozen_bn_stats(self.surrogate):
            t_out = self._fwd(self.teacher, xc)
            s_out = self._fwd(self.surrogate, xa)
        m_clean = self._fwd(self.member, xc)  # the only pass that moves the member's running statistics
        with frozen_bn_stats(self.member):
            m_proxy = self._fwd(self.member, xa)
        total, kd, attack = member_loss(m_clean, t_out, y, m_proxy, s_out, self.T, self.alpha, self.lambda_)
        self.opt_m.zero_grad(set_to_none=True)
        total.backward()
        torch.nn.utils.clip_grad_norm_(self.member.parameters(), CLIP)
        self.opt_m.step()
        return total.detach(), kd.detach(), attack.detach()

    def step(self, x, y):
        """One defense step; returns a tensor [total, kd, attack_kl, surrogate_loss] (no host sync)."""
        self.member.train()
        self.surrogate.train()
        s_loss = torch.stack([self.surrogate_step(x) for _ in range(self.a_iter)]).mean() if self.a_iter else \
            torch.zeros((), device=x.device)
        total, kd, attack = self.member_step(x, y)
        return torch.stack([total, kd, attack, s_loss])

    @torch.no_grad()
    def proxy_agreement(self, x, seed, batch_size=2048):
        """Fraction of proxy-augmented images of x on which member and surrogate predict the same class.
        The augmentation is drawn from ``seed``; the training augmentation stream is left untouched."""
        self.member.eval()
        self.surrogate.eval()
        saved = self.aug.g.get_state()
        self.aug.g.manual_seed(seed)
        agree = 0
        for i in range(0, x.shape[0], batch_size):
            xa = self.aug.proxy(x[i:i + batch_size])
            agree += (self._fwd(self.member, xa).argmax(1) == self._fwd(self.surrogate, xa).argmax(1)).sum().item()
        self.aug.g.set_state(saved)
        return agree / x.shape[0]


def proxy_kl(member, surrogate, xa):
    """Unclamped batch-mean KL(member || surrogate) on a proxy batch (for tests and logging)."""
    with torch.no_grad():
        p = F.log_softmax(member(xa).float(), 1)
        q = F.log_softmax(surrogate(xa).float(), 1)
    return (p.exp() * (p - q)).sum(1).mean().item()
