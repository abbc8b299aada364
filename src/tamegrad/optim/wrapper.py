"""Optimizers that wrap another optimizer: trajectory regularization and Lookahead.

A wrapper *is* a ``torch.optim.Optimizer`` whose ``param_groups`` list is the wrapped
optimizer's own list (so LR schedulers, ``GradScaler`` and ``zero_grad`` see one set of groups),
and whose ``state`` holds only the wrapper's extra tensors (anchors, slow weights).
``state_dict()`` nests the wrapped optimizer's state dict.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

from . import trajectory as tr
from ._common import closure_loss
from ._validation import (
    check_int_at_least,
    check_nonnegative,
    check_unit_interval,
    validated_group,
)

__all__ = ["Lookahead", "TrajectoryRegularized", "WrappedOptimizer"]


class WrappedOptimizer(Optimizer):
    """Shared plumbing of optimizers that delegate the update to ``self.optimizer``.

    Copies (``copy.deepcopy``, ``pickle``) carry the wrapped optimizer and the attributes named
    in ``_PICKLED_ATTRS``; hooks are dropped, as torch drops them for every optimizer.
    """

    #: instance attributes beyond torch's (defaults, state, param_groups) that a copy keeps
    _PICKLED_ATTRS: tuple[str, ...] = ("optimizer",)

    def __init__(self, optimizer: Optimizer, defaults: dict[str, Any]) -> None:
        if not isinstance(optimizer, Optimizer):
            raise TypeError(
                f"{type(self).__name__} wraps a torch.optim.Optimizer, got {type(optimizer)!r}"
            )
        self.optimizer = optimizer
        # Optimizer.__init__ re-adds the wrapped groups (the same dict objects) and fills in
        # ``defaults``; the list itself is then replaced by the wrapped optimizer's list.
        super().__init__(optimizer.param_groups, defaults)
        self.param_groups = optimizer.param_groups
        self.defaults = {**optimizer.defaults, **defaults}

    def __getstate__(self) -> dict[str, Any]:
        # torch's Optimizer.__getstate__ keeps only defaults, state and param_groups; the
        # wrapped optimizer shares param_groups with us, and pickle / deepcopy keep that
        # sharing because both are copied in one pass.
        state = super().__getstate__()
        for attr in self._PICKLED_ATTRS:
            state[attr] = getattr(self, attr)
        return state

    def _init_group_extra(self, group: dict[str, Any]) -> None:
        """Validate / complete the wrapper's own entries of a param group."""

    def _check_group(self, group: dict[str, Any]) -> None:
        if "lr" in group:
            check_nonnegative("lr", group["lr"])
        self._init_group_extra(group)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group to the wrapped optimizer (which appends it to the shared list).

        The wrapper's entries (and the lr) are validated before the wrapped optimizer sees the
        group; a wrapped optimizer that appends a group before rejecting it (none of tamegrad's
        and none of the registered torch ones do) would still leave it behind.
        """
        group = validated_group(self.defaults, param_group, self._check_group)
        if hasattr(self, "optimizer") and self.param_groups is self.optimizer.param_groups:
            self.optimizer.add_param_group(group)
        else:  # during Optimizer.__init__: the wrapped optimizer's own groups
            super().add_param_group(group)

    def _param_list(self) -> list[Tensor]:
        return [p for g in self.param_groups for p in g["params"]]

    def state_dict(self) -> dict[str, Any]:  # type: ignore[override]
        index = {id(p): i for i, p in enumerate(self._param_list())}
        extra = {index[id(p)]: dict(st) for p, st in self.state.items() if id(p) in index and st}
        return {"optimizer": self.optimizer.state_dict(), "wrapper_state": extra}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:  # type: ignore[override]
        if not isinstance(state_dict, dict) or "optimizer" not in state_dict:
            raise ValueError(
                f"{type(self).__name__}.load_state_dict expects the dict returned by its "
                "state_dict() (keys 'optimizer' and 'wrapper_state')"
            )
        self.optimizer.load_state_dict(state_dict["optimizer"])
        self.param_groups = self.optimizer.param_groups  # the wrapped load made a new list
        params = self._param_list()
        self.state.clear()
        for i, st in state_dict.get("wrapper_state", {}).items():
            p = params[int(i)]
            self.state[p] = {k: self._cast_state(p, k, v) for k, v in st.items()}

    def _cast_state(self, p: Tensor, key: str, value: Any) -> Any:
        return value.to(device=p.device, dtype=p.dtype) if isinstance(value, Tensor) else value

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.optimizer!r})"


class TrajectoryRegularized(WrappedOptimizer):
    """Give any ``torch.optim.Optimizer`` the TR treatment (Zhang et al., IJCAI 2019).

    At inner step ``s`` of a cycle of ``inner_steps``, the wrapped optimizer is run on the
    direction ``d = grad + 2 * (lambda_w / lr) * (w - anchor)`` with its lr temporarily set to
    ``lr / (s + 1)``. Around SGD / Adam it gives TRSGD / TRAdam (same floats as their per-tensor
    paths).

    How it feeds ``d`` without writing into ``p.grad``: for the duration of the wrapped step,
    ``p.grad`` is *rebound* to a new tensor holding ``d`` and rebound to the original gradient
    afterwards (the original tensor is never modified). A wrapped optimizer that keeps references
    to ``p.grad`` across steps, or one whose ``step`` needs a closure, is not supported: pass the
    closure to this wrapper instead. Costs one temporary direction tensor per step more than the
    standalone :class:`~tamegrad.optim.TRSGD` / :class:`~tamegrad.optim.TRAdam`.

    Args:
        optimizer: the optimizer to regularize (its lr is the ``eta`` of the paper).
        lambda_w: penalty constant; ``None``: ``0.1 *`` each group's lr.
        inner_steps, inner_decay, anchor_dtype: as for :class:`~tamegrad.optim.TRSGD`.
        foreach: compute the penalty with ``torch._foreach_*`` ops; ``None`` follows the wrapped
            group's own ``foreach`` when it is a bool, and is on otherwise.
    """

    _PICKLED_ATTRS = (*WrappedOptimizer._PICKLED_ATTRS, "_foreach_penalty")

    def __init__(
        self,
        optimizer: Optimizer,
        lambda_w: float | None = None,
        inner_steps: int = 10,
        inner_decay: bool = True,
        *,
        anchor_dtype: torch.dtype | str | None = None,
        foreach: bool | None = None,
    ) -> None:
        self._foreach_penalty = foreach
        defaults = {
            "lambda_w": lambda_w,
            "inner_steps": inner_steps,
            "inner_decay": inner_decay,
            "anchor_dtype": anchor_dtype,
            "inner_step": 0,
        }
        super().__init__(optimizer, defaults)

    def _init_group_extra(self, group: dict[str, Any]) -> None:
        tr.check_lr_is_float(type(self).__name__, group)
        tr.fill_group_defaults(group, group.get("lambda_w"))

    def _cast_state(self, p: Tensor, key: str, value: Any) -> Any:
        if key == "anchor":
            group = next(g for g in self.param_groups if any(q is p for q in g["params"]))
            return value.to(device=p.device, dtype=group["anchor_dtype"] or p.dtype)
        return super()._cast_state(p, key, value)

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        loss = closure_loss(closure)
        rebound: list[tuple[Tensor, Tensor]] = []
        lrs: list[Any] = []
        try:
            for group in self.param_groups:
                tr.check_lr_is_float(type(self).__name__, group)
                params = [p for p in group["params"] if p.grad is not None]
                coef = tr.penalty_coef(group)
                foreach = self._foreach_penalty
                if foreach is None:
                    foreach = group.get("foreach") is not False
                if group["lambda_w"] != 0.0:
                    anchors = tr.gather_anchors(self.state, group, params)
                    if coef != 0.0 and params:
                        grads: list[Tensor] = [p.grad for p in params]  # type: ignore[misc]
                        # the wrapped optimizer negates d itself when it maximizes
                        c = -coef if group.get("maximize", False) else coef
                        if foreach:  # g + c w - c a: two passes, one temporary
                            directions = tr.folded_directions(params, grads, anchors, c, 0.0, False)
                        else:  # the spec's order: g + c (w - a), TRSGD's per-tensor floats
                            directions = [
                                g.add(p.sub(a), alpha=c) for g, p, a in zip(grads, params, anchors)
                            ]
                        for p, d in zip(params, directions):
                            rebound.append((p, p.grad))  # type: ignore[arg-type]
                            p.grad = d
                lrs.append(group["lr"])
                group["lr"] = tr.step_lr(group)
            self.optimizer.step()
        finally:
            for p, g in rebound:
                p.grad = g
            for group, lr in zip(self.param_groups, lrs):
                group["lr"] = lr
        for group in self.param_groups:
            tr.advance(group)
        return loss


class Lookahead(WrappedOptimizer):
    """Lookahead (Zhang et al., NeurIPS 2019): every ``k`` steps, ``slow += alpha * (fast -
    slow)`` and the fast weights restart from the slow ones.

    TR's closest published relative: both pull the trajectory towards a point fixed for a
    cycle, but TR penalises the distance at every step and then jumps the anchor to the current
    weights, while Lookahead interpolates. Parameters that never receive a gradient are not
    tracked.
    """

    def __init__(self, optimizer: Optimizer, k: int = 5, alpha: float = 0.5) -> None:
        check_int_at_least("k", k, 1)
        check_unit_interval("alpha", alpha, closed_right=True)
        super().__init__(optimizer, {"lookahead_k": k, "lookahead_alpha": alpha, "la_step": 0})

    def _init_group_extra(self, group: dict[str, Any]) -> None:
        # a group's own values, under the group's keys (the constructor checked k and alpha)
        check_int_at_least("lookahead_k", group["lookahead_k"], 1)
        check_unit_interval("lookahead_alpha", group["lookahead_alpha"], closed_right=True)

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        loss = closure_loss(closure)
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None and "slow" not in self.state.get(p, ()):
                    self.state[p]["slow"] = p.detach().clone()
        self.optimizer.step()
        for group in self.param_groups:
            group["la_step"] += 1
            if group["la_step"] % group["lookahead_k"]:
                continue
            pairs = [(p, self.state[p]["slow"]) for p in group["params"] if p in self.state]
            if pairs:
                fast = [p.detach() for p, _ in pairs]
                slow = [s for _, s in pairs]
                torch._foreach_lerp_(slow, fast, group["lookahead_alpha"])
                torch._foreach_copy_(fast, slow)
        return loss
