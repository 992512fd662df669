"""Errors a user can fix. Entry points turn them into one line on stderr and exit code 2."""


class UserError(Exception):
    """A bad flag, a missing file, a mismatched checkpoint: something the user can correct."""


class NonFiniteLoss(RuntimeError):
    """Training produced NaN or inf; the run stops with exit code 3."""
