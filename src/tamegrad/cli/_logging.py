"""Logging of the commands: one stderr handler; ``--quiet-epochs`` keeps only run starts/ends."""

from __future__ import annotations

import logging
import sys


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level, logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
        force=True,
    )


def quiet_epochs(level: str) -> None:
    """Silence the trainer's per-epoch INFO lines but keep the grid's run start/end lines."""
    if logging.getLevelName(level) <= logging.INFO:
        logging.getLogger("tamegrad.train").setLevel(logging.WARNING)
        logging.getLogger("tamegrad.train.compare").setLevel(logging.getLevelName(level))


def epochs_quiet() -> bool:
    """Whether :func:`quiet_epochs` is in effect (passed on to worker processes)."""
    return logging.getLogger("tamegrad.train").level == logging.WARNING
