"""The comparison's statistics (misleader/comparison.py): t interval, paired protection, the strongest setting
chosen on validation accuracy only, the headline table, protection along the queries."""

import os
import shutil
import subprocess

import pytest
from helpers import REPO

from misleader import comparison, report


def _row(label, attack="dfme", budget=1000000, seed=0, clone="0.5000", val="", setting="", settings="", vacc="0.9000",
         **kw):
    r = {"dataset": "fashionmnist", "victim": label, "label": label, "attack": attack, "query_budget": str(budget),
         "seed": str(seed), "clone_acc": clone, "clone_val_acc": val, "setting": setting, "settings": settings,
         "victim_acc": vacc, "served_acc": vacc, "api_defense": "none", "probs_as_logits": "0", "config": "c"}
    r.update(kw)
    return r


def _copy_compare(folder):
    """compare.sh and configs/ copied into ``folder``, for a test that writes a config of its own there."""
    shutil.copy(os.path.join(REPO, "compare.sh"), folder)
    shutil.copytree(os.path.join(REPO, "configs"), folder / "configs")


def _compare_list(folder, config, phase, timeout=120):
    """`CONFIG=<config> bash compare.sh --list <phase>` run in ``folder`` (see _copy_compare)."""
    env = {**os.environ, "CONFIG": config, "PYTHONPATH": REPO}
    return subprocess.run(["bash", "compare.sh", "--list", phase], cwd=folder, env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_t_quantiles():
    # to 6 decimals (scipy.stats.t.ppf(0.975, df)): at 3 decimals, 4.303 for 2 df moved the upper bound of an
    # interval of the v2 report, +35.3749, to +35.38
    for df, exact in ((1, 12.706205), (2, 4.302653), (3, 3.182446), (9, 2.262157), (30, 2.042272)):
        assert comparison.t975(df) == pytest.approx(exact, abs=1e-6)
    # beyond the table: exact values 2.0395 (31), 2.0003 (60), 1.9840 (100); the old 1/df term was 0.0031 off at 31
    for df, exact in ((31, 2.03951), (60, 2.00030), (100, 1.98397)):
        assert comparison.t975(df) == pytest.approx(exact, abs=0.0002)
    with pytest.raises(ValueError):
        comparison.t975(0)


def test_paired_protection_by_hand():
    teacher = {0: 0.70, 1: 0.60, 2: 0.65}
    victim = {0: 0.60, 1: 0.55, 2: 0.50, 3: 0.90}  # seed 3 has no teacher partner: left out
    p = comparison.paired(teacher, victim)
    assert p["seeds"] == [0, 1, 2] and p["diffs"] == pytest.approx([0.10, 0.05, 0.15])
    assert p["mean"] == pytest.approx(0.10) and p["std"] == pytest.approx(0.05)
    half = 4.302653 * 0.05 / 3 ** 0.5  # t(0.975, 2 df)
    assert p["lo"] == pytest.approx(0.10 - half) and p["hi"] == pytest.approx(0.10 + half)
    one = comparison.paired({0: 0.7}, {0: 0.4})
    assert one["mean"] == pytest.approx(0.3) and one["std"] is None and one["lo"] is None
    assert comparison.paired({0: 0.7}, {1: 0.4}) is None
    # the seeds left out are named beside the interval: the victim's clone column averages seed 3 too
    assert p["unpaired"] == [3] and comparison.protection_text(p).endswith("(3; seed 3 unpaired)")
    assert comparison.protection_text(one) == "+30.00 (1 seed)"


def test_strongest_is_chosen_on_validation_not_test():
    rows = [_row("teacher", setting="a", clone="0.90", val="0.60"),   # best on test, worse on validation
            _row("teacher", setting="b", clone="0.70", val="0.65"),
            _row("teacher", setting="c", clone="0.80", val="0.70", budget=2000000),  # another budget: not the grid
            _row("misleader", setting="c", clone="0.10", val="0.99")]  # another victim
    assert comparison.strongest(rows, "teacher", ["a", "b"], 1000000, 0) == ("b", [])
    assert comparison.strongest(rows, "teacher", ["a", "b", "c"], 1000000, 0) == (None, ["c"])
    assert comparison.strongest(rows, "teacher", ["a", "b"], 1000000, 1) == (None, ["a", "b"])
    defended = [_row("teacher", setting=n, val=v, api_defense="topk:k=1") for n, v in [("a", "0.2"), ("b", "0.1")]]
    assert comparison.strongest(rows + defended, "teacher", ["a", "b"], 1000000, 0) == ("b", [])
    assert comparison.strongest(rows + defended, "teacher", ["a", "b"], 1000000, 0, "topk:k=1") == ("a", [])
    rows.append(_row("teacher", setting="c", clone="0.10", val="0.65"))  # a tie goes to the earlier name
    assert comparison.strongest(rows, "teacher", ["a", "b", "c"], 1000000, 0) == ("b", [])


def test_strongest_cli_prints_the_name_or_nothing(tmp_path, capsys):
    from misleader.results import COLUMNS
    from tests.test_report import _write_csv
    path = _write_csv(tmp_path / "r.csv", [_row("teacher", setting="a", val="0.6"),
                                           _row("teacher", setting="b", val="0.7")], COLUMNS)
    report.main(["--csv", path, "--config", "c", "--strongest", "teacher", "--grid", "a", "b", "--grid_budget", "1"])
    assert capsys.readouterr().out == "b\n"
    report.main(["--csv", path, "--strongest", "teacher", "--grid", "a", "b", "x", "--grid_budget", "1"])
    out = capsys.readouterr()
    assert out.out == "" and "missing: x" in out.err
    report.main(["--csv", str(tmp_path / "none.csv"), "--strongest", "teacher", "--grid", "a"])
    assert capsys.readouterr().out == ""


def test_headline_uses_each_victims_strongest_setting_and_pairs_seeds():
    ko = "pool={} epochs=30 victim_output=probs"
    rows = [
        # grid at 1M, seed 0: the teacher's strongest is b, MISLEADER's a
        _row("teacher", setting="a", val="0.60", clone="0.60"), _row("teacher", setting="b", val="0.70", clone="0.70"),
        _row("misleader", setting="a", val="0.55", clone="0.50", vacc="0.8800"),
        _row("misleader", setting="b", val="0.40", clone="0.40", vacc="0.8800"),
        # final at 2M: both settings ran for both victims; only the strongest counts
        *[_row("teacher", setting="b", budget=2000000, seed=s, clone=c) for s, c in [(0, "0.80"), (1, "0.78")]],
        *[_row("teacher", setting="a", budget=2000000, seed=s, clone="0.10") for s in (0, 1)],
        *[_row("misleader", setting="a", budget=2000000, seed=s, clone=c, vacc="0.8800") for s, c in [(0, "0.70"), (1, "0.72")]],
        *[_row("misleader", setting="b", budget=2000000, seed=s, clone="0.99", vacc="0.8800") for s in (0, 1)],
        # Knockoff: in distribution and out of it; a label-only run is not the headline
        _row("teacher", attack="knockoff", budget=20000, clone="0.85", settings=ko.format("fashionmnist")),
        _row("teacher", attack="knockoff", budget=20000, clone="0.40", settings=ko.format("synthetic")),
        _row("misleader", attack="knockoff", budget=20000, clone="0.80", settings=ko.format("fashionmnist"), vacc="0.8800"),
        _row("misleader", attack="knockoff", budget=20000, clone="0.30", settings=ko.format("synthetic"), vacc="0.8800"),
        _row("misleader", attack="knockoff", budget=20000, clone="0.01", vacc="0.8800",
             settings="pool=fashionmnist victim_output=label"),
    ]
    # an API defense on the teacher: a victim of its own, attacked with the bare teacher's strongest setting
    rows += [_row("teacher", setting="b", budget=2000000, seed=0, clone="0.75", api_defense="rounding:decimals=1",
                  served_acc="0.8950", served_l1="0.01"),
             _row("teacher", attack="knockoff", budget=20000, clone="0.90", api_defense="rounding:decimals=1",
                  served_acc="0.8950", settings="pool=fashionmnist victim_output=label")]
    t, m, d = comparison.headline(rows)
    assert t["victim"] == "teacher" and t["dfme_setting"] == "b" and t["dfme"] == {0: 0.80, 1: 0.78}
    assert m["dfme_setting"] == "a" and m["dfme_budget"] == 2000000 and m["dfme"] == {0: 0.70, 1: 0.72}
    assert m["utility_cost"] == pytest.approx(0.02)
    assert m["dfme_protection"]["diffs"] == pytest.approx([0.10, 0.06])
    assert list(m["knockoff"]) == ["Knockoff fashionmnist", "Knockoff synthetic", "Knockoff fashionmnist label-only"]
    assert m["knockoff"]["Knockoff fashionmnist"]["protection"]["mean"] == pytest.approx(0.05)
    assert m["knockoff"]["Knockoff synthetic"]["protection"]["mean"] == pytest.approx(0.10)
    assert m["knockoff"]["Knockoff fashionmnist label-only"]["protection"] is None  # the teacher has no such run
    assert d["victim"] == "teacher + rounding:decimals=1" and d["utility_cost"] == pytest.approx(0.005)
    assert d["dfme_setting"] == "b" and d["dfme_protection"]["diffs"] == pytest.approx([0.05])  # 0.80 - 0.75
    lines = comparison.headline_table(rows)
    assert any(line.startswith("| misleader | 88.00 | 2.00 | 0.0000 | dfme a, 2,000,000 queries | 71.00 ± 1.41 (2) | +8.00 ± 2.83 [")
               for line in lines)
    grid = comparison.grid_table(rows)
    assert "| teacher | 60.00 / 60.00 | **70.00 / 70.00** | b |" in grid
    assert "| misleader | **55.00 / 50.00** | 40.00 / 40.00 | a |" in grid


def test_headline_names_a_setting_once_when_it_is_named_after_its_attack():
    rows = [_row("teacher", attack="disguide", setting="disguide", val="0.70", clone="0.70"),
            _row("teacher", setting="late", val="0.60", clone="0.60")]
    lines = comparison.headline_table(rows)
    assert any(line.startswith("| teacher | 90.00 | 0.00 | disguide, 1,000,000 queries | 70.00 (1 seed) |") for line in lines)
    rows[0]["clone_val_acc"] = "0.50"  # late is strongest now: attack and setting differ, both named
    assert any("| dfme late, 1,000,000 queries |" in line for line in comparison.headline_table(rows))


def test_protection_curves_interpolate_on_common_queries():
    teacher = {0: [(0, 0.1), (100, 0.5)], 1: [(0, 0.2), (100, 0.6)]}
    victim = {0: [(0, 0.1), (50, 0.2), (100, 0.3)], 2: [(0, 0.0), (100, 0.0)]}  # seed 0 is the only pair
    xs, per_seed = report.protection_curves(teacher, victim, points=3)
    assert xs == [0, 50, 100] and len(per_seed) == 1
    assert per_seed[0] == pytest.approx([0.0, 0.1, 0.2])
    assert report.protection_curves(teacher, {5: [(0, 0.1), (1, 0.1)]}) is None


def test_pareto_front_keeps_only_undominated_points():
    pts = [(0.0, 90.0), (5.0, 88.0), (3.0, 87.0), (10.0, 80.0), (10.0, 79.0), (-1.0, 91.0)]
    assert report.pareto_front(pts) == [5, 0, 1, 3]  # (3, 87) loses to (5, 88); (10, 79) to (10, 80)


def test_a_defended_victim_meets_the_strongest_of_the_settings_tried_on_it():
    rows = [_row("teacher", setting="a", val="0.70", clone="0.70"), _row("teacher", setting="b", val="0.60", clone="0.65"),
            # rounding on the teacher: the bare teacher's strongest (a) and an aware setting (b), chosen on validation
            _row("teacher", setting="a", val="0.30", clone="0.35", api_defense="rounding:decimals=1"),
            _row("teacher", setting="b", val="0.50", clone="0.45", api_defense="rounding:decimals=1")]
    t, d = comparison.headline(rows)
    assert t["dfme_setting"] == "a" and d["dfme_setting"] == "b"
    assert d["dfme_protection"]["diffs"] == pytest.approx([0.70 - 0.45])  # the teacher's strongest (a) vs b


def test_a_setting_without_a_usable_validation_accuracy_is_an_error_not_silently_passed_over():
    """A nan validation accuracy (--val_size 0) cannot take part in a choice made on validation: skipped, it would
    keep that attack from ever being the strongest (a defense's gain); an empty one (a row older than the column)
    has nothing to skip."""
    rows = [_row("teacher", setting="a", val="nan", clone="0.70"), _row("teacher", setting="b", val="0.60", clone="0.65")]
    with pytest.raises(comparison.UserError, match="results row 0: clone_val_acc is nan"):
        comparison.final_dfme(rows, ("teacher", "none"), None)
    ko = "pool=fashionmnist epochs=30 victim_output={}"
    rows = [_row("teacher", setting="a", val="0.60", clone="0.60"),
            _row("teacher", attack="knockoff", budget=20000, val="nan", clone="0.85", settings=ko.format("probs"))]
    with pytest.raises(comparison.UserError, match="results row 1: clone_val_acc is nan"):
        comparison.headline(rows)
    rows[1]["clone_val_acc"] = ""
    assert comparison.headline(rows)[0]["overall"]["attack"] == "data-free a"


def test_a_defended_victims_settings_are_compared_on_mean_validation_over_shared_seeds_not_a_lucky_one():
    rd = {"api_defense": "rounding:decimals=1"}
    rows = [_row("teacher", setting="a", val="0.70", **rd), _row("teacher", setting="a", seed=1, val="0.90", **rd),
            _row("teacher", setting="b", val="0.80", **rd)]  # on seed 0, the one both have, b is stronger
    name, _, idx = comparison.final_dfme(rows, ("teacher", "rounding:decimals=1"), None)
    assert (name, idx) == ("b", [2])
    rows += [_row("teacher", setting="b", seed=1, val="0.60", **rd)]  # on seeds 0, 1: a 0.80, b 0.70
    name, _, idx = comparison.final_dfme(rows, ("teacher", "rounding:decimals=1"), None)
    assert (name, idx) == ("a", [0, 1])


def test_settings_that_share_seeds_only_in_pairs_are_compared_two_by_two_on_those_seeds():
    """a, b, c have no seed in common, each pair one: b beats a on seed 0 and c on seed 2, so b is the strongest,
    although a and c have the higher means over their own seeds (a's and c's from seed 1, an easy one)."""
    rd = {"api_defense": "rounding:decimals=1"}
    vals = {"a": {0: "0.60", 1: "0.90"}, "b": {0: "0.70", 2: "0.70"}, "c": {1: "0.85", 2: "0.65"}}
    rows = [_row("teacher", setting=n, seed=s, val=v, **rd) for n, by_seed in vals.items() for s, v in by_seed.items()]
    name, _, idx = comparison.final_dfme(rows, ("teacher", "rounding:decimals=1"), None)
    assert name == "b" and [rows[i]["seed"] for i in idx] == ["0", "2"]
    # the same rule, by hand: a cycle (a beats c, c beats b, b beats a) ties, and the tie goes to the rank
    cycle = {"a": {0: 0.6, 1: 0.9}, "b": {0: 0.7, 2: 0.6}, "c": {1: 0.85, 2: 0.65}}
    assert comparison.best_on_validation(cycle, lambda n: n == "c") == "c"
    assert comparison.best_on_validation(cycle, lambda n: n == "a") == "a"


def test_an_incomplete_grid_is_said_and_its_best_on_validation_used():
    rows = [_row("teacher", setting="a", val="0.50", clone="0.70"), _row("teacher", setting="b", val="0.60", clone="0.65"),
            _row("teacher", setting="c", val="0.55", clone="0.60"), _row("misleader", setting="a", val="0.40", clone="0.45"),
            _row("misleader", setting="b", val="0.30", clone="0.50")]  # misleader lacks c
    t, m = comparison.headline(rows)
    assert t["dfme_setting"] == "b" and t["grid_missing"] == []
    assert m["dfme_setting"] == "a" and m["grid_missing"] == ["c"]
    table = "\n".join(comparison.headline_table(rows))
    assert "dfme a, 1,000,000 queries (grid incomplete, 1 setting(s) to run" in table


def test_an_incomplete_grid_whose_best_so_far_lacks_headline_runs_says_so():
    """The headline's 2M runs are setting a's; the grid, one setting short, is led on validation by b, which has
    no 2M run yet: the table says b is the strongest so far and its runs are to come, not that a is the best."""
    rows = [_row("teacher", setting="a", val="0.70"), _row("teacher", setting="b", val="0.80"),
            *[_row("teacher", setting="a", budget=2000000, seed=s, val="0.75", clone="0.74") for s in (0, 1, 2)]]
    t = comparison.headline(rows, ["a", "b", "c"])[0]
    assert (t["dfme_setting"], t["dfme_budget"], t["grid_missing"], t["final_pending"]) == ("a", 2000000, ["c"], "b")
    line = comparison.headline_table(rows, ["a", "b", "c"])[2]
    assert "(grid incomplete, 1 setting(s) to run: c) (the grid's strongest so far is now b: its runs at this " \
           "budget are still to run)" in line and "best on validation so far" not in line
    # once b has a 2M run, the headline keeps a (more seeds) and says how far b has come, not that it has none
    more = rows + [_row("teacher", setting="b", budget=2000000, seed=0, val="0.8", clone="0.8")]
    assert comparison.headline(more, ["a", "b", "c"])[0]["dfme_setting"] == "a"
    line = comparison.headline_table(more, ["a", "b", "c"])[2]
    assert "(the grid's strongest so far is now b: 1 seed of it at this budget so far, against a's 3)" in line
    # a victim's 2M protection is against the teacher's a runs: said; one at 1M is against the teacher's b: not
    rows += [*[_row("m", setting="a", budget=2000000, seed=s, val="0.5", clone="0.6") for s in (0, 1, 2)],
             _row("w", setting="a", val="0.5", clone="0.6")]
    lines = {ln.split(" | ")[0]: ln for ln in comparison.headline_table(rows, ["a", "b", "c"])[2:5]}
    assert "(3) (against the teacher's a, not its strongest so far, b) |" in lines["| m"]
    assert comparison.headline(rows, ["a", "b", "c"])[2]["teacher_setting"] == "b"
    assert "| -10.00 (1 seed) (against the teacher's best so far, b: the teacher's grid incomplete) |" in lines["| w"]


def test_the_full_grid_list_shows_settings_not_run_yet():
    rows = [_row("teacher", setting="a", val="0.50"), _row("misleader", setting="a", val="0.40")]
    assert comparison.headline(rows)[1]["grid_missing"] == []  # the rows alone: a grid of one
    t, m = comparison.headline(rows, ["a", "b"])
    assert t["grid_missing"] == ["b"] and m["grid_missing"] == ["b"]
    assert "| teacher | 50.00 / 50.00 | - | grid incomplete: b |" in comparison.grid_table(rows, ["a", "b"])


def _two_grids(folder, config, body):
    """compare.sh in ``folder`` with config ``config`` (smoke's, GRID_BUDGET 1, a grid of settings a and b, then
    ``body``) and a results CSV where teacher and MISLEADER ran both (a the stronger on validation); the rows."""
    from misleader.results import COLUMNS
    from tests.test_report import _write_csv
    _copy_compare(folder)
    with open(folder / f"configs/{config}.sh", "w") as f:
        f.write('source configs/smoke.sh\nCONFIG=c\nGRID_BUDGET=1\nDFME_GRID=("a dfme --steps 0.5" "b dfme --steps 0.3")\n'
                + body)
    os.makedirs(folder / "results")
    rows = [_row(v, setting=s, val=val, dataset="synthetic") for v in ("teacher", "misleader")
            for s, val in (("a", "0.7"), ("b", "0.6"))]
    _write_csv(folder / "results/results.csv", rows, COLUMNS)
    return rows


def test_aware_settings_reach_only_the_defenses_they_name(tmp_path):
    """compare.sh --list final with both grids complete: every defense meets its bare model's strongest setting
    (a: best on validation), and an aware setting (b from the grid, c from AWARE_GRID) only where AWARE_SETTINGS
    names the defense."""
    rows = _two_grids(tmp_path, "aware", 'API_DEFENSES=("rounding:decimals=1" "topk:k=1")\n'
                      'AWARE_GRID=("c disguide --loss kl")\nAWARE_SETTINGS=("b rounding" "c topk")\n'
                      'MISLEADER_VARIANTS=("lam1 --lambda_ 1")\nVARIANT_GRID=(b)\n')
    proc = _compare_list(tmp_path, "aware", "final")
    assert proc.returncode == 0, proc.stderr
    runs = [ln for ln in proc.stdout.splitlines() if "--api_defense" in ln]

    def searched(victim, spec):
        return [ln.split("--setting ")[1].split()[0] for ln in runs
                if f"--label {victim} " in ln and f"--api_defense {spec} " in ln]
    _, grid_info = comparison.grid_runs(rows, ["a", "b"])
    for victim in ("teacher", "misleader"):
        assert searched(victim, "rounding:decimals=1") == ["a", "b"]
        assert searched(victim, "topk:k=1") == ["a", "c"]  # c: a setting only defended victims meet
        # the report's twin of compare.sh's aware_for names the same settings, in the same order, as still to run
        for spec in ("rounding:decimals=1", "topk:k=1"):
            assert comparison.search_missing(rows, (victim, spec), grid_info, "a", ["b rounding", "c topk"]) == \
                searched(victim, spec)
    # a MISLEADER variant meets MISLEADER's strongest (a) and VARIANT_GRID's b, no defense's aware setting
    variant = [ln.split("--setting ")[1].split()[0] for ln in proc.stdout.splitlines()
               if "--label misleader-lam1 " in ln]
    assert variant == ["a", "b"]
    c_run = next(ln for ln in runs if "--setting c " in ln)
    assert "DFME/disguide.py" in c_run and c_run.endswith("--loss kl")
    grid = _compare_list(tmp_path, "aware", "grid")
    assert grid.returncode == 0 and "--setting a " in grid.stdout and "--setting c" not in grid.stdout
    with open(tmp_path / "configs/aware.sh", "a") as f:
        f.write('AWARE_SETTINGS=("b reverse_sigmoid")\n')
    bad = _compare_list(tmp_path, "aware", "final", timeout=60)
    assert bad.returncode == 2 and "'reverse_sigmoid' names no defense" in bad.stderr and bad.stdout == ""
    with open(tmp_path / "configs/aware.sh", "a") as f:
        f.write('AWARE_SETTINGS=()\nAWARE_GRID=("a dfme --steps 0.1")\n')
    bad = _compare_list(tmp_path, "aware", "final", timeout=60)
    assert bad.returncode == 2 and "AWARE_GRID: 'a' is already a DFME_GRID setting" in bad.stderr


def test_a_final_variant_meets_its_searchs_strongest_at_the_full_budget_on_the_paired_seeds(tmp_path):
    """FINAL_VARIANTS (e.g. MISLEADER trained again from another seed): once its search is complete, the variant
    meets the search's strongest setting on validation at QUERY_BUDGET on every COMPARE_SEEDS seed, and Knockoff
    on those seeds; a variant not named there keeps its search only. A name that is no variant: one line, exit 2."""
    from misleader.results import COLUMNS
    from tests.test_report import _write_csv
    rows = _two_grids(tmp_path, "fv", 'QUERY_BUDGET=2\nCOMPARE_SEEDS=(0 1 2)\nAPI_DEFENSES=()\nATTACK_TAG=t\n'
                      'COMPARE_POOLS=(synthetic synthetic_rgb)\nLABEL_SEEDS=(0 2)\n'
                      'MISLEADER_VARIANTS=("lam1 --lambda_ 1" "seed1 --seed 1")\nVARIANT_GRID=(b)\n'
                      'FINAL_VARIANTS=(seed1)\n')  # MISLEADER's strongest: a
    rows.append(_row("misleader-seed1", setting="a", val="0.5", dataset="synthetic"))
    _write_csv(tmp_path / "results/results.csv", rows, COLUMNS)

    def runs(phase="final"):
        """{label: [(entry point, seed, budget, setting)]} of a phase's listing, and the listing; every DFME run
        of a variant attacks its own ensemble, and its search and final runs carry their own tags."""
        proc = _compare_list(tmp_path, "fv", phase)
        assert proc.returncode == 0, proc.stderr
        found = {}
        for ln in proc.stdout.splitlines():
            if ln.startswith("python DFME/"):
                w = ln.split()
                label = w[w.index("--label") + 1]
                if label.startswith("misleader-"):
                    assert w[w.index("--ensemble_tag") + 1] == label[len("misleader-"):], ln
                if w[1] == "DFME/dfme.py":
                    assert w[w.index("--tag") + 1] == ("t-grid" if w[w.index("--query_budget") + 1] == "1" else "t")
                found.setdefault(w[w.index("--label") + 1], []).append(
                    (w[1], w[w.index("--seed") + 1], w[w.index("--query_budget") + 1],
                     w[w.index("--setting") + 1] if "--setting" in w else None))
        return found, proc.stdout
    search = [("DFME/dfme.py", "0", "1", "a"), ("DFME/dfme.py", "0", "1", "b")]
    found, out = runs()  # its search is not complete: b has no run yet
    assert found["misleader-seed1"] == search
    assert "misleader-seed1: no final runs yet, its search is not complete" in out
    rows.append(_row("misleader-seed1", setting="b", val="0.55", dataset="synthetic"))  # b is its strongest
    _write_csv(tmp_path / "results/results.csv", rows, COLUMNS)
    found, out = runs()
    assert found["misleader-seed1"] == search + [("DFME/dfme.py", s, "2", "b") for s in "012"]
    # the report it ends with is told which victims get runs at QUERY_BUDGET (the variant named, lam1 not)
    assert out.splitlines()[-1].endswith("--final_budget 2 --final_victims teacher misleader misleader-seed1 lambda0 "
                                         "homogeneous")
    assert found["misleader-lam1"] == search
    _, listing = runs("grid")  # Knockoff: a final variant meets every pool on every seed, and label-only answers

    def knockoff(label):
        out = []
        for ln in listing.splitlines():
            w = ln.split()
            if ln.startswith("python DFME/knockoff.py") and w[w.index("--label") + 1] == label:
                out.append((w[w.index("--seed") + 1], w[w.index("--pool") + 1],
                            w[w.index("--victim_output") + 1] if "--victim_output" in w else "probs"))
        return sorted(out)
    assert knockoff("misleader-seed1") == sorted([(sd, p, "probs") for sd in "012" for p in ("synthetic", "synthetic_rgb")]
                                                 + [("0", "synthetic", "label"), ("2", "synthetic", "label")])
    assert knockoff("misleader-seed1") == knockoff("misleader")
    assert knockoff("misleader-lam1") == [("0", "synthetic", "probs")]
    train = _compare_list(tmp_path, "fv", "train").stdout  # the variant's flag replaces the training seed
    seed1 = [ln.split() for ln in train.splitlines() if "--tag seed1" in ln]
    assert len(seed1) >= 2 and all(w.count("--seed") == 1 and w[w.index("--seed") + 1] == "1" for w in seed1)
    # the report's headline pairs those runs with the teacher's at the same budget, each its own strongest
    rows += [_row(v, budget=2000000, seed=sd, setting=st, clone=c, val=c, dataset="synthetic")
             for sd in (0, 1, 2) for v, st, c in (("teacher", "a", f"0.8{sd}"), ("misleader-seed1", "b", f"0.6{sd}"))]
    entry = next(e for e in comparison.headline(rows, ["a", "b"], variant_grid=["b"])
                 if e["key"] == ("misleader-seed1", "none"))
    assert (entry["dfme_setting"], entry["dfme_budget"], entry["teacher_setting"]) == ("b", 2000000, "a")
    assert entry["dfme_protection"]["seeds"] == [0, 1, 2] and entry["dfme_protection"]["mean"] == pytest.approx(0.2)
    with open(tmp_path / "configs/fv.sh", "a") as f:
        f.write('FINAL_VARIANTS=(seed2)\n')
    bad = _compare_list(tmp_path, "fv", "final", timeout=60)
    assert bad.returncode == 2 and bad.stdout == "" and len(bad.stderr.splitlines()) == 1
    assert "FINAL_VARIANTS: 'seed2' names no MISLEADER_VARIANTS entry (lam1 seed1)" in bad.stderr


def test_a_misleader_variants_search_is_misleaders_strongest_and_the_variant_grid(tmp_path):
    """The report names only a variant's search runs (MISLEADER's strongest grid setting plus VARIANT_GRID) as
    still to run, and its headline run is the stronger of them on validation (compare.sh's listing of them:
    test_aware_settings_reach_only_the_defenses_they_name). A VARIANT_GRID name outside DFME_GRID ends with one
    line and exit 2."""
    vals = {"teacher": ("0.7", "0.6", "0.5"), "misleader": ("0.4", "0.6", "0.5")}  # MISLEADER's strongest: b
    rows = [_row(v, setting=s, val=val) for v in vals for s, val in zip("abc", vals[v])]
    var = ("misleader-lam1", "none")
    rows.append(_row("misleader-lam1", setting="c", val="0.45", clone="0.44"))
    entry = next(e for e in comparison.headline(rows, ["a", "b", "c"], variant_grid=["c"]) if e["key"] == var)
    assert entry["grid_missing"] == ["b"] and entry["search"]
    assert "search incomplete, 1 setting(s) to run: b;" in "\n".join(
        comparison.headline_table(rows, ["a", "b", "c"], variant_grid=["c"]))
    rows.append(_row("misleader-lam1", setting="b", val="0.30", clone="0.50"))  # better on test, worse on validation
    entry = next(e for e in comparison.headline(rows, ["a", "b", "c"], variant_grid=["c"]) if e["key"] == var)
    assert entry["grid_missing"] == [] and entry["dfme_setting"] == "c" and entry["dfme"] == {0: 0.44}
    # the grid table is the grid's: a variant's search is not a grid with settings "incomplete"
    grid = comparison.grid_table(rows, ["a", "b", "c"])
    assert not any(line.startswith("| misleader-lam1 ") for line in grid) and "variants" in grid[0]
    assert any(line.startswith("| misleader | ") for line in grid)
    _copy_compare(tmp_path)
    with open(tmp_path / "configs/var.sh", "w") as f:
        f.write('source configs/smoke.sh\nCONFIG=c\nDFME_GRID=("a dfme --steps 0.5")\nVARIANT_GRID=(zz)\n')
    bad = _compare_list(tmp_path, "var", "final", timeout=60)
    assert bad.returncode == 2 and "VARIANT_GRID: 'zz' is not a DFME_GRID setting" in bad.stderr and bad.stdout == ""


def test_a_victim_whose_data_free_runs_have_not_started_says_so_in_the_headline():
    """A variant or defended API with Knockoff rows only showed a bare "-" as its data-free attack, and its strongest
    of all (Knockoff) with no word that the data-free search, which may clone it better, had not run yet."""
    rows = [_row(v, setting=s, val=val) for v in ("teacher", "misleader") for s, val in (("a", "0.7"), ("b", "0.6"))]
    knock = {"attack": "knockoff", "budget": 20000, "settings": "pool=fashionmnist"}
    rows += [_row("teacher", clone="0.87", val="0.87", **knock), _row("misleader-seed1", clone="0.86", val="0.86", **knock),
             _row("teacher", clone="0.85", val="0.85", api_defense="topk:k=1", **knock)]
    table = comparison.headline_table(rows, ["a", "b"], aware=["b topk"], variant_grid=["b"])
    seed1 = next(ln for ln in table if ln.startswith("| misleader-seed1 |")).split(" | ")
    assert seed1[4] == "- (search not started: 2 setting(s) to run: a b)"
    assert seed1[-1].startswith("+1.00 (1 seed)") and "its data-free search not started: this may still fall" in seed1[-1]
    topk = next(ln for ln in table if ln.startswith("| teacher + topk:k=1 |")).split(" | ")
    assert topk[4] == "- (search not started: 2 setting(s) to run: a b)"
    mis = next(ln for ln in table if ln.startswith("| misleader |")).split(" | ")
    assert "not started" not in mis[4] and "may still fall" not in mis[-1]
    # a search that has started but not finished can still find a stronger attack
    rows.append(_row("misleader-seed1", setting="a", clone="0.30", val="0.30"))
    table = comparison.headline_table(rows, ["a", "b"], aware=["b topk"], variant_grid=["b"])
    seed1 = next(ln for ln in table if ln.startswith("| misleader-seed1 |")).split(" | ")
    assert "(search incomplete, 1 setting(s) to run: b;" in seed1[4]
    assert "its data-free search incomplete: this may still fall" in seed1[-1]
    # before the grid it starts from is complete, a search's settings are not known: it waits for that grid
    rows = [r for r in rows if not (r["label"] in ("misleader", "teacher") and r["setting"] == "b")]
    rows = [r for r in rows if r["label"] != "misleader-seed1" or r["attack"] == "knockoff"]
    table = comparison.headline_table(rows, ["a", "b"], aware=["b topk"], variant_grid=["b"])
    cell = {ln.split(" | ")[0]: ln.split(" | ")[4] for ln in table if ln.startswith("| ")}
    assert cell["| misleader-seed1"] == "- (waits for misleader's grid: 1 setting(s) to run: b)"
    assert cell["| teacher + topk:k=1"] == "- (waits for teacher's grid: 1 setting(s) to run: b)"


def test_the_strongest_attack_of_all_is_chosen_on_validation_and_paired_with_the_teachers():
    ko = "pool={} epochs=30 victim_output=probs"
    rows = [*[_row("teacher", setting="b", seed=s, val="0.70", clone=c) for s, c in [(0, "0.80"), (1, "0.78")]],
            *[_row("teacher", attack="knockoff", budget=20000, seed=s, val="0.86", clone=c,
                   settings=ko.format("fashionmnist")) for s, c in [(0, "0.85"), (1, "0.84")]],
            # MISLEADER: the synthetic pool's clone is the best on test, but not on validation
            *[_row("misleader", setting="b", seed=s, val="0.50", clone="0.50") for s in (0, 1)],
            *[_row("misleader", attack="knockoff", budget=20000, seed=s, val="0.81", clone=c,
                   settings=ko.format("fashionmnist")) for s, c in [(0, "0.80"), (1, "0.79")]],
            *[_row("misleader", attack="knockoff", budget=20000, seed=s, val="0.30", clone="0.95",
                   settings=ko.format("synthetic")) for s in (0, 1)],
            # a victim whose strongest attack is the data-free one (validation 0.90 over Knockoff's 0.40)
            *[_row("d", setting="b", seed=s, val="0.90", clone=c) for s, c in [(0, "0.75"), (1, "0.70")]],
            *[_row("d", attack="knockoff", budget=20000, seed=s, val="0.40", clone="0.40",
                   settings=ko.format("fashionmnist")) for s in (0, 1)]]
    t, m, d = comparison.headline(rows)
    assert t["overall"]["attack"] == "Knockoff fashionmnist" and t["overall"]["protection"] is None
    assert m["overall"]["attack"] == "Knockoff fashionmnist" and m["overall"]["clone"] == {0: 0.80, 1: 0.79}
    assert m["overall"]["protection"]["diffs"] == pytest.approx([0.05, 0.05])
    assert d["overall"]["attack"] == "data-free b"
    assert d["overall"]["protection"]["diffs"] == pytest.approx([0.85 - 0.75, 0.84 - 0.70])
    lines = comparison.headline_table(rows)
    assert "strongest of all (on validation) | clone (%) | protection (pts) |" in lines[0]
    assert lines[2].endswith("| Knockoff fashionmnist | 84.50 ± 0.71 (2) | - |")
    # the teacher's strongest of the same attacks is another attack than the victim's: the cell says which
    assert lines[3].endswith("| Knockoff fashionmnist | 79.50 ± 0.71 (2) | +5.00 ± 0.00 [+5.00, +5.00] (2) |")
    assert lines[4].endswith("| data-free b | 72.50 ± 3.54 (2) | +12.00 ± 2.83 [-13.41, +37.41] (2) "
                             "(against the teacher's Knockoff fashionmnist) |")
    rows = [dict(r, clone_val_acc="") for r in rows]  # no validation accuracy anywhere: no verdict, said so
    assert all(e["overall"]["attack"] is None for e in comparison.headline(rows))


def test_the_strongest_attack_of_all_is_compared_on_shared_seeds_and_pairs_by_seed():
    from misleader.errors import UserError
    ko = "pool=fashionmnist epochs=30 victim_output={}"
    teacher = [_row("teacher", attack="knockoff", budget=20000, seed=s, val="0.86", clone=c,
                    settings=ko.format("probs")) for s, c in [(0, "0.85"), (1, "0.84"), (2, "0.83")]]
    # label-only on seed 0 only: 0.87 beats the probability column's mean over 3 seeds (0.8633) but ties it on
    # seed 0, the one seed both have: the tie goes to the earlier column, not to one seed's luck
    victim = [*[_row("v", attack="knockoff", budget=20000, seed=s, val=v, clone=c, settings=ko.format("probs"))
                for s, v, c in [(2, "0.86", "0.70"), (0, "0.87", "0.80"), (1, "0.86", "0.75")]],
              _row("v", attack="knockoff", budget=20000, seed=0, val="0.87", clone="0.81", settings=ko.format("label"))]
    t, v = comparison.headline(teacher + victim)
    assert v["overall"]["attack"] == "Knockoff fashionmnist"
    assert v["overall"]["protection"]["diffs"] == pytest.approx([0.05, 0.09, 0.13])  # seed by seed, not by position
    victim[3]["clone_val_acc"] = "0.88"  # now label-only is better on the shared seed
    assert comparison.headline(teacher + victim)[1]["overall"]["attack"] == "Knockoff fashionmnist label-only"
    # a strongest attack with no seed in common with the teacher's strongest: said, not a blank
    lone = [_row("w", attack="knockoff", budget=20000, seed=7, val="0.9", clone="0.8", settings=ko.format("probs"))]
    t, w = comparison.headline(teacher + lone)
    assert w["overall"]["protection"] is None and w["overall"]["unpaired"]
    assert comparison.headline_table(teacher + lone)[3].endswith("| no seed in common with the teacher's |")
    lone[0]["clone_val_acc"] = "?"
    with pytest.raises(UserError, match="clone_val_acc is not a number"):
        comparison.headline(teacher + lone)


def test_label_only_knockoff_runs_on_label_seeds(tmp_path):
    """compare.sh --list grid: label-only Knockoff against teacher, MISLEADER and every API defense on each of
    LABEL_SEEDS; without LABEL_SEEDS on the first of COMPARE_SEEDS only."""
    _copy_compare(tmp_path)

    def label_runs(extra):
        with open(tmp_path / "configs/labels.sh", "w") as f:
            f.write('source configs/smoke.sh\nCOMPARE_SEEDS=(3 4 5)\nAPI_DEFENSES=("topk:k=1")\n' + extra)
        proc = _compare_list(tmp_path, "labels", "grid")
        assert proc.returncode == 0, proc.stderr
        return sorted((ln.split("--label ")[1].split()[0], "--api_defense" in ln,
                       int(ln.split("--seed ")[1].split()[0]))
                      for ln in proc.stdout.splitlines() if "--victim_output label" in ln)
    victims = [(v, d) for v in ("misleader", "teacher") for d in (False, True)]
    assert label_runs("") == [(v, d, 3) for v, d in victims]
    assert label_runs("LABEL_SEEDS=(3 5)\n") == [(v, d, s) for v, d in victims for s in (3, 5)]


def test_knockoff_against_api_defenses_queries_every_pool(tmp_path):
    """compare.sh --list grid: Knockoff with probability answers meets every API defense from every pool of
    COMPARE_POOLS (in and out of distribution), on each of COMPARE_SEEDS; label-only from the first pool."""
    _copy_compare(tmp_path)
    with open(tmp_path / "configs/pools.sh", "w") as f:
        f.write('source configs/smoke.sh\nCOMPARE_SEEDS=(3 4)\nCOMPARE_POOLS=(synthetic cifar10)\n'
                'API_DEFENSES=("topk:k=1")\n')
    proc = _compare_list(tmp_path, "pools", "grid")
    assert proc.returncode == 0, proc.stderr
    runs = sorted((ln.split("--label ")[1].split()[0], ln.split("--pool ")[1].split()[0],
                   int(ln.split("--seed ")[1].split()[0]), "--victim_output label" in ln)
                  for ln in proc.stdout.splitlines() if "DFME/knockoff.py" in ln and "--api_defense topk:k=1" in ln)
    assert runs == sorted([(v, p, s, False) for v in ("teacher", "misleader") for p in ("synthetic", "cifar10")
                           for s in (3, 4)] + [(v, "synthetic", 3, True) for v in ("teacher", "misleader")])


def test_a_defended_victims_search_names_the_aware_settings_still_to_run():
    """With AWARE_SETTINGS, a defended victim whose aware attacker has not run yet is said to be incomplete (its
    data-free number so far is an upper bound on protection), naming the setting; complete once it has run."""
    aware = ["b rounding topk", "c adaptive_misinformation"]
    rows = [_row("teacher", setting="a", val="0.70", clone="0.70"),
            _row("teacher", setting="b", val="0.60", clone="0.65"),
            _row("teacher", setting="a", val="0.30", clone="0.35", api_defense="rounding:decimals=1")]
    e = {x["victim"]: x for x in comparison.headline(rows, aware=aware)}
    assert e["teacher + rounding:decimals=1"]["grid_missing"] == ["b"]
    assert "a, 1,000,000 queries (search incomplete, 1 setting(s) to run: b; best on validation so far)" in \
        "\n".join(comparison.headline_table(rows, aware=aware))
    assert comparison.headline(rows)[1]["grid_missing"] == []  # without the entries: nothing known to be missing
    rows.append(_row("teacher", setting="b", val="0.50", clone="0.45", api_defense="rounding:decimals=1"))
    rows.append(_row("teacher", setting="a", val="0.40", clone="0.40", api_defense="topk:k=1"))  # b to run
    rows.append(_row("teacher", setting="a", val="0.50", clone="0.50", api_defense="reverse_sigmoid:beta=1"))
    e = {x["victim"]: x for x in comparison.headline(rows, aware=aware)}
    assert e["teacher + rounding:decimals=1"]["grid_missing"] == [] and e["teacher + rounding:decimals=1"][
        "dfme_setting"] == "b"
    assert e["teacher + topk:k=1"]["grid_missing"] == ["b"]
    assert e["teacher + reverse_sigmoid:beta=1"]["grid_missing"] == []  # no aware setting names it
    assert "incomplete" not in "\n".join(comparison.headline_table(rows, aware=aware)).split("topk")[0]


def test_a_final_run_with_a_setting_no_longer_the_strongest_is_said():
    """A setting added to a complete grid that beats the one the finals ran with: the headline still shows the
    finals that exist, but says that the grid's strongest has no runs at that budget yet."""
    grid = [_row(v, setting="a", val="0.60", clone="0.60") for v in ("teacher", "misleader")]
    finals = [_row(v, setting="a", budget=2000000, seed=s, clone="0.70") for v in ("teacher", "misleader")
              for s in (0, 1)]
    rows = grid + finals
    assert "now" not in "\n".join(comparison.headline_table(rows, ["a", "b"]))  # b not run: grid incomplete
    rows += [_row("teacher", setting="b", val="0.80", clone="0.80"), _row("misleader", setting="b", val="0.50")]
    t, m = comparison.headline(rows, ["a", "b"])
    assert t["final_pending"] == "b" and m["final_pending"] is None  # a is still MISLEADER's strongest
    assert t["dfme_setting"] == "a" and t["dfme_budget"] == 2000000
    lines = comparison.headline_table(rows, ["a", "b"])
    assert "dfme a, 2,000,000 queries (the grid's strongest is now b: its runs at this budget are still to run)" \
        in lines[2]
    assert "+0.00 ± 0.00 [+0.00, +0.00] (2) (against the teacher's a, not its strongest, b) |" in lines[3]
    rows += [_row("teacher", setting="b", budget=2000000, seed=s, clone="0.75") for s in (0, 1)]
    t, _ = comparison.headline(rows, ["a", "b"])
    assert t["final_pending"] is None and t["dfme_setting"] == "b"


def test_knockoff_budget_curve_pairs_each_budget_with_the_teachers_runs():
    ko = "pool=fashionmnist"
    rows = [_row("teacher", "knockoff", budget=2000, clone="0.80", settings=ko),
            _row("teacher", "knockoff", budget=20000, clone="0.88", settings=ko),
            _row("teacher", "knockoff", budget=20000, seed=1, clone="0.86", settings=ko),
            _row("misleader", "knockoff", budget=2000, clone="0.75", settings=ko),
            _row("misleader", "knockoff", budget=20000, clone="0.85", settings=ko),
            _row("misleader", "knockoff", budget=20000, seed=1, clone="0.82", settings=ko),
            _row("lambda0", "knockoff", budget=20000, clone="0.87", settings=ko),  # one budget: no curve of its own
            _row("teacher", "knockoff", budget=2000, clone="0.10", settings="pool=synthetic"),  # one budget per pool
            _row("teacher", "knockoff", budget=2000, clone="0.70", settings=ko + " victim_output=label")]
    lines = comparison.knockoff_curve_table(rows)
    assert lines[0].startswith("Knockoff fashionmnist: clone test accuracy")
    table = [ln for ln in lines if ln.startswith("| ")]
    assert table[0] == "| queries | teacher clone (%) | misleader clone (%) | misleader protection (pts) |"
    assert table[1] == "| 2,000 | 80.00 (1 seed) | 75.00 (1 seed) | +5.00 (1 seed) |"
    # seeds 0 and 1: differences 3 and 4 points, mean 3.5, std 0.71, t(1) = 12.706: half-width 6.35
    assert table[2] == "| 20,000 | 87.00 ± 1.41 (2) | 83.50 ± 2.12 (2) | +3.50 ± 0.71 [-2.85, +9.85] (2) |"
    assert len(table) == 3  # the synthetic pool and label-only answers have one budget each: no curve
    assert comparison.knockoff_curve_table([r for r in rows if r["query_budget"] != "2000"]) == []  # one budget


def test_runs_with_other_attack_settings_are_not_paired_as_one_attack():
    """Two Knockoff runs that differ in their hyperparameters (or the clone's architecture) are not the same
    attack: pairing them would measure the hyperparameters, not the defense."""
    rows = [_row("teacher", "knockoff", budget=20000, clone="0.88", settings="pool=fashionmnist epochs=30"),
            _row("misleader", "knockoff", budget=20000, clone="0.70", settings="pool=fashionmnist epochs=5")]
    with pytest.raises(comparison.UserError, match="results rows 0 and 1 .*settings"):
        comparison.headline(rows)
    rows[1]["settings"] = rows[0]["settings"]
    rows[1]["student_model"] = "resnet18"
    with pytest.raises(comparison.UserError, match="student_model"):
        comparison.headline(rows)
    rows[1]["student_model"] = ""
    assert comparison.headline(rows)[1]["knockoff"]["Knockoff fashionmnist"]["protection"]["mean"] == \
        pytest.approx(0.18)
    # data-free: one setting name with two sets of flags, on the teacher and the victim
    rows = [_row("teacher", setting="a", val="0.8", settings="ngf=32"), _row("misleader", setting="a", val="0.6",
                                                                               settings="ngf=16")]
    with pytest.raises(comparison.UserError, match="settings"):
        comparison.headline(rows)
    with pytest.raises(comparison.UserError, match="settings"):
        comparison.knockoff_curve_table(
            [_row(v, "knockoff", budget=b, settings=f"pool=p epochs={e}") for v, e in (("teacher", 30), ("m", 5))
             for b in (2000, 20000)])


def test_two_strongest_data_free_settings_are_paired_only_with_one_clone_architecture_and_named():
    """Each victim meets its own strongest data-free setting, so a protection may difference two settings (even two
    attacks): the cell names the teacher's, and clones of two architectures are never paired."""
    rows = [_row("teacher", setting="a", val="0.80", clone="0.80"), _row("teacher", setting="b", val="0.70", clone="0.70"),
            _row("homogeneous", setting="a", val="0.50", clone="0.50"),
            _row("homogeneous", attack="disguide", setting="b", val="0.60", clone="0.55")]
    _, h = comparison.headline(rows)
    assert h["dfme_setting"] == "b" and h["teacher_setting"] == "a"
    assert h["dfme_protection"]["diffs"] == pytest.approx([0.80 - 0.55])
    line = comparison.headline_table(rows)[3]
    assert "| disguide b, 1,000,000 queries | 55.00 (1 seed) | +25.00 (1 seed) (against the teacher's a, its strongest) |" in line
    for r in rows[2:]:
        r["student_model"] = "resnet18"
    with pytest.raises(comparison.UserError, match="paired as two victims' strongest data-free attacks but differ in "
                                                   "student_model"):
        comparison.headline(rows)


def test_a_data_free_clone_with_no_seed_in_common_with_the_teachers_says_so():
    rows = [_row("teacher", setting="a", val="0.80", clone="0.80"), _row("misleader", setting="a", val="0.6"),
            _row("teacher", setting="a", val="0.80", clone="0.80", budget=2000000),
            _row("misleader", setting="a", val="0.60", clone="0.60", budget=2000000, seed=1)]
    line = comparison.headline_table(rows)[3]
    assert "| dfme a, 2,000,000 queries | 60.00 (1 seed) | no seed in common with the teacher's |" in line


def test_a_misleader_variant_meets_the_strongest_of_its_search_on_validation_not_the_most_run():
    """A variant's data-free setting is the one of its search that clones it best on validation, compared on the
    seeds the settings share, not the one with more runs at that budget. (Its search is two of the grid's three
    settings: the grid's strongest is never complete for it.)"""
    grid = {"teacher": ("0.80", "0.70", "0.60"), "misleader": ("0.60", "0.50", "0.40")}  # settings a, b, c
    rows = [*[_row(v, setting=n, val=x) for v, vals in grid.items() for n, x in zip("abc", vals)],
            *[_row("misleader-x", setting="a", seed=s, val="0.40") for s in (0, 1)],
            _row("misleader-x", setting="b", val="0.45", clone="0.42")]
    name, _, idx = comparison.final_dfme(rows, ("misleader-x", "none"), (1000000, 0, ["a", "b", "c"]))
    assert (name, idx) == ("b", [8])


def test_a_data_free_setting_with_another_query_range_is_not_paired_as_one_attack():
    """`--query_range data` is not in the settings column: a teacher run and a victim run of one setting name that
    differ in it are two attacks."""
    rows = [_row("teacher", setting="late", val="0.8", query_range="data"),
            _row("misleader", setting="late", val="0.6", query_range="tanh")]
    with pytest.raises(comparison.UserError, match="differ in query_range"):
        comparison.headline(rows)
    rows[0]["query_range"] = "tanh"
    assert comparison.headline(rows)[1]["dfme_protection"]["mean"] == pytest.approx(0.0)


def test_the_strongest_of_all_never_pairs_clones_of_two_budgets():
    """The victim's strongest attack (data-free at 2M) is paired with the teacher's strongest of the same attacks at
    the same budgets, never with the teacher's 1M clone while its 2M runs are missing; both cells say why."""
    s = "lr_S=0.03"
    rows = [_row("teacher", "disguide", seed=0, setting="pub", settings=s, val="0.86", clone="0.8623"),
            _row("misleader", "disguide", seed=0, setting="pub", settings=s, val="0.76", clone="0.7606"),
            _row("misleader", "disguide", budget=2000000, seed=0, setting="pub", settings=s, val="0.75",
                 clone="0.7512")]
    t, m = comparison.headline(rows)
    assert m["dfme_budget"] == 2000000 and m["dfme_protection"] is None and m["teacher_pending"]
    assert m["overall"]["attack"] == "data-free pub" and m["overall"]["protection"] is None  # was 0.8623 - 0.7512
    line = comparison.headline_table(rows)[3]
    assert "the teacher's 2,000,000-query runs are still to run" in line
    assert line.endswith("| - (the teacher has no run of these attacks at these budgets) |")
    rows.append(_row("teacher", "disguide", budget=2000000, seed=0, setting="pub", settings=s, val="0.85",
                     clone="0.8535"))
    t, m = comparison.headline(rows)
    assert m["dfme_protection"]["diffs"] == pytest.approx([0.8535 - 0.7512])
    assert m["overall"]["protection"]["diffs"] == pytest.approx([0.8535 - 0.7512])
    # the teacher's own strongest of all (Knockoff, better on validation) is not met by this victim: the verdict
    # pairs the attacks both met, and says against which
    rows.append(_row("teacher", "knockoff", budget=20000, seed=0, settings="pool=p", val="0.88", clone="0.8771"))
    t, m = comparison.headline(rows)
    assert t["overall"]["attack"] == "Knockoff p" and m["overall"]["teacher_attack"] == "data-free pub"
    assert m["overall"]["protection"]["diffs"] == pytest.approx([0.8535 - 0.7512])
    assert "(against the teacher's data-free pub, its strongest of the attacks this victim met" in \
        comparison.headline_table(rows)[3]


def test_a_teacher_with_one_knockoff_budget_is_still_checked_against_the_curve_it_is_paired_with():
    """The curve shows victims with two budgets or more, but pairs each with the teacher's runs at that budget even
    when the teacher has only one: those runs must be the same attack too."""
    rows = [_row("teacher", "knockoff", budget=20000, clone="0.88", settings="pool=p epochs=30")] + \
        [_row("misleader", "knockoff", budget=b, clone="0.80", settings="pool=p epochs=5") for b in (2000, 20000)]
    with pytest.raises(comparison.UserError, match="settings"):
        comparison.knockoff_curve_table(rows)
    rows[0]["settings"] = "pool=p epochs=5"
    lines = comparison.knockoff_curve_table(rows)
    assert any(line.startswith("| 20,000 |") and "+8.00 (1 seed)" in line for line in lines)


def test_two_runs_of_one_attack_on_one_seed_are_an_error_not_a_silent_choice():
    """A run repeated on a seed (say, rerun after its checkpoint was removed) must not have one of its rows dropped
    in silence, nor decide the strongest setting by row order."""
    ko = "pool=fashionmnist"
    rows = [_row("teacher", "knockoff", budget=20000, clone="0.88", settings=ko),
            _row("teacher", "knockoff", budget=20000, clone="0.80", settings=ko),
            _row("misleader", "knockoff", budget=20000, clone="0.80", settings=ko)]
    with pytest.raises(comparison.UserError, match="results rows 0 and 1: two runs .* seed 0"):
        comparison.headline(rows)
    grid = [_row("teacher", setting="a", val="0.80"), _row("teacher", setting="a", val="0.70"),
            _row("teacher", setting="b", val="0.75")]
    with pytest.raises(comparison.UserError, match="results rows 0 and 1: two runs .* seed 0"):
        comparison.strongest(grid, "teacher", ["a", "b"], 1000000, 0)


def test_the_budget_with_the_most_seeds_counts_seeds_not_rows():
    ko = "pool=fashionmnist"
    rows = [*[_row("misleader", "knockoff", budget=20000, seed=s, settings=ko) for s in (0, 1)],
            *[_row("misleader", "knockoff", budget=60000, seed=0, settings=ko + f" epochs={e}") for e in (10, 20, 30)]]
    assert comparison.knockoff_runs(rows, ("misleader", "none"), "fashionmnist")[0] == 20000


def test_a_protection_against_an_incomplete_teacher_grid_says_so():
    """While the teacher's grid still has settings to run, a victim's protection is against the teacher's best so
    far, which a missing setting may beat: the victim's cells say so, not only the teacher's row."""
    rows = [_row("teacher", setting="a", val="0.80", clone="0.80"), _row("misleader", setting="a", val="0.60"),
            _row("misleader", setting="b", val="0.70", clone="0.70")]
    line = comparison.headline_table(rows, ["a", "b"])[3]
    assert line.startswith("| misleader |")
    dfme, overall = line.split(" | ")[5], line.split(" | ")[-1]
    assert dfme.startswith("+10.00 (1 seed)") and "teacher's grid incomplete" in dfme
    assert "teacher's grid incomplete" in overall
    rows.append(_row("teacher", setting="b", val="0.75", clone="0.75"))  # complete: no such note
    assert "incomplete" not in comparison.headline_table(rows, ["a", "b"])[3]


def test_strongest_cli_does_not_complete_one_configs_grid_with_anothers_runs(tmp_path, capsys):
    from misleader.results import COLUMNS
    from tests.test_report import _write_csv
    path = _write_csv(tmp_path / "r.csv", [_row("teacher", setting="a", val="0.6"),
                                           _row("teacher", setting="b", val="0.7", config="old")], COLUMNS)
    with pytest.raises(comparison.UserError, match="2 configs \\(c, old\\): give --config"):
        report.main(["--csv", path, "--strongest", "teacher", "--grid", "a", "b"])
    report.main(["--csv", path, "--config", "c", "--strongest", "teacher", "--grid", "a", "b"])
    assert capsys.readouterr().out == ""  # config c alone has no run of b


def test_clones_of_two_checkpoints_of_one_victim_are_never_mixed(tmp_path, capsys):
    """A fresh clone's test.sh replaces the committed seed-0 rows of its config but not the other seeds': those
    attacked another machine's checkpoints (another test accuracy) and must not be averaged or paired with it."""
    from misleader.results import COLUMNS
    from tests.test_report import _write_csv
    ko = "pool=fashionmnist"
    rows = [_row(v, "knockoff", budget=20000, seed=s, clone="0.8", settings=ko, vacc=acc)
            for v, acc in (("teacher", "0.8893"), ("misleader", "0.8780")) for s in (1, 2)]
    rows += [_row("teacher", "knockoff", budget=20000, seed=0, clone="0.8", settings=ko, vacc="0.8879"),
             _row("teacher", setting="a", val="0.6", vacc="0.8879")]
    path = _write_csv(tmp_path / "r.csv", rows, COLUMNS)
    with pytest.raises(comparison.UserError, match="lines 2 and 6 attack victim 'teacher' .*0.8893 and 0.8879"):
        report.write_report(path, str(tmp_path / "out"), config="c")
    with pytest.raises(comparison.UserError, match="lines 2 and 6"):
        report.main(["--csv", path, "--config", "c", "--strongest", "teacher", "--grid", "a"])
    for r in rows:
        r["victim_acc"] = "0.8893" if r["label"] == "teacher" else r["victim_acc"]
    path = _write_csv(tmp_path / "r.csv", rows, COLUMNS)
    report.main(["--csv", path, "--config", "c", "--strongest", "teacher", "--grid", "a"])
    assert capsys.readouterr().out.strip() == "a"
    # one label, one checkpoint: the same test accuracy at another path is another victim too
    rows[0]["victim_path"], rows[1]["victim_path"] = "Defense/cache/teacher/a.pt", "./Defense/cache/teacher/a.pt"
    report.main(["--csv", _write_csv(tmp_path / "r.csv", rows, COLUMNS), "--config", "c", "--strongest", "teacher",
                 "--grid", "a"])  # one path spelled two ways
    rows[1]["victim_path"] = "Defense/cache/teacher/b.pt"
    with pytest.raises(comparison.UserError, match="lines 2 and 3 attack victim 'teacher' .* at two paths"):
        report.write_report(_write_csv(tmp_path / "r.csv", rows, COLUMNS), str(tmp_path / "out"), config="c")


def test_a_listed_line_names_each_flag_once_with_the_value_that_takes_effect(tmp_path):
    """A variant's or a config's flag replaces the default flag on the line instead of following it (argparse takes
    the last, but a reader of `--lambda_ 0.5 ... --lambda_ 1` cannot tell which runs); values of a many-valued flag
    stay together."""
    import shlex
    _copy_compare(tmp_path)
    with open(tmp_path / "configs/dup.sh", "w") as f:
        f.write('source configs/smoke.sh\nCONFIG=c\nMISLEADER_VARIANTS=("lam1 --lambda_ 1")\n')
    proc = _compare_list(tmp_path, "dup", "train")
    assert proc.returncode == 0, proc.stderr
    lines = [shlex.split(ln) for ln in proc.stdout.splitlines() if ln.startswith("python ")]
    variant = [t for t in lines if "v-lam1" in " ".join(t) or any(x.endswith("lam1") for x in t)]
    assert variant, proc.stdout
    for t in lines:
        flags = [x for x in t if x.startswith("--")]
        assert len(flags) == len(set(flags)), " ".join(t)
    for t in variant:
        assert t[t.index("--lambda_") + 1] == "1"
    ens = _compare_list(tmp_path, "dup", "ensembles")
    members = [shlex.split(ln) for ln in ens.stdout.splitlines() if "--members" in ln]
    # the lambda = 0, homogeneous and variant ensembles: smoke's two members, three initialisations, two members
    assert [len(t) - t.index("--members") - 1 for t in members] == [2, 3, 2]


def test_the_report_reads_the_comparisons_own_csv_and_keeps_the_committed_report(tmp_path):
    """compare.sh ends with report.sh on the CSV its runs wrote ($RESULTS), not the committed one; a CSV of one's own
    gets its own report folder. --list (all phases or final) ends with that command as a comment."""
    _copy_compare(tmp_path)
    env = {**os.environ, "CONFIG": "smoke", "PYTHONPATH": REPO, "RESULTS": "results/mine.csv"}
    for phase in ([], ["final"]):
        proc = subprocess.run(["bash", "compare.sh", "--list", *phase], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=120, check=False)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.splitlines()[-1].startswith(
            "# then the report: bash report.sh --csv results/mine.csv --config smoke --out results/mine/smoke")
    for spelling, out in (("mine", "mine-report/smoke"), ("./results/results.csv", None),
                          (str(tmp_path / "results" / "results.csv"), None)):
        proc = subprocess.run(["bash", "compare.sh", "--list", "final"], cwd=tmp_path, env={**env, "RESULTS": spelling},
                              capture_output=True, text=True, timeout=120, check=False)
        last = proc.stdout.splitlines()[-1]
        assert (f"--out {out}" in last) if out else ("--out" not in last), (spelling, last)  # the default, spelt
    own = _compare_list(tmp_path, "smoke", "final").stdout.splitlines()[-1]
    assert own.startswith("# then the report: bash report.sh --csv results/results.csv --config smoke") \
        and "--out" not in own
    assert "report.sh" not in _compare_list(tmp_path, "smoke", "grid").stdout


@pytest.mark.parametrize("config,pools", [("cifar10", {"cifar10", "cifar100", "synthetic"}),
                                          ("cifar100", {"cifar100", "cifar10", "synthetic"}),
                                          ("mnist", {"mnist", "synthetic"})])
def test_reference_configs_attack_with_pools_in_and_out_of_distribution(config, pools):
    """The CIFAR configs ran Knockoff on the victim's own training images only: no out-of-distribution pool."""
    proc = subprocess.run(["bash", "compare.sh", "--list", "grid"], cwd=REPO, env={**os.environ, "CONFIG": config},
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    used = {ln.split("--pool ")[1].split()[0] for ln in proc.stdout.splitlines() if "DFME/knockoff.py" in ln}
    assert used == pools


def test_the_design_config_runs_every_generator_at_the_reference_width():
    """configs/fashionmnist_design.sh says it keeps DFME's 64-wide generator; its DisGUIDE runs inherited
    fashionmnist's --ngf 32."""
    proc = subprocess.run(["bash", "compare.sh", "--list", "grid"], cwd=REPO,
                          env={**os.environ, "CONFIG": "fashionmnist_design"}, capture_output=True, text=True,
                          timeout=60, check=True)
    attacks = [ln for ln in proc.stdout.splitlines() if "DFME/dfme.py" in ln or "DFME/disguide.py" in ln]
    assert any("DFME/disguide.py" in ln for ln in attacks) and not any("--ngf" in ln for ln in attacks)


def test_a_complete_grid_whose_final_budget_runs_are_to_come_says_so(tmp_path):
    """lambda = 0's grid complete at 1M, its 2M runs (compare.sh's phase 3, QUERY_BUDGET) not made yet: the headline
    showed its 1M clone and protection as if final, with no word that the 2M runs were still to come."""
    rows = [_row(v, setting=s, val=val) for v in ("teacher", "lambda0") for s, val in (("a", "0.7"), ("b", "0.6"))]
    rows += [_row("teacher", setting="a", budget=2000000, seed=s, val="0.8", clone="0.8") for s in (0, 1)]
    final = (2000000, {("teacher", "none"), ("lambda0", "none")})
    lines = comparison.headline_table(rows, ["a", "b"], final=final)
    lam = next(ln for ln in lines if ln.startswith("| lambda0 |")).split(" | ")
    assert lam[3] == "dfme a, 1,000,000 queries (its grid's strongest at 2,000,000 queries: still to run)"
    assert lam[-1].endswith("(its data-free runs at 2,000,000 queries still to run: this may still change) |")
    teacher = next(ln for ln in lines if ln.startswith("| teacher |"))
    assert "still to run" not in teacher  # its 2M runs exist
    assert "still to run" not in "\n".join(comparison.headline_table(rows, ["a", "b"]))  # no final list
    assert "still to run" not in "\n".join(comparison.headline_table(rows, ["a", "b"], final=(2000000, {("m", "none")})))
    assert "still to run" not in "\n".join(comparison.headline_table(rows, ["a", "b"], final=(1000000, final[1])))
    # an incomplete grid says that instead; a final run made clears the note
    short = [r for r in rows if not (r["label"] == "lambda0" and r["setting"] == "b")]
    assert "at 2,000,000 queries" not in "\n".join(comparison.headline_table(short, ["a", "b"], final=final))
    done = rows + [_row("lambda0", setting="a", budget=2000000, seed=0, val="0.6", clone="0.6")]
    assert "still to run" not in "\n".join(comparison.headline_table(done, ["a", "b"], final=final))
    # the CLI: names as the report writes them, a defense in any spelling; --final_victims alone ends with exit 2
    from misleader.results import COLUMNS
    from tests.test_report import _write_csv
    rows += [_row("teacher", setting=s, val=v, api_defense="reverse_sigmoid:beta=1,gamma=0.1") for s, v in
             (("a", "0.5"), ("b", "0.4"))]
    from tests.test_report import _row as full_row
    path = _write_csv(tmp_path / "r.csv", [full_row(**r, queries_used=r["query_budget"], clone_best_acc=r["clone_acc"],
                                                    fidelity=r["clone_acc"]) for r in rows], COLUMNS)
    report.main(["--csv", path, "--config", "c", "--out", str(tmp_path / "out"), "--grid", "a", "b", "--final_budget",
                 "2", "--final_victims", "lambda0", "teacher + reverse_sigmoid:beta=1.0,gamma=0.1"])
    md = (tmp_path / "out" / "report.md").read_text()
    assert md.count("(its grid's strongest at 2,000,000 queries: still to run)") == 1
    assert "(its search's strongest at 2,000,000 queries: still to run)" in md
    proc = subprocess.run(["python", "-m", "misleader.report", "--csv", path, "--final_victims", "lambda0"], cwd=REPO,
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1].endswith(
        "--final_victims needs --final_budget (the config's QUERY_BUDGET, millions)")
    for bad, said in ((["--final_budget", "2"], "--final_budget needs --final_victims"),
                      (["--final_budget", "2", "--final_victims", "teacher + nosuch:k=1"], "--final_victims 'teacher + nosuch:k=1': ")):
        proc = subprocess.run(["python", "-m", "misleader.report", "--csv", path, *bad], cwd=REPO, capture_output=True,
                              text=True, timeout=60, check=False)
        assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1 and said in proc.stderr, proc.stderr
