"""Progress output a person can read in a terminal and in a log file.

``--progress auto`` (the default): a tqdm bar when the stream is a terminal; otherwise a plain line at most
every 30 seconds (and one at the end), so ``bash test.sh > run.log`` gives a file without carriage returns.
``--progress 1`` forces the bar, ``--progress 0`` shows nothing.
"""

import sys
import time

from tqdm import tqdm

PLAIN_EVERY_S = 30.0


class PlainProgress:
    """The part of tqdm's interface the loops use, printing whole lines only."""

    def __init__(self, total, initial=0, desc="", unit="it", file=None, every=PLAIN_EVERY_S):
        self.total, self.n, self.desc, self.unit = total, initial, desc, unit
        self.file = file or sys.stderr
        self.every, self.t0 = every, time.time()
        self.last, self.start_n = self.t0, initial

    def _line(self):
        secs = time.time() - self.t0
        rate = (self.n - self.start_n) / secs if secs > 0 else 0.0
        pct = f" ({100 * self.n / self.total:.0f}%)" if self.total else ""
        left = ""
        if self.total and rate > 0 and self.n < self.total:
            s = (self.total - self.n) / rate
            left = f", about {s / 3600:.1f} h left" if s >= 5400 else \
                f", about {round(s / 60)} min left" if s >= 90 else f", about {max(1, round(s))} s left"
        return f"{self.desc}: {self.n}/{self.total} {self.unit}{pct}, {secs:.0f} s, {rate:.1f} {self.unit}/s{left}"

    def update(self, n=1):
        self.n += n
        now = time.time()
        if now - self.last >= self.every:
            self.last = now
            print(self._line(), file=self.file, flush=True)

    def write(self, s):
        print(s, file=self.file, flush=True)

    def close(self):
        if self.n > self.start_n and time.time() - self.t0 >= self.every:
            print(self._line(), file=self.file, flush=True)


def progress_bar(mode, total, initial=0, desc="", unit="it", file=None, leave=True, unit_scale=False):
    """A tqdm bar, a PlainProgress, or a disabled tqdm, by ``mode`` (auto, 1, 0) and whether ``file`` is a tty."""
    stream = file or sys.stderr
    mode = str(mode)
    if mode == "0":
        return tqdm(total=total, disable=True)
    if mode == "1" or (mode == "auto" and stream.isatty()):
        return tqdm(total=total, initial=initial, desc=desc, unit=unit, file=stream, leave=leave, unit_scale=unit_scale)
    return PlainProgress(total, initial, desc, unit, stream)
