"""Images/second of the real trainer vs a bare minimal training loop (CIFAR-10, batch size 8).

    python benchmarks/trainer_throughput.py [--subset 2000] [--repeats 2] [--threads 1]

Both loops train the same model (CIFAR ResNet-18, width 16), built with the same seed, with the
same optimizer (SGD, lr 0.1, momentum 0.9, weight decay 5e-4, constant learning rate) at batch
size 8 on the same class-balanced subset of ``cifar10-jpeg`` (read from ``$TAMEGRAD_DATA``,
default ``../shared/data``), for one epoch each, in one process, interleaved
(bare, trainer, bare, trainer, ...) so machine noise hits both alike.

* **bare**: the images pre-loaded as normalised float32 tensors; per epoch one ``randperm``,
  then per step an index gather, forward, ``cross_entropy``, ``zero_grad``, ``backward``,
  ``step``. Nothing else: no metrics, no NaN check, no augmentation.
* **trainer**: ``tamegrad.train.train()`` with ``augment=False`` (so both loops see the same
  un-augmented images; an extra, unratioed row shows the trainer with its batched crop+flip).
  Its time is the ``epoch_time`` it records in ``metrics.jsonl``: the training loop only,
  including the trainer's per-step work (``BatchLoader`` gather + normalisation, per-step NaN
  check, metric folding, LR scheduler). **Evaluation is disabled** for the benchmark (the
  trainer's ``_Run._evaluate`` is replaced by a no-op returning NaN), so ``epoch_time`` holds
  no test pass; data loading, model construction and the end-of-epoch checkpoint are outside
  ``epoch_time`` and are reported separately as the call's total wall time.

The ratio is trainer images/s over bare images/s, from the best (fastest) repeat of each and
from the means; the target is >= 0.9. Both use the same number of torch threads (``--threads``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from tamegrad.data import load_dataset
from tamegrad.models import create_model
from tamegrad.train import TrainConfig, train
from tamegrad.train import trainer as trainer_module

LR, MOMENTUM, WD = 0.1, 0.9, 5e-4


def _data_dir(arg: str | None) -> str:
    return arg or os.environ.get("TAMEGRAD_DATA") or str(ROOT.parent / "shared" / "data")


def bare_epoch(x: torch.Tensor, y: torch.Tensor, *, width: int, batch_size: int, seed: int,
               max_steps: int | None = None) -> tuple[int, float]:
    """One epoch of the minimal loop over pre-normalised ``x``; returns (images, seconds)."""
    torch.manual_seed(seed)
    model = create_model("resnet18", num_classes=10, input_shape=(3, 32, 32), width=width)
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM, weight_decay=WD)
    model.train()
    steps = x.shape[0] // batch_size
    if max_steps is not None:
        steps = min(steps, max_steps)
    start = time.perf_counter()
    perm = torch.randperm(x.shape[0])
    for b in range(steps):
        idx = perm[b * batch_size:(b + 1) * batch_size]
        xb, yb = x.index_select(0, idx), y.index_select(0, idx)
        loss = F.cross_entropy(model(xb), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return steps * batch_size, time.perf_counter() - start


def trainer_epoch(config: TrainConfig) -> tuple[int, float, float]:
    """One epoch of ``train()``; returns (images, epoch_time, total call seconds)."""
    with tempfile.TemporaryDirectory(prefix="tamegrad-bench-") as tmp:
        start = time.perf_counter()
        summary = train(config, Path(tmp) / "run", progress=False)
        total = time.perf_counter() - start
        rows = [json.loads(line) for line in (Path(tmp) / "run" / "metrics.jsonl").open()]
    if summary.get("status") != "completed":
        raise RuntimeError(f"trainer run did not complete: {summary}")
    images = int(rows[-1]["step"]) * config.batch_size * config.grad_accum
    return images, float(rows[-1]["epoch_time"]), total


def _disable_evaluation() -> None:
    run_cls: Any = getattr(trainer_module, "_Run", None)
    if run_cls is None or not hasattr(run_cls, "_evaluate"):
        raise SystemExit("tamegrad.train.trainer._Run._evaluate not found: cannot disable eval")

    def _no_eval(self: Any) -> tuple[float, float]:
        return float("nan"), float("nan")

    run_cls._evaluate = _no_eval


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--subset", type=int, default=2000, help="training images (default 2000)")
    ap.add_argument("--repeats", type=int, default=2, help="bare/trainer pairs (default 2)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads for both (default 1)")
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--data-dir", default=None, help="default $TAMEGRAD_DATA or ../shared/data")
    ap.add_argument("--no-augment-row", action="store_true",
                    help="skip the extra trainer run with augmentation")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    data_dir = _data_dir(args.data_dir)
    t0 = time.perf_counter()
    ds = load_dataset("cifar10-jpeg", data_dir, train_subset=args.subset, seed=0)
    load_s = time.perf_counter() - t0
    assert ds.mean is not None and ds.std is not None
    mean = torch.tensor(ds.mean).view(1, 3, 1, 1)
    std = torch.tensor(ds.std).view(1, 3, 1, 1)
    x = ((ds.train_x.float() / 255.0) - mean) / std
    y = ds.train_y.clone()

    config = TrainConfig(
        dataset="cifar10-jpeg", data_dir=data_dir, model="resnet18", width=args.width,
        optimizer="sgd", optimizer_kwargs={"momentum": MOMENTUM}, lr=LR, weight_decay=WD,
        batch_size=args.batch_size, epochs=1, schedule="constant", augment=False,
        train_subset=args.subset, seed=0, device="cpu",
    )
    _disable_evaluation()

    print(f"# trainer vs bare loop: ResNet-18 width {args.width}, batch size {args.batch_size}, "
          f"{args.subset} CIFAR-10 (jpeg) images, SGD momentum {MOMENTUM}")
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} thread(s), data load {load_s:.1f} s "
          f"(1-min load average at start: {os.getloadavg()[0]:.2f})\n")

    bare_epoch(x, y, width=args.width, batch_size=args.batch_size, seed=0, max_steps=20)  # warm-up
    rows: list[tuple[str, int, int, float, str]] = []
    bare_ips: list[float] = []
    trainer_ips: list[float] = []
    for r in range(1, args.repeats + 1):
        n, s = bare_epoch(x, y, width=args.width, batch_size=args.batch_size, seed=0)
        bare_ips.append(n / s)
        rows.append(("bare", r, n, s, ""))
        n, s, total = trainer_epoch(config)
        trainer_ips.append(n / s)
        rows.append(("trainer", r, n, s, f"{total:.1f}"))
    if not args.no_augment_row:
        cfg_aug = dataclasses.replace(config, augment=True)
        n, s, total = trainer_epoch(cfg_aug)
        rows.append(("trainer + crop/flip", 1, n, s, f"{total:.1f}"))

    print("| loop | repeat | images | train time (s) | images/s | train() call total (s) |")
    print("|---|---|---|---|---|---|")
    for name, r, n, s, total in rows:
        print(f"| {name} | {r} | {n} | {s:.2f} | {n / s:.1f} | {total} |")
    best = max(trainer_ips) / max(bare_ips)
    mean = statistics.fmean(trainer_ips) / statistics.fmean(bare_ips)
    print()
    print(f"bare: best {max(bare_ips):.1f} img/s, mean {statistics.fmean(bare_ips):.1f} img/s")
    print(f"trainer: best {max(trainer_ips):.1f} img/s, mean {statistics.fmean(trainer_ips):.1f}"
          " img/s (evaluation disabled; train time = epoch_time)")
    verdict = "meets" if best >= 0.9 else "MISSES"
    print(f"ratio trainer/bare: {best:.3f} (best of each), {mean:.3f} (means); "
          f"{verdict} the >= 0.9 target")


if __name__ == "__main__":
    main()
