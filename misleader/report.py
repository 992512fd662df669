"""The results report: markdown tables and three plots from results/results.csv, and a check of that CSV.

``write_report`` writes ``report.md``: for one config, the headline (each victim against its strongest attacker,
paired protection; misleader/comparison.py) and the data-free grid; then every experiment (rows grouped by
victim and attack settings, averaged over seeds). Plots: ``protection_vs_queries.png``, ``clone_vs_queries.png``
(from each run's metrics.csv) and ``utility_vs_protection.png`` (against the data-free attack and the strongest
of all). ``verify`` reloads every saved clone and victim from its checkpoint, reruns the test-set evaluation of
DFME/dfme.py and compares it with the CSV. Nothing is trained.

    python -m misleader.report [--config quick] [--out results]
    python -m misleader.report --verify 1
    python -m misleader.report --config fashionmnist --strongest teacher --grid late early --grid_budget 1
"""

import csv
import os
import shutil
import sys
import tempfile

from misleader.cli import Parser, main_wrapper
from misleader import comparison
from misleader.comparison import field as _field, flag as _flag, mean as _mean, num as _num, std as _std
from misleader.errors import UserError
from misleader.results import read_header, read_rows, refuse_damaged, where

# What the report reads; verify also needs the checkpoints.
REPORT_COLUMNS = ["dataset", "victim_acc", "query_budget", "queries_used", "clone_acc", "clone_best_acc", "fidelity",
                  "seed", "probs_as_logits", "label", "run_dir"]
VERIFY_COLUMNS = ["dataset", "victim_acc", "clone_acc", "fidelity", "queries_used", "seed", "victim_path",
                  "attack_path"]
# Recomputed from the checkpoints: the three accuracies from the saved clone and victim on the test set, and
# the query count from the attack checkpoint's own record. clone_best_acc (a maximum over per-epoch test
# accuracies) and wall_s cannot be recomputed from a checkpoint and are not checked.
VERIFIED_FIELDS = ("victim_acc", "clone_acc", "fidelity", "queries_used")
PLOT_FILES = ("clone_vs_queries.png", "utility_vs_protection.png", "protection_vs_queries.png")
HALF_DIGIT = 5e-5  # half the last of the CSV's 4 decimals: a recomputed accuracy this close equals the CSV's value


# ----------------------------------------------------------------------------- reading

def load_results(path, required=REPORT_COLUMNS):
    """Rows of a results CSV as dicts; a missing file, no data rows or missing columns is a UserError."""
    if not os.path.isfile(path):
        raise UserError(f"results file not found: {path} (test.sh / DFME/dfme.py writes one row per attack)")
    header = read_header(path)
    rows = read_rows(path)
    refuse_damaged(rows, path)
    if not header or not rows:
        raise UserError(f"results file {path} has no data rows")
    missing = [c for c in required if c not in header]
    if missing:
        raise UserError(f"results file {path} lacks column(s): {', '.join(missing)}")
    one_checkpoint_per_victim(rows, path)
    return rows


def one_checkpoint_per_victim(rows, path):
    """Raise UserError when two rows of one victim (config, dataset, label) attacked checkpoints with different
    test accuracies or at different paths: clones of a retrained victim, or of one made on another machine, must
    never be averaged or paired with the first's (say, a fresh clone's `test.sh` rows beside the committed rows of
    its config)."""
    first = {}
    for i, r in enumerate(rows):
        key = (r.get("config") or "", r.get("dataset") or "", r.get("label") or r.get("victim") or "")
        j = first.setdefault(key, i)
        def lines(j=j, i=i):  # for the message: the rows' lines in the CSV (k + 2 for rows read without them)
            return " and ".join(str(getattr(rows[k], "line", None) or k + 2) for k in (j, i))
        p, q = (os.path.normpath(x) if x else "" for x in (rows[j].get("victim_path"), r.get("victim_path")))
        if p and q and p != q:
            raise UserError(f"{path}: lines {lines()} attack victim '{key[2]}' (config '{key[0]}') at two "
                            f"paths, {p} and {q}: one label, one checkpoint; give the other victim its own --label")
        a, b = rows[j].get("victim_acc") or "", r.get("victim_acc") or ""
        try:
            same = abs(float(a) - float(b)) < HALF_DIGIT
        except ValueError:
            same = a == b
        if not same:
            raise UserError(f"{path}: lines {lines()} attack victim '{key[2]}' (config '{key[0]}') with test "
                            f"accuracies {a} and {b}: two checkpoints of one victim (retrained, or made on another "
                            "machine), whose clones are never averaged or paired; give one set its own CSV "
                            "(RESULTS=results/mine.csv bash test.sh, then bash report.sh --csv results/mine.csv)")


def filter_config(rows, config, path="results"):
    if config is None:
        return rows
    kept = [r for r in rows if (r.get("config") or "") == config]
    if not kept:
        present = sorted({r.get("config") or "''" for r in rows})
        raise UserError(f"no rows with config '{config}' in {path} (configs present: {', '.join(present)})")
    return kept


# What defines an experiment: rows that agree on all of these are seeds of one experiment; nothing else is averaged.
GROUP_FIELDS = ("config", "dataset", "label", "attack", "student_model", "query_budget", "query_range", "setting",
                "settings", "probs_as_logits", "api_defense")


def group_key(row):
    """The experiment a row belongs to: its values of GROUP_FIELDS (the seed is the only thing that varies)."""
    key = {f: (row.get(f) or "") for f in GROUP_FIELDS}
    key["label"] = key["label"] or row.get("victim") or "?"
    key["query_range"], key["api_defense"] = _field(row, "query_range"), _field(row, "api_defense")
    key["setting"] = _field(row, "setting")
    key["probs_as_logits"] = _flag(row, "probs_as_logits")
    return tuple(key[f] for f in GROUP_FIELDS)


def _settings_diff(texts):
    """{settings text: the 'key=value' items of it that not every text in ``texts`` shares}."""
    items = {t: t.split() for t in texts}
    common = set.intersection(*(set(v) for v in items.values())) if items else set()
    return {t: " ".join(x for x in v if x not in common) or "default" for t, v in items.items()}


def _display_names(keys):
    """label, plus ' (probs_as_logits)' for those runs; where names collide, each further field of the key is
    added in GROUP_FIELDS order, only when it tells the colliding groups apart (settings: only the items that
    differ)."""
    ix = {f: i for i, f in enumerate(GROUP_FIELDS)}
    names = {k: k[ix["label"]] + (" (probs_as_logits)" if k[ix["probs_as_logits"]] else "") for k in keys}
    formats = {"config": "{} [config {}]", "dataset": "{} [{}]", "attack": "{} ({})", "student_model": "{} (student {})",
               "query_budget": "{} ({} queries)", "query_range": "{} (query_range {})", "setting": "{} [{}]",
               "settings": "{} ({})",
               "api_defense": "{} (defense {})"}
    for field, fmt in formats.items():
        same = {}
        for k, n in names.items():
            same.setdefault(n, []).append(k)
        new = {}
        for n, ks in same.items():
            values = {k[ix[field]] for k in ks}
            if len(values) < 2:
                new.update({k: n for k in ks})
                continue
            diff = _settings_diff(values) if field == "settings" else {v: v for v in values}
            new.update({k: fmt.format(n, diff[k[ix[field]]] or "-") for k in ks})
        names = new
    return names


def _groups(rows):
    """{key: [(row index, row), ...]} in first-appearance order."""
    groups = {}
    for i, r in enumerate(rows):
        groups.setdefault(group_key(r), []).append((i, r))
    return groups


def summarize(rows):
    """One dict per victim group, in first-appearance order; accuracies are fractions as in the CSV (the query
    budget is part of a group's key: a group is one budget). Two rows of one group on one seed raise UserError,
    as in the headline: averaging both would count one seed twice."""
    groups = _groups(rows)
    names = _display_names(list(groups))
    out = []
    for key, members in groups.items():
        comparison.seed_rows(rows, [i for i, _ in members])  # a seed twice (a run made twice): an error, not a mean
        col = {c: [_num(r, c, i) for i, r in members]
               for c in ("victim_acc", "clone_acc", "clone_best_acc", "fidelity", "queries_used")}
        for c in ("served_acc", "served_l1"):  # older rows: the raw model's answers (results.EARLIER_VALUES)
            col[c] = [comparison.num_field(r, c, i) for i, r in members]
        k = dict(zip(GROUP_FIELDS, key))
        out.append({
            "victim": names[key], "dataset": k["dataset"], "label": k["label"],
            "probs_as_logits": int(k["probs_as_logits"]), "query_range": k["query_range"], "config": k["config"],
            "attack": k["attack"], "settings": k["settings"], "api_defense": k["api_defense"],
            "victim_acc": _mean(col["victim_acc"]), "served_acc": _mean(col["served_acc"]),
            "served_l1": _mean(col["served_l1"]),
            "clone_acc_mean": _mean(col["clone_acc"]), "clone_acc_std": _std(col["clone_acc"]),
            "clone_best_mean": _mean(col["clone_best_acc"]), "fidelity_mean": _mean(col["fidelity"]),
            "queries_used_mean": _mean(col["queries_used"]),
            "query_budget": _num(members[0][1], "query_budget", members[0][0], int),  # a group is one budget
            "n_seeds": len(members), "seeds": sorted(_num(r, "seed", i, int) for i, r in members),
        })
    return out


def _resolve(path, bases):
    """path as given (absolute, or relative to the working directory), else relative to each base folder."""
    if not path:
        return None
    if os.path.exists(path):
        return path
    if os.path.isabs(path):
        return None
    for b in bases:
        p = os.path.join(b, path)
        if os.path.exists(p):
            return p
    return None


def _bases(csv_path):
    """Where relative paths in a CSV may be rooted: its folder and the folder above (the repository root)."""
    folder = os.path.dirname(os.path.abspath(csv_path))
    return [folder, os.path.dirname(folder)]


def read_curve(run_dir):
    """[(queries_used, clone_acc), ...] by step from run_dir/metrics.csv, or None when absent or empty."""
    path = os.path.join(run_dir, "metrics.csv") if run_dir else None
    if not path or not os.path.isfile(path):
        return None
    points = []
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            try:
                points.append((int(float(r["step"])), float(r["queries_used"]), float(r["clone_acc"])))
            except (KeyError, TypeError, ValueError):
                continue
    points.sort()
    return [(q, a) for _, q, a in points] or None


def _mean_curve(curves):
    """Average curves at equal epoch index over their common length; returns (queries, acc mean, acc std)."""
    n = min(len(c) for c in curves)
    q = [_mean([c[i][0] for c in curves]) for i in range(n)]
    acc = [[c[i][1] for c in curves] for i in range(n)]
    return q, [_mean(a) for a in acc], [_std(a) for a in acc]


# ----------------------------------------------------------------------------- writing

def _pct(x):
    return f"{100 * x:.2f}"


def _table(summary):
    """The results table; with any API defense among the victims, also the utility of the served answers."""
    served = any(s["api_defense"] != "none" for s in summary)
    head = ["victim", "victim test acc (%)", "clone acc (%, mean ± std over seeds)", "best clone acc (%, max over epochs; not recomputed)", "fidelity (%)",
            "queries used / budget", "seeds"]
    if served:
        head[2:2] = ["served test acc (%, the API's answers)", "served L1 (mean |served - raw probabilities|)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * (len(head) - 2) + ["---"]) + "|"]
    for s in summary:
        seeds = ", ".join(str(x) for x in s["seeds"])
        clone = _pct(s["clone_acc_mean"])
        if s["n_seeds"] > 1:  # one seed has no spread to show; "± 0.00" would claim one
            clone += f" ± {_pct(s['clone_acc_std'])}"
        cells = [s["victim"], _pct(s["victim_acc"]), clone,
                 _pct(s["clone_best_mean"]), _pct(s["fidelity_mean"]),
                 f"{round(s['queries_used_mean'])} / {s['query_budget']}", f"{s['n_seeds']} ({seeds})"]
        if served:
            cells[2:2] = [_pct(s["served_acc"]), f"{s['served_l1']:.4f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _note_path(csv_path, out_dir):
    """The CSV path relative to the working directory (the repository root for report.sh) or, failing that, to
    the report's folder; else its file name: the note holds no machine-specific prefix."""
    for base in (os.getcwd(), out_dir):
        try:
            rel = os.path.relpath(os.path.abspath(csv_path), os.path.abspath(base))
        except ValueError:  # another drive on Windows
            continue
        if rel != ".." and not rel.startswith(".." + os.sep):
            return rel.replace(os.sep, "/")
    return os.path.basename(csv_path)


def _figure(size=(7, 4.5)):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, dpi=120)
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot(1, 1, 1)


def _save(fig, path):
    fig.tight_layout()
    fig.savefig(path, format="png", metadata={"Software": None})


def plot_clone_vs_queries(curves, path, title):
    """curves: [(name, [curve, ...]), ...]; mean over seeds, with a ±1 std band when there are several."""
    fig, ax = _figure()
    drawn = 0
    for name, runs in curves:
        if not runs:
            continue
        q, m, s = _mean_curve(runs)
        x = [v / 1e6 for v in q]
        line, = ax.plot(x, [100 * v for v in m], marker="o", markersize=3,
                        label=f"{name} ({len(runs)} seed{'s' if len(runs) > 1 else ''})")
        if len(runs) > 1:
            ax.fill_between(x, [100 * (a - b) for a, b in zip(m, s)], [100 * (a + b) for a, b in zip(m, s)],
                            color=line.get_color(), alpha=0.2, linewidth=0)
        drawn += 1
    if drawn:
        ax.legend(loc="best", fontsize="small")
    else:
        ax.text(0.5, 0.5, "no metrics.csv found for any run", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("queries used (millions)")
    ax.set_ylabel("clone test accuracy (%)")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    _save(fig, path)


def _interp(curve, xs):
    """Linear interpolation of a [(queries, acc), ...] curve at the query counts xs (inside its range)."""
    out, j = [], 0
    for x in xs:
        while j + 1 < len(curve) - 1 and curve[j + 1][0] < x:
            j += 1
        (x0, y0), (x1, y1) = curve[j], curve[min(j + 1, len(curve) - 1)]
        out.append(y0 if x1 == x0 else y0 + (y1 - y0) * (x - x0) / (x1 - x0))
    return out


def protection_curves(teacher_curves, victim_curves, points=40):
    """Per-seed protection (teacher clone minus victim clone) along the queries: both curves of a seed are
    interpolated on a common grid of query counts inside both ranges (runs of different batch sizes log at
    different counts). Returns (queries, [[protection per grid point] per seed]), or None without a common seed."""
    seeds = sorted(set(teacher_curves) & set(victim_curves))
    if not seeds:
        return None
    pairs = [(teacher_curves[s], victim_curves[s]) for s in seeds]
    lo = max(max(t[0][0], v[0][0]) for t, v in pairs)
    hi = min(min(t[-1][0], v[-1][0]) for t, v in pairs)
    if hi <= lo:
        return None
    xs = [lo + (hi - lo) * k / (points - 1) for k in range(points)]
    return xs, [[a - b for a, b in zip(_interp(t, xs), _interp(v, xs))] for t, v in pairs]


def plot_protection_vs_queries(series, path, title):
    """series: [(victim, queries, [[protection per point] per seed]), ...]; mean over seeds, ±1 std band."""
    fig, ax = _figure()
    for name, xs, per_seed in series:
        m = [_mean(col) for col in zip(*per_seed)]
        x = [q / 1e6 for q in xs]
        line, = ax.plot(x, [100 * v for v in m], label=f"{name} ({len(per_seed)} paired seed{'s' if len(per_seed) > 1 else ''})")
        if len(per_seed) > 1:
            sd = [_std(list(col)) for col in zip(*per_seed)]
            ax.fill_between(x, [100 * (a - b) for a, b in zip(m, sd)], [100 * (a + b) for a, b in zip(m, sd)],
                            color=line.get_color(), alpha=0.2, linewidth=0)
    if series:
        ax.legend(loc="best", fontsize="small")
    else:
        ax.text(0.5, 0.5, "no data-free run paired with the teacher's\n(same budget, same seed, with metrics.csv) yet",
                ha="center", va="center", transform=ax.transAxes)
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xlabel("queries used (millions)")
    ax.set_ylabel("protection (points): teacher clone - victim clone\n(mean over seeds, band ±1 sample std)")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    _save(fig, path)


def pareto_front(points):
    """Indices of the points (protection, utility) that no other point beats on both (>= on both, > on one)."""
    front = []
    for i, (x, y) in enumerate(points):
        if not any((a >= x and b >= y) and (a > x or b > y) for j, (a, b) in enumerate(points) if j != i):
            front.append(i)
    return sorted(front, key=lambda i: points[i][0])


TARGET = (20.0, 2.0)  # the search's target: protection (points) at no more than this utility cost (points)


def short_victim_name(name):
    """A victim's name for a plot: without the parameters that name files (adaptive misinformation's
    model=PATH), which only the results' api_defense column needs."""
    head, plus, spec = name.partition(" + ")
    defense, _, params = spec.partition(":")
    kept = [p for p in params.split(",") if p and not p.startswith("model=")]
    return f"{head} + {defense}" + (":" + ",".join(kept) if kept else "") if plus else name


def tradeoff_key(entries):
    """{victim name: number} of the trade-off plot's points (the teacher 0, the others from 1 in the headline's
    order) and the key's lines ("1  misleader", ...): the points carry numbers, as a dozen long names beside
    points a few tenths of a point apart cover each other."""
    numbers = {e["victim"]: k for k, e in enumerate(entries)}
    return numbers, [f"{k:>2}  {short_victim_name(name)}" for name, k in numbers.items()]


def _tradeoff_panel(ax, entries, which, xlabel, numbers):
    """One panel of the trade-off plot: x = protection (mean over paired seeds; the bare teacher at 0) against the
    attack ``which`` ("dfme_protection" or "overall"), y = served test accuracy; per budget of the data-free runs
    one colour and one dashed Pareto front (a 1M search and 2M paired runs are not one front). Each point is
    marked with its number in ``numbers`` (tradeoff_key)."""
    teacher = entries[0]
    by_budget = {}
    for e in entries[1:]:
        p = e["dfme_protection"] if which == "dfme_protection" else e["overall"]["protection"]
        if p is not None:
            group = e["dfme_budget"] if which == "dfme_protection" else None
            by_budget.setdefault(group, []).append((100 * p["mean"], 100 * e["served_acc"], e["victim"]))
    t_acc = 100 * teacher["served_acc"]
    if by_budget:  # the teacher's point is drawn with each budget's points: none, no number either
        ax.annotate(str(numbers[teacher["victim"]]), (0.0, t_acc), textcoords="offset points", xytext=(-10, 4),
                    fontsize="x-small")
    for budget in sorted(by_budget, key=lambda b: b or 0):
        pts = [(0.0, t_acc, teacher["victim"])] + by_budget[budget]
        label = f"{budget / 1e6:g}M queries" if budget else "strongest attack, each victim's own"
        marker = ax.plot([x for x, _, _ in pts], [y for _, y, _ in pts], "o", label=label)[0]
        for k, (x, y, name) in enumerate(pts[1:]):
            ax.annotate(str(numbers[name]), (x, y), textcoords="offset points", xytext=(4, (3, -9, 9)[k % 3]),
                        fontsize="x-small")
        front = pareto_front([(x, y) for x, y, _ in pts])
        if len(front) > 1:
            ax.plot([pts[i][0] for i in front], [pts[i][1] for i in front], "--", linewidth=1,
                    color=marker.get_color())
    xs = [x for pts in by_budget.values() for x, _, _ in pts] + [0.0]
    # the target: at least TARGET[0] points of protection at no more than TARGET[1] points of utility cost
    ys = [y for pts in by_budget.values() for _, y, _ in pts] + [t_acc]
    ax.fill_between([TARGET[0], max(TARGET[0] + 5, max(xs) + 5)], t_acc - TARGET[1], max(ys) + 0.5, color="green",
                    alpha=0.08, linewidth=0, label=f"target: >= {TARGET[0]:g} pts at <= {TARGET[1]:g} pts cost")
    ax.axvline(0, color="grey", linewidth=0.8)
    ax.legend(loc="best", fontsize="x-small", title="dashed: Pareto front", title_fontsize="x-small")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("served test accuracy (%)  (higher = more utility)")
    ax.grid(True, alpha=0.3)
    ax.margins(0.1)


def plot_defense_tradeoff(entries, path, title):
    """Utility against protection, one point per victim of the comparison, two panels: protection against the
    victim's strongest data-free attack, and against its strongest attack of all (chosen on validation); the
    target region shaded."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    numbers, key = tradeoff_key(entries)
    fig = Figure(figsize=(16, 5.5), dpi=120)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 3, gridspec_kw={"width_ratios": [1, 1, 0.55]})
    axes[1].sharey(axes[0])
    _tradeoff_panel(axes[0], entries, "dfme_protection", "protection against the data-free attack (points)", numbers)
    _tradeoff_panel(axes[1], entries, "overall", "protection against the strongest attack of all (points)", numbers)
    axes[2].axis("off")
    axes[2].text(0.0, 1.0, "points:\n" + "\n".join(key), va="top", ha="left", fontsize="x-small",
                 family="monospace", transform=axes[2].transAxes)
    fig.suptitle(title)
    _save(fig, path)


def plot_utility_vs_protection(summary, path, title):
    """One point per victim: x = clone accuracy (mean ± std over seeds), y = test accuracy of the answers the API
    serves (the victim's own without an API defense)."""
    fig, ax = _figure()
    for k, s in enumerate(summary):
        x, y = 100 * s["clone_acc_mean"], 100 * s["served_acc"]
        ax.errorbar([x], [y], xerr=[100 * s["clone_acc_std"]], fmt="o", capsize=3, label=s["victim"])
        ax.annotate(s["victim"], (x, y), textcoords="offset points", xytext=(6, 6 if k % 2 == 0 else -12),
                    fontsize="small")
    ax.set_xlabel("clone test accuracy (%)  (lower = better protection)")
    ax.set_ylabel("served test accuracy (%)  (higher = more utility)")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best", fontsize="small")
    ax.margins(0.15)
    _save(fig, path)


def write_report(csv_path, out_dir, config=None, grid_names=None, aware=(), variant_grid=(), final=None):
    """Write out_dir/report.md and the three plots; return the paths written. ``grid_names``: the full list of
    the data-free grid's settings (settings without runs yet are then reported as missing); ``aware``: the
    AWARE_SETTINGS entries (a defended victim's search settings without runs yet are reported likewise);
    ``variant_grid``: VARIANT_GRID (the same for a MISLEADER variant's search); ``final``: (budget in queries,
    victim keys) of phase 3's runs at QUERY_BUDGET (comparison.headline)."""
    rows = filter_config(load_results(csv_path), config, csv_path)  # a CSV that cannot be read creates nothing
    os.makedirs(out_dir, exist_ok=True)
    stage = tempfile.mkdtemp(prefix=".report-", dir=out_dir)  # all four files, then moved in: none is left
    try:  # half-written, and an error on the way (say, two checkpoints of one victim) leaves the earlier report
        _build_report(rows, csv_path, stage, out_dir, config, grid_names, aware, variant_grid, final)
        for name in ("report.md", *PLOT_FILES):
            os.replace(os.path.join(stage, name), os.path.join(out_dir, name))
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return [os.path.join(out_dir, name) for name in ("report.md", *PLOT_FILES)]


def _build_report(rows, csv_path, out_dir, shown_dir, config, grid_names, aware, variant_grid, final=None):
    """write_report's four files from ``rows``, written into ``out_dir`` (``shown_dir``: the folder they end up
    in)."""
    summary = summarize(rows)
    groups = _groups(rows)
    bases = _bases(csv_path)
    curves, missing = [], []
    for s, members in zip(summary, groups.values()):
        runs = []
        for i, r in members:
            run_dir = _resolve(r.get("run_dir"), bases)
            curve = read_curve(run_dir)
            if curve is None:
                missing.append((where(r, i), s["victim"], r.get("seed", ""), r.get("run_dir") or "(empty)"))
            else:
                runs.append(curve)
        curves.append((s["victim"], runs))

    datasets = list(dict.fromkeys(s["dataset"] for s in summary))
    scope = ", ".join(datasets) + (f", config {config}" if config is not None else "")
    md = os.path.join(out_dir, "report.md")
    png_curves, png_tradeoff, png_protection = (os.path.join(out_dir, p) for p in PLOT_FILES)
    one = len({(r.get("config") or "", r["dataset"]) for r in rows}) == 1  # a comparison is within one config
    entries = comparison.headline(rows, grid_names, aware, variant_grid, final) if one else []
    final_rows = {i for e in entries for i in e["dfme_rows"]}
    if final_rows:  # the plot shows the headline's data-free runs; the full table has every group
        curves = [(name, runs) for (name, runs), members in zip(curves, groups.values())
                  if any(i in final_rows for i, _ in members)]
    plot_clone_vs_queries(curves, png_curves, f"Data-free clone accuracy vs queries ({scope})")
    if entries:
        plot_defense_tradeoff(entries, png_tradeoff, f"Utility vs protection ({scope})")
    else:
        plot_utility_vs_protection(summary, png_tradeoff, f"Utility vs clone accuracy ({scope})")
    series = []
    if entries:
        def seed_curves(idx):
            out = {}
            for i in idx:
                c = read_curve(_resolve(rows[i].get("run_dir"), bases))
                if c:
                    out[_num(rows[i], "seed", i, int)] = c
            return out
        for e in entries[1:]:
            if e["dfme_protection"] is not None:  # paired with the teacher's runs at the victim's budget
                pc = protection_curves(seed_curves(e["teacher_rows"]), seed_curves(e["dfme_rows"]))
                if pc:
                    name = f"{e['victim']}, {e['dfme_setting'] or e['dfme_attack']} at {e['dfme_budget'] / 1e6:g}M"
                    series.append((name, *pc))
    plot_protection_vs_queries(series, png_protection, f"Protection vs queries, paired seeds ({scope})")

    lines = ["# Model extraction results", "",
             f"Source: `{_note_path(csv_path, shown_dir)}`, {len(rows)} attack run(s)"
             + (f" with config `{config}`" if config is not None else "") + f"; dataset(s): {', '.join(datasets)}.", ""]
    if entries:
        lines += ["## Each victim against its strongest attacker", ""] + \
            comparison.headline_table(rows, grid_names, aware, variant_grid, final) + \
            ["", f"![protection vs queries]({PLOT_FILES[2]})", ""]
    grid = comparison.grid_table(rows, grid_names) if one else []
    if grid:
        lines += ["## The data-free attack grid", ""] + grid + [""]
    curve = comparison.knockoff_curve_table(rows) if one else []
    if curve:
        lines += ["## Knockoff budget curve", ""] + curve + [""]
    lines += ["## Every run", "",
              "Accuracies are on the test set, in percent, averaged over seeds (± is the sample standard deviation). "
              "Fidelity is the fraction of test images on which the clone agrees with the victim.", ""]
    lines += _table(summary)
    if any(s["api_defense"] != "none" for s in summary):
        lines += ["", ("Victim test acc is the model's own; served test acc is that of the answers its API serves "
                       "under the API defense (--api_defense), and served L1 the mean L1 distance of those answers "
                       "from the model's probabilities on the test set. Fidelity is to the model's own top-1.")]
    lines += ["", f"![clone accuracy vs queries]({PLOT_FILES[0]})", "",
              f"![utility vs protection]({PLOT_FILES[1]})", ""]
    if missing:
        lines += ["Runs without a metrics.csv (left out of the accuracy-vs-queries plot):", ""]
        lines += [f"- {w}: {name}, seed {seed}: `{d}`" for w, name, seed, d in missing]
        lines.append("")
    with open(md, "w") as f:
        f.write("\n".join(lines))


# ----------------------------------------------------------------------------- verification

def verify(csv_path, data_root="data", device="cpu", config=None, tolerance=HALF_DIGIT, recompute=None, rows=None,
           images=1):
    """Recompute victim_acc, clone_acc, fidelity and (where recorded) clone_val_acc of every row from its
    checkpoints, and read queries_used from the attack checkpoint.

    ``recompute``: the row indices whose accuracies are recomputed (None: all). The other rows get the cheap
    checks only: both checkpoints are there, the attack checkpoint loads and matches the row's dataset, and its
    query count equals the row's.

    Returns [(row index, field, csv value, recomputed value, ok), ...]; an accuracy is rounded to the CSV's
    4 decimals before the comparison |recomputed - csv| <= tolerance + ``images`` images of its split (test, or
    validation for clone_val_acc): another CPU's kernels sum a convolution in another order and can move a
    near-tie image across the decision boundary (one test image in 10,000, on one of the 166 fashionmnist_v2 rows
    recorded on an Intel CPU and recomputed on an AMD one); ``images=0`` asks for the CSV's 4 decimals exactly.
    ``format_verify`` names every row that differs by any image. The query count must be equal. The row
    index counts the data rows of the CSV (after the --config filter when one is given). A victim given as
    FILE.py:FUNCTION is rebuilt from that file and the attack's --victim_weights. ``rows``: the CSV's rows as the
    caller read them (so that its row numbers are these even while runs add rows); default: read here.
    """
    import torch

    from misleader import checkpoint
    from misleader.data import dataset_info, load_dataset
    from misleader.models import create_model
    from misleader.evaluate import accuracy, clone_metrics, predict
    from misleader.runtime import pick_device

    if rows is None:
        rows = filter_config(load_results(csv_path, VERIFY_COLUMNS), config, csv_path)
    bases = _bases(csv_path)
    located, absent = [], []
    for i, r in enumerate(rows):
        found = {c: _resolve(r.get(c), bases) for c in ("attack_path", "victim_path")}
        spec = r.get("victim_path") or ""
        if checkpoint.is_user_model(spec):  # FILE.py:FUNCTION: the file must be there
            file = _resolve(spec.rpartition(":")[0], bases)
            found["victim_path"] = f"{file}:{spec.rpartition(':')[2]}" if file else None
        absent += [f"{where(r, i)} {c} {r.get(c) or '(empty)'}" for c, p in found.items() if p is None]
        located.append(found)
    if absent:
        raise UserError(f"{len(absent)} checkpoint(s) missing, first: {absent[0]}")

    dev = pick_device(device)
    datasets, victims, victim_preds, out = {}, {}, {}, []
    for i, (r, found) in enumerate(zip(rows, located)):
        name = r["dataset"]
        info = dataset_info(name)
        apath, vpath = found["attack_path"], found["victim_path"]
        ck = checkpoint.check(checkpoint.load(apath), apath, kind="attack", dataset=name,
                              num_classes=info.num_classes, in_channels=info.in_channels)
        used = (ck.get("metrics") or {}).get("queries_used", float("nan"))
        if recompute is not None and i not in recompute:
            out += _compared(i, r, {"queries_used": used}, ("queries_used",), {})
            continue
        run_args = ck.get("args") or {}
        # the run's memory format (--channels_last, default 1): the same weights in another layout sum in another
        # order, which moves a near-tie test image now and then (one in 10,000 on a v2 row)
        fmt = torch.channels_last if run_args.get("channels_last", 1) else torch.contiguous_format
        dkey = (name, run_args.get("val_size"), run_args.get("split_seed", 0))  # the run's validation split
        if dkey not in datasets:
            datasets[dkey] = (load_dataset(name, data_root, dkey[1], dkey[2], dev), {})
        data, test_xs = datasets[dkey]
        if fmt not in test_xs:  # laid out as AttackStage lays it out, once per split and format
            test_xs[fmt] = data.normalize(data.test.x).contiguous(memory_format=fmt)
        test_x = test_xs[fmt]
        y = data.test.y
        student = create_model(ck["arch"], ck["num_classes"], ck["in_channels"])
        student.load_state_dict(ck["state_dict"])
        student = student.to(dev, memory_format=fmt).eval()

        weights = _resolve((ck.get("args") or {}).get("victim_weights"), bases)
        vkey = (os.path.abspath(vpath), weights, fmt)
        if vkey not in victims:
            victims[vkey] = checkpoint.load_victim(vpath, info, None, weights=weights)[0].to(
                dev, memory_format=fmt).eval()
        pkey = (vkey, name)
        if pkey not in victim_preds:  # in float32, as the run measured it (the API's own precision)
            victim_preds[pkey] = predict(victims[vkey], test_x).argmax(1)
        victim_pred = victim_preds[pkey]
        clone_acc, fidelity = clone_metrics(student, test_x, y, victim_pred)
        recomputed = {"victim_acc": (victim_pred == y).float().mean().item(), "clone_acc": clone_acc,
                      "fidelity": fidelity,
                      "queries_used": used}
        fields = VERIFIED_FIELDS
        # rows and clones made before the column existed have none to check; a clone that recorded one is checked
        # against its row, an empty cell included
        if r.get("clone_val_acc") or (ck.get("metrics") or {}).get("clone_val_acc") is not None:
            recomputed["clone_val_acc"] = accuracy(student, data.val, data.normalize)
            fields += ("clone_val_acc",)
        del student
        if dev.type == "cuda":
            torch.cuda.empty_cache()
        sizes = {"clone_val_acc": len(data.val.y)}
        out += _compared(i, r, recomputed, fields, {f: tolerance + images / sizes.get(f, len(y)) for f in fields})
    return out


def _compared(i, r, recomputed, fields, tolerance):
    """verify's (row index, field, csv value, recomputed value, ok) for ``fields`` of row ``i``: the query count
    must be equal, an accuracy within ``tolerance[field]`` once rounded to the CSV's 4 decimals."""
    out = []
    for field in fields:
        if not (r.get(field) or "").strip():  # an empty cell where the checkpoint has a value: never OK
            out.append((i, field, float("nan"), float(recomputed[field]), False))
            continue
        csv_value = _num(r, field, i)
        if field == "queries_used":
            value = float(recomputed[field])
            out.append((i, field, csv_value, value, value == csv_value))
            continue
        value = float(f"{recomputed[field]:.4f}")
        out.append((i, field, csv_value, value, abs(value - csv_value) <= tolerance[field]))
    return out


def _apart(field, csv_value, value, ok):
    """A check of verify's (field, csv value, recomputed value, ok): an accuracy it accepted that differs from the
    CSV's 4 decimals."""
    return ok and field != "queries_used" and abs(value - csv_value) > HALF_DIGIT


def _val(field, v):
    return f"{v:.0f}" if field == "queries_used" else f"{v:.4f}"


def format_verify(rows, results):
    """One line per row: OK (then naming, after "not to the digit:", any accuracy within verify's tolerance of
    images but not equal to the CSV's value), or MISMATCH naming each field that differs."""
    by_row = {}
    for i, field, csv_value, value, ok in results:
        by_row.setdefault(i, []).append((field, csv_value, value, ok))
    lines = []
    for i, checks in by_row.items():
        r = rows[i]
        who = f"{where(r, i)} {r['dataset']} {r.get('label') or r.get('victim', '')} seed {r['seed']}"
        bad = [c for c in checks if not c[3]]
        if bad:
            lines.append(f"{who}: MISMATCH " + ", ".join(f"{f} csv {_val(f, c)} recomputed {_val(f, v)}" for f, c, v, _ in bad))
        else:
            apart = [c for c in checks if _apart(*c)]
            lines.append(f"{who}: OK " + ", ".join(f"{f} {_val(f, v)}" for f, _, v, _ in checks) + (
                "; not to the digit: " + ", ".join(f"{f} csv {_val(f, c)}" for f, c, _, _ in apart) if apart else ""))
    return lines


# ----------------------------------------------------------------------------- command line

def parse(argv):
    p = Parser(prog="python -m misleader.report", description=__doc__.split("\n\n")[0])
    p.add_argument("--csv", default=os.path.join("results", "results.csv"), help="results CSV to read")
    p.add_argument("--out", default=None, help="folder for report.md and the plots (default: results/CONFIG with "
                                                "--config, else results), so that two configs' reports never "
                                                "overwrite each other")
    p.add_argument("--config", default=None, help="use only rows whose config column equals this (e.g. quick)")
    p.add_argument("--verify", type=int, default=0, choices=[0, 1],
                   help="1: instead of writing the report, rerun the test-set evaluation of every saved clone and "
                        "victim from its checkpoint and check the CSV; exit code 1 on any mismatch")
    p.add_argument("--strongest", default=None, metavar="VICTIM",
                   help="instead of the report: print the name of VICTIM's (a label) strongest --grid setting, the one "
                        "whose run at --grid_budget and --grid_seed has the highest clone accuracy on the validation "
                        "split; print nothing (and name the missing runs on stderr) until every setting has its run; "
                        "needs --config when the CSV holds rows of several configs")
    p.add_argument("--grid", nargs="+", default=[],
                   help="the setting names of the data-free grid (compare.sh's DFME_GRID): for --strongest, and for "
                        "the report, where settings without a run yet are shown as missing")
    p.add_argument("--aware", nargs="+", default=[], metavar="ENTRY",
                   help="compare.sh's AWARE_SETTINGS entries, each one quoted argument \"SETTING [DEFENSE ...]\": "
                        "the report names a defended victim's search settings that have no run yet")
    p.add_argument("--variant_grid", nargs="+", default=[], metavar="SETTING",
                   help="compare.sh's VARIANT_GRID: the settings a MISLEADER variant (label misleader-NAME) meets "
                        "besides MISLEADER's strongest; the report names those without a run yet")
    p.add_argument("--final_budget", type=float, default=None, metavar="M",
                   help="with --final_victims: the budget (millions) of compare.sh's final runs, QUERY_BUDGET")
    p.add_argument("--final_victims", nargs="+", default=[], metavar="VICTIM",
                   help="victims that get runs at --final_budget once their grid or search is complete (compare.sh's "
                        "phase 3), each as the report names it ('lambda0', 'misleader + topk:k=1', one quoted "
                        "argument each); the headline marks those runs as still to run until they exist")
    p.add_argument("--grid_budget", type=float, default=1.0, help="with --strongest: queries of a grid run, millions")
    p.add_argument("--grid_seed", type=int, default=0, help="with --strongest: seed of the grid runs")
    p.add_argument("--api_defense", default="none", help="with --strongest: the victim's API defense (its spec as in "
                                                         "the results' api_defense column)")
    p.add_argument("--verify_images", type=int, default=1,
                   help="with --verify 1: an accuracy may differ from the CSV by this many images of its split "
                        "(another CPU's kernels can move a near-tie image; such rows are named); 0: exactly")
    p.add_argument("--data_root", default="data", help="with --verify 1: folder with the datasets")
    p.add_argument("--device", default="cpu", help="with --verify 1: cpu, cuda, cuda:N or auto")
    return p.parse_args(argv)


def main(argv):
    args = parse(argv)
    if args.strongest is not None:
        if not args.grid:
            raise UserError("--strongest needs --grid NAME [NAME ...]")
        rows = []
        if os.path.isfile(args.csv):  # no file or no rows of the config yet: no grid run is done
            rows = read_rows(args.csv)
            refuse_damaged(rows, args.csv)
            one_checkpoint_per_victim(rows, args.csv)
            rows = [r for r in rows if args.config is None or (r.get("config") or "") == args.config]
        configs = sorted({r.get("config") or "" for r in rows})
        if len(configs) > 1:  # one config's grid must not be completed with another's runs
            raise UserError(f"{args.csv} holds rows of {len(configs)} configs ({', '.join(configs)}): give --config "
                            "with --strongest")
        from misleader import api_defense  # the row records the canonical spelling of the defense

        best, missing = comparison.strongest(rows, args.strongest, args.grid, round(args.grid_budget * 1e6),
                                             args.grid_seed, api_defense.canonical(args.api_defense))
        if best is None:
            print(f"{args.strongest}: no strongest setting yet, grid runs missing: {' '.join(missing)}",
                  file=sys.stderr)
        else:
            print(best)
        return
    if args.verify:
        if args.verify_images < 0:
            raise UserError(f"--verify_images must be 0 or more, got {args.verify_images}")
        rows = filter_config(load_results(args.csv, VERIFY_COLUMNS), args.config, args.csv)  # read once
        results = verify(args.csv, args.data_root, args.device, args.config, rows=rows, images=args.verify_images)
        for line in format_verify(rows, results):
            print(line)
        bad = sorted({i for i, _, _, _, ok in results if not ok})
        apart = {i for i, *check in results if _apart(*check)}
        print(f"verified {len(rows)} row(s): {len(rows) - len(bad)} OK" + (
            f" ({len(apart)} of them within {args.verify_images} image(s) of the split but not to the digit: "
            "named above)" if apart else "")
            + f", {len(bad)} MISMATCH")
        if bad:
            sys.exit(1)
        return
    out = args.out or (os.path.join("results", args.config) if args.config else "results")
    final = None
    if args.final_budget is not None and not args.final_victims:
        raise UserError("--final_budget needs --final_victims (the victims compare.sh's phase 3 attacks at it)")
    if args.final_victims:
        if args.final_budget is None:
            raise UserError("--final_victims needs --final_budget (the config's QUERY_BUDGET, millions)")
        if not args.final_budget > 0:
            raise UserError(f"--final_budget must be a positive number of millions of queries, got {args.final_budget}")
        from misleader import api_defense  # the rows record the canonical spelling of a defense
        keys = set()
        for name in args.final_victims:
            label, _, spec = name.partition(" + ")
            try:
                keys.add((label, api_defense.canonical(spec or "none")))
            except UserError as e:
                raise UserError(f"--final_victims '{name}': {e}") from None
        final = (round(args.final_budget * 1e6), keys)
    for path in write_report(args.csv, out, args.config, args.grid or None, args.aware,
                             args.variant_grid, final):
        print(f"wrote {path}")


if __name__ == "__main__":
    main_wrapper(main)
