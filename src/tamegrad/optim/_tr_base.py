"""Common ``torch.optim.Optimizer`` plumbing of the standalone TR optimizers (TRSGD, TRAdam)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer
from torch.optim.optimizer import _default_to_fused_or_foreach

from . import trajectory as tr
from ._common import closure_loss
from ._validation import check_no_sparse, check_nonnegative, validated_group


class TROptimizer(Optimizer):
    """Base class: cycle bookkeeping, anchors, closure handling, per-group validation.

    Subclasses implement :meth:`_validate_group` and :meth:`_update`, which receives the
    parameters that have a gradient, their gradients and anchors, the inner step's lr and the
    penalty coefficient ``2 * lambda_w / lr`` (already zero where the penalty vanishes).
    """

    def __init__(self, params: Any, defaults: dict[str, Any]) -> None:
        super().__init__(params, defaults)

    # -- construction / validation --------------------------------------------------------
    def _validate_group(self, group: dict[str, Any]) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group, validated (and its ``lambda_w`` resolved) before it is appended."""
        super().add_param_group(validated_group(self.defaults, param_group, self._check_group))

    def _check_group(self, group: dict[str, Any]) -> None:
        check_nonnegative("lr", group["lr"])
        tr.check_lr_is_float(type(self).__name__, group)
        tr.fill_group_defaults(group, group.get("lambda_w"))
        self._validate_group(group)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        # torch casts every floating state tensor to its parameter's dtype; restore the
        # anchors' own dtype (a bf16 -> fp32 -> bf16 round trip is exact).
        for group in self.param_groups:
            dtype = group["anchor_dtype"]
            if dtype is None:
                continue
            for p in group["params"]:
                st = self.state.get(p)
                if st and "anchor" in st:
                    st["anchor"] = st["anchor"].to(dtype)

    # -- the step -------------------------------------------------------------------------
    def _foreach(self, group: dict[str, Any], params: list[Tensor]) -> bool:
        if group["foreach"] is not None:
            return bool(group["foreach"])
        return bool(_default_to_fused_or_foreach(params, differentiable=False, use_fused=False)[1])

    def _update(
        self,
        group: dict[str, Any],
        params: list[Tensor],
        grads: list[Tensor],
        anchors: list[Tensor],
        lr: float,
        coef: float,
        foreach: bool,
    ) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        """One optimizer step (one inner step of the current TR cycle of every group).

        Args:
            closure: optional callable that re-evaluates the model and returns the loss.
        """
        loss = closure_loss(closure)
        for group in self.param_groups:
            tr.check_lr_is_float(type(self).__name__, group)
            params = [p for p in group["params"] if p.grad is not None]
            grads = [p.grad for p in params]
            check_no_sparse(type(self).__name__, grads)  # type: ignore[arg-type]
            foreach = self._foreach(group, params)
            coef = tr.penalty_coef(group)
            anchors: list[Tensor] = []
            if group["lambda_w"] != 0.0:
                anchors = tr.gather_anchors(self.state, group, params)
            if params:
                self._update(
                    group,
                    params,
                    grads,
                    anchors,
                    tr.step_lr(group),
                    coef,
                    foreach,  # type: ignore[arg-type]
                )
            tr.advance(group)
        return loss
