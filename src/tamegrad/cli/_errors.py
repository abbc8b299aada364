"""Errors, exit codes and signals shared by every command.

Exit codes: 0 success, 1 a run failed (e.g. NaN loss), 2 bad input (unknown names, bad values,
missing data, corrupt checkpoint), 130 interrupted (Ctrl-C or SIGTERM: an interrupted run or
grid is resumable, never recorded as failed).
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any, NoReturn

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


def _interrupt_once() -> Callable[[int, FrameType | None], Any]:
    """A handler raising ``KeyboardInterrupt`` on the first signal and ignoring later ones, so
    the cleanup it starts (summary "interrupted", claims released) is not cut short."""
    fired = False

    def handler(signum: int, frame: FrameType | None) -> None:
        nonlocal fired
        if fired:
            return
        fired = True
        raise KeyboardInterrupt(signal.Signals(signum).name)

    return handler


@contextmanager
def interrupt_on_signals(*, sigint: bool = False) -> Iterator[None]:
    """Turn SIGTERM (and SIGINT when ``sigint``) into one ``KeyboardInterrupt`` in this block.

    Only in the main thread (elsewhere signals cannot be handled); the previous handlers are
    restored on exit.
    """
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    handler = _interrupt_once()
    signums = [signal.SIGTERM] + ([signal.SIGINT] if sigint else [])
    previous = {s: signal.signal(s, handler) for s in signums}
    try:
        yield
    finally:
        for s, old in previous.items():
            signal.signal(s, old)
