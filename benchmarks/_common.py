"""Helpers shared by the benchmark scripts (not part of the library)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch
from torch.optim import Optimizer


def resnet18_param_shapes(num_classes: int = 10, width: int = 64) -> list[tuple[int, ...]]:
    """Parameter shapes of a CIFAR ResNet-18 (3x3 stem, no max-pool): 11.17M at width 64."""
    shapes: list[tuple[int, ...]] = [(width, 3, 3, 3), (width,), (width,)]
    in_c = width
    for stage, mult in enumerate((1, 2, 4, 8)):
        out_c = width * mult
        for block in range(2):
            stride = 2 if stage > 0 and block == 0 else 1
            shapes += [(out_c, in_c, 3, 3), (out_c,), (out_c,)]
            shapes += [(out_c, out_c, 3, 3), (out_c,), (out_c,)]
            if stride != 1 or in_c != out_c:
                shapes += [(out_c, in_c, 1, 1), (out_c,), (out_c,)]
            in_c = out_c
    shapes += [(num_classes, in_c), (num_classes,)]
    return shapes


def make_params(shapes: list[tuple[int, ...]], seed: int = 0) -> list[torch.Tensor]:
    """Parameters with fixed random gradients attached."""
    g = torch.Generator().manual_seed(seed)
    params = []
    for s in shapes:
        p = torch.randn(s, generator=g).requires_grad_()
        p.grad = torch.randn(s, generator=g) * 1e-2
        params.append(p)
    return params


def state_bytes(optimizer: Optimizer) -> int:
    """Bytes of every tensor in the optimizer state (a wrapper's and its wrapped optimizer's)."""
    total = 0
    opts = [optimizer]
    inner = getattr(optimizer, "optimizer", None)
    if isinstance(inner, Optimizer):
        opts.append(inner)
    for opt in opts:
        for st in opt.state.values():
            for v in st.values():
                if isinstance(v, torch.Tensor) and v.dim() > 0:
                    total += v.numel() * v.element_size()
    return total


def interleaved_median_times(
    fns: list[Callable[[], object]], reps: int, warmup: int = 3
) -> list[float]:
    """Run ``fns`` round-robin ``reps`` times (after ``warmup`` rounds); median seconds each."""
    for _ in range(warmup):
        for fn in fns:
            fn()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(reps):
        for i, fn in enumerate(fns):
            t0 = time.perf_counter()
            fn()
            times[i].append(time.perf_counter() - t0)
    return [statistics.median(t) for t in times]


def interleaved_ratio(
    candidate: Callable[[], object], baseline: Callable[[], object], reps: int, warmup: int = 3
) -> tuple[float, float, float]:
    """Median candidate time, median baseline time, median of the per-round ratios."""
    for _ in range(warmup):
        candidate()
        baseline()
    tc: list[float] = []
    tb: list[float] = []
    for r in range(reps):
        # alternate which goes first so neither always runs on a cache warmed by the other
        order = (
            ((candidate, tc), (baseline, tb)) if r % 2 == 0 else ((baseline, tb), (candidate, tc))
        )
        for fn, sink in order:
            t0 = time.perf_counter()
            fn()
            sink.append(time.perf_counter() - t0)
    ratios = [c / b for c, b in zip(tc, tb)]
    return statistics.median(tc), statistics.median(tb), statistics.median(ratios)
