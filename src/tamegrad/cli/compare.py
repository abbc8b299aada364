"""``tamegrad compare``: optimizers x seeds on one base config, resumable, shared by workers.

:func:`run_compare` is also how ``demo`` and ``reproduce`` run their grids.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from tamegrad.train.config import RESUME_FREE_FIELDS, TrainConfig
from tamegrad.train.grid import GridEntry, cells, config_fields, entry_config, read_grid

from ._errors import CLIError
from ._logging import epochs_quiet
from ._parse import parse_spec
from ._run import progress_enabled
from ._validate import validate_configs
from ._workers import set_threads, spawn_workers, usable_cores
from .options import add_config_options, build_config, flag_of, given_fields, positive_int

log = logging.getLogger("tamegrad")

#: Fields every entry sets itself: not options of ``compare``.
_ENTRY_FIELDS = frozenset({"optimizer", "optimizer_kwargs", "seed"})


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "compare", parents=[common], help="compare optimizers over seeds",
        description=(
            "Run optimizers x seeds, print a markdown table, write results.md and curves.png. "
            "Specs are [label=]name[:key=value,...]; lr, TrainConfig fields (batch_size, "
            "grad_accum, weight_decay, ...) and optimizer keywords may be given. Ctrl-C (or "
            "SIGTERM) stops the grid; the same command or --resume continues it."
        ),
    )
    add_config_options(p, exclude=_ENTRY_FIELDS)
    g = p.add_argument_group("grid")
    g.add_argument("--optimizers", nargs="+", metavar="SPEC", help='e.g. "sgd:lr=0.1,momentum=0.9"')
    g.add_argument("--seeds", nargs="+", type=int, help="seeds (default 0 1 2)")
    g.add_argument("--out", help="grid folder (default runs/compare)")
    g.add_argument("--resume", metavar="DIR", help="continue the grid in DIR (from grid.json)")
    g.add_argument("--workers", type=positive_int, default=1,
                   help="number of worker processes sharing the grid (default 1)")
    g.add_argument("--worker", type=int,
                   help="act only as worker K of --workers (start one process per K yourself)")
    g.add_argument("--threads", type=positive_int, metavar="N",
                   help="torch threads per worker (default: recorded in the grid when resumed, "
                        "else the usable cores shared by the workers); results depend on it")
    g.add_argument("--retry-failed", action="store_true", help="rerun runs that failed")
    g.add_argument("--no-plot", action="store_true", help="do not write curves.png")
    g.add_argument("--no-results", action="store_true", help=argparse.SUPPRESS)


def _grid_threads(out_dir: Path, threads: int | None) -> int | None:
    """The thread count to use: the grid's recorded one (refusing a different ``threads``)."""
    try:
        recorded = read_grid(out_dir).threads
    except (FileNotFoundError, ValueError):
        return threads
    if recorded is not None and threads is not None and threads != recorded:
        raise CLIError(
            f"{out_dir} was run with --threads {recorded} per worker; --threads {threads} would "
            "change the results of the runs still to do (they depend on the thread count). "
            f"Leave --threads out, or use another --out folder"
        )
    return recorded if recorded is not None else threads


def run_compare(
    base: TrainConfig, entries: list[GridEntry], seeds: list[int], out_dir: Path, *,
    workers: int, worker: int | None, threads: int | None, retry_failed: bool, log_level: str,
) -> int:
    """Run the grid (in this process, or in ``workers`` spawned processes); return the number
    of cells that failed now. ``KeyboardInterrupt`` propagates after the workers stopped."""
    from tamegrad.train.compare import pending_cells, run_grid
    from tamegrad.train.grid import check_existing_runs, check_labels, write_grid

    if worker is not None and not 0 <= worker < workers:
        raise CLIError(f"--worker must be in [0, {workers}), got {worker}")
    threads = _grid_threads(out_dir, threads)
    try:
        if worker is None and workers > 1:
            check_labels(entries)
            configs = [entry_config(base, e, s) for e, s in cells(entries, seeds)]
            check_existing_runs(out_dir, cells(entries, seeds), configs)
            todo = pending_cells(out_dir, entries, seeds, configs, retry_failed)
            n = min(workers, todo)  # no idle processes (none at all when everything is done)
            per = threads or max(1, usable_cores() // max(n, 1))
            write_grid(out_dir, base, entries, seeds, threads=per)
            if n == 0:
                return 0
            codes = spawn_workers(out_dir, n, per, log_level=log_level,
                                  quiet_epochs=epochs_quiet(), retry_failed=retry_failed)
            if any(c == 130 for c in codes):
                raise KeyboardInterrupt("a worker was interrupted")
            return sum(1 for c in codes if c != 0)
        per = set_threads(threads)
        records = run_grid(base, entries, seeds, out_dir, worker=worker or 0,
                           num_workers=workers, progress=progress_enabled() and workers == 1,
                           retry_failed=retry_failed, threads=per)
        return sum(1 for r in records if r["action"] == "failed")
    except ValueError as exc:
        raise CLIError(str(exc)) from exc


def _kept_failed(out_dir: Path) -> int:
    from tamegrad.train.results import summarize

    return sum(m["status"] == "failed" for r in summarize(out_dir) for m in r["missing"])


def write_outputs(out_dir: Path, *, plot: bool, failed: int, retry_failed: bool) -> int:
    """Print and write the results table (and the figure); return the exit code."""
    from tamegrad.train.results import write_results

    print(write_results(out_dir))
    if plot:
        from tamegrad.train.plot import plot_runs

        try:
            png = plot_runs(out_dir, out_dir / "curves.png")
            print(f"wrote {out_dir / 'results.md'} and {png}")
        except FileNotFoundError as exc:
            log.warning("no figure: %s", exc)
    kept = _kept_failed(out_dir) - failed
    if kept > 0 and not retry_failed:
        print(f"{kept} run(s) failed in an earlier session and were kept as failed; "
              "rerun with --retry-failed to retry them")
    if failed:
        log.error("%d run(s) failed; see results.md", failed)
        return 1
    return 0


def _resume_args(args: argparse.Namespace) -> tuple[TrainConfig, list[GridEntry], list[int]]:
    out_dir = Path(args.resume)
    for flag, value in (("--out", args.out), ("--optimizers", args.optimizers),
                        ("--seeds", args.seeds)):
        if value:
            raise CLIError(f"{flag} cannot be used with --resume: the grid is in {out_dir}")
    try:
        grid = read_grid(out_dir)
    except (FileNotFoundError, ValueError) as exc:
        raise CLIError(str(exc)) from exc
    given = given_fields(args)
    fixed = sorted(set(given) - RESUME_FREE_FIELDS)
    if fixed:
        raise CLIError(f"{', '.join(flag_of(f) for f in fixed)} cannot change a grid that is "
                       f"resumed (only {', '.join(sorted(flag_of(f) for f in RESUME_FREE_FIELDS))}"
                       " may); use another --out folder for a new grid")
    return build_config(given, grid.base), grid.entries, grid.seeds


def run(args: argparse.Namespace) -> int:
    """``tamegrad compare``."""
    if args.resume:
        base, entries, seeds = _resume_args(args)
        out_dir = Path(args.resume)
    else:
        if not args.optimizers:
            raise CLIError("--optimizers SPEC [SPEC ...] is required (or --resume DIR)")
        fields = config_fields()
        entries = [parse_spec(s, fields) for s in args.optimizers]
        seeds = list(args.seeds) if args.seeds else [0, 1, 2]
        base = build_config({**given_fields(args), "optimizer": entries[0].optimizer,
                             "seed": seeds[0]})
        out_dir = Path(args.out or "runs/compare")
    if args.worker is None:  # workers were validated by the process that started them
        try:
            configs = [entry_config(base, e, seeds[0]) for e in entries]
        except ValueError as exc:
            raise CLIError(str(exc)) from exc
        validate_configs(configs)
    failed = run_compare(
        base, entries, seeds, out_dir, workers=args.workers, worker=args.worker,
        threads=args.threads, retry_failed=args.retry_failed, log_level=args.log_level,
    )
    if args.no_results:
        return 1 if failed else 0
    return write_outputs(out_dir, plot=not args.no_plot, failed=failed,
                         retry_failed=args.retry_failed)
