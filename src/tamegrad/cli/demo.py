"""``tamegrad demo``: TRSGD and TRAdam against their base optimizers and lr-matched controls."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from tamegrad.train.config import TrainConfig
from tamegrad.train.grid import entry_config

from ._errors import CLIError
from ._validate import validate_configs
from ._workers import usable_cores
from .compare import run_compare, write_outputs
from .options import positive_int

DEMO_MODEL = "mlp"
DEMO_EPOCHS = 20
DEMO_WIDTH = 128

#: Printed under the demo's table: what the comparison controls for, and where the real one is.
CONTROL_NOTE = (
    "Controls: TR's inner steps are lr/(s+1), a mean step of {mult:.3f} x lr, so 'lr-matched' runs "
    "SGD and Adam at that mean step; TR's gain over its lr-matched control (not over SGD/Adam at "
    "the paper's lr) is what trajectory regularisation adds. One small data set, few seeds: see "
    "docs/REPRODUCTION.md for the CIFAR-10 test."
)


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "demo", parents=[common],
        help="TRSGD and TRAdam vs SGD, Adam and lr-matched controls on digits at batch 8 "
             "(~1-2 min)",
        description="The quick demo: a 6-optimizer x seeds grid on the digits data set: SGD, "
                    "TRSGD, Adam, TRAdam with the paper's settings, and SGD and Adam at TR's "
                    "mean step size (the lr-matched controls).",
    )
    p.add_argument("--out", default="runs/demo", help="grid folder (default runs/demo)")
    p.add_argument("--seeds", type=positive_int, default=3, help="number of seeds (default 3)")
    p.add_argument("--epochs", type=positive_int, default=DEMO_EPOCHS)
    p.add_argument("--model", default=DEMO_MODEL, choices=["mlp", "cnn"])
    p.add_argument("--workers", type=positive_int, default=None,
                   help="worker processes (default: 2 when >= 2 usable cores, else 1)")
    p.add_argument("--data-dir")


def demo_config(epochs: int, model: str, data_dir: str | None) -> TrainConfig:
    """Base config of the demo: digits, batch size 8, weight decay 1e-4, cosine schedule."""
    return TrainConfig(
        dataset="digits", model=model, optimizer="sgd", lr=0.1, batch_size=8, epochs=epochs,
        weight_decay=1e-4, schedule="cosine", seed=0, device="cpu",
        width=DEMO_WIDTH if model == "mlp" else 16, data_dir=data_dir,
    )


def demo_workers() -> int:
    """Worker processes for the demo: 2 when at least two cores are usable, else 1.

    Each worker uses one torch thread: the demo's MLP is far too small for intra-op threads (one
    process with 2 threads was ~8x slower than with 1 on a busy 2-core machine). Measured on the
    shared 2-core development machine (20 epochs x 3 seeds x 4 optimizers): 2 single-thread
    workers 39-42 s vs 1 worker 61 s at light load, and about equal (31-40 s vs 31 s for a
    6-epoch grid) when other processes already kept both cores busy, so 2 is the default.
    """
    return 2 if usable_cores() >= 2 else 1


def run(args: argparse.Namespace) -> int:
    """``tamegrad demo``."""
    from tamegrad.experiments.tr import TR_MEAN_STEP_MULTIPLIER, demo_entries

    workers = args.workers if args.workers is not None else demo_workers()
    base = demo_config(args.epochs, args.model, args.data_dir)
    entries = demo_entries()
    try:
        validate_configs([entry_config(base, e, 0) for e in entries])
    except ValueError as exc:
        raise CLIError(str(exc)) from exc
    out_dir = Path(args.out)
    print(
        f"demo: {', '.join(e.label for e in entries)} on digits ({args.model}), batch size 8, "
        f"{args.epochs} epochs x {args.seeds} seeds, {workers} worker process(es) -> {out_dir}",
        flush=True,
    )
    t0 = time.perf_counter()
    failed = run_compare(
        base, entries, list(range(args.seeds)), out_dir, workers=workers, worker=None,
        threads=1, retry_failed=False, log_level=args.log_level,
    )
    code = write_outputs(out_dir, plot=True, failed=failed, retry_failed=False)
    print(CONTROL_NOTE.format(mult=TR_MEAN_STEP_MULTIPLIER))
    print(f"demo finished in {time.perf_counter() - t0:.1f} s")
    return code
