"""SIGTERM (and optionally SIGINT) as one ``KeyboardInterrupt``: how every entry point of the
package turns "stop" into a clean, resumable interruption (the trainer marks the run
"interrupted"; a grid releases its claims).
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

__all__ = ["interrupt_on_signals"]


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
