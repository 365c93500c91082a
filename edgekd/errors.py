"""Errors users see. The CLI prints the message and exits with `exit_code`; nothing else is caught."""


class EdgekdError(Exception):
    """A problem the user can fix. The message names what, where, and the fix."""

    exit_code = 2


class InputError(EdgekdError):
    """Bad input: a missing or malformed file, an unknown name, a wrong shape."""


class TrainingError(EdgekdError):
    """Training cannot go on (for example a NaN loss)."""

    exit_code = 1


class Stopped(TrainingError):
    """Training was stopped from outside (a rank was killed): like an interrupt, its resume states are
    kept and the same command continues from the last finished epoch."""


class CheckFailed(EdgekdError):
    """A measured check failed (teacher floor, parity, gate). Exit 1: the input was fine, the model is not."""

    exit_code = 1
