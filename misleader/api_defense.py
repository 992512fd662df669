"""Output defenses of the served API: post-processors the BlackBox applies to the victim's probabilities after
the model and before the answer (and before the top-1 label of a label-only API). They compose with any victim.

``--api_defense NAME:key=value,...`` (every key required, none extra):

- ``rounding:decimals=k``  each probability rounded to k decimals (half to even), not renormalised;
- ``topk:k=K``  the K largest probabilities kept, the others set to 0, renormalised (K=1: a one-hot label);
- ``reverse_sigmoid:beta=B,gamma=G``  (Lee et al., 2019) with p clipped to [1e-9, 1 - 1e-9],
  r = B * (sigmoid(G * logit(p)) - 1/2), q = clip(p - r, 0, 1), answer q / sum(q);
- ``adaptive_misinformation:tau=T,nu=N,model=PATH``  (Kariyappa and Qureshi, CVPR 2020)
  a(x) = sigmoid(N * (T - max_i p_i)), answer (1 - a(x)) p + a(x) g(x), with g(x) the softmax of the
  misinformation model at PATH (Defense/train_misinformation.py) on the same query x.

Each defense is a function of (probabilities (N, C), query batch x) -> probabilities (N, C); ``APIDefense``
holds one with its parameters. ``served_utility`` is the evaluator's view of what users get: the served answers
on the test set, computed directly (no query is counted).
"""

import math
import os

import torch
import torch.nn.functional as F

from misleader.errors import UserError

NONE = "none"
CLIP = 1e-9


# ----------------------------------------------------------------------------- the defenses

def rounding(p, x, decimals):
    scale = 10.0 ** decimals
    return (torch.round(p.double() * scale) / scale).to(p.dtype)


def topk(p, x, k):
    kept = torch.zeros_like(p).scatter(1, p.topk(k, dim=1).indices, 1.0) * p
    return kept / kept.sum(1, keepdim=True)


def reverse_sigmoid(p, x, beta, gamma):
    c = p.double().clamp(CLIP, 1 - CLIP)  # in float64: 1 - 1e-9 is 1.0 in float32
    r = beta * (torch.sigmoid(gamma * torch.log(c / (1 - c))) - 0.5)
    q = (c - r).clamp(0, 1)
    return (q / q.sum(1, keepdim=True)).to(p.dtype)  # sum > 0: where c < 1/2, r < 0 and q > c


def adaptive_misinformation(p, x, tau, nu, model):
    return misinform(p, F.softmax(model(x).float(), 1), tau, nu)


def misinform(p, g, tau, nu):
    """The adaptive-misinformation answer from the served probabilities p and the misinformation model's g."""
    a = torch.sigmoid(nu * (tau - p.max(1, keepdim=True).values))
    return (1 - a) * p + a * g


# name -> (function, {key: (type, check, what a valid value is)}); keys in the order of the canonical spec
_POSITIVE = (lambda v: v > 0, "a positive number")
DEFENSES = {
    "rounding": (rounding, {"decimals": (int, lambda v: 0 <= v <= 9, "an integer from 0 to 9")}),
    "topk": (topk, {"k": (int, lambda v: v >= 1, "a positive integer")}),
    "reverse_sigmoid": (reverse_sigmoid, {"beta": (float, *_POSITIVE), "gamma": (float, *_POSITIVE)}),
    "adaptive_misinformation": (adaptive_misinformation, {
        "tau": (float, lambda v: 0 <= v <= 1, "a number from 0 to 1"), "nu": (float, *_POSITIVE),
        "model": (str, lambda v: bool(v), "a checkpoint path (Defense/train_misinformation.py)")}),
}
# defenses an attacker can copy onto its own clone from the published formula and parameters alone, through which
# gradients pass: reverse sigmoid (rounding and top-k have zero gradient almost everywhere; adaptive
# misinformation needs the owner's private misinformation model)
MIRRORABLE = ("reverse_sigmoid",)
USAGE = ("rounding:decimals=K | topk:k=K | reverse_sigmoid:beta=B,gamma=G | "
         "adaptive_misinformation:tau=T,nu=N,model=PATH | none")


def _value(text, kind):
    if kind is str:
        return text
    v = kind(text)  # int('0.5') and float('x') raise ValueError
    if kind is float and not math.isfinite(v):
        raise ValueError(text)
    return v


def _text(v):
    return format(v, ".12g") if isinstance(v, float) else str(v)


def parse_spec(spec):
    """'NAME:key=value,...' -> (name, {key: value}); 'none' or '' -> (None, {}). A bad spec is a UserError."""
    spec = (spec or "").strip()
    if spec in ("", NONE):
        return None, {}
    name, _, rest = spec.partition(":")
    if name not in DEFENSES:
        raise UserError(f"--api_defense {spec}: unknown defense '{name}'; valid: {USAGE}")
    keys = DEFENSES[name][1]
    given = {}
    for item in filter(None, (s.strip() for s in rest.split(","))):
        key, eq, text = (s.strip() for s in item.partition("="))
        if not eq or key not in keys:
            raise UserError(f"--api_defense {spec}: '{item}' is not one of {name}'s key=value items "
                            f"({', '.join(keys)})")
        if key in given:
            raise UserError(f"--api_defense {spec}: {key} given twice")
        kind, check, what = keys[key]
        try:
            value = _value(text, kind)
        except ValueError:
            value = None
        if value is None or not check(value):
            raise UserError(f"--api_defense {spec}: {key} must be {what}, got '{text}'")
        given[key] = value
    missing = [k for k in keys if k not in given]
    if missing:
        raise UserError(f"--api_defense {spec}: {name} needs {', '.join(f'{k}=...' for k in missing)}")
    return name, {k: given[k] for k in keys}


def canonical(spec):
    """The spec in one spelling (keys in their documented order, numbers as Python prints them); 'none' for
    no defense. What the results row records."""
    name, params = parse_spec(spec)
    if name is None:
        return NONE
    return f"{name}:" + ",".join(f"{k}={_text(v)}" for k, v in params.items())


def mirror(spec):
    """The attacker's copy of the published output defense ``spec``: probabilities (N, C) -> what the API would
    serve for them, differentiable (an attack's --mirror 1 applies it to its clone's softmax before comparing
    with the answers). A defense not in MIRRORABLE is a UserError.

    Reverse sigmoid is not one-to-one: at beta 1, gamma 0.1 a class's answer falls as its probability grows from 0
    to about 0.025, rises up to about 0.975 and falls again, and the clip at 1e-9 stops the gradient beyond it. A
    clone fitted through the copy can therefore settle on another probability with the same answer; one that is
    confident and wrong gets no gradient out of it. The copy makes the comparison exact, not the inversion
    unique."""
    name, params = parse_spec(spec)
    if name not in MIRRORABLE:
        raise UserError(f"--mirror 1 copies the API's output defense onto the clone; it needs --api_defense "
                        f"{' or '.join(MIRRORABLE)} (a formula of the probabilities alone, with a gradient), "
                        f"got --api_defense {canonical(spec)}")
    fn = DEFENSES[name][0]
    return lambda p: fn(p, None, **params)


class APIDefense:
    """One output defense with its parameters: ``defense(p, x)`` -> the answer's probabilities."""

    def __init__(self, name, params, model=None):
        self.name, self.params, self.model = name, dict(params), model
        self.fn = DEFENSES[name][0]

    @property
    def spec(self):
        return f"{self.name}:" + ",".join(f"{k}={_text(v)}" for k, v in self.params.items())

    @property
    def slug(self):
        """The defense in a file name: name-key<value>..., a model by its file's stem."""
        parts = [f"{k}{os.path.splitext(os.path.basename(v))[0] if k == 'model' else _text(v)}"
                 for k, v in self.params.items()]
        return "-".join([self.name, *parts])

    def to(self, device, memory_format=torch.contiguous_format):
        if self.model is not None:
            self.model = self.model.to(device, memory_format=memory_format).eval()
        return self

    @torch.no_grad()
    def __call__(self, p, x):
        kwargs = {k: v for k, v in self.params.items() if k != "model"}
        if self.model is not None:
            kwargs["model"] = self.model
        return self.fn(p.float(), x, **kwargs).float()


def build(spec, info):
    """--api_defense text -> APIDefense (or None for 'none'), checked against dataset ``info``; the
    misinformation model is loaded here (on the CPU; ``.to`` moves it)."""
    name, params = parse_spec(spec)
    if name is None:
        return None
    model = None
    if name == "topk" and params["k"] > info.num_classes:
        raise UserError(f"--api_defense {spec}: k must be at most the number of classes ({info.num_classes})")
    if name == "adaptive_misinformation":
        from misleader import checkpoint

        path = params["model"]
        ck = checkpoint.check(checkpoint.load(path, made_by="Defense/train_misinformation.py"), path,
                              kind="classifier", num_classes=info.num_classes, in_channels=info.in_channels,
                              dataset=info.name)
        model = checkpoint.build_classifier(ck).eval()
    return APIDefense(name, params, model)


@torch.no_grad()
def misinformation_thresholds(p, g, y, nu, costs, steps=1000):
    """The adaptive-misinformation thresholds an owner would pick on a validation split: for each utility cost
    (a fraction, 0.01 = one point), tau raised from 0 in steps of 1/steps for as long as the served top-1
    accuracy on (p, g, y) stays at least the raw accuracy minus that cost; the last such tau. ``p`` are the served
    model's probabilities, ``g`` the misinformation model's, on the same images, computed as the API serves them
    (float32). Returns [(tau, served accuracy)] in the order of ``costs``, (None, None) where even tau = 0 costs
    more. A larger tau sends more queries to the misinformation model; the accuracy need not fall monotonically
    with tau (g can put a raw mistake right), so the scan stops at the first tau over the cost rather than
    taking the largest that passes."""
    p, g = p.float(), g.float()
    raw = (p.argmax(1) == y).float().mean().item()
    served = []  # accuracy along the grid, once for every cost, up to the first tau over the largest cost
    for i in range(steps + 1):
        served.append((misinform(p, g, i / steps, nu).argmax(1) == y).float().mean().item())
        if served[-1] < raw - max(costs) - 1e-9:
            break
    out = []
    for cost in costs:
        n = next((i for i, acc in enumerate(served) if acc < raw - cost - 1e-9), len(served))
        out.append(((n - 1) / steps, served[n - 1]) if n else (None, None))
    return out


@torch.no_grad()
def served_utility(defense, probs, x, y, batch_size=2048):
    """(top-1 accuracy of the served answers, mean L1 distance between served and unperturbed probabilities)
    over (x, y), where ``probs`` are the model's float32 probabilities on the queries x. The evaluator's view:
    the defense function is applied directly, in float32 as the BlackBox serves it (never under autocast: a
    bfloat16 misinformation model would move answers near tau), and no query is counted. No defense: (accuracy of
    probs, 0.0)."""
    if defense is None:
        return (probs.argmax(1) == y).float().mean().item(), 0.0
    correct, l1 = 0.0, 0.0
    for i in range(0, x.shape[0], batch_size):
        p = probs[i:i + batch_size].float()
        q = defense(p, x[i:i + batch_size])
        correct += (q.argmax(1) == y[i:i + batch_size]).sum().item()
        l1 += (q - p).abs().sum().item()
    return correct / x.shape[0], l1 / x.shape[0]
