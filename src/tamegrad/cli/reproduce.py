"""``tamegrad reproduce SUITE --profile P``: a named suite (:mod:`tamegrad.experiments`)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from tamegrad.train.config import TrainConfig
from tamegrad.train.grid import GridEntry, entry_config

from ._errors import CLIError
from ._validate import validate_configs
from .compare import run_compare
from .options import positive_int

log = logging.getLogger("tamegrad")


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "reproduce", parents=[common], help="run a named experiment suite (resumable)",
        description="Run or continue a named, versioned experiment suite; finished runs are "
                    "skipped, so a long grid can be completed over several sittings.",
    )
    p.add_argument("suite", nargs="?", help="suite name, e.g. tr-cifar10 (see --list)")
    p.add_argument("--profile", default="smoke", help="smoke | cpu | full | full-short")
    p.add_argument("--out", help="results folder (default results/<suite>-<profile>)")
    p.add_argument("--seeds", nargs="+", type=int, help="override the profile's seeds")
    p.add_argument("--only", nargs="+", metavar="LABEL",
                   help="only entries whose label starts with one of these")
    p.add_argument("--workers", type=positive_int, default=1, help="worker processes (default 1)")
    p.add_argument("--worker", type=int, help="act only as worker K of --workers")
    p.add_argument("--threads", type=positive_int, default=None,
                   help="torch threads per worker (default: recorded in the folder, else 1; "
                        "results depend on it)")
    p.add_argument("--data-dir", help="where the data set lives (default $TAMEGRAD_DATA)")
    p.add_argument("--dataset", help="e.g. cifar10 for the official files instead of the JPEGs")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"])
    p.add_argument("--extend-edges", action="store_true",
                   help="learning-rate sweeps: after the grid, add a point beyond every sweep "
                        "whose best lr is at its edge and run it, until each is bracketed "
                        "(at most 2 points per side)")
    p.add_argument("--best-of", metavar="SWEEP_OUT",
                   help="seed stage of a learning-rate sweep: run every family's best lr of "
                        "that finished sweep folder (its seed-0 run is copied) in --out, on "
                        "--seeds; sweeps not complete yet are left out (run it again later)")
    p.add_argument("--list", action="store_true", help="list suites and profiles, run nothing")


def _validate(base: TrainConfig, entries: list[GridEntry]) -> None:
    try:
        configs = [entry_config(base, e, base.seed) for e in entries]
    except ValueError as exc:
        raise CLIError(str(exc)) from exc
    validate_configs(configs)


def _recorded_threads(out_dir: Path) -> int | None:
    from tamegrad.train.grid import read_grid

    try:
        return read_grid(out_dir).threads
    except (FileNotFoundError, ValueError):
        return None


def run(args: argparse.Namespace) -> int:
    """``tamegrad reproduce``."""
    from tamegrad.experiments import (
        SUITES,
        available_suites,
        prepare_suite,
        run_suite,
        seed_stage,
    )

    if args.list:
        for suite in SUITES.values():
            print(f"{suite.name} (v{suite.version}): {suite.description}")
            print(f"  profiles: {', '.join(suite.profiles)}")
        return 0
    if not args.suite:
        raise CLIError(f"name a suite: {', '.join(available_suites())} (or --list)")
    overrides = {k: getattr(args, k) for k in ("data_dir", "dataset", "device")
                 if getattr(args, k) is not None}
    out_dir = Path(args.out or f"results/{args.suite}-{args.profile}")
    if args.extend_edges and args.worker is not None:
        raise CLIError("--extend-edges is for the process that runs the whole grid, not --worker")
    # Default: the thread count recorded in the folder, else 1 (an explicit different value is
    # refused by run_compare, as it would change the results of the runs still to do).
    threads = args.threads if args.threads is not None else (_recorded_threads(out_dir) or 1)
    only = args.only
    if args.best_of:
        if args.extend_edges or args.worker is not None:
            raise CLIError("--best-of starts a seed stage: without --extend-edges or --worker")
        try:
            labels = seed_stage(args.best_of, out_dir, require_complete=False,
                                suite=args.suite, profile=args.profile)
        except ValueError as exc:
            raise CLIError(str(exc)) from exc
        only = [lab for lab in labels if not args.only or any(lab.startswith(o)
                                                              for o in args.only)]
        print(f"best lrs of {args.best_of}: {', '.join(only)}", flush=True)
        if not only:
            raise CLIError(f"--only {args.only} matches none of the best lrs: {labels}")
    failed = 0

    def runner(base: TrainConfig, entries: list[GridEntry], seeds: list[int], out: Path) -> int:
        nonlocal failed
        n = run_compare(base, entries, seeds, out, workers=args.workers, worker=args.worker,
                        threads=threads, retry_failed=False, log_level=args.log_level)
        failed += n
        return n

    try:
        if args.worker is not None:  # one worker of a grid started elsewhere: no outputs
            base, entries, seeds = prepare_suite(args.suite, args.profile, out_dir,
                                                 seeds=args.seeds, only=only,
                                                 overrides=overrides)
            return 1 if runner(base, entries, seeds, out_dir) else 0
        table = run_suite(
            args.suite, args.profile, out_dir, seeds=args.seeds, only=only,
            overrides=overrides, extend_edges=args.extend_edges, runner=runner,
            validate=_validate, report=lambda line: print(line, flush=True),
        )
    except ValueError as exc:
        raise CLIError(str(exc)) from exc
    print(table)
    print(f"wrote {out_dir / 'results.md'} and its figures", flush=True)
    if failed:
        log.error("%d run(s) failed; see %s", failed, out_dir / "results.md")
        return 1
    return 0

