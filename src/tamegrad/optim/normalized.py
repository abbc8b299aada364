"""Baselines of the Generalized SignSGD paper: normalised SGD and SGD with gradient clipping.

Both use the GLOBAL L2 norm of a parameter group: the norm of all of the group's gradients (or
directions) viewed as one vector, computed like ``torch.nn.utils.clip_grad_norm_`` (per-tensor
norms, grouped by device and dtype, then the norm of the stacked norms). With several parameter
groups each group is normalised / clipped on its own: put every parameter in one group to get
the whole-model norm.

What this module cannot do: no sparse gradients (``RuntimeError``), no ``fused`` /
``capturable`` / ``differentiable`` modes, no norms other than L2, no ``dampening``; a Tensor
``lr`` is read with ``float()`` at every step.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import torch
from torch import Tensor
from torch.optim.optimizer import Optimizer, ParamsT, _default_to_fused_or_foreach

from tamegrad.optim._common import closure_loss, foreach_heavy_ball, heavy_ball
from tamegrad.optim._validation import (
    check_flag,
    check_no_sparse,
    check_nonnegative,
    check_positive,
    check_unit_interval,
    validated_group,
)

__all__ = ["ClippedSGD", "NormalizedSGD", "global_norm", "register_all"]

# The constant torch.nn.utils.clip_grad_norm_ adds to the norm before dividing.
CLIP_EPS = 1e-6


def global_norm(tensors: list[Tensor], *, foreach: bool = False) -> Tensor:
    """L2 norm of ``tensors`` viewed as one vector, computed as ``clip_grad_norm_`` does.

    Returns a 0-d tensor on the first tensor's device (``tensor(0.)`` for an empty list).
    """
    if len(tensors) == 0:
        return torch.tensor(0.0)
    first_device = tensors[0].device
    grouped = Optimizer._group_tensors_by_device_and_dtype([tensors])  # type: ignore[list-item]
    norms: list[Tensor] = []
    for (device_tensors_,), _ in grouped.values():
        device_tensors = cast(list[Tensor], device_tensors_)
        if foreach:
            norms.extend(torch._foreach_norm(device_tensors, 2.0))
        else:
            norms.extend(torch.linalg.vector_norm(t, 2.0) for t in device_tensors)
    return torch.linalg.vector_norm(torch.stack([n.to(first_device) for n in norms]), 2.0)


def _directions(
    params: list[Tensor],
    grads: list[Tensor],
    bufs: list[Tensor | None],
    *,
    scale: Tensor | None,
    weight_decay: float,
    momentum: float,
    nesterov: bool,
    maximize: bool,
    foreach: bool,
) -> list[Tensor]:
    """SGD's search direction per tensor: ``[-](scale*g) + wd*w``, then momentum / Nesterov.

    Matches ``torch.optim.SGD`` (buffer initialised to the first direction, no dampening).
    ``bufs`` is updated in place (new buffers are stored into it). Returns the directions in
    the order of ``params`` on both paths (so a later global norm sums in the same order).
    Never writes into ``grads``.
    """
    if not foreach:
        dirs: list[Tensor] = []
        for i, p in enumerate(params):
            g = grads[i]
            if scale is not None:
                g = g.mul(scale.to(g.device))
            if maximize:
                g = -g
            if weight_decay != 0:
                g = g.add(p, alpha=weight_decay)
            if momentum != 0:
                g, bufs[i] = heavy_ball(
                    g, bufs[i], momentum=momentum, dampening=0.0, nesterov=nesterov
                )
            dirs.append(g)
        return dirs

    out_dirs: list[Tensor | None] = [None] * len(params)
    grouped = Optimizer._group_tensors_by_device_and_dtype(
        [params, grads, bufs],  # type: ignore[list-item]
        with_indices=True,
    )
    for (device_params_, device_grads_, device_bufs), indices in grouped.values():
        device_params = cast(list[Tensor], device_params_)
        device_grads = cast(list[Tensor], device_grads_)
        owned = False  # whether device_grads are our own tensors (safe to modify)
        if scale is not None:
            device_scale = scale.to(device_params[0].device)
            device_grads = cast(list[Tensor], torch._foreach_mul(device_grads, device_scale))
            owned = True
        if maximize:
            if owned:
                torch._foreach_neg_(device_grads)
            else:
                device_grads = cast(list[Tensor], torch._foreach_neg(device_grads))
                owned = True
        if weight_decay != 0:
            if owned:
                torch._foreach_add_(device_grads, device_params, alpha=weight_decay)
            else:
                device_grads = cast(
                    list[Tensor],
                    torch._foreach_add(device_grads, device_params, alpha=weight_decay),
                )
        if momentum != 0:
            device_grads = foreach_heavy_ball(
                device_grads, device_bufs, momentum=momentum, dampening=0.0, nesterov=nesterov
            )
            for j, b in zip(indices, device_bufs):
                bufs[j] = b
        for j, d in zip(indices, device_grads):
            out_dirs[j] = d
    return cast(list[Tensor], out_dirs)


class _GlobalNormSGD(Optimizer):
    """Shared machinery: hyper-parameter checks, momentum state, grouping of a step."""

    def __init__(self, params: ParamsT, defaults: dict[str, Any]) -> None:
        self._validate(defaults)
        super().__init__(params, defaults)

    def _validate(self, group: dict[str, Any]) -> None:
        check_nonnegative("lr", group["lr"])
        group["momentum"] = check_unit_interval("momentum", group["momentum"])
        group["weight_decay"] = check_nonnegative("weight_decay", group["weight_decay"])
        for flag in ("nesterov", "maximize"):
            check_flag(flag, group[flag])
        check_flag("foreach", group["foreach"], allow_none=True)
        if group["nesterov"] and group["momentum"] <= 0:
            raise ValueError(
                f"Invalid nesterov: True requires momentum > 0, got momentum={group['momentum']}"
            )

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group; its own hyper-parameters are validated (before it is appended)."""
        super().add_param_group(validated_group(self.defaults, param_group, self._validate))

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        for group in self.param_groups:
            group.setdefault("nesterov", False)
            group.setdefault("maximize", False)
            group.setdefault("foreach", None)

    def _update(
        self,
        group: dict[str, Any],
        params: list[Tensor],
        grads: list[Tensor],
        bufs: list[Tensor | None],
        foreach: bool,
    ) -> None:
        raise NotImplementedError

    @torch.no_grad()
    def step(  # type: ignore[override]
        self, closure: Callable[[], float] | None = None
    ) -> float | None:
        """Perform one optimisation step; ``closure`` (re-evaluating the loss) is optional."""
        loss = closure_loss(closure)
        for group in self.param_groups:
            params: list[Tensor] = []
            grads: list[Tensor] = []
            bufs: list[Tensor | None] = []
            for p in group["params"]:
                if p.grad is None:
                    continue
                check_no_sparse(type(self).__name__, (p.grad,))
                params.append(p)
                grads.append(p.grad)
                bufs.append(self.state[p].get("momentum_buffer"))
            if not params:
                continue
            foreach = group["foreach"]
            if foreach is None:
                _, foreach = _default_to_fused_or_foreach(
                    params, differentiable=False, use_fused=False
                )
            self._update(group, params, grads, bufs, bool(foreach))
            if group["momentum"] != 0:
                for p, buf in zip(params, bufs):
                    self.state[p]["momentum_buffer"] = buf
        return loss


class NormalizedSGD(_GlobalNormSGD):
    """Normalised SGD: ``w -= lr * d / max(||d||, eps)`` with ``||d||`` the group's global norm.

    ``d`` is torch SGD's direction: ``g (+ weight_decay * w)``, or its momentum buffer
    ``buf = momentum * buf + d`` (Nesterov: ``g + momentum * buf``). Since the direction is
    normalised, this heavy-ball buffer gives exactly the same steps as an EMA
    ``(1 - momentum)``-weighted buffer. Each step has L2 norm ``lr`` over the parameter group
    (less only when ``||d|| < eps``; a zero direction gives a zero step).

    Args:
        params: parameters or parameter groups (each group normalised separately).
        lr: step length (>= 0).
        momentum: in [0, 1). Default 0.
        weight_decay: coupled L2 coefficient (>= 0), added before normalisation. Default 0.
        nesterov: Nesterov momentum (needs momentum > 0).
        maximize: ascend instead of descend.
        foreach: multi-tensor path (True; works on CPU), per-tensor (False) or torch's
            default (None).
        eps: floor of the norm (> 0), guarding against division by zero. Default 1e-12.
    """

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor,
        momentum: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
        eps: float = 1e-12,
    ) -> None:
        defaults: dict[str, Any] = {
            "lr": lr,
            "momentum": momentum,
            "weight_decay": weight_decay,
            "nesterov": nesterov,
            "maximize": maximize,
            "foreach": foreach,
            "eps": eps,
        }
        super().__init__(params, defaults)

    def _validate(self, group: dict[str, Any]) -> None:
        super()._validate(group)
        group["eps"] = check_positive("eps", group["eps"])

    def _update(
        self,
        group: dict[str, Any],
        params: list[Tensor],
        grads: list[Tensor],
        bufs: list[Tensor | None],
        foreach: bool,
    ) -> None:
        dirs = _directions(
            params,
            grads,
            bufs,
            scale=None,
            weight_decay=group["weight_decay"],
            momentum=group["momentum"],
            nesterov=group["nesterov"],
            maximize=group["maximize"],
            foreach=foreach,
        )
        norm = global_norm(dirs, foreach=foreach)
        norm = norm.to(torch.promote_types(norm.dtype, torch.float32))
        coef = (-float(group["lr"])) / norm.clamp_min(group["eps"])
        if foreach:
            grouped = Optimizer._group_tensors_by_device_and_dtype(
                [params, dirs]  # type: ignore[list-item]
            )
            for (device_params_, device_dirs_), _ in grouped.values():
                device_params = cast(list[Tensor], device_params_)
                device_dirs = cast(list[Tensor], device_dirs_)
                device_coef = coef.to(device_params[0].device)
                torch._foreach_add_(device_params, torch._foreach_mul(device_dirs, device_coef))
        else:
            for p, d in zip(params, dirs):
                p.add_(d.mul(coef.to(p.device)))


class ClippedSGD(_GlobalNormSGD):
    """SGD on the gradient clipped to global norm ``max_norm``, without touching ``p.grad``.

    Per group: ``c = min(max_norm / (||g|| + 1e-6), 1)`` with ``||g||`` the global L2 norm of the
    group's gradients, then ``torch.optim.SGD`` (optional momentum / Nesterov, dampening 0) on
    ``c * g``. Identical to ``torch.nn.utils.clip_grad_norm_(group_params, max_norm)`` followed
    by ``torch.optim.SGD``: weight decay is added AFTER clipping, so it is never clipped.

    Args:
        params: parameters or parameter groups (each group clipped by its own norm).
        lr: learning rate (>= 0).
        momentum: in [0, 1). Default 0.
        weight_decay: coupled L2 coefficient (>= 0). Default 0.
        max_norm: clipping threshold (> 0). Default 1.0.
        nesterov: Nesterov momentum (needs momentum > 0).
        maximize: ascend instead of descend.
        foreach: multi-tensor path (True; works on CPU), per-tensor (False) or torch's
            default (None).
    """

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor,
        momentum: float = 0.0,
        weight_decay: float = 0.0,
        max_norm: float = 1.0,
        nesterov: bool = False,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
    ) -> None:
        defaults: dict[str, Any] = {
            "lr": lr,
            "momentum": momentum,
            "weight_decay": weight_decay,
            "max_norm": max_norm,
            "nesterov": nesterov,
            "maximize": maximize,
            "foreach": foreach,
        }
        super().__init__(params, defaults)

    def _validate(self, group: dict[str, Any]) -> None:
        super()._validate(group)
        group["max_norm"] = check_positive("max_norm", group["max_norm"])

    def _update(
        self,
        group: dict[str, Any],
        params: list[Tensor],
        grads: list[Tensor],
        bufs: list[Tensor | None],
        foreach: bool,
    ) -> None:
        total = global_norm(grads, foreach=foreach)
        scale = torch.clamp(group["max_norm"] / (total + CLIP_EPS), max=1.0)
        dirs = _directions(
            params,
            grads,
            bufs,
            scale=scale,
            weight_decay=group["weight_decay"],
            momentum=group["momentum"],
            nesterov=group["nesterov"],
            maximize=group["maximize"],
            foreach=foreach,
        )
        lr = float(group["lr"])
        if foreach:
            grouped = Optimizer._group_tensors_by_device_and_dtype(
                [params, dirs]  # type: ignore[list-item]
            )
            for (device_params_, device_dirs_), _ in grouped.values():
                torch._foreach_add_(
                    cast(list[Tensor], device_params_),
                    cast(list[Tensor], device_dirs_),
                    alpha=-lr,
                )
        else:
            for p, d in zip(params, dirs):
                p.add_(d, alpha=-lr)


def register_all(register: Callable[..., Any]) -> None:
    """Register ``normalized-sgd`` and ``clipped-sgd`` with ``tamegrad.optim.registry.register``."""
    register(
        "normalized-sgd",
        NormalizedSGD,
        "Normalised SGD: step of length lr along the (momentum) direction, global norm per group.",
    )
    register(
        "clipped-sgd",
        ClippedSGD,
        "SGD with global-norm gradient clipping (clip_grad_norm_ + SGD), momentum 0 by default.",
        momentum=0.0,
        max_norm=1.0,
    )
