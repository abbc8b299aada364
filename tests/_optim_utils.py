"""Shared helpers for optimizer tests: a deterministic noisy problem and trajectory runners."""

from __future__ import annotations

import io
from collections.abc import Callable

import torch
from torch.optim import Optimizer

MakeOpt = Callable[[list[torch.Tensor]], Optimizer]


def make_params(
    seed: int = 0, dtype: torch.dtype = torch.float32, device: str = "cpu"
) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    shapes = [(5, 3), (7,), (2, 2, 3)]
    return [torch.randn(s, generator=g, dtype=dtype).to(device).requires_grad_() for s in shapes]


def noisy_loss(params: list[torch.Tensor], t: int) -> torch.Tensor:
    """A convex quadratic plus step-dependent linear noise (a batch-size-1 style gradient)."""
    g = torch.Generator().manual_seed(1000 + t)
    loss = torch.zeros((), device=params[0].device, dtype=params[0].dtype)
    for p in params:
        noise = torch.randn(p.shape, generator=g, dtype=p.dtype).to(p.device)
        loss = loss + 0.5 * (p**2).sum() + (p * noise).sum()
    return loss


def run_steps(opt: Optimizer, params: list[torch.Tensor], start: int, stop: int) -> None:
    for t in range(start, stop):
        opt.zero_grad()
        noisy_loss(params, t).backward()
        opt.step()


def trajectory(
    make: MakeOpt, steps: int = 25, seed: int = 0, device: str = "cpu"
) -> list[torch.Tensor]:
    params = make_params(seed, device=device)
    opt = make(params)
    run_steps(opt, params, 0, steps)
    return [p.detach().cpu().clone() for p in params]


def max_abs_diff(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    return max((x - y).abs().max().item() for x, y in zip(a, b))


def roundtrip(state_dict: dict) -> dict:
    """Serialize with torch.save and load back with weights_only=True."""
    buf = io.BytesIO()
    torch.save(state_dict, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)
