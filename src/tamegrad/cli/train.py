"""``tamegrad train``: one run; ``--resume RUN_DIR`` continues it."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from tamegrad.train.compare import mark_interrupted
from tamegrad.train.grid import config_from_dict
from tamegrad.train.run_folder import RunFolder

from ._errors import CLIError, RunFailed
from ._run import call_train, fmt_acc
from ._validate import config_diffs, validate_configs
from ._workers import set_threads
from .options import add_config_options, build_config, flag_of, given_fields, positive_int


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("train", parents=[common], help="train one model",
                       description="Train one model; --resume RUN_DIR continues a run (options "
                                   "that would change what it computes are refused).")
    add_config_options(p)
    g = p.add_argument_group("run")
    g.add_argument("--out", help="run folder (default runs/<dataset>-<model>-<optimizer>-s<seed>)")
    g.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR")
    g.add_argument("--threads", type=positive_int, metavar="N", help="torch CPU threads")


def _resumed_config(run_dir: Path, args: argparse.Namespace) -> Any:
    """The stored config with the options given now; refuses those that change the run."""
    folder = RunFolder(run_dir)
    data = folder.read_config()
    if data is None:
        raise CLIError(f"{folder.config_path} not found or unreadable: {run_dir} is not a run "
                       "folder")
    try:
        stored = config_from_dict(data)
    except (ValueError, TypeError, AttributeError) as exc:
        raise CLIError(f"{folder.config_path} is not a valid run config: {exc}") from exc
    given = given_fields(args)
    if "optimizer_kwargs" in given:  # --opt changes single keywords of the stored ones
        given["optimizer_kwargs"] = {**stored.optimizer_kwargs, **given["optimizer_kwargs"]}
    config = build_config(given, stored)
    diffs = config_diffs(config, stored)
    if diffs:
        changes = "; ".join(f"{flag_of(name)} ({name}: {old!r} -> {new!r})"
                            for name, old, new in diffs)
        raise CLIError(
            f"--resume cannot change what the run computes: {changes}. Resume without those "
            "options, or start a new run with --out (e.g. to continue at a lower learning "
            "rate, train a new run)"
        )
    return config


def _check_checkpoint(run_dir: Path) -> None:
    """Fail fast when the checkpoint is unreadable (the file is only read, never modified)."""
    path = RunFolder(run_dir).checkpoint_path
    if not path.exists():
        return
    from tamegrad.train.checkpoint import CheckpointError, load_checkpoint

    try:
        load_checkpoint(path)
    except CheckpointError as exc:
        raise CLIError(
            f"{exc}; the file was left untouched (move it away to restart the run)"
        ) from exc


def run(args: argparse.Namespace) -> int:
    """``tamegrad train``."""
    if args.resume:
        if args.out:
            raise CLIError("--out cannot be used with --resume: the run continues in its own "
                           f"folder {args.resume}")
        run_dir = Path(args.resume)
        config = _resumed_config(run_dir, args)
        _check_checkpoint(run_dir)
        validate_configs([config], fit=False)
    else:
        config = build_config(given_fields(args))
        validate_configs([config])
        run_dir = Path(args.out or
                       f"runs/{config.dataset}-{config.model}-{config.optimizer}-s{config.seed}")
    set_threads(args.threads)
    try:
        summary = call_train(config, run_dir, resume=bool(args.resume))
    except KeyboardInterrupt:
        mark_interrupted(run_dir)
        print(f"{run_dir}: interrupted; continue it with: tamegrad train --resume {run_dir}",
              flush=True)
        raise
    status = summary.get("status", "completed")
    loss, wall = summary.get("final_train_loss"), summary.get("wall_time")
    print(
        f"{run_dir}: {status}; final test acc {fmt_acc(summary.get('final_test_acc'))}, "
        f"best {fmt_acc(summary.get('best_test_acc'))}, final train loss "
        f"{f'{loss:.4f}' if isinstance(loss, (int, float)) else 'n/a'}, "
        f"{f'{wall:.1f}' if isinstance(wall, (int, float)) else '?'} s"
    )
    if status == "failed":
        raise RunFailed(f"training failed: {summary.get('error', 'unknown error')}")
    return 0
