"""Slim finished attack checkpoints before committing them: keep the clone and its record, drop the generator and
any extra clone (DisGUIDE's second), and name what was dropped under the key left_out.

A run's checkpoint (DFME/cache/<run>.pt) holds the clone plus every model of the attack (4.7-5 MB at ngf 32); the
clone and its metrics, flags and seed (about 0.25 MB for LeNet-5) are all that `bash report.sh --verify 1` and the
tests read. Every file is read and checked first: a missing file, a file that is not an attack's clone, a corrupt
one or a folder that cannot be written ends with one line and exit code 2, and then no file is changed. Each file
is replaced atomically; a file already slim is left as it is, and a file named twice is slimmed once.
  python DFME/slim.py DFME/cache/fashionmnist-teacher-pub-lenet5-seed0-v2-g32-late.pt
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from misleader import checkpoint  # noqa: E402
from misleader.cli import Parser, main_wrapper  # noqa: E402


def parse(argv):
    p = Parser(description=__doc__)
    p.add_argument("files", nargs="+", metavar="FILE", help="attack checkpoints (the attack_path of a results row)")
    return p.parse_args(argv)


def main(argv):
    args = parse(argv)
    files, seen = [], set()
    for f in args.files:  # each file once, however it is named
        if os.path.realpath(f) not in seen:
            seen.add(os.path.realpath(f))
            files.append(f)
    slimmed = [(path, *checkpoint.slim_attack(checkpoint.load(path), path)) for path in files]
    for path, _, dropped in slimmed:
        if dropped:
            checkpoint.check_writable(path)
    for path, ck, dropped in slimmed:
        if not dropped:
            print(f"{path}: already slim")
            continue
        before = os.path.getsize(path)
        checkpoint.save(path, ck)
        print(f"{path}: dropped {', '.join(dropped)} ({before / 1e6:.2f} MB -> {os.path.getsize(path) / 1e6:.2f} MB)")


if __name__ == "__main__":
    main_wrapper(main)
