"""Time one ``step()`` of tamegrad's optimizers against torch's on CIFAR ResNet-18 parameter shapes.

    python benchmarks/optimizer_step.py [--reps 60] [--threads 2] [--width 64]

Each pair runs interleaved in one process (candidate, baseline, baseline, candidate, ...), so
machine noise hits both alike; the printed ratio is the median of the per-round ratios. The
steps cycle through TR's inner steps, so the ratio averages over a cycle (the first inner step
of a cycle costs an anchor copy, the others one anchor read). Also prints optimizer state bytes.
"""

from __future__ import annotations

import argparse
import platform
import sys
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from tamegrad.optim import TRSGD, GeneralizedSignSGD, TRAdam, TrajectoryRegularized

from _common import (
    interleaved_ratio,
    make_params,
    resnet18_param_shapes,
    state_bytes,
)

WD = 1e-4


def _cases() -> list[tuple[str, Callable, Callable, float]]:
    sgd = lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, weight_decay=WD, foreach=True)
    adam = lambda ps: torch.optim.Adam(ps, lr=1e-3, weight_decay=WD, foreach=True)
    adam_plain = lambda ps: torch.optim.Adam(ps, lr=1e-3, foreach=True)
    return [
        (
            "TRSGD / SGD",
            lambda ps: TRSGD(
                ps, lr=0.1, lambda_w=0.01, momentum=0.9, weight_decay=WD, foreach=True
            ),
            sgd,
            1.25,
        ),
        (
            "TRSGD bf16 anchor / SGD",
            lambda ps: TRSGD(
                ps,
                lr=0.1,
                lambda_w=0.01,
                momentum=0.9,
                weight_decay=WD,
                foreach=True,
                anchor_dtype=torch.bfloat16,
            ),
            sgd,
            1.25,
        ),
        (
            "TR(SGD) wrapper / SGD",
            lambda ps: TrajectoryRegularized(sgd(ps), lambda_w=0.01),
            sgd,
            float("nan"),
        ),
        (
            "TRAdam / Adam",
            lambda ps: TRAdam(ps, lr=1e-3, lambda_w=1e-4, weight_decay=WD, foreach=True),
            adam,
            1.15,
        ),
        (
            "TRAdam bf16 anchor / Adam",
            lambda ps: TRAdam(
                ps,
                lr=1e-3,
                lambda_w=1e-4,
                weight_decay=WD,
                foreach=True,
                anchor_dtype=torch.bfloat16,
            ),
            adam,
            1.15,
        ),
        (
            "TR(Adam) wrapper / Adam",
            lambda ps: TrajectoryRegularized(adam(ps), lambda_w=1e-4),
            adam,
            float("nan"),
        ),
        (
            "GeneralizedSignSGD / Adam",
            lambda ps: GeneralizedSignSGD(ps, lr=1e-3, foreach=True),
            adam_plain,
            1.05,
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=60)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--only", default="", help="substring filter on the case names")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    shapes = resnet18_param_shapes(width=args.width)
    n = sum(torch.Size(s).numel() for s in shapes)
    print(
        f"# optimizer step: ResNet-18 shapes, {n / 1e6:.2f}M params, torch {torch.__version__}, "
        f"{args.threads} threads, {platform.processor() or platform.machine()}, {args.reps} reps"
    )
    print()
    print(
        "| candidate / baseline | candidate ms | baseline ms | median ratio | target "
        "| candidate state MB | baseline state MB |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, make_c, make_b, target in _cases():
        if args.only and args.only not in name:
            continue
        pc, pb = make_params(shapes), make_params(shapes)
        opt_c, opt_b = make_c(pc), make_b(pb)
        tc, tb, ratio = interleaved_ratio(opt_c.step, opt_b.step, args.reps)
        tgt = "-" if target != target else f"<= {target:.2f}"
        print(
            f"| {name} | {tc * 1e3:.1f} | {tb * 1e3:.1f} | {ratio:.3f} | {tgt} "
            f"| {state_bytes(opt_c) / 2**20:.1f} | {state_bytes(opt_b) / 2**20:.1f} |"
        )
        del pc, pb, opt_c, opt_b


if __name__ == "__main__":
    main()
