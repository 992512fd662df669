"""Datasets held as device tensors, a shuffling batch iterator, and batched on-device augmentation.

Every dataset is returned as 32x32 float images in [0, 1] (MNIST-like images are resized once from
28x28 at load time). Normalisation and augmentation happen per batch on the training device, with
per-sample random parameters drawn from a seeded generator: no PIL, no DataLoader workers.

Where the files are looked for, in order:
  1. ``--data_root`` (default ``data/``) in torchvision's on-disk layout;
  2. for fashionmnist only, Debian's ``dataset-fashion-mnist`` copy in /usr/share/datasets/fashion-mnist/;
  3. a torchvision download into ``--data_root`` (skipped when MISLEADER_OFFLINE=1).
If all fail, a UserError names the files and the folder to put them in.
"""

import contextlib
import math
import os
import shutil
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from misleader.errors import UserError

IMG_SIZE = 32
SYSTEM_FASHION_MNIST = "/usr/share/datasets/fashion-mnist"


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    num_classes: int
    in_channels: int
    mean: tuple
    std: tuple
    clean_aug: str  # "crop_flip" (CIFAR/SVHN-like) or "none" (MNIST-like)
    default_val_size: int = 5000

    @property
    def teacher_arch(self):
        """The reference teacher: LeNet-5 for MNIST-like data, ResNet-34-8x for the 3-channel datasets."""
        return "lenet5" if self.clean_aug == "none" else "resnet34_8x"


DATASETS = {
    "mnist": DatasetInfo("mnist", 10, 1, (0.1307,), (0.3081,), "none"),
    "fashionmnist": DatasetInfo("fashionmnist", 10, 1, (0.2860,), (0.3530,), "none"),
    "cifar10": DatasetInfo("cifar10", 10, 3, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), "crop_flip"),
    "cifar100": DatasetInfo("cifar100", 100, 3, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), "crop_flip"),
    # SVHN digits must not be mirrored; a random crop only.
    "svhn": DatasetInfo("svhn", 10, 3, (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970), "crop"),
    "synthetic": DatasetInfo("synthetic", 10, 1, (0.5,), (0.25,), "none", default_val_size=1000),
    # A mirror image of a grating at angle a is a grating at -a, another class: crop, never flip.
    "synthetic_rgb": DatasetInfo("synthetic_rgb", 10, 3, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), "crop",
                                 default_val_size=1000),
}
DATASET_NAMES = tuple(DATASETS)


def dataset_info(name):
    if name not in DATASETS:
        raise UserError(f"unknown dataset '{name}'; valid datasets: {', '.join(DATASET_NAMES)}")
    return DATASETS[name]


# ----------------------------------------------------------------------------- file readers
# torchvision's dataset classes read every format (IDX, the CIFAR pickles, SVHN's .mat); this module only
# finds the files, unpacks gzipped IDX copies the way torchvision's own download does, and turns a local copy
# into arrays. Checksums are for downloads: a local copy is taken as it is, and a broken file is named.

_IDX_STEMS = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def _tv_class(name):
    import torchvision.datasets as tvd

    base = {"mnist": tvd.MNIST, "fashionmnist": tvd.FashionMNIST, "cifar10": tvd.CIFAR10, "cifar100": tvd.CIFAR100,
            "svhn": tvd.SVHN}[name]

    class Local(base):
        """torchvision's reader, with 'present' instead of 'matches the download's checksum'."""

        def _check_integrity(self):
            if name == "svhn":
                return os.path.isfile(os.path.join(self.root, self.filename))
            return all(os.path.isfile(os.path.join(self.root, self.base_folder, f))
                       for f, _ in self.train_list + self.test_list)

        def _load_meta(self):  # class names only; not needed
            pass

        @property
        def raw_folder(self):  # MNIST's folder is named after the class
            return os.path.join(self.root, base.__name__, "raw")

    return Local


def _unpack_idx(raw, sources):
    """Make raw/ hold the four uncompressed IDX files torchvision reads, unpacking .gz copies found in raw/ or
    in ``sources``; False when some file is nowhere. Each file is unpacked beside its final name and renamed
    into place once whole: a cut .gz is named and leaves nothing behind that a later run would read first."""
    import gzip
    import zlib

    for stem in _IDX_STEMS:
        dst = os.path.join(raw, stem)
        if os.path.isfile(dst):
            continue
        gz = next((os.path.join(f, stem + ".gz") for f in [raw, *sources] if os.path.isfile(os.path.join(f, stem + ".gz"))),
                  None)
        if gz is None:
            return False
        part = f"{dst}.part-{os.getpid()}"
        try:
            os.makedirs(raw, exist_ok=True)
            with gzip.open(gz, "rb") as src, open(part, "wb") as out:
                shutil.copyfileobj(src, out, 1 << 20)
            os.replace(part, dst)
        except (OSError, EOFError, zlib.error) as e:
            with contextlib.suppress(OSError):
                os.remove(part)
            why = getattr(e, "strerror", None) or str(e) or type(e).__name__
            broken = isinstance(e, (EOFError, zlib.error, gzip.BadGzipFile))  # the .gz itself, not the folder
            raise UserError(f"cannot unpack {gz} into {raw} ({why})" +
                            (": replace the .gz file" if broken else "")) from e
    return True


def _read_local(name, root):
    """(x_train, y_train, x_test, y_test) as uint8 NCHW / int64 arrays from a local copy, or None."""
    if name in ("mnist", "fashionmnist"):
        raw = os.path.join(root, "MNIST" if name == "mnist" else "FashionMNIST", "raw")
        if not _unpack_idx(raw, [SYSTEM_FASHION_MNIST] if name == "fashionmnist" else []):
            return None
        roots, layout = [root], lambda d: d.data.numpy()[:, None]
    elif name == "svhn":
        roots, layout = [root, os.path.join(root, "svhn")], lambda d: d.data
    else:
        roots, layout = [root], lambda d: d.data.transpose(0, 3, 1, 2)
    cls = _tv_class(name)
    for r in roots:
        try:
            if name == "svhn":
                parts = [cls(r, split=s) for s in ("train", "test")]
            else:
                parts = [cls(r, train=t) for t in (True, False)]
        except RuntimeError as e:
            if "not found" in str(e):
                continue
            raise UserError(f"dataset '{name}' in {r} cannot be read: {e}") from e
        except ImportError as e:
            raise UserError(f"reading {name} needs {e.name}: pip install {e.name}") from e
        except Exception as e:  # a truncated or foreign file: name the folder of the files read
            where = raw if name in ("mnist", "fashionmnist") else \
                r if name == "svhn" else os.path.join(r, cls.base_folder)
            why = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
            raise UserError(f"dataset '{name}' in {where} is corrupt ({why}); replace its files") from e
        out = []
        for d in parts:
            out += [np.ascontiguousarray(layout(d)), np.asarray(getattr(d, "labels", getattr(d, "targets", None)),
                                                                dtype=np.int64)]
        return tuple(out)
    return None


_EXPECTED = {
    "mnist": ("{root}/MNIST/raw/", "train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, "
              "t10k-labels-idx1-ubyte (or the same names with .gz)"),
    "fashionmnist": ("{root}/FashionMNIST/raw/", "train-images-idx3-ubyte, train-labels-idx1-ubyte, "
                     "t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte (or .gz; or apt-get install dataset-fashion-mnist)"),
    "cifar10": ("{root}/cifar-10-batches-py/", "data_batch_1..data_batch_5 and test_batch "
                "(unpack cifar-10-python.tar.gz)"),
    "cifar100": ("{root}/cifar-100-python/", "train and test (unpack cifar-100-python.tar.gz)"),
    "svhn": ("{root}/", "train_32x32.mat and test_32x32.mat"),
}


def _download(name, root):
    import torchvision.datasets as tvd

    os.makedirs(root, exist_ok=True)
    if name == "svhn":
        for split in ("train", "test"):
            tvd.SVHN(root, split=split, download=True)
        return
    cls = {"mnist": tvd.MNIST, "fashionmnist": tvd.FashionMNIST, "cifar10": tvd.CIFAR10, "cifar100": tvd.CIFAR100}[name]
    for train in (True, False):
        cls(root, train=train, download=True)


def read_raw(name, root="data"):
    """Return (x_train, y_train, x_test, y_test) as uint8 NCHW / int64 numpy arrays from disk or a download."""
    found = _read_local(name, root)
    why = "downloads are off (MISLEADER_OFFLINE=1)"
    if found is None and os.environ.get("MISLEADER_OFFLINE", "0") != "1":
        try:
            _download(name, root)
            why = "the download left no readable copy"
        except Exception as e:  # no network, a mirror down, a checksum error: the reason goes in the message
            why = f"the download failed ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else 'no message'})"
        found = _read_local(name, root)
    if found is None:
        folder, files = _EXPECTED[name]
        raise UserError(f"dataset '{name}' not found and {why}: put {files} "
                        f"in {folder.format(root=root.rstrip('/'))}")
    return found


# ----------------------------------------------------------------------------- synthetic data

def make_synthetic(n, channels, seed):
    """A procedural 10-class dataset: oriented sinusoidal gratings with noise.

    Class k is a grating at angle k*18 degrees (+-4 degrees jitter) with random frequency, phase,
    contrast, a soft random blob occluder and pixel noise; RGB variants get a random colour tint
    that carries no class information. Deterministic for a given seed.
    """
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 10, (n,), generator=g)
    angle = (y.float() * 18.0 + (torch.rand(n, generator=g) - 0.5) * 8.0) * math.pi / 180.0
    freq = 0.12 + 0.12 * torch.rand(n, generator=g)  # cycles per pixel
    phase = 2 * math.pi * torch.rand(n, generator=g)
    contrast = 0.25 + 0.2 * torch.rand(n, generator=g)
    coords = torch.arange(IMG_SIZE, dtype=torch.float32) - (IMG_SIZE - 1) / 2
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    proj = torch.cos(angle)[:, None, None] * xx + torch.sin(angle)[:, None, None] * yy
    img = 0.5 + contrast[:, None, None] * torch.sin(2 * math.pi * freq[:, None, None] * proj + phase[:, None, None])
    cy, cx = (torch.rand(2, n, generator=g) - 0.5) * IMG_SIZE
    blob = torch.exp(-((yy - cy[:, None, None]) ** 2 + (xx - cx[:, None, None]) ** 2) / 40.0)
    img = img * (1 - 0.6 * blob) + 0.5 * 0.6 * blob
    img = img[:, None]
    if channels == 3:
        tint = 0.6 + 0.4 * torch.rand(n, 3, 1, 1, generator=g)
        img = img * tint
    img = img + 0.08 * torch.randn(img.shape, generator=g)
    return (img.clamp(0, 1) * 255).round().to(torch.uint8).numpy(), y.numpy()


# ----------------------------------------------------------------------------- the bundle

@dataclass
class Split:
    x: torch.Tensor  # float32 (N, C, 32, 32) in [0, 1], on the device
    y: torch.Tensor  # int64 (N,), on the device

    def __len__(self):
        return self.x.shape[0]


class DataBundle:
    """train / val / test splits on one device, plus the dataset's normaliser and augmentations."""

    def __init__(self, info, train, val, test, device):
        self.info, self.train, self.val, self.test, self.device = info, train, val, test, device
        self.mean = torch.tensor(info.mean, device=device).view(1, -1, 1, 1)
        self.std = torch.tensor(info.std, device=device).view(1, -1, 1, 1)

    def normalize(self, x):
        return (x - self.mean) / self.std


def _to_split(x_uint8, y, device):
    x = torch.from_numpy(np.array(x_uint8, dtype=np.uint8, copy=True)).float().div_(255)
    if x.shape[-1] != IMG_SIZE:
        x = F.interpolate(x, size=(IMG_SIZE, IMG_SIZE), mode="bilinear", align_corners=False, antialias=False)
        x = x.clamp_(0, 1)
    return Split(x.to(device), torch.from_numpy(np.array(y, dtype=np.int64)).to(device))


def load_dataset(name, data_root="data", val_size=None, seed=0, device="cpu"):
    """Load a registered dataset onto ``device`` with a validation split carved from train by ``seed`` (the
    entry points' --split_seed, fixed across a comparison)."""
    info = dataset_info(name)
    if name.startswith("synthetic"):
        ch = info.in_channels
        xtr, ytr = make_synthetic(5000, ch, seed=1234)
        xte, yte = make_synthetic(1000, ch, seed=4321)
    else:
        xtr, ytr, xte, yte = read_raw(name, data_root)
    val_size = info.default_val_size if val_size is None else val_size
    if not 1 <= val_size < len(ytr):  # every stage chooses its epoch, or records its clone, on the validation split
        raise UserError(f"--val_size must be in [1, {len(ytr) - 1}] for {name}, got {val_size}")
    perm = torch.randperm(len(ytr), generator=torch.Generator().manual_seed(seed)).numpy()
    val_idx, train_idx = np.sort(perm[:val_size]), np.sort(perm[val_size:])
    return DataBundle(info,
                      _to_split(xtr[train_idx], ytr[train_idx], device),
                      _to_split(xtr[val_idx], ytr[val_idx], device),
                      _to_split(xte, yte, device), device)


def batches(split, batch_size, shuffle=True, generator=None, drop_last=False):
    """Yield (x, y) batches of a Split; a fresh permutation on every call when shuffling."""
    n = len(split)
    if shuffle:
        idx = torch.randperm(n, generator=generator).to(split.x.device)
    else:
        idx = None
    stop = n - n % batch_size if drop_last else n
    for i in range(0, stop, batch_size):
        if idx is None:
            yield split.x[i:i + batch_size], split.y[i:i + batch_size]
        else:
            j = idx[i:i + batch_size]
            yield split.x[j], split.y[j]


def num_batches(n, batch_size, drop_last=False):
    return n // batch_size if drop_last else -(-n // batch_size)


# ----------------------------------------------------------------------------- augmentation

def _uniform(g, n, lo, hi):
    return lo + (hi - lo) * torch.rand(n, generator=g)


def _gray(x):
    if x.shape[1] == 1:
        return x
    return (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])


class Augment:
    """Batched augmentations with per-sample random parameters drawn from a seeded CPU generator.

    ``clean(x)``: the clean-training augmentation (random crop with 4-pixel padding and horizontal
    flip for CIFAR-like data, nothing for MNIST-like data), then normalisation.
    ``proxy(x)``: the attacker-proxy augmentation (random resized crop 0.8-1.0, flip,
    colour jitter 0.4, grayscale p=0.2, random affine +-15 deg / translate 0.1 / scale 0.9-1.1),
    then normalisation. Inputs are float images in [0, 1] on any device.
    """

    def __init__(self, bundle, seed=0):
        self.bundle = bundle
        self.g = torch.Generator().manual_seed(seed)

    # -- clean
    def clean(self, x):
        mode = self.bundle.info.clean_aug
        if mode != "none":
            x = self.random_crop(x, pad=4)
            if mode == "crop_flip":
                x = self.random_flip(x)
        return self.bundle.normalize(x)

    def random_crop(self, x, pad=4):
        b, c, h, w = x.shape
        xp = F.pad(x, (pad, pad, pad, pad))
        oy = torch.randint(0, 2 * pad + 1, (b,), generator=self.g).to(x.device)
        ox = torch.randint(0, 2 * pad + 1, (b,), generator=self.g).to(x.device)
        rows = (oy[:, None] + torch.arange(h, device=x.device))[:, :, None]  # (b, h, 1)
        cols = (ox[:, None] + torch.arange(w, device=x.device))[:, None, :]  # (b, 1, w)
        bi = torch.arange(b, device=x.device)[:, None, None]
        return xp.permute(0, 2, 3, 1)[bi, rows, cols].permute(0, 3, 1, 2).contiguous()

    def random_flip(self, x):
        flip = (torch.rand(x.shape[0], generator=self.g) < 0.5).to(x.device)
        return torch.where(flip[:, None, None, None], x.flip(3), x)

    # -- attacker proxy
    def proxy_matrices(self, n):
        """Per-sample 2x3 affine matrices (output -> input, normalised coordinates) for crop+flip+affine."""
        g = self.g
        # RandomResizedCrop(scale 0.8-1.0, ratio 3/4-4/3): crop size as fractions of the image side.
        area = _uniform(g, n, 0.8, 1.0)
        logr = _uniform(g, n, math.log(3 / 4), math.log(4 / 3))
        cw = torch.sqrt(area * torch.exp(logr)).clamp(max=1.0)
        ch = torch.sqrt(area / torch.exp(logr)).clamp(max=1.0)
        cx = (torch.rand(n, generator=g) * 2 - 1) * (1 - cw)  # crop centre stays inside the image
        cy = (torch.rand(n, generator=g) * 2 - 1) * (1 - ch)
        flip = torch.where(torch.rand(n, generator=g) < 0.5, -1.0, 1.0)
        # RandomAffine(degrees 15, translate 0.1, scale 0.9-1.1), applied to the cropped image.
        ang = _uniform(g, n, -15.0, 15.0) * math.pi / 180
        sc = _uniform(g, n, 0.9, 1.1)
        tx = _uniform(g, n, -0.1, 0.1) * 2  # fraction of width -> normalised units
        ty = _uniform(g, n, -0.1, 0.1) * 2
        cos, sin = torch.cos(ang) / sc, torch.sin(ang) / sc
        # inverse affine: p_crop = R(-ang)/sc @ (p_out - t)
        a = torch.stack([torch.stack([cos, sin], 1), torch.stack([-sin, cos], 1)], 1)  # (n, 2, 2)
        t = -(a @ torch.stack([tx, ty], 1)[:, :, None])[:, :, 0]
        a = a * torch.stack([flip, torch.ones(n)], 1)[:, :, None]  # flip mirrors the crop's x axis
        t = t * torch.stack([flip, torch.ones(n)], 1)
        # crop: p_src = diag(cw, ch) @ p_crop + (cx, cy)
        s = torch.stack([cw, ch], 1)
        return torch.cat([a * s[:, :, None], (t * s + torch.stack([cx, cy], 1))[:, :, None]], 2)

    def proxy(self, x):
        n, c = x.shape[0], x.shape[1]
        theta = self.proxy_matrices(n).to(x.device, x.dtype)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        # colour jitter: brightness, contrast, saturation factors in [0.6, 1.4]
        bri, con, sat = (_uniform(self.g, n, 0.6, 1.4).to(x.device, x.dtype).view(n, 1, 1, 1) for _ in range(3))
        x = (x * bri).clamp(0, 1)
        m = _gray(x).mean(dim=(1, 2, 3), keepdim=True)
        x = ((x - m) * con + m).clamp(0, 1)
        if c == 3:
            gray = _gray(x)
            x = ((x - gray) * sat + gray).clamp(0, 1)
            to_gray = (torch.rand(n, generator=self.g) < 0.2).to(x.device)
            x = torch.where(to_gray[:, None, None, None], _gray(x).expand_as(x), x)
        return self.bundle.normalize(x)
