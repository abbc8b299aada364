"""Generalized SignSGD (Crawshaw, Liu, Orabona, Zhang, Zhuang, NeurIPS 2022, arXiv 2208.11195).

Per coordinate, with ``t`` counting steps::

    g = grad (+ weight_decay * w, coupled L2, unless decoupled_weight_decay)
    m = beta1 * m + (1 - beta1) * g
    v = beta2 * v + (1 - beta2) * m**2        # EMA of the squared MOMENTUM, not of g**2
    w -= lr * m_hat / (sqrt(v_hat) + eps)      # m_hat = m, v_hat = v unless bias_correction

``beta2 = 0`` gives Signum (``lr * m / (|m| + eps)``), ``beta1 = beta2 = 0`` plain SignSGD, and
without bias correction every coordinate moves by at most ``lr / sqrt(1 - beta2)`` per step.

Like ``torch/optim/adam.py`` there is a per-tensor reference path and a multi-tensor
``torch._foreach_*`` path.  Both run the *same* elementary operations in the *same* order, so on
CPU (where foreach ops loop over the per-tensor kernels) they agree bit for bit; a sign-like step
would otherwise turn a last-bit difference in a near-zero momentum into a full-size step.

What this module cannot do:

* no ``fused``, ``capturable`` (CUDA graphs) or ``differentiable`` modes;
* a Tensor ``lr`` is accepted but read with ``float()`` at every step (a host sync on GPU);
* sparse gradients raise ``RuntimeError``;
* complex parameters are treated as pairs of independent real coordinates (``view_as_real``);
* ``m**2`` overflowing the dtype (``|m| > ~1.8e19`` in float32) is not guarded: with
  ``beta2 = 0`` the next step then multiplies ``inf`` by 0 and produces NaN.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, cast

import torch
from torch import Tensor
from torch.optim.optimizer import (
    Optimizer,
    ParamsT,
    _default_to_fused_or_foreach,
    _get_scalar_dtype,
    _view_as_real,
)

from tamegrad.optim._common import closure_loss
from tamegrad.optim._validation import (
    check_betas,
    check_flag,
    check_no_sparse,
    check_nonnegative,
    check_positive,
    validated_group,
)

__all__ = ["GeneralizedSignSGD", "gssgd", "max_coordinate_step", "register_all"]


class GeneralizedSignSGD(Optimizer):
    """Generalized SignSGD: Adam-like, but the second moment tracks the squared momentum.

    Args:
        params: parameters or parameter groups (each group may override any hyper-parameter).
        lr: learning rate (float or one-element Tensor, >= 0). Default 1e-3.
        betas: ``(beta1, beta2)``, each in [0, 1). Default (0.9, 0.999). ``beta2 = 0`` is
            Signum, ``(0, 0)`` plain SignSGD.
        eps: added to ``sqrt(v_hat)``; must be > 0 (with 0, a coordinate whose gradient has
            always been zero, e.g. a padding embedding row, would get 0/0 = NaN). Default 1e-8.
        weight_decay: L2 coefficient (>= 0). Coupled (added to the gradient, as the authors
            do) unless ``decoupled_weight_decay``. Default 0.
        decoupled_weight_decay: apply ``w *= 1 - lr * weight_decay`` outside the normalisation
            (AdamW style) instead of adding ``weight_decay * w`` to the gradient.
        bias_correction: divide ``m`` by ``1 - beta1**t`` and ``v`` by ``1 - beta2**t``
            (off by default, as in the paper). Note: because ``v`` tracks ``m**2`` and ``m`` is
            itself biased, the corrected first step is ``lr / (1 - beta1)`` per coordinate, and
            the per-step bound becomes ``lr * sqrt(1 - beta2**t) / ((1 - beta1**t) *
            sqrt(1 - beta2))`` instead of ``lr / sqrt(1 - beta2)``.
        maximize: ascend instead of descend.
        foreach: ``True`` multi-tensor path (works on CPU too), ``False`` per-tensor path,
            ``None`` torch's default (foreach when every parameter is on a foreach-capable
            accelerator, so per-tensor on CPU).

    State per parameter: ``step`` (float32 CPU scalar tensor, as in ``torch.optim.Adam``),
    ``exp_avg`` (m) and ``exp_avg_sq`` (v). ``p.grad`` is never written to; parameters whose
    ``grad`` is None are skipped (no state is created for them).
    """

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        *,
        decoupled_weight_decay: bool = False,
        bias_correction: bool = False,
        maximize: bool = False,
        foreach: bool | None = None,
    ) -> None:
        defaults: dict[str, Any] = {
            "lr": lr,
            "betas": betas,
            "eps": eps,
            "weight_decay": weight_decay,
            "decoupled_weight_decay": decoupled_weight_decay,
            "bias_correction": bias_correction,
            "maximize": maximize,
            "foreach": foreach,
        }
        _validate_group(defaults)
        super().__init__(params, defaults)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group; its own hyper-parameters are validated (before it is appended)."""
        super().add_param_group(validated_group(self.defaults, param_group, _validate_group))

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        for group in self.param_groups:
            group.setdefault("decoupled_weight_decay", False)
            group.setdefault("bias_correction", False)
            group.setdefault("maximize", False)
            group.setdefault("foreach", None)
            for p in group["params"]:
                p_state = self.state.get(p, [])
                if len(p_state) != 0 and not torch.is_tensor(p_state["step"]):
                    p_state["step"] = torch.tensor(
                        float(p_state["step"]), dtype=_get_scalar_dtype()
                    )

    def _init_group(
        self,
        group: dict[str, Any],
        params: list[Tensor],
        grads: list[Tensor],
        exp_avgs: list[Tensor],
        exp_avg_sqs: list[Tensor],
        state_steps: list[Tensor],
    ) -> bool:
        has_complex = False
        for p in group["params"]:
            if p.grad is None:
                continue
            check_no_sparse(type(self).__name__, (p.grad,))
            has_complex |= torch.is_complex(p)
            params.append(p)
            grads.append(p.grad)
            state = self.state[p]
            if len(state) == 0:
                # Like torch Adam (non-capturable): the step counter lives on the CPU.
                state["step"] = torch.tensor(0.0, dtype=_get_scalar_dtype())
                state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            exp_avgs.append(state["exp_avg"])
            exp_avg_sqs.append(state["exp_avg_sq"])
            state_steps.append(state["step"])
        return has_complex

    @torch.no_grad()
    def step(  # type: ignore[override]
        self, closure: Callable[[], float] | None = None
    ) -> float | None:
        """Perform one optimisation step; ``closure`` (re-evaluating the loss) is optional."""
        loss = closure_loss(closure)

        for group in self.param_groups:
            params: list[Tensor] = []
            grads: list[Tensor] = []
            exp_avgs: list[Tensor] = []
            exp_avg_sqs: list[Tensor] = []
            state_steps: list[Tensor] = []
            has_complex = self._init_group(group, params, grads, exp_avgs, exp_avg_sqs, state_steps)
            beta1, beta2 = group["betas"]
            gssgd(
                params,
                grads,
                exp_avgs,
                exp_avg_sqs,
                state_steps,
                foreach=group["foreach"],
                has_complex=has_complex,
                lr=group["lr"],
                beta1=beta1,
                beta2=beta2,
                eps=group["eps"],
                weight_decay=group["weight_decay"],
                decoupled_weight_decay=group["decoupled_weight_decay"],
                bias_correction=group["bias_correction"],
                maximize=group["maximize"],
            )
        return loss


def _validate_group(group: dict[str, Any]) -> None:
    check_nonnegative("lr", group["lr"])
    group["betas"] = check_betas(group["betas"])
    group["eps"] = check_positive("eps", group["eps"])
    group["weight_decay"] = check_nonnegative("weight_decay", group["weight_decay"])
    for flag in ("decoupled_weight_decay", "bias_correction", "maximize"):
        check_flag(flag, group[flag])
    check_flag("foreach", group["foreach"], allow_none=True)


def gssgd(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    state_steps: list[Tensor],
    *,
    foreach: bool | None = None,
    has_complex: bool = False,
    lr: float | Tensor,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    decoupled_weight_decay: bool,
    bias_correction: bool,
    maximize: bool,
) -> None:
    """Functional Generalized SignSGD step over aligned lists (updates params and state in place).

    ``state_steps`` are scalar tensors incremented here. ``foreach=None`` picks torch's default.
    """
    if foreach is None:
        _, foreach = _default_to_fused_or_foreach(params, differentiable=False, use_fused=False)
    func = _multi_tensor_gssgd if foreach else _single_tensor_gssgd
    func(
        params,
        grads,
        exp_avgs,
        exp_avg_sqs,
        state_steps,
        has_complex=has_complex,
        lr=float(lr),
        beta1=float(beta1),
        beta2=float(beta2),
        eps=float(eps),
        weight_decay=float(weight_decay),
        decoupled_weight_decay=decoupled_weight_decay,
        bias_correction=bias_correction,
        maximize=maximize,
    )


# The two implementations below must perform identical operations in identical order:
#   complex tensors -> real views; step += 1
#   decoupled: w *= 1 - lr*wd          | coupled: g = g + wd*w   (new tensor, never p.grad)
#   m.lerp_(g, 1 - beta1)
#   v.mul_(beta2).addcmul_(m, m, value=1 - beta2)
#   denom = sqrt(v) [/ sqrt(1 - beta2**t)] + eps
#   w.addcdiv_(m, denom, value=-lr [/ (1 - beta1**t)])


def _single_tensor_gssgd(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    state_steps: list[Tensor],
    *,
    has_complex: bool,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    decoupled_weight_decay: bool,
    bias_correction: bool,
    maximize: bool,
) -> None:
    del has_complex  # handled per tensor below
    for i, param in enumerate(params):
        grad = grads[i] if not maximize else -grads[i]
        exp_avg = exp_avgs[i]
        exp_avg_sq = exp_avg_sqs[i]
        step_t = state_steps[i]

        if torch.is_complex(param):  # real view first: complex mul/add round differently
            grad = torch.view_as_real(grad)
            exp_avg = torch.view_as_real(exp_avg)
            exp_avg_sq = torch.view_as_real(exp_avg_sq)
            param = torch.view_as_real(param)

        step_t += 1

        if weight_decay != 0:
            if decoupled_weight_decay:
                param.mul_(1 - lr * weight_decay)
            else:
                grad = grad.add(param, alpha=weight_decay)

        exp_avg.lerp_(grad, 1 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(exp_avg, exp_avg, value=1 - beta2)

        denom = exp_avg_sq.sqrt()
        if bias_correction:
            step = step_t.item()
            denom.div_((1 - beta2**step) ** 0.5)
            step_size = lr / (1 - beta1**step)
        else:
            step_size = lr
        denom.add_(eps)
        param.addcdiv_(exp_avg, denom, value=-step_size)


def _multi_tensor_gssgd(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    state_steps: list[Tensor],
    *,
    has_complex: bool,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    decoupled_weight_decay: bool,
    bias_correction: bool,
    maximize: bool,
) -> None:
    if len(params) == 0:
        return

    grouped = Optimizer._group_tensors_by_device_and_dtype(
        [params, grads, exp_avgs, exp_avg_sqs, state_steps]  # type: ignore[list-item]
    )
    for (
        device_params_,
        device_grads_,
        device_exp_avgs_,
        device_exp_avg_sqs_,
        device_state_steps_,
    ), _ in grouped.values():
        device_params = cast(list[Tensor], device_params_)
        device_grads = cast(list[Tensor], device_grads_)
        device_exp_avgs = cast(list[Tensor], device_exp_avgs_)
        device_exp_avg_sqs = cast(list[Tensor], device_exp_avg_sqs_)
        device_state_steps = cast(list[Tensor], device_state_steps_)

        if maximize:
            device_grads = cast(list[Tensor], torch._foreach_neg(device_grads))

        if has_complex:
            _view_as_real(device_params, device_grads, device_exp_avgs, device_exp_avg_sqs)

        # Step counters are CPU scalars: add a wrapped tensor once (torch Adam's trick).
        if device_state_steps[0].is_cpu:
            torch._foreach_add_(device_state_steps, torch.tensor(1.0, device="cpu"), alpha=1.0)
        else:
            torch._foreach_add_(device_state_steps, 1)

        if weight_decay != 0:
            if decoupled_weight_decay:
                torch._foreach_mul_(device_params, 1 - lr * weight_decay)
            elif maximize:  # device_grads is already our own copy
                torch._foreach_add_(device_grads, device_params, alpha=weight_decay)
            else:
                device_grads = cast(
                    list[Tensor],
                    torch._foreach_add(device_grads, device_params, alpha=weight_decay),
                )

        torch._foreach_lerp_(device_exp_avgs, device_grads, 1 - beta1)
        del device_grads
        torch._foreach_mul_(device_exp_avg_sqs, beta2)
        torch._foreach_addcmul_(device_exp_avg_sqs, device_exp_avgs, device_exp_avgs, 1 - beta2)

        denom = torch._foreach_sqrt(device_exp_avg_sqs)
        if bias_correction:
            steps = [s.item() for s in device_state_steps]
            torch._foreach_div_(denom, [(1 - beta2**s) ** 0.5 for s in steps])
            torch._foreach_add_(denom, eps)
            torch._foreach_addcdiv_(
                device_params, device_exp_avgs, denom, [-(lr / (1 - beta1**s)) for s in steps]
            )
        else:
            torch._foreach_add_(denom, eps)
            torch._foreach_addcdiv_(device_params, device_exp_avgs, denom, value=-lr)


def max_coordinate_step(lr: float, beta2: float) -> float:
    """Largest per-coordinate step without bias correction: ``lr / sqrt(1 - beta2)``."""
    return lr / math.sqrt(1.0 - beta2)


def register_all(register: Callable[..., Any]) -> None:
    """Register ``gssgd``, ``signum`` and ``signsgd`` with ``tamegrad.optim.registry.register``."""
    register(
        "gssgd",
        GeneralizedSignSGD,
        "Generalized SignSGD (Crawshaw et al. 2022): Adam-like step normalised by an EMA of "
        "the squared momentum; per-coordinate step <= lr/sqrt(1-beta2).",
    )
    register(
        "signum",
        GeneralizedSignSGD,
        "Signum: sign of the momentum, lr * m/(|m|+eps) (GeneralizedSignSGD, beta2=0).",
        betas=(0.9, 0.0),
    )
    register(
        "signsgd",
        GeneralizedSignSGD,
        "SignSGD: lr * sign(grad) (GeneralizedSignSGD, betas=(0, 0)).",
        betas=(0.0, 0.0),
    )
