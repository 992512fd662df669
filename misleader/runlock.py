"""One owner per run: a training process holds an exclusive lock on ``<out>.lock`` for its whole life.

A second process started on the same output (a job runner retrying, a run list launched twice) cannot take
the lock and stops with one line, "already running: <out>, pid N", before it writes anything. The lock is
an ``fcntl.flock`` on an open file: the kernel drops it when the holder exits, however it exits (SIGKILL,
out of memory), so a killed run's lock never blocks its ``--resume 1``. On a shared filesystem this needs
locks that reach across machines (NFS's do). The lock file stays beside the output and holds the last
owner's pid; it is never removed, since removing a lock file that another process has just opened would let
two processes own the run.
"""

import errno
import fcntl
import os
import time

from misleader.errors import UserError

_held = {}  # absolute output path -> RunLock, for the life of this process


def lock_path(out):
    return out + ".lock"


class RunLock:
    def __init__(self, out, fd):
        self.out, self.fd = out, fd

    def release(self):
        """Give the run up before the process ends (the kernel does it at exit anyway)."""
        if self.fd is not None:
            os.close(self.fd)  # closing the only descriptor of the open file drops the flock
            self.fd = None
            _held.pop(os.path.abspath(self.out), None)


def own(out):
    """Take the run whose output is ``out`` for this process, or raise UserError naming the process that has it.

    Call it before creating the run's state file or log folder. Calling it again in the same process returns
    the lock it already holds."""
    key = os.path.abspath(out)
    if key in _held:
        return _held[key]
    path = lock_path(out)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)  # not inherited by child processes (PEP 446)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        held = e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES)
        holder = _holder(fd) if held else None
        os.close(fd)
        if not held:  # e.g. a filesystem without locks
            raise UserError(f"cannot lock {path}: {e.strerror}") from e
        raise UserError(f"already running: {out}, pid {holder}") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    _held[key] = lock = RunLock(out, fd)
    return lock


def _holder(fd):
    """The pid the owner wrote into the lock file; it may be a moment between taking the lock and writing it."""
    for _ in range(50):
        text = os.pread(fd, 32, 0).decode(errors="replace").strip()
        if text:
            return text
        time.sleep(0.02)
    return "unknown"
