"""results/results.csv: one row per attack run (header written once; new columns only at the end). A run is its
clone checkpoint (``attack_path``): a run repeated after its checkpoint was lost or to redo it replaces its earlier
row, which keeps one row per seed for the report.

Many runs may write to one CSV at once (a run list under ``xargs -P``, a SLURM array on a shared filesystem):
every change holds an exclusive ``fcntl.flock`` on ``<csv>.lock`` beside the file (a symbolic link's target),
so N writers of N runs give N rows and one header whatever the interleaving, and every change writes a complete
new file that replaces the old one (fsync, then rename): a run killed mid-write leaves the earlier file.
``attack_path`` is relative to the repository root, where the runs start: two checkouts should not share one CSV.
"""

import contextlib
import csv
import fcntl
import os

from misleader.checkpoint import write_atomic
from misleader.errors import UserError

COLUMNS = ["dataset", "victim", "victim_acc", "attack", "student_model", "query_budget", "queries_used", "clone_acc",
           "clone_best_acc", "fidelity", "seed", "probs_as_logits", "label", "config", "victim_path", "run_dir",
           "attack_path", "wall_s", "git_commit", "date", "query_range", "settings", "api_defense", "served_acc",
           "served_l1", "setting", "clone_val_acc"]
# What a column added later meant for the rows written before it existed ("" for settings: not recorded); a
# function gives it from the old row. Before --api_defense every answer was the raw model's: its served
# accuracy is victim_acc and its distance to the raw probabilities 0. Rows before --setting had no setting name;
# before clone_val_acc the clone's validation accuracy was not recorded.
EARLIER_VALUES = {"query_range": "tanh", "settings": "", "api_defense": "none",
                  "served_acc": lambda row: row.get("victim_acc", ""), "served_l1": "0", "setting": "",
                  "clone_val_acc": ""}


class Row(dict):
    """A results row with the line of the CSV file it was read from (``line``), so that a message can name it."""

    line = None


def where(row, i):
    """A row's name in a line of output: 'line N' of the results CSV when it was read with its line numbers
    (report.load_results), else 'row I', its position ``i``."""
    return f"line {row.line}" if getattr(row, "line", None) else f"row {i}"


def row_name(rows, *idx):
    """How a message names rows ``idx`` of ``rows``: their lines in the results CSV when they were read with
    their line numbers (report.load_results), else their positions in ``rows``."""
    lines = [getattr(rows[i], "line", None) for i in idx]
    if None in lines:
        return f"results row{'s' if len(idx) > 1 else ''} " + " and ".join(map(str, idx))
    return f"results CSV line{'s' if len(idx) > 1 else ''} " + " and ".join(map(str, lines))


def earlier_value(column, row):
    """The value of ``column`` for a row written before the column existed."""
    value = EARLIER_VALUES.get(column, "")
    return value(row) if callable(value) else value


def append_row(path, row):
    """Append one row; a file written before a column existed gets the column first, with its earlier value.
    The header check, the column upgrade and the append happen under the CSV's lock."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with locked(path):
        _write(path, _rows(path) + [_own(row)])


def record_row(path, row):
    """The row of the run that saved ``row["attack_path"]``: appended, after removing any earlier row of that run
    (all under the CSV's lock). Returns the removed rows."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with locked(path):
        rows, key = _rows(path), row.get("attack_path")
        old = [r for r in rows if key and r.get("attack_path") == key]
        _write(path, [r for r in rows if not (key and r.get("attack_path") == key)] + [_own(row)])
        return old


def check(path):
    """Raise UserError now, before a run spends its budget, when the CSV ``path`` could not take the run's row at
    its end: columns this version does not write, or a damaged line (more or fewer fields than the header: a
    short line rewritten with the next row would have its missing cells filled in silently)."""
    if os.path.exists(path) and not os.path.isfile(path):
        raise UserError(f"--results {path} is not a file (a folder?): give the CSV's path, e.g. {path}/results.csv")
    if not os.path.isfile(path):
        return
    with locked(path):
        _check_header(path, read_header(path))  # columns this version does not write
        refuse_damaged(read_rows(path), path, "mend the file or give another --results file")


def _rows(path):
    """The file's rows under the current columns (those of a file written before a column existed get its earlier
    value); the caller holds the lock."""
    if not os.path.isfile(path) or os.path.getsize(path) == 0:
        return []
    header = read_header(path)
    _check_header(path, header)
    return [{**{c: earlier_value(c, r) for c in COLUMNS[len(header):]}, **r} for r in read_rows(path)]


def _own(row):
    """The row's values of the CSV's columns (other keys are not written)."""
    return {k: v for k, v in row.items() if k in COLUMNS}


@contextlib.contextmanager
def locked(path):
    """Hold the exclusive lock of the CSV ``path`` (on ``<path>.lock``, created if needed) while in the block.
    The lock is on a separate file because every change replaces the CSV itself, and beside the file a symbolic
    link points to, so that writers through the link and through its target take the same lock."""
    fd = os.open(os.path.realpath(path) + ".lock", os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError as e:  # e.g. a filesystem without locks
            raise UserError(f"cannot lock {path}.lock: {e.strerror}") from e
        yield
    finally:
        os.close(fd)  # drops the lock


def _check_header(path, header):
    unknown = [c for c in header if c not in COLUMNS]
    if unknown or header != COLUMNS[:len(header)]:
        raise UserError(f"{path} has columns this version does not write ({', '.join(unknown) or 'another order'}); "
                        f"give another --results file")


def _write(path, rows):
    """Replace the file (a symbolic link's target) with ``rows`` under the current columns: a temporary file with
    the file's permissions, written out (fsync), then a rename; the caller holds the lock. Whatever stops the
    write (a full disk, a signal) leaves the earlier file and no temporary one. A row with more fields than the
    header (a damaged line) is an error, not dropped."""
    def write(f):
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        w.writeheader()
        w.writerows(rows)
    try:
        write_atomic(os.path.realpath(path), write, binary=False, keep_mode=True)
    except ValueError as e:  # DictWriter: a field not in the header (a long line's extras under None)
        raise UserError(f"{path}: a row has more fields than its header; mend the file first ({e})") from e
    except OSError as e:
        raise UserError(f"cannot write {path}: {e.strerror or e}; the file is as it was") from e


def has_row(path, attack_path):
    """True when the CSV already holds the row of the run that saved ``attack_path``."""
    return os.path.isfile(path) and any(r.get("attack_path") == attack_path for r in read_rows(path))


def read_header(path):
    """The CSV's column names ([] for an empty file)."""
    with open(path, newline="") as f:
        return next(csv.reader(f), [])


def read_rows(path):
    """The CSV's rows, each a Row numbered by its line in the file."""
    rows = []
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        for r in reader:
            rows.append(Row(r))
            rows[-1].line = reader.line_num
    return rows


def refuse_damaged(rows, path, advice="mend or remove it"):
    """UserError naming the first line of ``rows`` (read_rows) with more or fewer fields than the header."""
    for r in rows:
        if None in r:  # csv.DictReader puts a long line's extra fields under None
            raise UserError(f"{path}: line {r.line} has {len(r[None])} more field(s) than the header (a damaged "
                            f"line): {advice}")
        if None in r.values():
            raise UserError(f"{path}: line {r.line} has fewer fields than the header (a damaged line): {advice}")


TABLE_COLUMNS = ("victim", "victim_acc", "student_model", "clone_acc", "clone_best_acc", "fidelity", "queries_used",
                 "query_budget", "seed")


def format_table(rows):
    """A small fixed-width table of attack rows (with TABLE_COLUMNS) for the console."""
    head = ["victim", "victim_acc", "student", "clone_acc", "best", "fidelity", "queries_used", "seed"]
    body = [[r["victim"], r["victim_acc"], r["student_model"], r["clone_acc"], r["clone_best_acc"], r["fidelity"],
             f"{r['queries_used']}/{r['query_budget']}", r["seed"]] for r in rows]
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body)]
    return "\n".join("  ".join(str(x).ljust(w) for x, w in zip(line, widths)) for line in [head, *body])


if __name__ == "__main__":
    from misleader.cli import Parser

    p = Parser(prog="python -m misleader.results", description="Print rows of a results CSV as a table.")
    p.add_argument("csv", nargs="?", default=os.path.join("results", "results.csv"),
                   help="the results CSV (one row per attack run)")
    p.add_argument("--skip", type=int, default=0,
                   help="skip the first N data rows (a rerun's row moves to the end: --since is the safer filter)")
    p.add_argument("--since", default=None, metavar="FILE",
                   help="only the rows whose clone checkpoint (attack_path, relative to the current folder) was "
                        "written after FILE was (put FILE on the checkpoints' filesystem)")
    a = p.parse_args()
    for path in [a.csv] + ([a.since] if a.since else []):
        if not os.path.isfile(path):
            p.exit(2, f"error: {path} is not a file\n")
    missing = [c for c in TABLE_COLUMNS if c not in read_header(a.csv)]
    if missing:
        p.exit(2, f"error: {a.csv} lacks column(s): {', '.join(missing)}\n")
    rows = read_rows(a.csv)[a.skip:]
    if a.since:
        t0 = os.path.getmtime(a.since)
        rows = [r for r in rows
                if os.path.isfile(r.get("attack_path", "")) and os.path.getmtime(r["attack_path"]) >= t0]
    print(format_table(rows))
