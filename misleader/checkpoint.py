"""Checkpoints: plain dicts of tensors and primitives, written atomically, read with weights_only=True."""

import importlib.util
import os
import pickle
import shutil
import tempfile
import zipfile

import torch
import torch.nn as nn

from misleader.errors import UserError

FORMAT = 1


def save(path, payload):
    """Write payload to path atomically (``write_atomic``)."""
    write_atomic(path, lambda f: torch.save(payload, f))


def write_atomic(path, write, binary=True, keep_mode=False):
    """Write a file atomically: ``write(f)`` into a temp file in the same folder (binary, or text with
    newline=""), fsync, then rename over ``path`` and fsync the folder; whatever stops it leaves the earlier file
    and no temp file.
    ``keep_mode``: an existing file keeps its permissions (else the usual ones, as for a new file)."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=os.path.splitext(path)[1], dir=folder)
    try:
        with os.fdopen(fd, "wb") if binary else os.fdopen(fd, "w", newline="") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        if keep_mode and os.path.exists(path):
            shutil.copymode(path, tmp)
        else:
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; a checkpoint gets the usual permissions
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    _fsync_folder(folder)


def _fsync_folder(folder):
    """Make a rename in ``folder`` durable (after a power loss the folder could still name the old file); a
    filesystem or platform that cannot fsync a folder is left as it is."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def payload(kind, arch, **fields):
    """Every checkpoint and state file this project writes: a plain dict with the format version, its kind and
    architecture (a list for an ensemble), and the given fields (dataset, num_classes, in_channels,
    state_dict, metrics, args, seed, flags, ...)."""
    return {"format": FORMAT, "kind": kind, "arch": arch, **fields}


def cpu_state(model):
    return {k: v.detach().cpu() for k, v in model.state_dict().items()}


def classifier_payload(model, arch, dataset, num_classes, in_channels, metrics=None, args=None, seed=None,
                       kind="classifier"):
    return payload(kind, arch, dataset=dataset, num_classes=num_classes, in_channels=in_channels,
                   state_dict=cpu_state(model), metrics=dict(metrics or {}), args=dict(args or {}), seed=seed)


def load(path, made_by=None):
    """torch.load(weights_only=True) with one-line errors for a missing, corrupt or unsafe file."""
    hint = f" (made by {made_by})" if made_by else ""
    if not os.path.isfile(path):
        raise UserError(f"checkpoint not found: {path}{hint}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if not zipfile.is_zipfile(path):  # torch.save writes a zip archive: this is some other file, e.g. a CSV
            raise UserError(f"{path} is not a checkpoint (not the zip archive torch.save writes): a CSV, log or "
                            f"other file given by mistake?{hint}") from e
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


def _is_model_state(value):
    return isinstance(value, dict) and bool(value) and all(isinstance(v, torch.Tensor) for v in value.values())


def slim_attack(ck, path):
    """The attack checkpoint ``ck`` (read from ``path``) without the models other than the clone: a generator
    attack saves its generator (4.4 MB at ngf 32) and extra clones (DisGUIDE's second) beside the clone, which a
    committed record does not need. Returns (slimmed copy, sorted names dropped); their names join ``left_out``.
    Nothing to drop: (the same dict, []). Anything but an attack's clone is refused (a victim is kept whole)."""
    if ck.get("kind") != "attack":
        raise UserError(f"{path} is not an attack's clone (kind {ck.get('kind')!r}): nothing to slim "
                        f"(only the checkpoints DFME/*.py save at the end of a run)")
    drop = sorted(k for k, v in ck.items() if k != "state_dict" and _is_model_state(v))
    if not drop:
        return ck, drop
    out = {k: v for k, v in ck.items() if k not in drop}
    out["left_out"] = sorted(set(ck.get("left_out", [])) | set(drop))
    return out, drop


def split_seed_of(ck):
    """The train/validation split seed a checkpoint was trained with (before --split_seed existed: --seed)."""
    args = ck.get("args") or {}
    return args.get("split_seed", args.get("seed", ck.get("seed")))


def check_split(ck, path, split_seed, val_size=None, info=None):
    """Refuse a model trained on another train/validation split: its training images would be validation
    images here (where attack settings and thresholds are chosen). The split is the seed and, with ``info``
    (the dataset), the validation size (None: the dataset's default). A checkpoint that records no seed at all
    is taken as it is, and one that records no validation size is compared on the seed only."""
    theirs = split_seed_of(ck)
    if theirs is not None and theirs != split_seed:
        raise UserError(f"checkpoint {path} was trained with split seed {theirs}, this run uses --split_seed "
                        f"{split_seed}; one comparison keeps one split")
    args = ck.get("args") or {}
    if info is not None and "val_size" in args:
        made, now = (info.default_val_size if v is None else v for v in (args["val_size"], val_size))
        if made != now:
            raise UserError(f"checkpoint {path} was trained with --val_size {made}, this run uses {now}: part of this "
                            "run's validation split would be its training images; one comparison keeps one split")
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


# Flags that change only logging, speed or where files are read and written, not what a run computes: a
# resumed run may give other values. "out" names the run itself (its state file lies beside it).
NOT_DEFINING = frozenset({"progress", "save_every_min", "log_dir", "run_name", "device", "amp", "channels_last",
                          "resume", "data_root", "results", "label", "config", "out"})


def run_flags(args):
    """The flags that define a run, as plain values for its state file."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in vars(args).items() if k not in NOT_DEFINING}


def check_flags(state, path, args):
    """--resume 1: raise a UserError naming the first flag whose value differs from the one the state file at
    ``path`` was saved with. A state file written before flags were recorded is taken as it is; a flag it does
    not know (added since) is not compared."""
    saved = state.get("flags")
    changed = None if saved is None else _changed_flag(saved, args)
    if changed:
        key, then, now = changed
        raise UserError(f"{path} was saved by a run with --{key} {_flag_text(then)}, this run has --{key} "
                        f"{_flag_text(now)}; resume with the flags the run started with, or delete the state "
                        f"file to start over")


def check_done_flags(ck, path, args):
    """--resume 1 on a finished output: raise a UserError naming the first defining flag whose value differs from
    the one the run that made ``path`` had (its checkpoint's ``args``), so a changed setting (a config's epochs, a
    grid entry's flags under the same name) is never answered with an output made under the old one. Flags the
    checkpoint does not record (added since) are not compared."""
    changed = _changed_flag({k: list(v) if isinstance(v, tuple) else v for k, v in (ck.get("args") or {}).items()},
                            args)
    if changed:
        key, then, now = changed
        raise UserError(f"{path} was made by a run with --{key} {_flag_text(then)}, this run has --{key} "
                        f"{_flag_text(now)}; --resume 1 does not take it for this run: delete it to run again "
                        "with these flags, or give the flags it was made with")


def _changed_flag(saved, args):
    """The first defining flag of ``args`` that ``saved`` records with another value: (name, saved, now), or None.
    A flag ``saved`` does not know (added since) is not compared."""
    for key, now in run_flags(args).items():
        if key in saved and saved[key] != now:
            return key, saved[key], now
    return None


def _flag_text(value):
    if value is None:
        return "(default)"
    return " ".join(map(str, value)) if isinstance(value, list) else str(value)


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


# ----------------------------------------------------------------------------- victims

def is_user_model(spec):
    """True for FILE.py:FUNCTION (a model defined in the user's own Python file)."""
    file, sep, fn = spec.rpartition(":")
    return bool(sep) and file.endswith(".py") and fn.isidentifier()


def load_user_model(spec, weights=None):
    """Import FILE.py, call FUNCTION() for an nn.Module, load ``weights`` (a plain state_dict) if given."""
    file, _, fn = spec.rpartition(":")
    if not os.path.isfile(file):
        raise UserError(f"--victim {spec}: file {file} not found")
    module_spec = importlib.util.spec_from_file_location(f"user_victim_{abs(hash(os.path.abspath(file)))}", file)
    module = importlib.util.module_from_spec(module_spec)
    try:
        module_spec.loader.exec_module(module)
    except Exception as e:
        raise UserError(f"--victim {spec}: importing {file} failed ({type(e).__name__}: {e})") from e
    build = getattr(module, fn, None)
    if not callable(build):
        raise UserError(f"--victim {spec}: {file} defines no function {fn}")
    try:
        model = build()
    except Exception as e:
        raise UserError(f"--victim {spec}: {fn}() failed ({type(e).__name__}: {e})") from e
    if not isinstance(model, nn.Module):
        raise UserError(f"--victim {spec}: {fn}() returned {type(model).__name__}, not a torch.nn.Module")
    if weights:
        if not os.path.isfile(weights):
            raise UserError(f"--victim_weights {weights} not found")
        try:
            sd = torch.load(weights, map_location="cpu", weights_only=True)
        except Exception as e:
            raise UserError(f"--victim_weights {weights}: not a plain state_dict ({type(e).__name__})") from e
        if isinstance(sd, dict) and isinstance(sd.get("state_dict"), dict):
            sd = sd["state_dict"]  # one of this repo's checkpoints
        try:
            model.load_state_dict(sd)
        except (RuntimeError, TypeError, AttributeError) as e:
            raise UserError(f"--victim_weights {weights} does not fit {fn}(): {str(e).splitlines()[0]}") from e
    return model


def check_user_model(model, spec, info):
    """The model must map a batch of normalised 32x32 images to (batch, num_classes) logits."""
    x = torch.zeros(2, info.in_channels, 32, 32)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(x)
    except Exception as e:
        raise UserError(f"--victim {spec}: the model fails on a (2, {info.in_channels}, 32, 32) batch of "
                        f"{info.name} images ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from e
    model.train(was_training)
    if not torch.is_tensor(out) or tuple(out.shape) != (2, info.num_classes):
        shape = tuple(out.shape) if torch.is_tensor(out) else type(out).__name__
        raise UserError(f"--victim {spec}: the model returns {shape} for 2 images, expected (2, {info.num_classes})")


def load_victim(spec, info, teacher_model, ensemble_tag=None, teacher_tag=None, weights=None, split=None):
    """--victim {ensemble, teacher, PATH, FILE.py:FUNCTION} -> (model, label, path), checked against dataset
    ``info`` and, with ``split`` = (split_seed, val_size), against this run's train/validation split (check_split;
    a user's own model is taken as it is). 'ensemble' and 'teacher' read the Defense stage's outputs through the
    one path convention."""
    from misleader import paths
    from misleader.ensemble import load_ensemble

    if is_user_model(spec):
        model = load_user_model(spec, weights)
        check_user_model(model, spec, info)
        return model, os.path.splitext(os.path.basename(spec.rpartition(":")[0]))[0], spec
    if weights:
        raise UserError("--victim_weights goes with --victim FILE.py:FUNCTION only")
    path, made_by, label = paths.victim_checkpoint(spec, info.name, teacher_model, ensemble_tag, teacher_tag)
    ck = check(load(path, made_by=made_by), path, num_classes=info.num_classes, in_channels=info.in_channels,
               dataset=info.name)
    if split is not None:
        check_split(ck, path, split[0], split[1], info)
    if ck["kind"] == "ensemble":
        return load_ensemble(ck), label, path
    if ck["kind"] == "classifier":
        if spec == "teacher":
            check(ck, path, arch=teacher_model)
        return build_classifier(ck), label, path
    raise UserError(f"{path} holds a '{ck['kind']}' checkpoint, not a classifier or an ensemble")
