"""The black-box prediction API an attacker talks to: fixed output mode, counted queries, a hard budget."""

import torch
import torch.nn.functional as F

from misleader.runtime import autocast

OUTPUT_MODES = ("probs", "logits", "label")


class BudgetExceeded(RuntimeError):
    """A query batch would take the victim past its budget; it was refused before any answer."""


class BlackBox:
    """Wraps a model (teacher, member or ensemble). ``victim(x)`` answers a batch and counts
    ``x.shape[0]`` queries; a call that would exceed ``budget`` raises BudgetExceeded and answers nothing.

    output: "probs" (default, as a real API), "logits" (the model's raw outputs; for an ensemble the
    log of its averaged probabilities) or "label" (top-1 class indices).

    defense: an output defense (misleader.api_defense.APIDefense, or any ``f(probs, x) -> probs``), applied to
    the model's probabilities after the model and before the answer: "probs" answers the defended
    probabilities, "label" their top-1 class; "logits" (the raw model) cannot be defended."""

    def __init__(self, model, budget, output="probs", amp=None, chunk=8192, defense=None):
        if output not in OUTPUT_MODES:
            raise ValueError(f"output must be one of {OUTPUT_MODES}, got {output!r}")
        if budget <= 0:
            raise ValueError(f"budget must be positive, got {budget}")
        if defense is not None and output == "logits":
            raise ValueError("an output defense answers probabilities or labels, not the raw logits")
        self._model = model.eval()
        self.budget, self.output, self.amp, self.chunk = int(budget), output, amp, chunk
        self._defense = defense
        self.used = 0

    @property
    def left(self):
        return self.budget - self.used

    @torch.no_grad()
    def __call__(self, x):
        n = x.shape[0]
        if n > self.left:
            raise BudgetExceeded(f"query of {n} samples refused: {self.used} of {self.budget} used, {self.left} left")
        outs = []
        for i in range(0, n, self.chunk):
            xc = x[i:i + self.chunk]
            with autocast(x.device, self.amp):
                out = self._model(xc).float()
            # the defense in float32, outside the model's autocast (served_utility measures it so)
            outs.append(out if self._defense is None else self._defense(F.softmax(out, 1), xc).float())
        out = torch.cat(outs)
        self.used += n
        if self._defense is not None:  # out: the defended probabilities
            return out.argmax(1) if self.output == "label" else out
        if self.output == "probs":
            return F.softmax(out, 1)
        if self.output == "label":
            return out.argmax(1)
        return out


def logits_from_probs(p, probs_as_logits=False):
    """What an attacker recovers from a probability answer: log p minus its per-row mean.

    probs_as_logits=True reproduces earlier public code, which fed probabilities to log_softmax as if
    they were logits; that flattens the targets (p - mean p) and understates the attack."""
    if probs_as_logits:
        z = F.log_softmax(p, 1)
    else:
        z = p.clamp(min=torch.finfo(torch.float32).tiny).log()
    return z - z.mean(1, keepdim=True)
