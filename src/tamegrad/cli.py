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

Exit codes: 0 success, 1 a run failed (e.g. NaN loss), 2 bad input (unknown names, bad values,
missing data, corrupt checkpoint), 130 interrupted.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

if TYPE_CHECKING:
    from tamegrad.train.compare import GridEntry
    from tamegrad.train.config import TrainConfig

log = logging.getLogger("tamegrad")


class CLIError(Exception):
    """Bad user input: printed as one line, exit code 2."""


class RunFailed(Exception):
    """A training run failed (diverged, crashed): printed as one line, exit code 1."""


# ----------------------------------------------------------------------------- parsing helpers


def parse_value(text: str) -> Any:
    """A ``--opt`` value: a Python literal (int, float, bool, tuple, None...) or else the string.

    ``true``/``false``/``none``/``null`` are accepted in any case.
    """
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null"):
        return None
    try:
        return ast.literal_eval(text.strip())
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return text


def parse_kv(text: str) -> tuple[str, Any]:
    """``"key=value"`` -> ``(key, parse_value(value))``."""
    key, sep, value = text.partition("=")
    key = key.strip().replace("-", "_")
    if not sep or not key or not key.isidentifier():
        raise CLIError(f"expected key=value, got {text!r}")
    return key, parse_value(value)


def _split_top_level(text: str, sep: str = ",") -> list[str]:
    """Split on ``sep`` outside brackets and quotes (so ``betas=(0.9,0.99)`` stays whole)."""
    parts: list[str] = []
    depth = 0
    quote: str | None = None
    cur: list[str] = []
    for ch in text:
        if quote:
            if ch == quote:
                quote = None
        elif ch in "\"'":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == sep and depth == 0:
            parts.append("".join(cur))
            cur = []
            continue
        cur.append(ch)
    parts.append("".join(cur))
    return [p.strip() for p in parts if p.strip()]


def parse_spec(spec: str, config_fields: Sequence[str] = ()) -> GridEntry:
    """Parse an optimizer spec ``[label=]name[:key=value,key=value,...]`` into a ``GridEntry``.

    ``lr`` becomes the entry's learning rate, keys that are ``TrainConfig`` fields (given in
    ``config_fields``: ``batch_size``, ``grad_accum``, ``weight_decay``, ...) become config
    overrides, everything else an optimizer keyword. Without ``label=`` the label is the spec.
    """
    from tamegrad.train.compare import GridEntry

    text = spec.strip()
    if not text:
        raise CLIError("empty optimizer spec")
    label = text
    head = text.partition(":")[0]
    if "=" in head:  # "label=name[:...]"; a bare "name:k=v" has its first '=' after the colon
        label, _, text = text.partition("=")
        label = label.strip()
        text = text.strip()
        if not label:
            raise CLIError(f"empty label in optimizer spec {spec!r}")
    name, _, rest = text.partition(":")
    name = name.strip().lower()
    if not name:
        raise CLIError(f"no optimizer name in spec {spec!r}")
    lr: float | None = None
    opt_kwargs: dict[str, Any] = {}
    overrides: dict[str, Any] = {}
    fields = set(config_fields)
    for item in _split_top_level(rest):
        key, value = parse_kv(item)
        if key == "lr":
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise CLIError(f"lr must be a number in spec {spec!r}, got {value!r}")
            lr = float(value)
        elif key in fields:
            overrides[key] = value
        else:
            opt_kwargs[key] = value
    return GridEntry(label=label, optimizer=name, lr=lr, optimizer_kwargs=opt_kwargs,
                     overrides=overrides)


# ----------------------------------------------------------------------------- validation


def _check_name(kind: str, name: str, valid: Sequence[str]) -> None:
    if name not in valid:
        raise CLIError(f"unknown {kind} {name!r}; valid {kind}s: {', '.join(valid)}")


def _valid_datasets() -> list[str]:
    from tamegrad.data import available_datasets

    return list(available_datasets())


def _valid_models() -> list[str]:
    from tamegrad.models import available_models

    return list(available_models())


def _valid_optimizers() -> list[str]:
    import tamegrad.optim as optim

    return list(optim.list_optimizers())


def _validate(config: TrainConfig, entries: Sequence[GridEntry] = ()) -> None:
    """Check data set, model and optimizer names, and each optimizer's hyper-parameters.

    Every optimizer is built once on a dummy parameter, so an unknown or invalid keyword fails
    here (exit 2) rather than in the middle of a grid.
    """
    _check_name("dataset", str(config.dataset), _valid_datasets())
    _check_name("model", str(config.model), _valid_models())
    valid_opt = _valid_optimizers()
    if entries:
        from tamegrad.train.compare import entry_config

        try:
            configs = [entry_config(config, e, config.seed) for e in entries]
        except ValueError as exc:
            raise CLIError(str(exc)) from exc
    else:
        configs = [config]
    import torch

    import tamegrad.optim as optim

    for cfg in configs:
        _check_name("optimizer", str(cfg.optimizer), valid_opt)
        dummy = [torch.nn.Parameter(torch.zeros(2))]
        try:
            optim.create(cfg.optimizer, dummy, lr=cfg.lr, weight_decay=cfg.weight_decay,
                         **cfg.optimizer_kwargs)
        except (ValueError, TypeError) as exc:
            raise CLIError(f"optimizer {cfg.optimizer!r}: {exc}") from exc


# ----------------------------------------------------------------------------- argparse


_TRAIN_FIELDS: list[tuple[str, str]] = [  # (argparse dest, TrainConfig field)
    ("dataset", "dataset"),
    ("model", "model"),
    ("width", "width"),
    ("data_dir", "data_dir"),
    ("batch_size", "batch_size"),
    ("epochs", "epochs"),
    ("schedule", "schedule"),
    ("weight_decay", "weight_decay"),
    ("grad_accum", "grad_accum"),
    ("clip_grad_norm", "clip_grad_norm"),
    ("device", "device"),
    ("amp", "amp"),
    ("train_subset", "train_subset"),
    ("eval_batch_size", "eval_batch_size"),
    ("augment", "augment"),
    ("seq_len", "seq_len"),
    ("limit_train_batches", "limit_train_batches"),
    ("checkpoint_every_steps", "checkpoint_every_steps"),
]


def _add_common_train_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data and model")
    g.add_argument("--dataset", help="data set name (see `tamegrad list datasets`; default digits)")
    g.add_argument("--model", help="model name (see `tamegrad list models`; default mlp)")
    g.add_argument("--width", type=int, help="model width (channels / hidden units)")
    g.add_argument("--data-dir", help="where data sets live (default $TAMEGRAD_DATA)")
    g.add_argument("--train-subset", type=int, metavar="N", help="use N training examples")
    g.add_argument("--seq-len", type=int, help="sequence length (text data sets)")
    g.add_argument("--augment", action=argparse.BooleanOptionalAction, default=None,
                   help="data augmentation (default: the data set's standard augmentation)")
    g.add_argument("--model-opt", action="append", default=[], metavar="KEY=VALUE",
                   help="model option (Python literal), repeatable: --model-opt depth=3")
    g.add_argument("--dataset-opt", action="append", default=[], metavar="KEY=VALUE",
                   help="data set option (Python literal), repeatable")
    g = p.add_argument_group("training")
    g.add_argument("--batch-size", type=int)
    g.add_argument("--epochs", type=int)
    g.add_argument("--schedule", choices=["step", "cosine", "constant"])
    g.add_argument("--weight-decay", type=float)
    g.add_argument("--grad-accum", type=int, metavar="K", help="accumulate K micro-batches")
    g.add_argument("--clip-grad-norm", type=float, metavar="X")
    g.add_argument("--device", choices=["auto", "cpu", "cuda"])
    g.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None,
                   help="mixed precision (CUDA only)")
    g.add_argument("--eval-batch-size", type=int)
    g.add_argument("--limit-train-batches", type=int, metavar="N",
                   help="stop each epoch after N batches (quick checks)")
    g.add_argument("--checkpoint-every-steps", type=int, metavar="N")
    g.add_argument("--threads", type=int, metavar="N", help="torch CPU threads")


def build_parser() -> argparse.ArgumentParser:
    """The ``tamegrad`` argument parser."""
    def logging_args(p: argparse.ArgumentParser, default: Any) -> None:
        # Accepted before and after the sub-command; the sub-command's copy only overrides
        # when given (its default is SUPPRESS).
        p.add_argument("--log-level", default=default, type=str.upper,
                       choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                       help="logging level (stderr); default INFO")
        p.add_argument("--quiet-epochs", action="store_true",
                       default=False if default is not argparse.SUPPRESS else default,
                       help="do not log every epoch of every run (only run starts/ends)")

    common = argparse.ArgumentParser(add_help=False)
    logging_args(common, argparse.SUPPRESS)
    parser = argparse.ArgumentParser(
        prog="tamegrad",
        description="Optimizers for small-batch training: train, compare, plot.",
    )
    logging_args(parser, "INFO")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("train", parents=[common], help="train one model",
                       description="Train one model; --resume RUN_DIR continues a run.")
    _add_common_train_args(p)
    g = p.add_argument_group("optimizer and run")
    g.add_argument("--optimizer",
                   help="optimizer name (see `tamegrad list optimizers`; default sgd)")
    g.add_argument("--lr", type=float)
    g.add_argument("--opt", action="append", default=[], metavar="KEY=VALUE",
                   help="optimizer keyword (Python literal), repeatable: --opt momentum=0.9")
    g.add_argument("--seed", type=int)
    g.add_argument("--out", help="run folder (default runs/<dataset>-<model>-<optimizer>-s<seed>)")
    g.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR")

    p = sub.add_parser(
        "compare", parents=[common], help="compare optimizers over seeds",
        description=(
            "Run optimizers x seeds, print a markdown table, write results.md and curves.png. "
            "Specs are [label=]name[:key=value,...]; lr, TrainConfig fields (batch_size, "
            "grad_accum, weight_decay, ...) and optimizer keywords may be given."
        ),
    )
    _add_common_train_args(p)
    g = p.add_argument_group("grid")
    g.add_argument("--optimizers", nargs="+", metavar="SPEC", help='e.g. "sgd:lr=0.1,momentum=0.9"')
    g.add_argument("--lr", type=float, help="learning rate for specs that give none")
    g.add_argument("--seeds", nargs="+", type=int, help="seeds (default 0 1 2)")
    g.add_argument("--out", help="grid folder (default runs/compare)")
    g.add_argument("--resume", metavar="DIR", help="continue the grid in DIR (from grid.json)")
    g.add_argument("--workers", type=int, default=1,
                   help="number of worker processes sharing the grid (default 1)")
    g.add_argument("--worker", type=int,
                   help="act only as worker K of --workers (start one process per K yourself)")
    g.add_argument("--retry-failed", action="store_true", help="rerun runs that failed")
    g.add_argument("--no-plot", action="store_true", help="do not write curves.png")
    g.add_argument("--no-results", action="store_true", help=argparse.SUPPRESS)

    p = sub.add_parser("plot", parents=[common], help="draw training curves of runs or grids")
    p.add_argument("paths", nargs="+", metavar="DIR", help="run folders or grid folders")
    p.add_argument("--out", help="PNG path (default DIR/curves.png for one DIR, else curves.png)")
    p.add_argument("--title")
    p.add_argument("--band", choices=["minmax", "std"], default="minmax")

    p = sub.add_parser("list", parents=[common], help="list optimizers, data sets or models")
    p.add_argument("what", nargs="?", choices=["optimizers", "datasets", "models"])

    p = sub.add_parser(
        "demo", parents=[common],
        help="SGD vs TRSGD vs Adam vs TRAdam on digits at batch size 8 (~1-2 min)",
        description="The quick demo: a 4-optimizer x seeds grid on the digits data set.",
    )
    p.add_argument("--out", default="runs/demo", help="grid folder (default runs/demo)")
    p.add_argument("--seeds", type=int, default=3, help="number of seeds (default 3)")
    p.add_argument("--epochs", type=int, default=DEMO_EPOCHS)
    p.add_argument("--model", default=DEMO_MODEL, choices=["mlp", "cnn"])
    p.add_argument("--workers", type=int, default=None,
                   help="worker processes (default: 2 when >= 2 usable cores, else 1)")
    p.add_argument("--data-dir")

    p = sub.add_parser(
        "reproduce", parents=[common], help="run a named experiment suite (resumable)",
        description="Run or continue a named, versioned experiment suite; finished runs are "
                    "skipped, so a long grid can be completed over several sittings.",
    )
    p.add_argument("suite", help="suite name, e.g. tr-cifar10")
    p.add_argument("--profile", default="smoke", help="smoke | cpu | full | full-short")
    p.add_argument("--out", help="results folder (default results/<suite>-<profile>)")
    p.add_argument("--seeds", nargs="+", type=int, help="override the profile's seeds")
    p.add_argument("--only", nargs="+", metavar="LABEL",
                   help="only entries whose label starts with one of these")
    p.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    p.add_argument("--worker", type=int, help="act only as worker K of --workers")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads per worker (default 1: results depend on it)")
    p.add_argument("--data-dir", help="where the data set lives (default $TAMEGRAD_DATA)")
    p.add_argument("--dataset", help="e.g. cifar10 for the official files instead of the JPEGs")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"])
    p.add_argument("--extend-edges", action="store_true",
                   help="learning-rate sweeps: after the grid, add a point beyond every sweep "
                        "whose best lr is at its edge and run it, until each is bracketed "
                        "(at most 2 points per side)")
    p.add_argument("--list", action="store_true", help="list suites and profiles, run nothing")
    return parser


# ----------------------------------------------------------------------------- config building


def _given_fields(args: argparse.Namespace) -> dict[str, Any]:
    """``TrainConfig`` fields given on the command line (options left out are not included)."""
    from tamegrad.train.config import TrainConfig

    names = {f.name for f in dataclasses.fields(TrainConfig)}
    kwargs: dict[str, Any] = {}
    for dest, fname in _TRAIN_FIELDS:
        value = getattr(args, dest, None)
        if value is not None and fname in names:
            kwargs[fname] = value
    if getattr(args, "model_opt", None):
        kwargs["model_options"] = dict(parse_kv(o) for o in args.model_opt)
    if getattr(args, "dataset_opt", None):
        kwargs["dataset_options"] = dict(parse_kv(o) for o in args.dataset_opt)
    return kwargs


def _config_from_args(args: argparse.Namespace, extra: dict[str, Any]) -> TrainConfig:
    """A validated ``TrainConfig``: defaults, then the given options, then ``extra``."""
    from tamegrad.train.config import TrainConfig

    names = {f.name for f in dataclasses.fields(TrainConfig)}
    kwargs = _given_fields(args)
    kwargs.update({k: v for k, v in extra.items() if v is not None})
    unknown = sorted(set(kwargs) - names)
    if unknown:
        raise CLIError(f"TrainConfig has no field(s) {', '.join(unknown)}")
    try:
        return TrainConfig(**kwargs).validate()
    except (TypeError, ValueError) as exc:
        raise CLIError(str(exc)) from exc


def _set_threads(n: int | None) -> None:
    if n:
        import torch

        torch.set_num_threads(max(1, int(n)))


def _progress_enabled() -> bool:
    return sys.stderr.isatty()


def _input_errors() -> tuple[type[BaseException], ...]:
    """Exceptions of ``train()`` that mean bad input (exit 2), not a failed run."""
    from tamegrad.data import DatasetCorruptError, DatasetNotFoundError
    from tamegrad.train.checkpoint import CheckpointError

    return (FileNotFoundError, FileExistsError, DatasetNotFoundError, DatasetCorruptError,
            CheckpointError, ValueError)


def _check_checkpoint(run_dir: Path) -> None:
    """Fail fast with a clear message when ``run_dir``'s checkpoint is unreadable.

    The file is only read, never modified.
    """
    path = run_dir / "checkpoints" / "last.pt"
    if not path.exists():
        return
    from tamegrad.train.checkpoint import CheckpointError, load_checkpoint

    try:
        load_checkpoint(path)
    except CheckpointError as exc:
        raise CLIError(
            f"{exc}; the file was left untouched (move it away to restart the run)"
        ) from exc


def _call_train(config: TrainConfig, run_dir: Path, *, resume: bool) -> dict[str, Any]:
    from tamegrad.train.trainer import train

    try:
        result = train(config, run_dir, resume=resume, progress=_progress_enabled())
    except _input_errors() as exc:  # missing data, corrupt checkpoint, bad hyper-parameters
        raise CLIError(str(exc)) from exc
    except Exception as exc:
        raise RunFailed(f"training failed: {type(exc).__name__}: {exc}") from exc
    return result if isinstance(result, dict) else {}


def _fmt_acc(value: Any) -> str:
    if not isinstance(value, (int, float)):
        return "n/a"
    return f"{value * 100:.2f}%" if value <= 1.0 else f"{value:.2f}%"


# ----------------------------------------------------------------------------- commands


def cmd_train(args: argparse.Namespace) -> int:
    """``tamegrad train``."""
    _set_threads(args.threads)
    if args.resume:
        from tamegrad.train.compare import config_from_dict

        run_dir = Path(args.resume)
        cfg_path = run_dir / "config.json"
        if not cfg_path.is_file():
            raise CLIError(f"{cfg_path} not found: {run_dir} is not a run folder")
        try:
            config = config_from_dict(json.loads(cfg_path.read_text()))
        except (ValueError, TypeError, AttributeError) as exc:
            raise CLIError(f"{cfg_path} is not a valid run config: {exc}") from exc
        # Options given with --resume change the stored config (e.g. --device, --data-dir, or
        # --epochs with the constant schedule); train() refuses changes that alter the run.
        changes = _given_fields(args)
        if changes:
            try:
                config = dataclasses.replace(config, **changes).validate()
            except (TypeError, ValueError) as exc:
                raise CLIError(str(exc)) from exc
        _check_checkpoint(run_dir)
        summary = _call_train(config, run_dir, resume=True)
    else:
        opts = dict(parse_kv(o) for o in args.opt)
        extra: dict[str, Any] = {"optimizer": args.optimizer, "lr": args.lr, "seed": args.seed}
        if opts:
            extra["optimizer_kwargs"] = opts
        config = _config_from_args(args, extra)
        _validate(config)
        out = args.out or (
            f"runs/{config.dataset}-{config.model}-{config.optimizer}-s{config.seed}"
        )
        run_dir = Path(out)
        summary = _call_train(config, run_dir, resume=False)
    status = summary.get("status", "completed")
    loss, wall = summary.get("final_train_loss"), summary.get("wall_time")
    print(
        f"{run_dir}: {status}; final test acc {_fmt_acc(summary.get('final_test_acc'))}, "
        f"best {_fmt_acc(summary.get('best_test_acc'))}, final train loss "
        f"{f'{loss:.4f}' if isinstance(loss, (int, float)) else 'n/a'}, "
        f"{f'{wall:.1f}' if isinstance(wall, (int, float)) else '?'} s"
    )
    if status == "failed":
        raise RunFailed(f"training failed: {summary.get('error', 'unknown error')}")
    return 0


def _spawn_workers(out_dir: Path, num_workers: int, threads: int, *, log_level: str,
                   retry_failed: bool) -> list[int]:
    """Run ``num_workers`` ``tamegrad compare --resume`` worker processes; return exit codes."""
    env = dict(os.environ)
    src = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
    procs = []
    for k in range(num_workers):
        quiet = ["--quiet-epochs"] if _epochs_quiet() else []
        cmd = [sys.executable, "-m", "tamegrad", "--log-level", log_level, *quiet, "compare",
               "--resume", str(out_dir), "--workers", str(num_workers), "--worker", str(k),
               "--threads", str(threads), "--no-plot", "--no-results"]
        if retry_failed:
            cmd.append("--retry-failed")
        procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL))
    try:
        return [p.wait() for p in procs]
    except KeyboardInterrupt:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait()
        raise


def _run_compare(
    base: TrainConfig, entries: list[GridEntry], seeds: list[int], out_dir: Path, *,
    workers: int, worker: int | None, threads: int | None, retry_failed: bool,
    plot: bool, write: bool, log_level: str,
) -> int:
    from tamegrad.train.compare import (
        check_existing_runs,
        entry_config,
        is_finished,
        read_summary,
        run_dir_for,
        run_grid,
        write_grid,
        write_results,
    )

    if workers < 1:
        raise CLIError(f"--workers must be >= 1, got {workers}")
    if worker is not None and not 0 <= worker < workers:
        raise CLIError(f"--worker must be in [0, {workers}), got {worker}")
    failed = 0
    try:
        if worker is None and workers > 1:
            cells = [(e, s) for s in seeds for e in entries]
            configs = [entry_config(base, e, s) for e, s in cells]
            check_existing_runs(out_dir, cells, configs)
            write_grid(out_dir, base, entries, seeds)
            todo = sum(
                not is_finished(read_summary(run_dir_for(out_dir, e.label, s)), c, retry_failed)
                for (e, s), c in zip(cells, configs)
            )
            n = min(workers, todo)  # no idle processes (none at all when everything is done)
            if n > 0:
                per = threads or max(1, _usable_cores() // n)
                codes = _spawn_workers(out_dir, n, per, log_level=log_level,
                                       retry_failed=retry_failed)
                failed = sum(1 for c in codes if c != 0)
        else:
            _set_threads(threads)
            records = run_grid(base, entries, seeds, out_dir, worker=worker or 0,
                               num_workers=workers, progress=_progress_enabled() and workers == 1,
                               retry_failed=retry_failed)
            failed = sum(1 for r in records if r["action"] == "failed")
    except ValueError as exc:
        raise CLIError(str(exc)) from exc
    if not write:
        return 1 if failed else 0
    table = write_results(out_dir)
    print(table)
    if plot:
        from tamegrad.train.plot import plot_runs

        try:
            png = plot_runs(out_dir, out_dir / "curves.png")
            print(f"wrote {out_dir / 'results.md'} and {png}")
        except FileNotFoundError as exc:
            log.warning("no figure: %s", exc)
    if failed:
        log.error("%d run(s) failed; see results.md", failed)
        return 1
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    """``tamegrad compare``."""
    from tamegrad.train.compare import config_fields, load_grid

    if args.resume:
        out_dir = Path(args.resume)
        try:
            base, entries, seeds = load_grid(out_dir)
        except (FileNotFoundError, ValueError) as exc:
            raise CLIError(str(exc)) from exc
    else:
        if not args.optimizers:
            raise CLIError("--optimizers SPEC [SPEC ...] is required (or --resume DIR)")
        fields = config_fields()
        entries = [parse_spec(s, fields) for s in args.optimizers]
        seeds = list(args.seeds) if args.seeds else [0, 1, 2]
        base = _config_from_args(
            args, {"optimizer": entries[0].optimizer, "lr": args.lr,
                   "seed": seeds[0]}
        )
        out_dir = Path(args.out or "runs/compare")
    _validate(base, entries)
    return _run_compare(
        base, entries, seeds, out_dir, workers=args.workers, worker=args.worker,
        threads=args.threads, retry_failed=args.retry_failed, plot=not args.no_plot,
        write=not args.no_results, log_level=args.log_level,
    )


def cmd_plot(args: argparse.Namespace) -> int:
    """``tamegrad plot``."""
    from tamegrad.train.plot import plot_runs

    paths = [Path(p) for p in args.paths]
    out = Path(args.out) if args.out else (
        paths[0] / "curves.png" if len(paths) == 1 else Path("curves.png")
    )
    try:
        png = plot_runs(paths, out, title=args.title, band=args.band)
    except FileNotFoundError as exc:
        raise CLIError(str(exc)) from exc
    print(png)
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    """``tamegrad list``."""
    what = [args.what] if args.what else ["optimizers", "datasets", "models"]
    for item in what:
        if len(what) > 1:
            print(f"{item}:")
        indent = "  " if len(what) > 1 else ""
        for name, desc in _describe(item):
            print(f"{indent}{name:<16} {desc}".rstrip())
    return 0


def _describe(what: str) -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    if what == "optimizers":
        import tamegrad.optim as optim

        describe = getattr(optim, "describe", None)
        for name in optim.list_optimizers():
            desc = ""
            if describe is not None:
                try:
                    desc = str(getattr(describe(name), "description", ""))
                except Exception:
                    desc = ""
            rows.append((name, desc))
    elif what == "datasets":
        from tamegrad.data import dataset_options

        for name in _valid_datasets():
            opts = ", ".join(f"{k}={v!r}" for k, v in dataset_options(name).items())
            rows.append((name, f"[options: {opts}]" if opts else ""))
    else:
        import tamegrad.models as models

        describe_model = getattr(models, "describe_model", None)
        for name in models.available_models():
            desc = ""
            if describe_model is not None:
                try:
                    d = describe_model(name)
                    desc = str(getattr(d, "description", d) if not isinstance(d, str) else d)
                except Exception:
                    desc = ""
            rows.append((name, desc))
    return [(n, d[len(n) + 1:].strip() if d.startswith(f"{n}:") else d) for n, d in rows]


# ----------------------------------------------------------------------------- demo

DEMO_MODEL = "mlp"
DEMO_EPOCHS = 20
DEMO_WIDTH = 128


def demo_entries() -> list[GridEntry]:
    """The four demo optimizers with the paper's hyper-parameters."""
    from tamegrad.reproduce import paper_entries

    return paper_entries()


def demo_config(epochs: int, model: str, data_dir: str | None) -> TrainConfig:
    """Base config of the demo: digits, batch size 8, weight decay 1e-4."""
    from tamegrad.train.config import TrainConfig

    names = {f.name for f in dataclasses.fields(TrainConfig)}
    kwargs: dict[str, Any] = {
        "dataset": "digits", "model": model, "optimizer": "sgd", "lr": 0.1,
        "batch_size": 8, "epochs": epochs, "weight_decay": 1e-4, "schedule": "cosine",
        "seed": 0, "device": "cpu", "width": DEMO_WIDTH if model == "mlp" else 16,
    }
    if data_dir:
        kwargs["data_dir"] = data_dir
    return TrainConfig(**{k: v for k, v in kwargs.items() if k in names})


def _usable_cores() -> int:
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def demo_workers() -> int:
    """Worker processes for the demo: 2 when at least two cores are usable, else 1.

    Each worker uses one torch thread: the demo's MLP is far too small for intra-op threads (one
    process with 2 threads was ~8x slower than with 1 on a busy 2-core machine). Measured on the
    shared 2-core development machine (20 epochs x 3 seeds x 4 optimizers): 2 single-thread
    workers 39-42 s vs 1 worker 61 s at light load, and about equal (31-40 s vs 31 s for a
    6-epoch grid) when other processes already kept both cores busy, so 2 is the default.
    """
    return 2 if _usable_cores() >= 2 else 1


def cmd_demo(args: argparse.Namespace) -> int:
    """``tamegrad demo``: SGD vs TRSGD vs Adam vs TRAdam on digits at batch size 8."""
    if args.seeds < 1 or args.epochs < 1:
        raise CLIError("--seeds and --epochs must be >= 1")
    workers = args.workers if args.workers is not None else demo_workers()
    base = demo_config(args.epochs, args.model, args.data_dir)
    entries = demo_entries()
    _validate(base, entries)
    out_dir = Path(args.out)
    print(
        f"demo: {', '.join(e.label for e in entries)} on digits ({args.model}), batch size 8, "
        f"{args.epochs} epochs x {args.seeds} seeds, {workers} worker process(es) -> {out_dir}",
        flush=True,
    )
    t0 = time.perf_counter()
    code = _run_compare(
        base, entries, list(range(args.seeds)), out_dir, workers=workers, worker=None,
        threads=1, retry_failed=False, plot=True, write=True,
        log_level=args.log_level,
    )
    print(f"demo finished in {time.perf_counter() - t0:.1f} s")
    return code


# ----------------------------------------------------------------------------- reproduce


def cmd_reproduce(args: argparse.Namespace) -> int:
    """``tamegrad reproduce SUITE --profile P``: a named suite on the resumable grid runner."""
    from tamegrad.reproduce import SUITES, extend_sweeps, prepare_suite, write_suite_outputs

    if args.list:
        for suite in SUITES.values():
            print(f"{suite.name} (v{suite.version}): {suite.description}")
            print(f"  profiles: {', '.join(suite.profiles)}")
        return 0
    overrides: dict[str, Any] = {}
    for field_name in ("data_dir", "dataset", "device"):
        if getattr(args, field_name) is not None:
            overrides[field_name] = getattr(args, field_name)
    out_dir = Path(args.out or f"results/{args.suite}-{args.profile}")
    if args.extend_edges and args.worker is not None:
        raise CLIError("--extend-edges is for the process that runs the whole grid, not --worker")
    failed = 0
    while True:
        try:
            base, entries, seeds = prepare_suite(
                args.suite, args.profile, out_dir, seeds=args.seeds, only=args.only,
                overrides=overrides,
            )
        except ValueError as exc:
            raise CLIError(str(exc)) from exc
        _validate(base, entries)
        print(f"reproduce {args.suite} --profile {args.profile}: {len(entries)} configurations "
              f"x {len(seeds)} seeds -> {out_dir}", flush=True)
        failed = _run_compare(
            base, entries, seeds, out_dir, workers=args.workers, worker=args.worker,
            threads=args.threads, retry_failed=False, plot=False, write=False,
            log_level=args.log_level,
        )
        if args.worker is not None:
            return failed
        added = extend_sweeps(args.suite, args.profile, out_dir) if args.extend_edges else []
        if not added:
            break
        print(f"best lr at the edge of its sweep; adding {', '.join(added)}", flush=True)
    print(write_suite_outputs(args.suite, args.profile, out_dir))
    print(f"wrote {out_dir / 'results.md'} and its figures", flush=True)
    if failed:
        log.error("run(s) failed; see %s", out_dir / "results.md")
    return failed


# ----------------------------------------------------------------------------- main


def _quiet_epochs(level: str) -> None:
    """Silence the trainer's per-epoch INFO lines but keep the grid's run start/end lines."""
    if logging.getLevelName(level) <= logging.INFO:
        logging.getLogger("tamegrad.train").setLevel(logging.WARNING)
        logging.getLogger("tamegrad.train.compare").setLevel(logging.getLevelName(level))


def _epochs_quiet() -> bool:
    return logging.getLogger("tamegrad.train").level == logging.WARNING


def _die(message: str, code: int) -> NoReturn:
    print(f"tamegrad: error: {message}", file=sys.stderr)
    raise SystemExit(code)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``tamegrad`` command; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, args.log_level, logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
        force=True,
    )
    if args.quiet_epochs or args.command == "demo":
        _quiet_epochs(args.log_level)
    handlers = {
        "train": cmd_train, "compare": cmd_compare, "plot": cmd_plot, "list": cmd_list,
        "demo": cmd_demo, "reproduce": cmd_reproduce,
    }
    try:
        return handlers[args.command](args)
    except CLIError as exc:
        _die(str(exc), 2)
    except RunFailed as exc:
        _die(str(exc), 1)
    except KeyboardInterrupt:
        print("tamegrad: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
