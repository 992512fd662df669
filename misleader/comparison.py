"""The comparison's statistics (compare.sh, report.md): each victim's strongest attack setting, chosen on the
validation split; paired protection over seeds with a Student-t interval; the headline table.

Protection of a victim against an attack = clone accuracy against the teacher minus clone accuracy against the
victim, per seed (the same seed gives the same attacker start against every victim), then averaged: mean,
sample std and a 95 % confidence interval (Student t, n - 1 degrees of freedom). Utility cost = the teacher's
test accuracy minus the test accuracy of the victim's served answers. Only rows without an API defense and
without --probs_as_logits take part; the full table of report.md lists every row.
"""

import math

from misleader.errors import UserError
from misleader.results import earlier_value

GENERATOR_ATTACKS = ("dfme", "maze", "disguide")  # the data-free attacks of the DFME grid
TEACHER = "teacher"
# two-sided 95 % quantiles of Student's t for 1..30 degrees of freedom
_T975 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
         2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042]


def t975(df):
    """The 0.975 quantile of Student's t with ``df`` degrees of freedom (beyond 30: a Cornish-Fisher term,
    within 0.003 of the exact value)."""
    if df < 1:
        raise ValueError("a t interval needs at least 2 values")
    return _T975[df - 1] if df <= 30 else 1.95996 + 2.37 / df


def num(row, col, i, kind=float):
    value = row.get(col)
    try:
        return kind(float(value)) if kind is int else kind(value)
    except (TypeError, ValueError):
        raise UserError(f"results row {i}: column {col} is not a number ({value!r})") from None


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
    are None below two seeds), or None without a common seed."""
    seeds = sorted(set(by_seed_a) & set(by_seed_b))
    if not seeds:
        return None
    d = [by_seed_a[s] - by_seed_b[s] for s in seeds]
    n, mean = len(d), sum(d) / len(d)
    out = {"n": n, "seeds": seeds, "mean": mean, "std": None, "lo": None, "hi": None, "diffs": d}
    if n >= 2:
        std = math.sqrt(sum((x - mean) ** 2 for x in d) / (n - 1))
        half = t975(n - 1) * std / math.sqrt(n)
        out.update(std=std, lo=mean - half, hi=mean + half)
    return out


def _plain(row):
    """A row of the comparison proper: no API defense, real probabilities as the student's targets."""
    return field(row, "api_defense") == "none" and not flag(row, "probs_as_logits")


def _output(row):
    return settings_items(row).get("victim_output", "probs")


def grid_runs(rows):
    """The DFME grid: {label: {setting: row index}} of the generator-attack rows with a setting name at the grid
    budget and seed (the budget and seed with the most distinct setting names), plus (budget, seed, names)."""
    count = {}
    for i, r in enumerate(rows):
        if r.get("attack") in GENERATOR_ATTACKS and field(r, "setting") and _plain(r) and _output(r) == "probs":
            key = (num(r, "query_budget", i, int), num(r, "seed", i, int))
            count.setdefault(key, []).append(i)
    if not count:
        return {}, None
    key = max(count, key=lambda k: (len({field(rows[i], "setting") for i in count[k]}), -k[0]))
    names, grid = [], {}
    for i in count[key]:
        name = field(rows[i], "setting")
        names += [name] if name not in names else []
        grid.setdefault(label(rows[i]), {})[name] = i
    return grid, (key[0], key[1], names)


def strongest(rows, victim, names, budget, seed):
    """(the name in ``names`` whose grid run against ``victim`` (budget queries, seed) has the highest clone accuracy
    on the validation split, the names without such a run yet); the name is None until every name has its run.
    Ties go to the earlier name. The test set plays no part."""
    val = {}
    for i, r in enumerate(rows):
        name = field(r, "setting")
        if (label(r) != victim or r.get("attack") not in GENERATOR_ATTACKS or name not in names or not _plain(r)
                or _output(r) != "probs" or num(r, "query_budget", i, int) != budget or num(r, "seed", i, int) != seed):
            continue
        if r.get("clone_val_acc"):
            val[name] = float(r["clone_val_acc"])
    missing = [n for n in names if n not in val]
    if missing:
        return None, missing
    return max(names, key=lambda n: (val[n], -names.index(n))), []


def _by_seed(rows, idx):
    return {num(rows[i], "seed", i, int): num(rows[i], "clone_acc", i) for i in idx}


def final_dfme(rows, victim, grid_info):
    """(setting name, budget, [row indices]) of the victim's headline data-free runs: the largest budget of its
    generator-attack rows, with its strongest grid setting when the grid is complete (else the setting with the
    most seeds at that budget); (None, None, []) without such rows."""
    cand = [i for i, r in enumerate(rows) if label(r) == victim and r.get("attack") in GENERATOR_ATTACKS
            and _plain(r) and _output(r) == "probs"]
    if not cand:
        return None, None, []
    budget = max(num(rows[i], "query_budget", i, int) for i in cand)
    at = [i for i in cand if num(rows[i], "query_budget", i, int) == budget]
    best = None
    if grid_info is not None and grid_info[0] != budget:
        best, _ = strongest(rows, victim, grid_info[2], grid_info[0], grid_info[1])
    by_setting = {}
    for i in at:
        by_setting.setdefault(field(rows[i], "setting"), []).append(i)
    name = best if best in by_setting else max(by_setting, key=lambda s: len(by_setting[s]))
    return name, budget, by_setting[name]


def knockoff_runs(rows, victim, pool):
    """(budget, [row indices]) of the victim's Knockoff runs on ``pool`` with probability answers at the budget
    with the most seeds (ties: the larger budget); (None, []) without any."""
    by_budget = {}
    for i, r in enumerate(rows):
        if (label(r) == victim and r.get("attack") == "knockoff" and _plain(r) and _output(r) == "probs"
                and settings_items(r).get("pool") == pool):
            by_budget.setdefault(num(r, "query_budget", i, int), []).append(i)
    if not by_budget:
        return None, []
    budget = max(by_budget, key=lambda b: (len(by_budget[b]), b))
    return budget, by_budget[budget]


def headline(rows):
    """The answer, one dict per victim (teacher first): utility cost, the final data-free attack and every
    Knockoff pool with clone accuracies and paired protection. [] without teacher rows."""
    victims = list(dict.fromkeys(label(r) for r in rows if _plain(r)))
    if TEACHER not in victims:
        return []
    victims.remove(TEACHER)
    victims.insert(0, TEACHER)
    datasets = {r["dataset"] for r in rows}
    pools = list(dict.fromkeys(settings_items(r).get("pool") for r in rows
                               if r.get("attack") == "knockoff" and settings_items(r).get("pool")))
    pools.sort(key=lambda p: p not in datasets)  # the victim's own data first
    _, grid_info = grid_runs(rows)
    acc = {}
    for i, r in enumerate(rows):
        if _plain(r):
            acc.setdefault(label(r), (num(r, "victim_acc", i), num({"s": field(r, "served_acc")}, "s", i)))
    t_name, t_budget, t_idx = final_dfme(rows, TEACHER, grid_info)
    t_dfme = _by_seed(rows, t_idx)
    t_ko = {p: knockoff_runs(rows, TEACHER, p) for p in pools}
    out = []
    for v in victims:
        name, budget, idx = final_dfme(rows, v, grid_info)
        d = _by_seed(rows, idx)
        entry = {"victim": v, "victim_acc": acc[v][0], "served_acc": acc[v][1],
                 "utility_cost": acc[TEACHER][0] - acc[v][1], "dfme_setting": name, "dfme_budget": budget,
                 "dfme_attack": rows[idx[0]]["attack"] if idx else None, "dfme": d, "dfme_rows": idx,
                 "dfme_protection": None if v == TEACHER or budget != t_budget else paired(t_dfme, d), "knockoff": {}}
        for p in pools:
            kb, kidx = knockoff_runs(rows, v, p)
            k = _by_seed(rows, kidx)
            tb = t_ko[p][0]
            entry["knockoff"][p] = {"budget": kb, "clone": k, "protection": None if v == TEACHER or kb != tb
                                    else paired(_by_seed(rows, t_ko[p][1]), k)}
        out.append(entry)
    return out


def grid_table(rows):
    """Markdown lines of the grid (validation / test clone accuracy per victim and setting; the strongest in
    bold), or [] without a grid."""
    grid, info = grid_runs(rows)
    if not grid:
        return []
    budget, seed, names = info
    lines = [f"DFME grid: {budget:,} queries, seed {seed}; each cell is the clone's validation / test accuracy (%). "
             "A victim's strongest setting (bold) is its highest validation accuracy; the test set chooses nothing.",
             "", "| victim | " + " | ".join(names) + " | strongest |", "|---|" + "---:|" * len(names) + "---|"]
    for v, runs in grid.items():
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


def _clone_text(by_seed):
    if not by_seed:
        return "-"
    xs = list(by_seed.values())
    m = sum(xs) / len(xs)
    if len(xs) == 1:
        return f"{100 * m:.2f} (1 seed)"
    sd = math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))
    return f"{100 * m:.2f} ± {100 * sd:.2f} ({len(xs)})"


def protection_text(p):
    if p is None:
        return "-"
    if p["std"] is None:
        return f"{100 * p['mean']:+.2f} (1 seed)"
    return f"{100 * p['mean']:+.2f} ± {100 * p['std']:.2f} [{100 * p['lo']:+.2f}, {100 * p['hi']:+.2f}] ({p['n']})"


def headline_table(rows):
    """Markdown lines of the headline table, or [] without teacher rows."""
    entries = headline(rows)
    if not entries:
        return []
    pools = list(entries[0]["knockoff"])
    head = ["victim", "test acc (%)", "utility cost (pts)", "data-free attack (strongest setting)", "clone (%)",
            "protection (pts)"]
    for p in pools:
        head += [f"Knockoff {p} clone (%)", f"Knockoff {p} protection (pts)"]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * 2 + "---|" + "---:|" * (len(head) - 4)]
    for e in entries:
        attack = "-" if e["dfme_budget"] is None else \
            f"{e['dfme_attack']} {e['dfme_setting'] or 'config default'}, {e['dfme_budget']:,} queries"
        cells = [e["victim"], f"{100 * e['served_acc']:.2f}", f"{100 * e['utility_cost']:.2f}", attack,
                 _clone_text(e["dfme"]), protection_text(e["dfme_protection"])]
        for p in pools:
            k = e["knockoff"][p]
            cells += [_clone_text(k["clone"]) + (f", {k['budget']:,} q" if k["budget"] else ""),
                      protection_text(k["protection"])]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Clone accuracy: mean ± sample std (seeds). Protection: teacher's clone minus this victim's clone, "
                  "per paired seed; mean ± std [95 % Student-t interval] (seeds). Positive = the victim is harder to "
                  "clone than the bare teacher. Utility cost: teacher test accuracy minus this victim's."]
    return lines
