"""Command-line interface: ``tamegrad {train,compare,plot,list,demo,reproduce}``.

Examples::

    tamegrad train --dataset digits --model mlp --optimizer trsgd --lr 0.1 \\
        --opt momentum=0.9 --opt lambda_w=0.01 --batch-size 8 --epochs 5 --out runs/one
    tamegrad train --resume runs/one
    tamegrad compare --dataset digits --model mlp --batch-size 8 --epochs 10 \\
        --optimizers "sgd:lr=0.1,momentum=0.9" "TRSGD=trsgd:lr=0.1,lambda_w=0.01" \\
        --seeds 0 1 2 --out runs/cmp
    tamegrad compare --resume runs/cmp
    tamegrad plot runs/cmp --out curves.png
    tamegrad list optimizers
    tamegrad demo

One module per command (:mod:`.train`, :mod:`.compare`, :mod:`.plot`, :mod:`.list`,
:mod:`.demo`, :mod:`.reproduce`); the ``train``/``compare`` options are derived from
``TrainConfig``'s fields (:mod:`.options`). Exit codes (:mod:`._errors`): 0 success, 1 a run
failed (e.g. NaN loss), 2 bad input (unknown names, bad values, missing data, a model that does
not fit the data, corrupt checkpoint), 130 interrupted (Ctrl-C or SIGTERM; resumable).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from . import compare, demo, plot, reproduce, train
from . import list as list_cmd
from ._errors import EXIT_INTERRUPTED, CLIError, RunFailed, die, interrupt_on_signals
from ._logging import quiet_epochs, setup_logging
from ._parse import parse_kv, parse_spec, parse_value
from ._workers import die_with_parent

__all__ = ["CLIError", "RunFailed", "build_parser", "main", "parse_kv", "parse_spec",
           "parse_value"]

_COMMANDS = {"train": train, "compare": compare, "plot": plot, "list": list_cmd, "demo": demo,
             "reproduce": reproduce}


def _logging_args(p: argparse.ArgumentParser, default: Any) -> None:
    # Accepted before and after the sub-command; the sub-command's copy only overrides when
    # given (its default is SUPPRESS).
    p.add_argument("--log-level", default=default, type=str.upper,
                   choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                   help="logging level (stderr); default INFO")
    p.add_argument("--quiet-epochs", action="store_true",
                   default=False if default is not argparse.SUPPRESS else default,
                   help="do not log every epoch of every run (only run starts/ends)")


def build_parser() -> argparse.ArgumentParser:
    """The ``tamegrad`` argument parser."""
    common = argparse.ArgumentParser(add_help=False)
    _logging_args(common, argparse.SUPPRESS)
    parser = argparse.ArgumentParser(
        prog="tamegrad",
        description="Optimizers for small-batch training: train, compare, plot.",
    )
    _logging_args(parser, "INFO")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for module in _COMMANDS.values():
        module.add_parser(sub, common)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``tamegrad`` command; returns the exit code.

    SIGTERM is handled like Ctrl-C: the running run or grid stops cleanly, is recorded as
    interrupted (resumable), and the command exits 130.
    """
    args = build_parser().parse_args(argv)
    setup_logging(args.log_level)
    if args.quiet_epochs or args.command == "demo":
        quiet_epochs(args.log_level)
    try:
        with interrupt_on_signals(sigint=bool(getattr(args, "worker", None) is not None)):
            die_with_parent()
            return int(_COMMANDS[args.command].run(args))
    except CLIError as exc:
        die(str(exc), 2)
    except RunFailed as exc:
        die(str(exc), 1)
    except KeyboardInterrupt:
        print("tamegrad: interrupted (rerun the same command, or use --resume, to continue)",
              file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
