"""The trajectory-regularization (TR) machinery shared by TRSGD, TRAdam and the generic wrapper.

TR (Zhang et al., IJCAI 2019) splits training into cycles of ``inner_steps`` (S) optimizer
steps. At the first step of a cycle the current weights become the anchor ``a``; during the
cycle the loss is ``f(w) + lam * ||w - a||^2`` with ``lam = lambda_w / lr`` (relative to the
*current* lr, so it grows as a schedule decays the lr), and the step size of inner step ``s`` is
``lr / (s + 1)`` when ``inner_decay`` is on.

Everything that defines the position in a cycle lives in the param group (``inner_step``), so it
is saved by ``state_dict()``, survives resumption mid-cycle, and only advances when ``step()``
really runs (a step skipped by ``GradScaler`` does not advance it). Anchors live in
``optimizer.state[p]["anchor"]``.

Choices the paper's code leaves open, made here:
- lr == 0: the group does not move and the penalty is taken as zero (the coefficient
  ``lambda_w / lr`` is undefined); the cycle still advances.
- A parameter whose gradient is ``None`` is not updated; if it already has an anchor, the anchor
  is still refreshed at the start of a cycle (the anchor is "the weights at the cycle start").
  A parameter that first receives a gradient mid-cycle is anchored at its current value, so the
  anchor is never stale or zero.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ._validation import (
    check_flag,
    check_float_dtype,
    check_int_at_least,
    check_nonnegative,
)

#: Param-group keys that TR adds on top of the base optimizer's.
TR_GROUP_KEYS = ("lambda_w", "inner_steps", "inner_decay", "anchor_dtype", "inner_step")

#: ``lambda_w`` defaults to this fraction of the group's initial lr (the paper's choice).
LAMBDA_W_LR_RATIO = 0.1


def tr_group_defaults(
    lr: float,
    lambda_w: float | None,
    inner_steps: int,
    inner_decay: bool,
    anchor_dtype: torch.dtype | str | None,
) -> dict[str, Any]:
    """Validated TR entries of a param group (``lambda_w=None`` means ``0.1 * lr``)."""
    check_int_at_least("inner_steps", inner_steps, 1)
    check_flag("inner_decay", inner_decay)
    dtype = check_float_dtype("anchor_dtype", anchor_dtype)
    if lambda_w is None:
        lambda_w = LAMBDA_W_LR_RATIO * float(lr)
    check_nonnegative("lambda_w", lambda_w)
    return {
        "lambda_w": float(lambda_w),
        "inner_steps": inner_steps,
        "inner_decay": inner_decay,
        "anchor_dtype": dtype,
        "inner_step": 0,
    }


def fill_group_defaults(group: dict[str, Any], lambda_w: float | None) -> None:
    """Resolve a group's ``lambda_w=None`` against its own lr and validate its TR entries."""
    resolved = tr_group_defaults(
        group["lr"],
        group["lambda_w"] if group.get("lambda_w") is not None else lambda_w,
        group["inner_steps"],
        group["inner_decay"],
        group["anchor_dtype"],
    )
    resolved["inner_step"] = group.get("inner_step", 0)
    group.update(resolved)


def step_lr(group: dict[str, Any]) -> float:
    """The lr of this inner step: ``lr / (s + 1)`` with inner decay, else ``lr``."""
    lr = float(group["lr"])
    return lr / (group["inner_step"] + 1) if group["inner_decay"] else lr


def penalty_coef(group: dict[str, Any]) -> float:
    """``2 * lam = 2 * lambda_w / lr``: the factor of ``(w - anchor)`` in the direction.

    Zero at the first step of a cycle (the anchor *is* the weights then), when ``lambda_w`` is
    zero, and when ``lr`` is zero (see the module docstring).
    """
    lr = float(group["lr"])
    if group["inner_step"] == 0 or group["lambda_w"] == 0.0 or lr == 0.0:
        return 0.0
    return 2.0 * group["lambda_w"] / lr


def advance(group: dict[str, Any]) -> None:
    """Move the group to the next inner step, wrapping from S-1 to 0."""
    group["inner_step"] = (group["inner_step"] + 1) % group["inner_steps"]


def gather_anchors(
    state: dict[Tensor, dict[str, Any]],
    group: dict[str, Any],
    params_with_grad: list[Tensor],
) -> list[Tensor]:
    """Refresh (at ``s == 0``) or lazily create anchors; return those of ``params_with_grad``."""
    dtype = group["anchor_dtype"]
    if group["inner_step"] == 0:
        stale = [p for p in group["params"] if "anchor" in state.get(p, ())]
        if stale:
            # One multi-tensor copy on both paths (on CPU it loops over the same per-tensor
            # copies): under torch.compile's inductor (torch 2.13), per-tensor ``a.copy_(p)``
            # followed by the in-place update of ``p`` in the same graph wrote the UPDATED ``p``
            # into the anchor (the anchor then lagged one step: issue 16 item 4).
            torch._foreach_copy_([state[p]["anchor"] for p in stale], [p.detach() for p in stale])
    anchors = []
    for p in params_with_grad:
        st = state[p]
        if "anchor" not in st:
            st["anchor"] = p.detach().to(dtype=dtype or p.dtype, copy=True)
        anchors.append(st["anchor"])
    return anchors


def folded_directions(
    params: list[Tensor],
    grads: list[Tensor],
    anchors: list[Tensor],
    coef: float,
    weight_decay: float,
    maximize: bool,
) -> list[Tensor]:
    """``d = ±g + (wd + coef) w - coef a`` with the penalty folded into the weight-decay term.

    Returns the gradient tensors themselves (not copies) when there is nothing to add: callers
    must treat the result as read-only unless ``coef``, ``weight_decay`` or ``maximize`` is set.
    """
    c_param = weight_decay + coef
    if maximize:
        d = list(torch._foreach_neg(grads))
        if c_param != 0.0:
            torch._foreach_add_(d, params, alpha=c_param)
    elif c_param != 0.0:
        d = list(torch._foreach_add(grads, params, alpha=c_param))
    else:
        d = list(grads)
    if coef != 0.0:
        torch._foreach_add_(d, anchors, alpha=-coef)
    return d


def check_lr_is_float(name: str, group: dict[str, Any]) -> None:
    if isinstance(group["lr"], Tensor):
        raise ValueError(
            f"{name} needs a Python float lr (lambda_w / lr is computed on the host); "
            f"got a tensor lr {group['lr']}"
        )
