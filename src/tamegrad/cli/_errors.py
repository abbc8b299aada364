"""Errors, exit codes and signals shared by every command.

Exit codes: 0 success, 1 a run failed (e.g. NaN loss), 2 bad input (unknown names, bad values,
missing data, corrupt checkpoint), 130 interrupted (Ctrl-C or SIGTERM: an interrupted run or
grid is resumable, never recorded as failed).
"""

from __future__ import annotations

import sys
from typing import NoReturn

from tamegrad._signals import interrupt_on_signals

__all__ = ["EXIT_BAD_INPUT", "EXIT_FAILED", "EXIT_INTERRUPTED", "EXIT_OK", "CLIError",
           "RunFailed", "die", "input_errors", "interrupt_on_signals"]

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130


class CLIError(Exception):
    """Bad user input: printed as one line, exit code 2."""


class RunFailed(Exception):
    """A training run failed (diverged, crashed): printed as one line, exit code 1."""


def die(message: str, code: int) -> NoReturn:
    print(f"tamegrad: error: {message}", file=sys.stderr)
    raise SystemExit(code)


def input_errors() -> tuple[type[BaseException], ...]:
    """Exceptions of ``train()`` that mean bad input (exit 2), not a failed run."""
    from tamegrad.data import DatasetCorruptError, DatasetNotFoundError
    from tamegrad.train.checkpoint import CheckpointError

    return (FileNotFoundError, FileExistsError, DatasetNotFoundError, DatasetCorruptError,
            CheckpointError, ValueError)
