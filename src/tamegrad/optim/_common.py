"""Small pieces of ``step()`` that several tamegrad optimizers share (one copy each).

* :func:`closure_loss`: the closure block of ``torch.optim`` (re-evaluate the loss with grad
  enabled inside a ``no_grad`` step).
* :func:`heavy_ball` / :func:`foreach_heavy_ball`: torch SGD's momentum buffer
  ``b = momentum * b + (1 - dampening) * d`` (``b = d`` on the first step), returning the
  direction ``b`` or, with Nesterov, ``d + momentum * b``; the same elementary operations in
  the same order on both paths, so the per-tensor one equals :class:`torch.optim.SGD`'s.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

__all__ = ["closure_loss", "foreach_heavy_ball", "heavy_ball"]


def closure_loss(closure: Callable[[], Any] | None) -> Any:
    """``closure()`` evaluated with gradients enabled (``None`` when there is no closure)."""
    if closure is None:
        return None
    with torch.enable_grad():
        return closure()


def heavy_ball(
    d: Tensor,
    buf: Tensor | None,
    *,
    momentum: float,
    dampening: float,
    nesterov: bool,
) -> tuple[Tensor, Tensor]:
    """One tensor's momentum step: ``(direction, buffer)``; a new buffer when ``buf`` is None.

    ``d`` is never modified (the first buffer is a copy of it).
    """
    if buf is None:
        buf = d.detach().clone()
    else:
        buf.mul_(momentum).add_(d, alpha=1 - dampening)
    return (d.add(buf, alpha=momentum) if nesterov else buf), buf


def foreach_heavy_ball(
    ds: list[Tensor],
    bufs: list[Tensor | None],
    *,
    momentum: float,
    dampening: float,
    nesterov: bool,
) -> list[Tensor]:
    """:func:`heavy_ball` over lists on one device and dtype, with ``torch._foreach_*`` ops.

    New buffers replace the ``None`` entries of ``bufs`` in place; returns the directions
    (the buffers themselves without Nesterov). ``ds`` is never modified.
    """
    old = [(j, b) for j, b in enumerate(bufs) if b is not None]
    if old:
        old_bufs = [b for _, b in old]
        torch._foreach_mul_(old_bufs, momentum)
        torch._foreach_add_(old_bufs, [ds[j] for j, _ in old], alpha=1 - dampening)
    for j, b in enumerate(bufs):
        if b is None:
            bufs[j] = ds[j].detach().clone()
    full: list[Tensor] = bufs  # type: ignore[assignment]
    return list(torch._foreach_add(ds, full, alpha=momentum)) if nesterov else list(full)
