"""TRSGD: SGD (with momentum) under trajectory regularization."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

from ._common import foreach_heavy_ball, heavy_ball
from ._tr_base import TROptimizer
from ._validation import check_nonnegative, check_unit_interval
from .trajectory import folded_directions

__all__ = ["TRSGD", "trsgd"]


class TRSGD(TROptimizer):
    r"""SGD with trajectory regularization (Zhang et al., IJCAI 2019).

    Within a cycle of ``inner_steps`` steps, inner step ``s`` uses the direction

    .. math::
        d = \nabla f(w) + 2\frac{\lambda_w}{\eta}(w - \tilde w) + \text{wd}\, w

    (``\tilde w``: the weights at the cycle start), feeds it to heavy-ball momentum exactly as
    :class:`torch.optim.SGD` does (``buf = momentum * buf + (1 - dampening) * d``, Nesterov
    optional; the buffer is *not* reset between cycles) and steps with ``eta / (s + 1)``.

    Args:
        params: parameters or param groups.
        lr: learning rate ``eta`` (a Python float).
        lambda_w: penalty constant; ``None`` means ``0.1 * lr`` of each group (the paper's
            default: 0.01 at lr 0.1). The penalty coefficient is ``lambda_w / current lr``.
        inner_steps: cycle length ``S`` (paper: 10). ``S = 1`` is plain SGD.
        inner_decay: divide the lr by ``s + 1`` within a cycle (paper: on).
        momentum, dampening, weight_decay, nesterov, maximize: as in :class:`torch.optim.SGD`
            (weight decay is coupled L2, added after the penalty).
        anchor_dtype: store anchors in this dtype (e.g. ``torch.bfloat16`` halves TR's only
            extra memory); ``None`` keeps the parameter dtype.
        foreach: use the multi-tensor ``torch._foreach_*`` path (``None``: torch's default).

    The multi-tensor path folds the penalty into the weight-decay term and updates the momentum
    buffer in place, so it rounds differently from the per-tensor reference path (agreement is
    tested to 1e-6). Both paths keep one state layout, torch SGD's ``momentum_buffer`` (plus
    ``anchor``), so a checkpoint written on one path (CUDA defaults to foreach, CPU to
    per-tensor) resumes on the other. Tensor learning rates and sparse gradients are not
    supported.
    """

    def __init__(
        self,
        params: Any,
        lr: float = 1e-3,
        lambda_w: float | None = None,
        inner_steps: int = 10,
        inner_decay: bool = True,
        momentum: float = 0.0,
        dampening: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
        *,
        maximize: bool = False,
        anchor_dtype: torch.dtype | str | None = None,
        foreach: bool | None = None,
    ) -> None:
        defaults = {
            "lr": lr,
            "lambda_w": lambda_w,
            "inner_steps": inner_steps,
            "inner_decay": inner_decay,
            "anchor_dtype": anchor_dtype,
            "momentum": momentum,
            "dampening": dampening,
            "weight_decay": weight_decay,
            "nesterov": nesterov,
            "maximize": maximize,
            "foreach": foreach,
        }
        super().__init__(params, defaults)

    def _validate_group(self, group: dict[str, Any]) -> None:
        check_nonnegative("momentum", group["momentum"])
        check_unit_interval("dampening", group["dampening"], closed_right=True)
        check_nonnegative("weight_decay", group["weight_decay"])
        if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
            raise ValueError(
                "Invalid nesterov: Nesterov momentum requires momentum > 0 and dampening = 0 "
                f"(got momentum={group['momentum']}, dampening={group['dampening']})"
            )

    def _update(
        self,
        group: dict[str, Any],
        params: list[Tensor],
        grads: list[Tensor],
        anchors: list[Tensor],
        lr: float,
        coef: float,
        foreach: bool,
    ) -> None:
        momentum, dampening = group["momentum"], group["dampening"]
        common = {
            "lr": lr,
            "coef": coef,
            "weight_decay": group["weight_decay"],
            "momentum": momentum,
            "dampening": dampening,
            "maximize": group["maximize"],
        }
        bufs: list[Tensor | None] = []
        if momentum != 0:
            bufs = [self.state[p].get("momentum_buffer") for p in params]
        trsgd(params, grads, bufs, anchors, nesterov=group["nesterov"], foreach=foreach, **common)
        if momentum != 0:
            for p, buf in zip(params, bufs):
                self.state[p]["momentum_buffer"] = buf

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """torch's ``load_state_dict``; also reads checkpoints written before the foreach path
        kept torch's layout (``momentum_ema = scale * b`` with its ``momentum_ema_scale``)."""
        super().load_state_dict(state_dict)
        for st in self.state.values():
            if "momentum_ema" in st:
                scale = st.pop("momentum_ema_scale", 1.0)
                st["momentum_buffer"] = st.pop("momentum_ema").mul_(1.0 / scale)


def trsgd(
    params: list[Tensor],
    grads: list[Tensor],
    momentum_buffers: list[Tensor | None],
    anchors: list[Tensor],
    *,
    lr: float,
    coef: float,
    weight_decay: float,
    momentum: float,
    dampening: float,
    nesterov: bool,
    maximize: bool,
    foreach: bool,
) -> None:
    """Functional TRSGD inner step. ``lr`` is the inner step's lr; ``coef = 2 * lambda_w / lr``.

    New momentum buffers are written into ``momentum_buffers`` (in place of ``None``).
    ``anchors`` may be empty when ``coef == 0``.
    """
    fn = _multi_tensor_trsgd if foreach else _single_tensor_trsgd
    fn(
        params,
        grads,
        momentum_buffers,
        anchors,
        lr=lr,
        coef=coef,
        weight_decay=weight_decay,
        momentum=momentum,
        dampening=dampening,
        nesterov=nesterov,
        maximize=maximize,
    )


def _single_tensor_trsgd(
    params: list[Tensor],
    grads: list[Tensor],
    momentum_buffers: list[Tensor | None],
    anchors: list[Tensor],
    *,
    lr: float,
    coef: float,
    weight_decay: float,
    momentum: float,
    dampening: float,
    nesterov: bool,
    maximize: bool,
) -> None:
    # The reference path: the spec's order of operations, and torch.optim.SGD's exactly when
    # the penalty is zero.
    for i, param in enumerate(params):
        d = grads[i] if not maximize else -grads[i]
        if coef != 0.0:
            d = d.add(param.sub(anchors[i]), alpha=coef)
        if weight_decay != 0:
            d = d.add(param, alpha=weight_decay)
        if momentum != 0:
            d, momentum_buffers[i] = heavy_ball(
                d, momentum_buffers[i], momentum=momentum, dampening=dampening, nesterov=nesterov
            )
        param.add_(d, alpha=-lr)


def _multi_tensor_trsgd(
    params: list[Tensor],
    grads: list[Tensor],
    momentum_buffers: list[Tensor | None],
    anchors: list[Tensor],
    *,
    lr: float,
    coef: float,
    weight_decay: float,
    momentum: float,
    dampening: float,
    nesterov: bool,
    maximize: bool,
) -> None:
    if not params:
        return
    lists: list[list[Any]] = [params, grads]
    if momentum != 0:
        lists.append(momentum_buffers)
    if coef != 0.0:
        lists.append(anchors)
    grouped = Optimizer._group_tensors_by_device_and_dtype(lists, with_indices=True)  # type: ignore[arg-type]
    c_param = weight_decay + coef  # the penalty folded into the weight-decay term
    sign = -1.0 if maximize else 1.0
    for tensors, indices in grouped.values():
        dev_params: list[Tensor] = tensors[0]  # type: ignore[assignment]
        dev_grads: list[Tensor] = tensors[1]  # type: ignore[assignment]
        dev_bufs: list[Tensor | None] = tensors[2] if momentum != 0 else []
        dev_anchors: list[Tensor] = tensors[-1] if coef != 0.0 else []  # type: ignore[assignment]

        if momentum != 0 and not nesterov and all(b is not None for b in dev_bufs):
            # Fast path: accumulate straight into the buffers, no temporaries.
            bufs: list[Tensor] = dev_bufs  # type: ignore[assignment]
            scale = 1.0 - dampening
            torch._foreach_mul_(bufs, momentum)
            torch._foreach_add_(bufs, dev_grads, alpha=sign * scale)
            if c_param != 0.0:
                torch._foreach_add_(bufs, dev_params, alpha=scale * c_param)
            if coef != 0.0:
                torch._foreach_add_(bufs, dev_anchors, alpha=-scale * coef)
            torch._foreach_add_(dev_params, bufs, alpha=-lr)
            continue

        # General path: materialise d = sign * g + (wd + coef) * w - coef * anchor.
        d = folded_directions(dev_params, dev_grads, dev_anchors, coef, weight_decay, maximize)
        if momentum != 0:
            d = foreach_heavy_ball(
                d, dev_bufs, momentum=momentum, dampening=dampening, nesterov=nesterov
            )
            for j, b in zip(indices, dev_bufs):
                momentum_buffers[j] = b
        torch._foreach_add_(dev_params, d, alpha=-lr)
