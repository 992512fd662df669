"""Checkpoints: atomic writes, weights_only reads, one-line errors and field checks (misleader/checkpoint.py)."""

import os
import sys
from pathlib import Path

import pytest
import torch
from helpers import REPO

if REPO not in sys.path:
    sys.path.insert(0, REPO)

from misleader import checkpoint  # noqa: E402
from misleader.data import dataset_info  # noqa: E402
from misleader.errors import UserError  # noqa: E402
from misleader.models import create_model  # noqa: E402


class Opaque:
    """An arbitrary object: torch.save pickles it, weights_only must refuse it."""

    def __init__(self):
        self.weights = torch.ones(3)


@pytest.fixture
def lenet_ckpt(tmp_path):
    torch.manual_seed(0)
    model = create_model("lenet5", num_classes=10, in_channels=1).eval()
    path = str(tmp_path / "teacher.pt")
    payload = checkpoint.classifier_payload(model, "lenet5", "synthetic", 10, 1, metrics={"val_acc": 0.5},
                                            args={"epochs": 3}, seed=7)
    checkpoint.save(path, payload)
    return model, path


def test_round_trip_gives_identical_outputs(lenet_ckpt):
    model, path = lenet_ckpt
    ck = checkpoint.load(path)
    assert ck["kind"] == "classifier" and ck["arch"] == "lenet5" and ck["dataset"] == "synthetic"
    assert ck["num_classes"] == 10 and ck["in_channels"] == 1 and ck["seed"] == 7
    assert ck["metrics"] == {"val_acc": 0.5} and ck["args"] == {"epochs": 3}
    # the file really is loadable with the strict unpickler
    raw = torch.load(path, weights_only=True)
    assert set(raw["state_dict"]) == set(model.state_dict())

    loaded, ck2 = checkpoint.load_classifier(path, "lenet5", dataset_info("synthetic"), "teacher.sh")
    loaded.eval()
    x = torch.randn(5, 1, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    # a fresh model with different weights gives different outputs, so the equality above is meaningful
    torch.manual_seed(1)
    other = create_model("lenet5", num_classes=10, in_channels=1).eval()
    with torch.no_grad():
        assert not torch.equal(model(x), other(x))


def test_payload_tensors_are_detached_copies_on_cpu():
    model = create_model("lenet5", num_classes=10, in_channels=1)
    payload = checkpoint.classifier_payload(model, "lenet5", "synthetic", 10, 1)
    for v in payload["state_dict"].values():
        assert v.device.type == "cpu" and not v.requires_grad
    assert payload["format"] == checkpoint.FORMAT and payload["metrics"] == {} and payload["args"] == {}


@pytest.mark.parametrize("field,kwargs,bad", [
    ("arch", {"arch": "lenet5half"}, "'lenet5half'"),
    ("num_classes", {"num_classes": 100}, "100"),
    ("in_channels", {"in_channels": 3}, "3"),
    ("dataset", {"dataset": "mnist"}, "'mnist'"),
    ("kind", {"kind": "ensemble"}, "'ensemble'"),
])
def test_check_names_the_mismatched_field(lenet_ckpt, field, kwargs, bad):
    _, path = lenet_ckpt
    ck = checkpoint.load(path)
    with pytest.raises(UserError) as err:
        checkpoint.check(ck, path, **kwargs)
    msg = str(err.value)
    assert f"{field}=" in msg and bad in msg and path in msg and "\n" not in msg


def test_check_passes_on_match(lenet_ckpt):
    _, path = lenet_ckpt
    ck = checkpoint.load(path)
    assert checkpoint.check(ck, path, kind="classifier", arch="lenet5", num_classes=10, in_channels=1,
                            dataset="synthetic") is ck


def test_load_classifier_mismatches(lenet_ckpt):
    _, path = lenet_ckpt
    with pytest.raises(UserError, match="arch='lenet5'.*expected 'lenet5half'"):
        checkpoint.load_classifier(path, "lenet5half", dataset_info("synthetic"), "x")
    with pytest.raises(UserError, match="in_channels=1.*expected 3"):
        checkpoint.load_classifier(path, "lenet5", dataset_info("synthetic_rgb"), "x")
    with pytest.raises(UserError, match="num_classes=10.*expected 100"):
        checkpoint.load_classifier(path, "lenet5", dataset_info("cifar100"), "x")
    with pytest.raises(UserError, match="dataset='synthetic'.*expected 'mnist'"):
        checkpoint.load_classifier(path, "lenet5", dataset_info("mnist"), "x")


def test_missing_file(tmp_path):
    path = str(tmp_path / "none.pt")
    with pytest.raises(UserError) as err:
        checkpoint.load(path, made_by="teacher.sh")
    msg = str(err.value)
    assert "not found" in msg and path in msg and "teacher.sh" in msg


@pytest.mark.parametrize("cut", ["half", "empty"])
def test_truncated_file(lenet_ckpt, cut):
    _, path = lenet_ckpt
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.truncate(size // 2 if cut == "half" else 0)
    with pytest.raises(UserError) as err:
        checkpoint.load(path, made_by="teacher.sh")
    msg = str(err.value)
    assert path in msg and "corrupt" in msg and "teacher.sh" in msg and "\n" not in msg


@pytest.mark.parametrize("content", [
    bytes(range(256)) * 2,
    b"\0" * 100,
    b"a,b\n1,2\n",  # a CSV passed by mistake: torch's unpickler raises IndexError
], ids=["binary", "zeros", "text"])
def test_garbage_file_is_one_line_error(tmp_path, content):
    path = str(tmp_path / "garbage.pt")
    with open(path, "wb") as f:
        f.write(content)
    with pytest.raises(UserError) as err:
        checkpoint.load(path)
    msg = str(err.value)
    assert path in msg and "\n" not in msg


def test_a_results_csv_given_as_a_checkpoint_is_named_as_such(tmp_path):
    """A results CSV passed as a checkpoint was reported as "holds pickled Python objects" (torch's weights-only
    unpickler fails on its first byte)."""
    path = str(tmp_path / "results.csv")
    with open(path, "w") as f:
        f.write("dataset,victim,victim_acc\nfashionmnist,teacher,0.8893\n")
    with pytest.raises(UserError) as err:
        checkpoint.load(path)
    msg = str(err.value)
    assert "is not a checkpoint" in msg and "pickled" not in msg and "\n" not in msg


def test_pickled_object_is_refused(tmp_path):
    path = str(tmp_path / "obj.pt")
    torch.save(Opaque(), path)
    with pytest.raises(UserError) as err:
        checkpoint.load(path)
    msg = str(err.value)
    assert "refusing" in msg and path in msg and "\n" not in msg


@pytest.mark.parametrize("obj", [
    {"state_dict": {"w": torch.zeros(2)}},
    {"format": 999, "kind": "classifier"},
    {"format": checkpoint.FORMAT},
    [torch.zeros(2)],
])
def test_non_misleader_content_is_refused(tmp_path, obj):
    path = str(tmp_path / "foreign.pt")
    torch.save(obj, path)
    with pytest.raises(UserError, match="not a MISLEADER checkpoint"):
        checkpoint.load(path)


def test_save_is_atomic_and_leaves_no_temp_files(tmp_path):
    folder = tmp_path / "deep" / "er"
    path = str(folder / "a.pt")
    checkpoint.save(path, {"format": checkpoint.FORMAT, "kind": "x", "v": torch.arange(3)})
    assert os.listdir(folder) == ["a.pt"]
    checkpoint.save(path, {"format": checkpoint.FORMAT, "kind": "x", "v": torch.arange(4)})
    assert os.listdir(folder) == ["a.pt"]
    assert torch.equal(checkpoint.load(path)["v"], torch.arange(4))


def test_interrupted_save_keeps_the_old_file(tmp_path, monkeypatch):
    path = str(tmp_path / "a.pt")
    checkpoint.save(path, {"format": checkpoint.FORMAT, "kind": "x", "v": torch.arange(3)})
    before = open(path, "rb").read()

    real_save = torch.save

    def broken_save(obj, f, *args, **kwargs):
        real_save(obj, f, *args, **kwargs)  # bytes reach the temp file...
        f.write(b"partial")
        raise KeyboardInterrupt  # ...then the run is interrupted before the rename

    monkeypatch.setattr(checkpoint.torch, "save", broken_save)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.save(path, {"format": checkpoint.FORMAT, "kind": "x", "v": torch.arange(100)})
    monkeypatch.undo()
    assert open(path, "rb").read() == before
    assert os.listdir(tmp_path) == ["a.pt"]
    assert torch.equal(checkpoint.load(path)["v"], torch.arange(3))


def test_a_run_logs_params_and_curve_are_replaced_whole_or_not_at_all(tmp_path, monkeypatch):
    """params.json (every start) and metrics.csv (cut back on resume) are rewritten through a temp file: a run
    killed while writing them keeps the earlier files, not empty or half ones."""
    import json

    from misleader import runlog
    log = runlog.RunLog(str(tmp_path), "stage", "run", {"lr": 0.1})
    for step in (1, 2, 3):
        log.log(step, {"acc": 0.5}, console=False)
    log.tb.close()
    folder = tmp_path / "stage" / "run"
    before = {n: (folder / n).read_bytes() for n in ("params.json", "metrics.csv")}

    def killed(*a, **kw):
        raise KeyboardInterrupt
    monkeypatch.setattr(json, "dump", killed)
    with pytest.raises(KeyboardInterrupt):
        runlog.RunLog(str(tmp_path), "stage", "run", {"lr": 0.2}, resume_step=2)
    assert (folder / "params.json").read_bytes() == before["params.json"]
    monkeypatch.undo()
    monkeypatch.setattr(runlog.csv.DictWriter, "writerows", killed)
    with pytest.raises(KeyboardInterrupt):
        runlog.RunLog(str(tmp_path), "stage", "run", {"lr": 0.2}, resume_step=2)
    assert (folder / "metrics.csv").read_bytes() == before["metrics.csv"]
    assert not [n for n in os.listdir(folder) if n.startswith(".tmp-")]


def test_check_writable(tmp_path):
    target = tmp_path / "new" / "folder" / "out.pt"
    checkpoint.check_writable(str(target))
    assert os.path.isdir(target.parent) and os.listdir(target.parent) == []  # the probe is gone
    blocker = tmp_path / "file"
    blocker.write_text("a file, not a folder")
    with pytest.raises(UserError, match="cannot write to"):
        checkpoint.check_writable(str(blocker / "sub" / "out.pt"))


def test_state_path():
    assert checkpoint.state_path("a/b.pt") == "a/b.state.pt"
    assert checkpoint.state_path("a/b") == "a/b.state.pt"


def test_rng_snapshot_survives_a_weights_only_round_trip(tmp_path):
    g = torch.Generator().manual_seed(3)
    torch.manual_seed(11)
    path = str(tmp_path / "s.pt")
    checkpoint.save(path, {"format": checkpoint.FORMAT, "kind": "state", "rng": checkpoint.rng_snapshot(g)})
    want = (torch.rand(4), torch.rand(4, generator=g))
    checkpoint.rng_restore(checkpoint.load(path)["rng"], g)
    got = (torch.rand(4), torch.rand(4, generator=g))
    assert torch.equal(want[0], got[0]) and torch.equal(want[1], got[1])


def test_an_atomic_write_makes_its_rename_durable_by_syncing_the_folder(tmp_path, monkeypatch):
    """The file's data were fsynced but not the folder's entry: after a power loss the folder could still name the
    old file. The folder is fsynced after the rename."""
    import stat
    synced = []
    real = os.fsync

    def recording(fd):
        synced.append(("folder" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file", os.path.exists(tmp_path / "f.txt")))
        return real(fd)
    monkeypatch.setattr(os, "fsync", recording)
    checkpoint.write_atomic(str(tmp_path / "f.txt"), lambda f: f.write("x"), binary=False)
    assert synced == [("file", False), ("folder", True)]  # the data before the rename, the folder after it


def _script(rel):
    import importlib.util
    spec = importlib.util.spec_from_file_location("slim_script", os.path.join(REPO, rel))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _attack_ckpt(path, *extras):
    """An attack's final checkpoint as the generator attacks save it: the clone and its record, plus the
    generator and the named extra clones."""
    from misleader.models import Generator
    torch.manual_seed(0)
    clone = create_model("lenet5", num_classes=10, in_channels=1).eval()
    payload = checkpoint.classifier_payload(clone, "lenet5", "fashionmnist", 10, 1,
                                            metrics={"clone_acc": 0.5, "queries_used": 1000}, args={"seed": 3},
                                            seed=3, kind="attack")
    payload["victim_path"] = "Defense/ensemble/fashionmnist-v2.pt"
    payload["generator"] = Generator(nz=256, ngf=32, nc=1).state_dict()
    for name in extras:
        payload[name] = create_model("lenet5", num_classes=10, in_channels=1).state_dict()
    checkpoint.save(str(path), payload)
    return clone, payload


def test_slim_keeps_the_clone_and_its_record_and_names_what_it_drops(tmp_path, capsys):
    path = tmp_path / "run.pt"
    clone, payload = _attack_ckpt(path, "clone2")
    fat = os.path.getsize(path)
    _script("DFME/slim.py").main([str(path)])
    assert "dropped clone2, generator" in capsys.readouterr().out
    ck = checkpoint.load(str(path))
    assert ck["left_out"] == ["clone2", "generator"]
    assert set(ck) == set(payload) - {"generator", "clone2"} | {"left_out"}
    for key in ("metrics", "args", "seed", "victim_path", "kind", "arch", "dataset"):
        assert ck[key] == payload[key], key
    assert ck["state_dict"].keys() == payload["state_dict"].keys()
    assert all(torch.equal(ck["state_dict"][k], v) for k, v in payload["state_dict"].items())
    assert os.path.getsize(path) < fat / 5  # the generator is most of the file
    x = torch.randn(4, 1, 32, 32)
    model = checkpoint.build_classifier(ck)
    assert torch.equal(model.eval()(x), clone(x))
    before = path.read_bytes()
    _script("DFME/slim.py").main([str(path)])  # a second pass changes nothing
    assert "already slim" in capsys.readouterr().out and path.read_bytes() == before


def test_slim_keeps_a_knockoff_clone_whole_and_slims_a_file_named_twice_once(tmp_path, capsys):
    knock, fat = tmp_path / "knockoff.pt", tmp_path / "dfme.pt"
    _, payload = _attack_ckpt(knock)
    del payload["generator"]
    payload["pool"] = "fashionmnist"  # Knockoff's record of its query pool: a string, kept
    checkpoint.save(str(knock), payload)
    _attack_ckpt(fat, "clone2")
    before = knock.read_bytes()
    _script("DFME/slim.py").main([str(knock), str(fat), str(tmp_path / "." / "dfme.pt")])
    out = capsys.readouterr().out
    assert "knockoff.pt: already slim" in out and knock.read_bytes() == before
    assert out.count("dropped") == 1 and checkpoint.load(str(fat))["left_out"] == ["clone2", "generator"]


def test_slim_refuses_a_victim_or_a_missing_file_and_then_changes_no_file(tmp_path, lenet_ckpt, monkeypatch, capsys):
    good = tmp_path / "run.pt"
    _attack_ckpt(good)
    mod = _script("DFME/slim.py")
    state = tmp_path / "run.state.pt"  # a run's resumable state is not a finished clone either
    checkpoint.save(str(state), checkpoint.payload("attack-state", "lenet5", attack={}))
    for bad, words in ((lenet_ckpt[1], ["'classifier'", "not an attack"]), (str(tmp_path / "none.pt"), ["not found"]),
                       (str(state), ["'attack-state'", "not an attack"])):
        before = good.read_bytes(), Path(lenet_ckpt[1]).read_bytes()
        monkeypatch.setattr(sys, "argv", ["DFME/slim.py", str(good), bad])
        with pytest.raises(SystemExit) as ex:
            mod.main_wrapper(mod.main)
        err = capsys.readouterr().err.strip().splitlines()
        assert ex.value.code == 2 and len(err) == 1 and all(w in err[0] for w in words), err
        assert (good.read_bytes(), Path(lenet_ckpt[1]).read_bytes()) == before
