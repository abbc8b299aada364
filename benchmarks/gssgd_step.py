"""Time one ``step()`` of GeneralizedSignSGD(foreach=True) against torch.optim.Adam(foreach=True).

Parameters have the shapes of a CIFAR ResNet-18 (11.17M parameters) with fixed random
gradients. The two optimizers run interleaved (A, B, A, B, ...; the order alternates every round
so neither always runs on caches warmed by the other), after a warm-up that also allocates
their state. Prints a markdown table: median step time of each, the median of the per-round
time ratios (target <= 1.05) and the bytes of optimizer state.

    PYTHONPATH=src python benchmarks/gssgd_step.py --reps 50 --threads 2 [--device cuda]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from torch.optim import Optimizer

from tamegrad.optim.gssgd import GeneralizedSignSGD


def resnet18_cifar_shapes(num_classes: int = 10) -> list[tuple[int, ...]]:
    """Parameter shapes of a CIFAR ResNet-18: 3x3 stem (no bias) + BN, 4 stages of 2 BasicBlocks
    (widths 64/128/256/512, each conv followed by BN weight+bias), 1x1 shortcut conv + BN at
    each stage transition, fc 512 x num_classes + bias."""
    shapes: list[tuple[int, ...]] = [(64, 3, 3, 3), (64,), (64,)]
    in_c = 64
    for width in (64, 128, 256, 512):
        for block in range(2):
            shapes += [(width, in_c, 3, 3), (width,), (width,)]
            shapes += [(width, width, 3, 3), (width,), (width,)]
            if block == 0 and in_c != width:
                shapes += [(width, in_c, 1, 1), (width,), (width,)]
            in_c = width
    shapes += [(num_classes, 512), (num_classes,)]
    return shapes


def make_params(
    shapes: list[tuple[int, ...]], seed: int, device: torch.device
) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    params = []
    for s in shapes:
        p = torch.randn(s, generator=g).to(device).requires_grad_()
        p.grad = (torch.randn(s, generator=g) * 1e-2).to(device)
        params.append(p)
    return params


def state_bytes(opt: Optimizer) -> int:
    """Bytes of every tensor in the optimizer state (step counters included)."""
    return sum(
        v.numel() * v.element_size()
        for st in opt.state.values()
        for v in st.values()
        if isinstance(v, torch.Tensor)
    )


def interleaved(
    a: Callable[[], object],
    b: Callable[[], object],
    reps: int,
    warmup: int,
    sync: Callable[[], None],
) -> tuple[list[float], list[float]]:
    for _ in range(warmup):
        a()
        b()
    sync()
    ta: list[float] = []
    tb: list[float] = []
    for r in range(reps):
        order = ((a, ta), (b, tb)) if r % 2 == 0 else ((b, tb), (a, ta))
        for fn, sink in order:
            sync()
            t0 = time.perf_counter()
            fn()
            sync()
            sink.append(time.perf_counter() - t0)
    return ta, tb


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=50, help="timed steps of each optimizer")
    ap.add_argument("--warmup", type=int, default=5, help="untimed rounds first")
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (CPU)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    sync: Callable[[], None] = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    shapes = resnet18_cifar_shapes()
    n = sum(torch.Size(s).numel() for s in shapes)
    assert n == 11_173_962, n  # the usual CIFAR ResNet-18 count

    gs_params = make_params(shapes, 0, device)
    adam_params = make_params(shapes, 0, device)
    gssgd = GeneralizedSignSGD(gs_params, lr=1e-3, foreach=True)
    adam = torch.optim.Adam(adam_params, lr=1e-3, foreach=True)

    t_gs, t_adam = interleaved(gssgd.step, adam.step, args.reps, args.warmup, sync)
    ratios = [x / y for x, y in zip(t_gs, t_adam)]
    med_gs, med_adam = statistics.median(t_gs), statistics.median(t_adam)
    ratio = statistics.median(ratios)

    print(
        f"CIFAR ResNet-18 shapes: {len(shapes)} tensors, {n:,} parameters; device {device}, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{args.reps} interleaved reps after {args.warmup} warm-up rounds\n"
    )
    print("| optimizer | median step (ms) | min step (ms) | state bytes |")
    print("|---|---:|---:|---:|")
    for name, t, opt in (
        ("GeneralizedSignSGD(foreach=True)", t_gs, gssgd),
        ("torch.optim.Adam(foreach=True)", t_adam, adam),
    ):
        print(
            f"| {name} | {statistics.median(t) * 1e3:.2f} | {min(t) * 1e3:.2f} "
            f"| {state_bytes(opt):,} |"
        )
    print(
        f"\nmedian of per-round ratios GSSGD/Adam: {ratio:.3f} "
        f"(ratio of medians {med_gs / med_adam:.3f}; target <= 1.05: "
        f"{'met' if ratio <= 1.05 else 'NOT met'})"
    )


if __name__ == "__main__":
    main()
