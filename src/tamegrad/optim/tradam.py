"""TRAdam and TRAdamW: Adam under trajectory regularization."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

from ._tr_base import TROptimizer
from ._validation import check_betas, check_nonnegative
from .trajectory import folded_directions

__all__ = ["TRAdam", "TRAdamW", "tradam"]


class TRAdam(TROptimizer):
    r"""Adam with trajectory regularization (Zhang et al., IJCAI 2019).

    Adam's moments are computed on ``d = grad + 2 (lambda_w / lr) (w - anchor)`` (+ coupled L2
    weight decay), with the global step count (bias corrections are *not* reset per cycle), and
    the step size of inner step ``s`` is ``lr / (s + 1)``. With ``decoupled_weight_decay=True``
    the weights are decayed by ``1 - lr_s * weight_decay`` instead (AdamW style, applied after
    the direction is computed from the un-decayed weights).

    Args:
        params: parameters or param groups.
        lr: learning rate (a Python float).
        lambda_w: penalty constant; ``None`` means ``0.1 * lr`` (paper: 1e-4 at lr 1e-3).
        inner_steps, inner_decay, anchor_dtype, foreach: see :class:`~tamegrad.optim.TRSGD`.
        betas, eps, weight_decay, amsgrad, maximize: as in :class:`torch.optim.Adam`.
        decoupled_weight_decay: AdamW-style decay (see :class:`TRAdamW`).

    Complex parameters, tensor learning rates and sparse gradients are not supported.
    """

    def __init__(
        self,
        params: Any,
        lr: float = 1e-3,
        lambda_w: float | None = None,
        inner_steps: int = 10,
        inner_decay: bool = True,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        amsgrad: bool = False,
        *,
        decoupled_weight_decay: bool = False,
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
            "betas": betas,
            "eps": eps,
            "weight_decay": weight_decay,
            "amsgrad": amsgrad,
            "decoupled_weight_decay": decoupled_weight_decay,
            "maximize": maximize,
            "foreach": foreach,
        }
        super().__init__(params, defaults)

    def _validate_group(self, group: dict[str, Any]) -> None:
        group["betas"] = check_betas(group["betas"])
        check_nonnegative("eps", group["eps"])
        check_nonnegative("weight_decay", group["weight_decay"])

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
        exp_avgs, exp_avg_sqs, max_sqs, steps = [], [], [], []
        for p in params:
            if p.is_complex():
                raise ValueError(f"{type(self).__name__} does not support complex parameters")
            st = self.state[p]
            if "step" not in st:
                st["step"] = torch.tensor(0.0, dtype=torch.float32)
                st["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                st["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                if group["amsgrad"]:
                    st["max_exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            exp_avgs.append(st["exp_avg"])
            exp_avg_sqs.append(st["exp_avg_sq"])
            steps.append(st["step"])
            if group["amsgrad"]:
                max_sqs.append(st["max_exp_avg_sq"])
        beta1, beta2 = group["betas"]
        tradam(
            params,
            grads,
            exp_avgs,
            exp_avg_sqs,
            max_sqs,
            steps,
            anchors,
            lr=lr,
            coef=coef,
            beta1=beta1,
            beta2=beta2,
            eps=group["eps"],
            weight_decay=group["weight_decay"],
            decoupled_weight_decay=group["decoupled_weight_decay"],
            amsgrad=group["amsgrad"],
            maximize=group["maximize"],
            foreach=foreach,
        )


class TRAdamW(TRAdam):
    """:class:`TRAdam` with decoupled weight decay (default 1e-2, as :class:`torch.optim.AdamW`)."""

    def __init__(
        self,
        params: Any,
        lr: float = 1e-3,
        lambda_w: float | None = None,
        inner_steps: int = 10,
        inner_decay: bool = True,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        amsgrad: bool = False,
        *,
        maximize: bool = False,
        anchor_dtype: torch.dtype | str | None = None,
        foreach: bool | None = None,
    ) -> None:
        super().__init__(
            params,
            lr,
            lambda_w,
            inner_steps,
            inner_decay,
            betas,
            eps,
            weight_decay,
            amsgrad,
            decoupled_weight_decay=True,
            maximize=maximize,
            anchor_dtype=anchor_dtype,
            foreach=foreach,
        )


def tradam(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    max_exp_avg_sqs: list[Tensor],
    state_steps: list[Tensor],
    anchors: list[Tensor],
    *,
    lr: float,
    coef: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    decoupled_weight_decay: bool,
    amsgrad: bool,
    maximize: bool,
    foreach: bool,
) -> None:
    """Functional TRAdam inner step. ``lr`` is the inner step's lr; ``coef = 2*lambda_w/lr``.

    The per-tensor path follows ``torch.optim.adam._single_tensor_adam`` operation for
    operation, so with ``coef == 0`` it equals torch's Adam exactly; the multi-tensor path folds
    the penalty into the weight-decay pass and the bias correction into the step size (one pass
    fewer than torch's foreach Adam), so it agrees with torch to rounding.
    """
    fn = _multi_tensor_tradam if foreach else _single_tensor_tradam
    fn(
        params,
        grads,
        exp_avgs,
        exp_avg_sqs,
        max_exp_avg_sqs,
        state_steps,
        anchors,
        lr=lr,
        coef=coef,
        beta1=beta1,
        beta2=beta2,
        eps=eps,
        weight_decay=weight_decay,
        decoupled_weight_decay=decoupled_weight_decay,
        amsgrad=amsgrad,
        maximize=maximize,
    )


def _single_tensor_tradam(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    max_exp_avg_sqs: list[Tensor],
    state_steps: list[Tensor],
    anchors: list[Tensor],
    *,
    lr: float,
    coef: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    decoupled_weight_decay: bool,
    amsgrad: bool,
    maximize: bool,
) -> None:
    for i, param in enumerate(params):
        d = grads[i] if not maximize else -grads[i]
        exp_avg, exp_avg_sq, step_t = exp_avgs[i], exp_avg_sqs[i], state_steps[i]
        step_t += 1
        if coef != 0.0:
            d = d.add(param.sub(anchors[i]), alpha=coef)
        if weight_decay != 0:
            if decoupled_weight_decay:
                param.mul_(1 - lr * weight_decay)
            else:
                d = d.add(param, alpha=weight_decay)
        exp_avg.lerp_(d, 1 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(d, d, value=1 - beta2)
        step = float(step_t.item())
        bias_correction1 = 1 - beta1**step
        bias_correction2 = 1 - beta2**step
        step_size = lr / bias_correction1
        bias_correction2_sqrt = bias_correction2**0.5
        if amsgrad:
            torch.maximum(max_exp_avg_sqs[i], exp_avg_sq, out=max_exp_avg_sqs[i])
            denom = (max_exp_avg_sqs[i].sqrt() / bias_correction2_sqrt).add_(eps)
        else:
            denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(eps)
        param.addcdiv_(exp_avg, denom, value=-step_size)


def _multi_tensor_tradam(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    max_exp_avg_sqs: list[Tensor],
    state_steps: list[Tensor],
    anchors: list[Tensor],
    *,
    lr: float,
    coef: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    decoupled_weight_decay: bool,
    amsgrad: bool,
    maximize: bool,
) -> None:
    if not params:
        return
    lists: list[list[Any]] = [params, grads, exp_avgs, exp_avg_sqs, state_steps]
    if amsgrad:
        lists.append(max_exp_avg_sqs)
    if coef != 0.0:
        lists.append(anchors)
    grouped = Optimizer._group_tensors_by_device_and_dtype(lists)  # type: ignore[arg-type]
    # The penalty is folded into the coupled weight-decay term: one pass over w, one over a.
    coupled_wd = 0.0 if decoupled_weight_decay else weight_decay
    for tensors, _ in grouped.values():
        dev_params: list[Tensor] = tensors[0]  # type: ignore[assignment]
        dev_grads: list[Tensor] = tensors[1]  # type: ignore[assignment]
        dev_exp_avgs: list[Tensor] = tensors[2]  # type: ignore[assignment]
        dev_exp_avg_sqs: list[Tensor] = tensors[3]  # type: ignore[assignment]
        dev_steps: list[Tensor] = tensors[4]  # type: ignore[assignment]
        dev_max: list[Tensor] = tensors[5] if amsgrad else []  # type: ignore[assignment]
        dev_anchors: list[Tensor] = tensors[-1] if coef != 0.0 else []  # type: ignore[assignment]

        if dev_steps[0].is_cpu:
            torch._foreach_add_(dev_steps, torch.tensor(1.0, device="cpu"), alpha=1.0)
        else:
            torch._foreach_add_(dev_steps, 1)

        d = folded_directions(dev_params, dev_grads, dev_anchors, coef, coupled_wd, maximize)
        if decoupled_weight_decay and weight_decay != 0:
            torch._foreach_mul_(dev_params, 1 - lr * weight_decay)

        torch._foreach_lerp_(dev_exp_avgs, d, 1 - beta1)
        torch._foreach_mul_(dev_exp_avg_sqs, beta2)
        torch._foreach_addcmul_(dev_exp_avg_sqs, d, d, 1 - beta2)
        del d

        # sqrt(v)/bc2_sqrt + eps folded as (sqrt(v) + eps*bc2_sqrt) / bc2_sqrt, with the
        # 1/bc2_sqrt moved into the step size: one pass over the denominators fewer than
        # torch's non-capturable foreach Adam (rounding differs from it by ~1 ulp).
        bc2_sqrt = [(1 - beta2 ** float(s.item())) ** 0.5 for s in dev_steps]
        step_size = [-lr * b / (1 - beta1 ** float(s.item())) for b, s in zip(bc2_sqrt, dev_steps)]
        if amsgrad:
            torch._foreach_maximum_(dev_max, dev_exp_avg_sqs)
        denom = torch._foreach_sqrt(dev_max if amsgrad else dev_exp_avg_sqs)
        torch._foreach_add_(denom, [eps * b for b in bc2_sqrt])
        torch._foreach_addcdiv_(dev_params, dev_exp_avgs, denom, step_size)
