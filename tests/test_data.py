"""Datasets, splits, the batch iterator and the batched augmentations of misleader/data.py."""

import gzip
import os
import struct
import sys

import numpy as np
import pytest
import torch
from helpers import REPO

if REPO not in sys.path:
    sys.path.insert(0, REPO)

from misleader import data as D  # noqa: E402
from misleader.errors import UserError  # noqa: E402


_real_make_synthetic = D.make_synthetic
_synthetic_cache = {}


def _cached_make_synthetic(n, channels, seed):
    key = (n, channels, seed)
    if key not in _synthetic_cache:
        _synthetic_cache[key] = _real_make_synthetic(n, channels, seed)
    return _synthetic_cache[key]


@pytest.fixture(scope="module", autouse=True)
def _fast_synthetic():
    """load_dataset regenerates the same deterministic pool on every call; reuse it to keep the tests fast
    (make_synthetic's determinism is checked on the real function below)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(D, "make_synthetic", _cached_make_synthetic)
        yield


@pytest.fixture(scope="module")
def syn():
    return D.load_dataset("synthetic", seed=0)


@pytest.fixture(scope="module")
def syn_rgb():
    return D.load_dataset("synthetic_rgb", seed=0)


def _rows(x):
    """Images as a set of exact byte strings (synthetic pixels are multiples of 1/255)."""
    u8 = (x * 255).round().to(torch.uint8).flatten(1).numpy()
    return [r.tobytes() for r in u8]


def _unnormalize(bundle, z):
    return z * bundle.std + bundle.mean


# ----------------------------------------------------------------------------- registry and synthetic data

def test_dataset_registry():
    assert set(D.DATASET_NAMES) >= {"mnist", "fashionmnist", "cifar10", "cifar100", "svhn", "synthetic",
                                    "synthetic_rgb"}
    assert D.dataset_info("cifar100").num_classes == 100
    assert D.dataset_info("cifar10").in_channels == 3
    assert D.dataset_info("mnist").in_channels == 1
    assert D.dataset_info("svhn").clean_aug == "crop"  # digits are never mirrored
    with pytest.raises(UserError) as err:
        D.dataset_info("imagenet")
    msg = str(err.value)
    assert "imagenet" in msg and "\n" not in msg
    for name in D.DATASET_NAMES:
        assert name in msg


def test_make_synthetic_is_deterministic():
    x1, y1 = _real_make_synthetic(64, 3, seed=5)
    x2, y2 = _real_make_synthetic(64, 3, seed=5)
    x3, _ = _real_make_synthetic(64, 3, seed=6)
    assert x1.dtype == np.uint8 and x1.shape == (64, 3, 32, 32) and y1.shape == (64,)
    assert np.array_equal(x1, x2) and np.array_equal(y1, y2)
    assert not np.array_equal(x1, x3)
    assert set(np.unique(y1)) <= set(range(10))
    g, _ = _real_make_synthetic(8, 1, seed=5)
    assert g.shape == (8, 1, 32, 32)


@pytest.mark.parametrize("fixture,channels", [("syn", 1), ("syn_rgb", 3)])
def test_synthetic_shapes_and_ranges(request, fixture, channels):
    b = request.getfixturevalue(fixture)
    assert b.info.in_channels == channels and b.info.num_classes == 10
    assert (len(b.train), len(b.val), len(b.test)) == (4000, 1000, 1000)
    for s in (b.train, b.val, b.test):
        assert s.x.dtype == torch.float32 and s.y.dtype == torch.int64
        assert s.x.shape[1:] == (channels, 32, 32) and s.y.shape == (s.x.shape[0],)
        assert s.x.min() >= 0 and s.x.max() <= 1
        assert s.x.std() > 0.05  # real images, not a constant
        assert s.y.min() >= 0 and s.y.max() <= 9
    assert len(torch.unique(b.train.y)) == 10
    expected = (b.train.x[:4] - torch.tensor(b.info.mean).view(1, -1, 1, 1)) / torch.tensor(b.info.std).view(1, -1, 1, 1)
    assert torch.allclose(b.normalize(b.train.x[:4]), expected)


def test_split_is_disjoint_and_covers_the_pool(syn):
    train, val = set(_rows(syn.train.x)), set(_rows(syn.val.x))
    assert len(train) == len(syn.train) and len(val) == len(syn.val)  # images are distinct
    assert not train & val
    # a different seed draws a different validation set out of the same 5000-image pool
    other = D.load_dataset("synthetic", seed=1)
    assert set(_rows(other.train.x)) | set(_rows(other.val.x)) == train | val
    assert set(_rows(other.val.x)) != val
    assert torch.equal(other.test.x, syn.test.x)  # the test set does not depend on the split seed


def test_split_is_deterministic_per_seed(syn):
    again = D.load_dataset("synthetic", seed=0)
    assert torch.equal(again.val.x, syn.val.x) and torch.equal(again.val.y, syn.val.y)
    assert torch.equal(again.train.x, syn.train.x) and torch.equal(again.train.y, syn.train.y)


def test_val_size_argument():
    """An empty validation split is refused in the library too (the CLI refused it; a direct call trained to the
    end and crashed when no epoch could be chosen)."""
    b = D.load_dataset("synthetic", val_size=123)
    assert (len(b.train), len(b.val)) == (4877, 123)
    for bad in (-1, 0, 5000):
        with pytest.raises(UserError, match="val_size"):
            D.load_dataset("synthetic", val_size=bad)


# ----------------------------------------------------------------------------- batches

def _indexed_split(n):
    x = torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1).expand(n, 1, 2, 2).contiguous()
    return D.Split(x, torch.arange(n))


def test_batches_reshuffle_and_cover_every_sample_once():
    split = _indexed_split(103)
    g = torch.Generator().manual_seed(0)
    passes = []
    for _ in range(2):
        order, sizes = [], []
        for xb, yb in D.batches(split, 10, shuffle=True, generator=g):
            assert torch.equal(xb[:, 0, 0, 0].long(), yb)  # images stay with their labels
            order += yb.tolist()
            sizes.append(len(yb))
        assert sorted(order) == list(range(103))
        assert sizes == [10] * 10 + [3] and len(sizes) == D.num_batches(103, 10)
        passes.append(order)
    assert passes[0] != passes[1]
    assert passes[0] != list(range(103))


def test_batches_drop_last_and_sequential():
    split = _indexed_split(103)
    got = [yb.tolist() for _, yb in D.batches(split, 10, shuffle=False)]
    assert sum(got, []) == list(range(103))
    dropped = list(D.batches(split, 10, shuffle=True, generator=torch.Generator().manual_seed(1), drop_last=True))
    assert len(dropped) == 10 == D.num_batches(103, 10, drop_last=True)
    ys = torch.cat([yb for _, yb in dropped])
    assert len(set(ys.tolist())) == 100


def test_batches_same_generator_seed_same_order():
    split = _indexed_split(50)
    a = [yb.tolist() for _, yb in D.batches(split, 8, generator=torch.Generator().manual_seed(3))]
    b = [yb.tolist() for _, yb in D.batches(split, 8, generator=torch.Generator().manual_seed(3))]
    assert a == b


# ----------------------------------------------------------------------------- augmentation

@pytest.mark.parametrize("fixture", ["syn", "syn_rgb"])
def test_proxy_is_per_sample_and_in_range(request, fixture):
    b = request.getfixturevalue(fixture)
    x = b.train.x[:1].repeat(16, 1, 1, 1)
    x = torch.cat([x, b.train.x[1:17]])
    out = D.Augment(b, seed=0).proxy(x)
    assert out.shape == x.shape and torch.isfinite(out).all()
    raw = _unnormalize(b, out)
    assert raw.min() >= -1e-5 and raw.max() <= 1 + 1e-5
    copies = out[:16].flatten(1)
    assert not torch.allclose(copies[0], copies[1])
    assert len({tuple(r.tolist()) for r in copies.round(decimals=4)}) == 16  # every copy its own parameters
    assert not torch.allclose(out, b.normalize(x))  # it does change the images


@pytest.mark.parametrize("info_name,may_flip", [("cifar10", True), ("synthetic_rgb", False)])
def test_clean_crop_flip_per_sample(syn_rgb, info_name, may_flip):
    """cifar10's crop_flip mirrors some samples; synthetic_rgb's crop (orientation is its label) never does."""
    b = D.DataBundle(D.dataset_info(info_name), syn_rgb.train, syn_rgb.val, syn_rgb.test, "cpu")
    x = b.train.x[:1].repeat(32, 1, 1, 1)
    out = D.Augment(b, seed=0).clean(x)
    assert out.shape == x.shape
    distinct = {r.numpy().tobytes() for r in out.flatten(1)}
    assert len(distinct) > 4
    raw = _unnormalize(b, out)
    assert raw.min() >= -1e-5 and raw.max() <= 1 + 1e-5
    # each output is a shifted (possibly mirrored) copy: its central 24x24 is inside the original or its mirror
    src, flipped = x[0], x[0].flip(2)
    mirrored = 0
    for r in raw[:16]:
        c = r[:, 4:28, 4:28]
        found = None
        for name, img in (("src", src), ("flipped", flipped)):
            for dy in range(-4, 5):
                for dx in range(-4, 5):
                    if found is None and torch.allclose(c, img[:, 4 + dy:28 + dy, 4 + dx:28 + dx], atol=1e-5):
                        found = name
        assert found is not None
        mirrored += found == "flipped"
    assert (mirrored > 0) == may_flip


def test_clean_none_is_plain_normalization(syn):
    x = syn.train.x[:16]
    assert torch.equal(D.Augment(syn, seed=0).clean(x), syn.normalize(x))


@pytest.mark.parametrize("fixture", ["syn", "syn_rgb"])
def test_augment_seeded(request, fixture):
    b = request.getfixturevalue(fixture)
    x = b.train.x[:16]
    a1, a2, a3 = D.Augment(b, seed=7), D.Augment(b, seed=7), D.Augment(b, seed=8)
    assert torch.equal(a1.proxy(x), a2.proxy(x))
    assert torch.equal(a1.clean(x), a2.clean(x))
    assert not torch.equal(D.Augment(b, seed=7).proxy(x), a3.proxy(x))
    # the generator advances: a second call on the same object draws new parameters
    a4 = D.Augment(b, seed=7)
    assert not torch.equal(a4.proxy(x), a4.proxy(x))


# ----------------------------------------------------------------------------- IDX files and missing data

def _idx_bytes(arr):
    code = 0x08  # unsigned byte
    header = bytes([0, 0, code, arr.ndim]) + b"".join(struct.pack(">I", d) for d in arr.shape)
    return header + arr.astype(np.uint8).tobytes()


def _write_idx(folder, stem, arr, gz):
    os.makedirs(folder, exist_ok=True)
    payload = _idx_bytes(arr)
    if gz:
        with gzip.open(os.path.join(folder, stem + ".gz"), "wb") as f:
            f.write(payload)
    else:
        with open(os.path.join(folder, stem), "wb") as f:
            f.write(payload)


@pytest.mark.parametrize("gz", [True, False])
def test_idx_reader_tiny_mnist(tmp_path, monkeypatch, gz):
    monkeypatch.setenv("MISLEADER_OFFLINE", "1")
    folder = str(tmp_path / "MNIST" / "raw")
    # each image is constant at a value that identifies it, so pixels and labels can be matched after loading
    tr_val = np.arange(20) * 12 + 3
    te_val = np.arange(10) * 25 + 1
    tr_lab, te_lab = np.arange(20) % 10, (np.arange(10) * 3) % 10
    _write_idx(folder, "train-images-idx3-ubyte", np.broadcast_to(tr_val[:, None, None], (20, 28, 28)), gz)
    _write_idx(folder, "train-labels-idx1-ubyte", tr_lab, gz)
    _write_idx(folder, "t10k-images-idx3-ubyte", np.broadcast_to(te_val[:, None, None], (10, 28, 28)), gz)
    _write_idx(folder, "t10k-labels-idx1-ubyte", te_lab, gz)

    xtr, ytr, xte, yte = D.read_raw("mnist", str(tmp_path))
    assert xtr.shape == (20, 1, 28, 28) and xte.shape == (10, 1, 28, 28)
    assert np.array_equal(ytr, tr_lab) and np.array_equal(yte, te_lab)

    b = D.load_dataset("mnist", data_root=str(tmp_path), val_size=5, seed=0)
    assert (len(b.train), len(b.val), len(b.test)) == (15, 5, 10)
    for s in (b.train, b.val, b.test):
        assert s.x.shape[1:] == (1, 32, 32)
        assert s.x.min() >= 0 and s.x.max() <= 1
    # constant 28x28 images stay constant after the bilinear resize to 32x32
    assert torch.allclose(b.test.x, torch.tensor(te_val / 255, dtype=torch.float32).view(10, 1, 1, 1).expand(10, 1, 32, 32),
                          atol=1e-6)
    assert torch.equal(b.test.y, torch.tensor(te_lab))
    seen = []
    for s in (b.train, b.val):
        idx = ((s.x[:, 0, 0, 0] * 255).round().long() - 3) // 12
        assert torch.equal(s.y, torch.tensor(tr_lab)[idx])
        seen += idx.tolist()
    assert sorted(seen) == list(range(20))


def _patterned(n, k0):
    """n 28x28 images, pixel (r, c) of image k = (r * 28 + c + k0 + 7 k) mod 256: a transposed, flipped or
    shifted reading changes them (a constant image survives all three)."""
    r, c = np.meshgrid(np.arange(28), np.arange(28), indexing="ij")
    return np.stack([(r * 28 + c + k0 + 7 * k) % 256 for k in range(n)]).astype(np.uint8)


@pytest.mark.parametrize("gz", [True, False])
def test_idx_images_are_read_pixel_for_pixel(tmp_path, monkeypatch, gz):
    monkeypatch.setenv("MISLEADER_OFFLINE", "1")
    folder = str(tmp_path / "MNIST" / "raw")
    tr, te = _patterned(6, 0), _patterned(3, 100)
    _write_idx(folder, "train-images-idx3-ubyte", tr, gz)
    _write_idx(folder, "train-labels-idx1-ubyte", np.arange(6) % 10, gz)
    _write_idx(folder, "t10k-images-idx3-ubyte", te, gz)
    _write_idx(folder, "t10k-labels-idx1-ubyte", np.arange(3), gz)
    xtr, _, xte, _ = D.read_raw("mnist", str(tmp_path))
    assert np.array_equal(xtr[:, 0], tr) and np.array_equal(xte[:, 0], te)


def test_a_truncated_gz_is_named_and_leaves_no_stale_file(tmp_path, monkeypatch):
    """A cut .gz raised EOFError (a traceback) and left a half-written IDX file that every later run read first,
    so replacing the .gz, as the message said, did not help."""
    monkeypatch.setenv("MISLEADER_OFFLINE", "1")
    folder = tmp_path / "MNIST" / "raw"
    tr = _patterned(6, 0)
    _write_idx(str(folder), "train-images-idx3-ubyte", tr, True)
    _write_idx(str(folder), "train-labels-idx1-ubyte", np.arange(6) % 10, True)
    _write_idx(str(folder), "t10k-images-idx3-ubyte", _patterned(3, 100), True)
    _write_idx(str(folder), "t10k-labels-idx1-ubyte", np.arange(3), True)
    gz = folder / "train-images-idx3-ubyte.gz"
    whole = gz.read_bytes()
    gz.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(UserError, match="cannot unpack .*train-images-idx3-ubyte.gz"):
        D.read_raw("mnist", str(tmp_path))
    assert sorted(p.name for p in folder.iterdir() if not p.name.endswith(".gz")) == []
    gz.write_bytes(whole)  # the user replaces the file: the next run reads it
    assert np.array_equal(D.read_raw("mnist", str(tmp_path))[0][:, 0], tr)


def test_a_corrupt_dataset_names_the_folder_of_its_files(tmp_path, monkeypatch):
    """The message named the data root, not the folder holding the broken files (MNIST/raw, the CIFAR batches)."""
    monkeypatch.setenv("MISLEADER_OFFLINE", "1")
    folder = tmp_path / "MNIST" / "raw"
    for stem in D._IDX_STEMS:
        _write_idx(str(folder), stem, np.zeros((2, 28, 28) if "images" in stem else (2,)), False)
    (folder / "train-labels-idx1-ubyte").write_bytes(b"\0\0\x08\x07")  # a header cut short
    with pytest.raises(UserError) as err:
        D.read_raw("mnist", str(tmp_path))
    assert f"dataset 'mnist' in {folder} is corrupt (" in str(err.value) and "\n" not in str(err.value)
    cifar = tmp_path / "cifar-10-batches-py"
    cifar.mkdir()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (cifar / name).write_bytes(b"not a pickle")
    with pytest.raises(UserError, match=f"dataset 'cifar10' in {cifar} is corrupt"):
        D.read_raw("cifar10", str(tmp_path))


def test_a_folder_that_cannot_take_the_unpacked_files_is_not_blamed_on_the_gz(tmp_path, monkeypatch):
    """Any OSError said 'replace the .gz file', also when the .gz was whole and raw/ could not be made."""
    monkeypatch.setenv("MISLEADER_OFFLINE", "1")
    src = tmp_path / "src"
    for stem in D._IDX_STEMS:
        _write_idx(str(src), stem, np.zeros((2, 28, 28) if "images" in stem else (2,)), True)
    root = tmp_path / "root"
    root.mkdir()
    (root / "MNIST").write_text("a file where the folder should be")
    with pytest.raises(UserError) as err:
        D._unpack_idx(str(root / "MNIST" / "raw"), [str(src)])
    assert "cannot unpack" in str(err.value) and "replace the .gz" not in str(err.value)


@pytest.mark.parametrize("name,needle", [
    ("mnist", "train-images-idx3-ubyte"),
    ("cifar10", "cifar-10-batches-py"),
    ("cifar100", "cifar-100-python"),
    ("svhn", "train_32x32.mat"),
])
def test_missing_dataset_message(tmp_path, monkeypatch, name, needle):
    monkeypatch.setenv("MISLEADER_OFFLINE", "1")
    with pytest.raises(UserError) as err:
        D.load_dataset(name, data_root=str(tmp_path))
    msg = str(err.value)
    assert needle in msg and str(tmp_path) in msg and "\n" not in msg
    assert name in msg


# ----------------------------------------------------------------------------- the real Fashion-MNIST

@pytest.fixture(scope="module")
def fashion(tmp_path_factory):
    if not os.path.isdir(D.SYSTEM_FASHION_MNIST):
        pytest.skip("Debian's dataset-fashion-mnist is not installed")
    old = os.environ.get("MISLEADER_OFFLINE")
    os.environ["MISLEADER_OFFLINE"] = "1"
    try:
        return D.load_dataset("fashionmnist", data_root=str(tmp_path_factory.mktemp("empty_root")))
    finally:
        if old is None:
            del os.environ["MISLEADER_OFFLINE"]
        else:
            os.environ["MISLEADER_OFFLINE"] = old


def test_fashion_mnist_shapes_and_normalization(fashion):
    b = fashion
    assert (len(b.train), len(b.val), len(b.test)) == (55000, 5000, 10000)
    for s in (b.train, b.val, b.test):
        assert s.x.shape[1:] == (1, 32, 32) and s.x.dtype == torch.float32
        assert s.x.min() >= 0 and s.x.max() <= 1
        assert sorted(torch.unique(s.y).tolist()) == list(range(10))
    z = b.normalize(b.train.x)
    assert abs(z.mean().item()) < 0.05
    assert abs(z.std().item() - 1) < 0.05


@pytest.mark.parametrize("name,folder,files,key,classes", [
    ("cifar10", "cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"], "labels", 10),
    ("cifar100", "cifar-100-python", ["train", "test"], "fine_labels", 100),
])
def test_cifar_pickles_are_read_through_torchvision(tmp_path, monkeypatch, name, folder, files, key, classes):
    """The official pickles (rows of 3x32x32 bytes, channel first) come out NCHW, batches in order, with
    CIFAR-100's fine labels."""
    import pickle

    monkeypatch.setenv("MISLEADER_OFFLINE", "1")
    (tmp_path / folder).mkdir()
    rng = np.random.default_rng(0)
    written = {}
    for file in files:
        data = rng.integers(0, 256, size=(4, 3 * 32 * 32), dtype=np.uint8)
        labels = rng.integers(0, classes, size=4).tolist()
        written[file] = (data.reshape(4, 3, 32, 32), labels)
        with open(tmp_path / folder / file, "wb") as f:
            pickle.dump({"data": data, key: labels, "coarse_labels": [0] * 4}, f)
    xtr, ytr, xte, yte = D.read_raw(name, str(tmp_path))
    train, test = files[:-1], files[-1]
    assert np.array_equal(xtr, np.concatenate([written[f][0] for f in train]))
    assert np.array_equal(xte, written[test][0]) and yte.tolist() == written[test][1]
    assert ytr.tolist() == sum((written[f][1] for f in train), []) and ytr.dtype == np.int64


def test_a_failed_download_says_why(tmp_path, monkeypatch):
    monkeypatch.delenv("MISLEADER_OFFLINE", raising=False)

    def no_network(name, root):
        raise ConnectionError("no route to host")

    monkeypatch.setattr(D, "_download", no_network)
    with pytest.raises(UserError, match=r"download failed \(ConnectionError: no route to host\).*MNIST/raw"):
        D.read_raw("mnist", str(tmp_path))
