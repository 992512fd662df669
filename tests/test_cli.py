"""Entry points as a user runs them: one-line errors with exit code 2 before any training.

The headline failures run each in its own interpreter (started together by one module-scoped fixture,
since importing torch dominates each run); the rest load the entry-point script in-process and call
its main_wrapper with a patched sys.argv, which exercises the same parse / main / error path.
"""

import importlib.util
import os
import re
import shlex
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest
from helpers import REPO

PY = sys.executable


def _commands(tmp):
    empty = os.path.join(tmp, "empty_root")
    os.makedirs(empty, exist_ok=True)
    out = ["--out", os.path.join(tmp, "out", "x.pt"), "--log_dir", os.path.join(tmp, "runs")]
    dfme = [PY, "DFME/dfme.py", "--dataset", "synthetic", "--results", os.path.join(tmp, "r.csv"),
            "--log_dir", os.path.join(tmp, "runs")]
    return {
        "no_mnist": ([PY, "Defense/train_teacher.py", "--dataset", "mnist", "--data_root", empty, "--epochs", "1"]
                     + out, REPO),
        "no_teacher": ([PY, "Defense/train_defense.py", "--dataset", "synthetic", "--teacher_path",
                        os.path.join(tmp, "none.pt")] + out, REPO),
        "budget_small": (dfme + ["--query_budget", "0.0001"], REPO),
        "bad_config": (["bash", "teacher.sh"], REPO),
    }


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = str(tmp_path_factory.mktemp("cli"))
    env = dict(os.environ, MISLEADER_OFFLINE="1", CONFIG="nosuch")
    env.pop("PYTHONPATH", None)

    def run(item):
        cmd, cwd = item
        return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)

    cmds = _commands(tmp)
    with ThreadPoolExecutor(max_workers=3) as pool:
        done = dict(zip(cmds, pool.map(run, cmds.values())))
    done["tmp"] = tmp
    return done


_MODULES = {}


def _script(path):
    """Import an entry-point script as a module (once)."""
    if path not in _MODULES:
        name = "cli_" + re.sub(r"\W", "_", path)
        spec = importlib.util.spec_from_file_location(name, os.path.join(REPO, path))
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        _MODULES[path] = mod
    return _MODULES[path]


@pytest.fixture
def call(monkeypatch, capsys, tmp_path):
    """call(script, *argv) -> (exit code, stdout, stderr) of the script's main_wrapper(main), in-process."""
    monkeypatch.setenv("MISLEADER_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)  # a default output path would land here, not in the repository

    def _call(path, *argv):
        mod = _script(path)
        monkeypatch.setattr(sys, "argv", [path, *argv])
        with pytest.raises(SystemExit) as ex:
            mod.main_wrapper(mod.main)
            pytest.fail("the entry point returned instead of exiting")
        out, err = capsys.readouterr()
        return ex.value.code, out, err

    return _call


def _err_line(code, err):
    assert code == 2, (code, err[-2000:])
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


def _one_error_line(proc):
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    assert len(lines) == 1, proc.stderr
    return lines[0]


@pytest.mark.parametrize("script,argv", [
    ("Defense/train_teacher.py", []),
    ("Defense/train_defense.py", []),
    ("Defense/ensemble.py", ["--members", "lenet5"]),
    ("Defense/choose_tau.py", []),
    ("DFME/dfme.py", []),
])
def test_bad_dataset(call, script, argv):
    line = _err_line(*call(script, "--dataset", "nosuch", *argv)[::2])
    assert "nosuch" in line and "fashionmnist" in line and "synthetic_rgb" in line


@pytest.mark.parametrize("script,flag", [
    ("Defense/train_teacher.py", "--model"),
    ("Defense/train_defense.py", "--defense_model"),
])
def test_bad_model(call, tmp_path, script, flag):
    line = _err_line(*call(script, "--dataset", "synthetic", flag, "nosuch", "--out", str(tmp_path / "x.pt"))[::2])
    assert "nosuch" in line and "lenet5" in line and "resnet34_8x" in line
    assert not os.path.exists(tmp_path / "x.pt")


@pytest.mark.parametrize("script", ["Defense/train_teacher.py", "DFME/knockoff.py", "Defense/choose_tau.py"])
def test_an_empty_validation_split_is_refused_before_any_work(call, tmp_path, script):
    """--val_size 0 used to train or attack to the end and then fail on the empty split (every stage chooses its
    epoch or records the clone on it)."""
    line = _err_line(*call(script, "--dataset", "synthetic", "--val_size", "0")[::2])
    assert "--val_size" in line and "at least 1" in line


def test_a_bad_flag_of_the_pre_parser_or_the_benchmark_is_one_line(call):
    line = _err_line(*call("DFME/dfme.py", "--MAZE", "x")[::2])
    assert "--MAZE" in line and "--help" in line
    proc = subprocess.run([sys.executable, os.path.join(REPO, "benchmarks", "bench.py"), "--bogus"],
                          capture_output=True, text=True, timeout=120, check=False)
    assert "--bogus" in _one_error_line(proc)


def test_choose_tau_refuses_a_negative_cost(call):
    line = _err_line(*call("Defense/choose_tau.py", "--dataset", "synthetic", "--cost", "1", "-1")[::2])
    assert "--cost" in line and "--help" in line


@pytest.mark.parametrize("script", ["Defense/train_teacher.py", "Defense/train_defense.py"])
def test_non_integer_epochs(call, script):
    line = _err_line(*call(script, "--dataset", "synthetic", "--epochs", "ten")[::2])
    assert "--epochs" in line and "ten" in line and "--help" in line


def test_zero_epochs(call):
    line = _err_line(*call("Defense/train_teacher.py", "--dataset", "synthetic", "--epochs", "0")[::2])
    assert "--epochs" in line and "positive" in line


def test_missing_mnist_names_files_and_folder(runs):
    line = _one_error_line(runs["no_mnist"])
    folder = os.path.join(runs["tmp"], "empty_root", "MNIST", "raw")
    assert "train-images-idx3-ubyte" in line and "t10k-labels-idx1-ubyte" in line and folder in line
    assert not os.path.exists(os.path.join(runs["tmp"], "out", "x.pt"))


def test_missing_cifar10_names_folder(call, tmp_path):
    empty = tmp_path / "empty_root"
    empty.mkdir()
    line = _err_line(*call("Defense/train_teacher.py", "--dataset", "cifar10", "--model", "lenet5", "--data_root",
                           str(empty), "--epochs", "1", "--out", str(tmp_path / "x.pt"),
                           "--log_dir", str(tmp_path / "runs"))[::2])
    assert "cifar-10-batches-py" in line and "data_batch_1" in line and str(empty) in line


def test_missing_teacher_checkpoint(runs):
    line = _one_error_line(runs["no_teacher"])
    assert os.path.join(runs["tmp"], "none.pt") in line and "not found" in line
    assert "train_teacher" in line or "teacher.sh" in line  # says which stage makes it


def test_zero_query_budget(call):
    line = _err_line(*call("DFME/dfme.py", "--dataset", "synthetic", "--query_budget", "0")[::2])
    assert "--query_budget" in line and "positive" in line


def test_budget_below_one_iteration(runs):
    line = _one_error_line(runs["budget_small"])
    # default batch 256 * (g_iter 1 * (grad_m 1 + 1) + d_iter 5) = 1792 queries per iteration
    assert "--query_budget" in line and "1792" in line and "minimum is 0.001792M" in line
    assert not os.path.exists(os.path.join(runs["tmp"], "r.csv"))


def test_budget_below_one_iteration_with_smaller_batch(call):
    line = _err_line(*call("DFME/dfme.py", "--dataset", "synthetic", "--query_budget", "0.0005",
                           "--batch_size", "100")[::2])
    assert "minimum is 0.0007M" in line  # 100 * (1 * 2 + 5) = 700 queries


def test_unknown_config(runs):
    line = _one_error_line(runs["bad_config"])
    assert "unknown config 'nosuch'" in line
    for name in ("quick", "smoke", "mnist", "cifar10"):
        assert re.search(rf"\b{name}\b", line)
    assert not re.search(r"\bload\b", line)  # the loader is not a config
    assert runs["bad_config"].stdout == ""  # stopped before any stage started


def _sourced(tmp_path, config_text, show):
    """Source configs/load.sh with a config of the given text (in a copy of configs/; the smoke config first, for
    the variables every config sets) and echo `show`."""
    os.makedirs(tmp_path / "configs", exist_ok=True)
    for name in ("load.sh", "smoke.sh"):
        (tmp_path / "configs" / name).write_text(open(os.path.join(REPO, "configs", name)).read())
    (tmp_path / "configs" / "t.sh").write_text("source configs/smoke.sh\nTAG=\"\"\n" + config_text)
    out = subprocess.run(["bash", "-c", f"set -euo pipefail; CONFIG=t source configs/load.sh; {show}"],
                         cwd=tmp_path, capture_output=True, text=True, env={**os.environ, "ATTACK_TAG": ""})
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


@pytest.mark.parametrize("text,expected", [("", "|"), ('TAG=quick\n', "--tag quick|--tag quick"),
                                           ('ATTACK_TAG=g32\n', "|--tag g32"),
                                           ('TAG=quick\nATTACK_TAG=g32\n', "--tag quick|--tag g32")])
def test_attack_tag_names_attack_checkpoints_only(tmp_path, text, expected):
    """TAG names every checkpoint; ATTACK_TAG (default TAG) only the attacks', so two configs can share models."""
    assert _sourced(tmp_path, text, 'echo "${TAGARG[*]:-}|${ATTACK_TAGARG[*]:-}"') == expected


@pytest.mark.parametrize("name", sorted(os.path.basename(p)[:-3] for p in os.listdir(os.path.join(REPO, "configs"))
                                        if p.endswith(".sh") and p != "load.sh"))
def test_every_config_sources_cleanly(name):
    out = subprocess.run(["bash", "-c", 'set -euo pipefail; source configs/load.sh; echo "$DATASET ${#STUDENTS[@]}"'],
                         cwd=REPO, capture_output=True, text=True, env={**os.environ, "CONFIG": name})
    assert out.returncode == 0, out.stderr
    dataset, students = out.stdout.split()
    assert dataset and int(students) >= 1
    # and compare.sh accepts it (its checks of the config's lists run before any phase)
    listed = subprocess.run(["bash", "compare.sh", "--list", "train"], cwd=REPO, capture_output=True, text=True,
                            env={**os.environ, "CONFIG": name}, timeout=120, check=False)
    assert listed.returncode == 0, listed.stderr


@pytest.mark.parametrize("name", ["load", "../configs/smoke", "/tmp/x"])
def test_a_config_name_is_a_config_in_configs_not_load_or_a_path(name):
    """CONFIG=load sourced load.sh into itself without end; a path sourced a script from outside configs/."""
    out = subprocess.run(["bash", "compare.sh", "--list", "train"], cwd=REPO, capture_output=True, text=True,
                         env={**os.environ, "CONFIG": name}, timeout=30, check=False)
    assert out.returncode == 2 and out.stdout == "" and out.stderr.startswith(f"error: unknown config '{name}'")
    assert len(out.stderr.splitlines()) == 1


@pytest.mark.parametrize("script,argv", [
    ("DFME/dfme.py", ["--query_budget", "nan"]),
    ("DFME/disguide.py", ["--query_budget", "inf"]),
    ("DFME/knockoff.py", ["--query_budget", "nan"]),
    ("Defense/train_defense.py", ["--lambda_", "nan"]),
    ("DFME/dfme.py", ["--query_budget", "0.01", "--steps", "0.5", "nan"]),
])
def test_a_number_that_is_not_finite_is_refused_before_any_work(call, tmp_path, script, argv):
    """float("nan") passes every range check (comparisons with nan are false): a nan budget ended in a traceback."""
    code, _, err = call(script, "--dataset", "synthetic", *argv)
    line = _err_line(code, err)
    flag = [a for a in argv if a.startswith("--")][-1]  # the flag whose value is not finite
    assert f"argument {flag}: " in line and "is not a finite number" in line
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("script,flag", [("DFME/dfme.py", "--tag"), ("Defense/train_teacher.py", "--tag"),
                                         ("Defense/ensemble.py", "--tag"), ("DFME/dfme.py", "--teacher_tag"),
                                         ("Defense/choose_tau.py", "--ensemble_tag")])
def test_a_tag_is_a_file_name_part_not_a_path(call, tmp_path, script, flag):
    """--tag ../../x raised FileNotFoundError from the lock; --tag a/b made folders under the cache; a teacher or
    ensemble tag read a file outside the cache."""
    extra = ["--members", "lenet5"] if "ensemble" in script else []
    line = _err_line(*call(script, "--dataset", "synthetic", flag, "a/b", *extra)[::2])
    assert flag in line and "'a/b'" in line
    assert os.listdir(tmp_path) == []


def test_a_results_folder_is_refused_before_the_budget_is_spent(call, tmp_path):
    os.makedirs(tmp_path / "res")
    line = _err_line(*call("DFME/knockoff.py", "--dataset", "synthetic", "--results", "res")[::2])
    assert "--results res is not a file" in line


def test_the_results_table_of_a_missing_file_is_one_line():
    proc = subprocess.run([sys.executable, "-m", "misleader.results", "nope.csv"], capture_output=True, text=True,
                          cwd=REPO, timeout=60, check=False)
    assert "nope.csv is not a file" in _one_error_line(proc)


def test_the_results_table_of_a_csv_without_its_columns_is_one_line(tmp_path):
    """A CSV that lacks a column the table shows (another tool's CSV, an old header) ended in a KeyError
    traceback."""
    (tmp_path / "r.csv").write_text("victim,seed\nteacher,0\n")
    proc = subprocess.run([sys.executable, "-m", "misleader.results", str(tmp_path / "r.csv")], capture_output=True,
                          text=True, cwd=REPO, timeout=60, check=False)
    assert proc.returncode == 2
    assert "lacks column(s): victim_acc, student_model, clone_acc" in _one_error_line(proc)


@pytest.mark.parametrize("milestones", [["-5"], ["2", "9"]])
def test_a_teacher_milestone_outside_its_epochs_is_refused(call, tmp_path, milestones):
    """A multistep milestone below 1 or past --epochs never divides the rate: it was silently ignored."""
    line = _err_line(*call("Defense/train_teacher.py", "--dataset", "synthetic", "--scheduler", "multistep",
                           "--epochs", "3", "--milestones", *milestones)[::2])
    assert "--milestones must be epochs from 1 to --epochs 3" in line
    assert os.listdir(tmp_path) == []


def test_a_multistep_teacher_without_milestones_is_refused(call):
    """On MNIST-like data the family's milestones are none: --scheduler multistep alone kept the rate constant."""
    line = _err_line(*call("Defense/train_teacher.py", "--dataset", "synthetic", "--scheduler", "multistep")[::2])
    assert "--scheduler multistep needs --milestones" in line


def test_help_shows_one_default_per_flag_and_none_that_says_nothing():
    """ArgumentDefaultsHelpFormatter appended '(default: None)' to help that states the real default, and
    '(default: False)' to the 0/1 flag --mirror."""
    from misleader.cli import Parser

    p = Parser(prog="x")
    p.add_argument("--val_size", default=None, help="images for validation (default 5000)")
    p.add_argument("--setting", default="", help="a name")
    p.add_argument("--lr", type=float, default=0.1, help="learning rate")
    p.add_argument("--flag", action="store_true", help="a switch")
    text = " ".join(p.format_help().split())
    assert "(default: None)" not in text and "(default: )" not in text and "(default: False)" not in text
    assert "images for validation (default 5000)" in text and "learning rate (default: 0.1)" in text
    proc = subprocess.run([sys.executable, "DFME/dfme.py", "--help"], capture_output=True, text=True, cwd=REPO,
                          timeout=60, env={**os.environ, "COLUMNS": "200"}, check=True)
    assert "(default: False)" not in proc.stdout and "(default: None)" not in proc.stdout
    assert "needs --target probs. 0: off (default: 0)" in " ".join(proc.stdout.split())
    # an entry point that ignores a common flag says so instead of describing what it would do
    proc = subprocess.run([sys.executable, "Defense/choose_tau.py", "--help"], capture_output=True, text=True,
                          cwd=REPO, timeout=60, env={**os.environ, "COLUMNS": "200"}, check=True)
    assert "--progress {auto,0,1} not used by this entry point" in " ".join(proc.stdout.split())


@pytest.mark.parametrize("script,says", [("teacher.sh", "Defense/train_teacher.py --help"),
                                         ("train.sh", "Defense/train_defense.py --help"),
                                         ("test.sh", "configs/load.sh"), ("compare.sh", "--list"),
                                         ("report.sh", "misleader.report --help")])
def test_every_shell_script_has_a_help_that_trains_nothing(script, says, tmp_path):
    """`bash X.sh --help` prints the script's header (what it runs, where extra flags go) and exits 0 before a
    config is loaded: CONFIG names no config here, and nothing is written."""
    env = {**os.environ, "CONFIG": "no-such-config"}
    for flag in ("--help", "-h"):
        proc = subprocess.run(["bash", os.path.join(REPO, script), flag], capture_output=True, text=True, cwd=tmp_path,
                              timeout=30, env=env, check=False)
        assert proc.returncode == 0 and proc.stderr == "", (script, proc.stderr)
        assert says in proc.stdout and "set -euo" not in proc.stdout and not proc.stdout.startswith("#")
    assert os.listdir(tmp_path) == []


def test_a_config_without_a_required_variable_is_one_line_naming_it(tmp_path):
    """A new config that leaves out a variable without a default stops every shell stage with one line naming
    what is missing and exit 2 (it was bash's 'unbound variable', exit 1, from deep inside a stage)."""
    import shutil
    for f in ("teacher.sh", "train.sh", "test.sh", "compare.sh"):
        shutil.copy(os.path.join(REPO, f), tmp_path)
    shutil.copytree(os.path.join(REPO, "configs"), tmp_path / "configs")
    quick = open(os.path.join(REPO, "configs", "quick.sh")).read().splitlines()
    keep = [ln for ln in quick if not ln.startswith(("TEACHER_EPOCHS=", "LR_DEFENSE="))]
    (tmp_path / "configs" / "mine.sh").write_text("\n".join(keep) + "\n")
    for script in ("teacher.sh", "train.sh", "test.sh", "compare.sh"):
        proc = subprocess.run(["bash", script], cwd=tmp_path, env={**os.environ, "CONFIG": "mine"},
                              capture_output=True, text=True, timeout=60, check=False)
        assert proc.returncode == 2, (script, proc.stderr)
        assert proc.stderr == ("error: configs/mine.sh does not set TEACHER_EPOCHS LR_DEFENSE (no default: "
                               "configs/quick.sh shows each)\n"), script
        assert proc.stdout == "", script


def test_data_root_reaches_every_stage_of_the_shell_scripts(tmp_path):
    """`bash train.sh --data_root X` reached the members only (not the ensemble or the misinformation model) and
    test.sh's extra flags reached DFME only: a dataset kept outside data/ needs one variable for every stage."""
    env = {**os.environ, "CONFIG": "smoke", "MISLEADER_OFFLINE": "1"}
    for data_root in (None, str(tmp_path / "my data")):
        e = dict(env, DATA_ROOT=data_root) if data_root else env
        out = subprocess.run(["bash", "compare.sh", "--list"], cwd=REPO, env=e, capture_output=True, text=True,
                             timeout=120, check=True).stdout
        lines = [ln for ln in out.splitlines() if ln.startswith("python ")]
        assert {ln.split()[1] for ln in lines} >= {"Defense/train_defense.py", "Defense/ensemble.py", "DFME/dfme.py",
                                                   "DFME/knockoff.py"}
        if data_root is None:
            assert not any("--data_root" in ln for ln in lines)
        else:
            words = [shlex.split(ln) for ln in lines]  # a line is a shell command: the folder quoted as needed
            assert all(w[w.index("--data_root") + 1] == data_root for w in words), lines
    # a relative DATA_ROOT is taken from where the script was started, not from the repository it cd's to
    out = subprocess.run(["bash", os.path.join(REPO, "compare.sh"), "--list", "train"], cwd=tmp_path,
                         env=dict(env, DATA_ROOT="rel"), capture_output=True, text=True, timeout=120, check=True).stdout
    words = [shlex.split(ln) for ln in out.splitlines() if ln.startswith("python ")]
    assert words and all(w[w.index("--data_root") + 1] == str(tmp_path / "rel") for w in words)
    # report.sh (--verify 1 reads the datasets) too, before the flags given to it, which win
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "python").write_text('#!/bin/sh\necho "$@"\n')
    (fake / "python").chmod(0o755)
    out = subprocess.run(["bash", os.path.join(REPO, "report.sh"), "--verify", "1"], cwd=tmp_path, check=True,
                         env=dict(env, DATA_ROOT="rel", PATH=f"{fake}:{os.environ['PATH']}"), capture_output=True,
                         text=True, timeout=60).stdout.split()
    assert out == ["-m", "misleader.report", "--data_root", str(tmp_path / "rel"), "--verify", "1"]
    # teacher.sh runs its stage directly: a missing dataset is looked for, and named, in DATA_ROOT
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = subprocess.run(["bash", "teacher.sh"], cwd=REPO, env=dict(env, CONFIG="mnist", DATA_ROOT=str(empty)),
                          capture_output=True, text=True, timeout=120, check=False)
    assert str(empty) in _one_error_line(proc)
