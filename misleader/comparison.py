"""The comparison's statistics (compare.sh, report.md): each victim's strongest attack setting, chosen on the
validation split; paired protection over seeds with a Student-t interval; the headline table.

Protection of a victim against an attack = clone accuracy against the teacher minus clone accuracy against the
victim, per seed (the same seed gives the same attacker start against every victim), then averaged: mean,
sample std and a 95 % confidence interval (Student t, n - 1 degrees of freedom). Utility cost = the teacher's
test accuracy minus the test accuracy of the victim's served answers. A victim is a label with the API
defense its answers pass through; rows with --probs_as_logits take no part (the full table of report.md
lists every row).
"""

import math

from misleader.errors import UserError
from misleader.results import Row, earlier_value, row_name

GENERATOR_ATTACKS = ("dfme", "maze", "disguide")  # the data-free attacks of the DFME grid
TEACHER = "teacher"
MISLEADER = "misleader"
VARIANT_PREFIX = "misleader-"  # compare.sh's label of a MISLEADER_VARIANTS ensemble: misleader-NAME
# two-sided 95 % quantiles of Student's t for 1..30 degrees of freedom, to 6 decimals (3 decimals moved a bound
# that sits near a half-hundredth of a point by 0.01 in the report's 2-decimal tables)
_T975 = [12.706205, 4.302653, 3.182446, 2.776445, 2.570582, 2.446912, 2.364624, 2.306004, 2.262157, 2.228139,
         2.200985, 2.178813, 2.160369, 2.144787, 2.131450, 2.119905, 2.109816, 2.100922, 2.093024, 2.085963,
         2.079614, 2.073873, 2.068658, 2.063899, 2.059539, 2.055529, 2.051831, 2.048407, 2.045230, 2.042272]


def t975(df):
    """The 0.975 quantile of Student's t with ``df`` degrees of freedom (beyond 30: the first two terms of its
    expansion in 1/df around the normal quantile z, within 0.0002 of the exact value)."""
    if df < 1:
        raise ValueError("a t interval needs at least 2 values")
    if df <= 30:
        return _T975[df - 1]
    z = 1.959964
    return z + (z ** 3 + z) / (4 * df) + (5 * z ** 5 + 16 * z ** 3 + 3 * z) / (96 * df ** 2)


def mean(xs):
    return sum(xs) / len(xs)


def std(xs):
    """Sample standard deviation (ddof=1); 0.0 for a single value."""
    if len(xs) < 2:
        return 0.0
    m = mean(xs)
    return math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))


def num(row, col, i, kind=float):
    value = row.get(col)
    try:
        return kind(float(value)) if kind is int else kind(value)
    except (TypeError, ValueError):
        raise UserError(f"{row_name({i: row}, i)}: column {col} is not a number ({value!r})") from None


def num_field(row, col, i):
    """num of field(row, col): a column's number, or what the column meant before it existed."""
    value = Row({col: field(row, col)})
    value.line = getattr(row, "line", None)
    return num(value, col, i)


def flag(row, col):
    try:
        return int(float(row.get(col) or 0)) != 0
    except ValueError:
        return False


def field(row, col):
    """A column's value; for a row written before the column existed, what it meant then (results.EARLIER_VALUES)."""
    return row.get(col) or earlier_value(col, row)


def label(row):
    return row.get("label") or row.get("victim") or "?"


def settings_items(row):
    """The row's settings column as {key: value}."""
    return dict(item.split("=", 1) for item in field(row, "settings").split() if "=" in item)


def paired(by_seed_a, by_seed_b):
    """Per-seed differences a - b over the seeds both have: {n, seeds, mean, std, lo, hi} (std and the interval
    are None below two seeds; ``unpaired``: the seeds only one side has, left out), or None without a common
    seed."""
    seeds = sorted(set(by_seed_a) & set(by_seed_b))
    if not seeds:
        return None
    d = [by_seed_a[s] - by_seed_b[s] for s in seeds]
    n, m = len(d), mean(d)
    out = {"n": n, "seeds": seeds, "mean": m, "std": None, "lo": None, "hi": None, "diffs": d,
           "unpaired": sorted(set(by_seed_a) ^ set(by_seed_b))}
    if n >= 2:
        sd = std(d)
        half = t975(n - 1) * sd / math.sqrt(n)
        out.update(std=sd, lo=m - half, hi=m + half)
    return out


def _plain(row):
    """A row of the comparison proper: no API defense, real probabilities as the student's targets."""
    return field(row, "api_defense") == "none" and not flag(row, "probs_as_logits")


def _output(row):
    return settings_items(row).get("victim_output", "probs")


def victim_key(row):
    """A victim of the comparison: its label and the output defense its API serves ("none": the raw model)."""
    return label(row), field(row, "api_defense")


def victim_name(key):
    return key[0] if key[1] == "none" else f"{key[0]} + {key[1]}"


def grid_runs(rows, names=None):
    """The DFME grid: {label: {setting: row index}} of the generator-attack rows with a setting name at the grid
    budget and seed (the budget and seed with the most distinct setting names), plus (budget, seed, names).
    ``names``: the grid's full list of settings (compare.sh's DFME_GRID), so that settings not run yet count as
    missing; by default the names the rows hold."""
    count = {}
    for i, r in enumerate(rows):
        if r.get("attack") in GENERATOR_ATTACKS and field(r, "setting") and _plain(r) and _output(r) == "probs":
            key = (num(r, "query_budget", i, int), num(r, "seed", i, int))
            count.setdefault(key, []).append(i)
    if not count:
        return {}, None
    key = max(count, key=lambda k: (len({field(rows[i], "setting") for i in count[k]}), -k[0]))
    names, grid = list(names or []), {}
    for i in count[key]:
        name = field(rows[i], "setting")
        names += [name] if name not in names else []
        grid.setdefault(label(rows[i]), {})[name] = i
    return grid, (key[0], key[1], names)


def strongest(rows, victim, names, budget, seed, api_defense="none"):
    """(the name in ``names`` whose grid run against ``victim`` (budget queries, seed, served with
    ``api_defense``) has the highest clone accuracy on the validation split, the names without such a run yet);
    the name is None until every name has its run. Ties go to the earlier name. The test set plays no part."""
    val, at = {}, {}
    for i, r in enumerate(rows):
        name = field(r, "setting")
        if (label(r) != victim or r.get("attack") not in GENERATOR_ATTACKS or name not in names
                or field(r, "api_defense") != api_defense or flag(r, "probs_as_logits") or _output(r) != "probs"
                or num(r, "query_budget", i, int) != budget or num(r, "seed", i, int) != seed):
            continue
        if name in at:  # a setting run twice: an error, not a choice by row order
            seed_rows(rows, [at[name], i])
        at[name] = i
        if r.get("clone_val_acc"):
            val[name] = num(r, "clone_val_acc", i)
            if math.isnan(val[name]):
                raise UserError(f"{row_name(rows, i)}: clone_val_acc is nan (a run without a validation split, "
                                "--val_size 0): the strongest setting is chosen on validation accuracy")
    missing = [n for n in names if n not in val]
    if missing:
        return None, missing
    return max(names, key=lambda n: (val[n], -names.index(n))), []


def seed_rows(rows, idx):
    """{seed: row index} of rows ``idx``, one attack's runs; two rows on one seed are an error (a run made twice:
    keeping either would be a silent choice)."""
    out = {}
    for i in idx:
        s = num(rows[i], "seed", i, int)
        if s in out:
            j = out[s]
            raise UserError(f"{row_name(rows, j, i)}: two runs of one attack ({label(rows[i])}, "
                            f"{rows[i].get('attack')} {field(rows[i], 'setting')}".rstrip() +
                            f", {rows[i].get('query_budget')} queries) on seed {s}; remove the one that should not "
                            "count from the results CSV")
        out[s] = i
    return out


def _one_attack(rows, *groups, cols=("attack", "settings", "query_range", "student_model"),
                what="compared as one attack"):
    """Raise UserError unless the rows of ``groups`` (row index lists averaged or paired as one attack) ran with
    the same attack, hyperparameters (the settings column), query range and clone architecture: otherwise a
    protection would measure the difference in hyperparameters, not the defense. Two victims' strongest data-free
    settings, which may differ in all but the clone, are checked with ``cols=("student_model",)``."""
    idx = [i for g in groups for i in g]
    for i in idx[1:]:
        j, k = sorted((idx[0], i))
        for col in cols:
            a, b = field(rows[j], col), field(rows[k], col)
            if a != b:
                raise UserError(f"{row_name(rows, j, k)} are {what} but differ in {col} "
                                f"('{a}' against '{b}'): give one of them another setting name, or rerun it")


def _by_seed(rows, idx):
    return {s: num(rows[i], "clone_acc", i) for s, i in seed_rows(rows, idx).items()}


def _generator_rows(rows, key):
    return [i for i, r in enumerate(rows) if victim_key(r) == key and r.get("attack") in GENERATOR_ATTACKS
            and not flag(r, "probs_as_logits") and _output(r) == "probs"]


def _choose_setting(rows, idx, preferred):
    """The rows of ``idx`` with setting ``preferred`` if any, else those of the setting with the most seeds and,
    among those, the best mean validation accuracy of the clone."""
    by_setting = {}
    for i in idx:
        by_setting.setdefault(field(rows[i], "setting"), []).append(i)

    def val(name):
        xs = list(_val_by_seed(rows, by_setting[name]).values())
        return mean(xs) if xs else -1.0
    name = preferred if preferred in by_setting else max(by_setting, key=lambda s: (len(by_setting[s]), val(s)))
    return name, by_setting[name]


def best_on_validation(val, rank):
    """The key of ``val`` ({name: {seed: clone validation accuracy}}, each non-empty) that beats the most others,
    two compared on their mean validation accuracy over the seeds they share (over each one's own seeds when
    they share none), so that no seed's luck decides and a third candidate's seeds do not change how two compare;
    ties go to the highest ``rank(name)``. With seeds all candidates share this is the best mean over them."""
    def beats(a, b):
        shared = set(val[a]) & set(val[b])
        return mean([val[a][s] for s in (shared or val[a])]) > mean([val[b][s] for s in (shared or val[b])])
    wins = {a: sum(beats(a, b) for b in val if b != a) for a in val}
    return max(val, key=lambda n: (wins[n], rank(n)))


def final_dfme(rows, key, grid_info, budget=None):
    """(setting name, budget, [row indices]) of a victim's headline data-free runs: at ``budget`` (default: the
    largest of its generator-attack rows), with the strongest grid setting of its model (the label) when that
    grid is complete, else the setting with the most seeds at that budget. A victim with an API defense is
    attacked with its bare model's strongest setting and, where more settings were tried on it (attackers aware
    of the defense), the strongest on validation (``best_on_validation``: compared two by two on the seeds they
    share); a MISLEADER variant likewise, among the settings of its search (MISLEADER's strongest grid setting and
    VARIANT_GRID's). (None, None, []) without such rows."""
    cand = _generator_rows(rows, key)
    if budget is None and cand:
        budget = max(num(rows[i], "query_budget", i, int) for i in cand)
    at = [i for i in cand if num(rows[i], "query_budget", i, int) == budget]
    if not at:
        return None, None, []
    best = None
    variant = key[0].startswith(VARIANT_PREFIX)
    if grid_info is not None:  # a variant has no grid of its own: its search starts from MISLEADER's strongest
        best, _ = strongest(rows, MISLEADER if variant else key[0], grid_info[2], grid_info[0], grid_info[1])
    if key[1] != "none" or variant:  # attackers aware of a defense, or a variant's search: the strongest tried
        by_setting = {}
        for i in at:
            by_setting.setdefault(field(rows[i], "setting"), []).append(i)
        val = {n: v for n, v in ((n, _val_by_seed(rows, idx)) for n, idx in by_setting.items()) if v}
        bare = best
        best = best_on_validation(val, lambda n: n == bare) if val else best
    name, idx = _choose_setting(rows, at, best)
    return name, budget, idx


def _is_knockoff(row, pool, output):
    """A Knockoff run on ``pool`` with ``output`` answers (rows with --probs_as_logits take no part)."""
    return (row.get("attack") == "knockoff" and not flag(row, "probs_as_logits") and _output(row) == output
            and settings_items(row).get("pool") == pool)


def knockoff_runs(rows, key, pool, output="probs", budget=None):
    """(budget, [row indices]) of the victim's Knockoff runs on ``pool`` with ``output`` answers at ``budget``
    (default: the budget with the most seeds; ties: the larger); (None, []) without any."""
    by_budget = {}
    for i, r in enumerate(rows):
        if victim_key(r) == key and _is_knockoff(r, pool, output):
            by_budget.setdefault(num(r, "query_budget", i, int), []).append(i)
    if budget is None and by_budget:
        budget = max(by_budget, key=lambda b: (len({num(rows[i], "seed", i, int) for i in by_budget[b]}), b))
    return (budget, by_budget[budget]) if budget in by_budget else (None, [])


def _attack_columns(rows):
    """The Knockoff columns of the headline: (title, pool, output) for each pool with probability answers (the
    victim's own data first), then label-only answers on each pool that has them."""
    datasets = {r["dataset"] for r in rows}
    cols = []
    for output in ("probs", "label"):
        pools = list(dict.fromkeys(settings_items(r).get("pool") for r in rows if r.get("attack") == "knockoff"
                                   and settings_items(r).get("pool") and _output(r) == output))
        pools.sort(key=lambda p: p not in datasets)
        cols += [(f"Knockoff {p}" + (" label-only" if output == "label" else ""), p, output) for p in pools]
    return cols


def _val_by_seed(rows, idx):
    """{seed: clone validation accuracy} of rows ``idx`` that have one (rows written before the column existed
    have none). A nan (a run without a validation split, --val_size 0) is an error, as in ``strongest``: dropped,
    it would keep that attack from ever being a victim's strongest, however well it clones."""
    out = {}
    for s, i in seed_rows(rows, idx).items():
        if rows[i].get("clone_val_acc"):
            v = num(rows[i], "clone_val_acc", i)
            if math.isnan(v):
                raise UserError(f"{row_name(rows, i)}: clone_val_acc is nan (a run without a validation split, "
                                "--val_size 0): the strongest attack is chosen on validation accuracy")
            out[s] = v
    return out


def strongest_overall(rows, entry):
    """(title, [row indices]) of the attack, among the entry's data-free final and its Knockoff columns, whose
    clones are the strongest on the validation split (``best_on_validation``: two columns compared on the seeds
    they share, so that a column run on one seed does not win on that seed's luck); the test set chooses
    nothing; a tie goes to the earlier column. (None, []) when no column has a validation accuracy."""
    cands = []
    if entry["dfme_rows"]:
        cands.append((f"data-free {entry['dfme_setting'] or entry['dfme_attack']}", entry["dfme_rows"]))
    cands += [(title, k["rows"]) for title, k in entry["knockoff"].items() if k["rows"]]
    vals = {n: v for n, (_, idx) in enumerate(cands) if (v := _val_by_seed(rows, idx))}
    if not vals:
        return None, []
    n = best_on_validation(vals, lambda n: -n)
    return cands[n]


def search_missing(rows, key, grid_info, bare, aware=()):
    """The settings of a defended victim's data-free search (``bare``, its bare model's strongest grid setting,
    then the ``aware`` settings that apply to its defense) without a run yet at the grid's budget and seed.
    ``aware``: compare.sh's AWARE_SETTINGS entries, "setting [defense name ...]" (no name: every defense, and
    a victim without one: a MISLEADER variant's VARIANT_GRID)."""
    expected = [bare]
    for entry in aware:
        setting, *defenses = entry.split()
        if (not defenses or key[1].split(":")[0] in defenses) and setting not in expected:
            expected.append(setting)
    return strongest(rows, key[0], expected, grid_info[0], grid_info[1], key[1])[1]


def variant_missing(rows, key, grid_info, variant_grid=()):
    """The settings of a MISLEADER variant's data-free search (MISLEADER's strongest grid setting, then those of
    ``variant_grid``, compare.sh's VARIANT_GRID) without a run yet at the grid's budget and seed; MISLEADER's own
    missing grid settings while its grid is incomplete (the variants wait for it)."""
    bare, missing = strongest(rows, MISLEADER, grid_info[2], grid_info[0], grid_info[1])
    return missing if bare is None else search_missing(rows, key, grid_info, bare, variant_grid)


def headline(rows, grid_names=None, aware=(), variant_grid=(), final=None):
    """The answer, one dict per victim (the bare teacher first; a victim is a label with the API defense it
    serves): utility cost, the final data-free attack and each Knockoff column with clone accuracies and
    paired protection against the bare teacher under the same attack, budget and seeds. [] without teacher rows.
    ``aware``: the AWARE_SETTINGS entries, so that a defended victim's search lists the settings still to run;
    ``variant_grid``: VARIANT_GRID, likewise for a MISLEADER variant's search. ``final``: (budget in queries,
    victim keys) of the runs compare.sh's phase 3 makes at QUERY_BUDGET once a victim's grid or search is
    complete; a victim among them whose data-free runs are all of a smaller budget has them marked as still to
    run (``final_todo``), not shown as its last word."""
    teacher = (TEACHER, "none")
    keys = list(dict.fromkeys(victim_key(r) for r in rows if not flag(r, "probs_as_logits")))
    if teacher not in keys:
        return []
    keys.remove(teacher)
    keys.insert(0, teacher)
    _, grid_info = grid_runs(rows, grid_names)
    acc = {}
    for i, r in enumerate(rows):
        acc.setdefault(victim_key(r), (num(r, "victim_acc", i), num_field(r, "served_acc", i),
                                       float(field(r, "served_l1") or 0)))
    columns = _attack_columns(rows)
    # MISLEADER's strongest grid setting: where its variants' searches start (None: its grid is incomplete)
    misleader_best = strongest(rows, MISLEADER, grid_info[2], grid_info[0], grid_info[1])[0] if grid_info else None
    out = []
    for key in keys:
        name, budget, idx = final_dfme(rows, key, grid_info)
        _one_attack(rows, idx)
        d = _by_seed(rows, idx)
        protection, t_idx, t_name, t_pending = None, [], None, False
        if key != teacher and budget is not None:
            t_name, t_budget, t_idx = final_dfme(rows, teacher, grid_info, budget)
            # another setting: each its own strongest, but the same clone architecture (else the difference
            # would measure the architectures, not the defense)
            if t_name == name:
                _one_attack(rows, t_idx, idx)
            else:
                _one_attack(rows, t_idx, idx, cols=("student_model",),
                            what="paired as two victims' strongest data-free attacks")
            t_pending = t_budget != budget  # the teacher has no data-free run at this budget yet
            protection = None if t_pending else paired(_by_seed(rows, t_idx), d)
        # the bare model's grid: its missing settings, else (defended) the search's; a complete grid whose
        # strongest setting has no runs at the headline's budget yet is said, not hidden
        bare, missing = strongest(rows, key[0], grid_info[2], grid_info[0], grid_info[1]) if grid_info else (None, [])
        search = key[1] != "none" or key[0].startswith(VARIANT_PREFIX)  # searched, not a grid of its own
        ran = [n for n in grid_info[2] if n not in missing] if grid_info else []
        best = bare if bare is not None or not ran else strongest(rows, key[0], ran, grid_info[0], grid_info[1])[0]
        waits = None  # a search waits for the grid of the model it starts from (its missing settings are that grid's)
        if bare is not None and key[1] != "none":
            missing = search_missing(rows, key, grid_info, bare, aware)
        elif grid_info and key[0].startswith(VARIANT_PREFIX):
            missing = variant_missing(rows, key, grid_info, variant_grid)
            waits = MISLEADER if misleader_best is None else None
        elif key[1] != "none" and missing:
            waits = key[0]
        final_todo = final[0] if final and key in final[1] and grid_info and not missing and budget is not None \
            and budget < final[0] else None
        entry = {"victim": victim_name(key), "key": key, "grid_missing": missing, "search": search, "waits": waits,
                 "final_todo": final_todo,
                 "victim_acc": acc[key][0],
                 "served_acc": acc[key][1],
                 # the grid's strongest (so far, while incomplete) when the headline's runs are another setting's
                 "final_pending": best if not search and best not in (None, name) else None,
                 "final_pending_seeds": len([i for i in _generator_rows(rows, key) if field(rows[i], "setting") == best
                                             and num(rows[i], "query_budget", i, int) == budget]),
                 "served_l1": acc[key][2], "utility_cost": acc[teacher][1] - acc[key][1], "dfme_setting": name,
                 "dfme_budget": budget, "dfme_attack": rows[idx[0]]["attack"] if idx else None, "dfme": d,
                 "dfme_rows": idx, "teacher_rows": t_idx, "teacher_setting": t_name, "dfme_protection": protection,
                 "teacher_pending": t_pending,
                 "knockoff": {}}
        for title, pool, output in columns:
            kb, kidx = knockoff_runs(rows, key, pool, output)
            k = _by_seed(rows, kidx)
            tb, tidx = knockoff_runs(rows, teacher, pool, output, kb) if kb is not None else (None, [])
            _one_attack(rows, kidx, tidx)
            entry["knockoff"][title] = {"budget": kb, "clone": k, "rows": kidx, "t_rows": tidx, "protection": None
                                        if key == teacher or tb is None else paired(_by_seed(rows, tidx), k)}
        # the verdict: this victim's strongest attack of all against the bare teacher's strongest of the same
        # attacks at the same budgets (the teacher's runs paired with each column above), never a clone of
        # another budget (say, the teacher's 1M data-free clone against the victim's 2M one)
        title, idx = strongest_overall(rows, entry)
        o = {"attack": title, "clone": _by_seed(rows, idx), "protection": None, "unpaired": False,
             "teacher_attack": None}
        if out and idx:
            t_entry = {"dfme_rows": [] if t_pending else t_idx, "dfme_setting": t_name,
                       "dfme_attack": rows[t_idx[0]]["attack"] if t_idx else None,
                       "knockoff": {c: {"rows": k["t_rows"]} for c, k in entry["knockoff"].items()}}
            o["teacher_attack"], t_best = strongest_overall(rows, t_entry)
            if t_best:
                o["protection"] = paired(_by_seed(rows, t_best), o["clone"])
                o["unpaired"] = o["protection"] is None  # no seed in common with the teacher's strongest
        entry["overall"] = o
        out.append(entry)
    return out


def grid_table(rows, grid_names=None):
    """Markdown lines of the grid (validation / test clone accuracy per victim and setting; the strongest in
    bold), or [] without a grid."""
    grid, info = grid_runs(rows, grid_names)
    if not grid:
        return []
    budget, seed, names = info
    variants = [v for v in grid if v.startswith(VARIANT_PREFIX)]
    lines = [f"DFME grid: {budget:,} queries, seed {seed}; each cell is the clone's validation / test accuracy (%). "
             "A victim's strongest setting (bold) is its highest validation accuracy; the test set chooses nothing." +
             (" MISLEADER's variants (misleader-NAME) meet a search of a few of these settings, not the grid: the "
              "headline names each one's strongest, the table of every run holds their runs." if variants else ""),
             "", "| victim | " + " | ".join(names) + " | strongest |", "|---|" + "---:|" * len(names) + "---|"]
    for v, runs in grid.items():
        if v in variants:
            continue
        best, missing = strongest(rows, v, names, budget, seed)
        cells = []
        for n in names:
            if n not in runs:
                cells.append("-")
                continue
            r = rows[runs[n]]
            val = f"{100 * float(r['clone_val_acc']):.2f}" if r.get("clone_val_acc") else "?"
            cell = f"{val} / {100 * float(r['clone_acc']):.2f}"
            cells.append(f"**{cell}**" if n == best else cell)
        lines.append(f"| {v} | " + " | ".join(cells) + f" | {best or 'grid incomplete: ' + ', '.join(missing)} |")
    return lines


def knockoff_curve_table(rows):
    """Markdown lines of the Knockoff budget curves: for each pool and answer type (``_attack_columns``) on which a
    victim has Knockoff runs at two budgets or more, the clone's test accuracy per budget and victim (mean over
    seeds) and each victim's protection, paired by seed with the bare teacher's runs at the same budget; victims
    with one budget there are left out. [] without a curve."""
    teacher, lines = (TEACHER, "none"), []
    for title, pool, output in _attack_columns(rows):
        runs = {}  # victim key -> {budget: [row indices]}
        for i, r in enumerate(rows):
            if _is_knockoff(r, pool, output):
                runs.setdefault(victim_key(r), {}).setdefault(num(r, "query_budget", i, int), []).append(i)
        keys = sorted((k for k in runs if len(runs[k]) >= 2), key=lambda k: k != teacher)
        if not keys:
            continue
        others = [k for k in keys if k != teacher] if teacher in runs else []
        head = ["queries"] + [f"{victim_name(k)} clone (%)" for k in keys] + \
            [f"{victim_name(k)} protection (pts)" for k in others]
        lines += [(f"{title}: clone test accuracy by query budget; protection paired by seed with the bare "
                   "teacher's runs at the same budget."), "", "| " + " | ".join(head) + " |", "|" + "---:|" * len(head)]
        for b in sorted({b for k in keys for b in runs[k]}):
            t_rows = runs.get(teacher, {}).get(b, [])  # paired with even when the teacher has one budget only
            _one_attack(rows, t_rows, *(runs[k].get(b, []) for k in keys))
            t = _by_seed(rows, t_rows)
            clone = {k: _by_seed(rows, runs[k].get(b, [])) for k in keys}
            cells = [f"{b:,}"] + [_clone_text(clone[k]) for k in keys] + \
                [protection_text(paired(t, clone[k]) if t else None) for k in others]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return lines[:-1]


def _clone_text(by_seed):
    if not by_seed:
        return "-"
    xs = list(by_seed.values())
    if len(xs) == 1:
        return f"{100 * xs[0]:.2f} (1 seed)"
    return f"{100 * mean(xs):.2f} ± {100 * std(xs):.2f} ({len(xs)})"


def protection_text(p):
    """A protection as 'mean ± std [95 % interval] (seeds)'; seeds that only one side has are named."""
    if p is None:
        return "-"
    left = p.get("unpaired") or []
    left = f"; seed{'s' if len(left) > 1 else ''} {', '.join(map(str, left))} unpaired" if left else ""
    if p["std"] is None:
        return f"{100 * p['mean']:+.2f} (1 seed{left})"
    return (f"{100 * p['mean']:+.2f} ± {100 * p['std']:.2f} [{100 * p['lo']:+.2f}, {100 * p['hi']:+.2f}] "
            f"({p['n']}{left})")


def headline_table(rows, grid_names=None, aware=(), variant_grid=(), final=None):
    """Markdown lines of the headline table, or [] without teacher rows."""
    entries = headline(rows, grid_names, aware, variant_grid, final)
    if not entries:
        return []
    columns = list(entries[0]["knockoff"])
    # the teacher's strongest setting (so far, while its grid is incomplete): a protection measured against
    # another setting's teacher runs says so
    t_best, t_open = entries[0]["final_pending"] or entries[0]["dfme_setting"], bool(entries[0]["grid_missing"])
    served = any(e["key"][1] != "none" for e in entries)
    head = ["victim", "served test acc (%)", "utility cost (pts)"] + (["served L1"] if served else []) + \
        ["data-free attack (strongest setting)", "clone (%)", "protection (pts)"]
    for c in columns:
        head += [f"{c} clone (%)", f"{c} protection (pts)"]
    head += ["strongest of all (on validation)", "clone (%)", "protection (pts)"]
    text = {"victim", "data-free attack (strongest setting)", "strongest of all (on validation)"}
    lines = ["| " + " | ".join(head) + " |", "|" + "".join("---|" if h in text else "---:|" for h in head)]
    for e in entries:
        name = e["dfme_setting"] or "config default"
        kind = "search" if e["search"] else "grid"
        not_started = e["dfme_budget"] is None and bool(e["grid_missing"])  # no data-free run yet: it may clone better
        todo = f"{len(e['grid_missing'])} setting(s) to run: {' '.join(e['grid_missing'])}"
        if not_started:
            attack = f"- (waits for {e['waits']}'s grid: {todo})" if e["waits"] else f"- ({kind} not started: {todo})"
        elif e["dfme_budget"] is None:
            attack = "-"
        else:
            attack = (name if name == e["dfme_attack"] else f"{e['dfme_attack']} {name}") + \
                f", {e['dfme_budget']:,} queries" + \
                (f" ({kind} incomplete, {todo}" + ("" if e["final_pending"] else "; best on validation so far") + ")"
                 if e["grid_missing"] else "") + \
                (f" (the grid's strongest{' so far' if e['grid_missing'] else ''} is now {e['final_pending']}: " +
                 (f"{e['final_pending_seeds']} seed{'s' if e['final_pending_seeds'] > 1 else ''} of it at this budget "
                  f"so far, against {name}'s {len(e['dfme_rows'])})" if e["final_pending_seeds"] else
                  "its runs at this budget are still to run)") if e["final_pending"] else "") + \
                (f" (its {kind}'s strongest at {e['final_todo']:,} queries: still to run)" if e["final_todo"] else "")
        cells = [e["victim"], f"{100 * e['served_acc']:.2f}", f"{100 * e['utility_cost']:.2f}"] + \
            ([f"{e['served_l1']:.4f}"] if served else []) + \
            [attack, _clone_text(e["dfme"]),
             f"- (the teacher's {e['dfme_budget']:,}-query runs are still to run)" if e["teacher_pending"] else
             "no seed in common with the teacher's" if e["dfme"] and e["teacher_rows"] and not e["dfme_protection"]
             else protection_text(e["dfme_protection"]) +
             (f" (against the teacher's {e['teacher_setting']}, not its strongest{' so far' if t_open else ''}, "
              f"{t_best})" if e["dfme_protection"] and e["teacher_setting"] != t_best else
              f" (against the teacher's best so far, {t_best}: the teacher's grid incomplete)"
              if e["dfme_protection"] and t_open else
              f" (against the teacher's {e['teacher_setting']}, its strongest)"
              if e["dfme_protection"] and e["teacher_setting"] != e["dfme_setting"] else "")]
        for c in columns:
            k = e["knockoff"][c]
            cells += [_clone_text(k["clone"]) + (f", {k['budget']:,} q" if k["budget"] else ""),
                      protection_text(k["protection"])]
        o, t_all = e["overall"], entries[0]["overall"]["attack"]
        cells += [o["attack"] or "-", _clone_text(o["clone"]),
                  "no seed in common with the teacher's" if o["unpaired"] else
                  "- (the teacher has no run of these attacks at these budgets)"
                  if e is not entries[0] and o["attack"] and not o["teacher_attack"] else
                  protection_text(o["protection"]) +
                  (f" (against the teacher's {o['teacher_attack']}" +
                   (", its strongest of the attacks this victim met at the same budgets" if o["teacher_attack"] != t_all
                    else "") + ")"
                   if o["protection"] and (o["teacher_attack"] != o["attack"] or o["teacher_attack"] != t_all) else "") +
                  (" (the teacher's grid incomplete: its strongest of all may still rise)"
                   if o["protection"] and t_open else "") +
                  (f" (its data-free {kind} {'not started' if not_started else 'incomplete'}: this may still fall)"
                   if o["protection"] and e["grid_missing"] and e is not entries[0] else "") +
                  (f" (its data-free runs at {e['final_todo']:,} queries still to run: this may still change)"
                   if o["protection"] and e["final_todo"] else "")]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Clone accuracy: mean ± sample std (seeds). Protection: the bare teacher's clone minus this victim's "
                  "clone at the same budget and seed, under the same Knockoff attack, and in the data-free column "
                  "each victim's own strongest setting (the cell names the teacher's where the two differ); "
                  "mean ± std [95 % Student-t interval] (paired seeds). "
                  "Positive = harder to clone than the bare teacher. Utility cost: the teacher's test accuracy minus "
                  "that of the answers this victim's API serves. A victim with an API defense (\"+ name\") is "
                  "attacked with its bare model's strongest data-free setting and any attacker aware of the defense, "
                  "whichever is stronger on validation; a MISLEADER variant (misleader-NAME: its members retrained "
                  "with another knob) with MISLEADER's strongest setting and those of VARIANT_GRID, likewise. "
                  "Strongest of all: of the victim's attacks above, the one whose clones score highest on the "
                  "validation split, against the bare teacher's strongest (on validation) of the same attacks at the "
                  "same budgets, differenced seed by seed; its protection is the one the target of 20 points at 2 "
                  "points of utility cost is about. Where the two strongest are different attacks (the cell names "
                  "the teacher's), a seed pairs two independent runs: the interval is still valid (the differences "
                  "are independent across seeds) but shares no randomness between the two, so it is no narrower "
                  "than an unpaired one would be."]
    return lines
