"""Checkpoints: plain dicts of tensors and primitives, written atomically, read with weights_only=True."""

import os
import pickle
import tempfile

import torch

from misleader.errors import UserError

FORMAT = 1


def save(path, payload):
    """Write payload to path atomically: a temp file in the same folder, fsync, then rename."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".pt", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; a checkpoint gets the usual permissions
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def classifier_payload(model, arch, dataset, num_classes, in_channels, metrics=None, args=None, seed=None,
                       kind="classifier"):
    return {
        "format": FORMAT, "kind": kind, "arch": arch, "dataset": dataset, "num_classes": num_classes,
        "in_channels": in_channels, "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "metrics": dict(metrics or {}), "args": dict(args or {}), "seed": seed,
    }


def load(path, made_by=None):
    """torch.load(weights_only=True) with one-line errors for a missing, corrupt or unsafe file."""
    hint = f" (made by {made_by})" if made_by else ""
    if not os.path.isfile(path):
        raise UserError(f"checkpoint not found: {path}{hint}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise UserError(f"refusing to load {path}: it holds pickled Python objects, not plain tensors and numbers "
                        f"(torch.load weights_only=True)") from e
    except Exception as e:  # truncated zip, garbage bytes, a CSV by mistake: torch raises many kinds
        raise UserError(f"checkpoint {path} is truncated or corrupt ({type(e).__name__}); "
                        f"delete it and rerun{(' ' + made_by) if made_by else ''}") from e
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT or "kind" not in ckpt:
        raise UserError(f"{path} is not a MISLEADER checkpoint (format {FORMAT})")
    return ckpt


def check(ckpt, path, kind=None, arch=None, num_classes=None, in_channels=None, dataset=None):
    """Raise a UserError naming the first field of ckpt that differs from what the caller expects."""
    expected = {"kind": kind, "arch": arch, "num_classes": num_classes, "in_channels": in_channels, "dataset": dataset}
    for key, want in expected.items():
        if want is not None and ckpt.get(key) != want:
            raise UserError(f"checkpoint {path} has {key}={ckpt.get(key)!r}, expected {want!r}")
    return ckpt


def split_seed_of(ck):
    """The train/validation split seed a checkpoint was trained with (before --split_seed existed: --seed)."""
    args = ck.get("args") or {}
    return args.get("split_seed", args.get("seed", ck.get("seed")))


def check_split(ck, path, split_seed):
    """Refuse a model trained on another train/validation split: its training images would be validation
    images here. A checkpoint that records no seed at all is taken as it is."""
    theirs = split_seed_of(ck)
    if theirs is not None and theirs != split_seed:
        raise UserError(f"checkpoint {path} was trained with split seed {theirs}, this run uses --split_seed "
                        f"{split_seed}; one comparison keeps one split")
    return ck


def rng_snapshot(*generators):
    """The global torch RNG (and CUDA's) plus the given torch.Generators, as tensors."""
    snap = {"torch": torch.get_rng_state(), "gens": [g.get_state() for g in generators]}
    if torch.cuda.is_available():
        snap["cuda"] = torch.cuda.get_rng_state_all()
    return snap


def rng_restore(snap, *generators):
    torch.set_rng_state(snap["torch"])
    for g, s in zip(generators, snap["gens"]):
        g.set_state(s)
    if "cuda" in snap and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(snap["cuda"])


def state_path(out_path):
    """Where a run's resumable state lives, beside its final checkpoint."""
    return out_path[:-3] + ".state.pt" if out_path.endswith(".pt") else out_path + ".state.pt"


def check_writable(path):
    """Fail before training when the output folder cannot be created or written."""
    folder = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".probe-", dir=folder)
        os.close(fd)
        os.remove(tmp)
    except OSError as e:
        raise UserError(f"cannot write to {folder}: {e.strerror}") from e


def load_classifier(path, arch, info, made_by):
    """Load a classifier checkpoint for dataset ``info`` and build its model; mismatches are named."""
    ck = check(load(path, made_by=made_by), path, kind="classifier", arch=arch, num_classes=info.num_classes,
               in_channels=info.in_channels, dataset=info.name)
    return build_classifier(ck), ck


def build_classifier(ck):
    """The model a classifier checkpoint describes, with its weights."""
    from misleader.models import create_model

    model = create_model(ck["arch"], ck["num_classes"], ck["in_channels"])
    model.load_state_dict(ck["state_dict"])
    return model
