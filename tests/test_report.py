"""The results report (misleader/report.py): grouping and statistics, report.md, plots, errors, verify."""

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from misleader import checkpoint, comparison, report
from misleader.data import dataset_info, load_dataset
from misleader.errors import UserError
from misleader.models import create_model
from misleader.results import COLUMNS
from misleader.evaluate import predict
from helpers import REPO

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _row(**kw):
    base = {"dataset": "fashionmnist", "victim": kw.get("label", "teacher"), "attack": "dfme", "student_model": "lenet5",
            "query_budget": 200000, "queries_used": 199808, "probs_as_logits": 0, "config": "quick",
            "victim_path": "", "run_dir": "", "attack_path": "", "wall_s": "1.0", "git_commit": "abc", "date": "2026-01-01"}
    base.update(kw)
    return base


def _write_csv(path, rows, columns=COLUMNS):
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow(r)
    return str(path)


def _write_metrics(run_dir, points):
    """points: [(queries_used, clone_acc), ...], one per epoch."""
    os.makedirs(run_dir, exist_ok=True)
    with open(os.path.join(run_dir, "metrics.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["step", "clone_acc", "fidelity", "queries_used", "loss_S", "loss_G", "lr_S", "lr_G"])
        for step, (q, acc) in enumerate(points, 1):
            w.writerow([step, acc, acc, q, 1.0, -1.0, 0.1, 1e-4])


@pytest.fixture
def results(tmp_path):
    """3 teacher seeds, 1 ensemble seed, 1 probs_as_logits teacher run (its run_dir is missing)."""
    runs = tmp_path / "runs"
    rows = []
    for seed, acc, best, fid, vacc in [(0, "0.5000", "0.5500", "0.5200", "0.9000"), (1, "0.6000", "0.6200", "0.6100", "0.9000"),
                                       (2, "0.7000", "0.7300", "0.7400", "0.9000")]:
        d = str(runs / f"teacher-seed{seed}")
        _write_metrics(d, [(100000, float(acc) - 0.1), (199808, float(acc))])
        rows.append(_row(label="teacher", seed=seed, clone_acc=acc, clone_best_acc=best, fidelity=fid,
                         victim_acc=vacc, run_dir=d))
    d = str(runs / "ensemble-seed0")
    _write_metrics(d, [(100000, 0.2), (199808, 0.3)])
    rows.insert(1, _row(label="ensemble", seed=0, clone_acc="0.3000", clone_best_acc="0.3100", fidelity="0.3500",
                        victim_acc="0.8800", run_dir=d))
    rows.append(_row(label="teacher", seed=0, probs_as_logits=1, clone_acc="0.2000", clone_best_acc="0.2500",
                     fidelity="0.2100", victim_acc="0.9000", run_dir=str(runs / "gone"), queries_used=150000))
    return _write_csv(tmp_path / "results.csv", rows)


def test_summarize_groups_and_statistics(results):
    s = report.summarize(report.load_results(results))
    assert [g["victim"] for g in s] == ["teacher", "ensemble", "teacher (probs_as_logits)"]
    t, e, p = s
    assert t["n_seeds"] == 3 and t["seeds"] == [0, 1, 2]
    assert t["clone_acc_mean"] == pytest.approx(0.6)
    assert t["clone_acc_std"] == pytest.approx(0.1)  # sqrt(((-.1)^2 + 0 + .1^2) / 2)
    assert t["clone_best_mean"] == pytest.approx((0.55 + 0.62 + 0.73) / 3)
    assert t["fidelity_mean"] == pytest.approx((0.52 + 0.61 + 0.74) / 3)
    assert t["victim_acc"] == pytest.approx(0.9)
    assert t["queries_used_mean"] == pytest.approx(199808) and t["query_budget"] == 200000
    assert t["dataset"] == "fashionmnist"
    assert e["n_seeds"] == 1 and e["clone_acc_std"] == 0.0 and e["clone_acc_mean"] == pytest.approx(0.3)
    assert p["n_seeds"] == 1 and p["seeds"] == [0] and p["clone_acc_mean"] == pytest.approx(0.2)
    assert p["queries_used_mean"] == pytest.approx(150000)


def test_summarize_refuses_a_seed_run_twice_in_one_group(results, tmp_path):
    """Two runs of one experiment on one seed (say, a rerun under another tag): averaging both would count that
    seed twice and call it two seeds; the error names both rows."""
    rows = report.load_results(results)
    rows.append(dict(rows[0], clone_acc="0.9000", attack_path="DFME/cache/other-tag.pt"))
    with pytest.raises(report.UserError, match=r"results rows? .*two runs of one attack \(teacher, dfme"):
        report.summarize(rows)


def test_write_report_table_and_plots(results, tmp_path):
    out = tmp_path / "out"
    paths = report.write_report(results, str(out))
    assert [os.path.basename(p) for p in paths] == ["report.md", "clone_vs_queries.png", "utility_vs_protection.png",
                                                    "protection_vs_queries.png"]
    md = (out / "report.md").read_text()
    assert md.startswith("# ")
    assert "results.csv" in md and str(tmp_path) not in md.split("\n")[2]  # a note of the CSV, no absolute path
    lines = md.split("## Every run")[1].splitlines()
    assert "| teacher | 90.00 | 60.00 ± 10.00 | 63.33 | 62.33 | 199808 / 200000 | 3 (0, 1, 2) |" in lines
    assert "| ensemble | 88.00 | 30.00 | 31.00 | 35.00 | 199808 / 200000 | 1 (0) |" in lines
    assert "| teacher (probs_as_logits) | 90.00 | 20.00 | 25.00 | 21.00 | 150000 / 200000 | 1 (0) |" in lines
    assert sum(1 for line in lines if line.startswith("| ")) == 4  # header + 3 victims
    assert "gone" in md  # the missing run_dir is noted
    # the headline: the ensemble's paired protection on its one seed (0): 0.50 - 0.30 = +20 points; the teacher's
    # seeds 1 and 2 have no partner and are named
    assert ("| ensemble | 88.00 | 2.00 | dfme config default, 200,000 queries | 30.00 (1 seed) | +20.00 (1 seed; "
            "seeds 1, 2 unpaired) |") in md
    for name in report.PLOT_FILES:
        data = (out / name).read_bytes()
        assert len(data) > 1024 and data[:8] == PNG_MAGIC


def test_a_report_that_fails_half_way_leaves_the_earlier_one_whole(results, tmp_path, monkeypatch):
    """An error after the plots are drawn (say, in the headline) leaves the earlier report.md and plots as they
    were, with no new plot beside an old table and no staging folder left."""
    out = tmp_path / "out"
    report.write_report(results, str(out))
    before = {name: (out / name).read_bytes() for name in ("report.md", *report.PLOT_FILES)}

    def broken(*a, **kw):
        raise UserError("two checkpoints of one victim")
    monkeypatch.setattr(report.comparison, "headline_table", broken)
    monkeypatch.setattr(report, "plot_clone_vs_queries", lambda curves, path, title: Path(path).write_bytes(b"new"))
    with pytest.raises(UserError, match="two checkpoints"):
        report.write_report(results, str(out))
    assert {name: (out / name).read_bytes() for name in before} == before
    assert sorted(os.listdir(out)) == sorted(before)


def test_config_filter(results, tmp_path):
    rows = report.load_results(results)
    rows[0]["config"] = "other"
    path = _write_csv(tmp_path / "mixed.csv", rows)
    report.write_report(path, str(tmp_path / "o"), config="other")
    md = (tmp_path / "o" / "report.md").read_text()
    assert "| teacher | 90.00 | 50.00 |" in md and "ensemble" not in md
    with pytest.raises(UserError, match="no rows with config 'nope'"):
        report.write_report(path, str(tmp_path / "o2"), config="nope")


def test_load_results_errors(tmp_path):
    with pytest.raises(UserError, match="not found"):
        report.load_results(str(tmp_path / "missing.csv"))
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(UserError, match="no data rows"):
        report.load_results(str(empty))
    header_only = _write_csv(tmp_path / "header.csv", [])
    with pytest.raises(UserError, match="no data rows"):
        report.load_results(header_only)
    cols = [c for c in COLUMNS if c not in ("clone_acc", "run_dir")]
    partial = _write_csv(tmp_path / "partial.csv", [_row(label="t", seed=0, victim_acc=0.9, clone_acc=0.5,
                                                         clone_best_acc=0.5, fidelity=0.5)], cols)
    with pytest.raises(UserError, match="clone_acc, run_dir"):
        report.load_results(partial)


def test_load_results_damaged_lines_and_line_numbers(tmp_path):
    """A line with more or fewer fields than the header is refused with its line number (the report built from
    it before); a bad value deeper in the comparison names the line of the file, not the row's position among
    the rows left after --config."""
    rows = [_row(label="teacher", config="a" if i < 3 else "b", seed=i, victim_acc=0.9, clone_acc=0.5,
                 clone_best_acc=0.5, fidelity=0.5, attack_path=f"c{i}.pt") for i in range(5)]
    good = _write_csv(tmp_path / "good.csv", rows)
    text = Path(good).read_text().splitlines()
    (tmp_path / "long.csv").write_text("\n".join(text[:-1] + [text[-1] + ",EXTRA"]) + "\n")
    with pytest.raises(UserError, match="line 6 has 1 more field"):
        report.load_results(str(tmp_path / "long.csv"))
    (tmp_path / "short.csv").write_text("\n".join(text[:2] + [text[2].rsplit(",", 2)[0]] + text[3:]) + "\n")
    with pytest.raises(UserError, match="line 3 has fewer fields"):
        report.load_results(str(tmp_path / "short.csv"))
    rows[4]["clone_acc"] = "oops"
    bad = _write_csv(tmp_path / "bad.csv", rows)
    kept = report.filter_config(report.load_results(bad), "b", bad)
    with pytest.raises(UserError, match="results CSV line 6: column clone_acc is not a number"):
        comparison.headline(kept)
    # a column read through its earlier meaning (served_acc) keeps the line too, and its own name
    rows[4]["clone_acc"], rows[4]["served_acc"] = "0.5", "oops"
    bad = _write_csv(tmp_path / "bad2.csv", rows)
    kept = report.filter_config(report.load_results(bad), "b", bad)
    for build in (report.summarize, comparison.headline):
        with pytest.raises(UserError, match="results CSV line 6: column served_acc is not a number"):
            build(kept)
    # the grid's --strongest path (compare.sh) reads the file the same way: line numbers, damaged lines refused
    rows[4]["served_acc"] = "0.9"
    grid = [dict(r, attack="dfme", setting=f"s{i}", seed=0, clone_val_acc="nan" if i == 4 else "0.5",
                 query_budget=1000000) for i, r in enumerate(rows)]
    path = _write_csv(tmp_path / "grid.csv", grid)
    with pytest.raises(UserError, match="results CSV line 6: clone_val_acc is nan"):
        report.main(["--csv", path, "--config", "b", "--strongest", "teacher", "--grid", "s3", "s4"])
    with pytest.raises(UserError, match="line 6 has 1 more field"):
        report.main(["--csv", str(tmp_path / "long.csv"), "--config", "b", "--strongest", "teacher", "--grid", "s3"])


def test_a_short_line_is_refused_before_a_run_rewrites_it_filled_in(tmp_path):
    """results.check refused long lines only: a short one was rewritten with empty cells by the next run's row,
    after which the report's own check could no longer see it."""
    from misleader import results as R

    rows = [_row(label="teacher", seed=i, victim_acc=0.9, clone_acc=0.5, clone_best_acc=0.5, fidelity=0.5,
                 attack_path=f"c{i}.pt") for i in range(2)]
    path = tmp_path / "r.csv"
    _write_csv(path, rows)
    text = path.read_text().splitlines()
    path.write_text("\n".join([text[0], text[1].rsplit(",", 3)[0], text[2]]) + "\n")
    with pytest.raises(UserError, match="line 2 has fewer fields than the header"):
        R.check(str(path))


def test_cli_missing_csv_one_line_exit_2(tmp_path):
    p = subprocess.run([sys.executable, "-m", "misleader.report", "--csv", str(tmp_path / "none.csv"),
                        "--out", str(tmp_path / "o")], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert p.returncode == 2
    assert len(p.stderr.strip().splitlines()) == 1 and "none.csv" in p.stderr
    assert not (tmp_path / "o").exists()


def test_cli_report_of_one_config_goes_to_its_own_folder(results, tmp_path, monkeypatch):
    """--config NAME without --out writes results/NAME/report.md: one config's report never overwrites another's."""
    rows = report.load_results(results)
    rows[0]["config"] = "other"
    os.makedirs(tmp_path / "results")
    _write_csv(tmp_path / "results" / "results.csv", rows)
    monkeypatch.chdir(tmp_path)  # the command line's defaults, in this process (no interpreter start-up)
    for config in ("other", "quick"):
        report.main(["--config", config])
    assert (tmp_path / "results" / "other" / "report.md").is_file() and (tmp_path / "results" / "quick" / "report.md").is_file()
    assert not (tmp_path / "results" / "report.md").exists()


def _verify_case(tmp_path):
    """A random lenet5 victim and clone on 'synthetic', and a CSV row holding their true numbers."""
    info = dataset_info("synthetic")
    torch.manual_seed(0)
    victim = create_model("lenet5", info.num_classes, info.in_channels)
    clone = create_model("lenet5", info.num_classes, info.in_channels)
    vpath, apath = str(tmp_path / "victim.pt"), str(tmp_path / "clone.pt")
    checkpoint.save(vpath, checkpoint.classifier_payload(victim, "lenet5", "synthetic", info.num_classes,
                                                         info.in_channels))
    attack = checkpoint.classifier_payload(clone, "lenet5", "synthetic", info.num_classes, info.in_channels,
                                           metrics={"queries_used": 199808}, kind="attack", seed=3)
    attack["victim_path"] = vpath
    checkpoint.save(apath, attack)

    data = load_dataset("synthetic", seed=3)
    x, y = data.normalize(data.test.x), data.test.y
    vp, cp = predict(victim, x).argmax(1), predict(clone, x).argmax(1)
    truth = {"victim_acc": (vp == y).float().mean().item(), "clone_acc": (cp == y).float().mean().item(),
             "fidelity": (cp == vp).float().mean().item()}
    assert truth["fidelity"] < 1.0  # two different random nets: the fields are distinguishable
    row = _row(dataset="synthetic", label="teacher", seed=3, clone_best_acc=f"{truth['clone_acc']:.4f}",
               victim_path=vpath, attack_path=apath, config="smoke",
               **{k: f"{v:.4f}" for k, v in truth.items()})
    return row, truth


def test_verify_ok_then_mismatch(tmp_path, capsys):
    row, truth = _verify_case(tmp_path)
    good = _write_csv(tmp_path / "good.csv", [row])
    res = report.verify(good, device="cpu")
    assert {(f, ok) for _, f, _, _, ok in res} == {("victim_acc", True), ("clone_acc", True), ("fidelity", True),
                                                    ("queries_used", True)}
    truth["queries_used"] = 199808
    assert all(i == 0 and v == pytest.approx(truth[f], abs=5e-5) for i, f, _, v, _ in res)

    bad_value = round(truth["clone_acc"] + 0.01, 4)
    bad = _write_csv(tmp_path / "bad.csv", [row, dict(row, clone_acc=f"{bad_value:.4f}"),
                                            dict(row, queries_used=199807)])  # the checkpoint says 199808
    res = report.verify(bad, device="cpu")
    wrong = [(i, f, c) for i, f, c, _, ok in res if not ok]
    assert wrong == [(1, "clone_acc", pytest.approx(bad_value)), (2, "queries_used", 199807)]
    # rows outside ``recompute`` get the query count checked, not the accuracies
    res = report.verify(bad, device="cpu", recompute={0})
    assert [(i, f, ok) for i, f, _, _, ok in res if i] == [(1, "queries_used", True), (2, "queries_used", False)]
    assert {f for i, f, *_ in res if i == 0} == {"victim_acc", "clone_acc", "fidelity", "queries_used"}

    # the command line: one line per row, named by its line in the CSV (the header is line 1), exit code 1 on a
    # mismatch
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        report.main(["--csv", bad, "--verify", "1"])
    lines = capsys.readouterr().out.splitlines()
    assert e.value.code == 1
    assert lines[0].startswith("line 2 ") and ": OK" in lines[0]
    assert lines[1].startswith("line 3 ") and "MISMATCH clone_acc" in lines[1]
    assert lines[2].startswith("line 4 ") and "MISMATCH queries_used csv 199807 recomputed 199808" in lines[2]


def test_verify_allows_one_image_of_the_split_and_names_the_rows_not_equal_to_the_digit(tmp_path, capsys):
    """Another CPU's kernels sum a convolution in another order and can move a near-tie test image: a row recorded on
    an Intel CPU recomputed one test image apart on an AMD one (0.8797 against 0.8796). verify accepts a difference
    of at most --verify_images images of the split (default 1) and names such rows; two images apart, or one with
    --verify_images 0, is a MISMATCH."""
    row, truth = _verify_case(tmp_path)
    one = 1 / len(load_dataset("synthetic").test.y)
    rows = [row, dict(row, clone_acc=f"{truth['clone_acc'] + one:.4f}"),
            dict(row, clone_acc=f"{truth['clone_acc'] + 2 * one:.4f}")]
    path = _write_csv(tmp_path / "r.csv", rows)
    res = report.verify(path, device="cpu")
    assert [(i, ok) for i, f, _, _, ok in res if f == "clone_acc"] == [(0, True), (1, True), (2, False)]
    assert [(i, ok) for i, f, _, _, ok in report.verify(path, device="cpu", images=0) if f == "clone_acc"] == \
        [(0, True), (1, False), (2, False)]
    capsys.readouterr()
    with pytest.raises(SystemExit):
        report.main(["--csv", path, "--verify", "1"])
    lines = capsys.readouterr().out.splitlines()
    assert "not to the digit" not in lines[0] and ": OK" in lines[0]
    assert ": OK" in lines[1] and f"not to the digit: clone_acc csv {truth['clone_acc'] + one:.4f}" in lines[1]
    assert "MISMATCH clone_acc" in lines[2]
    assert lines[-1] == ("verified 3 row(s): 2 OK (1 of them within 1 image(s) of the split but not to the digit: "
                         "named above), 1 MISMATCH")
    report.main(["--csv", _write_csv(tmp_path / "ok.csv", rows[:2]), "--verify", "1"])  # exit 0: both OK


@pytest.mark.parametrize("channels_last", [1, 0, None])
def test_verify_evaluates_clone_and_victim_in_the_runs_memory_format(tmp_path, monkeypatch, channels_last):
    """The same weights in another layout sum in another order and move a near-tie image now and then (a
    fashionmnist_v2 clone evaluated in channels_last, the runs' default, recomputed in the default layout: 0.8797
    against 0.8796). verify lays out clone, victim and test set as the run did: its --channels_last (1 when a
    checkpoint predates the flag)."""
    from misleader import evaluate
    row, _ = _verify_case(tmp_path)
    if channels_last is not None:
        ck = checkpoint.load(row["attack_path"])
        ck["args"] = {**(ck.get("args") or {}), "channels_last": channels_last}
        checkpoint.save(row["attack_path"], ck)
    want = torch.contiguous_format if channels_last == 0 else torch.channels_last
    seen = []

    def layout(model, x):  # of the weights with more than one input channel, and of the images
        ws = [p for p in model.parameters() if p.dim() == 4 and p.shape[1] > 1]
        return ws and all(p.is_contiguous(memory_format=want) and not p.is_contiguous(
            memory_format=torch.channels_last if want == torch.contiguous_format else torch.contiguous_format)
            for p in ws) and x.is_contiguous(memory_format=want)

    real_metrics, real_predict = evaluate.clone_metrics, evaluate.predict
    monkeypatch.setattr(evaluate, "clone_metrics", lambda m, x, *a: seen.append(("clone", layout(m, x))) or
                        real_metrics(m, x, *a))
    monkeypatch.setattr(evaluate, "predict", lambda m, x, *a, **k: seen.append(("victim", layout(m, x))) or
                        real_predict(m, x, *a, **k))
    assert all(ok for *_, ok in report.verify(_write_csv(tmp_path / "r.csv", [row]), device="cpu"))
    assert [who for who, _ in seen][:2] == ["victim", "clone"] and all(ok for _, ok in seen), seen


def test_verify_checks_the_validation_accuracy_a_clone_recorded_even_when_its_cell_is_empty(tmp_path):
    """A clone whose checkpoint recorded clone_val_acc is checked against its row: an emptied cell is a MISMATCH,
    not a silent pass."""
    row, _ = _verify_case(tmp_path)
    ck = checkpoint.load(row["attack_path"])
    data = load_dataset("synthetic")  # the run's split seed (its args hold none: 0)
    clone = create_model("lenet5", 10, 1)
    clone.load_state_dict(ck["state_dict"])
    val = predict(clone.eval(), data.normalize(data.val.x)).argmax(1).eq(data.val.y).float().mean().item()
    ck["metrics"]["clone_val_acc"] = val
    checkpoint.save(row["attack_path"], ck)
    res = report.verify(_write_csv(tmp_path / "r.csv", [dict(row, clone_val_acc=f"{val:.4f}"),
                                                        dict(row, clone_val_acc="")]), device="cpu")
    assert [(i, ok) for i, f, _, _, ok in res if f == "clone_val_acc"] == [(0, True), (1, False)]


def test_verify_names_the_rows_it_checked_even_while_runs_add_rows(tmp_path, monkeypatch, capsys):
    """The command line reads the CSV once: a row another run records between two reads would shift the row
    numbers, and a MISMATCH line would name the wrong run."""
    row, _ = _verify_case(tmp_path)
    path = _write_csv(tmp_path / "r.csv", [row])
    reads, real = [], report.load_results

    def growing(*a, **kw):  # every read sees one more row recorded first by a concurrent run
        reads.append(1)
        return [dict(row, seed=str(100 + len(reads)))] * (len(reads) - 1) + real(*a, **kw)
    monkeypatch.setattr(report, "load_results", growing)
    report.main(["--csv", path, "--verify", "1"])
    assert len(reads) == 1 and capsys.readouterr().out.splitlines()[0].startswith("line 2 synthetic teacher seed 3: OK")


def test_verify_missing_checkpoint(tmp_path):
    row = _row(dataset="synthetic", label="teacher", seed=0, victim_acc="0.1", clone_acc="0.1", clone_best_acc="0.1",
               fidelity="0.1", victim_path=str(tmp_path / "v.pt"), attack_path=str(tmp_path / "a.pt"))
    with pytest.raises(UserError, match="missing"):
        report.verify(_write_csv(tmp_path / "r.csv", [row]))


def test_report_sh_is_executable():
    path = os.path.join(REPO, "report.sh")
    assert os.access(path, os.X_OK)
    text = open(path).read()
    assert text.startswith("#!/usr/bin/env bash") and "set -euo pipefail" in text
    assert 'python -m misleader.report ${DATA_ROOT:+--data_root "$DATA_ROOT"} "$@"' in text  # DATA_ROOT: test_cli


def test_query_range_rows_are_their_own_victim_named_only_where_needed(tmp_path):
    rows = [_row(label="teacher", seed=0, clone_acc="0.5000", clone_best_acc="0.5000", fidelity="0.5000",
                 victim_acc="0.9000", query_range="tanh"),
            _row(label="teacher", seed=0, clone_acc="0.7000", clone_best_acc="0.7000", fidelity="0.7000",
                 victim_acc="0.9000", query_range="data"),
            _row(label="misleader", seed=0, clone_acc="0.6000", clone_best_acc="0.6000", fidelity="0.6000",
                 victim_acc="0.8800", query_range="data")]
    s = report.summarize(report.load_results(_write_csv(tmp_path / "r.csv", rows)))
    assert [(g["victim"], g["clone_acc_mean"]) for g in s] == [
        ("teacher (query_range tanh)", pytest.approx(0.5)), ("teacher (query_range data)", pytest.approx(0.7)),
        ("misleader", pytest.approx(0.6))]
    rows.append(_row(label="teacher", dataset="mnist", seed=0, clone_acc="0.9000", clone_best_acc="0.9000",
                     fidelity="0.9000", victim_acc="0.9900", query_range="tanh"))
    s = report.summarize(report.load_results(_write_csv(tmp_path / "r2.csv", rows)))
    assert [g["victim"] for g in s] == ["teacher [fashionmnist] (query_range tanh)",
                                        "teacher [fashionmnist] (query_range data)", "misleader", "teacher [mnist]"]
    # a CSV from before the column existed: every row is a tanh-range run
    old = COLUMNS[:COLUMNS.index("query_range")]
    s = report.summarize(report.load_results(_write_csv(tmp_path / "old.csv", rows[:1], old)))
    assert s[0]["victim"] == "teacher" and s[0]["query_range"] == "tanh"


def test_append_row_adds_a_new_column_to_an_older_file(tmp_path):
    from misleader.results import append_row, read_rows

    old = COLUMNS[:COLUMNS.index("query_range")]
    path = _write_csv(tmp_path / "results.csv", [_row(seed=0, clone_acc="0.5")], old)
    append_row(path, _row(seed=1, clone_acc="0.6", query_range="data"))
    with open(path) as f:
        assert f.readline().strip().split(",") == COLUMNS
    rows = read_rows(path)
    assert [(r["seed"], r["clone_acc"], r["query_range"]) for r in rows] == [("0", "0.5", "tanh"), ("1", "0.6", "data")]
    assert [r["date"] for r in rows] == ["2026-01-01"] * 2  # the old row's values stay in their columns

    alien = _write_csv(tmp_path / "alien.csv", [_row(seed=0)], old + ["something_else"])
    before = open(alien).read()
    with pytest.raises(UserError, match="something_else"):
        append_row(alien, _row(seed=1))
    assert open(alien).read() == before


def test_record_row_replaces_the_rows_of_its_run_only_and_upgrades_an_older_file(tmp_path):
    from misleader.results import read_rows, record_row

    old = COLUMNS[:COLUMNS.index("query_range")]
    rows = [_row(seed=0, clone_acc="0.5", attack_path="a.pt"), _row(seed=1, clone_acc="0.6", attack_path="b.pt")]
    path = _write_csv(tmp_path / "results.csv", rows, old)
    removed = record_row(path, _row(seed=0, clone_acc="0.7", attack_path="a.pt", query_range="data"))
    assert [(r["seed"], r["clone_acc"]) for r in removed] == [("0", "0.5")]
    got = read_rows(path)
    assert [(r["attack_path"], r["clone_acc"], r["query_range"]) for r in got] == [("b.pt", "0.6", "tanh"),
                                                                                  ("a.pt", "0.7", "data")]
    assert record_row(path, _row(seed=2, attack_path="c.pt")) == [] and len(read_rows(path)) == 3


def test_a_write_that_fails_leaves_the_results_file_as_it_was_and_no_temporary_file(tmp_path, monkeypatch):
    """A full disk (or a signal) in the middle of writing a row: the CSV keeps its earlier rows byte for byte, no
    temporary file is left, and the error is one line (UserError), not a traceback."""
    from misleader import results
    path = _write_csv(tmp_path / "results.csv", [_row(seed=0, attack_path="a.pt")])
    before = Path(path).read_bytes()

    def full_disk(self, rows):
        self.writerow(next(iter(rows)))
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(csv.DictWriter, "writerows", full_disk)
    for write in (results.record_row, results.append_row):
        with pytest.raises(UserError, match="cannot write .*No space left on device; the file is as it was"):
            write(path, _row(seed=1, attack_path="b.pt"))
        assert Path(path).read_bytes() == before and os.listdir(tmp_path) == ["results.csv", "results.csv.lock"]


def test_writers_through_a_symbolic_link_and_through_its_target_share_one_lock(tmp_path):
    import threading

    from misleader import results
    real = _write_csv(tmp_path / "real.csv", [_row(seed=0, attack_path="a.pt")])
    os.symlink(real, tmp_path / "results.csv")
    got = threading.Event()

    def through_the_link():
        with results.locked(str(tmp_path / "results.csv")):
            got.set()
    with results.locked(real):
        t = threading.Thread(target=through_the_link)
        t.start()
        assert not got.wait(0.5)  # waits for the lock held through the target
    t.join(5)
    assert got.is_set()


def test_rows_of_different_experiments_are_never_averaged(tmp_path):
    """Two configs and two attacks against one victim: four experiments, four rows; seeds alone are averaged."""
    rows = []
    for config, attack, settings, acc in [("fashionmnist", "dfme", "steps=0.5,0.8", "0.8000"),
                                          ("fashionmnist_design", "dfme", "steps=0.1,0.3,0.5", "0.6000"),
                                          ("fashionmnist", "maze", "steps=0.5,0.8 loss=kl", "0.4000"),
                                          ("fashionmnist", "dfme", "steps=0.5,0.8", "0.7000")]:
        rows.append(_row(label="teacher", config=config, attack=attack, settings=settings, seed=len(rows),
                         clone_acc=acc, clone_best_acc=acc, fidelity=acc, victim_acc="0.9000"))
    rows.append(_row(label="teacher", config="fashionmnist", attack="dfme", settings="steps=0.5,0.8", seed=9,
                     query_budget=1000000, clone_acc="0.1000", clone_best_acc="0.1", fidelity="0.1", victim_acc="0.9"))
    s = report.summarize(report.load_results(_write_csv(tmp_path / "r.csv", rows)))
    assert [(g["n_seeds"], g["clone_acc_mean"]) for g in s] == [
        (2, pytest.approx(0.75)), (1, pytest.approx(0.6)), (1, pytest.approx(0.4)), (1, pytest.approx(0.1))]
    names = [g["victim"] for g in s]
    assert len(set(names)) == 4
    assert names[1] == "teacher [config fashionmnist_design]"
    assert names[2] == "teacher [config fashionmnist] (maze)"
    assert names[3] == "teacher [config fashionmnist] (dfme) (1000000 queries)"
    md = report.write_report(_write_csv(tmp_path / "r2.csv", rows), str(tmp_path / "out"))[0]
    table = [line for line in open(md).read().splitlines() if line.startswith("| teacher")]
    assert len(table) == 4


def test_git_commit_is_dirty_for_code_not_for_results(tmp_path):
    from misleader.runlog import git_commit

    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)
    git("init", "-q")
    os.makedirs(tmp_path / "results")
    (tmp_path / "code.py").write_text("x = 1\n")
    (tmp_path / "results" / "results.csv").write_text("a\n")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "c")
    clean = git_commit(str(tmp_path))
    assert len(clean) == 12 and not clean.endswith("-dirty")
    (tmp_path / "results" / "results.csv").write_text("a\n1\n")  # a run appended its row
    assert git_commit(str(tmp_path)) == clean
    (tmp_path / "code.py").write_text("x = 2\n")
    assert git_commit(str(tmp_path)) == clean + "-dirty"


def test_report_has_the_knockoff_budget_curve_when_a_victim_has_two_budgets(tmp_path):
    rows = [_row(label=v, attack="knockoff", query_budget=b, queries_used=b, settings="pool=fashionmnist", seed=0,
                 clone_acc=acc, clone_best_acc=acc, fidelity=acc, victim_acc="0.9", served_acc="0.9",
                 api_defense="none")
            for v, b, acc in [("teacher", 2000, "0.8"), ("teacher", 20000, "0.9"), ("misleader", 2000, "0.7"),
                              ("misleader", 20000, "0.85")]]
    with open(report.write_report(_write_csv(tmp_path / "r.csv", rows), str(tmp_path / "out"))[0]) as f:
        md = f.read()
    assert "## Knockoff budget curve" in md
    assert "| 20,000 | 90.00 (1 seed) | 85.00 (1 seed) | +5.00 (1 seed) |" in md.splitlines()
    with open(report.write_report(_write_csv(tmp_path / "r1.csv", rows[1::2]), str(tmp_path / "out1"))[0]) as f:
        assert "budget curve" not in f.read()  # one budget per victim: no curve


def test_the_tradeoff_plot_numbers_its_points_and_keys_them_by_short_names():
    """utility_vs_protection.png wrote each victim's full name beside its point: a dozen names, some over 80
    characters (adaptive misinformation's model=PATH), on points a few tenths of a point apart covered each other.
    The points now carry numbers and a key names them once, without the file parameter."""
    from misleader.report import short_victim_name, tradeoff_key
    spec = "adaptive_misinformation:tau=0.483,nu=1000,model=Defense/cache/misinfo/f-v2.pt"
    assert short_victim_name(f"misleader + {spec}") == "misleader + adaptive_misinformation:tau=0.483,nu=1000"
    assert short_victim_name("teacher + adaptive_misinformation:model=x.pt,tau=0.5") == \
        "teacher + adaptive_misinformation:tau=0.5"
    assert short_victim_name("misleader + topk:k=1") == "misleader + topk:k=1"
    entries = [{"victim": "teacher"}, {"victim": "misleader"}, {"victim": f"teacher + {spec}"}]
    numbers, key = tradeoff_key(entries)
    assert numbers == {"teacher": 0, "misleader": 1, f"teacher + {spec}": 2}
    assert key == [" 0  teacher", " 1  misleader", " 2  teacher + adaptive_misinformation:tau=0.483,nu=1000"]
