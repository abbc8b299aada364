"""Activation bytes and step time of RAD against exact training and the usual memory tools.

    python benchmarks/estimators_rad.py [--batch 128] [--reps 5] [--threads 1] [--only rad-cnn]
    python benchmarks/estimators_rad.py --meter-overhead [--reps 9]

For the RAD paper's CIFAR CNN (``rad-cnn``, width 16) and CIFAR ResNet-18 (width 16) on random
32x32 inputs at batch 128, one process measures, side by side:

* **exact**: the plain model (the baseline of every ratio);
* **RAD k**: ``convert(model, "rad", keep_frac=k)`` (Linear/Conv2d store k of their input);
* **RAD k + lean**: also ``lean=True`` (ReLU keeps a 1-bit mask, average pooling keeps only
  its input shape; both exact), which RAD's memory accounting assumes;
* **exact + lean**: the lean layers alone (exact gradients), to separate the two effects;
* **checkpoint**: ``torch.utils.checkpoint`` (non-reentrant) around each block (rad-cnn: each
  conv-ReLU[-pool] group; ResNet: each BasicBlock); the block inputs the checkpoint keeps are
  counted (passed through an identity ``autograd.Function`` that saves them);
* **bf16 autocast**: ``torch.autocast("cpu", torch.bfloat16)`` around the forward;
* **reduced batch** (and **+ lean**): the exact model (with the lean layers) at the largest
  batch whose activation bytes fit those of RAD 0.1 + lean (``largest_batch_that_fits``): the
  RAD paper's equal-memory baseline; its time is per step at that smaller batch.

Activation bytes come from ``ActivationMeter`` over the forward and loss (saved tensors,
deduplicated by storage, parameters excluded). Step time is forward + loss + backward (no
optimizer step), median over ``--reps`` interleaved rounds (every configuration once per round,
so machine noise hits all alike); ratios are to the exact model's median. One intra-op thread
by default: on a shared machine every multi-threaded op waits for its slowest thread, which
makes small memory-bound ops look many times slower than they are.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from tamegrad.estimators import ActivationMeter, convert, largest_batch_that_fits
from tamegrad.models import BasicBlock, create_model

from _common import interleaved_median_times


class _KeepInput(torch.autograd.Function):
    """Identity that saves its input, so the meter counts what a checkpoint holds on to."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> Tensor:  # type: ignore[override]
        return g


class _Checkpointed(nn.Module):
    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        self.block = block

    def forward(self, x: Tensor) -> Tensor:
        return checkpoint(self.block, _KeepInput.apply(x), use_reentrant=False)


def _checkpoint_blocks(name: str, model: nn.Module) -> nn.Module:
    if name == "rad-cnn":
        f = list(model.features)  # conv relu conv relu pool conv relu conv relu pool
        groups = [f[0:2], f[2:5], f[5:7], f[7:10]]
        model.features = nn.Sequential(*[_Checkpointed(nn.Sequential(*g)) for g in groups])
        return model
    for stage in ("layer1", "layer2", "layer3", "layer4"):
        seq = getattr(model, stage)
        for i, blk in enumerate(seq):
            assert isinstance(blk, BasicBlock)
            seq[i] = _Checkpointed(blk)
    return model


def _build(name: str, width: int) -> nn.Module:
    torch.manual_seed(0)
    return create_model(name, num_classes=10, input_shape=(3, 32, 32), width=width)


Config = tuple[str, Callable[[], nn.Module], bool]  # label, model builder, autocast


def _configs(name: str, width: int) -> list[Config]:
    def conv(**kw: Any) -> Callable[[], nn.Module]:
        return lambda: convert(_build(name, width), **kw)

    return [
        ("exact", lambda: _build(name, width), False),
        ("RAD 0.1", conv(method="rad", keep_frac=0.1), False),
        ("RAD 0.3", conv(method="rad", keep_frac=0.3), False),
        ("RAD 0.1 + lean", conv(method="rad", keep_frac=0.1, lean=True), False),
        ("RAD 0.3 + lean", conv(method="rad", keep_frac=0.3, lean=True), False),
        ("exact + lean", conv(method="lean"), False),
        ("checkpoint/block", lambda: _checkpoint_blocks(name, _build(name, width)), False),
        ("bf16 autocast", lambda: _build(name, width), True),
    ]


def _step_fn(model: nn.Module, batch: int, amp: bool, seed: int = 0) -> Callable[[], Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 3, 32, 32, generator=g)
    y = torch.randint(0, 10, (batch,), generator=g)

    def forward() -> Tensor:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            return F.cross_entropy(model(x).float(), y)

    return forward


def _activation_bytes(model: nn.Module, forward: Callable[[], Tensor]) -> int:
    with ActivationMeter(model, per_layer=False) as meter:
        loss = forward()
    loss.backward()
    return meter.report().activation_bytes


def run_model(name: str, width: int, batch: int, reps: int) -> list[str]:
    rows = []
    entries = []
    for label, build, amp in _configs(name, width):
        model = build()
        model.train()
        fwd = _step_fn(model, batch, amp)
        entries.append((label, model, fwd, _activation_bytes(model, fwd)))
    exact_bytes = entries[0][3]
    budget = next(b for lab, _, _, b in entries if lab == "RAD 0.1 + lean")
    plain = _build(name, width)
    plain.train()
    lean = convert(_build(name, width), "lean")
    lean.train()
    for label, base in (("reduced batch", plain), ("reduced batch + lean", lean)):

        def exact_at(b: int, base: nn.Module = base) -> Tensor:
            return _step_fn(base, b, False)()

        small = largest_batch_that_fits(exact_at, budget, model=base, max_batch=batch)
        if small > 0:
            fwd_small = _step_fn(base, small, False)
            entries.append(
                (f"{label} {small}", base, fwd_small, _activation_bytes(base, fwd_small))
            )

    def timed(model: nn.Module, fwd: Callable[[], Tensor]) -> Callable[[], None]:
        def step() -> None:
            model.zero_grad(set_to_none=True)
            fwd().backward()

        return step

    times = interleaved_median_times([timed(m, f) for _, m, f, _ in entries], reps, warmup=1)
    t_exact = times[0]
    for (label, _, _, nbytes), t in zip(entries, times):
        rows.append(
            f"| {name} | {label} | {nbytes / 2**20:.2f} | {nbytes / exact_bytes:.3f} "
            f"| {t * 1e3:.0f} | {t / t_exact:.2f} |"
        )
    return rows


def meter_overhead(name: str, width: int, batch: int, reps: int) -> list[str]:
    """Step time with the meter around the forward (as a trainer would record bytes per step)
    against the same step without it."""
    model = _build(name, width)
    fwd = _step_fn(model, batch, False)

    def bare() -> None:
        model.zero_grad(set_to_none=True)
        fwd().backward()

    def metered(per_layer: bool) -> Callable[[], None]:
        def step() -> None:
            model.zero_grad(set_to_none=True)
            with ActivationMeter(model, per_layer=per_layer):
                loss = fwd()
            loss.backward()

        return step

    t = interleaved_median_times([bare, metered(False), metered(True)], reps, warmup=1)
    return [
        f"| {name} | {label} | {tt * 1e3:.0f} | {tt / t[0]:.3f} |"
        for label, tt in zip(("no meter", "ActivationMeter(per_layer=False)",
                              "ActivationMeter(per_layer=True)"), t)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--only", default="", help="run only this model (rad-cnn | resnet18)")
    parser.add_argument(
        "--meter-overhead", action="store_true", help="only time the meter's own overhead"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(
        f"# RAD activation memory and step time, batch {args.batch}, torch {torch.__version__}, "
        f"{args.threads} threads, {platform.processor() or platform.machine()}, "
        f"{args.reps} interleaved reps, {datetime.date.today()}"
    )
    print()
    models = [m for m in (("rad-cnn", 16), ("resnet18", 16)) if args.only in ("", m[0])]
    if args.meter_overhead:
        print("| model | step | step ms | time / no meter |")
        print("|---|---|---|---|")
        for name, width in models:
            for row in meter_overhead(name, width, args.batch, args.reps):
                print(row, flush=True)
        return
    print("| model | configuration | activation MiB | bytes / exact | step ms | time / exact |")
    print("|---|---|---|---|---|---|")
    for name, width in models:
        for row in run_model(name, width, args.batch, args.reps):
            print(row, flush=True)


if __name__ == "__main__":
    main()
