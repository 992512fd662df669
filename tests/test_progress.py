"""Progress output: bars on a terminal, plain lines in a log file."""

import io

from tqdm import tqdm

from misleader.progress import PlainProgress, progress_bar


class _Tty(io.StringIO):
    def isatty(self):
        return True


def test_auto_mode_prints_plain_lines_to_a_file_and_bars_to_a_terminal():
    out = io.StringIO()
    bar = progress_bar("auto", 100, desc="queries", unit="q", file=out)
    assert isinstance(bar, PlainProgress)
    bar.every = 0.0  # print on every update
    bar.update(40)
    bar.update(60)
    bar.close()
    text = out.getvalue()
    assert "\r" not in text and text.splitlines()[0].startswith("queries: 40/100 q (40%)")
    assert text.splitlines()[1].startswith("queries: 100/100 q (100%)")
    assert isinstance(progress_bar("auto", 10, file=_Tty()), tqdm)
    assert isinstance(progress_bar("1", 10, file=io.StringIO()), tqdm)  # forced bars
    quiet = io.StringIO()
    bar = progress_bar("0", 10, file=quiet)
    bar.update(10)
    bar.close()
    assert quiet.getvalue() == ""


def test_plain_lines_are_rate_limited():
    out = io.StringIO()
    bar = PlainProgress(1000, desc="x", file=out, every=3600)
    for _ in range(100):
        bar.update(10)
    bar.close()
    assert out.getvalue() == ""  # nothing within the interval, and no closing line for a short run


def test_plain_lines_give_the_time_left(monkeypatch):
    """A log line said how far and how fast, and left the reader to work out when the run ends."""
    import misleader.progress as P

    clock = [1000.0]
    monkeypatch.setattr(P.time, "time", lambda: clock[0])
    out = io.StringIO()
    bar = PlainProgress(1000, initial=200, desc="queries", unit="q", file=out, every=0.0)
    clock[0] += 40.0
    bar.update(200)  # 200 q in 40 s: 5 q/s, 600 left: 120 s
    clock[0] += 80.0
    bar.update(600)  # done: no time left to give
    lines = out.getvalue().splitlines()
    assert lines[0] == "queries: 400/1000 q (40%), 40 s, 5.0 q/s, about 2 min left"
    assert lines[1] == "queries: 1000/1000 q (100%), 120 s, 6.7 q/s"
    # under a minute and a half left: seconds; hours from an hour and a half
    bar = PlainProgress(1000, desc="q", unit="q", file=out, every=0.0)
    clock[0] += 10.0
    bar.update(900)  # 90 q/s, 100 left
    assert out.getvalue().splitlines()[-1].endswith("90.0 q/s, about 1 s left")
    slow = PlainProgress(10 ** 6, desc="q", unit="q", file=out, every=0.0)
    clock[0] += 100.0
    slow.update(100)  # 1 q/s: 999,900 s left
    assert out.getvalue().splitlines()[-1].endswith("about 277.8 h left")

