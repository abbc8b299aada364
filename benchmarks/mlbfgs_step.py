"""mL-BFGS cost against ``torch.optim.SGD(momentum, foreach=True)``, amortised over a period.

    python benchmarks/mlbfgs_step.py [--period 50] [--history 10] [--threads 2] [--reps 3]

1. **Optimizer step** on CIFAR ResNet-18 (width 64, 11.17M parameters) shapes with fixed random
   gradients: a full history (``M`` pairs per block, filled first), then ``T`` consecutive
   steps, one of which forms a curvature pair, timed against ``T`` SGD steps; the rounds are
   interleaved (candidate, baseline, baseline, candidate, ...) and the ratio is the median over
   rounds of (period time / SGD period time).
2. **Whole training step** (forward + backward + step) of ResNet-18 width 16 at batch 128,
   random CIFAR-shaped data: ``T`` consecutive steps of each, interleaved step by step; the
   ratio is mean mL-BFGS step / mean SGD step over the period (the pair step included).
3. **History bytes per rank** (averages, snapshots and pairs of the blocks a rank owns) for 1 and
   2 ranks, from the default block split and the greedy largest-first assignment; the
   1-rank figure is also measured on the filled optimizer.

``--digits`` instead runs a quick training check (the ``cnn`` model, width 16, on the
``digits`` data set, batch 32, 900 steps, cosine lr, weight decay 5e-4, seed 0, one thread):
final training loss and test accuracy of SGD momentum, mL-BFGS (paper form and ``normalize``)
and naive stochastic L-BFGS at a few learning rates: an indication of usable lr ranges.
"""

from __future__ import annotations

import argparse
import datetime
import math
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from tamegrad.models import create_model
from tamegrad.optim import MLBFGS, create
from tamegrad.optim._lbfgs_blocks import assign_blocks

from _common import make_params, resnet18_param_shapes

WD = 5e-4


def _mlbfgs(params: list[torch.Tensor], period: int, history: int) -> MLBFGS:
    return MLBFGS(params, lr=0.1, momentum=0.9, weight_decay=WD, update_period=period,
                  history_size=history)


def _sgd(params: list[torch.Tensor]) -> torch.optim.SGD:
    return torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=WD, foreach=True)


def _fill(opt: MLBFGS, step: Callable[[], object], history: int, period: int) -> None:
    """Fill every block's history (pairs every step), then restore the period, aligned so the
    next ``period`` steps hold exactly one pair."""
    for g in opt.param_groups:
        g["update_period"] = 1
    for _ in range(history + 2):
        step()
    for g in opt.param_groups:
        g["update_period"] = period
    counts = {opt.state[b.params[0]]["hist_count"] for b in opt.blocks}
    assert counts == {history}, counts


def _history_bytes_per_rank(opt: MLBFGS, world: int, history: int) -> list[int]:
    sizes = [b.numel for b in opt.blocks]
    owners = assign_blocks(sizes, world)
    per = [0] * world
    for b, r in zip(opt.blocks, owners):
        elt = b.params[0].element_size()
        per[r] += (2 * history + 4) * b.numel * elt + 2 * history * history * elt
    return per


def optimizer_step(period: int, history: int, reps: int) -> tuple[float, float, float, MLBFGS]:
    shapes = resnet18_param_shapes(width=64)
    pc, pb = make_params(shapes), make_params(shapes)
    opt, sgd = _mlbfgs(pc, period, history), _sgd(pb)
    _fill(opt, opt.step, history, period)

    def cand() -> None:
        for _ in range(period):
            opt.step()

    def base() -> None:
        for _ in range(period):
            sgd.step()

    base()
    tc: list[float] = []
    tb: list[float] = []
    for r in range(reps):
        order = ((cand, tc), (base, tb)) if r % 2 == 0 else ((base, tb), (cand, tc))
        for fn, sink in order:
            t0 = time.perf_counter()
            fn()
            sink.append(time.perf_counter() - t0)
    ratios = [c / b for c, b in zip(tc, tb)]
    return statistics.median(tc) / period, statistics.median(tb) / period, \
        statistics.median(ratios), opt


def training_step(period: int, history: int, batch: int) -> tuple[float, float]:
    def model() -> nn.Module:
        torch.manual_seed(0)
        return create_model("resnet18", num_classes=10, input_shape=(3, 32, 32), width=16)

    mc, mb = model(), model()
    oc = _mlbfgs(list(mc.parameters()), period, history)
    ob = _sgd(list(mb.parameters()))
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3, 32, 32, generator=gen)
    y = torch.randint(0, 10, (batch,), generator=gen)

    def step(m: nn.Module, o: torch.optim.Optimizer) -> Callable[[], None]:
        def run() -> None:
            o.zero_grad()
            nn.functional.cross_entropy(m(x), y).backward()
            o.step()
        return run

    cand, base = step(mc, oc), step(mb, ob)
    _fill(oc, cand, history, period)
    base()
    tc: list[float] = []
    tb: list[float] = []
    for r in range(period):  # one full period: exactly one pair step
        order = ((cand, tc), (base, tb)) if r % 2 == 0 else ((base, tb), (cand, tc))
        for fn, sink in order:
            t0 = time.perf_counter()
            fn()
            sink.append(time.perf_counter() - t0)
    return statistics.mean(tc), statistics.mean(tb)


def digits_check(steps: int = 900, batch: int = 32) -> None:
    from tamegrad.data import load_dataset

    data = load_dataset("digits")
    xtr, xte = data.train_x.float(), data.test_x.float()
    mean, std = xtr.mean(), xtr.std()
    xtr, xte = (xtr - mean) / std, (xte - mean) / std
    runs: list[tuple[str, float, dict]] = [
        ("sgd", 0.1, {"momentum": 0.9}), ("sgd", 0.03, {"momentum": 0.9}),
        *[("mlbfgs", lr, {}) for lr in (0.1, 0.03, 0.01, 0.003)],
        *[("mlbfgs", lr, {"normalize": True}) for lr in (0.1, 0.03)],
        *[("lbfgs-stochastic", lr, {}) for lr in (1.0, 0.1, 0.01)],
    ]
    print("| optimizer | lr | options | final train loss (last 100) | test acc |")
    print("|---|---|---|---|---|")
    for name, lr, kw in runs:
        torch.manual_seed(0)
        model = create_model("cnn", num_classes=10, input_shape=(1, 8, 8), width=16)
        opt = create(name, model.parameters(), lr=lr, weight_decay=5e-4, **kw)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda t: 0.5 * (1 + math.cos(math.pi * t / steps)))
        gen = torch.Generator().manual_seed(0)
        losses = []
        for _ in range(steps):
            idx = torch.randint(0, len(xtr), (batch,), generator=gen)
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(xtr[idx]), data.train_y[idx])
            loss.backward()
            opt.step()
            sched.step()
            losses.append(loss.item())
        with torch.no_grad():
            acc = (model(xte).argmax(1) == data.test_y).float().mean().item()
        print(f"| {name} | {lr:g} | {kw or '-'} | {statistics.mean(losses[-100:]):.4g} "
              f"| {acc:.3f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--period", type=int, default=50)
    parser.add_argument("--history", type=int, default=10)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--parts", default="step,train,memory",
                        help="comma-separated subset of step (w64 optimizer step), train (w16 "
                        "training step), memory (history bytes per rank)")
    parser.add_argument("--digits", action="store_true", help="only the digits training check")
    args = parser.parse_args()
    if args.digits:
        torch.set_num_threads(1)
        print(f"# digits check, torch {torch.__version__}, "
              f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC")
        digits_check()
        return
    torch.set_num_threads(args.threads)
    print(f"# mL-BFGS vs SGD(momentum, foreach): torch {torch.__version__}, {args.threads} "
          f"threads, {platform.processor() or platform.machine()}, T={args.period}, "
          f"M={args.history}, {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC")
    print()
    parts = set(args.parts.split(","))
    print("| measurement | mL-BFGS ms | SGD ms | ratio |")
    print("|---|---|---|---|")
    if "step" in parts:
        tc, tb, ratio, opt = optimizer_step(args.period, args.history, args.reps)
        n = sum(b.numel for b in opt.blocks)
        print(f"| optimizer step, ResNet-18 w64 shapes ({n / 1e6:.2f}M, {len(opt.blocks)} "
              f"blocks), amortised over T | {tc * 1e3:.1f} | {tb * 1e3:.1f} | {ratio:.2f} |",
              flush=True)
    if "train" in parts:
        wc, wb = training_step(args.period, args.history, args.batch)
        print(f"| training step, ResNet-18 w16, batch {args.batch}, mean over T | "
              f"{wc * 1e3:.1f} | {wb * 1e3:.1f} | {wc / wb:.2f} |", flush=True)
    if "memory" in parts:
        print()
        print("| ResNet-18 w64 history | 1 rank MB | 2 ranks: MB per rank |")
        print("|---|---|---|")
        if "step" not in parts:  # blocks only, nothing filled
            opt = _mlbfgs(make_params(resnet18_param_shapes(width=64)), args.period, args.history)
        one = _history_bytes_per_rank(opt, 1, args.history)
        two = _history_bytes_per_rank(opt, 2, args.history)
        print(f"| from the block assignment | {one[0] / 2**20:.1f} | "
              f"{' / '.join(f'{b / 2**20:.1f}' for b in two)} |")
        if "step" in parts:
            print(f"| measured (1 rank, filled) | {opt.history_bytes() / 2**20:.1f} | - |")


if __name__ == "__main__":
    main()
