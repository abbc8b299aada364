"""``python -m tamegrad.train --config-json FILE --run-dir DIR [--resume]``.

A minimal entry point for scripts, subprocess tests and ``torchrun``; the user-facing CLI is
``tamegrad`` (``tamegrad.cli``). Exit status: 0 when the run completed, 1 on any error (the
message goes to stderr), 2 for bad arguments, 130 when interrupted (Ctrl-C or SIGTERM: the run
folder says "interrupted" and ``--resume`` continues it).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import torch

from .._signals import interrupt_on_signals
from .config import TrainConfig
from .trainer import train


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tamegrad.train", description=__doc__)
    parser.add_argument("--config-json", required=True, type=Path,
                        help="JSON file with TrainConfig fields (missing ones take defaults)")
    parser.add_argument("--run-dir", required=True, type=Path, help="run folder to write")
    parser.add_argument("--resume", action="store_true",
                        help="continue from run-dir/checkpoints/last.pt if it exists")
    bar = parser.add_mutually_exclusive_group()
    bar.add_argument("--progress", dest="progress", action="store_true", default=None,
                     help="always show the progress bar")
    bar.add_argument("--no-progress", dest="progress", action="store_false",
                     help="never show the progress bar (default: only on a terminal)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch.set_num_threads (intra-op CPU threads)")
    parser.add_argument("--deterministic", action="store_true",
                        help="torch.use_deterministic_algorithms(True)")
    parser.add_argument("--log-level", default="INFO", help="logging level (default INFO)")
    args = parser.parse_args(argv)

    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.deterministic:
        torch.use_deterministic_algorithms(True)
    try:
        config = TrainConfig.from_dict(json.loads(args.config_json.read_text(encoding="utf-8")))
        with interrupt_on_signals():  # SIGTERM: the run is marked "interrupted", resumable
            summary = train(config, args.run_dir, resume=args.resume, progress=args.progress)
    except KeyboardInterrupt:
        print("interrupted; continue with --resume", file=sys.stderr)
        return 130
    except Exception as exc:
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
