"""Device choice, seeding and mixed precision: decided once per run, used everywhere."""

import contextlib
import random

import numpy as np
import torch

from misleader.errors import UserError


def pick_device(name="auto"):
    """'auto' -> CUDA when present, else CPU. An explicit 'cuda' without a GPU is a user error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {name} requested but no CUDA device is available (use --device cpu or auto)")
    try:
        device = torch.device(name)
    except RuntimeError as e:
        raise UserError(f"bad --device '{name}': {e}") from e
    if device.type == "cuda" and device.index is not None:
        count = torch.cuda.device_count()  # asked once
        if device.index >= count:
            raise UserError(f"--device {name}: this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}")
    return device


def seed_everything(seed):
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def seeded(seed, build):
    """``build()`` with the global RNG seeded by ``seed``, the global RNG left as it was: a model initialised
    this way does not depend on what drew from the RNG before (paired seeds across victims)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def amp_dtype(mode, device):
    """Resolve --amp {auto,off,bf16} to a dtype or None.

    auto: bf16 on a CUDA GPU that computes it natively (Ampere and later; an older GPU only emulates it, slowly:
    fp32 there); fp32 on CPU, because bf16 only pays on CPUs with AMX/AVX512-BF16 and this project is tested on
    one without (see README, Performance).
    """
    if mode == "off":
        return None
    if mode == "bf16":
        return torch.bfloat16
    if mode == "auto":
        return torch.bfloat16 if device.type == "cuda" and native_bf16(device) else None
    raise UserError(f"--amp must be auto, off or bf16, got '{mode}'")


def native_bf16(device):
    """Whether the CUDA device ``device`` computes bf16 in hardware: compute capability 8 (Ampere) or later, or a
    ROCm GPU. Asked of that device, not the current one, with a call every torch this project supports has."""
    if torch.version.hip:
        return True
    return torch.cuda.get_device_capability(device)[0] >= 8


def autocast(device, dtype):
    """An autocast context for dtype, or a no-op context when dtype is None."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def setup(args):
    """What every training entry point decides first, from the common flags: (device, amp dtype, memory format).
    Seeds every RNG with --seed."""
    device = pick_device(args.device)
    amp = amp_dtype(args.amp, device)
    seed_everything(args.seed)
    return device, amp, (torch.channels_last if args.channels_last else torch.contiguous_format)
